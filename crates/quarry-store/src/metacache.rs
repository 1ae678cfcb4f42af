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
//!   from here is mixed with what it reads from a view.
//! - Data blocks: a reader registers with the data file before it looks (`view.rs`), so the
//!   blocks an entry names and a later commit frees stay pending while it reads.
//!
//! # Admission
//! While its shard has room, an object gets an entry at its first miss (it evicts nothing).
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
//! (one allocation: the name and ~95 bytes for a 4 KiB object), decoded again at each hit
//! (a few hundred nanoseconds against the microseconds of the two descents). Kept decoded,
//! an entry of a 4 KiB object took ~600 bytes of resident memory, ~230 now (with a 40-byte
//! name): `rados bench` reads 4 KiB objects spread over more of them than the cache holds
//! (docs/benchmarks.md, "Twenty-first round").
//! Entries are weighed in bytes (their bytes plus the map's and the list's share) and the
//! least recently used go first once a shard passes its share of the budget
//! (`StoreOptions::meta_cache_bytes`, sized by the OSD from its memory target). Objects whose
//! head sees many rows (large objects written piecemeal) are not kept: an entry says only
//! that (a hint: those reads take the plain path at once).
//!
//! # Why lru
//! The `lru` crate is a small, widely used LRU map (a hash map with an intrusive list); one
//! per shard, behind a mutex, since every lookup reorders it.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use quarry_types::{ObjectOp, PgId};

use crate::format::{extent_key, Extent, ExtentBody, ObjectRecord};

/// Most extent rows an entry keeps; an object whose head sees more is not cached.
pub(crate) const ROWS_MAX: usize = 32;
/// Most chunks those rows may cover with data (their crcs are kept: 4 bytes each): a 4 MiB
/// object written in one piece fits.
pub(crate) const DATA_CHUNKS_MAX: usize = 1024;
const SHARDS: usize = 16;
/// The weight of a small object's entry (a 4 KiB one with a 40-byte name: ~250 bytes), for
/// sizing the admission filter to what a shard holds.
const SMALL_ENTRY: usize = 256;
/// What an entry costs beyond its bytes: the list node holding its slot (64), the map's
/// bucket and spare room (~32), the allocator's rounding of the bytes (~16) (measured:
/// docs/benchmarks.md, "Twenty-first round").
const ENTRY_OVERHEAD: usize = 112;
/// `flags` bits of an entry's bytes.
const HAS_RECORD: u8 = 1;
const HAS_ROWS: u8 = 2;

/// What a read at the head needs of one object, from one view.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CachedObject {
    /// The object's record (None: no such object).
    pub record: Option<ObjectRecord>,
    /// The extent rows the head sees (tags `floor..=tag` of the head), newest tag first and
    /// each tag's rows in chunk order; None when there were too many to keep.
    pub rows: Option<Vec<Extent>>,
}

impl CachedObject {
    /// Appends the entry's bytes: `flags u8` ([`HAS_RECORD`], [`HAS_ROWS`]), then the record
    /// as stored (`len u32 LE ++` [`ObjectRecord::encode`]), then `count u32 LE` and per row
    /// `tag u64 LE ++ first u64 LE ++ len u16 LE ++` [`Extent::encode`]. In memory only.
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
            for row in rows {
                row.encode(&mut value);
                out.extend_from_slice(&row.tag.to_le_bytes());
                out.extend_from_slice(&row.first.to_le_bytes());
                out.extend_from_slice(&(value.len() as u16).to_le_bytes());
                out.extend_from_slice(&value);
            }
        }
    }

    /// The entry [`CachedObject::encode`] wrote, or None if `bytes` are not one (never for
    /// bytes it wrote: the record's crc and every field are checked again anyway).
    fn decode(bytes: &[u8]) -> Option<CachedObject> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = bytes.split_at_checked(n)?;
            *bytes = rest;
            Some(head)
        }
        fn u64_of(b: &[u8]) -> u64 {
            u64::from_le_bytes(b.try_into().expect("8 bytes"))
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
            let mut rows = Vec::with_capacity(count.min(ROWS_MAX));
            for _ in 0..count {
                // Rows are an object's: never without its record.
                let id = record.as_ref()?.id;
                let (tag, first) = (u64_of(take(&mut b, 8)?), u64_of(take(&mut b, 8)?));
                let len = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
                rows.push(Extent::decode(&extent_key(id, tag, first), take(&mut b, len)?).ok()?);
            }
            Some(rows)
        } else {
            None
        };
        b.is_empty().then_some(CachedObject { record, rows })
    }

    /// Whether rows this many (covering this many data chunks) may be kept.
    pub fn rows_fit(rows: &[Extent]) -> bool {
        let chunks: usize = rows
            .iter()
            .map(|r| match &r.body {
                ExtentBody::Hole => 0,
                ExtentBody::Data { crcs, .. } => crcs.len(),
            })
            .sum();
        rows.len() <= ROWS_MAX && chunks <= DATA_CHUNKS_MAX
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

/// A slot's bytes: `name` followed by `entry` encoded. The slot weighs these plus
/// [`ENTRY_OVERHEAD`].
fn slot_bytes(name: &str, entry: &CachedObject) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(name.len() + 128);
    bytes.extend_from_slice(name.as_bytes());
    entry.encode(&mut bytes);
    bytes
}

