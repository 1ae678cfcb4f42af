//! The data file (`store.data`, next to `store.redb`): object data in 4 KiB blocks, written
//! with positional writes, a run of whole chunks as one extent in one write. The chunk rows
//! in redb say which block holds which chunk (and its crc); redb holds no object data.
//!
//! Owns the block allocator and its three rules:
//! - **Rebuilt, never stored**: at open the free extents are computed from the chunk rows of
//!   the last durable state (every block no row references is free), so the allocator can
//!   never disagree with the metadata after a crash.
//! - **A freed block waits for durability**: a block whose row a commit dropped or replaced
//!   goes to a pending list tagged with that commit's sequence number, and becomes
//!   allocatable only when a checkpoint made that commit durable *and* no reader that
//!   started before the commit is still running ([`DataFile::register_reader`]). Reusing it
//!   earlier would let a crash back to the previous checkpoint (or a long export) find
//!   another object's data under a row that still points there (the crc would catch it, but
//!   the data would be lost).
//! - **Freed space goes back to the file system**: blocks released after a checkpoint are
//!   hole-punched (`fallocate(PUNCH_HOLE | KEEP_SIZE)`, a no-op where unsupported) before
//!   they are reused, and a free tail is cut off the file; at open every free extent is
//!   punched (what a crash left unpunched). Except a bounded few: released extents of at
//!   most [`WARM_EXTENT_MAX`] blocks are kept unpunched ("warm"), up to [`WARM_BLOCKS_MAX`]
//!   blocks in all, and small allocations take warm blocks first. A VM's 4 KiB overwrites
//!   free one block each and allocate one: refilling a punched block cost the apply thread a
//!   fresh zeroed page and ext4 an extent change per write, and the checkpoint a punch per
//!   freed block, all sharing the file's lock (docs/benchmarks.md, "Seventh round"); a warm
//!   block is overwritten in place in the page cache. Large frees (a removed or rewritten
//!   object) are punched as before.
//!
//! Large writes (at least [`DIRECT_WRITE_MIN`]) go through a second handle opened with
//! direct I/O (`O_DIRECT`), from a 4 KiB-aligned copy padded to whole blocks: a buffered
//! 4 MiB write cost ~5 ms of the OSD's CPU in the kernel's page cache here (perf, `rados
//! bench -b 4194304`; fio: ~12 ms per 4 MiB written and synced buffered, ~0.4 ms direct).
//! Small writes stay buffered (a direct 4 KiB write would wait for the device inside the
//! apply batch, once per write); Linux keeps the two coherent (a direct write flushes and
//! drops cached pages of its range). Large reads ([`DIRECT_READ_MIN`], into aligned memory:
//! a whole-object read) are direct too: a buffered 4 MiB read spent ~70% of the server's CPU
//! of a `rados bench seq` in the kernel's copy out of the page cache (perf, issue 14); a
//! direct read first writes back dirty cached pages of its range, so it sees every buffered
//! write. Where the file system has no direct I/O (tmpfs) everything is buffered.
//!
//! **Reserved blocks** ([`DataFile::reserve`]): a large write placed before its Raft log
//! entry is applied (`Store::place`) owns blocks that are neither free nor referenced by a
//! row. They leave the reserved set when the entry is applied (a batch claims them: its rows
//! take them, whatever it does not use is freed with the batch) or when the caller releases
//! them (its entry was truncated away or dropped). The reserved set is not stored either: at
//! open the caller passes the placements of the entries still in its log above each PG's
//! applied index ([`DataFile::rebuild`]), so they are neither punched nor handed out.
//!
//! Data reaches the file before the redb commit that references it; [`DataFile::sync`]
//! (`fdatasync`) runs before every durable redb commit, so a durable row never points at
//! data that is not on the disk.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use quarry_persist::{AlignedBuf, DurableFile, DIRECT_IO_ALIGN};

/// Bytes per block of the data file (one chunk).
pub(crate) const BLOCK: u64 = 4096;

/// Writes of at least this many bytes use direct I/O (see the module docs).
pub(crate) const DIRECT_WRITE_MIN: usize = 64 << 10;

/// Released extents of at most this many blocks are kept unpunched for reuse (see the module
/// docs), and allocations of at most this many blocks take them first.
pub(crate) const WARM_EXTENT_MAX: u64 = 16;
/// At most this many blocks (64 MiB) are kept unpunched: a checkpoint (every second)
/// releases the blocks a second of overwrites freed, and the next second's overwrites take
/// them again. With 4096 (16 MiB), 4 KiB image overwrites at 32 threads (~9k a second)
/// punched half of each release and refilled as many punched blocks: the punches were 31%
/// of the OSD's runtime threads' CPU; with 16384, 15.6k/15.9k writes a second against
/// 8.9k/10.1k, 67–70 µs of server CPU per write against 86–94 (docs/benchmarks.md,
/// "Eleventh round"). Disk space, not memory: the file system's, held by the data file.
pub(crate) const WARM_BLOCKS_MAX: u64 = 16384;

