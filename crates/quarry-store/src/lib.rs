//! The local object engine of an OSD: objects of the PGs it hosts, stored as 4 KiB chunks
//! with a crc32c each, with RADOS self-managed snapshot semantics, xattrs and omap: the
//! metadata in one redb database file (`DIR/store.redb`), the object data in 4 KiB blocks of
//! a data file next to it (`DIR/store.data`). Synchronous, no network, no async runtime.
//!
//! # What it owns
//! - Applying the commands of a PG's Raft log ([`Store::apply`], or several PGs at once with
//!   [`Store::apply_many`]) in one redb write transaction that the applies share until it is
//!   committed with `Durability::None` (every few applies or milliseconds, or when a read
//!   needs it: `writer.rs`, "Lazy commits"), carrying each PG's opaque `pg_state` (its last
//!   applied log id) in the same transaction as its commands. Each [`ObjectCommand`] is
//!   atomic.
//! - Durability points ([`Store::checkpoint`]): an `fdatasync` of the data file, then one
//!   `Durability::Immediate` commit makes every earlier commit durable. After a crash the
//!   database is exactly at the last checkpoint (redb's commit slots guarantee it), every
//!   block its rows point at holds their data (synced before), and `pg_state` says from which
//!   log index each PG must replay. Apply is deterministic (mtime comes from the command), so replay reaches the
//!   same state.
//! - Reads ([`Store::read`]) at the head or at a snapshot, every chunk checked against its crc;
//!   a mismatch is [`StoreError::Corrupt`] (logged with `tracing::error!`), never wrong data.
//!   The same holds for every metadata value (xattrs, omap, omap header, `pg_state`,
//!   `pg_usage`, the duplicate table): each is *sealed* with a crc32c checked on every read,
//!   in read ops, in guards inside apply, in usage updates and on export. Stored data never
//!   reaches an `assert!`: counters a command would drive below zero are `Corrupt` too.
//! - PG-level maintenance: listing, usage counters, removal, export/import (Raft snapshots).
//!
//! It never depends on the network, the Raft library or the OSD: only `quarry-types`.
//!
//! # On-disk format (format version 5)
//! A redb file of metadata and a data file of 4 KiB blocks (`store.data`, the redb file's
//! name with the extension `data`). In redb, integers in keys are big-endian (so byte order
//! is numeric order), integers in values little-endian. A **sealed** value is
//! `crc32c(payload) u32 ++ payload`: the crc covers the payload only (the export stream
//! carries the payload, under its own crc).
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"format"` | `"QRYSTORE"` ++ u32 version (6). A store with a newer version is refused with [`StoreError::FormatTooNew`]; a redb file without the marker with [`StoreError::NotAStore`]; formats 1 to 5 are migrated (below). |
//! | `meta` | `"next_object_id"` | u64: next internal object id (ids are never reused) |
//! | `objects` | pool u64 ++ seed u32 ++ name bytes | object record (below) |
//! | `extents` | object id u64 ++ version tag u64 ++ first chunk index u64 (24 bytes) | an extent row: chunks `first..first + count` of that version. A data run, `1 u8 ++ count u16 (1..=1024) ++ last chunk's length u16 (1..=4096) ++ first block u64 ++ crc32c u32 per chunk` (13 + 4 count bytes): chunk `first + k` is the first `length` bytes (4096 but for the last chunk) of block `block + k` of the data file; or a hole run, `0 u8 ++ count u16` (3 bytes). Rows of one object and tag never overlap. |
//! | `xattrs` | object id u64 ++ name bytes | sealed value |
//! | `omap` | object id u64 ++ key bytes | sealed value |
//! | `omap_header` | object id u64 | sealed header bytes |
//! | `pg_state` | pool u64 ++ seed u32 | the OSD's opaque blob, sealed |
//! | `pg_usage` | pool u64 ++ seed u32 | crc32c u32 ++ objects u64 ++ bytes u64 (head objects, sum of head sizes; 20 bytes, the crc over the 16 after it) |
//! | `dup_log` | pool u64 ++ seed u32 ++ first seq u64 | sealed (version u8 (=1) ++ floor u64 LE ++ count u32 LE ++ count entries, each reqid length u16 LE ++ reqid (entity name length u16 BE ++ entity name, e.g. `client.admin` ++ client u64 BE ++ tid u64 BE) ++ value length u32 LE ++ value (version u8 (=1) ++ seq u64 LE ++ bincode(`OpReply`))): the duplicate table (below, and `dups.rs`), entries `first..first + count`. Format 6; formats 1 to 5 had `dups`, a row per entry: pool u64 ++ seed u32 ++ reqid → sealed value. |
//! | `snap_objects` | pool u64 ++ seed u32 ++ snap u64 ++ name bytes | () : the object keeps a version snapshot `snap` reads |
//! | `object_snaps` | object id u64 ++ snap u64 | () : the same rows, by object |
//! | `purged_snaps` | pool u64 ++ seed u32 ++ snap u64 | () : the PG finished trimming `snap` |
//!
//! The three snapshot tables were added without a format version change (new tables only):
//! opening an older store creates them empty; versions it kept for snapshots then have no
//! index rows and are never trimmed (space, never data). Their values are `()`: a damaged key
//! cannot be told from another key (redb's own page structure is all that guards them).
//!
//! **Upgrade (quarry_persist's rule).** Format 2 differs from format 1 only in the sealed
//! values above (format 1 stored them plain, and `pg_usage` as 16 bytes). Opening a format-1
//! store **migrates it in place**: one redb write transaction, committed with
//! `Durability::Immediate`, seals every value of those seven tables, re-creates `pg_usage`
//! with its crc, and writes the version-2 marker. A crash before that commit leaves the
//! untouched format-1 store (the next open migrates again); after it the store is format 2.
//! Format 3 differs from format 2 only in the chunk rows: format 2 kept the data in them
//! (crc32c u32 ++ data\[..4060\], the rest in a `chunk_tails` table with the same key).
//! Opening a format-2 store (a format-1 store after its first step) **migrates it** in ONE
//! durable write transaction: the data file is emptied (an earlier attempt's blocks are not
//! trusted), each chunk's data is written to a block of its own and its row replaced, the
//! tail table is deleted, the marker becomes 3, the data file is synced, then the commit. A
//! crash before the commit leaves the untouched format-2 store (the next open migrates
//! again, `tests/datafile.rs` cuts the power at every I/O call of it); after it the store is
//! format 3 (an older build refuses it with `FormatTooNew`). Format 4 differs from format 3
//! only in the chunk rows: format 3 kept one row per chunk in a `chunks` table, keyed
//! `object id ++ chunk index ++ version tag`, valued `crc32c u32 ++ length u16 ++ block u64`
//! (or 4 zero bytes for a hole). Opening a format-3 store (or an older one after its steps)
//! **migrates it** in ONE durable write transaction: each object's chunks of one version at
//! consecutive indices in consecutive blocks (all full but the last), or consecutive holes,
//! become one extent row; a row that does not decode becomes a row marked damaged (first byte
//! 0xff, then the old bytes: its reads stay `Corrupt`); the `chunks` table is deleted and the
//! marker becomes 4. No block moves and the data file is not written, so a crash before the
//! commit leaves the untouched format-3 store (the next open migrates again,
//! `tests/datafile.rs` cuts the power at each of its I/O calls); after it the store is format
//! 4. Format 5 differs from format 4 only in having no `dup_seq` table (`pool u64 ++ seed
//! u32 ++ seq u64 -> sealed reqid part of the dups key`, the duplicate table in insertion
//! order): the store keeps each PG's bounds of the duplicate table in memory instead
//! (`dups.rs`). Opening a format-4 store (or an older one after its steps) deletes the table
//! and makes the marker 5 in one durable write transaction. Format 6 differs from format 5
//! only in the duplicate table: format 5 kept a `dups` row per entry (`pool u64 ++ seed u32
//! ++ reqid -> sealed value`, one B-tree insert per write); format 6 packs a PG's entries
//! into `dup_log` rows, one per PG and commit, and looks them up in memory (`dups.rs`).
//! Opening a format-5 store (or an older one after its steps) packs each PG's entries into
//! rows, deletes `dups` and makes the marker 6 in one durable write transaction (an entry
//! whose value is damaged is dropped, and the PG keeps its newest run of consecutive numbers,
//! logged). Golden bytes:
//! `tests/golden/store_v1.hex` (format 1, frozen), `store_v2.hex`, `store_v3.hex`,
//! `store_v4.hex`, `store_v5.hex`, `store_v6.hex`.
//!
//! **Object record**: crc32c u32 (of the rest) ++ record format u8 (=1) ++ object id u64 ++
//! version count u32 ++ versions, oldest first, each `tag u64, floor u64, exists u8, size u64,
//! mtime_sec u64, mtime_nsec u32`. The last version is the head. A record stays while any
//! version is visible: the head exists, or an older version is kept for a snapshot.
//!
//! **Chunks**: chunk `i` holds object bytes `[4096 i, 4096 (i+1))`. Data shorter than 4096
//! bytes means the rest of the chunk is zeros; a chunk with no data is a *hole* (it hides
//! older versions). A missing chunk within the size reads as zeros. The crc32c (in the
//! extent row, one per chunk) covers the chunk's data; it is checked on every read, on
//! read-modify-write and on export. A write's run of whole chunks is one extent of the data
//! file, written with one positional write, and one row per 1024 chunks of it; only partial
//! chunks are read-modify-written (into a new block, a one-chunk row). Every write goes to a
//! newly allocated block (never over a block a row points at), so a crash can only lose new
//! data, never damage old. A write, zero or truncate over part of a row of the same version
//! *cuts* it: the row is replaced by the rows of its parts outside the range (same blocks,
//! same crcs), and only the blocks of the chunks inside are freed, in the same transaction.
//!
//! **Finding a chunk** (`extent.rs`): the row of version tag `t` covering chunk `i` is the
//! row with the greatest key `<= (id, t, i)`, if it reaches `i` (one backward seek); a
//! version with range `floor..=tag` sees, per chunk, the row of the greatest such `t`; the
//! tags that have rows are found by seeking backwards from `tag` (one seek per tag that has
//! rows, never a scan of chunks or of other objects' rows).
//!
//! **The data file** (`datafile.rs`): blocks are allocated best-fit from free extents, else
//! past the end. The allocator is not stored: it is rebuilt from the extent rows at open
//! (every block no row references is free), so it can never disagree with the metadata
//! after a crash. A block whose row a commit dropped or replaced is reused only after a
//! checkpoint made that commit durable (a crash back to the previous checkpoint finds the
//! old data where its rows point) and after every read that started before that commit
//! (a read or an export holds its snapshot's blocks). Released blocks are hole-punched
//! (`fallocate(PUNCH_HOLE | KEEP_SIZE)`) and a free tail is cut off the file: removed
//! objects give their disk space back within a checkpoint; at open every free extent is
//! punched (what a crash left).
//!
//! Why the crc per 4 KiB chunk and not per extent: a 4 KiB read (the VM's common case) then
//! reads and checks 4 KiB, a partial write merges with one verified block, and a damaged
//! block costs one chunk; it is 4 bytes of the row per chunk. Why extent rows (format 4)
//! and not a row per chunk (format 3): a 4 MiB write was 1024 B-tree inserts of 38-byte rows,
//! ~21% of the server's CPU for that write (docs/benchmarks.md, third round). Why not data in redb rows
//! (format 2): redb copied every 4 KiB into its pages, checksummed them, and wrote them again
//! at checkpoints; a 4 MiB write cost ~14 ms of CPU in the store (`examples/store_bench.rs`).
//!
//! # Version rule (RADOS self-managed snapshots, what RBD image snapshots use)
//! Every mutation carries a `SnapContext{seq, snaps}`. Let `t` be the tag of the object's head
//! version (the seq it was last written at). If some snap in `snaps` is newer than `t`, the
//! head is preserved for it: the command writes at tag `w = seq`, adding a new version
//! (copied from the head) and new extent rows keyed with version `w`. Otherwise it writes in
//! place at `w = t`: same-tag rows are cut and replaced. A new object starts at `w = seq`.
//!
//! A version with tag `T` and floor `F` sees, for each chunk, the row with the greatest
//! version in `F..=T`. A read at snapshot `S` uses the newest version with `tag < S` (writes
//! made while the newest snapshot was `S` carry a tag `>= S`); no such version, or one that
//! does not exist, is ENOENT. `SNAP_HEAD` reads the head. The floor is raised to `w` when the
//! head's content is replaced wholesale (create after removal, write-full, truncate to 0, zero
//! of everything), hiding every older chunk version from the head without copying.
//! Truncating or zeroing whole chunks writes holes where an older version would show through.
//! `Remove` with a snapshot to preserve adds a non-existent head version; recreating later
//! starts a fresh floor. `Rollback{snap}` writes (at `w`, like any write) the data of the
//! version `snap` sees into the head; if `snap` sees no object it removes the head.
//!
//! # Snapshot index and trimming (snapshots owned by the cluster)
//! When a command preserves the head for the snapshots of its context, it records, in the
//! same transaction, one index row per such snapshot (`s > t`): "this object keeps a version
//! `s` reads". The context is first filtered against the PG's purged snapshots, so no row is
//! ever written for a snapshot the PG already trimmed. Clients cannot trim (the old
//! `SnapTrim` op is refused with EOPNOTSUPP): the PG log's `TrimSnap` entries call
//! [`Store::apply_trim`], which takes at most `max_objects` objects from the index rows of
//! the removed snapshot (never a scan of the PG), deletes their rows for it, and keeps of each
//! object the head and the versions the snapshots still indexed for it read, deleting every
//! chunk row none of those sees. The step that finds no row left records the snapshot in
//! `purged_snaps`. An object left with only its head version drops the chunk rows its head
//! shadows or hides as it is written (nothing else would visit it).
//!
//! Stale contexts: a write never goes below the object's newest version (`w >= t`), so a
//! writer with an older context writes the head in place and newer snapshots keep what they
//! see. As in Ceph, a self-managed writer whose context misses a snapshot that no write of
//! the object has seen yet writes "before" that snapshot (the store cannot know it exists);
//! pool snapshots do not have this gap (the OSD applies the pool's context to every write).
//!
//! # Duplicate table (Ceph's PG log "dups")
//! A command with a request id ([`ObjectCommand::reqid`]) whose id is in the PG's duplicate
//! table is not applied: its reply is the one recorded when the id was first applied. Otherwise
//! it is applied and its reply (success or failure) recorded: in memory at once, in the store
//! with the transaction that carries the apply (one row per PG and commit). Every
//! replica applies the same log, so every replica answers a resend the same way, including a
//! resend applied in the same batch as its first copy. The table keeps the newest
//! [`StoreOptions::dups_per_pg`] ids per PG (default 3000, Ceph's
//! `osd_pg_log_dups_tracked`), dropping the oldest in steps (it holds at most a quarter
//! more between two steps, or what a merge or an import brought until the next step). A reply whose encoded outputs exceed
//! [`DUP_REPLY_MAX`] (4 KiB) is recorded with every output replaced by `OpOutput::None`
//! (Ceph keeps only small op return data): a resend gets the outcome, not the data. The table
//! travels with [`Store::export_pg`] / [`Store::import_pg`] and goes with
//! [`Store::remove_pg`]. A damaged row fails every command of its PG that carries a request
//! id ([`is_damaged_dup_table`]) until the PG is rebuilt or [`Store::drop_damaged_dups`]
//! drops its table.
//!
//! **xattrs and omap are head-only**: they are not versioned; `Remove` deletes them. At a
//! snapshot, xattr and omap ops fail with EOPNOTSUPP (RBD reads only data at snapshots).
//!
//! # Server-side methods
//! `ObjectOp::Call` runs a method of the [`ObjectMethods`] registry given in
//! [`StoreOptions::methods`] (none: EOPNOTSUPP) inside the command, on the same object: its
//! plain ops go through the same code as the command's own (limits, crcs, the version rule),
//! everything it writes is undoable, and a store failure it meets aborts the batch as any
//! other would. On the read path ([`Store::read`]) only read-only methods run (a writing one
//! is EROFS) with the local clock.
//!
//! # Op semantics (Ceph's)
//! Ops of one command see the effects of earlier ops of the same command. Errors: read ops on
//! a missing object ENOENT; `Remove` of a missing object ENOENT; `Create{exclusive}` of an
//! existing one EEXIST; failing `CmpXattr`/`OmapCmp` ECANCELED (an absent xattr compares as
//! empty, an absent omap key always fails); a failing `CmpExt` (extent compare, Ceph's
//! CMPEXT: bytes past the end or of a missing object compare as zeros) `MAX_ERRNO + i`, `i`
//! the index of the first differing byte (`ErrorCode::cmpext_mismatch`); `GetXattr`/`RmXattr` of an absent xattr ENODATA;
//! `RmXattr`/`OmapRmKeys`/`OmapClear` on a missing object ENOENT; `Zero` on a missing object
//! is a no-op and never grows the object; `off + len > OBJECT_SIZE_MAX` EFBIG; a payload whose
//! crc does not match EINVAL (nothing is stored); an invalid `SnapContext` or an empty name
//! EINVAL; a name over `OBJECT_NAME_LEN_MAX` ENAMETOOLONG; a mutation through
//! [`Store::read`] EROFS. `OmapGetVals`/`OmapGetKeys` return at most `max(max, 1)` and at
//! most 1024 entries per call. The outputs of one vector (data, xattr and omap bytes) add up
//! to at most `OBJECT_SIZE_MAX` (one reply frame): the op that passes it fails with EMSGSIZE
//! (through apply, the command then changes nothing). `OmapClear` also clears the omap header. Any successful
//! mutating command sets the head's mtime to the command's `mtime`.
//!
//! Atomicity of a command: limits and payload crcs are checked before anything is written;
//! ops whose outcome depends on state (reads, guards, `Remove`, `RmXattr`, ...) check before
//! they write; writes made before a later op that may fail are recorded in an undo log, which
//! restores them if that op fails. A command therefore fails without a trace while the batch
//! goes on. A corrupt chunk met while applying (read-modify-write) aborts the whole batch with
//! [`StoreError::Corrupt`]: the replica cannot apply that entry until the object is repaired.
//!
//! # Why blake3
//! A large read (at least 1 MiB, at a chunk boundary, its chunks all inside the range) is
//! hashed with BLAKE3 while its pieces arrive from the device (`read.rs`): the reply's frame
//! signs that digest instead of hashing the bytes after the read (`quarry-wire`'s codec,
//! frame version 4). The crate is the one the wire layer already uses for its frame
//! signatures.
//!
//! # Why redb
//! redb gives ACID transactions with *non-durable commits* (`Durability::None`: visible to
//! readers, not fsynced) and explicit durable commits that persist everything before them:
//! exactly the apply-fast/checkpoint-rarely model a Raft state machine wants, since the Raft
//! log is the durability point. It is pure Rust (no C toolchain, no unsafe FFI), has
//! checksummed commit slots with crash recovery (checkpoints use quick-repair, so reopening
//! after a crash does not walk the whole file), copy-on-write B-trees with consistent read
//! snapshots for concurrent reads and exports, and it is actively maintained with a stable
//! file format. (redb 5 was tried, 2026-12-04: it aborted the OSD on a full disk, its
//! checkpoint commit failing with ENOSPC before the full ratios refused writes, and the rare
//! recovery panic it was meant to fix was the power-loss simulator's doing; it stays at 2.6
//! until that is understood.) Caveats, measured: a commit costs ~100 µs whatever it carries and
//! writes every page its transaction dirtied, so the OSD hands many commands (and PGs,
//! [`Store::apply_many`]) to one call and the store commits many calls at once (`writer.rs`); pages freed by
//! non-durable commits are reclaimed only at a durable commit, so the OSD must checkpoint
//! regularly, by volume as well as time ([`Store::bytes_since_checkpoint`],
//! [`Store::commits_since_checkpoint`]) (the data file's freed blocks wait for checkpoints
//! too); copying data into its pages made large writes expensive, hence the data file.
//!
//! # The store files and power loss
//! The data file is a `quarry_persist::DurableFile` too (so the power-loss harness covers
//! it): data is written before the commit whose rows point at it, and synced before every
//! durable commit (checkpoint, PG removal and import, compaction, the migration) and before
//! the database is closed (redb makes its non-durable commits durable when it is dropped:
//! the harness found a restart that replayed, closed, and lost its data to a power cut).
//!
//! The database file is read and written through `quarry_persist::DurableFile` (a redb
//! `StorageBackend` of our own, see `backend.rs`), with two rules redb's own file backend does
//! not keep, both found by the power-loss harness (`tests/powerloss.rs`, which cuts the power
//! at 1000 I/O calls of the WAL and the store and checks every acknowledged write):
//! - a new store is created atomically ([`Store::open`] of a missing file): initialised under
//!   `store.redb.partial` (format marker committed durably), renamed, directory fsynced. redb
//!   initialises a file in steps and a cut between them left a non-empty file without redb's
//!   magic number, refused at every later open;
//! - growing the file is durable at once (`set_len` + fsync): a cut could otherwise persist
//!   redb's header page naming a length the file never reached, and redb panics at open.
//!
//! The harness also met, about once in 1000 to 3000 cuts, a store that did not open (redb
//! 2.6 panicked in its recovery; redb 5 said "Primary is corrupted despite 2-phase commit"):
//! the file's last durable commit named pages that did not hold what it wrote. The cause was
//! the simulator, whose cut could keep pages written after it (a header flipped after the
//! cut), fixed in `quarry_persist::powerloss`; redb and this backend were not at fault.
//!
//! Other dependencies: `quarry-persist` (that file-I/O seam, directory fsync, the partial
//! file name), `crc32c` (hardware-accelerated Castagnoli crc, the same as Ceph's),
//! `bytes` (payloads shared with the wire layer), `thiserror`, `tracing` (corruption logs),
//! `bincode` (the replies recorded in the duplicate table: `OpReply` is a serde type of
//! `quarry-types`, and bincode 1 is the encoding the PG log already uses for it).

