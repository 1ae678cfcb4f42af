//! One write-ahead log shared by all Raft groups of a daemon, with group commit.
//!
//! Every placement group an OSD serves is an openraft group, and the monitor's cluster map is
//! group 0 of the monitor. Instead of a log per group (one fsync per group per write), all
//! groups of a daemon append to one log, [`Wal`], and one writer thread makes many groups'
//! appends durable with one `fdatasync`. This is where small-write IOPS are won (DESIGN.md,
//! "Replication"). [`WalLogStore`] is one group's view: it implements openraft 0.9's v2
//! [`openraft::storage::RaftLogStorage`] and [`openraft::RaftLogReader`].
//!
//! ```text
//!  WalLogStore<C> (group 3)   WalLogStore<C> (group 7)   ...      (async, openraft)
//!        | append/vote/truncate/purge: index updated at once, request queued
//!        v
//!  queue (bounded by QUEUE_BYTES_MAX) --> writer thread: encode all, 1 pwrite, 1 fdatasync,
//!                                         publish positions, complete every LogFlushed/vote,
//!                                         delete dead segments
//! ```
//!
//! # On-disk format (version 3)
//!
//! A directory holds `LOCK` (an exclusive `flock`, with the holder's pid) and segment files
//! `00000000000000000001.wal`, `…02.wal`, …: the sequence number zero-padded to 20 digits.
//! Integers are little-endian.
//!
//! Segment header, 32 bytes:
//!
//! | offset | size | field                                      |
//! |-------:|-----:|--------------------------------------------|
//! | 0      | 8    | magic `QRYRLOG\0`                          |
//! | 8      | 4    | format version (3)                         |
//! | 12     | 4    | header length (32)                         |
//! | 16     | 8    | sequence number (equals the file name)     |
//! | 24     | 4    | crc32c of bytes 0..24 and 28..32           |
//! | 28     | 4    | salt: random per segment                   |
//!
//! Format 2 segments (bytes 28..32 zero, crc over 0..24 only, no round ends) are still read
//! (a log written by the previous build opens; the new run writes format 3 segments).
//!
//! Then records, back to back, each `[len u32][crc u32][kind u8][group u64][payload; len]`
//! (17-byte header). `crc` is crc32c over the on-disk bytes of `len`, `kind`, `group` and the
//! payload. `len` is at most [`format::RECORD_PAYLOAD_MAX`] (64 MiB). Every payload starts
//! with the payload version byte `v` ([`format::PAYLOAD_VERSION`], 1). Kinds:
//!
//! | kind | name        | payload                                                          |
//! |-----:|-------------|------------------------------------------------------------------|
//! | 1    | Entry       | `v ++ bincode(LogId<u64>) ++ tag u8 ++ body`, one entry a record  |
//! | 2    | Vote        | `v ++ bincode(Vote<u64>)`                                        |
//! | 3    | Committed   | `v ++ bincode(Option<LogId<u64>>)`                               |
//! | 4    | Truncate    | `v ++ from: u64`: entries with index >= from are deleted         |
//! | 5    | Purge       | `v ++ bincode(LogId<u64>)`: entries up to it are deleted         |
//! | 6    | RemoveGroup | `v`: the group is forgotten                                      |
//! | 7    | GroupState  | `v ++ bincode({vote, committed, purged})`, see "Segments" below  |
//! | 8    | RoundEnd    | `v ++ salt u32 ++ synced u64`, group 0: ends a round (below)     |
//!
//! Every group commit (and the checkpoints that open a segment) ends with a RoundEnd record
//! in the same write: `salt` is the segment header's, `synced` the segment length already
//! fdatasynced when the round was written. A round counts only when its round end is there.
//! bincode 1 with its default (fixed-width integer) encoding. An entry's log id (term, leader
//! node id, index: 24 bytes) comes first, so replay reads it without knowing `C`: one `Wal`
//! serves groups of different type configs (monitor and OSD). The entry tag is 0 blank,
//! 1 normal (body: the application data as the type config's [`EntryCodec`] writes it, with
//! its own version byte: the OSD's `PgCommand`, the monitor's `Proposal`), 2 membership
//! (body: `bincode(Membership)`).
//!
//! # Format versions and upgrades
//!
//! The bytes of every record kind are pinned by `tests/golden/wal_v1.hex` (with the format 2
//! segment header) and `tests/golden/wal_v3.hex` (format 3 header, RoundEnd). A change to the
//! framing needs a new segment [`format::FORMAT_VERSION`]; a change to a payload (including
//! openraft's `LogId`, `Vote` or `Membership` encodings after an openraft upgrade) a new
//! [`format::PAYLOAD_VERSION`], and the old version must still be decoded (the rule is in
//! `quarry_persist`). A segment or payload whose version is newer than this build reads stops
//! [`Wal::open`] with [`WalError::FormatTooNew`]; newer application data in an entry gives
//! [`WalError::EntryFormatTooNew`] when it is read. Segments of format 1 (before payloads had
//! a version byte) are refused as unsupported: Quarry had no released users then.

