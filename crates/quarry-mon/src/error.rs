//! The monitor's error type: what can stop a monitor from starting or keep running.
//! Errors of single requests are not here: they are `Reply::Failed{code, message}` values.

use std::net::SocketAddr;
use std::path::PathBuf;

use quarry_types::ErrorCode;

/// Why the monitor could not start, or a storage step failed.
#[derive(Debug, thiserror::Error)]
pub enum MonError {
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The write-ahead log could not be opened.
    #[error("write-ahead log: {0}")]
    Wal(#[from] quarry_raftlog::WalError),
    /// The snapshot file is damaged.
    #[error("snapshot corrupt: {detail}")]
    SnapshotCorrupt {
        /// What is wrong.
        detail: String,
    },
    /// A file was written by a newer Quarry than this build (the data is not damaged: run a
    /// newer build).
    #[error("{what} has format version {found}, newer than this build reads (up to {supported}): upgrade Quarry")]
    FormatTooNew {
        /// What was read (`monitor snapshot`).
        what: &'static str,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The state could not be serialised.
    #[error("cannot encode snapshot: {detail}")]
    SnapshotEncode {
        /// The encoder's message.
        detail: String,
    },
    /// openraft refused to start or initialise the group.
    #[error("raft: {detail}")]
    Raft {
        /// openraft's message.
        detail: String,
    },
    /// ceph.conf or the command line has a value the monitor cannot use (the message names
    /// the option, the value and the line).
    #[error(transparent)]
    Conf(#[from] quarry_conf::ConfError),
    /// The configuration is unusable.
    #[error("invalid monitor config: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The bootstrap command was refused (bad caps, pools without OSDs...).
    #[error("bootstrap refused: {code} {message}")]
    Bootstrap {
        /// errno.
        code: ErrorCode,
        /// Why.
        message: String,
    },
    /// The monitor did not become leader (or see one) in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
    },
}
