//! [`WalLogStore`]: openraft's v2 log storage ([`RaftLogStorage`], [`RaftLogReader`]) for one
//! Raft group, over the shared [`Wal`], and [`EntryCodec`], how a group's entries become the
//! payloads of `Entry` records (layout at [`crate::format::RecordKind::Entry`]).

use bytes::Bytes;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftTypeConfig,
    StorageError, StorageIOError, Vote,
};
use quarry_persist::version::{self, DecodeError};

use crate::error::WalError;
use crate::format::{
    encode_entry_head, split_entry, Record, Rejected, ENTRY_BLANK, ENTRY_MEMBERSHIP, ENTRY_NORMAL,
    RECORD_PAYLOAD_MAX,
};
use crate::queue::{Completion, SerialisedEntry};
use crate::wal::Wal;

/// How the application data of a group's entries (openraft's `C::D`) is written to the log,
/// implemented by each type config that keeps its log in a [`Wal`].
///
/// The encoding must start with a version byte of its own and follow the upgrade rule of
/// `quarry_persist` (a new version for any change, older versions still decoded, golden-byte
/// tests): entries stay in the log across upgrades. A version newer than the build knows must
/// be reported as [`DecodeError::TooNew`].
pub trait EntryCodec: RaftTypeConfig {
    /// Appends the encoding of `data` to `out`.
    fn encode_data(data: &Self::D, out: &mut Vec<u8>);
    /// Decodes what [`EntryCodec::encode_data`] wrote (all of `bytes`).
    fn decode_data(bytes: &[u8]) -> Result<Self::D, DecodeError>;
}

/// The `Entry` record payload of `entry`.
pub fn encode_entry<C: EntryCodec<NodeId = u64>>(entry: &Entry<C>) -> Vec<u8> {
    let mut out = Vec::new();
    match &entry.payload {
        EntryPayload::Blank => encode_entry_head(&mut out, &entry.log_id, ENTRY_BLANK),
        EntryPayload::Normal(data) => {
            encode_entry_head(&mut out, &entry.log_id, ENTRY_NORMAL);
            C::encode_data(data, &mut out);
        }
        EntryPayload::Membership(membership) => {
            encode_entry_head(&mut out, &entry.log_id, ENTRY_MEMBERSHIP);
            version::encode_body_into(&mut out, membership);
        }
    }
    out
}

/// Decodes an `Entry` record payload written by [`encode_entry`].
pub fn decode_entry<C: EntryCodec<NodeId = u64>>(payload: &[u8]) -> Result<Entry<C>, DecodeError> {
    const WHAT: &str = "WAL entry";
    let (log_id, tag, body) = split_entry(payload).map_err(|rejected| match rejected {
        Rejected::TooNew(too_new) => DecodeError::TooNew(too_new),
        Rejected::Corrupt(reason) => DecodeError::invalid(WHAT, reason.to_string()),
    })?;
    let payload = match tag {
        ENTRY_BLANK if body.is_empty() => EntryPayload::Blank,
        ENTRY_NORMAL => EntryPayload::Normal(C::decode_data(body)?),
        ENTRY_MEMBERSHIP => EntryPayload::Membership(version::decode_body(WHAT, body)?),
        other => return Err(DecodeError::invalid(WHAT, format!("bad entry tag {other}"))),
    };
    Ok(Entry { log_id, payload })
}

