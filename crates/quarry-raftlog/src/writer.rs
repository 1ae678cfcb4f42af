//! The writer: group commit. Its thread owns the active segment (and lends it to an appender
//! for an inline round: [`try_inline_round`]). Each round takes every queued request (up to
//! [`BATCH_BYTES_MAX`]), encodes them into one buffer, writes it with one `pwrite`, fdatasyncs
//! once if anyone waits for the round, publishes the new disk positions to readers, completes
//! every waiter, then deletes the segments no live entry needs; a round that finds the active
//! segment full first starts a new one (rotation).
//!
//! Records nobody waits for (save_committed, truncate, purge, remove-group: openraft calls
//! `save_committed` after every commit) do not cost an fsync of their own. A `committed`
//! record does not even wake the writer: it waits in the queue for the next round (at queue
//! depth 1, the next write's append), or for the writer's own look at the queue after
//! [`LAZY_SYNC_AFTER`] when nothing else comes; a write then costs one round, not two. A round made only of
//! them is written without one; the next round with a waiter (or, when the log goes idle,
//! a lazy sync after [`LAZY_SYNC_AFTER`]) fdatasyncs the segment, which covers them. Order is
//! kept: one file, written in queue order, and one fdatasync makes everything before it
//! durable, so a crash still recovers a prefix of the operations; before a new segment is
//! started the old one is synced, so a durable record in a newer segment never follows a
//! lost one in an older segment. Segments are deleted only after a round that left nothing
//! unsynced: the purge or truncate that killed them is durable by then.
//!
//! Preallocation: an fdatasync after a write that grew the file must also write the inode (its
//! size): on ext4 that is a second, serial I/O per group commit. So when a small round grows
//! the active segment, the writer also writes [`PREALLOC_BYTES`] of zeros after it (synced
//! with the round); the following rounds overwrite them and their fdatasync writes data only,
//! as a database's pre-zeroed log files do. A zero tail is never a record (kind 0 does not
//! exist, its crc does not match), and it is cut off before the segment is left behind: the
//! old segment is truncated to its records (and synced) before a new one starts, and the
//! active one at shutdown; after a crash, recovery cuts an all-zero tail of the newest segment
//! silently (see `replay`). Rounds of [`PREALLOC_BYTES`] or more just append (zeroing would
//! double their bytes for little gain).
//!
//! Direct I/O: every round is written through a second handle of the active segment opened
//! with `O_DIRECT` ([`DurableFile::open_direct`]), from a 4 KiB-aligned buffer, at a 4 KiB
//! boundary, padded with zeros to whole 4 KiB blocks: on this kind of VM a buffered 4 MiB
//! write plus fdatasync cost ~12 ms of CPU in the kernel's page cache and writeback, a direct
//! one ~0.4 ms (fio, docs/benchmarks.md). The records stay
//! back to back as before (same format): a direct write starts at the 4 KiB block holding the
//! end of the last round and rewrites that block's head (`tail`, kept in memory) unchanged, as
//! the page cache's writeback of a partial page always did; its padding zeros are what the
//! next round overwrites, and recovery already takes a zero tail for the end. Small rounds
//! were buffered until the inline rounds (docs/benchmarks.md, "Tenth round"): a buffered
//! round's fdatasync runs the page cache's writeback (~20% of a 4 KiB write's CPU at queue
//! depth 1), a direct one's only flushes the device's cache; all-direct measured 4 KiB writes
//! at QD1 at 0.296 ms against 0.319 (means of eight alternating pairs, direct ahead or level
//! in seven) and QD32 at 15167 / 15411 IOPS and 75–77 µs of CPU against 14816 / 14108 and
//! 80–82. The fdatasync after the write is unchanged (it flushes the device's cache). Where
//! the file system has no direct I/O (tmpfs), everything is buffered (Linux keeps the two
//! coherent anyway: a direct write first writes back and drops the cached pages of its
//! range).
//!
//! An I/O error here aborts the process: after a failed fdatasync the page cache and the disk
//! may disagree and retrying can report data durable that is not (the "fsyncgate" lesson;
//! raft-engine panics the same way). The daemon restarts and replays. The exception is a
//! record write refused for space (`ENOSPC`, `EDQUOT`, see `refuse_round`): nothing was made
//! durable, so the file is cut back to its records (truncate + fsync, which needs no space),
//! the round's waiters get the error, its groups are marked failed, and the ledger never saw
//! the round (its updates are applied only after a successful write).

