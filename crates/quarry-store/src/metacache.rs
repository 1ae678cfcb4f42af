//! The object metadata cache: what a read of an object's head needs before it reads data (the
//! object's record and the extent rows its head sees), kept in memory for recently read
//! objects, so that a read it serves makes no B-tree descent. Two descents (the record, then
//! the extent rows) were ~30% of the OSD's CPU per 4 KiB read (docs/benchmarks.md, "Sixteenth
//! round").
//!
//! # Coherence
//! An entry holds an object's state as of the last commit that wrote the object. The rules
//! that keep it so (the read views' generation is the one of `view.rs`):
//! - The commit of the applies' transaction (`writer.rs`) removes the entries of the objects
//!   it wrote, after bumping the generation and before those names leave the store's dirty
//!   set. A reader checks the dirty set before it looks here, so a reader of such an object
//!   either waits for the commit (`Store::read` commits first) or began before the write was
//!   applied, when the old state is an answer a concurrent read may give.
//! - Every other commit, and a commit whose outcome is unknown, clears the cache (after the
//!   bump): splits, merges, imports, trims, PG removal write objects without naming them.
//! - A reader adds what it read from a view only while the generation is still the view's,
//!   checked under the lock the removals take: an entry made from a view that misses a
//!   commit never outlives that commit's removals.
//! - An entry is used whole (its record and rows come from one view), and only by commands
//!   that need nothing else (reads and stats at the head, [`Cacheable`]): nothing a read takes
//!   from here is mixed with what it reads from a view. A hit gives the rows of the chunks
//!   the command reads ([`span_of`]); `read.rs` checks that every chunk range it looks up is
//!   inside them (debug builds fail if not; a release build would read that range from its
//!   view, which must then be the entry's).
//! - Data blocks: a reader registers with the data file before it looks (`view.rs`), so the
//!   blocks an entry names and a later commit frees stay pending while it reads.
//!
//! # Admission
//! While its shard has room, an object gets an entry at its first miss (a small entry then
//! evicts nothing; a large one is made only in the room there is: [`ROWS_SMALL`]).
//! Once the shard is full, at its second miss since the shard's filter (the hashes of the
//! keys missed once, as many as the shard holds small entries) was last emptied: a second
//! miss within about the cache's reach says an entry would have been used. Reads spread
//! uniformly over far more objects than the cache holds (`rados bench rand` over 200k
//! objects) would otherwise pay for an entry at nearly every read and use few (measured:
//! ~2.5 µs of the OSD's CPU more per read with a 12 MiB cache); a VM's image (a few thousand
//! objects read again and again) gets its entries at once.
//!
//! # Memory
//! An entry is kept as bytes: the object's name, its record as stored and its rows as stored
//! behind a fixed-size index (one allocation: the name and ~100 bytes for a 4 KiB object),
//! decoded again at each hit: the record, and only the rows the read's chunks overlap, found
//! by binary search in the index (a few hundred nanoseconds against the microseconds of the
//! B-tree descents; an image object written 4 KiB at a time has hundreds). Kept decoded,
//! an entry of a 4 KiB object took ~600 bytes of resident memory, ~230 as bytes in an `lru`
//! map, ~180 now in a clock (with a 35-byte name; see below): `rados bench` reads 4 KiB
//! objects spread over more of them than the cache holds (docs/benchmarks.md, "Twenty-first
//! round", "Twenty-sixth round").
//! A shard weighs its entries' bytes (plus the allocator's rounding) and its list and table
//! (their capacities), and evicts (below) once it passes its share of the budget
//! (`StoreOptions::meta_cache_bytes`, sized by the OSD from its memory target). The rows of
//! an object whose head sees more than [`ROWS_MAX`] rows (or [`DATA_CHUNKS_MAX`] data chunks),
//! or whose large entry did not fit the room its shard had when it was missed, are not kept:
//! its entry is a hint (the record, no rows: its reads take the plain path at once). A hint
//! stays while it is read (it is an entry like any other), so such an object gets its rows
//! only once its hint is evicted or its object written: the price of never churning.
//!
//! # Eviction: a clock, and why hashbrown
//! Each shard keeps its entries in a list swept by a clock's hand (second chance, as the
//! Linux page cache's and many databases' buffer pools approximate LRU): a hit marks its
//! entry, the hand spares a marked entry once (clearing the mark) and evicts the first
//! unmarked one; a new entry takes the place the last eviction freed, just behind the hand.
//! The shard finds entries through a `hashbrown::HashTable` of their places (a `u32` and a
//! control byte each) keyed by the entries' own hashes. Until the twenty-sixth round the
//! shards were `lru` crate maps (a hash map with an intrusive list): a list node and a map
//! bucket per entry cost ~100 bytes beside its ~130 of key and entry; now the place in the
//! list and the table cost ~30, so the same budget holds about a quarter more objects
//! (docs/benchmarks.md, "Twenty-sixth round"). `hashbrown` is the hash table behind std's
//! `HashMap`; its `HashTable` (no keys of its own, no hasher) is the part std does not
//! expose. One clock per shard, behind a mutex, since every hit marks its entry.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use quarry_types::{ObjectOp, PgId};

