//! Reading the small files a user names (ceph.conf, keyrings, key files, `-i` inputs of admin
//! commands) without trusting them: only a regular file is read, and only up to a bound, so
//! `/dev/zero`, a FIFO nobody writes to, or a directory given by mistake is refused at once
//! with a message that says what it is, instead of filling memory or hanging.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// What most such files may hold (real ones are kilobytes).
pub const SMALL_FILE_BYTES_MAX: u64 = 4 << 20;

fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Refuses what is not a regular file: a directory is EISDIR (`Is a directory (os error 21)`),
/// anything else (device, FIFO, socket) `InvalidInput` naming what it is.
fn check_regular(meta: &Metadata) -> io::Result<()> {
    if meta.is_dir() {
        return Err(io::Error::from_raw_os_error(21));
    }
    if !meta.is_file() {
        let what = kind(meta);
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file"),
        ));
    }
    Ok(())
}

fn too_large(size: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("file too large ({size} bytes; at most {max} are read)"),
    )
}

/// Reads `path` whole if it is a regular file of at most `max` bytes. Errors keep their
/// `io::ErrorKind` (NotFound, PermissionDenied, EISDIR as raw os error 21) or say what is
/// wrong: "a character device, not a regular file", "file too large (N bytes; ...)". The type
/// is checked before opening (a FIFO is never opened: that would wait for a writer) and again
/// on the open file, and the read stops at `max + 1` bytes whatever the size said.
pub fn read_small_file(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    check_regular(&meta)?;
    if meta.len() > max {
        return Err(too_large(meta.len(), max));
    }
    let file = File::open(path)?;
    let meta = file.metadata()?;
    check_regular(&meta)?;
    let mut bytes = Vec::with_capacity(meta.len().min(max) as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64, max));
    }
    Ok(bytes)
}

/// The errno of a [`read_small_file`] error, as Ceph's tools print it: the OS error when
/// there is one (ENOENT, EACCES, EISDIR), EINVAL for a file that is not regular, EFBIG for
/// one too large.
pub fn small_file_errno(e: &io::Error) -> i32 {
    if let Some(code) = e.raw_os_error() {
        return code;
    }
    match e.kind() {
        io::ErrorKind::NotFound => 2,
        io::ErrorKind::PermissionDenied => 13,
        io::ErrorKind::InvalidData if e.to_string().starts_with("file too large") => 27,
        _ => 22,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, b"[global]\n").unwrap();
        assert_eq!(read_small_file(&ok, 100).unwrap(), b"[global]\n");

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 101]).unwrap();
        let e = read_small_file(&big, 100).unwrap_err();
        assert_eq!(e.to_string(), "file too large (101 bytes; at most 100 are read)");
        assert_eq!(small_file_errno(&e), 27);

        let e = read_small_file(dir.path(), 100).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(21), "{e}");
        assert!(e.to_string().starts_with("Is a directory"), "{e}");

        let e = read_small_file(Path::new("/dev/zero"), 100).unwrap_err();
        assert_eq!(e.to_string(), "a character device, not a regular file");
        assert_eq!(small_file_errno(&e), 22);

        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        // Never opened: this would block forever waiting for a writer.
        let e = read_small_file(&fifo, 100).unwrap_err();
        assert_eq!(e.to_string(), "a FIFO, not a regular file");

        let e = read_small_file(&dir.path().join("absent"), 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(small_file_errno(&e), 2);
    }
}
