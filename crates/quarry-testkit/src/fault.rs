//! Disk faults: damage to a stopped daemon's data directory, found when it starts again.
//!
//! What this covers: what a daemon finds on disk after a crash, a bad sector or an operator's
//! mistake — a flipped byte (bit rot, a torn sector), a file cut short (a lost tail), a file
//! gone — in its object store (`store.redb`), its WAL segments (`wal/`) or the monitor's
//! snapshot, and how start-up and recovery react (refuse to start with an error naming the
//! file, or recover what the log allows; never serve damaged data silently).
//!
//! What it does not cover: I/O errors while a daemon runs (EIO or ENOSPC from a write or an
//! fsync). Making files fail under a running daemon needs a hook in the store and WAL I/O
//! layers (`quarry-store`, `quarry-raftlog`) that nothing has yet; read-only permissions are
//! no substitute since tests often run as root, which ignores them.
//!
//! [`crate::Cluster::damage_osd`] and [`crate::Cluster::damage_mon`] apply a [`DiskFault`]
//! only to a stopped daemon. [`files_under`] lists a data directory to pick a target.

use std::fs::OpenOptions;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// One kind of damage to one file, the path relative to the daemon's data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskFault {
    /// XOR the byte at `offset` with 0xff.
    FlipByte {
        /// File, relative to the data directory.
        file: PathBuf,
        /// Byte offset (must be inside the file).
        offset: u64,
    },
    /// Cut the file to `len` bytes.
    Truncate {
        /// File, relative to the data directory.
        file: PathBuf,
        /// New length (at most the current one).
        len: u64,
    },
    /// Delete the file.
    Remove {
        /// File, relative to the data directory.
        file: PathBuf,
    },
}

impl DiskFault {
    /// Applies the damage under `data_dir`; errors name the file.
    pub fn apply(&self, data_dir: &Path) -> std::io::Result<()> {
        let named = |path: &Path, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        };
        match self {
            DiskFault::FlipByte { file, offset } => {
                let path = data_dir.join(file);
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| named(&path, e))?;
                let mut byte = [0u8; 1];
                f.seek(SeekFrom::Start(*offset)).map_err(|e| named(&path, e))?;
                f.read_exact(&mut byte).map_err(|e| named(&path, e))?;
                byte[0] ^= 0xff;
                f.seek(SeekFrom::Start(*offset)).map_err(|e| named(&path, e))?;
                f.write_all(&byte).map_err(|e| named(&path, e))?;
                f.sync_all().map_err(|e| named(&path, e))
            }
            DiskFault::Truncate { file, len } => {
                let path = data_dir.join(file);
                let f = OpenOptions::new().write(true).open(&path).map_err(|e| named(&path, e))?;
                let size = f.metadata().map_err(|e| named(&path, e))?.len();
                if *len > size {
                    let msg = format!("{}: truncate to {len} > size {size}", path.display());
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
                }
                f.set_len(*len).map_err(|e| named(&path, e))?;
                f.sync_all().map_err(|e| named(&path, e))
            }
            DiskFault::Remove { file } => {
                let path = data_dir.join(file);
                std::fs::remove_file(&path).map_err(|e| named(&path, e))
            }
        }
    }
}

/// Every regular file under `dir`, relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(root, &path, out),
                Ok(t) if t.is_file() => {
                    if let Ok(rel) = path.strip_prefix(root) {
                        out.push(rel.to_path_buf());
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