/// A kept entry, under the hash of its key (no key is allocated to look one up; two keys of
/// one hash share a slot, the name telling them apart): the name and the entry's bytes in one
/// allocation.
struct Slot {
    pg: PgId,
    name_len: u32,
    weight: u32,
    bytes: Box<[u8]>,
}

impl Slot {
    fn is(&self, pg: PgId, name: &str) -> bool {
        self.pg == pg && self.bytes.get(..self.name_len as usize) == Some(name.as_bytes())
    }

    fn entry(&self) -> Option<CachedObject> {
        CachedObject::decode(&self.bytes[self.name_len as usize..])
    }
}

struct Shard {
    map: lru::LruCache<u64, Slot>,
    bytes: usize,
    /// Hashes of the keys missed once lately (the admission filter: see [`MetaCache::get`]).
    missed: HashSet<u64>,
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// The entry.
    Hit(CachedObject),
    /// No entry, and the object was missed lately: make one and offer it.
    Admit,
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
    hasher: std::collections::hash_map::RandomState,
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
        MetaCache {
            shards: (0..SHARDS)
                .map(|_| {
                    let map = lru::LruCache::unbounded();
                    Mutex::new(Shard { map, bytes: 0, missed: HashSet::new() })
                })
                .collect(),
            shard_bytes: bytes / SHARDS,
            missed_max: (bytes / SHARDS / SMALL_ENTRY).max(16),
            hasher: std::collections::hash_map::RandomState::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn hash(&self, pg: PgId, name: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        pg.hash(&mut h);
        name.hash(&mut h);
        h.finish()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        let i = (hash % SHARDS as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of object `name` of `pg`, if kept. A miss says whether to make an entry: only
    /// for an object missed before since the shard's filter was last emptied (a read of an
    /// object read once in a long while, e.g. uniformly among far more objects than the cache
    /// holds, does not pay for an entry it would never use).
    pub fn get(&self, pg: PgId, name: &str) -> Lookup {
        if self.shard_bytes == 0 {
            return Lookup::Pass;
        }
        let hash = self.hash(pg, name);
        let mut shard = self.shard(hash);
        if let Some(slot) = shard.map.get(&hash).filter(|slot| slot.is(pg, name)) {
            match slot.entry() {
                Some(entry) => {
                    drop(shard);
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Hit(entry);
                }
                // Never for bytes `insert_if_current` made; dropped, not trusted.
                None => {
                    let old = shard.map.pop(&hash).expect("found");
                    shard.bytes -= old.weight as usize;
                }
            }
        }
        // While the shard has room an entry evicts nothing: admitted at the first miss.
        let room = shard.bytes + SMALL_ENTRY <= self.shard_bytes;
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
            Lookup::Admit
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
        let bytes = slot_bytes(name, entry);
        let weight = ENTRY_OVERHEAD + bytes.len();
        let (Ok(name_len), Ok(weight_u32)) = (u32::try_from(name.len()), u32::try_from(weight))
        else {
            return;
        };
        if weight > self.shard_bytes {
            return;
        }
        let slot = Slot { pg, name_len, weight: weight_u32, bytes: bytes.into_boxed_slice() };
        let hash = self.hash(pg, name);
        let mut shard = self.shard(hash);
        if current() != view {
            return;
        }
        if let Some(old) = shard.map.put(hash, slot) {
            shard.bytes -= old.weight as usize;
        }
        shard.bytes += weight;
        while shard.bytes > self.shard_bytes {
            match shard.map.pop_lru() {
                Some((_, old)) => shard.bytes -= old.weight as usize,
                None => break,
            }
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
                if shard.map.peek(&hash).is_some_and(|slot| slot.is(pg, name)) {
                    let old = shard.map.pop(&hash).expect("peeked");
                    shard.bytes -= old.weight as usize;
                }
            }
        }
    }

    /// Drops every entry (call after bumping the generation).
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.map.clear();
            shard.bytes = 0;
            shard.missed.clear();
        }
    }