/// Moves large payloads of a group's entries out of the log (write-once): the data is placed
/// elsewhere (the OSD's store) when the entry is appended, and the entry's record names it.
/// Installed per group with [`Wal::log_store_placed`]; the data must be made durable by the
/// WAL's sync hook ([`Wal::set_sync_hook`]) before a round holding the entry is written.
///
/// Reads return entries as the codec decodes them (naming the placed data, not carrying
/// it): openraft's apply and its re-apply at start (which goes through the log reader) take
/// the placed data where it is. Whoever sends entries to a peer must read the payloads back
/// first (the OSD does it in its Raft network client). Entries truncated away give their
/// placements back ([`Placer::release`]) once the truncation is durable.
pub trait Placer<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Appends the record encoding of `data` to `out` ([`EntryCodec::encode_data`]'s, after
    /// placing large payloads elsewhere and naming them instead).
    fn encode(&self, data: &C::D, out: &mut Vec<u8>);
    /// The entry holding `data` was truncated away, durably: its placements are free.
    fn release(&self, data: &C::D);
    /// Whether an append of this group may write its round itself when it finds the log's
    /// writer free (see the writer's "Inline rounds"): it then blocks the calling task for
    /// the round's write and fdatasync, and openraft's callback runs before `append`
    /// returns. Worth it only when nothing else would share the round (a single write in
    /// flight, for a while) and no replica waits for the entry meanwhile (one voter). Default:
    /// never.
    fn append_inline(&self) -> bool {
        false
    }
}

/// `limited_get_log_entries` (replication) returns at most about this many bytes per call.
pub const REPLICATION_READ_BYTES_MAX: u64 = 8 << 20;

/// The log of one Raft group in the shared [`Wal`]. Cloning gives another handle to the same
/// group (the log reader is such a clone).
pub struct WalLogStore<C: RaftTypeConfig> {
    wal: Arc<Wal>,
    group: u64,
    /// Where large payloads go (None: every entry is whole in its record).
    placer: Option<Arc<dyn Placer<C>>>,
    _config: PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for WalLogStore<C> {
    fn clone(&self) -> Self {
        WalLogStore {
            wal: self.wal.clone(),
            group: self.group,
            placer: self.placer.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> Debug for WalLogStore<C> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("WalLogStore").field("group", &self.group).finish_non_exhaustive()
    }
}

impl<C> WalLogStore<C>
where
    C: EntryCodec<NodeId = u64, Entry = Entry<C>>,
{
    pub(crate) fn new(wal: Arc<Wal>, group: u64, placer: Option<Arc<dyn Placer<C>>>) -> Self {
        WalLogStore { wal, group, placer, _config: PhantomData }
    }

    /// The Raft group this store writes.
    pub fn group(&self) -> u64 {
        self.group
    }

    /// The shared log.
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// The entries in `start .. end` (those the log has), read on the calling thread: for
    /// code outside openraft, e.g. an OSD collecting the placed writes of unapplied entries
    /// while it opens its store.
    pub fn read_blocking(&self, start: u64, end: u64) -> Result<Vec<Entry<C>>, WalError> {
        self.read(start, end, u64::MAX)
    }

    /// The index of the group's last entry (None: no entry, or none since its last purge).
    pub fn last_index(&self) -> Option<u64> {
        self.wal.group_state(self.group).last.map(|id| id.index)
    }

    /// Reads and deserialises entries in `start .. end`, at most about `byte_limit` bytes.
    fn read(&self, start: u64, end: u64, byte_limit: u64) -> Result<Vec<Entry<C>>, WalError> {
        let serialised = self.wal.read_entries(self.group, start, end, byte_limit)?;
        let mut entries = Vec::with_capacity(serialised.len());
        for (log_id, bytes) in serialised {
            let (group, index) = (self.group, log_id.index);
            // Write payloads become slices of the entry's bytes (the WAL's cache holds them
            // anyway): applying a 4 MiB write does not copy it.
            let decoded = quarry_types::zerocopy::decode_from(&bytes, decode_entry::<C>);
            let entry: Entry<C> = decoded.map_err(|error| match error {
                DecodeError::TooNew(source) => WalError::EntryFormatTooNew { group, index, source },
                source => WalError::Codec { group, index, source },
            })?;
            assert_eq!(entry.log_id, log_id, "the WAL checked the log id of the record");
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Serialises entries for the WAL, refusing any over the record limit.
    fn serialise(
        &self,
        entries: impl IntoIterator<Item = Entry<C>>,
    ) -> Result<(Vec<SerialisedEntry>, u64), WalError> {
        let mut serialised = Vec::new();
        let mut total = 0u64;
        for entry in entries {
            let index = entry.log_id.index;
            let bytes = match (&self.placer, &entry.payload) {
                (Some(placer), EntryPayload::Normal(data)) => {
                    let mut out = Vec::new();
                    encode_entry_head(&mut out, &entry.log_id, ENTRY_NORMAL);
                    placer.encode(data, &mut out);
                    out
                }
                _ => encode_entry(&entry),
            };
            if bytes.len() as u64 > u64::from(RECORD_PAYLOAD_MAX) {
                return Err(WalError::EntryTooLarge {
                    group: self.group,
                    index,
                    bytes: bytes.len() as u64,
                    max: u64::from(RECORD_PAYLOAD_MAX),
                });
            }
            total += bytes.len() as u64;
            serialised.push((entry.log_id, Bytes::from(bytes)));
        }
        Ok((serialised, total))
    }
}

fn read_error(error: WalError) -> StorageError<u64> {
    StorageIOError::read_logs(&error).into()
}

fn write_error(error: WalError) -> StorageError<u64> {
    StorageIOError::write_logs(&error).into()
}

fn vote_error(error: WalError) -> StorageError<u64> {
    StorageIOError::write_vote(&error).into()
}

/// `[start, end)` of a range of log indexes.
fn index_range<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&start) => start,
        Bound::Excluded(&start) => start.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&end) => end.saturating_add(1),
        Bound::Excluded(&end) => end,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl<C> RaftLogReader<C> for WalLogStore<C>
where
    C: EntryCodec<NodeId = u64, Entry = Entry<C>>,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        let (start, end) = index_range(&range);
        self.read(start, end, u64::MAX).map_err(read_error)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        self.read(start, end, REPLICATION_READ_BYTES_MAX).map_err(read_error)
    }
}

