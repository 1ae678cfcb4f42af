//! The directory lock: an exclusive `flock(2)` on `DIR/LOCK`, held for the life of the
//! [`crate::Wal`], so two processes (or two opens in one process) never write one log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::WalError;

/// Name of the lock file inside the WAL directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Holds the lock until dropped (closing the file releases the `flock`).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` without waiting, and writes our pid into the lock file for people
    /// looking for the holder.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, WalError> {
        let path = dir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| WalError::io(&path, error))?;
        flock_exclusive(&file).map_err(|error| {
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                WalError::Locked { path: path.clone() }
            } else {
                WalError::io(&path, error)
            }
        })?;
        file.set_len(0).map_err(|error| WalError::io(&path, error))?;
        writeln!(file, "{}", std::process::id()).map_err(|error| WalError::io(&path, error))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[allow(unsafe_code)]
fn flock_exclusive(file: &File) -> std::io::Result<()> {
    // SAFETY: `flock` reads no memory of ours; the descriptor belongs to `file`, which is open
    // for the whole call. `File::try_lock` would do the same but needs Rust 1.89 (MSRV is 1.85).
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
