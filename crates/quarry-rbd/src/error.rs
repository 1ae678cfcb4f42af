//! The image layer's error: an errno a C caller or the CLI reports, with a one-line reason
//! when there is more to say than the errno (Ceph's librbd logs these; we return them).

use quarry_client::ClientError;
use quarry_types::ErrorCode;

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RbdError {
    /// The cluster refused or failed an operation.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The image layer refused: the errno (what `rbd` and the C ABI report) and why.
    #[error("{}{code}", prefix(.reason))]
    Refused {
        /// ENOENT, EEXIST, EBUSY, ENOTEMPTY, EINVAL, EROFS, …
        code: ErrorCode,
        /// One line for a person ("image has snapshots - not removing"); may be empty.
        reason: String,
    },
    /// A compare-and-write whose compare failed (EILSEQ): nothing was written.
    #[error("compare mismatch at image offset {offset}: {}", ErrorCode::EILSEQ)]
    Mismatch {
        /// Image offset of the first byte that differs (librbd's `mismatch_off`).
        offset: u64,
    },
}

fn prefix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!("{reason}: ")
    }
}

impl RbdError {
    /// The errno.
    pub fn errno(&self) -> ErrorCode {
        match self {
            RbdError::Client(e) => e.errno().as_errno(),
            RbdError::Refused { code, .. } => *code,
            RbdError::Mismatch { .. } => ErrorCode::EILSEQ,
        }
    }

    /// The image offset of the first differing byte of a failed compare-and-write.
    pub fn mismatch_offset(&self) -> Option<u64> {
        match self {
            RbdError::Mismatch { offset } => Some(*offset),
            _ => None,
        }
    }

    /// A refusal with a reason.
    pub fn refused(code: ErrorCode, reason: impl Into<String>) -> RbdError {
        RbdError::Refused { code, reason: reason.into() }
    }

    /// A bare errno.
    pub fn code(code: ErrorCode) -> RbdError {
        RbdError::Refused { code, reason: String::new() }
    }

    /// The reason alone (empty for a bare errno or a cluster error).
    pub fn reason(&self) -> &str {
        match self {
            RbdError::Refused { reason, .. } => reason,
            RbdError::Client(_) | RbdError::Mismatch { .. } => "",
        }
    }
}

/// Result of the image layer.
pub type RbdResult<T> = Result<T, RbdError>;

/// The errno of a client error when it is one of `codes` (ENOENT from an op, say).
pub(crate) fn is(e: &ClientError, code: ErrorCode) -> bool {
    e.errno() == code
}