use bytes::Bytes;
use quarry_persist::{AlignedBuf, DurableFile, DIRECT_IO_ALIGN};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use crate::error::{clone_io_error, WalError};
use crate::format::{
    encode_metadata, encode_record, encode_segment_header, kind_of, GroupCheckpoint, Record,
    RecordKind, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::index::Location;
use crate::queue::{Completion, Request};
use crate::replay::{segment_path, sync_dir};
use crate::reserve::{create_segment_with_reserve, is_no_space};
use crate::wal::{lock, Shared, State};

/// A round writes at most this many bytes (plus one request); the rest waits for the next.
pub const BATCH_BYTES_MAX: u64 = 16 << 20;

/// Zeros written after a small round that grows the active segment (see the module docs).
pub const PREALLOC_BYTES: u64 = 1 << 20;

/// Records written without an fsync (nobody waited for them) are synced at the latest this
/// long after they were written (by the next round, or when the log is idle); a round with a
/// waiter syncs them earlier.
pub const LAZY_SYNC_AFTER: Duration = Duration::from_millis(50);

/// An appender writes the round itself ([`try_inline_round`]) only if the queued requests
/// hold at most this many bytes: a larger round (a direct write) would hold the caller's
/// thread too long, and saving two wake-ups gains it nothing.
pub const INLINE_BYTES_MAX: u64 = 64 << 10;

/// An entry written this round, to publish to readers.
struct Written {
    group: u64,
    index: u64,
    serial: u64,
    offset: u64,
    len: u32,
    bytes: Bytes,
}

/// A ledger update of a round, applied once the round's write succeeded.
enum LedgerUpdate {
    Append { group: u64, index: u64 },
    Apply { group: u64, record: Record },
}

/// What a round must do after the fsync.
#[derive(Default)]
struct Round {
    written: Vec<Written>,
    completions: Vec<Completion>,
    permits: Vec<OwnedSemaphorePermit>,
    records: u64,
    /// Groups with records in the round.
    groups: BTreeSet<u64>,
    ledger: Vec<LedgerUpdate>,
    /// Requests of groups that already lost a write: refused without being written.
    refused: Vec<(Completion, std::io::Error)>,
    /// When each append of the round was queued (for the commit latency).
    queued_at: Vec<Instant>,
}

/// The writer thread's state.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    active: Arc<DurableFile>,
    active_seq: u64,
    active_len: u64,
    /// Length of the active segment file: `active_len` plus the preallocated zeros after it.
    file_len: u64,
    /// Length of the active segment's header and checkpoints: rotation counts only the bytes
    /// after them, so many groups' checkpoints cannot make every round start a segment.
    active_start: u64,
    /// Oldest segment file still on disk (segments `oldest_seq ..= active_seq` exist).
    oldest_seq: u64,
    /// When the oldest record written without an fsync since the last one was written.
    unsynced: Option<Instant>,
    /// The round being written, in aligned memory: with a direct handle, first the active
    /// segment's `tail` (what a direct write rewrites in front of the new records), then the
    /// round's records from `records_at`. Records are encoded straight into it, so a direct
    /// write sends it as it is (a 4 MiB write is copied once into the log, not twice).
    buffer: AlignedBuf,
    /// Where this round's records start in `buffer`.
    records_at: usize,
    /// [`PREALLOC_BYTES`] of zeros, in aligned memory (written directly or buffered).
    zeros: AlignedBuf,
    /// The active segment opened for direct I/O (None: the file system has none).
    direct: Option<DurableFile>,
    /// The active segment's bytes from the last 4 KiB boundary up to `active_len`: what a
    /// direct write rewrites in front of the new records.
    tail: Vec<u8>,
    /// The active segment's salt (its header), repeated in every round end.
    salt: u32,
    /// Bytes of the active segment made durable by the last fdatasync (or its creation).
    synced_len: u64,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        active: Arc<DurableFile>,
        active_seq: u64,
        active_len: u64,
        salt: u32,
        oldest_seq: u64,
    ) -> Writer {
        assert!(oldest_seq <= active_seq);
        assert!(active_len >= SEGMENT_HEADER_LEN);
        let active_start = active_len;
        let mut zeros = AlignedBuf::new();
        zeros.extend_from_slice(&vec![0; PREALLOC_BYTES as usize]);
        let mut writer = Writer {
            shared,
            active,
            active_seq,
            active_len,
            file_len: active_len,
            active_start,
            oldest_seq,
            unsynced: None,
            buffer: AlignedBuf::new(),
            records_at: 0,
            zeros,
            direct: None,
            tail: Vec::new(),
            salt,
            synced_len: active_len,
        };
        writer.open_direct();
        writer
    }

    /// Opens the active segment for direct writes and loads its `tail`; on any failure the
    /// writer stays with the buffered handle (slower, equally correct), with a warning.
    fn open_direct(&mut self) {
        self.direct = None;
        self.tail.clear();
        let path = segment_path(&self.shared.dir, self.active_seq);
        let direct = match DurableFile::open_direct(&path) {
            Ok(direct) => direct,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "no direct I/O for the WAL");
                return;
            }
        };
        let Some(direct) = direct else { return };
        let block = DIRECT_IO_ALIGN as u64;
        let mut tail = vec![0u8; (self.active_len % block) as usize];
        let tail_at = self.active_len - self.active_len % block;
        if let Err(error) = self.active.read_exact_at(&mut tail, tail_at) {
            tracing::warn!(path = %path.display(), %error, "no direct I/O for the WAL");
            return;
        }
        self.tail = tail;
        self.direct = Some(direct);
    }

    /// Records written without an fsync since the last one: since when (the writer thread's
    /// lazy sync is due [`LAZY_SYNC_AFTER`] later).
    pub(crate) fn unsynced_since(&self) -> Option<Instant> {
        self.unsynced
    }

    /// What the writer thread does when the log is dropped: sync what is unsynced and cut the
    /// preallocated tail.
    fn finish(&mut self) {
        if self.unsynced.is_some() {
            self.sync_idle();
        }
        if let Err(error) = self.cut_preallocation() {
            // Recovery cuts an all-zero tail of the newest segment anyway.
            let path = segment_path(&self.shared.dir, self.active_seq);
            tracing::warn!(path = %path.display(), %error, "cannot cut the preallocated tail");
        }
    }

    /// One group commit. The fdatasync is skipped when nobody waits for the round (see the
    /// module docs); segments are deleted only when nothing written is left unsynced.
    pub(crate) fn commit(&mut self, batch: Vec<Request>) {
        let started = Instant::now();
        self.commit_round(batch);
        self.shared.counters.rounds.record_since(started);
    }

    /// The round itself (see [`Writer::commit`]).
    fn commit_round(&mut self, batch: Vec<Request>) {
        if self.active_len - self.active_start >= self.shared.options.segment_bytes {
            if self.unsynced.is_some() {
                // Everything in the old segment must be durable before anything in the new one.
                self.sync();
            }
            // An older segment must end exactly at its last record (replay refuses anything
            // else there), durably, before a newer one exists.
            if let Err(error) = self.cut_preallocation() {
                fatal("truncate", &segment_path(&self.shared.dir, self.active_seq), &error);
            }
            self.rotate();
        }
        let mut round = self.encode(batch);
        for (done, error) in round.refused.drain(..) {
            done(Err(&error));
        }
        if !round.written.is_empty() {
            // The data the round's entries name first (see `Wal::set_sync_hook`): before the
            // records are written, not just before the fdatasync, because a power cut can
            // persist an unsynced round, whose entries must not name data that is lost.
            let hook = lock(&self.shared.sync_hook).clone();
            if let Some(hook) = hook {
                if let Err(error) = hook() {
                    fatal("the sync hook's fdatasync", &self.shared.dir, &error);
                }
            }
        }
        if !self.records().is_empty() {
            if let Err(error) = self.write() {
                self.refuse_round(round, error);
                return;
            }
        }
        let mut ledger = lock(&self.shared.ledger);
        for update in round.ledger.drain(..) {
            match update {
                LedgerUpdate::Append { group, index } => {
                    ledger.append(group, index, self.active_seq)
                }
                LedgerUpdate::Apply { group, record } => ledger.apply(group, &record),
            }
        }
        drop(ledger);
        let waited = !round.completions.is_empty();
        let overdue = self.unsynced.is_some_and(|since| since.elapsed() >= LAZY_SYNC_AFTER);
        if (waited || overdue) && self.unsynced.is_some() {
            self.sync();
        }
        let counters = &self.shared.counters;
        counters.records.fetch_add(round.records, Ordering::Relaxed);
        counters.entries.fetch_add(round.written.len() as u64, Ordering::Relaxed);
        if self.unsynced.is_some() {
            counters.unsynced_rounds.fetch_add(1, Ordering::Relaxed);
        }
        // Nothing is deleted (nor its read handle dropped) while a killing record may be
        // unsynced.
        let keep_from = match self.unsynced {
            Some(_) => self.oldest_seq,
            None => self.first_needed_segment(),
        };
        self.publish(round.written, keep_from);
        // Counted before the completions run, so a caller they answer sees its commit.
        let now = Instant::now();
        for queued_at in round.queued_at {
            counters.commits.record(now.saturating_duration_since(queued_at));
        }
        for done in round.completions {
            done(Ok(()));
        }
        drop(round.permits);
        self.delete_segments_below(keep_from);
        if self.buffer.capacity() as u64 > 2 * BATCH_BYTES_MAX {
            self.buffer.release();
        }
    }

    /// The records of the round being written.
    fn records(&self) -> &[u8] {
        &self.buffer.as_slice()[self.records_at..]
    }

    /// Truncates the active segment to its records (dropping the preallocated zeros) and
    /// makes that durable. Nothing may be unsynced.
    fn cut_preallocation(&mut self) -> std::io::Result<()> {
        assert!(self.unsynced.is_none(), "cutting the preallocation with unsynced records");
        if self.file_len > self.active_len {
            self.active.set_len(self.active_len)?;
            self.active.sync_all()?;
            self.file_len = self.active_len;
            self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The log went idle with unsynced records: sync them, then delete what they killed.
    pub(crate) fn sync_idle(&mut self) {
        assert!(self.unsynced.is_some(), "an idle sync with nothing to sync");
        self.sync();
        let keep_from = self.first_needed_segment();
        self.publish(Vec::new(), keep_from);
        self.delete_segments_below(keep_from);
    }

    /// Encodes a batch into the buffer and records it in the ledger.
    fn encode(&mut self, batch: Vec<Request>) -> Round {
        self.buffer.clear();
        if self.direct.is_some() {
            self.buffer.extend_from_slice(&self.tail);
        }
        self.records_at = self.buffer.len();
        let base = self.active_len - self.records_at as u64;
        let mut round = Round::default();
        let failed: HashMap<u64, std::io::Error> = {
            let state = lock(&self.shared.state);
            state.failed.iter().map(|(&group, error)| (group, clone_io_error(error))).collect()
        };
        for request in batch {
            // A group that lost a write gets nothing more written: its later records would
            // follow a hole on disk.
            let refused_group = match &request {
                Request::Entries { group, .. } | Request::Metadata { group, .. } => {
                    failed.get(group).map(clone_io_error)
                }
                Request::Barrier { .. } | Request::Reload { .. } => None,
            };
            if let Some(error) = refused_group {
                match request {
                    Request::Entries { done, .. } => round.refused.push((done, error)),
                    Request::Metadata { done: Some(done), .. } => round.refused.push((done, error)),
                    _ => {}
                }
                continue;
            }
            match request {
                Request::Entries { group, entries, done, permit, queued_at } => {
                    round.queued_at.push(queued_at);
                    round.groups.insert(group);
                    for entry in entries {
                        let at =
                            encode_record(&mut self.buffer, RecordKind::Entry, group, &entry.bytes);
                        let index = entry.log_id.index;
                        round.ledger.push(LedgerUpdate::Append { group, index });
                        round.written.push(Written {
                            group,
                            index: entry.log_id.index,
                            serial: entry.serial,
                            offset: base + at as u64,
                            len: entry.bytes.len() as u32,
                            bytes: entry.bytes,
                        });
                        round.records += 1;
                    }
                    round.completions.push(done);
                    round.permits.extend(permit);
                }
                Request::Metadata { group, record, done } => {
                    round.groups.insert(group);
                    let payload = encode_metadata(&record);
                    encode_record(&mut self.buffer, kind_of(&record), group, &payload);
                    round.ledger.push(LedgerUpdate::Apply { group, record });
                    round.records += 1;
                    round.completions.extend(done);
                }
                Request::Barrier { done } => round.completions.push(done),
                Request::Reload { .. } => unreachable!("a reload is never part of a round"),
            }
        }
        if !self.records().is_empty() {
            // Ends the round (in the same pwrite): replay applies the round's records only
            // when it finds this record intact.
            let end = Record::RoundEnd { salt: self.salt, synced: self.synced_len };
            encode_record(&mut self.buffer, RecordKind::RoundEnd, 0, &encode_metadata(&end));
        }
        round
    }

    /// Writes the buffer at the end of the active segment (not synced yet); a small round that
    /// grows the file also writes [`PREALLOC_BYTES`] of zeros after it. A write the file
    /// system refuses cleanly (`ENOSPC`, `EDQUOT`) is returned after the file was cut back to
    /// its records, durably; any other write error aborts (see the module docs).
    fn write(&mut self) -> std::io::Result<()> {
        // The segment's path is formatted only for an error (every round, it took ~1% of the
        // writer's CPU).
        let records_len = self.records().len() as u64;
        let written_end = match self.write_records() {
            Ok(end) => end,
            Err(error) => return self.refused_write(error),
        };
        self.active_len += records_len;
        if written_end > self.file_len {
            self.file_len = written_end;
            if records_len < PREALLOC_BYTES {
                // After a direct write the file ends on a 4 KiB boundary: the zeros go there
                // directly too; after a buffered one, buffered.
                let aligned = self.file_len.is_multiple_of(DIRECT_IO_ALIGN as u64);
                let target = match &self.direct {
                    Some(direct) if aligned => direct,
                    _ => &self.active,
                };
                if let Err(error) = target.write_all_at(self.zeros.as_slice(), self.file_len) {
                    let path = segment_path(&self.shared.dir, self.active_seq);
                    if !refusable(&error) {
                        fatal("write", &path, &error);
                    }
                    // The zeros are an optimisation; some of them may be there, which the
                    // larger `file_len` accounts for (the tail is cut before rotation).
                    tracing::debug!(path = %path.display(), %error, "no space to preallocate");
                }
                self.file_len += PREALLOC_BYTES;
            }
        }
        self.unsynced.get_or_insert_with(Instant::now);
        self.shared.counters.bytes.fetch_add(records_len, Ordering::Relaxed);
        Ok(())
    }

    /// A write failed: a refusal for space is cut back (see [`Writer::write`]), anything else
    /// aborts.
    fn refused_write(&mut self, error: std::io::Error) -> std::io::Result<()> {
        {
            let path = &segment_path(&self.shared.dir, self.active_seq);
            if !refusable(&error) {
                fatal("write", path, &error);
            }
            // Part of the buffer may have reached the file (whole records among it): cut it
            // off, durably, so no record of a refused round can ever be replayed. Truncation
            // frees space; it does not need any. (`tail` stays right: the bytes before
            // `active_len` are what they were.)
            let cut = self.active.set_len(self.active_len).and_then(|()| self.active.sync_all());
            if let Err(cut_error) = cut {
                fatal("truncate after a refused write", path, &cut_error);
            }
            self.file_len = self.active_len;
            self.unsynced = None;
            self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            Err(error)
        }
    }

    /// The `pwrite` of the round's buffer (with the test-only fault of
    /// [`crate::Wal::inject_write_error`]: half the buffer, then the error). Returns where
    /// the write ended in the file: `active_len` + the records, or the 4 KiB boundary after
    /// them for a direct write.
    fn write_records(&mut self) -> std::io::Result<u64> {
        let errno = self.shared.inject_write_errno.load(Ordering::SeqCst);
        let records = self.records();
        if errno != 0 {
            let half = &records[..records.len() / 2];
            self.active.write_all_at(half, self.active_len)?;
            return Err(std::io::Error::from_raw_os_error(errno));
        }
        if self.direct.is_none() {
            // No direct I/O on this file system (tmpfs): buffered, as the module docs say.
            self.active.write_all_at(records, self.active_len)?;
            return Ok(self.active_len + records.len() as u64);
        }
        let start = self.active_len - self.records_at as u64;
        assert_eq!(start % DIRECT_IO_ALIGN as u64, 0, "a direct write starts on a block");
        let data_len = self.buffer.len();
        self.buffer.pad_to_block();
        if let Some(direct) = &self.direct {
            direct.write_all_at(self.buffer.as_slice(), start)?;
            self.shared.counters.direct_writes.fetch_add(1, Ordering::Relaxed);
        }
        let keep = data_len % DIRECT_IO_ALIGN;
        self.tail.clear();
        self.tail.extend_from_slice(&self.buffer.as_slice()[data_len - keep..data_len]);
        Ok(start + self.buffer.len() as u64)
    }

    /// The round's write was refused: nothing of it is on disk. Its waiters get the error,
    /// its groups are marked failed (their in-memory state is ahead of the disk), the ledger
    /// is left as it was. The log stays open for every other group.
    fn refuse_round(&mut self, round: Round, error: std::io::Error) {
        tracing::error!(path = %segment_path(&self.shared.dir, self.active_seq).display(),
            %error, groups = ?round.groups, records = round.records,
            "WAL write refused; the round's requests fail and its groups stop until reloaded");
        {
            let mut state = lock(&self.shared.state);
            for &group in &round.groups {
                state.failed.entry(group).or_insert_with(|| clone_io_error(&error));
            }
        }
        self.shared.counters.refused_rounds.fetch_add(1, Ordering::Relaxed);
        for done in round.completions {
            done(Err(&error));
        }
        drop(round.permits);
    }

    /// Rebuilds `group`'s in-memory state from its records in the live segments (every
    /// request accepted before the reload is written by now; the active segment is read up to
    /// its last round) and lifts its refusal: a group that lost a refused round continues from
    /// what is on disk, as after a reopen. The ledger needs nothing: it only ever counted what
    /// reached the disk. A failure leaves the group as it was.
    pub(crate) fn reload(&mut self, group: u64, done: Completion) {
        let segments: Vec<(u64, Arc<DurableFile>)> = {
            let state = lock(&self.shared.state);
            state.segments.iter().map(|(&seq, file)| (seq, file.clone())).collect()
        };
        let mut bounded = Vec::with_capacity(segments.len());
        for (seq, file) in segments {
            let len = if seq == self.active_seq { Ok(self.active_len) } else { file.len() };
            match len {
                Ok(len) => bounded.push((seq, file, len)),
                Err(error) => return done(Err(&error)),
            }
        }
        match crate::replay::replay_group(&self.shared.dir, &bounded, group) {
            Ok(index) => {
                let mut state = lock(&self.shared.state);
                match index {
                    Some(index) => state.groups.insert(group, index),
                    None => state.groups.remove(&group),
                };
                let lifted = state.failed.remove(&group).is_some();
                drop(state);
                tracing::info!(group, lifted, "WAL group reloaded from disk");
                done(Ok(()));
            }
            Err(error) => {
                tracing::error!(group, %error, "WAL group reload failed");
                done(Err(&std::io::Error::other(error.to_string())));
            }
        }
    }

    /// fdatasyncs the active segment: everything written to it so far is durable.
    fn sync(&mut self) {
        if let Err(error) = self.active.sync_data() {
            fatal("fdatasync", &segment_path(&self.shared.dir, self.active_seq), &error);
        }
        self.unsynced = None;
        self.synced_len = self.active_len;
        self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Segments below the returned one hold no live entry.
    fn first_needed_segment(&self) -> u64 {
        let needed = lock(&self.shared.ledger).oldest_needed_segment();
        needed.unwrap_or(self.active_seq).min(self.active_seq)
    }

    /// Makes written entries readable from disk (and the cache) and drops read handles of
    /// segments about to be deleted.
    fn publish(&self, written: Vec<Written>, keep_from: u64) {
        let mut state = lock(&self.shared.state);
        let state = &mut *state;
        for entry in written {
            let Some(index) = state.groups.get_mut(&entry.group) else { continue };
            if entry.index < index.first || entry.index >= index.next_index() {
                continue;
            }
            let slot = &mut index.slots[(entry.index - index.first) as usize];
            if slot.serial != entry.serial {
                continue;
            }
            slot.location =
                Location::Disk { segment: self.active_seq, offset: entry.offset, len: entry.len };
            state.cache.insert(self.active_seq, entry.offset, entry.bytes);
        }
        if keep_from > self.oldest_seq {
            state.segments.retain(|&seq, _| seq >= keep_from);
            state.cache.forget_segments_below(keep_from);
        }
    }

    /// Deletes segment files below `keep_from`, oldest first; stops at the first failure so the
    /// files left always form a consecutive run.
    fn delete_segments_below(&mut self, keep_from: u64) {
        let dir = self.shared.dir.clone();
        let mut deleted = 0u64;
        while self.oldest_seq < keep_from {
            let path = segment_path(&dir, self.oldest_seq);
            if let Err(error) = quarry_persist::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot delete a dead WAL segment");
                break;
            }
            self.oldest_seq += 1;
            deleted += 1;
        }
        if deleted > 0 {
            if let Err(error) = sync_dir(&dir) {
                tracing::warn!(%error, "cannot fsync the WAL directory after deleting segments");
            }
            let counters = &self.shared.counters;
            counters.segments_deleted.fetch_add(deleted, Ordering::Relaxed);
            counters.segments.store(self.active_seq - self.oldest_seq + 1, Ordering::Relaxed);
        }
    }

    /// Deletes what the replayed log no longer needs (called once at open).
    pub fn collect_garbage(&mut self) {
        let keep_from = self.first_needed_segment();
        self.publish(Vec::new(), keep_from);
        self.delete_segments_below(keep_from);
    }

    /// Starts the next segment: header and checkpoints written and fsynced, directory fsynced.
    /// The active segment must hold nothing unsynced. A start refused for space even after
    /// the reserve went (see `crate::reserve`) keeps the active segment: the next round
    /// tries again.
    fn rotate(&mut self) {
        assert!(self.unsynced.is_none(), "rotating away from unsynced records");
        let seq = self.active_seq + 1;
        let checkpoints = lock(&self.shared.ledger).checkpoints();
        let dir = &self.shared.dir;
        let (file, len, salt) = match create_segment_with_reserve(dir, seq, &checkpoints) {
            Ok(created) => created,
            Err(WalError::Io { source, .. }) if is_no_space(&source) => {
                tracing::warn!(path = %segment_path(dir, seq).display(), error = %source,
                    "no space to start a WAL segment; the active one goes on");
                return;
            }
            Err(error) => fatal("create", &segment_path(dir, seq), &error),
        };
        crate::reserve::ensure(dir);
        lock(&self.shared.state).segments.insert(seq, file.clone());
        self.active = file;
        self.active_seq = seq;
        self.active_len = len;
        self.file_len = len;
        self.active_start = len;
        self.salt = salt;
        self.synced_len = len;
        self.open_direct();
        let counters = &self.shared.counters;
        counters.active_segment.store(seq, Ordering::Relaxed);
        counters.records.fetch_add(checkpoints.len() as u64, Ordering::Relaxed);
        counters.segments.store(self.active_seq - self.oldest_seq + 1, Ordering::Relaxed);
    }
}

/// What a round runner does next.
enum Next {
    /// A round of requests.
    Round(Vec<Request>),
    /// A group reload (alone: every request before it is written).
    Reload { group: u64, done: Completion },
    /// The queue stayed empty for [`LAZY_SYNC_AFTER`] with unsynced records: sync them.
    Idle,
    /// The log was dropped and the queue is empty.
    Stop,
}

/// The writer thread: runs rounds until the log is dropped and the queue is empty; leaves
/// nothing unsynced. Rounds written inline by an appender ([`try_inline_round`]) take turns
/// with it through the state's `busy` flag.
pub(crate) fn run(shared: Arc<Shared>, writer: Arc<Mutex<Writer>>) {
    loop {
        let next = next_batch(&shared);
        let mut held = hold(&writer);
        match next {
            Next::Round(batch) => held.commit(batch),
            Next::Reload { group, done } => held.reload(group, done),
            Next::Idle => {
                // An inline round may have synced meanwhile.
                if held.unsynced_since().is_some() {
                    held.sync_idle();
                }
            }
            Next::Stop => {
                held.finish();
                break;
            }
        }
        let unsynced = held.unsynced_since();
        drop(held);
        end_round(&shared, unsynced, false);
    }
    tracing::debug!(dir = %shared.dir.display(), "WAL writer stopped");
}

/// The writer's state for a round. The `busy` flag gives it to one round at a time, so it
/// is always free here; finding it held means two rounds could interleave their requests'
/// order (a bug: debug builds panic, release builds wait for it).
fn hold(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    match writer.try_lock() {
        Ok(held) => held,
        Err(std::sync::TryLockError::WouldBlock) => {
            debug_assert!(false, "two WAL rounds at once: the busy flag was not kept");
            lock(writer)
        }
        Err(std::sync::TryLockError::Poisoned(_)) => {
            panic!("a WAL mutex is poisoned: a thread panicked while holding it")
        }
    }
}

/// Marks the round (the thread's or an inline one) over: the writer is free and the thread
/// learns when the oldest unsynced record was written (its lazy sync). After an inline round
/// the thread (the only waiter) is woken if requests came meanwhile, the log is being
/// dropped or records wait for their sync; after its own it just looks again.
fn end_round(shared: &Shared, unsynced: Option<Instant>, inline: bool) {
    let mut state = lock(&shared.state);
    state.busy = false;
    state.unsynced_since = unsynced;
    if inline && (!state.queue.is_empty() || state.shutdown || unsynced.is_some()) {
        shared.wake.notify_one();
    }
}

/// Waits for requests (and for the writer to be free) and takes them, up to the batch bound,
/// marking the writer busy. With unsynced records it waits at most [`LAZY_SYNC_AFTER`].
fn next_batch(shared: &Shared) -> Next {
    let mut state = lock(&shared.state);
    while state.queue.is_empty() || state.busy {
        if state.shutdown && state.queue.is_empty() && !state.busy {
            state.busy = true;
            return Next::Stop;
        }
        if let (Some(since), false) = (state.unsynced_since, state.busy) {
            let left = LAZY_SYNC_AFTER.saturating_sub(since.elapsed());
            let (guard, waited) = match shared.wake.wait_timeout(state, left) {
                Ok(woken) => woken,
                Err(_) => panic!("the WAL state mutex is poisoned"),
            };
            state = guard;
            if (left.is_zero() || waited.timed_out()) && state.queue.is_empty() && !state.busy {
                state.busy = true;
                return Next::Idle;
            }
            continue;
        }
        // A `committed` record is queued without a wake-up (see `Wal::submit_metadata`):
        // look at the queue again after LAZY_SYNC_AFTER even if nobody wakes us. (An inline
        // round wakes us when it ends with requests queued.)
        state = match shared.wake.wait_timeout(state, LAZY_SYNC_AFTER) {
            Ok((guard, _)) => guard,
            Err(_) => panic!("the WAL state mutex is poisoned"),
        };
    }
    match take_batch(&mut state.queue) {
        Some(batch) => {
            state.busy = true;
            Next::Round(batch)
        }
        None => {
            let Some(Request::Reload { group, done }) = state.queue.pop_front() else {
                unreachable!("take_batch leaves a reload at the front")
            };
            state.busy = true;
            Next::Reload { group, done }
        }
    }
}

/// Takes queued requests for one round, up to [`BATCH_BYTES_MAX`] (at least one), stopping
/// before a reload (which runs alone); None if a reload is first.
fn take_batch(queue: &mut VecDeque<Request>) -> Option<Vec<Request>> {
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    while let Some(request) = queue.pop_front() {
        let len = request.encoded_len();
        if matches!(request, Request::Reload { .. })
            || (!batch.is_empty() && bytes + len > BATCH_BYTES_MAX)
        {
            queue.push_front(request);
            break;
        }
        bytes += len;
        batch.push(request);
    }
    (!batch.is_empty()).then_some(batch)
}

/// Inline rounds (see the crate docs, "Group commit"): an appender allowed to (its group's
/// [`crate::Placer::append_inline`]) that finds the writer free and at most
/// [`INLINE_BYTES_MAX`] queued writes the round itself, with whatever waited in the queue
/// (e.g. a `committed` record), where it would otherwise wake the writer thread and then be
/// woken by it. Returns false, having taken nothing, when the round is the thread's.
pub(crate) fn try_inline_round(
    shared: &Shared,
    writer: &Mutex<Writer>,
    mut state: MutexGuard<'_, State>,
) -> bool {
    let free = !state.busy
        && !state.shutdown
        && state.queue.iter().map(Request::encoded_len).sum::<u64>() <= INLINE_BYTES_MAX
        && !state.queue.iter().any(|r| matches!(r, Request::Reload { .. }));
    if !free {
        return false;
    }
    let Some(batch) = take_batch(&mut state.queue) else { return false };
    state.busy = true;
    drop(state);
    shared.counters.inline_rounds.fetch_add(1, Ordering::Relaxed);
    // Frees the writer even if the round panics (the writer mutex is then poisoned, which
    // every later round reports).
    struct Free<'a>(&'a Shared, Option<Instant>);
    impl Drop for Free<'_> {
        fn drop(&mut self) {
            end_round(self.0, self.1, true);
        }
    }
    let mut free = Free(shared, None);
    let mut held = hold(writer);
    held.commit(batch);
    free.1 = held.unsynced_since();
    true
}