#![warn(missing_docs)]

mod apply;
mod backend;
mod crc;
mod datafile;
mod dups;
mod error;
mod exchange;
mod extent;
mod format;
mod merge;
mod metacache;
mod methods;
mod read;
mod split;
mod view;
mod writer;

use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use quarry_persist::DurableFile;
use quarry_types::{
    EntityReqId, ErrorCode, ObjectMethods, ObjectOp, OpReply, PgId, PoolId, SnapContext, SnapId,
    OBJECT_NAME_LEN_MAX, SNAP_HEAD,
};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableHandle};

pub use datafile::DataSpace;
pub use dups::{is_damaged_dup_table, DUPS_PER_PG_DEFAULT, DUP_REPLY_MAX};
pub use error::StoreError;
pub use merge::MergeStats;
pub use metacache::MetaCacheStats;
pub use read::ReadSink;
pub use split::SplitStats;

use crate::datafile::DataFile;
use crate::format::{
    damaged_extent_row, decode_chunk_key, decode_chunk_ref, decode_pg_key, decode_usage,
    encode_chunk_ref, format_marker, parse_format_marker, pg_key, pg_key_end, row_has_tail,
    row_is_hole, seal, seal_usage, unseal, unseal_usage, ChunkKey, Extent, ObjectRecord, CHUNKS,
    CHUNK_HEADER, CHUNK_SIZE, CHUNK_TAILS, DUPS_V5, DUP_LOG, DUP_SEQ_V4, EXTENTS, FORMAT_VERSION,
    FORMAT_VERSION_CHUNK_ROWS, FORMAT_VERSION_DUP_ROWS, FORMAT_VERSION_DUP_SEQ,
    FORMAT_VERSION_INLINE, FORMAT_VERSION_MIN, HOLE_ROW, META, META_FORMAT, OBJECTS, OBJECT_SNAPS,
    OMAP, OMAP_HEADER, PG_STATE, PG_USAGE, PG_USAGE_V1, PURGED_SNAPS, SNAP_OBJECTS, XATTRS,
};
use crate::read::{add_output, read_op, Ctx, Failure, ReadTables, Target};