/// Reads of at least this many whole blocks' bytes use direct I/O (see the module docs).
pub(crate) const DIRECT_READ_MIN: usize = 64 << 10;

/// Free extents `(start block, length in blocks)`, by start and by length (best fit).
#[derive(Debug, Default)]
struct Extents {
    by_start: BTreeMap<u64, u64>,
    by_len: BTreeSet<(u64, u64)>,
    blocks: u64,
}

impl Extents {
    fn remove(&mut self, start: u64, len: u64) {
        self.by_start.remove(&start);
        self.by_len.remove(&(len, start));
        self.blocks -= len;
    }

    fn add(&mut self, start: u64, len: u64) {
        self.by_start.insert(start, len);
        self.by_len.insert((len, start));
        self.blocks += len;
    }

    /// Adds a free extent, merging it with its neighbours.
    fn insert(&mut self, mut start: u64, mut len: u64) {
        if len == 0 {
            return;
        }
        if let Some((&s, &l)) = self.by_start.range(..start).next_back() {
            if s + l == start {
                self.remove(s, l);
                start = s;
                len += l;
            }
        }
        if let Some(&l) = self.by_start.get(&(start + len)) {
            self.remove(start + len, l);
            len += l;
        }
        self.add(start, len);
    }

    /// Takes `n` contiguous blocks from the smallest extent that holds them.
    fn take(&mut self, n: u64) -> Option<u64> {
        let &(len, start) = self.by_len.range((n, 0)..).next()?;
        self.remove(start, len);
        if len > n {
            self.add(start + n, len - n);
        }
        Some(start)
    }

    /// The extent with the highest start.
    fn last(&self) -> Option<(u64, u64)> {
        self.by_start.iter().next_back().map(|(&s, &l)| (s, l))
    }
}

impl State {
    /// Joins extents about to be punched into runs: those that touch, and those whose gap
    /// (at most [`JOIN_GAP_MAX`] blocks) is all free blocks, punched or warm, which join the
    /// run (taken out of their sets: the caller punches each run once and frees it). An
    /// object rewritten or removed after small overwrites had cut its extent into fragments
    /// is released as many small extents, each between blocks the overwrites freed earlier;
    /// punched one by one, each fragment cost ext4 the removal of an extent of its own (4 KiB
    /// image overwrites right after a 4 MiB rewrite of the same objects: ~32,500 punches in
    /// one 80 MiB pass, 250-290 µs of the OSD's CPU per write against ~110 before the
    /// rewrite; docs/benchmarks.md, "Nineteenth round"). Only gaps between two such extents
    /// join: free blocks around a run stay where they are (a large hole is not punched
    /// again, a warm extent beside a lone freed block keeps its blocks), and punching a free
    /// block again costs nothing.
    fn join_gaps(&mut self, mut extents: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        extents.sort_unstable();
        let mut runs: Vec<(u64, u64)> = Vec::with_capacity(extents.len());
        for (start, len) in extents {
            if let Some(last) = runs.last_mut() {
                let end = last.0 + last.1;
                if end == start || (end < start && self.take_gap(end, start)) {
                    last.1 = start + len - last.0;
                    continue;
                }
            }
            runs.push((start, len));
        }
        runs
    }

    /// Takes the free and warm extents that cover `from..to` exactly out of their sets, if
    /// they do and the gap is at most [`JOIN_GAP_MAX`] blocks; false (nothing taken) if not.
    fn take_gap(&mut self, from: u64, to: u64) -> bool {
        if to - from > JOIN_GAP_MAX {
            return false;
        }
        let mut cover = Vec::new();
        let mut at = from;
        while at < to {
            let found = if let Some(&l) = self.free.by_start.get(&at) {
                (true, l)
            } else if let Some(&l) = self.warm.by_start.get(&at) {
                (false, l)
            } else {
                return false;
            };
            if at + found.1 > to {
                return false;
            }
            cover.push((at, found));
            at += found.1;
        }
        for (start, (punched, len)) in cover {
            if punched {
                self.free.remove(start, len);
            } else {
                self.warm.remove(start, len);
            }
        }
        true
    }
}

/// Largest gap of free blocks two extents being punched are joined across
/// ([`State::join_gaps`]): what small overwrites leave between an object's fragments.
const JOIN_GAP_MAX: u64 = 256;