/// Creates segment `seq` holding its header and the checkpoint records (one round, with its
/// round end), durably (file and directory fsynced). Returns the file, its length and salt.
pub(crate) fn create_segment(
    dir: &Path,
    seq: u64,
    checkpoints: &[(u64, GroupCheckpoint)],
) -> Result<(Arc<DurableFile>, u64, u32), WalError> {
    let path = segment_path(dir, seq);
    let salt = new_salt(seq);
    let mut buffer = encode_segment_header(seq, salt).to_vec();
    for (group, checkpoint) in checkpoints {
        let payload = encode_metadata(&Record::GroupState(checkpoint.clone()));
        encode_record(&mut buffer, RecordKind::GroupState, *group, &payload);
    }
    let end = encode_metadata(&Record::RoundEnd { salt, synced: 0 });
    encode_record(&mut buffer, RecordKind::RoundEnd, 0, &end);
    assert!(buffer.len() as u64 > SEGMENT_HEADER_LEN + RECORD_HEADER_LEN as u64);
    let io_error = |error| WalError::io(&path, error);
    let file = DurableFile::create_new(&path).map_err(io_error)?;
    file.write_all_at(&buffer, 0).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    sync_dir(dir)?;
    Ok((Arc::new(file), buffer.len() as u64, salt))
}

/// A random salt for a new segment (std's per-process random hash keys, from the OS): a
/// client cannot know it, so its data can never pass for a round end of this segment.
fn new_salt(seq: u64) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(seq);
    hasher.finish() as u32
}

/// Whether a failed write leaves the file in a known state and can be refused cleanly: the
/// file system had no space (or quota) for it. Everything else aborts.
fn refusable(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// `ENOSPC` on Linux ("No space left on device").
const ENOSPC: i32 = 28;
/// `EDQUOT` on Linux ("Disk quota exceeded").
const EDQUOT: i32 = 122;

/// Logs an I/O failure of the writer and aborts the process (see the module docs).
fn fatal(operation: &str, path: &Path, error: &dyn std::fmt::Display) -> ! {
    tracing::error!(path = %path.display(), %error, operation, "WAL I/O failed: aborting");
    eprintln!("quarry-raftlog: {operation} of {} failed: {error}; aborting", path.display());
    std::process::abort()
}
