//! [`Wal`]: opening (lock, replay, first segment, writer thread), accepting requests into the
//! writer's queue (the request types are in [`crate::queue`]), and the reads and state queries
//! the log stores use.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use openraft::{LogId, Vote};
use quarry_persist::{DurableFile, LockError, LockFile};
use quarry_types::perf::TimeAvg;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::{clone_io_error, Corruption, WalError};
use crate::format::{
    check_record, decode_record, Record, RecordHeader, RecordKind, LOCK_FILE_NAME,
    RECORD_HEADER_LEN, RECORD_PAYLOAD_MAX,
};
use crate::index::{EntryCache, GroupIndex, Location, Slot};
use crate::ledger::{Laggard, Ledger};
use crate::queue::{
    Completion, QueuedEntry, Request, SerialisedEntry, QUEUE_BYTES_MAX, QUEUE_PERMIT_BYTES,
};
use crate::replay::{recover, segment_path};
use crate::store::{EntryCodec, Placer, WalLogStore};
use crate::writer::Writer;
use crate::{WalOptions, WalStats};

/// Smallest accepted `segment_bytes`.
pub const SEGMENT_BYTES_MIN: u64 = 4096;

/// Everything behind the state mutex.
pub(crate) struct State {
    pub groups: HashMap<u64, GroupIndex>,
    pub queue: VecDeque<Request>,
    /// Open segment files (the active one included), for reading entries back.
    pub segments: BTreeMap<u64, Arc<DurableFile>>,
    pub cache: EntryCache,
    pub next_serial: u64,
    pub shutdown: bool,
    /// Groups that lost records to a refused write (e.g. `ENOSPC`), with the error: their
    /// in-memory state is ahead of the disk, so they take no more requests until the log is
    /// reopened (replay rebuilds them from what is on disk). Other groups carry on.
    pub failed: HashMap<u64, std::io::Error>,
    /// A round is being written (by the writer thread or inline by an appender).
    pub busy: bool,
    /// The writer's unsynced records: since when (for the thread's lazy sync).
    pub unsynced_since: Option<std::time::Instant>,
}

/// Refuses a request of a group that lost records to a refused write.
fn refuse_failed_group(state: &State, group: u64) -> Result<(), WalError> {
    match state.failed.get(&group) {
        Some(source) => Err(WalError::WriteRefused { group, source: clone_io_error(source) }),
        None => Ok(()),
    }
}

/// Counters behind [`Wal::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub unsynced_rounds: AtomicU64,
    pub entries: AtomicU64,
    pub segments: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub active_segment: AtomicU64,
    pub torn_bytes: AtomicU64,
    pub refused_rounds: AtomicU64,
    pub direct_writes: AtomicU64,
    pub inline_rounds: AtomicU64,
    pub commits: TimeAvg,
    pub rounds: TimeAvg,
}

/// State shared by the [`Wal`] handle and the writer thread.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub options: WalOptions,
    pub state: Mutex<State>,
    /// Signalled when a request is queued or on shutdown.
    pub wake: Condvar,
    pub ledger: Mutex<Ledger>,
    pub counters: Counters,
    queue_permits: Arc<Semaphore>,
    /// Test-only fault: when non-zero, the writer's next record write stores half its buffer
    /// and fails with this errno (see [`Wal::inject_write_error`]).
    pub inject_write_errno: std::sync::atomic::AtomicI32,
    /// Run by the writer before every segment fdatasync ([`Wal::set_sync_hook`]).
    pub sync_hook: Mutex<Option<SyncHook>>,
}

/// What [`Wal::set_sync_hook`] installs: made durable before each round's fdatasync.
pub type SyncHook = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// Locks a mutex; a poisoned one means a thread panicked mid-update, which is fatal.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(_) => panic!("a WAL mutex is poisoned: a thread panicked while holding it"),
    }
}