use crate::format::{extent_key, Extent, ExtentBody, ObjectRecord, CHUNK, EXTENT_DATA_HEAD};

/// Most extent rows an entry keeps; an object whose head sees more gets a hint. A 4 MiB
/// object written 4 KiB at a time (a VM image's) has up to 1024 at one tag; a hit decodes only
/// the rows its read overlaps (found by binary search), so many rows cost memory, not time.
pub(crate) const ROWS_MAX: usize = 2048;
/// Most chunks those rows may cover with data (their crcs are kept: 4 bytes each): a 4 MiB
/// object written in one piece, then rewritten after a snapshot, fits.
pub(crate) const DATA_CHUNKS_MAX: usize = 2048;
/// A small entry's most rows and data chunks (a 4 MiB object written in one piece has one
/// row of 1024): kept whatever it evicts. A larger one is kept only in room the shard has
/// free when its object is missed, else its entry is a hint (no rows): making one reads every
/// row (~150 µs for 1024), so one that evicts others to be evicted in turn would cost more
/// than it saves (measured: a 1 GiB image of such objects read at random through a cache
/// of 6 MiB fell from 48k to 12k reads a second, 14 to 78 µs of the OSD's CPU per read).
const ROWS_SMALL: usize = 32;
const DATA_CHUNKS_SMALL: usize = 1024;
const SHARDS: usize = 16;
/// The weight of a small object's entry (a 4 KiB one with a 40-byte name: ~210 bytes), for
/// sizing the admission filter to what a shard holds.
const SMALL_ENTRY: usize = 256;
/// What an entry's bytes cost beyond their length: the allocator's rounding (mimalloc's size
/// classes are a quarter of a power of two apart: up to 31 bytes for a 4 KiB object's
/// entry of ~150-200 bytes, ~16 on average). Its place in the
/// shard's list and table is weighed with the shard ([`Shard::structure_bytes`]).
const ENTRY_OVERHEAD: usize = 16;
/// The slot's header in its bytes: `referenced u8 ++ pool u64 LE ++ seed u32 LE ++ name
/// length u16 LE`, then the name, then the entry.
const SLOT_HEAD: usize = 1 + 8 + 4 + 2;
/// `flags` bits of an entry's bytes.
const HAS_RECORD: u8 = 1;
const HAS_ROWS: u8 = 2;
/// The bytes of a row's index entry: `tag u64 LE ++ first u64 LE ++ count u16 LE ++ end u32
/// LE` (`end`: where the row's body ends among the bodies).
const ROW_INDEX: usize = 22;

/// The chunks a read looks at (`first..=last`; empty when it reads no data).
pub(crate) type Span = std::ops::RangeInclusive<u64>;

/// What a read at the head needs of one object, from one view.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CachedObject {
    /// The object's record (None: no such object).
    pub record: Option<ObjectRecord>,
    /// The extent rows the head sees (tags `floor..=tag` of the head), newest tag first and
    /// each tag's rows in chunk order; None when there were too many to keep. From a hit,
    /// only the rows overlapping the span asked for.
    pub rows: Option<Vec<Extent>>,
}

impl CachedObject {
    /// Appends the entry's bytes: `flags u8` ([`HAS_RECORD`], [`HAS_ROWS`]), then the record
    /// as stored (`len u32 LE ++` [`ObjectRecord::encode`]), then `count u32 LE`, the rows'
    /// index entries ([`ROW_INDEX`] bytes each, in the rows' order) and their bodies
    /// ([`Extent::encode`]) one after the other. In memory only.
    fn encode(&self, out: &mut Vec<u8>) {
        let flags = if self.record.is_some() { HAS_RECORD } else { 0 }
            | if self.rows.is_some() { HAS_ROWS } else { 0 };
        out.push(flags);
        let mut value = Vec::new();
        if let Some(record) = &self.record {
            record.encode(&mut value);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(&value);
        }
        if let Some(rows) = &self.rows {
            out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
            let mut bodies = Vec::new();
            for row in rows {
                row.encode(&mut value);
                bodies.extend_from_slice(&value);
                out.extend_from_slice(&row.tag.to_le_bytes());
                out.extend_from_slice(&row.first.to_le_bytes());
                out.extend_from_slice(&(row.count as u16).to_le_bytes());
                out.extend_from_slice(&(bodies.len() as u32).to_le_bytes());
            }
            out.extend_from_slice(&bodies);
        }
    }