/// What the allocator knows, under one lock.
#[derive(Debug, Default)]
struct State {
    /// Free extents, punched.
    free: Extents,
    /// Free extents kept unpunched (see the module docs), at most [`WARM_BLOCKS_MAX`] blocks.
    warm: Extents,
    /// Blocks in the file's used range: allocations past every free extent start here.
    end: u64,
    /// Sequence number of the last commit that freed or allocated blocks (see the module
    /// docs).
    seq: u64,
    /// Extents freed by commit `seq`, oldest first, waiting for a durable checkpoint.
    pending: VecDeque<(u64, Vec<(u64, u64)>)>,
    pending_blocks: u64,
    /// Running readers by the sequence number they started at.
    readers: BTreeMap<u64, usize>,
    /// Set once punching failed with "not supported" (logged once).
    no_punch: bool,
    /// The open batch's allocations and frees.
    batch: BatchBlocks,
    /// Reserved extents by start: `(length, written by an earlier run)` (see the module docs;
    /// an earlier run's data is checked against its crcs before a row takes it).
    reserved: BTreeMap<u64, (u64, bool)>,
    reserved_blocks: u64,
}

/// Blocks the open batch (the one redb write transaction) allocated and freed: committed
/// with it ([`BatchGuard::committed`]) or given back when it is dropped without committing.
#[derive(Debug, Default)]
struct BatchBlocks {
    /// `(start, length, taken from the warm extents)`.
    allocated: Vec<(u64, u64, bool)>,
    freed: Vec<u64>,
    /// Reserved extents the batch claimed `(start, length, from an earlier run)`: reserved
    /// again if it is dropped.
    claimed: Vec<(u64, u64, bool)>,
}

/// The open batch's claim on the allocator: created right after a redb write transaction
/// begins. It holds the batch lock until the batch is committed or dropped: redb releases its
/// write lock when the commit returns, and the next transaction's batch must not begin
/// before this one's frees are filed under its sequence number (they would be filed with the
/// next batch's, which may still abort). Dropped without [`BatchGuard::committed`], the
/// batch's allocations become free again (their data is garbage no row references) and its
/// frees never happened.
pub(crate) struct BatchGuard<'a> {
    data: &'a DataFile,
    done: bool,
    _one_at_a_time: MutexGuard<'a, ()>,
}

impl BatchGuard<'_> {
    /// The transaction committed: its freed blocks wait for a durable checkpoint under a new
    /// sequence number, which is returned.
    pub fn committed(mut self) -> u64 {
        self.done = true;
        self.data.commit_done()
    }
}

impl Drop for BatchGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.data.abort();
        }
    }
}

/// Space figures of the data file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataSpace {
    /// Length of the data file.
    pub file_bytes: u64,
    /// Free blocks (reusable now): punched (no disk space) but for `warm_bytes` of them.
    pub free_bytes: u64,
    /// Free blocks kept unpunched for the next small writes (on the disk; part of
    /// `free_bytes`).
    pub warm_bytes: u64,
    /// Blocks freed by commits not yet made durable by a checkpoint (still on the disk).
    pub pending_bytes: u64,
    /// Blocks reserved for placed writes whose entries are not applied yet.
    pub reserved_bytes: u64,
}

thread_local! {
    /// Set by [`cached_only`] on this thread: reads take only what the page cache holds
    /// (`WouldBlock` otherwise).
    static CACHED_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread runs inside [`cached_only`].
pub(crate) fn is_cached_only() -> bool {
    CACHED_ONLY.get()
}

/// Runs `f` with this thread's data-file reads limited to the page cache
/// ([`quarry_persist::DurableFile::read_exact_at_cached`]): a read that would wait for the
/// device fails with `WouldBlock` instead (and so does a store read that would commit the
/// open transaction: `writer.rs`).
pub(crate) fn cached_only<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            CACHED_ONLY.set(self.0);
        }
    }
    let _reset = Reset(CACHED_ONLY.replace(true));
    f()
}

/// Whether reads limited to the page cache are worth trying: after [`CachedReads::SKIP_AFTER`]
/// misses in a row (data that is not cached: random reads over an image written with direct
/// I/O, say) only every [`CachedReads::PROBE_EVERY`]th read tries, until one of them hits. A
/// miss costs the read's metadata lookups and a syscall before the read is done again on a
/// blocking thread (docs/benchmarks.md, "Twelfth round"); a hit saves the hand-off to that
/// thread. Shared by concurrent readers without a lock: the counts are approximate.
#[derive(Debug, Default)]
pub(crate) struct CachedReads {
    misses_in_a_row: std::sync::atomic::AtomicU32,
    skipped: std::sync::atomic::AtomicU32,
}

impl CachedReads {
    /// Misses in a row after which most reads go straight to the device.
    pub const SKIP_AFTER: u32 = 8;
    /// While skipping, one read in this many still tries the page cache.
    pub const PROBE_EVERY: u32 = 16;

    /// Whether the next read should try the page cache first.
    pub fn should_try(&self) -> bool {
        if self.misses_in_a_row.load(Ordering::Relaxed) < Self::SKIP_AFTER {
            return true;
        }
        self.skipped.fetch_add(1, Ordering::Relaxed) % Self::PROBE_EVERY == 0
    }