/// The write-ahead log of one daemon. See the crate documentation.
pub struct Wal {
    shared: Arc<Shared>,
    /// The writer's state: the thread's, lent to an appender for an inline round.
    rounds: Arc<Mutex<Writer>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    lock: LockFile,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Wal").field("dir", &self.shared.dir).finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`: takes the directory lock, replays every
    /// segment, cuts a torn tail off the newest one, starts a new segment and the writer thread.
    pub fn open(dir: &Path, options: WalOptions) -> Result<Arc<Wal>, WalError> {
        if options.segment_bytes < SEGMENT_BYTES_MIN {
            return Err(WalError::InvalidOptions { reason: "segment_bytes below 4096" });
        }
        std::fs::create_dir_all(dir).map_err(|error| WalError::io(dir, error))?;
        let lock = lock_dir(dir)?;
        let recovered = recover(dir)?;
        let ledger = Ledger::from_index(&recovered.groups);
        let active_seq = recovered.next_seq;
        let (active, active_len, salt) =
            crate::reserve::create_segment_with_reserve(dir, active_seq, &ledger.checkpoints())?;
        crate::reserve::ensure(dir);
        let mut segments = recovered.segments;
        let oldest_seq = segments.keys().next().copied().unwrap_or(active_seq);
        segments.insert(active_seq, active.clone());
        let counters = Counters::default();
        counters.torn_bytes.store(recovered.torn_bytes, Ordering::Relaxed);
        counters.active_segment.store(active_seq, Ordering::Relaxed);
        counters.segments.store(segments.len() as u64, Ordering::Relaxed);
        let queue_permits = (QUEUE_BYTES_MAX / QUEUE_PERMIT_BYTES) as usize;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(State {
                groups: recovered.groups,
                queue: VecDeque::new(),
                segments,
                cache: EntryCache::new(options.cache_bytes),
                next_serial: 1,
                shutdown: false,
                failed: HashMap::new(),
                busy: false,
                unsynced_since: None,
            }),
            wake: Condvar::new(),
            ledger: Mutex::new(ledger),
            counters,
            queue_permits: Arc::new(Semaphore::new(queue_permits)),
            inject_write_errno: std::sync::atomic::AtomicI32::new(0),
            sync_hook: Mutex::new(None),
        });
        let mut writer =
            Writer::new(shared.clone(), active, active_seq, active_len, salt, oldest_seq);
        writer.collect_garbage();
        let rounds = Arc::new(Mutex::new(writer));
        let (thread_shared, thread_rounds) = (shared.clone(), rounds.clone());
        let handle = std::thread::Builder::new()
            .name("quarry-wal-writer".to_string())
            .spawn(move || crate::writer::run(thread_shared, thread_rounds))
            .map_err(|error| WalError::io(dir, error))?;
        tracing::info!(dir = %dir.display(), lock = %lock.path().display(), active_seq,
            "WAL opened");
        Ok(Arc::new(Wal { shared, rounds, writer: Mutex::new(Some(handle)), lock }))
    }

    /// The openraft log store of `group` (the monitor uses group 0). Handles are cheap; the
    /// caller must not drive two stores of one group at once (openraft serialises its own).
    pub fn log_store<C>(self: &Arc<Self>, group: u64) -> WalLogStore<C>
    where
        C: EntryCodec<NodeId = u64, Entry = openraft::Entry<C>>,
    {
        WalLogStore::new(self.clone(), group, None)
    }

    /// [`Wal::log_store`] whose entries' large payloads `placer` moves out of the log
    /// (write-once, see [`Placer`]).
    pub fn log_store_placed<C>(
        self: &Arc<Self>,
        group: u64,
        placer: Arc<dyn Placer<C>>,
    ) -> WalLogStore<C>
    where
        C: EntryCodec<NodeId = u64, Entry = openraft::Entry<C>>,
    {
        WalLogStore::new(self.clone(), group, Some(placer))
    }

    /// Forgets everything about `group` (its entries' space is reclaimed with their segments).
    /// Durable with the next group commit.
    pub fn remove_group(&self, group: u64) -> Result<(), WalError> {
        let mut state = lock(&self.shared.state);
        if state.shutdown {
            return Err(WalError::Closed);
        }
        state.groups.remove(&group);
        state.queue.push_back(Request::Metadata { group, record: Record::RemoveGroup, done: None });
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Counters and sizes.
    pub fn stats(&self) -> WalStats {
        let counters = &self.shared.counters;
        let (commits, commit_ns) = counters.commits.get();
        let (rounds, round_ns) = counters.rounds.get();
        let state = lock(&self.shared.state);
        WalStats {
            records: counters.records.load(Ordering::Relaxed),
            bytes: counters.bytes.load(Ordering::Relaxed),
            fsyncs: counters.fsyncs.load(Ordering::Relaxed),
            unsynced_rounds: counters.unsynced_rounds.load(Ordering::Relaxed),
            segments: counters.segments.load(Ordering::Relaxed),
            entries: counters.entries.load(Ordering::Relaxed),
            segments_deleted: counters.segments_deleted.load(Ordering::Relaxed),
            active_segment: counters.active_segment.load(Ordering::Relaxed),
            torn_bytes: counters.torn_bytes.load(Ordering::Relaxed),
            refused_rounds: counters.refused_rounds.load(Ordering::Relaxed),
            direct_writes: counters.direct_writes.load(Ordering::Relaxed),
            inline_rounds: counters.inline_rounds.load(Ordering::Relaxed),
            groups: state.groups.len() as u64,
            cache_bytes: state.cache.bytes(),
            queued_requests: state.queue.len() as u64,
            commits,
            commit_ns,
            rounds,
            round_ns,
        }
    }

    /// Groups whose oldest live entries keep old segments from being deleted, oldest first.
    /// Purging them (snapshot, then purge) lets the log shrink.
    pub fn laggards(&self) -> Vec<Laggard> {
        let active = self.shared.counters.active_segment.load(Ordering::Relaxed);
        lock(&self.shared.ledger).laggards(active)
    }

    /// Groups the log has any state for, ascending.
    pub fn groups(&self) -> Vec<u64> {
        let mut groups: Vec<u64> = lock(&self.shared.state).groups.keys().copied().collect();
        groups.sort_unstable();
        groups
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The lock file held while this log is open.
    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }

    /// Test-only fault injection: while `Some(errno)`, every write of a round's records stores
    /// the first half of the round and then fails with `errno` (as a disk filling up
    /// mid-write does). Not for production use.
    #[doc(hidden)]
    pub fn inject_write_error(&self, errno: Option<i32>) {
        self.shared.inject_write_errno.store(errno.unwrap_or(0), Ordering::SeqCst);
    }

    /// Installs `hook`, which the writer runs before it writes a round holding entries: data
    /// an entry refers to but does not carry (a large write placed in the store's data file
    /// before its entry was appended: `Store::place`) is made durable by it before the
    /// entry's record is written at all (a power cut can persist a round that was written
    /// but not yet synced, and its entries must not name lost data). It should cost nothing
    /// when nothing was placed since its last run. A failing hook is fatal, as a failing fdatasync is (the
    /// round cannot be acknowledged, and a retried sync may report lost pages durable).
    /// Replaces any earlier hook; `None` removes it.
    pub fn set_sync_hook(&self, hook: Option<SyncHook>) {
        *lock(&self.shared.sync_hook) = hook;
    }

    /// Waits until everything accepted so far is durable.
    pub async fn flush(&self) -> Result<(), WalError> {
        let (sender, receiver) = oneshot::channel();
        let done: Completion = Box::new(move |result: Result<(), &std::io::Error>| {
            let _ = sender.send(result.map_err(clone_io_error));
        });
        self.push(Request::Barrier { done })?;
        match receiver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(WalError::io(&self.shared.dir, source)),
            Err(_) => Err(WalError::Closed),
        }
    }

    /// Rebuilds `group`'s state from its records on disk, after everything accepted before
    /// this call is written, and lets the group take requests again if a refused write had
    /// stopped it ([`WalError::WriteRefused`]): the group continues from what is on disk,
    /// exactly as after a reopen of the log, while every other group carries on. The caller
    /// must not use any log store of the group meanwhile (its Raft group is stopped); stores
    /// made after the call see the rebuilt state.
    pub async fn reload_group(&self, group: u64) -> Result<(), WalError> {
        let (sender, receiver) = oneshot::channel();
        let done: Completion = Box::new(move |result: Result<(), &std::io::Error>| {
            let _ = sender.send(result.map_err(clone_io_error));
        });
        self.push(Request::Reload { group, done })?;
        match receiver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(WalError::io(&self.shared.dir, source)),
            Err(_) => Err(WalError::Closed),
        }
    }

    /// True if a refused write stopped `group` (see [`Wal::reload_group`]).
    pub fn group_refused(&self, group: u64) -> bool {
        lock(&self.shared.state).failed.contains_key(&group)
    }

    fn push(&self, request: Request) -> Result<(), WalError> {
        let mut state = lock(&self.shared.state);
        if state.shutdown {
            return Err(WalError::Closed);
        }
        state.queue.push_back(request);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Waits for queue space for `bytes` of entries.
    pub(crate) async fn reserve(&self, bytes: u64) -> Result<OwnedSemaphorePermit, WalError> {
        let total = QUEUE_BYTES_MAX / QUEUE_PERMIT_BYTES;
        let wanted = bytes.div_ceil(QUEUE_PERMIT_BYTES).clamp(1, total) as u32;
        self.shared
            .queue_permits
            .clone()
            .acquire_many_owned(wanted)
            .await
            .map_err(|_| WalError::Closed)
    }

    /// Accepts entries of `group`: readable at once, written and fsynced by the writer, which
    /// then runs `done`; with `inline`, by this thread if the writer is free (see the writer's
    /// "Inline rounds"): `done` has then run when this returns. Entries must follow the
    /// group's last entry (openraft guarantees it), else nothing is accepted and
    /// [`WalError::NonContiguous`] is returned.
    pub(crate) fn submit_entries(
        &self,
        group: u64,
        entries: Vec<SerialisedEntry>,
        permit: OwnedSemaphorePermit,
        done: Completion,
        inline: bool,
    ) -> Result<(), WalError> {
        let mut state = lock(&self.shared.state);
        if state.shutdown {
            return Err(WalError::Closed);
        }
        refuse_failed_group(&state, group)?;
        let index = state.groups.entry(group).or_default();
        if let Some(&(first, _)) = entries.first() {
            if let Err(violation) = index.check_append(group, first.index) {
                tracing::error!(%violation, "refusing an append that would leave a hole");
                return Err(WalError::NonContiguous {
                    group,
                    index: first.index,
                    expected: index.next_index(),
                });
            }
        }
        for pair in entries.windows(2) {
            if pair[1].0.index != pair[0].0.index + 1 {
                let expected = pair[0].0.index + 1;
                return Err(WalError::NonContiguous { group, index: pair[1].0.index, expected });
            }
        }
        let first_serial = state.next_serial;
        state.next_serial += entries.len() as u64;
        let index = state.groups.entry(group).or_default();
        let mut queued = Vec::with_capacity(entries.len());
        for (offset, (log_id, bytes)) in entries.into_iter().enumerate() {
            assert!(bytes.len() <= RECORD_PAYLOAD_MAX as usize, "entry size checked by the store");
            let serial = first_serial + offset as u64;
            let location = Location::Queued(bytes.clone());
            index.push(Slot { log_id, serial, location });
            queued.push(QueuedEntry { log_id, serial, bytes });
        }
        let queued_at = std::time::Instant::now();
        let request =
            Request::Entries { group, entries: queued, done, permit: Some(permit), queued_at };
        state.queue.push_back(request);
        if !inline || !crate::writer::try_inline_round(&self.shared, &self.rounds, state) {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Accepts a metadata record of `group`, applying it to the readers' view at once.
    pub(crate) fn submit_metadata(
        &self,
        group: u64,
        record: Record,
        done: Option<Completion>,
    ) -> Result<(), WalError> {
        let mut state = lock(&self.shared.state);
        if state.shutdown {
            return Err(WalError::Closed);
        }
        refuse_failed_group(&state, group)?;
        let index = state.groups.entry(group).or_default();
        match &record {
            Record::Vote(vote) => index.vote = Some(*vote),
            Record::Committed(committed) => index.committed = *committed,
            Record::Truncate { from } => index.truncate(*from),
            Record::Purge(upto) => index.purge(*upto),
            other => panic!("not a per-group metadata update: {other:?}"),
        }
        // openraft saves `committed` after every commit and nobody waits for it: it does not
        // wake the writer (a wake-up and a `pwrite` per client write), it rides on the next
        // round, or the writer takes it on its own within LAZY_SYNC_AFTER (writer docs).
        let quiet = done.is_none() && matches!(record, Record::Committed(_));
        state.queue.push_back(Request::Metadata { group, record, done });
        if !quiet {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Saves a vote and returns a receiver that fires once it is durable.
    pub(crate) fn submit_vote(
        &self,
        group: u64,
        vote: Vote<u64>,
    ) -> Result<oneshot::Receiver<()>, WalError> {
        let (sender, receiver) = oneshot::channel();
        let done: Completion = Box::new(move |result: Result<(), &std::io::Error>| {
            if result.is_ok() {
                // A refused vote drops the sender: the waiter sees the log as failed.
                let _ = sender.send(());
            }
        });
        self.submit_metadata(group, Record::Vote(vote), Some(done))?;
        Ok(receiver)
    }

    /// The group's vote, committed, purged and last log ids.
    pub(crate) fn group_state(&self, group: u64) -> GroupSummary {
        let state = lock(&self.shared.state);
        match state.groups.get(&group) {
            Some(index) => GroupSummary {
                vote: index.vote,
                committed: index.committed,
                purged: index.purged,
                last: index.last_log_id(),
            },
            None => GroupSummary::default(),
        }
    }

    /// Serialised entries of `group` with index in `start .. end`, in order; stops early once
    /// `byte_limit` bytes are gathered (never before the first entry). Entries not in memory are
    /// read from their segment and checked (crc, group, log id).
    pub(crate) fn read_entries(
        &self,
        group: u64,
        start: u64,
        end: u64,
        byte_limit: u64,
    ) -> Result<Vec<SerialisedEntry>, WalError> {
        let plan = self.plan_read(group, start, end, byte_limit);
        let mut entries = Vec::with_capacity(plan.len());
        for (log_id, source) in plan {
            let bytes = match source {
                Source::Memory(bytes) => bytes,
                Source::Disk { file, segment, offset, len } => {
                    self.read_entry_record(&file, segment, offset, len, group, log_id)?
                }
            };
            entries.push((log_id, bytes));
        }
        Ok(entries)
    }

    fn plan_read(&self, group: u64, start: u64, end: u64, limit: u64) -> Vec<(LogId<u64>, Source)> {
        let state = lock(&self.shared.state);
        let Some(index) = state.groups.get(&group) else { return Vec::new() };
        let low = start.max(index.first);
        let high = end.min(index.next_index());
        let mut plan = Vec::new();
        let mut gathered = 0u64;
        for log_index in low..high {
            let slot = &index.slots[(log_index - index.first) as usize];
            assert_eq!(slot.log_id.index, log_index, "slots are contiguous");
            let (source, len) = match &slot.location {
                Location::Queued(bytes) => (Source::Memory(bytes.clone()), bytes.len() as u64),
                &Location::Disk { segment, offset, len } => {
                    let source = match state.cache.get(segment, offset) {
                        Some(bytes) => Source::Memory(bytes),
                        None => {
                            let Some(file) = state.segments.get(&segment) else {
                                panic!("live entry {log_index} of group {group} is in deleted segment {segment}");
                            };
                            Source::Disk { file: file.clone(), segment, offset, len }
                        }
                    };
                    (source, u64::from(len))
                }
            };
            plan.push((slot.log_id, source));
            gathered += len;
            if gathered >= limit {
                break;
            }
        }
        plan
    }

    fn read_entry_record(
        &self,
        file: &DurableFile,
        segment: u64,
        offset: u64,
        len: u32,
        group: u64,
        log_id: LogId<u64>,
    ) -> Result<Bytes, WalError> {
        let path = segment_path(&self.shared.dir, segment);
        let mut record = vec![0u8; RECORD_HEADER_LEN + len as usize];
        file.read_exact_at(&mut record, offset).map_err(|error| WalError::io(&path, error))?;
        let corrupt = |reason| WalError::Corrupt { path: path.clone(), offset, reason };
        let wrong_entry = Corruption::WrongEntry { group, index: log_id.index };
        let header = RecordHeader::parse(&record);
        if header.len != len || header.group != group {
            return Err(corrupt(wrong_entry));
        }
        let payload = &record[RECORD_HEADER_LEN..];
        let kind = check_record(&header, payload).map_err(corrupt)?;
        if kind != RecordKind::Entry {
            return Err(corrupt(wrong_entry));
        }
        match decode_record(kind, payload).map_err(|rejected| rejected.at(&path, offset))? {
            // The payload is the record without its header: no copy.
            Record::Entry { log_id: found } if found == log_id => {
                Ok(Bytes::from(record).slice(RECORD_HEADER_LEN..))
            }
            _ => Err(corrupt(wrong_entry)),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Poison-tolerant: dropping during a panic's unwinding must not panic again.
        let mut state = self.shared.state.lock().unwrap_or_else(|poison| poison.into_inner());
        state.shutdown = true;
        drop(state);
        self.shared.wake.notify_all();
        let handle = self.writer.lock().unwrap_or_else(|poison| poison.into_inner()).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!(dir = %self.shared.dir.display(), "the WAL writer thread panicked");
            }
        }
    }
}

/// Takes the directory lock, `DIR/LOCK` (see the crate docs).
fn lock_dir(dir: &Path) -> Result<LockFile, WalError> {
    LockFile::acquire(&dir.join(LOCK_FILE_NAME)).map_err(|error| match error {
        LockError::Held { path, holder } => WalError::Locked { path, holder },
        LockError::Fs(error) => WalError::io(error.path, error.source),
    })
}

/// Where a planned read gets its bytes.
enum Source {
    Memory(Bytes),
    Disk { file: Arc<DurableFile>, segment: u64, offset: u64, len: u32 },
}

/// A group's log pointers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GroupSummary {
    pub vote: Option<Vote<u64>>,
    pub committed: Option<LogId<u64>>,
    pub purged: Option<LogId<u64>>,
    pub last: Option<LogId<u64>>,
}