    /// The entry [`CachedObject::encode`] wrote, with only the rows that overlap `span`, or
    /// None if `bytes` are not one (never for bytes it wrote: the record's crc and every
    /// field of a row decoded are checked again anyway).
    fn decode(bytes: &[u8], span: &Span) -> Option<CachedObject> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = bytes.split_at_checked(n)?;
            *bytes = rest;
            Some(head)
        }
        let mut b = bytes;
        let flags = take(&mut b, 1)?[0];
        let record = if flags & HAS_RECORD != 0 {
            let len = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
            Some(ObjectRecord::decode(take(&mut b, len)?).ok()?)
        } else {
            None
        };
        let rows = if flags & HAS_ROWS != 0 {
            let count = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
            let index = RowIndex { bytes: take(&mut b, count.checked_mul(ROW_INDEX)?)?, count };
            let bodies = b;
            let total = match count.checked_sub(1) {
                Some(last) => index.body_end(last),
                None => 0,
            };
            if total != bodies.len() {
                return None;
            }
            let mut rows = Vec::new();
            if count > 0 && !span.is_empty() {
                // Rows are an object's: never without its record.
                let id = record.as_ref()?.id;
                index.overlapping(span, |k| {
                    let (tag, first, _) = index.row(k);
                    let start = if k == 0 { 0 } else { index.body_end(k - 1) };
                    let body = bodies.get(start..index.body_end(k))?;
                    rows.push(Extent::decode(&extent_key(id, tag, first), body).ok()?);
                    Some(())
                })?;
            }
            Some(rows)
        } else {
            b.is_empty().then_some(())?;
            None
        };
        Some(CachedObject { record, rows })
    }

    /// Whether `rows` may be kept in an entry made with `room` bytes free in its shard: a
    /// small entry's always, a larger one's only if it fits that room (see [`ROWS_SMALL`]).
    pub fn rows_fit(rows: &[Extent], room: usize) -> bool {
        // Data chunks, and the bytes kept: index entries and bodies.
        let (chunks, bytes) = rows.iter().fold((0, 0), |(chunks, bytes), r| {
            let data = match &r.body {
                ExtentBody::Hole => 0,
                ExtentBody::Data { crcs, .. } => crcs.len(),
            };
            (chunks + data, bytes + ROW_INDEX + r.encoded_len())
        });
        if rows.len() <= ROWS_SMALL && chunks <= DATA_CHUNKS_SMALL {
            return true;
        }
        rows.len() <= ROWS_MAX && chunks <= DATA_CHUNKS_MAX && bytes + SMALL_ENTRY <= room
    }

    /// The most rows worth reading for an entry made with `room` bytes free (more would not
    /// be kept: [`CachedObject::rows_fit`]; counted as data rows of one chunk, the least a
    /// data row takes, so that an object of hole rows may be read short and get a hint).
    pub fn rows_to_read(room: usize) -> usize {
        (room / (ROW_INDEX + EXTENT_DATA_HEAD + 4)).clamp(ROWS_SMALL, ROWS_MAX)
    }
}