/// File name of the database inside an OSD's data directory.
pub const STORE_FILE: &str = "store.redb";

/// File name of the object data next to it (the database file's name with the extension
/// `data`).
pub const DATA_FILE: &str = "store.data";

/// Bytes of object data per chunk row.
pub const CHUNK_BYTES: usize = format::CHUNK_SIZE;

/// One client request: the payload of one PG log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectCommand {
    /// Object name.
    pub name: String,
    /// Snapshot context of the writer.
    pub snapc: SnapContext,
    /// Ops, applied atomically.
    pub ops: Vec<ObjectOp>,
    /// The proposer's clock (seconds, nanoseconds): apply must be deterministic.
    pub mtime: (u64, u32),
    /// The request id (qualified by the sender's entity): a command whose id is in the PG's
    /// duplicate table is not applied again but answered with the recorded reply. None: no
    /// deduplication (never recorded).
    pub reqid: Option<EntityReqId>,
}

/// Objects and bytes of a pool on this store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Head objects.
    pub objects: u64,
    /// Sum of head sizes in bytes.
    pub bytes: u64,
}

/// One version of an object as [`Store::object_versions`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The snapshot seq of the writes that made this version; snapshots `S > tag` up to the
    /// next version's tag see it.
    pub tag: SnapId,
    /// Whether the object exists in this version.
    pub exists: bool,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (u64, u32),
}

/// The commands of one PG for [`Store::apply_many`].
#[derive(Clone, Copy, Debug)]
pub struct PgApply<'a> {
    /// The PG.
    pub pg: PgId,
    /// Its commands, in log order.
    pub cmds: &'a [ObjectCommand],
    /// Its new `pg_state`, written in the same transaction.
    pub pg_state: &'a [u8],
    /// Write ops of `cmds` whose data was placed in the data file before (see
    /// [`Store::place`]); usually empty.
    pub placed: &'a [PlacedOp<'a>],
    /// Placements of entries this apply passes over without running their command (its
    /// object moved out of the PG in a split): claimed and freed with the batch, as a failed
    /// command's are (pending until a checkpoint makes this commit durable: a crash before
    /// replays the entry, whose placement is then reserved again at open). One that is not
    /// reserved is skipped (nothing reads it). Usually empty.
    pub dropped: &'a [&'a Placed],
}

/// A large write placed in the data file before its log entry is applied ([`Store::place`]):
/// `crcs.len()` whole chunks in consecutive blocks from `block`, reserved until an apply
/// claims them ([`PlacedOp`]) or [`Store::release_placed`] gives them back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The first block of the data file.
    pub block: u64,
    /// crc32c of each 4 KiB chunk, in order.
    pub crcs: Vec<u32>,
}

impl Placed {
    /// Blocks (chunks) of the placement.
    pub fn blocks(&self) -> u64 {
        self.crcs.len() as u64
    }

    /// Bytes of the placement.
    pub fn bytes(&self) -> u64 {
        self.blocks() * CHUNK_BYTES as u64
    }

    /// crc32c of the placed bytes, from the chunk crcs (no pass over the data): what the
    /// client's payload crc of the write must be ([`PlacedOp`]).
    pub fn crc(&self) -> u32 {
        self.crcs.iter().fold(0, |total, &crc| crc::combine_chunk(total, crc))
    }
}

/// Op `op` of command `cmd` (indexes into a [`PgApply`]) writes the data of `placed`: a
/// `Write` at a chunk boundary or a `WriteFull`, whose payload has the placement's length
/// (its bytes are not read: a zero-filled buffer does) and the client's crc, which must be
/// the placement's ([`Placed::crc`]: the chunk crcs the store computed from the bytes it
/// wrote, combined), else the command fails with EINVAL as a bad payload does. Applying it
/// claims the placed blocks: the write's rows take them (no data is copied), or, if the
/// command fails or is a duplicate, they are freed with the batch. A placement written by an
/// earlier run (reserved again at open) is checked against its crcs first: a mismatch is
/// [`StoreError::Corrupt`], as is a placement that is not reserved.
#[derive(Clone, Copy, Debug)]
pub struct PlacedOp<'a> {
    /// Index of the command in [`PgApply::cmds`].
    pub cmd: usize,
    /// Index of the op in the command.
    pub op: usize,
    /// Where its data is.
    pub placed: &'a Placed,
}

/// How [`Store::open_with`] learns the placements still waiting for their entries
/// ([`StoreOptions::placements_at_open`]): given every PG's `pg_state` (what the store has
/// applied), it returns the `(block, blocks)` extents of the placed writes of the entries
/// above each PG's applied index, which the OSD reads from its log.
#[derive(Clone)]
pub struct PlacementsAtOpen(pub Arc<PlacementsFn>);

/// The function inside [`PlacementsAtOpen`]: every PG's `pg_state` to `(block, blocks)`
/// extents.
pub type PlacementsFn = dyn Fn(&BTreeMap<PgId, Vec<u8>>) -> Vec<(u64, u64)> + Send + Sync;

impl std::fmt::Debug for PlacementsAtOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlacementsAtOpen(..)")
    }
}

/// What one [`Store::apply_trim`] step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapTrimStep {
    /// Objects visited (index rows of the snapshot consumed).
    pub visited: u64,
    /// No object is indexed for the snapshot any more: the PG recorded it as purged.
    pub purged: bool,
}

/// Space accounting of the database file (from redb's statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceStats {
    /// Size of the file.
    pub file_bytes: u64,
    /// Pages in use (data, indexes, pages awaiting reuse after the next checkpoint).
    pub allocated_bytes: u64,
    /// Bytes of keys and values stored.
    pub stored_bytes: u64,
    /// Bytes lost to fragmentation inside allocated pages.
    pub fragmented_bytes: u64,
}

/// Tuning of [`Store::open_with`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// redb page cache size in bytes.
    pub cache_bytes: usize,
    /// The object metadata cache's size in bytes (`metacache.rs`; 0: none).
    pub meta_cache_bytes: usize,
    /// Request ids remembered per PG in the duplicate table (the oldest go first, in steps:
    /// up to a quarter more are kept between two, or what a merge or import brought).
    pub dups_per_pg: usize,
    /// The server-side methods [`ObjectOp::Call`] runs (None: every call is EOPNOTSUPP).
    pub methods: Option<Arc<dyn ObjectMethods>>,
    /// The placed writes still waiting for their log entries (see [`Store::place`]): asked
    /// once at open, before the allocator is rebuilt (None: there are none). A placement
    /// left out is free space: punched at open and handed out again.
    pub placements_at_open: Option<PlacementsAtOpen>,
    /// An apply commits the transaction the applies share once it is this old (see
    /// `writer.rs`, "Lazy commits"; reads and other writers commit it sooner).
    pub commit_age: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 256 << 20,
            meta_cache_bytes: 12 << 20,
            dups_per_pg: DUPS_PER_PG_DEFAULT,
            methods: None,
            placements_at_open: None,
            commit_age: writer::COMMIT_AGE,
        }
    }
}

/// The object store of one OSD.
pub struct Store {
    /// Always Some but while dropping (see `Drop for Store`).
    db: Option<Database>,
    path: PathBuf,
    /// The object data and its block allocator.
    data: DataFile,
    /// A second handle on the database file, for [`Store::checkpoint`]'s write-back that
    /// runs without redb's write lock.
    flusher: DurableFile,
    commits_since_checkpoint: AtomicU64,
    bytes_since_checkpoint: AtomicU64,
    /// Bound of the duplicate table per PG.
    dups_per_pg: usize,
    /// The duplicate table's memory (`dups.rs`).
    dup_memory: dups::DupMemory,
    /// The read transaction reads share until the next commit (`view.rs`).
    views: view::ReadViews,
    methods: Option<Arc<dyn ObjectMethods>>,
    snap_trim_visits: AtomicU64,
    /// Whether [`Store::try_read_cached`] is worth trying (`datafile.rs`).
    cached_reads: datafile::CachedReads,
    /// [`StoreOptions::commit_age`].
    commit_age: std::time::Duration,
    /// The open write transaction applies share (see `writer.rs`, "Lazy commits").
    writer: Mutex<writer::Writer>,
    /// Objects the open transaction wrote: a read of one commits it first.
    dirty: Mutex<HashMap<PgId, HashSet<String>>>,
    /// Answered applies were lost (`writer.rs`): every call fails.
    failed: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Closing: redb makes every non-durable commit durable when its database is dropped (it
/// writes its header and flushes), so the data file is synced first; if that fails, the
/// database is not dropped (not closed cleanly), and the next open recovers the last
/// checkpoint, whose data is on the disk. (The power-loss harness found this: a restart that
/// replayed and closed, then a power cut, left rows pointing at data that never reached the
/// disk.)
impl Drop for Store {
    fn drop(&mut self) {
        // Applied work is committed (non-durably) so that the close below keeps it; if that
        // fails the transaction is dropped and the next open replays it from the log.
        if let Err(error) = self.settle() {
            tracing::error!(path = %self.path.display(), %error,
                "store close: committing the open transaction failed");
        }
        // The shared read transaction closes before the database does.
        self.views.invalidate();
        let db = self.db.take();
        if let Err(error) = self.data.sync() {
            tracing::error!(
                path = %self.path.display(),
                %error,
                "store close: the data file's fdatasync failed: the database is left unclosed \
                 (the next open recovers the last checkpoint)"
            );
            std::mem::forget(db);
        }
    }
}

// The OSD shares one store between its threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Store>();
};

fn name_error(name: &str) -> Option<ErrorCode> {
    if name.is_empty() {
        Some(ErrorCode::EINVAL)
    } else if name.len() > OBJECT_NAME_LEN_MAX {
        Some(ErrorCode::ENAMETOOLONG)
    } else {
        None
    }
}

/// Logs and builds the corruption error of a damaged per-PG row (`what`: its table).
pub(crate) fn pg_corrupt(pg: PgId, what: &str, detail: String) -> StoreError {
    tracing::error!(pg = %pg, "store corruption: {what}: {detail}");
    StoreError::Corrupt { pg, object: String::new(), detail: format!("{what}: {detail}") }
}

impl Store {
    /// Opens (creating if needed) the store at `path`: the database file itself, or, if `path`
    /// is an existing directory, `path/store.redb`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, &StoreOptions::default())
    }