//! # Segments and space reclamation
//!
//! The writer appends to the newest ("active") segment and starts a new one when the records
//! written after the active one's checkpoints have reached `segment_bytes` (checked between
//! group commits, so a segment can exceed it by one batch). A new segment begins with one GroupState record per group that has a vote,
//! committed or purged log id: with it, no older segment is ever needed for metadata, and a
//! segment can be deleted once no group has a live entry in it. Deletion is oldest-first only,
//! so the files on disk are always a consecutive run of sequence numbers; it runs after the
//! fdatasync that made the killing purge/truncate durable. [`Wal::laggards`] names the groups
//! whose old entries keep segments alive (they need a snapshot and a purge).
//!
//! # Recovery ([`Wal::open`])
//!
//! 1. Segment files older than a gap in the sequence are leftovers of a deletion that did not
//!    reach the disk: they are removed (replaying them could resurrect truncated entries).
//! 2. Segments are replayed in order; each record is checked (length, crc32c, kind, decode)
//!    and applied: per group, vote, committed, purged and, per live index, the record's
//!    position (segment, offset, length, log id). Entries must stay contiguous.
//! 3. In a format 3 segment a round's records are applied when its round end (with the
//!    segment's salt) is read; the end of the last complete round is where a torn segment is
//!    cut. In any segment but the newest, a bad record or header, or records without their
//!    round end, is [`WalError::Corrupt`] (file and offset). In the newest, an all-zero tail
//!    is the writer's preallocation (see "Group commit"): cut off silently (with any round it
//!    left incomplete). Otherwise a bad record at offset X is a torn write of unsynced rounds
//!    unless an intact round end after it (plausible header, matching crc, the segment's
//!    salt) says `synced > X`, i.e. X had been fdatasynced before a later round was written:
//!    then it is corruption of acknowledged data, an error. A torn segment is cut at the end
//!    of the last complete round before X (`set_len` + fsync) with a warning, whatever intact
//!    records of the torn rounds follow (a power cut writes an unsynced round's pages in any
//!    order); so every acknowledged round is kept and no operator is needed. Records inside
//!    client data never count: only round ends carrying the segment's random salt are
//!    believed, and a client cannot know it. Format 2 segments keep format 2's rule (a bad
//!    record followed by any intact record is an error). A newest segment whose header is bad
//!    and holds nothing intact is a cut-short creation: removed, and its sequence number is
//!    used for the new segment (a fresh number would leave a gap that a later recovery would
//!    take for an unfinished deletion, removing every segment before it).
//! 4. The newest segment is fsynced (after a process crash its tail may have been in the page
//!    cache only), a new segment is started (with checkpoints) for this run, and dead segments
//!    are deleted.
//!
//! After a process kill (SIGKILL) this recovers exactly the rounds written. After a power
//! loss the disk may persist the pages of unsynced rounds out of order; recovery keeps every
//! synced (so every acknowledged) round and cuts the rest, as above.
//!
//! # Group commit
//!
//! All writes of all groups (entries, vote, committed, truncate, purge, remove-group) go
//! through one FIFO queue to the writer thread, which is the only writer of the active
//! segment. A round takes every queued request (up to [`writer::BATCH_BYTES_MAX`]), encodes
//! them into one buffer, writes it with one `pwrite`, calls `fdatasync` once, publishes the
//! records' disk positions to readers, and completes every waiter: openraft's
//! `LogFlushed::log_io_completed(Ok(()))` for appends, a oneshot for `save_vote` (which
//! returns only then). While the writer syncs, new requests pile up for the next round, so N
//! concurrent appenders cost far fewer than N fsyncs ([`WalStats::fsyncs`] counts them).
//! Truncate, purge, remove-group and save_committed are not waited for, and do not cost an
//! fsync of their own: a round made only of them is written without one (openraft saves
//! `committed` after every commit, which used to double the fsyncs of sequential writes); the
//! next round with a waiter fdatasyncs the segment and so makes them durable too, or, if no
//! such round comes, a lazy sync at most [`writer::LAZY_SYNC_AFTER`] later
//! ([`WalStats::unsynced_rounds`] counts such rounds). A `committed` record does not even
//! wake the writer: it joins the next round, or the writer's own look at its queue after
//! [`writer::LAZY_SYNC_AFTER`] (one round per sequential write, not two). Records are durable in queue order (one
//! file, one fdatasync covers everything written before it; the old segment is synced before
//! a new one starts), so a crash always recovers a prefix of the operations: a truncate
//! followed by an append is durable before the append is acknowledged, and can never be
//! recovered as the old entries once the new one was. Dead segments are deleted only after a
//! sync that left nothing unsynced, so the purge that killed them is durable. A failed
//! fdatasync (and any write error other than a full disk) aborts the process: a failed fsync
//! cannot be retried safely (the kernel may have dropped the dirty pages), as raft-engine
//! also decides. A write the file system refuses for space (`ENOSPC`, `EDQUOT`) is refused
//! cleanly instead: the file is cut back to its records (durably: no record of the refused
//! round can be replayed later), every waiter of the round gets the error (openraft's append
//! callback an `io::Error` with that errno), and the groups with records in the round fail
//! every later request with [`WalError::WriteRefused`] until the group is reloaded
//! ([`Wal::reload_group`]: its state rebuilt from its records on disk, in the writer thread
//! between two rounds, while the other groups wait for that one replay) or the log is
//! reopened (their in-memory state is ahead of the disk; replay rebuilds it). Every other group, and new
//! ones, keep working, and succeed again once space is back ([`WalStats::refused_rounds`]
//! counts the refusals). A segment that cannot be started for space (at open or rotation)
//! deletes the log's 1 MiB space reserve (`DIR/reserve`, module [`reserve`]) and tries
//! again; a rotation that still finds no space keeps writing the active segment. So a daemon
//! restarts on a disk full to the last byte. A newest segment whose creation was cut short
//! is removed at open and its number reused (a gap in the numbers would make the next open
//! drop every older segment as left over from deletion).
//!
//! Inline rounds: an append of a group whose [`Placer::append_inline`] says yes (the OSD's
//! one-voter PGs while a client op is alone: queue depth 1), finding the writer free and at most
//! [`writer::INLINE_BYTES_MAX`] queued, writes the round itself on its own thread (the same
//! round: every queued request, one `pwrite`, one `fdatasync`, then the callbacks, which so
//! run before `append` returns), where it would wake the writer thread and be woken by it
//! again. A `busy` flag in the state gives the writer to one round at a time, the thread's or
//! an inline one, so requests are still written in queue order ([`WalStats::inline_rounds`]
//! counts them). At queue depth 1 this took ~60 µs off a 4 KiB write (docs/benchmarks.md,
//! "Tenth round").
//!
//! When a small round grows the active segment, [`writer::PREALLOC_BYTES`] of zeros are written
//! after it, so the next rounds overwrite instead of append and their fdatasync does not also
//! write the inode (the file size): on ext4 that halves the I/Os of a group commit. The zeros
//! are cut off (truncate + fsync) before a new segment starts and at shutdown, so only the
//! newest segment can end with zeros, and only after a crash. The format is unchanged.
//!
//! Data an entry names but does not carry (a large write the OSD placed in its store's data
//! file before appending the entry) is made durable by a hook the writer runs before it
//! writes a round holding entries ([`Wal::set_sync_hook`]): an entry's record reaches the
//! disk, synced or not, only after the data it names is durable.
//!
//! Appended entries are readable as soon as `append` returns (served from the queued bytes).
//! Queued bytes are bounded by [`queue::QUEUE_BYTES_MAX`]: `append` waits beyond it.
//!
//! # Memory
//!
//! The in-memory index holds about 64 bytes per live entry, never the entry itself. Entries
//! are read back with `pread` from the segment and re-checked (crc, group, log id); a FIFO
//! cache of recently written entries, bounded by `cache_bytes`, serves the common case of
//! followers reading what was just appended. Replication reads
//! (`limited_get_log_entries`) return at most about [`store::REPLICATION_READ_BYTES_MAX`].
//! Reads are plain blocking `pread`s on the calling (async) thread, as openraft's own
//! RocksDB store does: they mostly hit the page cache.
//!
//! # Invariants asserted (they stay on in release builds)
//!
//! - A group's live entries are contiguous: an append must follow the last entry (with no
//!   live entry any index is accepted, as openraft's suite requires). A caller violating it
//!   gets [`WalError::NonContiguous`] and nothing is kept; on replay it is `Corrupt`.
//! - The writer's ledger sees entries in order and segments in increasing order per group.
//! - A live entry's segment is open for reading (never deleted while referenced).
//! - Replay ends exactly at the end of each segment; the cache stays within `cache_bytes`.
//! - Every record written is framed with the length it declares.
//!
//! # Why not the raft-engine crate
//!
//! TiKV's raft-engine has the design we want (one log for many groups, group commit, per
//! group index, purge that reports laggards) and this crate follows it. But its API stores
//! the `raft` crate's protobuf `Entry` type and its own `Message`/`MessageExt` traits (built
//! around rust-protobuf/prost `eraftpb`); openraft has its own generic `Entry<C>` with a serde
//! payload. Using it would mean converting every entry to protobuf and back, pulling the
//! `raft`/protobuf stack into Quarry, and still adapting its synchronous `write(batch, sync)`
//! to openraft's `LogFlushed` callback. The part we need is small enough to own.
//!
//! # Dependencies
//!
//! - `openraft`: the storage traits implemented here and the `Entry`, `LogId`, `Vote` types.
//! - `tokio` (`sync` only): the oneshot channel for durable votes and the semaphore bounding
//!   the queue; both work under any executor, the writer itself is a plain thread.
//! - `bincode` + `serde`: openraft's log ids, votes and memberships through its serde
//!   support, compact and with fixed-width fields (the log id prefix has a fixed length).
//! - `crc32c`: hardware-accelerated checksums, the same code Quarry uses for payloads.
//! - `quarry-persist`: the directory lock (`flock` through rustix), directory fsync, the
//!   version byte in front of payloads and `FormatTooNew`, and the file-I/O seam
//!   [`quarry_persist::DurableFile`]: every segment read, write, `set_len`, fdatasync,
//!   creation and removal goes through it (plain system calls in production), so the tests'
//!   power-loss simulator (`quarry_persist::powerloss`) can sit under the log. The harness
//!   that cuts the power at 1000 I/O calls of the WAL and the store is
//!   `crates/quarry-store/tests/powerloss.rs`.
//! - `thiserror`, `tracing`: the error enum and logs.
//! - `bytes`: entries are shared, never copied, between the queue, the writer, the cache and
//!   readers; `quarry-types` (a leaf crate) for `zerocopy::decode_from`, so the payloads of an
//!   entry read back for apply are slices of it.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod error;
pub mod format;
mod index;
mod ledger;
pub mod queue;
mod replay;
pub mod reserve;
pub mod store;
pub mod wal;
pub mod writer;

