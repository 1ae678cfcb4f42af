//! The crate's error type, [`OsdError`]: why the daemon could not start, or why a background
//! step failed. Client-visible failures are not errors here: they are `Reply` values built in
//! `op` (errno codes cross the wire, never this type).

use std::net::SocketAddr;
use std::path::PathBuf;

use quarry_types::PgId;

/// Why the OSD (or one of its internal steps) failed.
#[derive(Debug, thiserror::Error)]
pub enum OsdError {
    /// A file or directory of the data dir could not be created, read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// ceph.conf or the command line has a value the OSD cannot use (the message names the
    /// option, the value and the line).
    #[error(transparent)]
    Conf(#[from] quarry_conf::ConfError),
    /// The configuration is unusable (no id, no monitor, no key...).
    #[error("{reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The object store refused to open or failed (boxed: redb's error is large).
    #[error("object store: {0}")]
    Store(Box<quarry_store::StoreError>),
    /// The write-ahead log refused to open or failed.
    #[error("write-ahead log: {0}")]
    Wal(Box<quarry_raftlog::WalError>),
    /// No monitor answered (or accepted us) within the start-up deadline.
    #[error("no monitor reachable at {addrs:?}: {last_error}")]
    MonUnreachable {
        /// The monitors tried.
        addrs: Vec<SocketAddr>,
        /// The last failure seen.
        last_error: String,
    },
    /// A monitor connection failed or was refused.
    #[error("monitor connection: {0}")]
    Wire(#[from] quarry_wire::WireError),
    /// The monitor answered a request with an error or an unexpected reply.
    #[error("monitor refused {request}: {detail}")]
    MonRefused {
        /// Which request.
        request: &'static str,
        /// The monitor's answer.
        detail: String,
    },
    /// Service keys or a ticket from the monitor could not be opened.
    #[error("cannot open {what} sent by the monitor: {source}")]
    Auth {
        /// What was being opened.
        what: &'static str,
        /// The error.
        #[source]
        source: quarry_auth::AuthError,
    },
    /// A Raft group could not be created or initialised.
    #[error("raft group of pg {pg}: {detail}")]
    Raft {
        /// The PG.
        pg: PgId,
        /// What openraft said.
        detail: String,
    },
    /// The persisted cluster map is damaged.
    #[error("{path}: bad persisted map: {reason}")]
    BadMapFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: &'static str,
    },
    /// A blocking task panicked or was cancelled (a bug; logged).
    #[error("a blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The OSD is shutting down.
    #[error("the OSD is shutting down")]
    ShuttingDown,
}

impl From<quarry_store::StoreError> for OsdError {
    fn from(e: quarry_store::StoreError) -> OsdError {
        OsdError::Store(Box::new(e))
    }
}

impl From<quarry_raftlog::WalError> for OsdError {
    fn from(e: quarry_raftlog::WalError) -> OsdError {
        OsdError::Wal(Box::new(e))
    }
}

impl OsdError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> OsdError {
        OsdError::Io { path: path.into(), source }
    }
}
