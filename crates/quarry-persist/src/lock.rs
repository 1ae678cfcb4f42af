//! Lock files: an exclusive, non-blocking `flock(2)` on a file, held until the [`LockFile`] is
//! dropped (closing the descriptor releases it, also when the process dies). The holder writes
//! its pid into the file so that whoever fails to take the lock can say who has it.
//!
//! `flock` locks belong to the open file description: a second [`LockFile::acquire`] of the
//! same file in the same process conflicts exactly as another process would.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::file::FsError;

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds the lock.
    #[error("{} is locked by {}", path.display(), holder_text(*holder))]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The pid the holder wrote into the file, if it could be read.
        holder: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error(transparent)]
    Fs(#[from] FsError),
}

fn holder_text(holder: Option<u32>) -> String {
    match holder {
        Some(pid) => format!("another process (pid {pid})"),
        None => "another process".to_string(),
    }
}

/// An exclusive lock on a file; released when dropped.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
    path: PathBuf,
}

impl LockFile {
    /// Takes the lock on `path` (created with mode 0644 if missing) without waiting, then
    /// replaces the file's contents with our pid.
    pub fn acquire(path: &Path) -> Result<LockFile, LockError> {
        let fs_error = |action| {
            let path = path.to_path_buf();
            move |source| FsError { action, path, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(fs_error("opening"))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let holder =
                    file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held { path: path.to_path_buf(), holder });
            }
            Err(errno) => return Err(fs_error("locking")(errno.into()).into()),
        }
        file.set_len(0).map_err(fs_error("truncating"))?;
        writeln!(file, "{}", std::process::id()).map_err(fs_error("writing"))?;
        Ok(LockFile { _file: file, path: path.to_path_buf() })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let held = LockFile::acquire(&path).unwrap();
        assert_eq!(held.path(), path);
        match LockFile::acquire(&path) {
            Err(LockError::Held { path: p, holder }) => {
                assert_eq!(p, path);
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("second lock: {other:?}"),
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        drop(held);
        LockFile::acquire(&path).unwrap();
    }

    #[test]
    fn unreadable_holder_is_reported_without_a_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let held = LockFile::acquire(&path).unwrap();
        std::fs::write(&path, b"not a pid").unwrap();
        let err = LockFile::acquire(&path).unwrap_err();
        assert!(matches!(err, LockError::Held { holder: None, .. }), "{err:?}");
        assert!(err.to_string().ends_with("is locked by another process"), "{err}");
        drop(held);
    }
}