    /// A try found what it needed cached (or failed for another reason than waiting).
    pub fn hit(&self) {
        if self.misses_in_a_row.load(Ordering::Relaxed) != 0 {
            self.misses_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// A try would have waited.
    pub fn missed(&self) {
        let misses = self.misses_in_a_row.load(Ordering::Relaxed);
        if misses < Self::SKIP_AFTER {
            self.misses_in_a_row.store(misses + 1, Ordering::Relaxed);
        }
    }
}

/// The open data file and its allocator.
#[derive(Debug)]
pub(crate) struct DataFile {
    file: DurableFile,
    /// The same file opened for direct writes (None: no direct I/O on this file system).
    direct: Option<DurableFile>,
    /// The aligned copy a direct write sends (writes come one batch at a time).
    direct_buf: Mutex<AlignedBuf>,
    path: PathBuf,
    state: Mutex<State>,
    /// Held by the open batch ([`BatchGuard`]).
    batch_lock: Mutex<()>,
    /// Held by [`DataFile::sync`] through its fdatasync: a second caller (the WAL's round
    /// beside a checkpoint) waits for a sync that may cover its writes instead of returning
    /// while it runs.
    sync_lock: Mutex<()>,
    /// A placed write ([`DataFile::write_placed`]) was made since the last
    /// [`DataFile::sync_placed`] began.
    placed_unsynced: AtomicBool,
    /// Data was written since the last [`DataFile::sync`] began (punches and truncations do
    /// not count: their durability does not matter, the blocks are free either way).
    unsynced: AtomicBool,
}

/// A running reader (see [`DataFile::register_reader`]).
pub(crate) struct ReaderGuard<'a> {
    data: &'a DataFile,
    seq: u64,
}

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.data.lock();
        if let Some(count) = state.readers.get_mut(&self.seq) {
            *count -= 1;
            if *count == 0 {
                state.readers.remove(&self.seq);
            }
        }
    }
}

impl DataFile {
    /// The data file of the store file `store` (`store.redb` -> `store.data`).
    pub fn path_for(store: &Path) -> PathBuf {
        store.with_extension("data")
    }

