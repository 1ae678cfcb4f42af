//! The space reserve: a file of [`RESERVE_BYTES`] zeros, `DIR/reserve`, kept so the log can
//! always start a segment. Starting a segment (at open and at rotation) writes its header and
//! one checkpoint record per group; on a full disk that write fails with `ENOSPC`, which
//! used to abort the writer and left a daemon that could not even open its log again (a
//! crash loop on a full disk). Now a segment start refused for space deletes the reserve
//! and tries once more; the reserve is written back (best effort) once a segment start
//! succeeds with space to spare. A rotation that still finds no space keeps writing to the
//! active segment (segments have no hard size limit) and tries again at the next round.
//!
//! The reserve holds space for about [`RESERVE_BYTES`] / 100 bytes of checkpoint per group:
//! thousands of groups. Files in the log directory other than segments and `LOCK` are
//! ignored by recovery.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quarry_persist::DurableFile;

use crate::error::WalError;
use crate::format::GroupCheckpoint;
use crate::replay::{segment_path, sync_dir};
use crate::writer::create_segment;

/// Size of `DIR/reserve`.
pub const RESERVE_BYTES: u64 = 1 << 20;
/// File name of the reserve in the log directory.
pub const RESERVE_FILE_NAME: &str = "reserve";

fn reserve_path(dir: &Path) -> PathBuf {
    dir.join(RESERVE_FILE_NAME)
}

/// True if `error` says the file system has no space (or quota) left.
pub(crate) fn is_no_space(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(28 /* ENOSPC */ | 122 /* EDQUOT */))
}

/// Writes the reserve if it is missing or short (best effort: a disk without the space keeps
/// running without a reserve; the next successful segment start tries again).
pub(crate) fn ensure(dir: &Path) {
    let path = reserve_path(dir);
    if std::fs::metadata(&path).is_ok_and(|meta| meta.len() >= RESERVE_BYTES) {
        return;
    }
    let written = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
        file.write_all(&vec![0u8; RESERVE_BYTES as usize])?;
        file.sync_all()?;
        sync_dir(dir).map_err(std::io::Error::other)
    })();
    if let Err(error) = written {
        // A partial reserve would only mislead the length check above.
        let _ = std::fs::remove_file(&path);
        tracing::debug!(path = %path.display(), %error, "no WAL space reserve written");
    }
}

/// Deletes the reserve; true if there was one.
fn release(dir: &Path) -> bool {
    let path = reserve_path(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            let _ = sync_dir(dir);
            tracing::warn!(path = %path.display(),
                "WAL segment start refused for space: using the space reserve");
            true
        }
        Err(_) => false,
    }
}

/// [`create_segment`], with one more try after releasing the reserve when the first is
/// refused for space. A failed try leaves no file behind.
pub(crate) fn create_segment_with_reserve(
    dir: &Path,
    seq: u64,
    checkpoints: &[(u64, GroupCheckpoint)],
) -> Result<(Arc<DurableFile>, u64, u32), WalError> {
    let attempt = || {
        create_segment(dir, seq, checkpoints).inspect_err(|_| {
            let _ = quarry_persist::remove_file(&segment_path(dir, seq));
        })
    };
    match attempt() {
        Err(WalError::Io { source, .. }) if is_no_space(&source) && release(dir) => attempt(),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_written_once_and_released_for_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        ensure(dir.path());
        let path = reserve_path(dir.path());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), RESERVE_BYTES);
        assert!(release(dir.path()));
        assert!(!release(dir.path()));
        ensure(dir.path());
        assert!(path.exists());
    }
}