/// The rows' index of an entry's bytes (see [`CachedObject::encode`]): rows newest tag first,
/// each tag's rows in chunk order, not overlapping within a tag. (Its own binary search: std's
/// `partition_point` would need the index as a slice of arrays, `as_chunks`, Rust 1.88; the
/// workspace's MSRV is 1.85.)
struct RowIndex<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl RowIndex<'_> {
    fn at(&self, k: usize) -> &[u8] {
        &self.bytes[k * ROW_INDEX..(k + 1) * ROW_INDEX]
    }

    /// Row `k`'s `(tag, first chunk, chunk count)`.
    fn row(&self, k: usize) -> (u64, u64, u64) {
        let e = self.at(k);
        let u64_at = |i: usize| u64::from_le_bytes(e[i..i + 8].try_into().expect("8 bytes"));
        (u64_at(0), u64_at(8), u64::from(u16::from_le_bytes([e[16], e[17]])))
    }

    /// Where row `k`'s body ends.
    fn body_end(&self, k: usize) -> usize {
        let e = self.at(k);
        u32::from_le_bytes([e[18], e[19], e[20], e[21]]) as usize
    }

    /// The first of `lo..hi` for which `pred` is false (`pred` true then false over it).
    fn partition(lo: usize, hi: usize, pred: impl Fn(usize) -> bool) -> usize {
        let (mut lo, mut hi) = (lo, hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Calls `each` with every row overlapping `span`, in the rows' order: per tag, a binary
    /// search for the tag's last row and one for the row covering the span's first chunk.
    fn overlapping(&self, span: &Span, mut each: impl FnMut(usize) -> Option<()>) -> Option<()> {
        let (a, b) = (*span.start(), *span.end());
        let mut i = 0;
        while i < self.count {
            let tag = self.row(i).0;
            // Tags descend: the tag's rows are those up to the first older tag.
            let j = Self::partition(i, self.count, |k| self.row(k).0 >= tag);
            // The last row starting at or before `a` may cover it; later ones start after it.
            let mut k = Self::partition(i, j, |k| self.row(k).1 <= a).saturating_sub(1).max(i);
            while k < j {
                let (_, first, count) = self.row(k);
                if first > b {
                    break;
                }
                if first.saturating_add(count) > a {
                    each(k)?;
                }
                k += 1;
            }
            i = j;
        }
        Some(())
    }
}

/// Whether a command may be served from an entry: reads of data and size at the head.
pub(crate) fn cacheable(at_head: bool, ops: &[ObjectOp]) -> bool {
    at_head
        && !ops.is_empty()
        && ops
            .iter()
            .all(|op| matches!(op, ObjectOp::Read { .. } | ObjectOp::Stat | ObjectOp::AssertExists))
}

/// The chunks that the data reads among `ops` look at (their hull; a read to the end of the
/// object reaches the last possible chunk), empty if none reads data.
pub(crate) fn span_of(ops: &[ObjectOp]) -> Span {
    let (mut a, mut b) = (u64::MAX, 0);
    for op in ops {
        if let ObjectOp::Read { off, len } = *op {
            let last = match len {
                0 => u64::MAX,
                len => off.saturating_add(len - 1) / CHUNK,
            };
            a = a.min(off / CHUNK);
            b = b.max(last);
        }
    }
    // `a > b` when no op reads data: an empty span.
    a..=b
}

/// A slot's bytes: its header ([`SLOT_HEAD`]), `name`, then `entry` encoded. The slot weighs
/// these plus [`ENTRY_OVERHEAD`].
fn slot_bytes(pg: PgId, name: &str, entry: &CachedObject) -> Option<Vec<u8>> {
    let name_len = u16::try_from(name.len()).ok()?;
    let mut bytes = Vec::with_capacity(SLOT_HEAD + name.len() + 128);
    bytes.push(0);
    bytes.extend_from_slice(&pg.pool.to_le_bytes());
    bytes.extend_from_slice(&pg.seed.to_le_bytes());
    bytes.extend_from_slice(&name_len.to_le_bytes());
    bytes.extend_from_slice(name.as_bytes());
    entry.encode(&mut bytes);
    Some(bytes)
}

/// The hash of an object's key, with the cache's keys (`RandomState`: the same for every
/// shard).
fn key_hash(hasher: &RandomState, pg: PgId, name: &str) -> u64 {
    let mut h = hasher.build_hasher();
    pg.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

/// A kept entry: one allocation with its key and the entry's bytes ([`slot_bytes`]). Its
/// hash is not kept (8 bytes an entry): it is computed again from the key when the shard's
/// table grows or the clock evicts the entry (every other removal has the key's hash in
/// hand). Two keys of one hash are told apart by their names.
struct Slot {
    bytes: Box<[u8]>,
}

impl Slot {
    fn pg(&self) -> PgId {
        let b = &self.bytes;
        PgId {
            pool: u64::from_le_bytes(b[1..9].try_into().expect("8 bytes")),
            seed: u32::from_le_bytes(b[9..13].try_into().expect("4 bytes")),
        }
    }

    fn name_len(&self) -> usize {
        usize::from(u16::from_le_bytes([self.bytes[13], self.bytes[14]]))
    }

    fn name(&self) -> &[u8] {
        &self.bytes[SLOT_HEAD..SLOT_HEAD + self.name_len()]
    }

    fn is(&self, pg: PgId, name: &str) -> bool {
        self.pg() == pg && self.name() == name.as_bytes()
    }

    fn hash(&self, hasher: &RandomState) -> u64 {
        // The key's bytes came from a `&str` (`slot_bytes`).
        key_hash(hasher, self.pg(), std::str::from_utf8(self.name()).unwrap_or_default())
    }

    fn entry(&self, span: &Span) -> Option<CachedObject> {
        CachedObject::decode(&self.bytes[SLOT_HEAD + self.name_len()..], span)
    }

    fn weight(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }

    /// Read since the clock's hand last passed it.
    fn referenced(&self) -> bool {
        self.bytes[0] != 0
    }

    fn set_referenced(&mut self, referenced: bool) {
        self.bytes[0] = u8::from(referenced);
    }
}

/// One shard's entries: a list of slots swept by a clock's hand (second chance: an entry
/// read since the hand last passed it is spared once, else evicted), found through a table
/// of their places keyed by their hashes. A freed place is reused by the next entry, so a
/// new entry lands just behind the hand and is the last the hand reaches. The list's and
/// the table's own memory is weighed with the entries ([`Shard::structure_bytes`]); the
/// list grows by an eighth at a time (doubling left up to half of it unused).
struct Shard {
    /// Places in `slots`, keyed by the slots' hashes.
    index: hashbrown::HashTable<u32>,
    slots: Vec<Option<Slot>>,
    /// Places in `slots` that are empty.
    free: Vec<u32>,
    /// The next place the clock looks at.
    hand: usize,
    /// The entries' weight ([`Slot::weight`]).
    entry_bytes: usize,
    /// Hashes of the keys missed once lately (the admission filter: see [`MetaCache::get`]).
    missed: HashSet<u64>,
    hasher: RandomState,
}

impl Shard {
    fn new(hasher: RandomState) -> Shard {
        Shard {
            index: hashbrown::HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            entry_bytes: 0,
            missed: HashSet::new(),
            hasher,
        }
    }

    /// The heap the list, its free places and the table hold (the table's as hashbrown
    /// counts it: its buckets, spare room and the room its removals' tombstones still take).
    fn structure_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<Slot>>()
            + self.free.capacity() * std::mem::size_of::<u32>()
            + self.index.allocation_size()
    }

    /// What the shard weighs: its entries and its structure.
    fn bytes(&self) -> usize {
        self.entry_bytes + self.structure_bytes()
    }

    fn find(&self, hash: u64, pg: PgId, name: &str) -> Option<usize> {
        let slots = &self.slots;
        let found = self
            .index
            .find(hash, |&at| slots[at as usize].as_ref().is_some_and(|s| s.is(pg, name)));
        found.map(|&at| at as usize)
    }

    /// Removes the slot at `at` (which holds one, of key hash `hash`).
    fn remove_at(&mut self, at: usize, hash: u64) {
        let slot = self.slots[at].take().expect("a slot");
        match self.index.find_entry(hash, |&p| p as usize == at) {
            Ok(entry) => {
                entry.remove();
            }
            // Never: the hash is the one it was inserted under (same keys, same name). A
            // stale place left in the table would only ever fail `Slot::is`.
            Err(_) => debug_assert!(false, "a slot missing from its shard's table"),
        }
        self.free.push(at as u32);
        self.entry_bytes -= slot.weight();
    }

    /// Keeps `slot` under `hash` (replacing the entry of its key, if any); returns its place.
    fn insert(&mut self, hash: u64, slot: Slot, pg: PgId, name: &str) -> usize {
        if let Some(at) = self.find(hash, pg, name) {
            self.remove_at(at, hash);
        }
        self.entry_bytes += slot.weight();
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at as usize] = Some(slot);
                at
            }
            None => {
                if self.slots.len() == self.slots.capacity() {
                    self.slots.reserve_exact(self.slots.len() / 8 + 4);
                }
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hash, at, |&p| slots[p as usize].as_ref().map_or(0, |s| s.hash(hasher)));
        at as usize
    }

    /// Evicts one entry (the first the hand finds that was not read since it last passed),
    /// never the one at `spare`; false if there is none.
    fn evict_one(&mut self, spare: usize) -> bool {
        if self.index.is_empty() {
            return false;
        }
        // Two sweeps at most: the first clears every mark it passes.
        for _ in 0..2 * self.slots.len() + 1 {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let at = self.hand;
            self.hand += 1;
            match &mut self.slots[at] {
                _ if at == spare => {}
                Some(slot) if slot.referenced() => slot.set_referenced(false),
                Some(slot) => {
                    let hash = slot.hash(&self.hasher);
                    self.remove_at(at, hash);
                    return true;
                }
                None => {}
            }
        }
        false
    }

    fn clear(&mut self) {
        self.index = hashbrown::HashTable::new();
        self.slots = Vec::new();
        self.free = Vec::new();
        self.hand = 0;
        self.entry_bytes = 0;
        self.missed.clear();
    }
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// The entry.
    Hit(CachedObject),
    /// No entry, and the object was missed lately (or the shard has room): make one and
    /// offer it. `room`: the bytes the shard has free, what a large entry may take
    /// ([`CachedObject::rows_fit`]).
    Admit { room: usize },
    /// No entry, and the object was not missed lately: read it the plain way.
    Pass,
}