    /// [`Store::open`] with options.
    pub fn open_with(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let file = if path.is_dir() { path.join(STORE_FILE) } else { path.to_path_buf() };
        let mut builder = Database::builder();
        builder.set_cache_size(options.cache_bytes);
        if !file.exists() {
            Store::create_file(&file, &builder)?;
        }
        let durable = DurableFile::open(&file)?;
        if !durable.try_lock_exclusive()? {
            return Err(redb::DatabaseError::DatabaseAlreadyOpen.into());
        }
        let flusher = durable.try_clone()?;
        let db = builder.create_with_backend(backend::StoreBackend(durable))?;
        let migrate_from = Store::check_format(&db, &file)?;
        // The data file exists (durably) before any row can point into it.
        let data = DataFile::open(&DataFile::path_for(&file))?;
        if let Some(found) = migrate_from {
            if found == 1 {
                Store::migrate_v1(&db, &file)?;
            }
            if found <= FORMAT_VERSION_INLINE {
                Store::migrate_v2(&db, &file, &data)?;
            }
            if found <= FORMAT_VERSION_CHUNK_ROWS {
                Store::migrate_v3(&db, &file)?;
            }
            if found <= FORMAT_VERSION_DUP_SEQ {
                Store::migrate_v4(&db, &file)?;
            }
            Store::migrate_v5(&db, &file)?;
        }
        let placements = match &options.placements_at_open {
            Some(ask) => (ask.0)(&Store::all_pg_states(&db)?),
            None => Vec::new(),
        };
        Store::rebuild_allocator(&db, &data, &placements)?;
        Ok(Store {
            db: Some(db),
            path: file,
            data,
            flusher,
            commits_since_checkpoint: AtomicU64::new(0),
            bytes_since_checkpoint: AtomicU64::new(0),
            dups_per_pg: options.dups_per_pg.max(1),
            dup_memory: dups::DupMemory::default(),
            views: view::ReadViews::new(options.meta_cache_bytes),
            methods: options.methods.clone(),
            snap_trim_visits: AtomicU64::new(0),
            cached_reads: datafile::CachedReads::default(),
            writer: Mutex::default(),
            commit_age: options.commit_age,
            dirty: Mutex::default(),
            failed: AtomicBool::new(false),
        })
    }