    /// Opens (creating, with its directory entry made durable) the data file. The allocator
    /// is empty until [`DataFile::rebuild`].
    pub fn open(path: &Path) -> std::io::Result<DataFile> {
        let file = match DurableFile::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let file = DurableFile::open_or_create(path)?;
                let dir = match path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent,
                    _ => Path::new("."),
                };
                quarry_persist::sync_dir(dir).map_err(|error| error.source)?;
                file
            }
            Err(error) => return Err(error),
        };
        let direct = match DurableFile::open_direct(path) {
            Ok(direct) => direct,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "no direct I/O for the data file");
                None
            }
        };
        Ok(DataFile {
            file,
            direct,
            direct_buf: Mutex::new(AlignedBuf::new()),
            path: path.to_path_buf(),
            state: Mutex::new(State::default()),
            batch_lock: Mutex::new(()),
            sync_lock: Mutex::new(()),
            placed_unsynced: AtomicBool::new(false),
            unsynced: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements; a panic elsewhere does not poison it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The data file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forgets everything and empties the file (a migration fills it from scratch).
    pub fn reset(&self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        // The emptied length must be durable with what the migration writes next.
        self.unsynced.store(true, Ordering::Release);
        *self.lock() = State::default();
        Ok(())
    }

    /// Rebuilds the allocator from the blocks the durable chunk rows use (`used`, any order),
    /// then punches every free extent and cuts the free tail off the file. Returns the blocks
    /// referenced more than once and those past the file's end: both mean damaged rows (data
    /// is synced before the rows that point at it), whose reads fail their crc or find no
    /// block (a block past the end is not reserved: the memory for it is not spent on a
    /// damaged row's word).
    ///
    /// `reserved` are the extents `(start, length)` of placed writes still waiting for their
    /// entries (see the module docs): used too, and reserved again. An extent that reaches
    /// past the file's end, or overlaps a row's block or an extent reserved before it, is
    /// not reserved (logged; its blocks are reported with the others): a reserved extent is
    /// freed whole when its entry is truncated or passed over, and that must never free a
    /// block a durable row owns. Its entry's apply then finds it not reserved and is refused
    /// as corrupt (`Store::place`'s contract): an entry that lost its data, never a row that
    /// loses its block. Neither happens unless something is broken: data is synced before
    /// the entry naming it is written, and a row takes a placement's blocks only in the
    /// commit that applies its entry.
    pub fn rebuild(
        &self,
        used: &[u64],
        reserved: &[(u64, u64)],
    ) -> std::io::Result<(Vec<u64>, Vec<u64>)> {
        let file_blocks = self.file.len()?.div_ceil(BLOCK);
        let (used, mut beyond): (Vec<u64>, Vec<u64>) = used.iter().partition(|&&b| b < file_blocks);
        let end = file_blocks;
        let mut bitmap = vec![0u64; end.div_ceil(64) as usize];
        let is_set = |bitmap: &[u64], b: u64| bitmap[(b / 64) as usize] & (1 << (b % 64)) != 0;
        let mut twice = Vec::new();
        for &b in &used {
            if is_set(&bitmap, b) {
                twice.push(b);
            }
            bitmap[(b / 64) as usize] |= 1 << (b % 64);
        }
        let mut state = State { end, ..State::default() };
        for &(start, len) in reserved {
            let Some(stop) = start.checked_add(len).filter(|&stop| len > 0 && stop <= end) else {
                tracing::error!(path = %self.path.display(), start, len, end,
                    "a placed write named at open reaches past the data file's end: not reserved");
                beyond.push(start.max(end));
                continue;
            };
            let taken: Vec<u64> = (start..stop).filter(|&b| is_set(&bitmap, b)).collect();
            if !taken.is_empty() {
                tracing::error!(path = %self.path.display(), start, len, blocks = ?&taken[..taken.len().min(16)],
                    "a placed write named at open overlaps blocks in use: not reserved");
                twice.extend(taken);
                continue;
            }
            (start..stop).for_each(|b| bitmap[(b / 64) as usize] |= 1 << (b % 64));
            state.reserved.insert(start, (len, true));
            state.reserved_blocks += len;
        }
        let mut run: Option<u64> = None;
        for b in 0..end {
            let is_free = bitmap[(b / 64) as usize] & (1 << (b % 64)) == 0;
            match (is_free, run) {
                (true, None) => run = Some(b),
                (false, Some(start)) => {
                    state.free.insert(start, b - start);
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run {
            state.free.insert(start, end - start);
        }
        let extents: Vec<(u64, u64)> = state.free.by_start.iter().map(|(&s, &l)| (s, l)).collect();
        for (start, len) in extents {
            self.punch(&mut state, start, len);
        }
        self.cut_tail(&mut state);
        *self.lock() = state;
        Ok((twice, beyond))
    }

    /// Punches `len` blocks at `start`. Never fails: a file system that cannot punch holes is
    /// logged once and not asked again; any other failure (ENOSPC: punching inside an extent
    /// can need a metadata block on a full disk; EIO) is logged, and the blocks stay free and
    /// allocated on the disk until they are reused (space, never data: they are free).
    fn punch(&self, state: &mut State, start: u64, len: u64) {
        if state.no_punch || len == 0 {
            return;
        }
        match self.file.punch_hole(start * BLOCK, len * BLOCK) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(95) => {
                tracing::info!(
                    path = %self.path.display(),
                    "the file system cannot punch holes: freed store space is reused, not given back"
                );
                state.no_punch = true;
            }
            Err(error) => tracing::warn!(
                path = %self.path.display(),
                %error,
                blocks = len,
                "could not punch a hole for freed store blocks: they keep their disk space until reused"
            ),
        }
    }

    /// Cuts free blocks at the end of the file off it, warm ones too (a warm block at the end
    /// may hold a short last chunk: the file's length would not be whole blocks). Never
    /// fails: a failed truncation only leaves free blocks past the end, which later
    /// allocations overwrite (logged).
    fn cut_tail(&self, state: &mut State) {
        let end = state.end;
        loop {
            let reaches_end = |e: Option<(u64, u64)>| e.filter(|&(s, l)| s + l >= state.end);
            if let Some((start, len)) = reaches_end(state.free.last()) {
                state.free.remove(start, len);
                state.end = start;
            } else if let Some((start, len)) = reaches_end(state.warm.last()) {
                state.warm.remove(start, len);
                state.end = start;
            } else {
                break;
            }
        }
        if state.end < end {
            if let Err(error) = self.file.set_len(state.end * BLOCK) {
                tracing::warn!(
                    path = %self.path.display(),
                    %error,
                    "could not cut the free tail off the store's data file"
                );
            }
        }
    }

    /// Starts a batch (call with redb's write transaction open); waits for the previous
    /// batch to be filed.
    pub fn begin_batch(&self) -> BatchGuard<'_> {
        let one_at_a_time = self.batch_lock.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.lock();
        debug_assert!(
            state.batch.allocated.is_empty() && state.batch.freed.is_empty(),
            "a batch began while another was open"
        );
        drop(state);
        BatchGuard { data: self, done: false, _one_at_a_time: one_at_a_time }
    }

    /// Allocates `n` contiguous blocks for the open batch: the smallest free extent that
    /// holds them, else past the end of the file.
    pub fn allocate(&self, n: u64) -> u64 {
        let mut state = self.lock();
        let warm = if n <= WARM_EXTENT_MAX { state.warm.take(n) } else { None };
        let (start, from_warm) = match warm {
            Some(start) => (start, true),
            None => match state.free.take(n) {
                Some(start) => (start, false),
                None => {
                    let start = state.end;
                    state.end += n;
                    (start, false)
                }
            },
        };
        state.batch.allocated.push((start, n, from_warm));
        start
    }

    /// Reserves `n` contiguous blocks for a placed write (see the module docs): the smallest
    /// free extent that holds them, else past the end of the file. Not part of any batch.
    pub fn reserve(&self, n: u64) -> u64 {
        let mut state = self.lock();
        let start = match state.free.take(n) {
            Some(start) => start,
            None => {
                let start = state.end;
                state.end += n;
                start
            }
        };
        state.reserved.insert(start, (n, false));
        state.reserved_blocks += n;
        start
    }

    /// Gives back the reserved extent at `start` (its entry is gone: truncated or dropped,
    /// durably): its blocks are free at once (no row ever pointed at them). False if no
    /// extent is reserved there.
    pub fn release_reserved(&self, start: u64) -> bool {
        let mut state = self.lock();
        let Some((len, _)) = state.reserved.remove(&start) else {
            return false;
        };
        state.reserved_blocks -= len;
        state.free.insert(start, len);
        true
    }

    /// The open batch claims the reserved extent `start..start + n` (its entry is being
    /// applied): its rows take the blocks, and the caller frees ([`DataFile::free`]) those
    /// no row took; a dropped batch reserves it again. Returns whether an earlier run wrote it (its data must be
    /// checked), or None when no such extent is reserved.
    pub fn claim_reserved(&self, start: u64, n: u64) -> Option<bool> {
        let mut state = self.lock();
        match state.reserved.get(&start) {
            Some(&(len, earlier)) if len == n => {
                state.reserved.remove(&start);
                state.reserved_blocks -= n;
                state.batch.claimed.push((start, n, earlier));
                Some(earlier)
            }
            _ => None,
        }
    }

    /// Block `block` lost its row in the open batch.
    pub fn free(&self, block: u64) {
        self.lock().batch.freed.push(block);
    }

    /// Block `block` got its row back in the open batch (a failed command's undo).
    pub fn unfree(&self, block: u64) {
        let mut state = self.lock();
        if let Some(i) = state.batch.freed.iter().rposition(|&b| b == block) {
            state.batch.freed.swap_remove(i);
        }
    }

    /// Writes `data` at block `block` (not durable until [`DataFile::sync`]).
    pub fn write(&self, block: u64, data: &[u8]) -> std::io::Result<()> {
        match &self.direct {
            // Already in whole blocks of aligned memory (a frame's bulk payload, received
            // so: `quarry_wire::BulkSink`): written as it is, without the aligned copy.
            Some(direct)
                if data.len() >= DIRECT_WRITE_MIN
                    && (data.as_ptr() as usize) % DIRECT_IO_ALIGN == 0
                    && data.len() % BLOCK as usize == 0 =>
            {
                direct.write_all_at(data, block * BLOCK)?;
            }
            Some(direct) if data.len() >= DIRECT_WRITE_MIN => {
                let mut buf = self.direct_buf.lock().unwrap_or_else(|p| p.into_inner());
                buf.clear();
                buf.extend_from_slice(data);
                // The rest of the last block is the chunk's zeros (a chunk owns its block).
                buf.pad_to_block();
                let result = direct.write_all_at(buf.as_slice(), block * BLOCK);
                if buf.capacity() > 64 << 20 {
                    buf.release();
                }
                result?;
            }
            _ => self.file.write_all_at(data, block * BLOCK)?,
        }
        // After the write (a sync that saw the flag covers it): a direct write, too, may sit
        // in the device's cache until the sync.
        self.unsynced.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads `buf.len()` bytes at block `block` (`UnexpectedEof` past the file's end). The
    /// whole blocks of a read of at least [`DIRECT_READ_MIN`] into 4 KiB-aligned memory go
    /// through the direct handle (see the module docs); a short last block, and any direct
    /// read the file system refuses, are read buffered.
    pub fn read(&self, block: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if CACHED_ONLY.get() {
            return self.file.read_exact_at_cached(buf, block * BLOCK);
        }
        let whole = buf.len() / BLOCK as usize * BLOCK as usize;
        if let Some(direct) = &self.direct {
            let aligned = buf.as_ptr() as usize % DIRECT_IO_ALIGN == 0;
            if whole >= DIRECT_READ_MIN && aligned {
                let (head, rest) = buf.split_at_mut(whole);
                match direct.read_exact_at(head, block * BLOCK) {
                    Ok(()) => {
                        let after = block + (whole as u64) / BLOCK;
                        return self.file.read_exact_at(rest, after * BLOCK);
                    }
                    Err(error) => tracing::debug!(%error, "direct read refused; read buffered"),
                }
            }
        }
        self.file.read_exact_at(buf, block * BLOCK)
    }

    /// Whether `n` blocks from `block` lie inside one reserved extent.
    pub fn is_reserved(&self, block: u64, n: u64) -> bool {
        let state = self.lock();
        state
            .reserved
            .range(..=block)
            .next_back()
            .is_some_and(|(&start, &(len, _))| block + n <= start + len)
    }

    /// [`DataFile::write`] of a placed write: [`DataFile::sync_placed`] syncs it.
    pub fn write_placed(&self, block: u64, data: &[u8]) -> std::io::Result<()> {
        self.write(block, data)?;
        self.placed_unsynced.store(true, Ordering::Release);
        Ok(())
    }

    /// [`DataFile::sync`] if a placed write was made since the last call began (the WAL's
    /// hook runs it before every round with entries: rounds of small writes must not pay an
    /// fdatasync of the data file for the applies' buffered writes).
    pub fn sync_placed(&self) -> std::io::Result<()> {
        if !self.placed_unsynced.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.sync().inspect_err(|_| self.placed_unsynced.store(true, Ordering::Release))
    }

    /// `fdatasync` of the data file, if data was written since the last one began (a
    /// checkpoint's second sync, or the one at close after a final checkpoint, costs
    /// nothing then: shutdown is not slowed by an fsync of a clean file whose holes were
    /// just punched).
    pub fn sync(&self) -> std::io::Result<()> {
        let _one_at_a_time = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        if !self.unsynced.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.file.sync_data().inspect_err(|_| self.unsynced.store(true, Ordering::Release))
    }

    /// The open batch's transaction committed (what [`BatchGuard::committed`] does; the
    /// store's writer calls it directly for the transaction its applies share, which it
    /// serialises with its own lock): its frees wait for a durable checkpoint under a new
    /// sequence number, which is returned.
    pub(crate) fn commit_done(&self) -> u64 {
        let mut state = self.lock();
        let mut freed = std::mem::take(&mut state.batch.freed);
        state.batch.allocated.clear();
        state.batch.claimed.clear();
        state.seq += 1;
        if freed.is_empty() {
            return state.seq;
        }
        freed.sort_unstable();
        freed.dedup();
        let mut extents: Vec<(u64, u64)> = Vec::new();
        for b in freed {
            match extents.last_mut() {
                Some((s, l)) if *s + *l == b => *l += 1,
                _ => extents.push((b, 1)),
            }
        }
        let blocks: u64 = extents.iter().map(|e| e.1).sum();
        let seq = state.seq;
        state.pending.push_back((seq, extents));
        state.pending_blocks += blocks;
        seq
    }

    /// The open batch's transaction was dropped: its allocations are free again, its claims
    /// reserved again, its frees never happened.
    pub(crate) fn abort(&self) {
        let mut state = self.lock();
        state.batch.freed.clear();
        for (start, len, warm) in std::mem::take(&mut state.batch.allocated) {
            if warm {
                state.warm.insert(start, len);
            } else {
                state.free.insert(start, len);
            }
        }
        for (start, len, earlier) in std::mem::take(&mut state.batch.claimed) {
            state.reserved.insert(start, (len, earlier));
            state.reserved_blocks += len;
        }
    }

    /// The sequence number of the last finished commit (a checkpoint's durable commit covers
    /// every commit up to the value read while it holds the write transaction).
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    /// Registers a reader about to open a read transaction: blocks freed by commits after
    /// this point stay pending until the guard is dropped.
    pub fn register_reader(&self) -> ReaderGuard<'_> {
        let mut state = self.lock();
        let seq = state.seq;
        *state.readers.entry(seq).or_insert(0) += 1;
        ReaderGuard { data: self, seq }
    }

    /// After a durable commit covering every commit up to `durable`: the pending blocks of
    /// those commits that no running reader may still see are punched and become free;
    /// a free tail is cut off the file. Never fails (see [`DataFile::punch`]): the commit is
    /// durable whatever happens to the space.
    pub fn release(&self, durable: u64) {
        let mut released = Vec::new();
        {
            let mut state = self.lock();
            let oldest_reader = state.readers.keys().next().copied().unwrap_or(u64::MAX);
            while let Some((seq, _)) = state.pending.front() {
                if *seq > durable || *seq > oldest_reader {
                    break;
                }
                let (_, extents) = state.pending.pop_front().expect("front exists");
                state.pending_blocks -= extents.iter().map(|e| e.1).sum::<u64>();
                released.extend(extents);
            }
        }
        if released.is_empty() {
            return;
        }
        let (mut budget, no_punch) = {
            let state = self.lock();
            (WARM_BLOCKS_MAX.saturating_sub(state.warm.blocks), state.no_punch)
        };
        // Small extents stay warm while the budget lasts (see the module docs).
        let (warm, released): (Vec<_>, Vec<_>) = released.into_iter().partition(|&(_, len)| {
            let keep = len <= WARM_EXTENT_MAX && len <= budget;
            if keep {
                budget -= len;
            }
            keep
        });
        // The rest is punched in runs ([`State::join_gaps`]).
        let released = self.lock().join_gaps(released);
        // Punch outside the lock: the released blocks are neither pending nor free, so
        // nothing can allocate (and write) them meanwhile. The flag is read into a scratch
        // state and merged back.
        let mut scratch = State { no_punch, ..State::default() };
        for &(start, len) in &released {
            self.punch(&mut scratch, start, len);
        }
        let mut state = self.lock();
        state.no_punch |= scratch.no_punch;
        for (start, len) in released {
            state.free.insert(start, len);
        }
        for (start, len) in warm {
            state.warm.insert(start, len);
        }
        self.cut_tail(&mut state);
    }

    /// Space figures.
    pub fn space(&self) -> std::io::Result<DataSpace> {
        let file_bytes = self.file.len()?;
        let state = self.lock();
        Ok(DataSpace {
            file_bytes,
            free_bytes: (state.free.blocks + state.warm.blocks) * BLOCK,
            warm_bytes: state.warm.blocks * BLOCK,
            pending_bytes: state.pending_blocks * BLOCK,
            reserved_bytes: state.reserved_blocks * BLOCK,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_reads_stop_trying_after_misses_in_a_row_and_probe_until_a_hit() {
        let gauge = CachedReads::default();
        for _ in 0..CachedReads::SKIP_AFTER - 1 {
            assert!(gauge.should_try());
            gauge.missed();
        }
        // A hit before the limit starts the count again.
        gauge.hit();
        for _ in 0..CachedReads::SKIP_AFTER {
            assert!(gauge.should_try());
            gauge.missed();
        }
        let tries = (0..4 * CachedReads::PROBE_EVERY).filter(|_| gauge.should_try()).count();
        assert_eq!(tries, 4, "one probe in PROBE_EVERY while the misses go on");
        // A probe that misses keeps skipping; one that hits ends it.
        while !gauge.should_try() {}
        gauge.missed();
        assert!(!gauge.should_try());
        while !gauge.should_try() {}
        gauge.hit();
        assert!((0..CachedReads::PROBE_EVERY).all(|_| gauge.should_try()));
    }

    #[test]
    fn extents_merge_and_best_fit() {
        let mut e = Extents::default();
        e.insert(10, 2);
        e.insert(14, 1);
        e.insert(12, 2);
        assert_eq!(e.by_start.len(), 1);
        assert_eq!(e.last(), Some((10, 5)));
        e.insert(30, 1);
        assert_eq!(e.take(1), Some(30), "best fit takes the 1-block extent");
        assert_eq!(e.take(3), Some(10));
        assert_eq!(e.last(), Some((13, 2)));
        assert_eq!(e.take(3), None);
        assert_eq!(e.blocks, 2);
    }

    /// Goal: the fragments of a rewritten object, punched together, become one run with the
    /// free blocks between them (punched or warm); free blocks around the run, gaps not all
    /// free and gaps over [`JOIN_GAP_MAX`] blocks stay as they are.
    #[test]
    fn fragments_to_punch_join_across_free_gaps_only() {
        let mut state = State::default();
        // An object's extent 100..200 after overwrites: 110, 120..122 and 150 were freed
        // earlier (warm and punched); the rest is released now in fragments.
        state.warm.insert(110, 1);
        state.free.insert(120, 2);
        state.warm.insert(150, 1);
        // Free blocks touching the run from outside stay where they are.
        state.free.insert(90, 10);
        state.warm.insert(200, 2);
        // 520..530: a gap partly free (525 is in use); 1000..1300: free, over the limit.
        state.free.insert(520, 5);
        state.free.insert(1000, 300);
        let extents = vec![
            (122, 28),
            (100, 10),
            (111, 9),
            (151, 49),
            (510, 10),
            (530, 4),
            (990, 10),
            (1300, 2),
        ];
        let runs = state.join_gaps(extents);
        assert_eq!(runs, vec![(100, 100), (510, 10), (530, 4), (990, 10), (1300, 2)]);
        assert_eq!(state.warm.blocks, 2, "warm 110 and 150 went into the run, 200.. stayed");
        assert_eq!(state.warm.by_start.get(&200), Some(&2));
        assert_eq!(state.free.blocks, 10 + 5 + 300, "free 120..122 went into the run");
        assert_eq!(state.free.by_start.get(&90), Some(&10));
        assert_eq!(state.free.by_start.get(&520), Some(&5));
        assert_eq!(state.free.by_start.get(&1000), Some(&300));
    }
}