    /// Entries kept and their weight in bytes.
    pub fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            (n + s.map.len(), b + s.bytes)
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
        ENTRY_OVERHEAD + slot_bytes(name, entry).len()
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
            match cache.get(pg(), &name) {
                Lookup::Hit(got) => assert_eq!(&got, e, "entry {i}"),
                Lookup::Admit | Lookup::Pass => panic!("entry {i} not kept"),
            }
        }
        // A 4 KiB object's entry stays small (it weighed ~530 bytes kept decoded).
        assert!(weight("benchmark_data_host_12345_object123456", &entry(1)) <= 256);
    }

    fn id_of(cache: &MetaCache, name: &str) -> Option<u64> {
        match cache.get(pg(), name) {
            Lookup::Hit(e) => e.record.as_ref().map(|r| r.id),
            Lookup::Admit | Lookup::Pass => None,
        }
    }

    /// Goal: an entry is made at an object's first miss while its shard has room, and only at
    /// its second miss once the shard is full (reads spread over more objects than the cache
    /// holds do not pay for entries they would not use).
    #[test]
    fn an_object_is_admitted_at_its_first_miss_while_there_is_room_then_at_its_second() {
        let cache = MetaCache::new(1 << 20);
        assert!(matches!(cache.get(pg(), "a"), Lookup::Admit), "room, yet not admitted");
        cache.insert_if_current(pg(), "a", &entry(1), 1, || 1);
        assert!(matches!(cache.get(pg(), "a"), Lookup::Hit(_)));
        assert!(matches!(MetaCache::new(0).get(pg(), "b"), Lookup::Pass));
        // Room for one entry per shard: fill every shard.
        let one = weight("o0", &entry(0));
        let full = MetaCache::new(SHARDS * (one + SMALL_ENTRY / 2));
        for i in 0..SHARDS * 20 {
            full.insert_if_current(pg(), &format!("o{i}"), &entry(i as u64), 1, || 1);
        }
        assert_eq!(full.usage().0, SHARDS, "one entry per shard");
        for name in ["x", "y", "z"] {
            assert!(matches!(full.get(pg(), name), Lookup::Pass), "{name}: admitted when full");
        }
        for name in ["x", "y", "z"] {
            assert!(matches!(full.get(pg(), name), Lookup::Admit), "{name}: second miss");
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

    #[test]
    fn the_least_recently_used_go_first_within_the_budget() {
        let weight = weight("o0", &entry(0));
        // Room for about four entries per shard.
        let cache = MetaCache::new(SHARDS * weight * 4);
        for i in 0..2000u64 {
            cache.insert_if_current(pg(), &format!("o{i}"), &entry(i), 1, || 1);
            // "o0" is read after every insert: it stays.
            assert!(id_of(&cache, "o0").is_some(), "the entry read all along was evicted");
        }
        let (entries, bytes) = cache.usage();
        assert!(bytes <= SHARDS * weight * 4, "{bytes} bytes over the budget");
        assert!((SHARDS * 2..=SHARDS * 4).contains(&entries), "{entries} entries");
    }
}