    /// Creates a new, empty store at `file` atomically: redb initialises it (and the format
    /// marker is committed durably) under `FILE.partial`, which is then renamed to `file`,
    /// and the directory is fsynced. redb initialises a file in steps (grow the file, write
    /// the header, fsync, write the magic number, fsync): a power cut between them leaves a
    /// non-empty file without the magic number, which redb refuses at every later open (the
    /// power-loss harness found this). Now a cut leaves at most the partial file, which the
    /// next attempt replaces; and the new name is durable before anything relies on the
    /// store (a checkpoint lets Raft purge its log).
    fn create_file(file: &Path, builder: &redb::Builder) -> Result<(), StoreError> {
        let partial = quarry_persist::file::partial_path(file);
        match quarry_persist::remove_file(&partial) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error.into()),
        }
        {
            let durable = DurableFile::create_new(&partial)?;
            let db = builder.create_with_backend(backend::StoreBackend(durable))?;
            Store::check_format(&db, &partial)?;
        }
        quarry_persist::rename(&partial, file)?;
        let dir = match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        quarry_persist::sync_dir(dir).map_err(|error| StoreError::Io(error.source))
    }

    /// Checks the format marker, or initialises an empty database. Returns the format of a
    /// store that must be migrated (1 to 5: [`Store::migrate_v1`] to [`Store::migrate_v5`],
    /// each format's steps in turn).
    fn check_format(db: &Database, file: &Path) -> Result<Option<u32>, StoreError> {
        let read = db.begin_read()?;
        let marker = match read.open_table(META) {
            Ok(meta) => meta.get(META_FORMAT)?.map(|v| v.value().to_vec()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let has_tables = read.list_tables()?.next().is_some();
        drop(read);
        match marker.as_deref().map(parse_format_marker) {
            Some(Some(found)) if found > FORMAT_VERSION => {
                return Err(StoreError::FormatTooNew {
                    path: file.to_path_buf(),
                    found,
                    supported: FORMAT_VERSION,
                })
            }
            Some(Some(found)) if found < FORMAT_VERSION_MIN => {
                return Err(StoreError::NotAStore { path: file.to_path_buf() })
            }
            Some(Some(found)) if found <= FORMAT_VERSION_DUP_ROWS => {
                Store::ensure_added_tables(db, true)?;
                return Ok(Some(found));
            }
            Some(Some(_)) => return Store::ensure_added_tables(db, false).map(|()| None),
            Some(None) => return Err(StoreError::NotAStore { path: file.to_path_buf() }),
            None if has_tables => return Err(StoreError::NotAStore { path: file.to_path_buf() }),
            None => {}
        }
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_FORMAT, format_marker().as_slice())?;
            txn.open_table(OBJECTS)?;
            txn.open_table(EXTENTS)?;
            txn.open_table(XATTRS)?;
            txn.open_table(OMAP)?;
            txn.open_table(OMAP_HEADER)?;
            txn.open_table(PG_STATE)?;
            txn.open_table(PG_USAGE)?;
            Store::open_added_tables(&txn, false)?;
        }
        txn.commit()?;
        Ok(None)
    }

    /// Rewrites a format-1 store as format 2 in ONE write transaction committed with
    /// `Durability::Immediate`: every xattr, omap, omap header, `pg_state`, `dups` and
    /// `dup_seq` value gets its crc32c in front, `pg_usage` rows are re-created with theirs,
    /// and the format marker becomes 2. A crash before the commit leaves the format-1 store
    /// untouched (the next open migrates again); after it, the store is format 2. Values are
    /// taken into memory one table at a time (metadata only: no chunk is touched).
    fn migrate_v1(db: &Database, file: &Path) -> Result<(), StoreError> {
        /// Seals every value of a table keyed by byte strings (`slice`) or arrays (`array`).
        macro_rules! reseal {
            (slice $txn:expr, $def:expr) => {{
                let mut table = $txn.open_table($def)?;
                let mut rows = Vec::new();
                for item in table.iter()? {
                    let (k, v) = item?;
                    rows.push((k.value().to_vec(), seal(v.value())));
                }
                for (k, v) in &rows {
                    table.insert(k.as_slice(), v.as_slice())?;
                }
                rows.len()
            }};
            (array $txn:expr, $def:expr) => {{
                let mut table = $txn.open_table($def)?;
                let mut rows = Vec::new();
                for item in table.iter()? {
                    let (k, v) = item?;
                    rows.push((*k.value(), seal(v.value())));
                }
                for (k, v) in &rows {
                    table.insert(k, v.as_slice())?;
                }
                rows.len()
            }};
        }
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let mut rows = 0;
        rows += reseal!(slice txn, XATTRS);
        rows += reseal!(slice txn, OMAP);
        rows += reseal!(array txn, OMAP_HEADER);
        rows += reseal!(array txn, PG_STATE);
        rows += reseal!(slice txn, DUPS_V5);
        rows += reseal!(array txn, DUP_SEQ_V4);
        let usage: Vec<([u8; 12], [u8; 16])> = {
            let table = txn.open_table(PG_USAGE_V1)?;
            let mut out = Vec::new();
            for item in table.iter()? {
                let (k, v) = item?;
                out.push((*k.value(), *v.value()));
            }
            out
        };
        txn.delete_table(PG_USAGE_V1)?;
        {
            let mut table = txn.open_table(PG_USAGE)?;
            for (k, v) in &usage {
                let (objects, bytes) = decode_usage(v);
                table.insert(k, &seal_usage(objects, bytes))?;
            }
        }
        rows += usage.len();
        txn.open_table(META)?
            .insert(META_FORMAT, format::format_marker_of(FORMAT_VERSION_INLINE).as_slice())?;
        txn.commit()?;
        tracing::info!(
            path = %file.display(),
            rows,
            "store migrated from format 1 to format 2 (metadata values checksummed)"
        );
        Ok(())
    }

    /// Moves a format-2 store's chunk data (rows and tails in redb) into the data file, in
    /// ONE write transaction: the data file is emptied, every chunk is written to a block of
    /// its own and its row replaced by one pointing there (a hole stays a hole; a chunk whose
    /// crc does not match keeps its stored crc, so the damage is still found on read), the
    /// tail table is deleted and the marker becomes 3; the data file is synced, then the
    /// commit is durable. A crash before the commit leaves the format-2 store untouched (the
    /// next open empties the data file and migrates again); after it the store is format 3.
    fn migrate_v2(db: &Database, file: &Path, data: &DataFile) -> Result<(), StoreError> {
        data.reset()?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let batch = data.begin_batch();
        let mut moved = 0u64;
        {
            let mut chunks = txn.open_table(CHUNKS)?;
            let tails = txn.open_table(CHUNK_TAILS)?;
            let mut after: Option<ChunkKey> = None;
            let mut chunk = Vec::with_capacity(CHUNK_SIZE);
            loop {
                let mut rows: Vec<(ChunkKey, Vec<u8>)> = Vec::new();
                {
                    let range = match &after {
                        Some(key) => {
                            chunks.range::<&ChunkKey>((Bound::Excluded(key), Bound::Unbounded))?
                        }
                        None => chunks.range::<&ChunkKey>(..)?,
                    };
                    for item in range.take(4096) {
                        let (key, value) = item?;
                        rows.push((*key.value(), value.value().to_vec()));
                    }
                }
                let Some(&(last, _)) = rows.last() else { break };
                after = Some(last);
                for (key, value) in rows {
                    if row_is_hole(value.len()) {
                        chunks.insert(&key, HOLE_ROW.as_slice())?;
                        continue;
                    }
                    let mut crc = [0u8; 4];
                    crc.copy_from_slice(&value[..CHUNK_HEADER]);
                    chunk.clear();
                    chunk.extend_from_slice(&value[CHUNK_HEADER..]);
                    if row_has_tail(value.len()) {
                        if let Some(tail) = tails.get(&key)? {
                            chunk.extend_from_slice(tail.value());
                        }
                    }
                    chunk.truncate(CHUNK_SIZE);
                    let block = data.allocate(1);
                    data.write(block, &chunk)?;
                    let row = encode_chunk_ref(u32::from_le_bytes(crc), chunk.len(), block);
                    chunks.insert(&key, row.as_slice())?;
                    moved += 1;
                }
            }
        }
        txn.delete_table(CHUNK_TAILS)?;
        txn.open_table(META)?
            .insert(META_FORMAT, format::format_marker_of(FORMAT_VERSION_CHUNK_ROWS).as_slice())?;
        data.sync()?;
        txn.commit()?;
        batch.committed();
        tracing::info!(
            path = %file.display(),
            chunks = moved,
            "store migrated from format 2 to format {FORMAT_VERSION_CHUNK_ROWS} (object data moved to {})",
            data.path().display()
        );
        Ok(())
    }

    /// Replaces a format-3 store's chunk rows (one per chunk, keyed `(id, index, tag)`) by
    /// extent rows (format 4, keyed `(id, tag, first chunk)`) in ONE write transaction
    /// committed with `Durability::Immediate`: for each object, the chunks of one version at
    /// consecutive indices in consecutive blocks (every one full but the last), or
    /// consecutive holes, become one row of at most [`EXTENT_CHUNKS_MAX`] chunks; a row that
    /// does not decode becomes a row marked damaged (its reads stay `Corrupt`); the `chunks`
    /// table is deleted and the marker becomes 4. No block of the data file moves. A crash
    /// before the commit leaves the untouched format-3 store (the next open migrates again);
    /// after it the store is format 4.
    fn migrate_v3(db: &Database, file: &Path) -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let (mut chunks_in, mut rows_out) = (0u64, 0u64);
        {
            let old = txn.open_table(CHUNKS)?;
            let mut extents = txn.open_table(EXTENTS)?;
            let mut next: Option<u64> = Some(0);
            let mut value = Vec::new();
            while let Some(from) = next {
                let lo = format::chunk_key(from, 0, 0);
                let Some(first) = old.range::<&ChunkKey>(&lo..)?.next() else { break };
                let id = decode_chunk_key(first?.0.value()).0;
                next = id.checked_add(1);
                let hi = format::chunk_key(id, u64::MAX, u64::MAX);
                let mut rows: Vec<(u64, u64, Vec<u8>)> = Vec::new();
                for item in old.range::<&ChunkKey>(&format::chunk_key(id, 0, 0)..=&hi)? {
                    let (key, v) = item?;
                    let (_, index, tag) = decode_chunk_key(key.value());
                    rows.push((tag, index, v.value().to_vec()));
                }
                chunks_in += rows.len() as u64;
                rows.sort_unstable_by_key(|r| (r.0, r.1));
                let mut out: Vec<(format::ExtentKey, Vec<u8>)> = Vec::new();
                let mut pending: Option<Extent> = None;
                let flush =
                    |pending: &mut Option<Extent>, out: &mut Vec<_>, value: &mut Vec<u8>| {
                        if let Some(row) = pending.take() {
                            row.encode(value);
                            out.push((row.key(id), value.clone()));
                        }
                    };
                for (tag, index, v) in rows {
                    let chunk = match decode_chunk_ref(&v) {
                        Ok(chunk) => chunk,
                        Err(_) => {
                            flush(&mut pending, &mut out, &mut value);
                            out.push((format::extent_key(id, tag, index), damaged_extent_row(&v)));
                            continue;
                        }
                    };
                    let extended =
                        pending.as_mut().is_some_and(|row| row.try_append(tag, index, chunk));
                    if !extended {
                        flush(&mut pending, &mut out, &mut value);
                        pending = Some(Extent::single(tag, index, chunk));
                    }
                }
                flush(&mut pending, &mut out, &mut value);
                rows_out += out.len() as u64;
                for (key, v) in &out {
                    extents.insert(key, v.as_slice())?;
                }
            }
        }
        txn.delete_table(CHUNKS)?;
        txn.open_table(META)?
            .insert(META_FORMAT, format::format_marker_of(FORMAT_VERSION_DUP_SEQ).as_slice())?;
        txn.commit()?;
        tracing::info!(
            path = %file.display(),
            chunks = chunks_in,
            rows = rows_out,
            "store migrated from format 3 to format 4 (one row per run of chunks)"
        );
        Ok(())
    }

    /// Deletes a format-4 store's `dup_seq` table (format 5 keeps the duplicate table's
    /// bounds in memory: `dups.rs`; its entries already carry their sequence numbers) and
    /// makes the marker 5, in one write transaction committed with `Durability::Immediate`:
    /// a crash before the commit leaves the format-4 store (the next open migrates again).
    fn migrate_v4(db: &Database, file: &Path) -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let rows = {
            let table = txn.open_table(DUP_SEQ_V4)?;
            table.len()?
        };
        txn.delete_table(DUP_SEQ_V4)?;
        txn.open_table(META)?
            .insert(META_FORMAT, format::format_marker_of(FORMAT_VERSION_DUP_ROWS).as_slice())?;
        txn.commit()?;
        tracing::info!(
            path = %file.display(),
            rows,
            "store migrated from format 4 to format 5 (the dup_seq table deleted)"
        );
        Ok(())
    }

    /// Packs a format-5 store's duplicate table (a `dups` row per entry, keyed `pg ++ reqid`)
    /// into format 6's `dup_log` rows (`dups.rs`) and makes the marker 6, in one write
    /// transaction committed with `Durability::Immediate`: a crash before the commit leaves
    /// the format-5 store (the next open migrates again). Each PG's entries, in their order,
    /// become rows of up to [`dups::ROW_ENTRIES_MAX`], the floor its oldest entry. An entry
    /// that does not decode (a damaged value: its number is unknown) cannot be placed: it is
    /// dropped, and the PG keeps only its newest run of consecutive numbers (a damaged entry
    /// in the middle leaves a gap, which drops the older ones too; one at either end leaves
    /// none, and its number may be given again); the loss is logged (a resend of a dropped
    /// one would be applied again, as after a trim).
    fn migrate_v5(db: &Database, file: &Path) -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let (mut pgs, mut entries, mut dropped) = (0u64, 0u64, 0u64);
        {
            let mut by_pg: std::collections::BTreeMap<[u8; 12], Vec<dups::DupRow>> =
                std::collections::BTreeMap::new();
            let mut damaged: std::collections::BTreeMap<[u8; 12], u64> =
                std::collections::BTreeMap::new();
            let old = txn.open_table(DUPS_V5)?;
            for item in old.iter()? {
                let (key, value) = item?;
                let key = key.value();
                let Some(pg) = key.get(..12).map(|k| <[u8; 12]>::try_from(k).expect("12")) else {
                    dropped += 1;
                    continue;
                };
                let part = &key[12..];
                match dups::decode_stored(value.value()) {
                    Ok((seq, reply)) if dups::valid_reqid_part(part) && seq < dups::SEQ_MAX => {
                        let value = dups::encode_value(seq, &reply);
                        by_pg.entry(pg).or_default().push((seq, part.to_vec(), value));
                    }
                    _ => *damaged.entry(pg).or_default() += 1,
                }
            }
            drop(old);
            let mut log = txn.open_table(DUP_LOG)?;
            for (key, mut rows) in by_pg {
                let pg = decode_pg_key(&key);
                rows.sort_unstable_by_key(|r| r.0);
                // The newest run of consecutive numbers (all of them, unless some were
                // damaged or lost).
                let mut start = rows.len() - 1;
                while start > 0 && rows[start - 1].0.checked_add(1) == Some(rows[start].0) {
                    start -= 1;
                }
                if start > 0 || damaged.contains_key(&key) {
                    tracing::error!(%pg, kept = rows.len() - start,
                        dropped = start as u64 + damaged.get(&key).copied().unwrap_or(0),
                        "format 6 migration: damaged duplicate table entries: the pg keeps only \
                         its entries after the newest damage");
                }
                dropped += start as u64;
                let kept = &rows[start..];
                if let Some(first) = kept.first() {
                    dups::write_entries(&mut log, pg, first.0, kept)?;
                }
                pgs += 1;
                entries += kept.len() as u64;
            }
            dropped += damaged.values().sum::<u64>();
        }
        txn.delete_table(DUPS_V5)?;
        txn.open_table(META)?.insert(META_FORMAT, format_marker().as_slice())?;
        txn.commit()?;
        tracing::info!(
            path = %file.display(),
            pgs,
            entries,
            dropped,
            "store migrated from format 5 to format {FORMAT_VERSION} (the duplicate table packed)"
        );
        Ok(())
    }

    /// Rebuilds the data file's allocator from the extent rows (see `datafile.rs`).
    fn rebuild_allocator(
        db: &Database,
        data: &DataFile,
        placements: &[(u64, u64)],
    ) -> Result<(), StoreError> {
        let txn = db.begin_read()?;
        let extents = txn.open_table(EXTENTS)?;
        let mut used = Vec::new();
        for item in extents.iter()? {
            let (key, value) = item?;
            // A malformed row is reported when read; it holds no block here.
            if let Ok(row) = Extent::decode(key.value(), value.value()) {
                used.extend(row.blocks());
            }
        }
        drop(extents);
        drop(txn);
        let (twice, beyond) = data.rebuild(&used, placements)?;
        if !twice.is_empty() {
            tracing::error!(
                blocks = ?&twice[..twice.len().min(16)],
                count = twice.len(),
                "store corruption: data blocks referenced by more than one chunk row"
            );
        }
        if !beyond.is_empty() {
            tracing::error!(
                blocks = ?&beyond[..beyond.len().min(16)],
                count = beyond.len(),
                "store corruption: chunk rows point past the end of the data file"
            );
        }
        Ok(())
    }

    /// Every PG's `pg_state` (a damaged one is left out: that PG fails when it reads it).
    fn all_pg_states(db: &Database) -> Result<BTreeMap<PgId, Vec<u8>>, StoreError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(PG_STATE)?;
        let mut out = BTreeMap::new();
        for item in table.iter()? {
            let (key, value) = item?;
            let pg = decode_pg_key(key.value());
            let Ok(state) = unseal(value.value()) else { continue };
            out.insert(pg, state.to_vec());
        }
        Ok(out)
    }

    /// Places a large write's data before its log entry is applied (write-once, see
    /// `datafile.rs`): reserves blocks for `data` (whole 4 KiB chunks), writes it there
    /// (direct I/O for large writes) and returns where and its crcs. The data is durable after
    /// [`Store::sync_placed`] (the WAL's sync hook runs it before it writes the round that
    /// holds the entry). The blocks stay reserved, neither free nor referenced by a row, until the
    /// entry is applied ([`PlacedOp`]) or [`Store::release_placed`]; after a restart, until
    /// [`StoreOptions::placements_at_open`] names them again.
    pub fn place(&self, data: &[u8]) -> Result<Placed, StoreError> {
        let block = self.reserve_placement(data.len())?;
        match self.write_placement(block, 0, data) {
            Ok(crcs) => Ok(Placed { block, crcs }),
            Err(error) => {
                self.data.release_reserved(block);
                Err(error)
            }
        }
    }

    /// Reserves the blocks of a placement of `len` bytes to be written piece by piece
    /// ([`Store::write_placement`]) while its payload still arrives, before its op is even
    /// checked: the first block. Until an entry names it, nothing does: give it back with
    /// [`Store::release_placed`] if no entry will (the reserved set is memory only, so a
    /// restart frees it too). Same limits as [`Store::place`].
    pub fn reserve_placement(&self, len: usize) -> Result<u64, StoreError> {
        if len == 0 || len % CHUNK_BYTES != 0 || len as u64 > quarry_types::OBJECT_SIZE_MAX {
            return Err(StoreError::BadPlacement { bytes: len as u64 });
        }
        if self.is_failed() {
            return Err(StoreError::Io(std::io::Error::other(
                "the store failed earlier and must be reopened",
            )));
        }
        Ok(self.data.reserve((len / CHUNK_BYTES) as u64))
    }

    /// Writes `data` (whole chunks) at byte `at` of the placement reserved at `block`
    /// ([`Store::reserve_placement`]) and returns its chunks' crcs. Not durable until the
    /// WAL's sync hook ([`Store::sync_placed`]), as [`Store::place`]'s writes.
    pub fn write_placement(
        &self,
        block: u64,
        at: usize,
        data: &[u8],
    ) -> Result<Vec<u32>, StoreError> {
        let whole = at % CHUNK_BYTES == 0 && data.len() % CHUNK_BYTES == 0 && !data.is_empty();
        let first = block + (at / CHUNK_BYTES) as u64;
        let blocks = (data.len() / CHUNK_BYTES) as u64;
        if !whole || !self.data.is_reserved(first, blocks) {
            return Err(StoreError::BadPlacement { bytes: data.len() as u64 });
        }
        self.data.write_placed(first, data)?;
        Ok(data.chunks(CHUNK_BYTES).map(crc32c::crc32c).collect())
    }

    /// Makes every placed write so far durable (`fdatasync` of the data file, if a write was
    /// placed since the last call began; nothing otherwise): the WAL's sync hook.
    pub fn sync_placed(&self) -> std::io::Result<()> {
        self.data.sync_placed()
    }

    /// Gives back a placement whose entry will never be applied (truncated away, or dropped
    /// by a snapshot install): its blocks are free at once. Call it only once the entry's
    /// removal is durable (a crash that brought the entry back would find other data there).
    /// False if the placement is not reserved (already applied or released).
    pub fn release_placed(&self, placed: &Placed) -> bool {
        self.data.release_reserved(placed.block)
    }

    /// Reads a placement's data into `buf` (its length), each chunk checked against its crc:
    /// for a peer that needs the entry (the log holds only where the data is). The blocks of
    /// an entry applied since may have been freed and reused: then the crcs do not match and
    /// this is [`StoreError::Corrupt`] (never other data).
    pub fn read_placed(&self, placed: &Placed, buf: &mut [u8]) -> Result<(), StoreError> {
        if buf.len() as u64 != placed.bytes() {
            return Err(StoreError::BadPlacement { bytes: buf.len() as u64 });
        }
        self.data.read(placed.block, buf)?;
        for (k, (chunk, &crc)) in buf.chunks(CHUNK_BYTES).zip(&placed.crcs).enumerate() {
            let found = crc32c::crc32c(chunk);
            if found != crc {
                return Err(StoreError::Corrupt {
                    pg: PgId { pool: 0, seed: 0 },
                    object: String::new(),
                    detail: format!(
                        "placed block {}: crc {found:#010x}, the log entry says {crc:#010x} \
                         (freed and reused since its entry was applied?)",
                        placed.block + k as u64
                    ),
                });
            }
        }
        Ok(())
    }

    /// Names of the tables added to format 1 later (the snapshot index; the duplicate table
    /// of the store's format: `dups` until format 5, `dup_log` from format 6).
    const ADDED_TABLES: [&'static str; 3] = ["snap_objects", "object_snaps", "purged_snaps"];

    /// Opens (creating) every table of [`Store::ADDED_TABLES`] in `txn`, and the duplicate
    /// table of format 5 (`old_dups`: a store to migrate) or 6.
    fn open_added_tables(txn: &redb::WriteTransaction, old_dups: bool) -> Result<(), StoreError> {
        if old_dups {
            txn.open_table(DUPS_V5)?;
        } else {
            txn.open_table(DUP_LOG)?;
        }
        txn.open_table(SNAP_OBJECTS)?;
        txn.open_table(OBJECT_SNAPS)?;
        txn.open_table(PURGED_SNAPS)?;
        Ok(())
    }

    /// Creates the tables added to format 1 later in a store made before them, so read
    /// transactions can always open them (an older store's snapshot versions then have no
    /// index rows: never trimmed, space but never data).
    fn ensure_added_tables(db: &Database, old_dups: bool) -> Result<(), StoreError> {
        let read = db.begin_read()?;
        let names: Vec<String> = read.list_tables()?.map(|t| t.name().to_string()).collect();
        drop(read);
        let dups = if old_dups { "dups" } else { "dup_log" };
        if Store::ADDED_TABLES.iter().chain([&dups]).all(|a| names.iter().any(|n| n == a)) {
            return Ok(());
        }
        let txn = db.begin_write()?;
        Store::open_added_tables(&txn, old_dups)?;
        txn.commit()?;
        Ok(())
    }

    fn db(&self) -> &Database {
        self.db.as_ref().expect("the database is open until the store is dropped")
    }

    fn db_mut(&mut self) -> &mut Database {
        self.db.as_mut().expect("the database is open until the store is dropped")
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies commands of one PG in order, together with `pg_state`, in the write
    /// transaction applies share (committed with `Durability::None` soon after: `writer.rs`).
    /// Each command is atomic on its own: a failing op leaves no effect of that command (the
    /// others still apply). Returns one reply per command. An `Err` (I/O, database, a corrupt
    /// chunk met while applying) leaves nothing of the call's commands.
    pub fn apply(
        &self,
        pg: PgId,
        cmds: &[ObjectCommand],
        pg_state: &[u8],
    ) -> Result<Vec<OpReply>, StoreError> {
        let mut replies =
            self.apply_many(&[PgApply { pg, cmds, pg_state, placed: &[], dropped: &[] }])?;
        Ok(replies.pop().expect("one reply list per PG"))
    }

    /// Applies one step of trimming removed snapshot `snap` from `pg` (the PG log's
    /// `TrimSnap` entry), in its own transaction committed with `Durability::None`, together
    /// with `pg_state`: visits at most `max_objects` of the objects the snapshot index lists
    /// for `snap` (never a scan of the PG), drops each one's index row for `snap` and every
    /// version that neither the head nor a snapshot still indexed for the object sees (with
    /// the chunk rows only those versions used). Once no object is indexed for `snap`, the
    /// PG records it as purged ([`Store::purged_snaps`]): from then on a write's snap context
    /// never records a version for it. Deterministic, like every apply.
    pub fn apply_trim(
        &self,
        pg: PgId,
        snap: SnapId,
        max_objects: u32,
        pg_state: &[u8],
    ) -> Result<SnapTrimStep, StoreError> {
        let (_writer, mut txn) = self.begin_write()?;
        txn.set_durability(Durability::None);
        let blocks = self.data.begin_batch();
        let mut rows = apply::PgRows::default();
        let step = {
            let mut batch = apply::Batch::open(
                &txn,
                &self.data,
                &self.dup_memory,
                self.methods.as_deref(),
                self.dups_per_pg,
                &mut rows,
            )?;
            batch.begin_pg(pg);
            let (visited, purged) = batch.trim_snap(snap, max_objects)?;
            batch.end_pg(pg_state)?;
            batch.finish()?;
            SnapTrimStep { visited, purged }
        };
        rows.write(&txn)?;
        self.views.commit(txn)?;
        blocks.committed();
        self.commits_since_checkpoint.fetch_add(1, Ordering::Relaxed);
        self.snap_trim_visits.fetch_add(step.visited, Ordering::Relaxed);
        Ok(step)
    }

    /// Objects visited by snapshot trimming since the store was opened (all PGs): what
    /// [`Store::apply_trim`] costs, for tests and metrics.
    pub fn snap_trim_visits(&self) -> u64 {
        self.snap_trim_visits.load(Ordering::Relaxed)
    }

    /// Snapshots `pg` has finished trimming, ascending.
    pub fn purged_snaps(&self, pg: PgId) -> Result<Vec<SnapId>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PURGED_SNAPS)?;
        let lo = format::purged_key(pg, 0);
        let hi = format::purged_key(pg, u64::MAX);
        let mut out = Vec::new();
        for item in table.range::<&[u8; 20]>(&lo..=&hi)? {
            let (key, _) = item?;
            let mut b = [0u8; 8];
            b.copy_from_slice(&key.value()[12..]);
            out.push(u64::from_be_bytes(b));
        }
        Ok(out)
    }

    /// The snapshots the index says keep a version of object `name` (ascending; empty if
    /// none or no such object).
    pub fn indexed_snaps(&self, pg: PgId, name: &str) -> Result<Vec<SnapId>, StoreError> {
        let txn = self.begin_read()?;
        let Some(record) = Store::get_record(&txn, pg, name)? else {
            return Ok(Vec::new());
        };
        let table = txn.open_table(OBJECT_SNAPS)?;
        let lo = format::object_snap_key(record.id, 0);
        let hi = format::object_snap_key(record.id, u64::MAX);
        let mut out = Vec::new();
        for item in table.range::<&[u8; 16]>(&lo..=&hi)? {
            out.push(format::object_snap_of(item?.0.value()));
        }
        Ok(out)
    }

    /// Number of objects the index lists for snapshot `snap` in `pg`.
    pub fn snap_index_len(&self, pg: PgId, snap: SnapId) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(SNAP_OBJECTS)?;
        let mut start = Vec::new();
        format::snap_object_key(pg, snap, b"", &mut start);
        let end = format::snap_objects_end(pg, snap);
        let range = match &end {
            Some(end) => table.range::<&[u8]>(start.as_slice()..end.as_slice())?,
            None => table.range::<&[u8]>(start.as_slice()..)?,
        };
        let mut n = 0;
        for item in range {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// [`Store::read`] if it can run without waiting: `Ok(None)` when the object has
    /// applied work not committed yet (the read would commit it) or when the data it needs is
    /// not all in the page cache (the read would wait for the device). For the OSD's small
    /// reads, answered on its runtime's thread when this succeeds (no hand-off to a blocking
    /// thread and back: docs/benchmarks.md, "Seventh round"). The database's own pages may
    /// still be read from the file on a miss of its cache. After several misses in a row most
    /// calls return `Ok(None)` without trying (`datafile.rs`, `CachedReads`).
    pub fn try_read_cached(
        &self,
        pg: PgId,
        name: &str,
        snap: SnapId,
        ops: &[ObjectOp],
    ) -> Result<Option<OpReply>, StoreError> {
        if !self.cached_reads.should_try() {
            return Ok(None);
        }
        match datafile::cached_only(|| self.read(pg, name, snap, ops)) {
            Err(StoreError::Io(error)) if error.kind() == std::io::ErrorKind::WouldBlock => {
                self.cached_reads.missed();
                Ok(None)
            }
            other => {
                self.cached_reads.hit();
                other.map(Some)
            }
        }
    }

    /// Runs read-only ops on object `name` at the head (`SNAP_HEAD`) or at snapshot `snap`.
    /// Mutations fail with EROFS. A chunk failing its crc is `Err(StoreError::Corrupt)`.
    pub fn read(
        &self,
        pg: PgId,
        name: &str,
        snap: SnapId,
        ops: &[ObjectOp],
    ) -> Result<OpReply, StoreError> {
        self.read_to(pg, name, snap, ops, None)
    }

    /// [`Store::read`], giving a large read op's data to `sink` while it is read instead of
    /// returning it (see [`ReadSink`]: if the sink was ended, that op's output is an empty
    /// payload with the data's crc).
    pub fn read_to(
        &self,
        pg: PgId,
        name: &str,
        snap: SnapId,
        ops: &[ObjectOp],
        sink: Option<&dyn ReadSink>,
    ) -> Result<OpReply, StoreError> {
        if let Some(code) = name_error(name) {
            return Ok(OpReply::Failed { index: 0, code });
        }
        if snap > SNAP_HEAD {
            return Ok(OpReply::Failed { index: 0, code: ErrorCode::EINVAL });
        }
        if let Some(i) = ops.iter().position(ObjectOp::is_mutation) {
            return Ok(OpReply::Failed { index: i as u32, code: ErrorCode::EROFS });
        }
        // Blocks this snapshot uses are not reused while the read runs (registered before
        // the view is taken: `view.rs`).
        let _reader = self.data.register_reader();
        let view = self.read_view(pg, name)?;
        let at_head = snap == SNAP_HEAD;
        let ctx = Ctx { pg, name };
        let cached = if metacache::cacheable(at_head, ops) {
            self.cached_object(&view, &ctx, metacache::span_of(ops))?
        } else {
            None
        };
        let entry = cached.as_ref().filter(|(c, _)| c.rows.is_some());
        let read_record;
        let record = match entry {
            Some((c, _)) => c.record.as_ref(),
            None => {
                read_record = Store::decode_record(&view.objects, pg, name)?;
                read_record.as_ref()
            }
        };
        let head_rows = entry.and_then(|(c, span)| {
            let (r, rows) = (c.record.as_ref()?, c.rows.as_deref()?);
            let (id, floor, tag) = (r.id, r.head().floor, r.head().tag);
            let span = (*span.start(), *span.end());
            Some(read::HeadRows { id, floor, tag, span, rows })
        });
        let tables = ReadTables { view: &view, data: &self.data, head_rows, sink };
        let target = record.and_then(|r| {
            let version = if at_head { Some(r.head()) } else { r.version_at(snap) };
            version.map(|version| Target { id: r.id, version, at_head })
        });
        let mut key_buf = Vec::new();
        let mut outputs = Vec::with_capacity(ops.len());
        let mut output_bytes = 0u64;
        for (i, op) in ops.iter().enumerate() {
            let result = match op {
                ObjectOp::Call { class, method, input, origin } => {
                    let call = methods::Call { class, method, input, origin: origin.as_ref() };
                    methods::read_only(self.methods.as_deref(), &call, |op| {
                        read_op(&tables, &ctx, target, op, &mut key_buf)
                    })
                }
                _ => read_op(&tables, &ctx, target, op, &mut key_buf),
            }
            .and_then(|out| add_output(&mut output_bytes, &out).map(|()| out));
            match result {
                Ok(out) => outputs.push(out),
                Err(Failure::Op(code)) => return Ok(OpReply::Failed { index: i as u32, code }),
                Err(Failure::Store(e)) => return Err(e),
            }
        }
        Ok(OpReply::Ok(outputs))
    }

    /// The metadata cache's entry for the object `ctx` names, with the chunks its rows are
    /// complete for: the kept one (the rows overlapping `span`), or one read from `view`
    /// (and kept; all its rows) when the cache admits the object, or None (`metacache.rs`).
    fn cached_object(
        &self,
        view: &view::ReadView,
        ctx: &Ctx<'_>,
        span: metacache::Span,
    ) -> Result<Option<(metacache::CachedObject, metacache::Span)>, StoreError> {
        let room = match self.views.cached(ctx.pg, ctx.name, &span) {
            metacache::Lookup::Hit(entry) => return Ok(Some((entry, span))),
            metacache::Lookup::Pass => return Ok(None),
            metacache::Lookup::Admit { room } => room,
        };
        let record = Store::decode_record(&view.objects, ctx.pg, ctx.name)?;
        let rows = match record.as_ref().map(|r| (r.id, r.head())) {
            Some((id, head)) if head.exists => {
                let max = metacache::CachedObject::rows_to_read(room);
                match extent::head_rows(&view.chunks, ctx, id, (head.floor, head.tag), max) {
                    Ok(rows) => rows.filter(|rows| metacache::CachedObject::rows_fit(rows, room)),
                    // A damaged row the read may not need (outside its range, or a stat):
                    // no rows kept, the read takes the plain path and meets the damage only
                    // if it reads there.
                    Err(StoreError::Corrupt { .. }) => None,
                    Err(error) => return Err(error),
                }
            }
            _ => Some(Vec::new()),
        };
        let entry = metacache::CachedObject { record, rows };
        self.views.cache(view, ctx.pg, ctx.name, &entry);
        Ok(Some((entry, 0..=u64::MAX)))
    }

    fn get_record(
        txn: &redb::ReadTransaction,
        pg: PgId,
        name: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        Store::decode_record(&txn.open_table(OBJECTS)?, pg, name)
    }

    /// The record of object `name` of `pg` in `objects`, if any.
    fn decode_record(
        objects: &impl ReadableTable<&'static [u8], &'static [u8]>,
        pg: PgId,
        name: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        let mut key = Vec::with_capacity(12 + name.len());
        format::object_key(pg, name.as_bytes(), &mut key);
        let Some(raw) = objects.get(key.as_slice())? else {
            return Ok(None);
        };
        let record = ObjectRecord::decode(raw.value())
            .map_err(|why| Ctx { pg, name }.corrupt(format!("object record: {why}")))?;
        Ok(Some(record))
    }

    /// The version history of an object, oldest first (the last is the head), or None if the
    /// store has no record of it. Versions kept for snapshots appear even when the head does
    /// not exist; the OSD uses this for list-snaps and diffs.
    pub fn object_versions(
        &self,
        pg: PgId,
        name: &str,
    ) -> Result<Option<Vec<ObjectVersion>>, StoreError> {
        let txn = self.begin_read_object(pg, name)?;
        Ok(Store::get_record(&txn, pg, name)?.map(|r| {
            r.versions
                .iter()
                .map(|v| ObjectVersion {
                    tag: v.tag,
                    exists: v.exists,
                    size: v.size,
                    mtime: v.mtime,
                })
                .collect()
        }))
    }

    /// Number of chunk versions (all versions, holes included) stored for an object: what its
    /// snapshots cost beyond the head. 0 if the store has no record of it.
    pub fn chunk_rows(&self, pg: PgId, name: &str) -> Result<u64, StoreError> {
        Ok(self.extent_rows_of(pg, name)?.iter().map(|row| row.count).sum())
    }

    /// Number of extent rows (format 4: one per run of chunks of a version) stored for an
    /// object. 0 if the store has no record of it.
    pub fn extent_rows(&self, pg: PgId, name: &str) -> Result<u64, StoreError> {
        Ok(self.extent_rows_of(pg, name)?.len() as u64)
    }

    fn extent_rows_of(&self, pg: PgId, name: &str) -> Result<Vec<Extent>, StoreError> {
        let txn = self.begin_read_object(pg, name)?;
        let Some(record) = Store::get_record(&txn, pg, name)? else {
            return Ok(Vec::new());
        };
        let extents = txn.open_table(EXTENTS)?;
        extent::all_rows(&extents, &Ctx { pg, name }, record.id)
    }

    /// Makes everything applied so far durable: the data file's `fdatasync`, then a
    /// `Durability::Immediate` commit (fsync); then the blocks freed by the commits it made
    /// durable become reusable (hole-punched first).
    ///
    /// The pages of the non-durable commits since the last checkpoint are already in the file
    /// (in the page cache), and under load that is hundreds of MB: a durable commit that
    /// fsyncs them all holds redb's write lock, and so stalls every apply, for up to a
    /// second (measured: 0.86 s write latency peaks every checkpoint). So they are written
    /// back first with an `fdatasync` of the file on a second handle (and of the data file),
    /// without the write lock (applies go on); with the write lock held, the data file is
    /// synced again (what applies wrote meanwhile: every row the durable commit covers has
    /// its data on the disk first), and the durable commit writes only what changed
    /// meanwhile. Writing those pages early is harmless: non-durable commits never overwrite
    /// a page the last durable commit uses (nor a block: see `datafile.rs`), so a crash still
    /// recovers the last checkpoint.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        // The open transaction's pages go to the file first, so the write-back below covers
        // them (a transaction opened meanwhile is committed under the writer below).
        self.settle()?;
        self.data.sync()?;
        self.flusher.sync_data()?;
        let (writer, mut txn) = self.begin_write()?;
        let durable = self.data.seq();
        self.data.sync()?;
        txn.set_durability(Durability::Immediate);
        txn.set_quick_repair(true);
        self.views.commit_no_objects(txn)?;
        self.reset_checkpoint_counters();
        // Punching the released blocks can take a while: applies go on meanwhile.
        drop(writer);
        self.data.release(durable);
        Ok(())
    }

    /// The object metadata cache's counters and usage (`metacache.rs`).
    pub fn meta_cache_stats(&self) -> MetaCacheStats {
        self.views.cache_stats()
    }

    /// Space figures of the data file (free blocks are hole-punched: no disk space).
    pub fn data_space(&self) -> Result<DataSpace, StoreError> {
        // Blocks the open transaction freed count as pending once it is committed.
        self.settle()?;
        Ok(self.data.space()?)
    }

    /// The data file.
    pub fn data_path(&self) -> &Path {
        self.data.path()
    }

    /// Gives the database file's free pages back to the file system (redb's `compact`: pages
    /// move down, the file is truncated). Needs the store to itself (no transaction may be
    /// open), so the OSD calls it at open only. Returns whether anything moved. Failing part
    /// way leaves the last durable state; the store must then be reopened.
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        // Compaction commits durably: applied work committed, and the data of every commit
        // synced, first.
        self.settle()?;
        self.data.sync()?;
        // Compaction needs every read transaction closed, the shared one included.
        self.views.invalidate();
        Ok(self.db_mut().compact()?)
    }

    /// Space used by the database file. Takes the write lock briefly.
    pub fn space(&self) -> Result<SpaceStats, StoreError> {
        let (_writer, txn) = self.begin_write()?;
        let stats = txn.stats()?;
        let space = SpaceStats {
            file_bytes: std::fs::metadata(&self.path)?.len(),
            allocated_bytes: stats.allocated_pages() * stats.page_size() as u64,
            stored_bytes: stats.stored_bytes(),
            fragmented_bytes: stats.fragmented_bytes(),
        };
        txn.abort()?;
        Ok(space)
    }

    fn reset_checkpoint_counters(&self) {
        self.commits_since_checkpoint.store(0, Ordering::Relaxed);
        self.bytes_since_checkpoint.store(0, Ordering::Relaxed);
    }

    /// Applies (calls of [`Store::apply_many`], of [`Store::apply_trim`], splits and merges)
    /// since the last checkpoint (since open, after a restart): an upper bound of the
    /// non-durable commits since then (applies share commits: `writer.rs`). Pages these
    /// commits replaced are reused only after the next checkpoint, so the OSD should
    /// checkpoint when this or [`Store::bytes_since_checkpoint`] grows large, not only on a
    /// timer.
    pub fn commits_since_checkpoint(&self) -> u64 {
        self.commits_since_checkpoint.load(Ordering::Relaxed)
    }

    /// Payload bytes of Write/WriteFull ops applied since the last checkpoint.
    pub fn bytes_since_checkpoint(&self) -> u64 {
        self.bytes_since_checkpoint.load(Ordering::Relaxed)
    }

    /// The last `pg_state` written for this PG (None if never).
    pub fn pg_state(&self, pg: PgId) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PG_STATE)?;
        match table.get(&pg_key(pg))? {
            Some(v) => {
                Ok(Some(unseal(v.value()).map_err(|d| pg_corrupt(pg, "pg_state", d))?.to_vec()))
            }
            None => Ok(None),
        }
    }

    /// PGs that have a `pg_state` on this store, in order.
    pub fn pgs(&self) -> Result<Vec<PgId>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PG_STATE)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (key, _) = item?;
            out.push(decode_pg_key(key.value()));
        }
        Ok(out)
    }

    /// Head objects of a PG in name order, after `start_after`, at most `max`; the bool says
    /// whether more follow.
    pub fn list(
        &self,
        pg: PgId,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        self.list_objects(pg, start_after, max, false)
    }

    /// Like [`Store::list`], but also objects whose head was removed while snapshots still
    /// see older versions.
    pub fn list_all(
        &self,
        pg: PgId,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        self.list_objects(pg, start_after, max, true)
    }

    fn list_objects(
        &self,
        pg: PgId,
        start_after: Option<&str>,
        max: usize,
        include_removed: bool,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let txn = self.begin_read()?;
        let objects = txn.open_table(OBJECTS)?;
        let mut start = Vec::new();
        format::object_key(pg, start_after.unwrap_or("").as_bytes(), &mut start);
        let lower = if start_after.is_some() {
            Bound::Excluded(start.as_slice())
        } else {
            Bound::Included(start.as_slice())
        };
        let end = pg_key_end(pg);
        let upper = match &end {
            Some(end) => Bound::Excluded(end.as_slice()),
            None => Bound::Unbounded,
        };
        let mut names = Vec::new();
        for item in objects.range::<&[u8]>((lower, upper))? {
            let (key, raw) = item?;
            let name_bytes = &key.value()[12..];
            let name = String::from_utf8_lossy(name_bytes).into_owned();
            if !include_removed {
                let record = ObjectRecord::decode(raw.value()).map_err(|why| {
                    Ctx { pg, name: &name }.corrupt(format!("object record: {why}"))
                })?;
                if !record.head().exists {
                    continue;
                }
            }
            if names.len() == max {
                return Ok((names, true));
            }
            names.push(name);
        }
        Ok((names, false))
    }

    /// Objects and bytes (sum of head sizes) per pool, from counters kept by apply.
    pub fn usage(&self) -> Result<BTreeMap<PoolId, PoolUsage>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PG_USAGE)?;
        let mut out: BTreeMap<PoolId, PoolUsage> = BTreeMap::new();
        for item in table.iter()? {
            let (key, value) = item?;
            let pg = decode_pg_key(key.value());
            let (objects, bytes) =
                unseal_usage(value.value()).map_err(|d| pg_corrupt(pg, "pg_usage", d))?;
            let entry = out.entry(pg.pool).or_default();
            entry.objects += objects;
            entry.bytes += bytes;
        }
        Ok(out)
    }

    /// Drops every object of the PG (pool deleted) and its `pg_state`, durably.
    pub fn remove_pg(&self, pg: PgId) -> Result<(), StoreError> {
        let (writer, mut txn) = self.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let blocks = self.data.begin_batch();
        exchange::purge_pg(&txn, &self.data, &self.dup_memory, pg)?;
        // A durable commit makes every earlier commit durable: their data first.
        self.data.sync()?;
        self.views.commit(txn)?;
        let durable = blocks.committed();
        self.reset_checkpoint_counters();
        drop(writer);
        self.data.release(durable);
        Ok(())
    }

    /// Serialises the whole PG (objects with all versions, xattrs, omap, `pg_state`) from one
    /// consistent read snapshot. Chunks are verified on the way out.
    pub fn export_pg(&self, pg: PgId, out: &mut dyn Write) -> Result<(), StoreError> {
        self.settle()?;
        exchange::export_pg(self.db(), &self.data, pg, out).map(|_| ())
    }

    /// [`Store::export_pg`], returning the `pg_state` blob the stream holds (the state the
    /// exported objects are at; None if the PG has none). For a caller that needs to know
    /// what it exported without parsing the stream, while applies go on.
    pub fn export_pg_with_state(
        &self,
        pg: PgId,
        out: &mut dyn Write,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.settle()?;
        exchange::export_pg(self.db(), &self.data, pg, out)
    }

    /// The recorded reply of `reqid` in `pg`'s duplicate table, if it is there.
    pub fn dup_reply(&self, pg: PgId, reqid: &EntityReqId) -> Result<Option<OpReply>, StoreError> {
        let txn = self.begin_read()?;
        let mut part = Vec::new();
        dups::reqid_part(reqid, &mut part);
        let entries = dups::entries(&txn.open_table(DUP_LOG)?, pg)?;
        match entries.into_iter().find(|e| e.1 == part) {
            Some((_, _, value)) => dups::decode_value(&value)
                .map(|(_, reply)| Some(reply))
                .map_err(|why| dups::corrupt(pg, why)),
            None => Ok(None),
        }
    }

    /// Number of entries in `pg`'s duplicate table.
    pub fn dup_count(&self, pg: PgId) -> Result<usize, StoreError> {
        let txn = self.begin_read()?;
        Ok(dups::entries(&txn.open_table(DUP_LOG)?, pg)?.len())
    }

    /// Number of stored rows of `pg`'s duplicate table (each holds the entries one commit
    /// recorded, or up to 512 written at once: `dups.rs`).
    pub fn dup_rows(&self, pg: PgId) -> Result<usize, StoreError> {
        let txn = self.begin_read()?;
        dups::row_count(&txn.open_table(DUP_LOG)?, pg)
    }

    /// Drops `pg`'s duplicate table when it is damaged (`Corrupt` from an apply, see
    /// [`is_damaged_dup_table`]), durably, and returns whether it was: what a PG with one
    /// voter does to go on (nobody to rebuild it from). Its entries are lost: a resend of an
    /// earlier request is applied again (logged). A healthy table is left alone.
    pub fn drop_damaged_dups(&self, pg: PgId) -> Result<bool, StoreError> {
        let (writer, mut txn) = self.begin_write()?;
        let damaged = match dups::entries(&txn.open_table(DUP_LOG)?, pg) {
            Ok(_) => false,
            Err(error) if is_damaged_dup_table(&error) => true,
            Err(error) => return Err(error),
        };
        if damaged {
            tracing::error!(%pg, "the pg's damaged duplicate table is dropped: a resend of an \
                earlier request will be applied again");
            txn.set_durability(Durability::Immediate);
            dups::purge(&mut txn.open_table(DUP_LOG)?, pg)?;
            self.dup_memory.forget(pg);
            self.data.sync()?;
            self.views.commit(txn)?;
            self.reset_checkpoint_counters();
        }
        drop(writer);
        Ok(damaged)
    }

    /// Replaces the PG with an export stream, durably, all or nothing. The stream is read
    /// exactly to its end record (no read-ahead); pass a buffered reader for speed.
    pub fn import_pg(&self, pg: PgId, input: &mut dyn Read) -> Result<(), StoreError> {
        let writer = self.exclusive()?;
        let durable =
            exchange::import_pg(self.db(), &self.data, &self.views, &self.dup_memory, pg, input)?;
        self.reset_checkpoint_counters();
        drop(writer);
        self.data.release(durable);
        Ok(())
    }

    /// Recomputes every PG's usage from the object records and compares it with the counters
    /// apply maintains. Returns the PGs whose counters differ (empty when consistent).
    pub fn verify_usage(&self) -> Result<Vec<PgId>, StoreError> {
        let txn = self.begin_read()?;
        let objects = txn.open_table(OBJECTS)?;
        let mut computed: BTreeMap<PgId, (u64, u64)> = BTreeMap::new();
        for item in objects.iter()? {
            let (key, raw) = item?;
            let mut pg_raw = [0u8; 12];
            pg_raw.copy_from_slice(&key.value()[..12]);
            let pg = decode_pg_key(&pg_raw);
            let name = String::from_utf8_lossy(&key.value()[12..]).into_owned();
            let record = ObjectRecord::decode(raw.value())
                .map_err(|why| Ctx { pg, name: &name }.corrupt(format!("object record: {why}")))?;
            let head = record.head();
            if head.exists {
                let entry = computed.entry(pg).or_default();
                entry.0 += 1;
                entry.1 += head.size;
            }
        }
        let usage = txn.open_table(PG_USAGE)?;
        let mut stored: BTreeMap<PgId, (u64, u64)> = BTreeMap::new();
        for item in usage.iter()? {
            let (key, value) = item?;
            let pg = decode_pg_key(key.value());
            stored.insert(
                pg,
                unseal_usage(value.value()).map_err(|d| pg_corrupt(pg, "pg_usage", d))?,
            );
        }
        let mut bad: Vec<PgId> = computed
            .iter()
            .filter(|(pg, c)| stored.get(pg) != Some(c))
            .map(|(pg, _)| *pg)
            .collect();
        bad.extend(stored.keys().filter(|pg| !computed.contains_key(pg)));
        bad.sort();
        bad.dedup();
        Ok(bad)
    }
}
