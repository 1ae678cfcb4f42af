//! Crash-safe file replacement and directory fsync.
//!
//! [`write_atomic`] leaves either the old file or the new one at `path`, whatever moment the
//! machine dies at: the new bytes go to `NAME.partial` in the same directory (same file system,
//! so the rename is atomic), the partial file is fsynced, renamed over `path`, and the directory
//! is fsynced so the rename itself is durable. A `.partial` left by a crash is overwritten by
//! the next write and never read.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Suffix of the temporary file [`write_atomic`] writes before renaming.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// An I/O error with the operation and the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct FsError {
    /// What was being done (`creating`, `writing`, `syncing`, `renaming`, ...).
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    fn at(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FsError {
        let path = path.to_path_buf();
        move |source| FsError { action, path, source }
    }
}

/// The temporary file [`write_atomic`] uses for `path`: `path` with `.partial` appended.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(PARTIAL_SUFFIX);
    path.with_file_name(name)
}

/// Replaces the file at `path` with `data`, atomically and durably (see the module docs).
/// A newly created file gets permission bits `mode` (before the umask).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let partial = partial_path(path);
    // A stale partial file (from a crash) may have other permission bits: start afresh.
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::at("removing", &partial)(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)
        .map_err(FsError::at("creating", &partial))?;
    file.write_all(data).map_err(FsError::at("writing", &partial))?;
    file.sync_all().map_err(FsError::at("syncing", &partial))?;
    drop(file);
    std::fs::rename(&partial, path).map_err(FsError::at("renaming", &partial))?;
    sync_dir(dir)
}

/// fsyncs a directory, making creations, renames and deletions in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    if let Some(world) = crate::powerloss::world_for(dir) {
        return world.sync_dir(dir).map_err(FsError::at("syncing", dir));
    }
    let handle = File::open(dir).map_err(FsError::at("opening", dir))?;
    handle.sync_all().map_err(FsError::at("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_the_file_and_leaves_no_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ceph.conf");
        write_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A partial left behind by a crash is not read and is replaced.
        std::fs::write(partial_path(&path), b"torn").unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!partial_path(&path).exists());
        assert_eq!(partial_path(&path), dir.path().join("ceph.conf.partial"));
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("file");
        let err = write_atomic(&path, b"x", 0o644).unwrap_err();
        assert_eq!(err.action, "creating");
        assert!(err.to_string().contains("missing/file.partial"), "{err}");
    }
}