/// The cache (see the module docs). Its generation checks take the generation as an argument:
/// the read views own it.
pub(crate) struct MetaCache {
    shards: Vec<Mutex<Shard>>,
    shard_bytes: usize,
    /// Keys a shard's admission filter remembers before it starts over: as many as the shard
    /// holds small entries.
    missed_max: usize,
    hasher: RandomState,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What the metadata cache holds and how often it answered (`Store::meta_cache_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that read the database instead.
    pub misses: u64,
    /// Objects kept.
    pub entries: u64,
    /// Their estimated weight in bytes (what the budget bounds).
    pub bytes: u64,
}

impl MetaCache {
    /// A cache of about `bytes` (0: nothing is kept).
    pub fn new(bytes: usize) -> MetaCache {
        let hasher = RandomState::new();
        MetaCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new(hasher.clone()))).collect(),
            shard_bytes: bytes / SHARDS,
            missed_max: (bytes / SHARDS / SMALL_ENTRY).max(16),
            hasher,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn hash(&self, pg: PgId, name: &str) -> u64 {
        key_hash(&self.hasher, pg, name)
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // Bits the shard's table does not place by (it takes its buckets from the low bits and
        // its control bytes from the top seven): all of a shard's keys sharing their low bits
        // would crowd into a sixteenth of its buckets.
        let i = ((hash >> 32) % SHARDS as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of object `name` of `pg`, if kept. A miss says whether to make an entry: at
    /// once while the shard has room, else only for an object missed before since the shard's
    /// filter was last emptied (a read of an object read once in a long while, e.g. uniformly
    /// among far more objects than the cache holds, does not pay for an entry it would never
    /// use).
    ///
    /// A hit's rows are those overlapping `span` (the chunks the read looks at).
    pub fn get(&self, pg: PgId, name: &str, span: &Span) -> Lookup {
        if self.shard_bytes == 0 {
            return Lookup::Pass;
        }
        let hash = self.hash(pg, name);
        let mut shard = self.shard(hash);
        if let Some(at) = shard.find(hash, pg, name) {
            let slot = shard.slots[at].as_mut().expect("found");
            match slot.entry(span) {
                Some(entry) => {
                    slot.set_referenced(true);
                    drop(shard);
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Hit(entry);
                }
                // Never for bytes `insert_if_current` made; dropped, not trusted.
                None => {
                    shard.remove_at(at, hash);
                }
            }
        }
        // While the shard has room an entry evicts nothing: admitted at the first miss.
        let free = self.shard_bytes.saturating_sub(shard.bytes());
        let room = free >= SMALL_ENTRY;
        let again = shard.missed.remove(&hash);
        if !again && !room {
            if shard.missed.len() >= self.missed_max {
                shard.missed.clear();
            }
            shard.missed.insert(hash);
        }
        drop(shard);
        self.misses.fetch_add(1, Ordering::Relaxed);
        if again || room {
            Lookup::Admit { room: free }
        } else {
            Lookup::Pass
        }
    }

    /// Keeps `entry` for object `name` of `pg`, read from a view of generation `view`, if
    /// `current()` (read under the shard's lock) is still `view` (see the module docs).
    pub fn insert_if_current(
        &self,
        pg: PgId,
        name: &str,
        entry: &CachedObject,
        view: u64,
        current: impl Fn() -> u64,
    ) {
        if self.shard_bytes == 0 {
            return;
        }
        let Some(bytes) = slot_bytes(pg, name, entry) else { return };
        let hash = self.hash(pg, name);
        let slot = Slot { bytes: bytes.into_boxed_slice() };
        if slot.weight() > self.shard_bytes {
            return;
        }
        let mut shard = self.shard(hash);
        if current() != view {
            return;
        }
        let at = shard.insert(hash, slot, pg, name);
        // Not the new entry: the hand may be at its place (a freed one) or reach it first (the
        // places after the hand all read lately).
        while shard.bytes() > self.shard_bytes && shard.evict_one(at) {}
        if shard.bytes() > self.shard_bytes {
            // Nothing else left to evict, and the shard's list and table leave no room for it.
            shard.remove_at(at, hash);
        }
    }

    /// Drops the entries of the objects named in `written` (call after bumping the
    /// generation).
    pub fn remove_written(&self, written: &HashMap<PgId, HashSet<String>>) {
        if self.shard_bytes == 0 {
            return;
        }
        for (&pg, names) in written {
            for name in names {
                let hash = self.hash(pg, name);
                let mut shard = self.shard(hash);
                if let Some(at) = shard.find(hash, pg, name) {
                    shard.remove_at(at, hash);
                }
            }
        }
    }

    /// Drops every entry (call after bumping the generation).
    pub fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Entries kept and their weight in bytes.
    pub fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            (n + s.index.len(), b + s.bytes())
        })
    }

    /// The counters and the usage.
    pub fn stats(&self) -> MetaCacheStats {
        let (entries, bytes) = self.usage();
        MetaCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: entries as u64,
            bytes: bytes as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Version;

    const ALL: Span = 0..=u64::MAX;

    fn pg() -> PgId {
        PgId { pool: 1, seed: 0 }
    }

    fn entry(id: u64) -> CachedObject {
        let v = Version { tag: 1, floor: 1, exists: true, size: 4096, mtime: (0, 0) };
        CachedObject {
            record: Some(ObjectRecord { id, versions: vec![v] }),
            rows: Some(vec![Extent {
                tag: 1,
                first: 0,
                count: 1,
                body: ExtentBody::Data { block: id, last_len: 4096, crcs: vec![7] },
            }]),
        }
    }

    fn weight(name: &str, entry: &CachedObject) -> usize {
        ENTRY_OVERHEAD + slot_bytes(pg(), name, entry).expect("a short name").len()
    }

    /// Goal: an entry reads back as it was kept, whatever it holds. Method: entries with no
    /// record, no rows, several versions and rows of holes and data, kept and read back.
    #[test]
    fn an_entry_reads_back_as_it_was_kept() {
        let v = |tag, exists, size| Version { tag, floor: 1, exists, size, mtime: (tag, 7) };
        let data = |tag, first, count: u64, block| Extent {
            tag,
            first,
            count,
            body: ExtentBody::Data { block, last_len: 100, crcs: (0..count as u32).collect() },
        };
        let hole = Extent { tag: 2, first: 9, count: 3, body: ExtentBody::Hole };
        let entries = [
            CachedObject { record: None, rows: Some(Vec::new()) },
            CachedObject {
                record: Some(ObjectRecord { id: 5, versions: vec![v(1, true, 4096)] }),
                rows: None,
            },
            CachedObject {
                record: Some(ObjectRecord {
                    id: 9,
                    versions: vec![v(1, true, 10), v(4, false, 0), v(6, true, 1 << 22)],
                }),
                rows: Some(vec![data(6, 0, 1024, 77), hole, data(1, 12, 1, 3)]),
            },
        ];
        let cache = MetaCache::new(1 << 20);
        for (i, e) in entries.iter().enumerate() {
            let name = format!("object-{i}");
            cache.insert_if_current(pg(), &name, e, 1, || 1);
            match cache.get(pg(), &name, &ALL) {
                Lookup::Hit(got) => assert_eq!(&got, e, "entry {i}"),
                Lookup::Admit { .. } | Lookup::Pass => panic!("entry {i} not kept"),
            }
        }
        // A 4 KiB object's entry stays small (it weighed ~530 bytes kept decoded, ~250 in an
        // `lru` map).
        assert!(weight("benchmark_data_host_12345_object123456", &entry(1)) <= 200);
    }

    /// Goal: a hit gives exactly the rows that overlap the span asked for, in the rows'
    /// order, whatever the tags and the rows' lengths. Method: an object's head of 1500 rows
    /// over three tags (single chunks, runs and holes, not overlapping within a tag), kept
    /// once, then looked up over 2000 spans (single chunks, short and long ranges, spans
    /// before, across and after the rows, and the empty span), each checked against the rows
    /// filtered one by one.
    #[test]
    fn a_hit_gives_the_rows_overlapping_its_span() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut rows = Vec::new();
        for tag in [9u64, 5, 2] {
            let mut first = next(4);
            let limit = rows.len() + 500;
            while rows.len() < limit && first < 3000 {
                let count = 1 + next(3) * next(8);
                let body = if next(5) == 0 {
                    ExtentBody::Hole
                } else {
                    let crcs = (0..count as u32).map(|c| c ^ tag as u32).collect();
                    ExtentBody::Data { block: next(1 << 30), last_len: 4096, crcs }
                };
                rows.push(Extent { tag, first, count, body });
                first += count + next(3);
            }
        }
        let v = Version { tag: 9, floor: 1, exists: true, size: 1 << 22, mtime: (0, 0) };
        let kept = CachedObject {
            record: Some(ObjectRecord { id: 77, versions: vec![v] }),
            rows: Some(rows.clone()),
        };
        let cache = MetaCache::new(64 << 20);
        cache.insert_if_current(pg(), "o", &kept, 1, || 1);
        let empty = span_of(&[ObjectOp::Stat]);
        assert!(empty.is_empty());
        let mut spans: Vec<Span> = vec![ALL, 0..=0, 5000..=6000, empty];
        for _ in 0..2000 {
            let a = next(3200);
            spans.push(a..=a + next(4) * next(40));
        }
        for span in spans {
            let want: Vec<&Extent> = rows
                .iter()
                .filter(|r| !span.is_empty() && r.first <= *span.end() && r.end() > *span.start())
                .collect();
            let Lookup::Hit(got) = cache.get(pg(), "o", &span) else { panic!("not kept") };
            assert_eq!(got.record, kept.record);
            let got = got.rows.expect("rows kept");
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "span {span:?}");
        }
    }

    fn id_of(cache: &MetaCache, name: &str) -> Option<u64> {
        match cache.get(pg(), name, &ALL) {
            Lookup::Hit(e) => e.record.as_ref().map(|r| r.id),
            Lookup::Admit { .. } | Lookup::Pass => None,
        }
    }

    /// Goal: an entry is made at an object's first miss while its shard has room, and only at
    /// its second miss once the shard is full (reads spread over more objects than the cache
    /// holds do not pay for entries they would not use).
    #[test]
    fn an_object_is_admitted_at_its_first_miss_while_there_is_room_then_at_its_second() {
        let cache = MetaCache::new(1 << 20);
        assert!(
            matches!(cache.get(pg(), "a", &ALL), Lookup::Admit { .. }),
            "room, yet not admitted"
        );
        cache.insert_if_current(pg(), "a", &entry(1), 1, || 1);
        assert!(matches!(cache.get(pg(), "a", &ALL), Lookup::Hit(_)));
        assert!(matches!(MetaCache::new(0).get(pg(), "b", &ALL), Lookup::Pass));
        // Room for one entry per shard (and the shard's list and table, ~110 bytes then),
        // not two: fill every shard.
        let one = weight("o0", &entry(0));
        let full = MetaCache::new(SHARDS * (one * 3 / 2 + 128));
        for i in 0..SHARDS * 20 {
            full.insert_if_current(pg(), &format!("o{i}"), &entry(i as u64), 1, || 1);
        }
        assert_eq!(full.usage().0, SHARDS, "one entry per shard");
        for name in ["x", "y", "z"] {
            assert!(
                matches!(full.get(pg(), name, &ALL), Lookup::Pass),
                "{name}: admitted when full"
            );
        }
        for name in ["x", "y", "z"] {
            assert!(
                matches!(full.get(pg(), name, &ALL), Lookup::Admit { .. }),
                "{name}: second miss"
            );
        }
    }

    #[test]
    fn an_entry_from_a_view_older_than_the_generation_is_not_kept() {
        let cache = MetaCache::new(1 << 20);
        cache.insert_if_current(pg(), "a", &entry(1), 4, || 5);
        assert_eq!(id_of(&cache, "a"), None, "an entry from a stale view was kept");
        cache.insert_if_current(pg(), "a", &entry(1), 5, || 5);
        assert_eq!(id_of(&cache, "a"), Some(1));
    }

    #[test]
    fn removal_drops_only_the_written_names() {
        let cache = MetaCache::new(1 << 20);
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            cache.insert_if_current(pg(), name, &entry(i as u64), 1, || 1);
        }
        let other = PgId { pool: 1, seed: 1 };
        let written = HashMap::from([
            (pg(), HashSet::from(["b".to_string()])),
            (other, HashSet::from(["a".to_string()])),
        ]);
        cache.remove_written(&written);
        assert_eq!(
            (id_of(&cache, "a"), id_of(&cache, "b"), id_of(&cache, "c")),
            (Some(0), None, Some(2))
        );
        cache.clear();
        assert_eq!(cache.usage(), (0, 0));
    }

    /// Goal: the clock keeps an entry that is read between evictions, and the shards stay
    /// within their budget, structure included. Method: 2000 inserts into a cache with room for
    /// about eight entries a shard, "o0" read after each; then, with nothing read, a second
    /// round of inserts must evict "o0" too (a mark spares an entry once, not for ever).
    #[test]
    fn entries_read_since_the_hand_passed_stay_within_the_budget() {
        let weight = weight("o0", &entry(0));
        let budget = SHARDS * weight * 8;
        let cache = MetaCache::new(budget);
        for i in 0..2000u64 {
            cache.insert_if_current(pg(), &format!("o{i}"), &entry(i), 1, || 1);
            // "o0" is read after every insert: it stays.
            assert!(id_of(&cache, "o0").is_some(), "the entry read all along was evicted");
            let (_, bytes) = cache.usage();
            assert!(bytes <= budget, "{bytes} bytes over the budget of {budget}");
        }
        let (entries, _) = cache.usage();
        assert!((SHARDS * 4..=SHARDS * 8).contains(&entries), "{entries} entries");
        for i in 2000..4000u64 {
            cache.insert_if_current(pg(), &format!("o{i}"), &entry(i), 1, || 1);
        }
        assert!(id_of(&cache, "o0").is_none(), "an entry no longer read was kept for ever");
    }

    /// Goal: an entry is never evicted by its own insertion, even when the hand reaches it
    /// first. Method: a shard of four entries all read lately (marked), a fifth inserted
    /// after them; the eviction its insertion makes clears the four marks and must then take
    /// the first of the four, not the new entry (unmarked, and next under the hand).
    #[test]
    fn a_new_entry_is_not_its_own_insertions_victim() {
        let hasher = RandomState::new();
        let mut shard = Shard::new(hasher.clone());
        let put = |shard: &mut Shard, name: &str, id| {
            let bytes = slot_bytes(pg(), name, &entry(id)).expect("short name");
            let hash = key_hash(&hasher, pg(), name);
            (shard.insert(hash, Slot { bytes: bytes.into_boxed_slice() }, pg(), name), hash)
        };
        for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let (at, _) = put(&mut shard, name, i as u64);
            shard.slots[at].as_mut().unwrap().set_referenced(true);
        }
        let (at, hash) = put(&mut shard, "e", 4);
        assert!(shard.evict_one(at));
        assert_eq!(shard.index.len(), 4);
        assert!(shard.find(hash, pg(), "e").is_some(), "the new entry was evicted");
        let a = key_hash(&shard.hasher, pg(), "a");
        assert!(shard.find(a, pg(), "a").is_none(), "the oldest was kept");
        // Alone but for itself, nothing else goes: the caller drops it if it does not fit.
        let mut alone = Shard::new(shard.hasher.clone());
        let (at, _) = put(&mut alone, "x", 9);
        assert!(!alone.evict_one(at));
        assert_eq!(alone.index.len(), 1);
    }

    /// Goal: places freed by removals are reused, and a cleared cache holds nothing. Method:
    /// 100 entries kept, half of them removed as written and kept again (new entries of the
    /// same objects, so in the same shards): the lists do not grow past 100 places; `clear`
    /// leaves no entry and no weight.
    #[test]
    fn freed_places_are_reused() {
        let cache = MetaCache::new(1 << 20);
        let names: Vec<String> = (0..100).map(|i| format!("o{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            cache.insert_if_current(pg(), name, &entry(i as u64), 1, || 1);
        }
        let places = |c: &MetaCache| -> usize {
            c.shards.iter().map(|s| s.lock().unwrap().slots.len()).sum()
        };
        assert_eq!(places(&cache), 100);
        let written = HashMap::from([(pg(), names[..50].iter().cloned().collect())]);
        cache.remove_written(&written);
        assert_eq!(cache.usage().0, 50);
        for (i, name) in names[..50].iter().enumerate() {
            assert_eq!(id_of(&cache, name), None, "{name} kept after its write");
            cache.insert_if_current(pg(), name, &entry(1000 + i as u64), 1, || 1);
        }
        assert_eq!(cache.usage().0, 100);
        assert_eq!(places(&cache), 100, "freed places were not reused");
        for (i, name) in names.iter().enumerate() {
            let id = if i < 50 { 1000 + i as u64 } else { i as u64 };
            assert_eq!(id_of(&cache, name), Some(id), "{name}");
        }
        cache.clear();
        assert_eq!(cache.usage(), (0, 0));
    }
}
