//! The queue between the log stores and the writer thread: the `Request`s it holds (entries
//! of one append, a metadata record, a barrier, a group reload), what runs when they are durable
//! (`Completion`), and the byte bound that makes appenders wait ([`QUEUE_BYTES_MAX`]).
//! The queue itself is a `VecDeque<Request>` in the [`crate::wal`] state, behind its mutex.

use bytes::Bytes;

use openraft::LogId;
use tokio::sync::OwnedSemaphorePermit;

use crate::format::{Record, RECORD_HEADER_LEN};

/// Bound on the bytes of entries accepted but not yet written; appenders wait beyond it.
pub const QUEUE_BYTES_MAX: u64 = 64 << 20;
/// Unit of the queue semaphore's permits.
pub(crate) const QUEUE_PERMIT_BYTES: u64 = 1024;

/// An entry's log id and its serialised bytes (an `Entry` record's payload).
pub(crate) type SerialisedEntry = (LogId<u64>, Bytes);

/// Runs once the records of a request are durable (`Ok`), or once the writer refused them
/// because their write failed cleanly, e.g. with `ENOSPC` (`Err`: nothing of them is on disk).
pub(crate) type Completion = Box<dyn FnOnce(Result<(), &std::io::Error>) + Send + 'static>;

/// An entry accepted for writing.
pub(crate) struct QueuedEntry {
    pub log_id: LogId<u64>,
    pub serial: u64,
    pub bytes: Bytes,
}

/// A unit of work for the writer, in the order it was accepted.
pub(crate) enum Request {
    /// Entries of one append call; `done` completes openraft's `LogFlushed`.
    Entries {
        group: u64,
        entries: Vec<QueuedEntry>,
        done: Completion,
        permit: Option<OwnedSemaphorePermit>,
        /// When it was queued (for [`crate::WalStats::commit_ns`]).
        queued_at: std::time::Instant,
    },
    /// A metadata record (vote, committed, truncate, purge, remove group).
    Metadata { group: u64, record: Record, done: Option<Completion> },
    /// Completes once everything accepted before it is durable.
    Barrier { done: Completion },
    /// Rebuilds the group's in-memory state from its records on disk, once everything
    /// accepted before it is written (see [`crate::Wal::reload_group`]).
    Reload { group: u64, done: Completion },
}

impl Request {
    /// Bytes this request adds to a batch (headers included), for batch sizing.
    pub fn encoded_len(&self) -> u64 {
        let header = RECORD_HEADER_LEN as u64;
        match self {
            Request::Entries { entries, .. } => {
                entries.iter().map(|entry| header + entry.bytes.len() as u64).sum()
            }
            Request::Metadata { .. } => header + 64,
            Request::Barrier { .. } | Request::Reload { .. } => 0,
        }
    }
}
