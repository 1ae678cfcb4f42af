//! The wire protocol between Quarry clients and daemons: framed, versioned, checksummed
//! messages with request ids; an authentication handshake on every connection (mutual
//! challenge–response on a shared key, or on the session key of a monitor ticket); signed
//! frames with per-direction sequence numbers afterwards, so a tampered, replayed or
//! reordered frame is refused.
//!
//! Modules: `codec` (byte layout, pure, fuzzed), `message` (every message type), `map` (the
//! cluster map), `conn` (tokio connections: handshake, pipelined RPC, serving).
//!
//! Dependencies: bincode 1 (compact, serde-driven, with a hard size limit on decode so a
//! hostile length prefix cannot allocate), blake3 (keyed BLAKE3 frame signatures: a MAC by
//! design and several times faster than HMAC-SHA256 over large payloads; see `codec`), crc32c (hardware-accelerated payload checksums), tokio (the runtime of every daemon).
//!
//! Invariant: no input from the network can panic this crate; every malformed input is a
//! [`WireError`] and the connection is closed.

#![warn(missing_docs)]

pub mod blocklist;
pub mod codec;
pub mod conn;
pub mod limits;
pub mod map;
pub mod message;

pub use conn::{
    accept, accept_limited, connect, refuse, serve, Accepted, Authenticator, BulkDone, BulkSink,
    ClientSecret, ConnContext, Connected, EventSink, Handler, PendingReply, RpcClient,
    AUTH_DENIED_REASON, BULK_PIECE, BULK_STREAM_MIN, PROTOCOL_VERSION,
};
pub use map::{pool_flags, ClusterMap, OsdInfo, PoolInfo, PoolSnap, SnapMode};
pub use message::*;

use quarry_types::ErrorCode;

/// Why a frame or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// The frame does not start with the magic.
    #[error("bad frame magic")]
    BadMagic,
    /// Unknown frame version.
    #[error("unsupported frame version {0}")]
    BadVersion(u8),
    /// Unknown flags.
    #[error("bad frame flags {0:#x}")]
    BadFlags(u8),
    /// A bulk offset that cannot be one (below its length prefix, or past the payload).
    #[error("bad frame bulk offset {0}")]
    BadBulkOffset(u16),
    /// Payload longer than allowed.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Limit.
        max: u32,
    },
    /// The frame ended early.
    #[error("truncated frame")]
    Truncated,
    /// Payload checksum mismatch.
    #[error("frame payload checksum mismatch")]
    BadCrc,
    /// An authenticated session received an unsigned frame.
    #[error("unsigned frame on an authenticated session")]
    Unsigned,
    /// Signature mismatch (tampered frame or wrong key).
    #[error("bad frame signature")]
    BadSignature,
    /// Replayed or reordered frame.
    #[error("frame sequence {got}, expected {want} (replayed or reordered)")]
    BadSequence {
        /// Received.
        got: u64,
        /// Expected.
        want: u64,
    },
    /// The payload does not decode as a message.
    #[error("malformed message: {0}")]
    Decode(String),
    /// A message could not be encoded (too large).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// A message arrived where another was expected.
    #[error("protocol error: {0}")]
    UnexpectedMessage(&'static str),
    /// The server refused authentication.
    #[error("{1} {0}")]
    Refused(ErrorCode, String),
    /// The handshake did not finish in time.
    #[error("connection timed out")]
    Timeout,
    /// An authenticated session sent nothing, with nothing in flight, for the idle timeout.
    #[error("connection idle for longer than ms_tcp_read_timeout: closed")]
    Idle,
    /// The peer read nothing of a pending reply for the idle timeout.
    #[error("peer stopped reading its replies: connection closed")]
    Stalled,
}

impl WireError {
    /// The errno a client reports for this failure.
    pub fn errno(&self) -> ErrorCode {
        match self {
            WireError::Refused(code, _) => *code,
            WireError::Timeout => ErrorCode::ETIMEDOUT,
            WireError::TooLarge { .. } => ErrorCode::EMSGSIZE,
            WireError::Closed | WireError::Io(_) => ErrorCode::EIO,
            _ => ErrorCode::EPROTO,
        }
    }
}