impl<C> RaftLogStorage<C> for WalLogStore<C>
where
    C: EntryCodec<NodeId = u64, Entry = Entry<C>>,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let summary = self.wal.group_state(self.group);
        Ok(LogState { last_purged_log_id: summary.purged, last_log_id: summary.last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let durable = self.wal.submit_vote(self.group, *vote).map_err(vote_error)?;
        durable.await.map_err(|_| vote_error(WalError::Closed))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.wal.group_state(self.group).vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        let record = Record::Committed(committed);
        self.wal.submit_metadata(self.group, record, None).map_err(write_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.wal.group_state(self.group).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (serialised, bytes) = self.serialise(entries).map_err(write_error)?;
        let permit = self.wal.reserve(bytes).await.map_err(write_error)?;
        let done: Completion = Box::new(move |result: Result<(), &std::io::Error>| {
            callback.log_io_completed(result.map_err(crate::error::clone_io_error))
        });
        let inline = self.placer.as_ref().is_some_and(|placer| placer.append_inline());
        self.wal.submit_entries(self.group, serialised, permit, done, inline).map_err(write_error)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let record = Record::Truncate { from: log_id.index };
        let Some(placer) = self.placer.clone() else {
            return self.wal.submit_metadata(self.group, record, None).map_err(write_error);
        };
        // The entries going away give their placements back once the truncation is durable
        // (a crash before would bring them back, naming their blocks).
        let gone = self.read(log_id.index, u64::MAX, u64::MAX).map_err(write_error)?;
        let done: Completion = Box::new(move |result: Result<(), &std::io::Error>| {
            if result.is_ok() {
                for entry in &gone {
                    if let EntryPayload::Normal(data) = &entry.payload {
                        placer.release(data);
                    }
                }
            }
        });
        self.wal.submit_metadata(self.group, record, Some(done)).map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.wal.submit_metadata(self.group, Record::Purge(log_id), None).map_err(write_error)
    }
}
