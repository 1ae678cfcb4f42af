//! errno-style error codes: what a failed operation reports to the client.

use serde::{Deserialize, Serialize};

/// A positive Linux errno value naming why an operation failed. The C ABI returns its
/// negation; the CLI prints `(N) Message` as Ceph's tools do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    /// Operation not permitted (authentication refused, `(1) Operation not permitted`).
    pub const EPERM: ErrorCode = ErrorCode(1);
    /// No such object, pool, image or entity.
    pub const ENOENT: ErrorCode = ErrorCode(2);
    /// Input/output error: a checksum mismatch or a failed disk operation.
    pub const EIO: ErrorCode = ErrorCode(5);
    /// Cross-device link: an image operation across pools that cannot be done.
    pub const EXDEV: ErrorCode = ErrorCode(18);
    /// Try again (map changed, not the leader): retried by the client, never shown to users.
    pub const EAGAIN: ErrorCode = ErrorCode(11);
    /// Permission denied: the capabilities do not allow the operation.
    pub const EACCES: ErrorCode = ErrorCode(13);
    /// Bad address: what Ceph's `rados import` answers for a damaged export.
    pub const EFAULT: ErrorCode = ErrorCode(14);
    /// Resource busy (lock held by another client).
    pub const EBUSY: ErrorCode = ErrorCode(16);
    /// Already exists.
    pub const EEXIST: ErrorCode = ErrorCode(17);
    /// Invalid argument.
    pub const EINVAL: ErrorCode = ErrorCode(22);
    /// Is a directory.
    pub const EISDIR: ErrorCode = ErrorCode(21);
    /// No such device or address: a PG with fewer OSDs than its pool's `min_size`.
    pub const ENXIO: ErrorCode = ErrorCode(6);
    /// File too large: offset/length beyond `OBJECT_SIZE_MAX`.
    pub const EFBIG: ErrorCode = ErrorCode(27);
    /// No space left.
    pub const ENOSPC: ErrorCode = ErrorCode(28);
    /// Read-only (snapshot or read-only open).
    pub const EROFS: ErrorCode = ErrorCode(30);
    /// Argument out of domain (an image order outside 12..=25, as librbd answers).
    pub const EDOM: ErrorCode = ErrorCode(33);
    /// Result out of range.
    pub const ERANGE: ErrorCode = ErrorCode(34);
    /// Name too long.
    pub const ENAMETOOLONG: ErrorCode = ErrorCode(36);
    /// Function not implemented.
    pub const ENOSYS: ErrorCode = ErrorCode(38);
    /// Not empty (an image with snapshots, a pool with images).
    pub const ENOTEMPTY: ErrorCode = ErrorCode(39);
    /// No data (xattr absent).
    pub const ENODATA: ErrorCode = ErrorCode(61);
    /// Protocol error (malformed message).
    pub const EPROTO: ErrorCode = ErrorCode(71);
    /// Message too long (frame over the limit).
    pub const EMSGSIZE: ErrorCode = ErrorCode(90);
    /// Operation not supported.
    pub const EOPNOTSUPP: ErrorCode = ErrorCode(95);
    /// Connection timed out / operation timed out.
    pub const ETIMEDOUT: ErrorCode = ErrorCode(110);
    /// Operation canceled: a compare guard did not hold (Ceph returns -ECANCELED).
    pub const ECANCELED: ErrorCode = ErrorCode(125);
    /// Stored bytes a method cannot parse (Ceph's object classes answer EBADMSG).
    pub const EBADMSG: ErrorCode = ErrorCode(74);
    /// Illegal byte sequence: a compare-and-write whose compare did not match.
    pub const EILSEQ: ErrorCode = ErrorCode(84);
    /// Stale: a request based on state that has moved on (a snapshot id older than the
    /// image's newest, an object map that no longer covers the range).
    pub const ESTALE: ErrorCode = ErrorCode(116);
    /// Quota exceeded (an image's snapshot limit, a pool quota).
    pub const EDQUOT: ErrorCode = ErrorCode(122);
    /// Blocklisted client (Ceph's EBLOCKLISTED is ESHUTDOWN, 108).
    pub const ESHUTDOWN: ErrorCode = ErrorCode(108);
    /// Not connected: a watch the OSD no longer holds (connection lost, primary changed).
    pub const ENOTCONN: ErrorCode = ErrorCode(107);

    /// The errno as the C ABI returns it (negative).
    pub fn negative(self) -> i32 {
        -self.0
    }

    /// Ceph's `MAX_ERRNO`: codes from here up are not errnos but a failed extent compare
    /// ([`crate::ObjectOp::CmpExt`]) carrying the offset of the first mismatch.
    pub const MAX_ERRNO: i32 = 4095;

    /// The code of a [`crate::ObjectOp::CmpExt`] whose compared bytes first differ at index
    /// `offset` of its data: `MAX_ERRNO + offset` (Ceph's OSD returns its negation).
    /// Saturates at `i32::MAX` (compares are bounded by `OBJECT_SIZE_MAX`, far below).
    pub fn cmpext_mismatch(offset: u64) -> ErrorCode {
        let code = (Self::MAX_ERRNO as u64).saturating_add(offset).min(i32::MAX as u64);
        ErrorCode(code as i32)
    }

    /// The mismatch offset of a failed extent compare (None for an ordinary errno).
    pub fn mismatch_offset(self) -> Option<u64> {
        (self.0 >= Self::MAX_ERRNO).then(|| (self.0 - Self::MAX_ERRNO) as u64)
    }

    /// The errno a caller reports: EILSEQ for a failed extent compare (as librbd's
    /// compare-and-write), the code itself otherwise.
    pub fn as_errno(self) -> ErrorCode {
        if self.mismatch_offset().is_some() {
            Self::EILSEQ
        } else {
            self
        }
    }

    /// The message Ceph's tools print for this errno, e.g. "No such file or directory".
    pub fn message(self) -> &'static str {
        match self.0 {
            1 => "Operation not permitted",
            2 => "No such file or directory",
            5 => "Input/output error",
            18 => "Invalid cross-device link",
            11 => "Resource temporarily unavailable",
            13 => "Permission denied",
            14 => "Bad address",
            16 => "Device or resource busy",
            17 => "File exists",
            6 => "No such device or address",
            7 => "Argument list too long",
            9 => "Bad file descriptor",
            12 => "Cannot allocate memory",
            19 => "No such device",
            20 => "Not a directory",
            21 => "Is a directory",
            22 => "Invalid argument",
            24 => "Too many open files",
            29 => "Illegal seek",
            32 => "Broken pipe",
            27 => "File too large",
            28 => "No space left on device",
            30 => "Read-only file system",
            33 => "Numerical argument out of domain",
            34 => "Numerical result out of range",
            36 => "File name too long",
            38 => "Function not implemented",
            39 => "Directory not empty",
            61 => "No data available",
            71 => "Protocol error",
            74 => "Bad message",
            84 => "Invalid or incomplete multibyte or wide character",
            90 => "Message too long",
            95 => "Operation not supported",
            107 => "Transport endpoint is not connected",
            108 => "Cannot send after transport endpoint shutdown",
            110 => "Connection timed out",
            116 => "Stale file handle",
            122 => "Disk quota exceeded",
            125 => "Operation canceled",
            code if code >= Self::MAX_ERRNO => "Invalid or incomplete multibyte or wide character",
            _ => "Unknown error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}) {}", self.0, self.message())
    }
}

impl std::error::Error for ErrorCode {}