pub use error::{Corruption, WalError};
pub use ledger::Laggard;
pub use quarry_persist::{DecodeError, FormatTooNew};
pub use store::{EntryCodec, Placer, WalLogStore};
pub use wal::{SyncHook, Wal};

/// Options of [`Wal::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment is started when the active one reaches this size (at least 4096).
    pub segment_bytes: u64,
    /// Bytes of recently written entries kept in memory for reads.
    pub cache_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_bytes: 64 << 20, cache_bytes: 64 << 20 }
    }
}

/// Counters and sizes of a [`Wal`] (counters start at zero at each open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records written (entries, metadata and checkpoints).
    pub records: u64,
    /// Bytes written by group commits (checkpoints of new segments excluded).
    pub bytes: u64,
    /// fdatasync calls made by group commits (and lazy syncs of records nobody waited for).
    pub fsyncs: u64,
    /// Rounds written without an fsync because nobody waited for them (committed, truncate,
    /// purge, remove-group records); a later round's fsync made them durable.
    pub unsynced_rounds: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Entries written.
    pub entries: u64,
    /// Segment files deleted since open.
    pub segments_deleted: u64,
    /// Sequence number of the active segment.
    pub active_segment: u64,
    /// Bytes cut off as a torn tail when this log was opened.
    pub torn_bytes: u64,
    /// Rounds whose write the file system refused (`ENOSPC`, `EDQUOT`) since open: their
    /// requests failed and their groups stopped (see [`WalError::WriteRefused`]).
    pub refused_rounds: u64,
    /// Rounds written with direct I/O (see the writer's module docs): all of them where the
    /// file system has direct I/O, none on tmpfs.
    pub direct_writes: u64,
    /// Rounds written inline by the appender instead of the writer thread (a lone write
    /// finding the writer idle: see `writer.rs`, "Inline rounds").
    pub inline_rounds: u64,
    /// Groups with state.
    pub groups: u64,
    /// Bytes in the entry cache.
    pub cache_bytes: u64,
    /// Requests waiting for the writer.
    pub queued_requests: u64,
    /// Appends made durable since open, and the nanoseconds they took in all from being
    /// queued to their completion (the wait for a round, the write and the fdatasync).
    pub commits: u64,
    /// See [`WalStats::commits`].
    pub commit_ns: u64,
    /// Rounds run since open (inline or by the writer thread, writes or not), and the
    /// nanoseconds they took from taking their requests to completing them.
    pub rounds: u64,
    /// See [`WalStats::rounds`].
    pub round_ns: u64,
}
