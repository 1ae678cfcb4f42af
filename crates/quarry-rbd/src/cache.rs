//! The client cache of an image open for writing (librbd's `rbd_cache`): writeback with a
//! dirty limit, a target and a maximum age, writethrough, or none; and read-ahead for
//! sequential reads.
//!
//! # What it owns
//! Byte extents of the image (keyed by image offset, never overlapping), each *clean* (as
//! the cluster has it), *dirty* (acknowledged to the caller, not yet written back) or
//! *writing* (its writeback is in flight); and the ranges with a cluster operation in
//! flight. The data path underneath (the image's uncached read and write, the exclusive
//! lock) is a [`Backend`].
//!
//! # Rules (what makes it exact)
//! - **One version per byte.** A write replaces whatever the cache holds for its bytes, so a
//!   read sees every earlier write of this handle: cached bytes first, the cluster for the
//!   gaps (a gap is never newer in the cache than in the cluster: only clean extents are
//!   evicted).
//! - **Order of writeback.** An extent is written back only when no cluster operation on an
//!   overlapping range is in flight, so overlapping writes reach the cluster in the order
//!   they were made; a direct operation (writethrough write, discard, compare-and-write)
//!   first writes back the dirty bytes it overlaps and waits for overlapping operations.
//! - **Flush.** [`Cache::flush`] returns when every write made before it is durable:
//!   no dirty or writing extent and no operation in flight carries an older sequence
//!   number. A failed writeback leaves its extents dirty and fails the flush with the errno.
//! - **Clean fills** (read results, read-ahead, a writethrough write's bytes) go only into
//!   gaps no operation is in flight on, and a read's fill only if nothing changed the cache
//!   meanwhile (a generation counter), so stale bytes never become cached.
//! - **Other clients.** With the exclusive-lock feature, bytes read from the cluster are
//!   cached only while this handle owns the lock (no one else can change them then), and
//!   giving the lock up writes everything back and empties the cache first. Without the
//!   feature the cache assumes one writer, as librbd's does.
//! - **Memory** is bounded by `rbd_cache_size`: dirty bytes by `rbd_cache_max_dirty` (a write
//!   waits for writeback when it would pass it; a write larger than that goes through), and
//!   clean extents are evicted (clock order) beyond the size.
//! - Writeback in the background starts when dirty bytes pass `rbd_cache_target_dirty` or a
//!   dirty extent is older than `rbd_cache_max_dirty_age`. It writes whole objects where it
//!   can: dirty extents never cross a stripe unit, a writeback run joins adjacent extents of
//!   one unit only, the oldest extents go with the dirty extents adjacent to them in their
//!   unit, and each unit's runs are one call (one object's op vector), so an object's bytes
//!   are clean as soon as its own write is done. Up to four rounds write at once, a new one
//!   starting while others write only once a unit is dirty from end to end (a sequential
//!   writer's next object); scattered small writes wait and gather instead
//!   (docs/benchmarks.md, "Seventeenth round").
//!
//! Who calls what, and when (in `image.rs`): writes, reads, discards, write-zeroes and
//! compare-and-write go through here; snapshot create, resize, rollback, close and
//! releasing the exclusive lock flush first (a lock release also drops clean data: another
//! client may change the image next); resize, rollback and a header change by another
//! handle drop clean data. Read-only and snapshot opens have no cache.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quarry_conf::{Conf, ConfError};
use quarry_types::{EntityName, ErrorCode};
use tokio::sync::{Notify, OwnedRwLockReadGuard, Semaphore};

use crate::error::{RbdError, RbdResult};

/// A boxed `Send` future (the backend's calls).
pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The right to write (the exclusive lock held shared), None without the lock feature.
pub(crate) type WriteRight = Option<OwnedRwLockReadGuard<bool>>;

/// Writeback calls in flight at once per writeback (each call writes the runs of one
/// stripe unit: one object's op vector).
const GROUPS_IN_FLIGHT: usize = 32;
/// Runs per writeback call.
const RUNS_PER_GROUP: usize = 256;
/// Longest writeback run (adjacent dirty extents joined into one write).
const RUN_BYTES_MAX: u64 = 4 << 20;
/// Background writebacks in flight at once: a round starts while earlier ones are still
/// writing, so the cluster always has the next objects to write (one round at a time left
/// it idle between rounds: sequential 1 MiB writes at queue depth 4 kept 0.6 object writes in
/// flight on average).
const ROUNDS_IN_FLIGHT: usize = 4;
/// How long the background writeback waits after a failed write before it tries again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// How an image handle caches (librbd's `rbd_cache*` and `rbd_readahead*` options). The
/// defaults are Ceph's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// `rbd_cache`: cache at all (false: every write and read goes to the cluster).
    pub enabled: bool,
    /// `rbd_cache_size`: bytes cached, dirty and clean.
    pub size: u64,
    /// `rbd_cache_max_dirty`: dirty bytes at most; 0 is writethrough.
    pub max_dirty: u64,
    /// `rbd_cache_target_dirty`: dirty bytes from which writeback starts.
    pub target_dirty: u64,
    /// `rbd_cache_max_dirty_age`: the longest a write stays dirty.
    pub max_dirty_age: Duration,
    /// `rbd_cache_writethrough_until_flush`: writethrough until the first flush (a guest
    /// that never flushes is not put at risk).
    pub writethrough_until_flush: bool,
    /// `rbd_readahead_trigger_requests`: sequential reads before read-ahead starts.
    pub readahead_trigger_requests: u64,
    /// `rbd_readahead_max_bytes`: bytes read ahead at once (0: no read-ahead).
    pub readahead_max_bytes: u64,
    /// `rbd_readahead_disable_after_bytes`: read-ahead stops after this many bytes were
    /// read (the guest's own read-ahead takes over; 0: never stops).
    pub readahead_disable_after_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            size: 32 << 20,
            max_dirty: 24 << 20,
            target_dirty: 16 << 20,
            max_dirty_age: Duration::from_secs(1),
            writethrough_until_flush: true,
            readahead_trigger_requests: 10,
            readahead_max_bytes: 512 << 10,
            readahead_disable_after_bytes: 50 << 20,
        }
    }
}

/// What a [`CacheConfig`] amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// `rbd_cache = false`.
    None,
    /// `rbd_cache_max_dirty = 0`: writes go to the cluster before they are acknowledged;
    /// reads are cached.
    Writethrough,
    /// Writes are acknowledged once cached and written back later.
    Writeback,
}

/// The options [`CacheConfig`] reads, by Ceph's names.
pub const CACHE_OPTIONS: &[&str] = &[
    "rbd_cache",
    "rbd_cache_size",
    "rbd_cache_max_dirty",
    "rbd_cache_target_dirty",
    "rbd_cache_max_dirty_age",
    "rbd_cache_writethrough_until_flush",
    "rbd_readahead_trigger_requests",
    "rbd_readahead_max_bytes",
    "rbd_readahead_disable_after_bytes",
];

impl CacheConfig {
    /// The mode these settings give.
    pub fn mode(&self) -> CacheMode {
        if !self.enabled || self.size == 0 {
            CacheMode::None
        } else if self.max_dirty == 0 {
            CacheMode::Writethrough
        } else {
            CacheMode::Writeback
        }
    }

    /// The settings of `conf` for entity `name` (sections `[client.x]`, `[client]`,
    /// `[global]`, then runtime overrides such as `rados_conf_set` or `--rbd_cache=false`
    /// given to [`Conf::set_override`]); options not set keep Ceph's defaults.
    pub fn from_conf(conf: &Conf, name: &EntityName) -> Result<CacheConfig, ConfError> {
        let mut cfg = CacheConfig::default();
        for key in CACHE_OPTIONS {
            if let Some(value) = conf.get(name, key) {
                cfg.set(key, &value).map_err(|e| ConfError::BadValue {
                    option: key.to_string(),
                    value: value.clone(),
                    reason: e.reason().to_string(),
                    at: conf.origin(name, key),
                })?;
            }
        }
        Ok(cfg)
    }

    /// Applies the cache options among command-line style arguments (`CEPH_ARGS`:
    /// `--rbd_cache=false`, `--rbd-cache-size 64M`); other arguments are ignored.
    pub fn apply_args(&mut self, args: &[String]) -> RbdResult<()> {
        let mut i = 0;
        while i < args.len() {
            let Some(option) = args[i].strip_prefix("--") else {
                i += 1;
                continue;
            };
            let (key, inline) = match option.split_once('=') {
                Some((k, v)) => (k.replace('-', "_"), Some(v.to_string())),
                None => (option.replace('-', "_"), None),
            };
            if !CACHE_OPTIONS.contains(&key.as_str()) {
                i += 1;
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i).cloned().ok_or_else(|| {
                        RbdError::refused(ErrorCode::EINVAL, format!("--{key} needs a value"))
                    })?
                }
            };
            self.set(&key, &value)?;
            i += 1;
        }
        Ok(())
    }

    /// `args` without the cache options [`CacheConfig::apply_args`] reads (and their values),
    /// for a tool that parses the rest itself.
    pub fn strip_args(args: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(args.len());
        let mut i = 0;
        while i < args.len() {
            let option = args[i].strip_prefix("--").map(|o| {
                let (key, inline) = o.split_once('=').map_or((o, false), |(k, _)| (k, true));
                (key.replace('-', "_"), inline)
            });
            match option {
                Some((key, inline)) if CACHE_OPTIONS.contains(&key.as_str()) => {
                    i += if inline { 1 } else { 2 };
                }
                _ => {
                    out.push(args[i].clone());
                    i += 1;
                }
            }
        }
        out
    }

    /// Sets one option by Ceph's name (a per-open option, `rbd_open` with a config, an
    /// image's `conf_rbd_cache*` metadata): ENOENT for a name that is not a cache option,
    /// EINVAL for a value of the wrong type. Sizes take Ceph's units (`64M`).
    pub fn set(&mut self, key: &str, value: &str) -> RbdResult<()> {
        let key = quarry_conf::normalize_key(key);
        let bad = |what: &str| {
            RbdError::refused(ErrorCode::EINVAL, format!("{key}: {what} expected, got '{value}'"))
        };
        let size = || quarry_conf::parse_size(value.trim()).map_err(|_| bad("a size"));
        let count = || value.trim().parse::<u64>().map_err(|_| bad("a count"));
        let boolean = || quarry_conf::parse_bool(value.trim()).map_err(|_| bad("a boolean"));
        match key.as_str() {
            "rbd_cache" => self.enabled = boolean()?,
            "rbd_cache_size" => self.size = size()?,
            "rbd_cache_max_dirty" => self.max_dirty = size()?,
            "rbd_cache_target_dirty" => self.target_dirty = size()?,
            "rbd_cache_max_dirty_age" => {
                let secs: f64 = value.trim().parse().map_err(|_| bad("seconds"))?;
                if !secs.is_finite() || secs < 0.0 {
                    return Err(bad("seconds"));
                }
                self.max_dirty_age = Duration::from_secs_f64(secs);
            }
            "rbd_cache_writethrough_until_flush" => self.writethrough_until_flush = boolean()?,
            "rbd_readahead_trigger_requests" => self.readahead_trigger_requests = count()?,
            "rbd_readahead_max_bytes" => self.readahead_max_bytes = size()?,
            "rbd_readahead_disable_after_bytes" => self.readahead_disable_after_bytes = size()?,
            _ => {
                return Err(RbdError::refused(
                    ErrorCode::ENOENT,
                    format!("{key} is not a cache option"),
                ))
            }
        }
        Ok(())
    }

    /// The limits made consistent as librbd does: dirty at most the size, the target at
    /// most the dirty limit.
    fn sane(mut self) -> CacheConfig {
        self.max_dirty = self.max_dirty.min(self.size);
        self.target_dirty = self.target_dirty.min(self.max_dirty);
        self
    }
}

/// The data path under the cache.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Takes (if needed) and holds the right to write: the exclusive lock.
    fn hold(&self) -> BoxFut<'_, RbdResult<WriteRight>>;
    /// Writes non-overlapping `(offset, bytes)` pieces to the cluster (the caller holds the
    /// right to write); all of them or an error.
    fn write(&self, writes: Vec<(u64, Bytes)>) -> BoxFut<'_, RbdResult<()>>;
    /// Reads from the cluster (cut at the image's end).
    fn read(&self, off: u64, len: u64) -> BoxFut<'_, RbdResult<Bytes>>;
    /// Whether bytes read from the cluster may be cached now: no other client can change
    /// them (this handle owns the exclusive lock, or the image has none).
    fn may_fill(&self) -> bool;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Clean,
    /// Acknowledged, not written back: the write's sequence number and when it was made.
    Dirty {
        seq: u64,
        since: Instant,
    },
    /// Being written back by run `run`.
    Writing {
        seq: u64,
        run: u64,
    },
}

#[derive(Clone, Debug)]
struct Ext {
    data: Bytes,
    state: State,
}

impl Ext {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn unclean(&self) -> bool {
        self.state != State::Clean
    }

    fn seq(&self) -> Option<u64> {
        match self.state {
            State::Clean => None,
            State::Dirty { seq, .. } | State::Writing { seq, .. } => Some(seq),
        }
    }
}

/// Cached bytes at an image offset.
type Piece = (u64, Bytes);
/// An uncached range: offset and length.
type Gap = (u64, u64);

/// A cluster operation in flight on `[start, end)`: a writeback run or a direct operation.
/// Operations in flight never overlap (a run is made of extents no operation in flight
/// overlaps, a direct operation starts only when none does), so they are kept by start.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    id: u64,
    end: u64,
    /// The oldest write it carries (a flush waits for it).
    min_seq: u64,
}

/// One writeback: adjacent dirty extents joined.
struct Run {
    id: u64,
    off: u64,
    data: Bytes,
}

#[derive(Default)]
struct Inner {
    /// The image's stripe unit: no dirty extent and no writeback run crosses a multiple of
    /// it, so a run is bytes of one object.
    unit: u64,
    map: BTreeMap<u64, Ext>,
    /// Bytes in `map`.
    total: u64,
    /// Dirty and writing bytes in `map`.
    unclean: u64,
    /// Writing bytes in `map` (so dirty ones are `unclean - writing`).
    writing: u64,
    /// Operations in flight by start (disjoint: [`InFlight`]).
    in_flight: BTreeMap<u64, InFlight>,
    next_seq: u64,
    next_id: u64,
    /// Bumped by every change of cached content (not by writeback completions or eviction).
    generation: u64,
    /// The last writeback error not yet reported by a flush.
    error: Option<(ErrorCode, String)>,
    /// A flush happened (ends writethrough-until-flush).
    flushed: bool,
    /// Dirty bytes writers wait to add.
    wanted: u64,
    /// A background writeback failed: no new one before this instant.
    retry_at: Option<Instant>,
    /// A write made a stripe unit dirty from end to end since the background writeback last
    /// looked (a sequential writer finished an object).
    unit_filled: bool,
    evict_cursor: u64,
    last_read_end: u64,
    sequential: u64,
    read_bytes: u64,
    readahead_end: u64,
}

impl Inner {
    fn overlaps_in_flight(&self, start: u64, end: u64) -> bool {
        // Disjoint ranges: only the last one starting before `end` can reach `start`.
        self.in_flight.range(..end).next_back().is_some_and(|(_, f)| f.end > start)
    }

    /// The keys of the extents overlapping `start..end`, ascending (extents never overlap:
    /// at most one starts before `start` and reaches into it).
    fn keys_overlapping(&self, start: u64, end: u64) -> Vec<u64> {
        let mut keys: Vec<u64> = Vec::new();
        if let Some((&k, e)) = self.map.range(..start).next_back() {
            if k + e.len() > start {
                keys.push(k);
            }
        }
        keys.extend(self.map.range(start..end).map(|(&k, _)| k));
        keys
    }

    /// Removes every cached byte of `[start, end)` (splitting extents at the edges) and
    /// returns the removed pieces.
    fn cut(&mut self, start: u64, end: u64) -> Vec<(u64, Ext)> {
        let keys = self.keys_overlapping(start, end);
        let mut removed = Vec::new();
        for k in keys {
            let Some(ext) = self.map.remove(&k) else { continue };
            self.account(&ext, false);
            let e_end = k + ext.len();
            if k < start {
                self.put(k, Ext { data: ext.data.slice(..(start - k) as usize), state: ext.state });
            }
            if e_end > end {
                let from = (end - k) as usize;
                self.put(end, Ext { data: ext.data.slice(from..), state: ext.state });
            }
            let lo = k.max(start);
            let hi = e_end.min(end);
            if lo < hi {
                let data = ext.data.slice((lo - k) as usize..(hi - k) as usize);
                removed.push((lo, Ext { data, state: ext.state }));
            }
        }
        removed
    }

    fn account(&mut self, ext: &Ext, add: bool) {
        let len = ext.len();
        let writing = matches!(ext.state, State::Writing { .. });
        if add {
            self.total += len;
            if ext.unclean() {
                self.unclean += len;
            }
            if writing {
                self.writing += len;
            }
        } else {
            self.total -= len;
            if ext.unclean() {
                self.unclean -= len;
            }
            if writing {
                self.writing -= len;
            }
        }
    }

    /// Inserts bytes into a range known to be empty, one extent per stripe unit they touch.
    fn put_split(&mut self, off: u64, data: Bytes, state: State) {
        let mut at = 0;
        while at < data.len() {
            let pos = off + at as u64;
            let take = ((self.unit - pos % self.unit) as usize).min(data.len() - at);
            self.put(pos, Ext { data: data.slice(at..at + take), state });
            at += take;
        }
    }

    /// Inserts an extent into a range known to be empty.
    fn put(&mut self, off: u64, ext: Ext) {
        if ext.data.is_empty() {
            return;
        }
        self.account(&ext, true);
        self.map.insert(off, ext);
    }

    /// Cached pieces and gaps of `[start, end)`, in offset order.
    fn lookup(&self, start: u64, end: u64) -> (Vec<Piece>, Vec<Gap>) {
        let mut pieces = Vec::new();
        let mut gaps = Vec::new();
        let mut at = start;
        let first = self
            .map
            .range(..start)
            .next_back()
            .filter(|(&k, e)| k + e.len() > start)
            .map(|(&k, _)| k)
            .unwrap_or(start);
        for (&k, e) in self.map.range(first..end) {
            let lo = k.max(start);
            let hi = (k + e.len()).min(end);
            if lo >= hi {
                continue;
            }
            if lo > at {
                gaps.push((at, lo - at));
            }
            pieces.push((lo, e.data.slice((lo - k) as usize..(hi - k) as usize)));
            at = hi;
        }
        if at < end {
            gaps.push((at, end - at));
        }
        (pieces, gaps)
    }

    /// Puts clean bytes `data` at `off` where nothing is cached and no operation is in
    /// flight; with `replace_clean` also over clean extents (a writethrough write's bytes
    /// are newer than what a read cached meanwhile).
    fn fill_clean(&mut self, off: u64, data: &Bytes, replace_clean: bool) {
        let end = off + data.len() as u64;
        if replace_clean {
            for (k, ext) in self.cut(off, end) {
                if ext.unclean() {
                    self.put(k, ext);
                }
            }
        }
        let (_, gaps) = self.lookup(off, end);
        for (g, len) in gaps {
            if self.overlaps_in_flight(g, g + len) {
                continue;
            }
            let from = (g - off) as usize;
            let piece = data.slice(from..from + len as usize);
            self.put(g, Ext { data: piece, state: State::Clean });
        }
    }

    /// Evicts clean extents (clock order from the last eviction) until at most `size`
    /// bytes are cached.
    fn evict(&mut self, size: u64) {
        while self.total > size {
            let victim = self
                .map
                .range(self.evict_cursor..)
                .chain(self.map.range(..self.evict_cursor))
                .find(|(_, e)| !e.unclean())
                .map(|(&k, e)| (k, e.len()));
            let Some((k, len)) = victim else { return };
            if let Some(ext) = self.map.remove(&k) {
                self.account(&ext, false);
            }
            self.evict_cursor = k + len;
        }
    }

    /// Marks dirty extents chosen by `pick` (offset, extent) as writing, joined into runs of
    /// adjacent extents, each registered in flight. Extents overlapping an operation in
    /// flight wait.
    fn take_runs(&mut self, mut pick: impl FnMut(u64, &Ext) -> bool) -> Vec<Run> {
        let chosen: Vec<u64> =
            self.map.iter().filter(|(&k, e)| pick(k, e)).map(|(&k, _)| k).collect();
        self.runs_of(chosen)
    }

    /// Whether the stripe unit ending at `end` (a multiple of the unit) is dirty from end to
    /// end.
    fn unit_full(&self, end: u64) -> bool {
        let start = end - self.unit;
        let mut at = start;
        for (&k, e) in self.map.range(start..end) {
            if k != at || !matches!(e.state, State::Dirty { .. }) {
                return false;
            }
            at += e.len();
        }
        at == end
    }

    /// The background writeback's runs: the oldest dirty extents until at most `keep` dirty
    /// bytes are left (bytes being written back already count as gone), and every dirty
    /// extent older than `max_age`, each with the dirty extents adjacent to it in its stripe
    /// unit.
    fn take_oldest(&mut self, keep: u64, now: Instant, max_age: Duration) -> Vec<Run> {
        // The newest sequence number still written back: oldest first until at most `keep`
        // dirty bytes remain.
        let mut dirty: Vec<(u64, u64)> = self
            .map
            .values()
            .filter_map(|e| match e.state {
                State::Dirty { seq, .. } => Some((seq, e.len())),
                _ => None,
            })
            .collect();
        dirty.sort_unstable();
        let mut remaining = self.unclean - self.writing;
        let mut limit = None;
        for (seq, len) in dirty {
            if remaining <= keep {
                break;
            }
            remaining -= len;
            limit = Some(seq);
        }
        let picked: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, e)| match e.state {
                State::Dirty { seq, since } => {
                    limit.is_some_and(|l| seq <= l)
                        || now.saturating_duration_since(since) >= max_age
                }
                _ => false,
            })
            .map(|(&k, _)| k)
            .collect();
        let is_dirty = |e: &Ext| matches!(e.state, State::Dirty { .. });
        let mut keys = std::collections::BTreeSet::new();
        for k in picked {
            if !keys.insert(k) {
                continue; // reached from an earlier extent of its unit
            }
            let mut at = k;
            while !at.is_multiple_of(self.unit) {
                match self.map.range(..at).next_back() {
                    Some((&p, e)) if p + e.len() == at && is_dirty(e) && keys.insert(p) => at = p,
                    _ => break,
                }
            }
            let mut end = k + self.map[&k].len();
            while !end.is_multiple_of(self.unit) {
                match self.map.get(&end) {
                    Some(e) if is_dirty(e) => {
                        keys.insert(end);
                        end += e.len();
                    }
                    _ => break,
                }
            }
        }
        self.runs_of(keys.into_iter().collect())
    }

    /// [`Inner::take_runs`] for the dirty extents among `keys` (ascending) only: a direct
    /// write takes the extents it overlaps ([`Inner::keys_overlapping`]) without a scan of
    /// the whole cache (such a scan per write was half of `rbd bench`'s CPU at 4 KiB
    /// writes, 32 threads).
    fn runs_of(&mut self, keys: Vec<u64>) -> Vec<Run> {
        let chosen: Vec<u64> = keys
            .into_iter()
            .filter(|&k| {
                let e = &self.map[&k];
                matches!(e.state, State::Dirty { .. }) && !self.overlaps_in_flight(k, k + e.len())
            })
            .collect();
        let mut runs: Vec<(u64, u64, Vec<u64>)> = Vec::new(); // (start, end, keys)
        for k in chosen {
            let len = self.map[&k].len();
            match runs.last_mut() {
                Some((_, end, keys))
                    if *end == k
                        && !k.is_multiple_of(self.unit)
                        && (*end - keys[0]) + len <= RUN_BYTES_MAX =>
                {
                    *end = k + len;
                    keys.push(k);
                }
                _ => runs.push((k, k + len, vec![k])),
            }
        }
        let mut out = Vec::new();
        for (start, end, keys) in runs {
            let id = self.next_id;
            self.next_id += 1;
            let mut min_seq = u64::MAX;
            let mut buf =
                BytesMut::with_capacity(if keys.len() > 1 { (end - start) as usize } else { 0 });
            for k in &keys {
                let ext = self.map.get_mut(k).expect("chosen extent");
                if let State::Dirty { seq, .. } = ext.state {
                    min_seq = min_seq.min(seq);
                    ext.state = State::Writing { seq, run: id };
                    self.writing += ext.data.len() as u64;
                }
                if keys.len() > 1 {
                    buf.extend_from_slice(&ext.data);
                }
            }
            let data = if keys.len() == 1 { self.map[&start].data.clone() } else { buf.freeze() };
            self.in_flight.insert(start, InFlight { id, end, min_seq });
            out.push(Run { id, off: start, data });
        }
        out
    }

    /// Whether a write or operation older than `target` is not durable yet.
    fn pending_before(&self, target: u64) -> bool {
        self.in_flight.values().any(|f| f.min_seq < target)
            || self.map.values().any(|e| e.seq().is_some_and(|s| s < target))
    }

    /// Ends operation `id`, registered at `start`.
    fn end_in_flight(&mut self, id: u64, start: u64) {
        if self.in_flight.get(&start).is_some_and(|f| f.id == id) {
            self.in_flight.remove(&start);
        }
    }
}

/// Runs (ascending, none crossing a multiple of `unit`) in groups of one stripe unit each,
/// at most [`RUNS_PER_GROUP`] runs: each group is one writeback call, one object's op vector,
/// so each object's bytes become clean as soon as its write is done.
fn groups(runs: Vec<Run>, unit: u64) -> Vec<Vec<Run>> {
    let mut groups: Vec<Vec<Run>> = Vec::new();
    for run in runs {
        match groups.last_mut() {
            Some(group)
                if group.len() < RUNS_PER_GROUP && group[0].off / unit == run.off / unit =>
            {
                group.push(run);
            }
            _ => groups.push(vec![run]),
        }
    }
    groups
}

/// `len` bytes made of `parts` (offset in the result, bytes; not overlapping), zeros where
/// none is: a part that is the whole answer is returned as it is, without a buffer and a copy
/// (a cached read served by one piece or one fetch, a read within one object).
pub(crate) fn assemble(len: u64, parts: Vec<(u64, Bytes)>) -> Bytes {
    if let [(0, data)] = &parts[..] {
        if data.len() as u64 == len {
            return data.clone();
        }
    }
    let mut buffer = BytesMut::zeroed(len as usize);
    for (at, data) in parts {
        buffer[at as usize..at as usize + data.len()].copy_from_slice(&data);
    }
    buffer.freeze()
}

/// The cache of one image handle.
pub(crate) struct Cache {
    cfg: CacheConfig,
    backend: Arc<dyn Backend>,
    inner: Mutex<Inner>,
    /// Woken on every completion, removal or state change (waiters re-check).
    changed: Notify,
    /// Wakes the background writeback.
    kick: Arc<Notify>,
    /// Background writebacks in flight ([`ROUNDS_IN_FLIGHT`]).
    rounds: Arc<Semaphore>,
}

impl Cache {
    /// A cache for a handle open for writing (None when `cfg` says no cache) of an image
    /// whose stripe unit is `unit` bytes (the object size unless striped): writeback runs
    /// stay within one.
    pub(crate) fn new(
        cfg: CacheConfig,
        backend: Arc<dyn Backend>,
        unit: u64,
    ) -> Option<Arc<Cache>> {
        if cfg.mode() == CacheMode::None {
            return None;
        }
        Some(Arc::new(Cache {
            cfg: cfg.sane(),
            backend,
            inner: Mutex::new(Inner { unit: unit.max(1), ..Inner::default() }),
            changed: Notify::new(),
            kick: Arc::new(Notify::new()),
            rounds: Arc::new(Semaphore::new(ROUNDS_IN_FLIGHT)),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (without holding the mutex) until `check` says done, re-checking on every
    /// change.
    async fn wait_until(&self, mut check: impl FnMut(&mut Inner) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if check(&mut self.lock()) {
                return;
            }
            notified.await;
        }
    }

    /// Whether a write of `len` bytes is buffered (writeback now) rather than sent through.
    pub(crate) fn buffers(&self, len: u64) -> bool {
        self.cfg.mode() == CacheMode::Writeback
            && len <= self.cfg.max_dirty
            && (self.lock().flushed || !self.cfg.writethrough_until_flush)
    }

    /// Buffers a write (writeback): waits while the dirty limit would be passed.
    pub(crate) async fn buffer(&self, off: u64, data: Bytes) {
        let len = data.len() as u64;
        if len == 0 {
            return;
        }
        let mut waiting = false;
        let mut over_target = false;
        let mut data = Some(data);
        self.wait_until(|st| {
            if st.unclean + len > self.cfg.max_dirty && st.unclean > 0 {
                if !waiting {
                    st.wanted += len;
                    waiting = true;
                }
                self.kick.notify_one();
                return false;
            }
            if waiting {
                st.wanted -= len;
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            st.cut(off, off + len);
            let state = State::Dirty { seq, since: Instant::now() };
            st.put_split(off, data.take().expect("buffered once"), state);
            // The last unit this write reached the end of: one look per unit a sequential
            // writer fills, one per 1024 random 4 KiB writes.
            let unit_end = (off + len) - (off + len) % st.unit;
            if unit_end > off && unit_end >= st.unit && st.unit_full(unit_end) {
                st.unit_filled = true;
            }
            st.generation += 1;
            st.evict(self.cfg.size);
            over_target = st.unclean > self.cfg.target_dirty;
            true
        })
        .await;
        if over_target {
            self.kick.notify_one();
        }
    }

    /// Writes `runs` back (the caller holds the right to write); extents of a failed run
    /// become dirty again. The first error, if any.
    async fn write_runs(&self, runs: Vec<Run>) -> RbdResult<()> {
        let unit = self.lock().unit;
        let mut set = tokio::task::JoinSet::new();
        let mut tasks = std::collections::HashMap::new();
        let mut pending = groups(runs, unit).into_iter();
        let mut first_error = None;
        loop {
            while set.len() < GROUPS_IN_FLIGHT {
                let Some(group) = pending.next() else { break };
                let done: Vec<(u64, u64, u64)> =
                    group.iter().map(|r| (r.id, r.off, r.data.len() as u64)).collect();
                let writes = group.into_iter().map(|r| (r.off, r.data)).collect();
                let backend = self.backend.clone();
                let task = set.spawn(async move { backend.write(writes).await });
                tasks.insert(task.id(), done);
            }
            let Some(joined) = set.join_next_with_id().await else { break };
            let (task, result) = match joined {
                Ok((task, result)) => (task, result),
                Err(e) => (e.id(), Err(RbdError::refused(ErrorCode::EIO, e.to_string()))),
            };
            let done = tasks.remove(&task).expect("every writeback task is listed");
            let failed = result.as_ref().err().map(|e| (e.errno(), e.to_string()));
            for (id, off, len) in done {
                self.complete(id, off, off + len, failed.clone());
            }
            if let (Some((code, reason)), None) = (failed, &first_error) {
                first_error = Some(RbdError::refused(code, reason));
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A writeback run ended: its extents still writing become clean (or dirty again).
    fn complete(&self, id: u64, start: u64, end: u64, failed: Option<(ErrorCode, String)>) {
        let mut st = self.lock();
        st.end_in_flight(id, start);
        let keys: Vec<u64> = st.map.range(start..end.max(start + 1)).map(|(&k, _)| k).collect();
        let now = Instant::now();
        for k in keys {
            let ext = st.map.get_mut(&k).expect("listed key");
            let State::Writing { seq, run } = ext.state else { continue };
            if run != id {
                continue;
            }
            let len = ext.len();
            if failed.is_some() {
                ext.state = State::Dirty { seq, since: now };
            } else {
                ext.state = State::Clean;
                st.unclean -= len;
            }
            st.writing -= len;
        }
        if let Some(error) = failed {
            st.retry_at = Some(now + RETRY_AFTER);
            if error.0 == ErrorCode::ESHUTDOWN {
                // The handle is gone or the client blocklisted: nothing more can be written.
                tracing::debug!(reason = %error.1, "cache writeback failed");
            } else {
                tracing::warn!(code = %error.0, reason = %error.1, "cache writeback failed");
            }
            st.error = Some(error);
        }
        st.evict(self.cfg.size);
        drop(st);
        self.changed.notify_waiters();
    }

    /// Makes every write made before the call durable. With `hold` the right to write is
    /// taken first; without, the caller has it (the exclusive lock's release). Only a
    /// `user` flush (the caller's `flush`, not one the image does for itself before a
    /// snapshot, a diff or a lock release) ends writethrough-until-flush, as in librbd.
    pub(crate) async fn flush(&self, hold: bool, user: bool) -> RbdResult<()> {
        let target = {
            let mut st = self.lock();
            st.flushed |= user;
            st.next_seq
        };
        let _right = if hold && self.lock().pending_before(target) {
            self.backend.hold().await?
        } else {
            None
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let runs = {
                let mut st = self.lock();
                let runs = st.take_runs(|_, e| e.seq().is_some_and(|s| s < target));
                if runs.is_empty() && !st.pending_before(target) {
                    break;
                }
                runs
            };
            if runs.is_empty() {
                notified.await;
            } else {
                self.write_runs(runs).await?;
            }
        }
        match self.lock().error.take() {
            Some((code, reason)) => Err(RbdError::refused(code, reason)),
            None => Ok(()),
        }
    }

    /// Drops every clean extent (another client may change the image next, or the image's
    /// data changed under the cache: resize, rollback). Dirty data stays.
    pub(crate) fn invalidate(&self) {
        let mut st = self.lock();
        let clean: Vec<u64> =
            st.map.iter().filter(|(_, e)| !e.unclean()).map(|(&k, _)| k).collect();
        for k in clean {
            if let Some(ext) = st.map.remove(&k) {
                st.account(&ext, false);
            }
        }
        st.generation += 1;
        st.readahead_end = 0;
    }

    /// Starts a cluster operation on `[off, off + len)` that bypasses the cache (the caller
    /// holds the right to write): waits for overlapping operations, writes back the dirty
    /// bytes it overlaps, drops the clean ones, and registers the range in flight until the
    /// returned guard ends.
    pub(crate) async fn begin_direct(&self, off: u64, len: u64) -> RbdResult<Direct<'_>> {
        let end = off + len.max(1);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let runs = {
                let mut st = self.lock();
                if st.overlaps_in_flight(off, end) {
                    Vec::new()
                } else {
                    let keys = st.keys_overlapping(off, end);
                    let runs = st.runs_of(keys);
                    if runs.is_empty() {
                        st.cut(off, end);
                        st.generation += 1;
                        let seq = st.next_seq;
                        st.next_seq += 1;
                        let id = st.next_id;
                        st.next_id += 1;
                        st.in_flight.insert(off, InFlight { id, end, min_seq: seq });
                        return Ok(Direct { cache: self, id, off, done: false });
                    }
                    runs
                }
            };
            if runs.is_empty() {
                notified.await;
            } else {
                self.write_runs(runs).await?;
            }
        }
    }

    /// Reads `[off, off + len)` (already cut at the image's end): cached bytes, the cluster
    /// for the gaps; starts read-ahead after enough sequential reads.
    pub(crate) async fn read(self: &Arc<Self>, off: u64, len: u64) -> RbdResult<Bytes> {
        let end = off + len;
        let (pieces, gaps, generation, readahead) = {
            let mut st = self.lock();
            let (pieces, gaps) = st.lookup(off, end);
            let readahead = self.readahead_after(&mut st, off, len);
            (pieces, gaps, st.generation, readahead)
        };
        if let Some((ra_off, ra_len)) = readahead {
            let cache = self.clone();
            tokio::spawn(async move { cache.read_ahead(ra_off, ra_len).await });
        }
        let mut fetched = Vec::with_capacity(gaps.len());
        for &(g, glen) in &gaps {
            fetched.push((g, self.backend.read(g, glen).await?));
        }
        let parts = pieces.iter().chain(fetched.iter()).map(|(at, data)| (at - off, data.clone()));
        let buffer = assemble(len, parts.collect());
        // A large read (an export, a copy) would only push everything else out.
        if !fetched.is_empty() && len <= self.cfg.size / 4 && self.backend.may_fill() {
            let mut st = self.lock();
            if st.generation == generation {
                for (at, data) in &fetched {
                    st.fill_clean(*at, data, false);
                }
                st.evict(self.cfg.size);
            }
        }
        Ok(buffer)
    }

    /// Tracks sequential reads; the range to read ahead, if it is time.
    fn readahead_after(&self, st: &mut Inner, off: u64, len: u64) -> Option<(u64, u64)> {
        let end = off + len;
        st.sequential = if off == st.last_read_end { st.sequential + 1 } else { 0 };
        st.last_read_end = end;
        st.read_bytes = st.read_bytes.saturating_add(len);
        let cfg = &self.cfg;
        let disabled = cfg.readahead_disable_after_bytes > 0
            && st.read_bytes > cfg.readahead_disable_after_bytes;
        if cfg.readahead_max_bytes == 0
            || disabled
            || st.sequential < cfg.readahead_trigger_requests
            || end + cfg.readahead_max_bytes / 2 < st.readahead_end
        {
            return None;
        }
        let start = end.max(st.readahead_end);
        let ra_len = cfg.readahead_max_bytes.min(cfg.size / 4);
        st.readahead_end = start + ra_len;
        (ra_len > 0).then_some((start, ra_len))
    }

    async fn read_ahead(&self, off: u64, len: u64) {
        let generation = self.lock().generation;
        // Past the end (EINVAL) or a failure: read-ahead is only a hint.
        let Ok(data) = self.backend.read(off, len).await else { return };
        if !self.backend.may_fill() {
            return;
        }
        let mut st = self.lock();
        if st.generation == generation && !data.is_empty() {
            st.fill_clean(off, &data, false);
            st.evict(self.cfg.size);
        }
    }

    /// Starts the background writeback (writeback mode only); it stops when the cache goes.
    pub(crate) fn start_flusher(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if self.cfg.mode() != CacheMode::Writeback {
            return None;
        }
        let weak: Weak<Cache> = Arc::downgrade(self);
        let kick = self.kick.clone();
        let tick = (self.cfg.max_dirty_age / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(250));
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = kick.notified() => {}
                    _ = tokio::time::sleep(tick) => {}
                }
                let Some(cache) = weak.upgrade() else { return };
                if let Err(e) = cache.background_round().await {
                    tracing::debug!(error = %e, "background writeback failed; retrying");
                    drop(cache);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }))
    }

    /// Dirty bytes (not counting those being written back) the background writeback leaves:
    /// the target, less what waiting writers need below the limit.
    fn keep(&self, st: &Inner) -> u64 {
        self.cfg.target_dirty.min(self.cfg.max_dirty.saturating_sub(st.wanted))
    }

    /// Starts one round of background writeback: the oldest dirty extents down to the target
    /// (and below what waiting writers need), each with the dirty extents adjacent to it in
    /// its stripe unit (so a sequential writer's objects go whole, one write each), and every
    /// extent older than the maximum age. The round writes in a task of its own: up to
    /// [`ROUNDS_IN_FLIGHT`] rounds write at once, a new one taking only extents no earlier
    /// one took. After a failed writeback no round starts for [`RETRY_AFTER`].
    async fn background_round(self: &Arc<Self>) -> RbdResult<()> {
        // With `others` rounds writing, a new one starts only after a write filled a whole
        // stripe unit (a sequential writer's finished object): scattered small writes wait
        // for the round in flight and meanwhile gather into fewer, larger object writes
        // (rounds overlapping for them sent 9 KiB per object write instead of 17 and lost a
        // quarter of the rate of 4 KiB random writes at 32 threads). Every writer over the
        // target kicks the writeback, so the answer to most kicks must not scan the cache.
        // `take`: this look decides (the second one, under the permit): a round that starts
        // consumes the filled-unit hint.
        let needed = |st: &mut Inner, now: Instant, others: bool, take: bool| {
            if st.retry_at.is_some_and(|at| now < at) {
                return false;
            }
            let keep = self.keep(st);
            let dirty = st.unclean - st.writing;
            if others {
                let go = st.unit_filled && dirty > keep;
                if go && take {
                    st.unit_filled = false;
                }
                return go;
            }
            let max_age = self.cfg.max_dirty_age;
            dirty > keep
                || st.map.values().any(
                    |e| matches!(e.state, State::Dirty { since, .. } if now - since >= max_age),
                )
        };
        let others = |own: usize| self.rounds.available_permits() + own < ROUNDS_IN_FLIGHT;
        if !needed(&mut self.lock(), Instant::now(), others(0), false) {
            return Ok(());
        }
        let permit = self.rounds.clone().acquire_owned().await.expect("the semaphore stays open");
        let right = self.backend.hold().await?;
        let runs = {
            let mut st = self.lock();
            let now = Instant::now();
            if !needed(&mut st, now, others(1), true) {
                return Ok(());
            }
            let keep = self.keep(&st);
            st.take_oldest(keep, now, self.cfg.max_dirty_age)
        };
        if runs.is_empty() {
            return Ok(());
        }
        let cache = self.clone();
        tokio::spawn(async move {
            let result = cache.write_runs(runs).await;
            drop((permit, right));
            if let Err(e) = result {
                tracing::debug!(error = %e, "background writeback failed; retrying");
            }
            // What waited for this round (partial objects, writers at the limit) goes next.
            cache.kick.notify_one();
        });
        Ok(())
    }

    /// Dirty and writing bytes (tests and `rbd status`-like reporting).
    #[cfg(test)]
    fn unclean(&self) -> u64 {
        self.lock().unclean
    }
}

/// A direct (cache-bypassing) operation in flight; ends when dropped or finished.
pub(crate) struct Direct<'a> {
    cache: &'a Cache,
    id: u64,
    off: u64,
    done: bool,
}

impl Direct<'_> {
    /// Ends the operation; `written` are the bytes it wrote at its offset (cached as clean
    /// when they fit).
    pub(crate) fn finish(mut self, written: Option<&Bytes>) {
        self.end(written);
    }

    fn end(&mut self, written: Option<&Bytes>) {
        if self.done {
            return;
        }
        self.done = true;
        let cache = self.cache;
        let mut st = cache.lock();
        st.end_in_flight(self.id, self.off);
        st.generation += 1;
        if let Some(data) = written.filter(|d| (d.len() as u64) <= cache.cfg.size / 4) {
            st.fill_clean(self.off, data, true);
            st.evict(cache.cfg.size);
        }
        drop(st);
        cache.changed.notify_waiters();
    }
}

impl Drop for Direct<'_> {
    fn drop(&mut self) {
        self.end(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory image under the cache, recording the order of writes.
    struct Memory {
        data: Mutex<Vec<u8>>,
    }

    impl Backend for Memory {
        fn hold(&self) -> BoxFut<'_, RbdResult<WriteRight>> {
            Box::pin(async { Ok(None) })
        }
        fn write(&self, writes: Vec<(u64, Bytes)>) -> BoxFut<'_, RbdResult<()>> {
            Box::pin(async move {
                tokio::task::yield_now().await;
                let mut d = self.data.lock().unwrap();
                for (off, data) in writes {
                    d[off as usize..off as usize + data.len()].copy_from_slice(&data);
                }
                Ok(())
            })
        }
        fn read(&self, off: u64, len: u64) -> BoxFut<'_, RbdResult<Bytes>> {
            Box::pin(async move {
                let d = self.data.lock().unwrap();
                let end = (off + len).min(d.len() as u64);
                Ok(Bytes::copy_from_slice(&d[off as usize..end as usize]))
            })
        }
        fn may_fill(&self) -> bool {
            true
        }
    }

    /// Like [`Memory`], but a write whose first byte is 1 takes 200 ms (an older writeback
    /// still in flight when a newer one of the same bytes could be sent).
    struct SlowOnes(Memory);

    impl Backend for SlowOnes {
        fn hold(&self) -> BoxFut<'_, RbdResult<WriteRight>> {
            self.0.hold()
        }
        fn write(&self, writes: Vec<(u64, Bytes)>) -> BoxFut<'_, RbdResult<()>> {
            Box::pin(async move {
                if writes.iter().any(|(_, data)| data.first() == Some(&1)) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                self.0.write(writes).await
            })
        }
        fn read(&self, off: u64, len: u64) -> BoxFut<'_, RbdResult<Bytes>> {
            self.0.read(off, len)
        }
        fn may_fill(&self) -> bool {
            true
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_writes_are_written_back_in_order() {
        let mem = Arc::new(SlowOnes(Memory { data: Mutex::new(vec![0; 1 << 16]) }));
        let cache = Cache::new(config(), mem.clone(), 1 << 22).unwrap();
        cache.buffer(0, Bytes::from(vec![1u8; 4096])).await;
        let first = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.flush(true, true).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await; // the slow writeback is in flight
        cache.buffer(1024, Bytes::from(vec![2u8; 1024])).await;
        cache.flush(true, true).await.unwrap();
        first.await.unwrap().unwrap();
        let want: Vec<u8> = [vec![1u8; 1024], vec![2u8; 1024], vec![1u8; 2048]].concat();
        assert_eq!(&mem.0.data.lock().unwrap()[..4096], &want[..], "the newer write landed last");
        assert_eq!(&cache.read(0, 4096).await.unwrap()[..], &want[..]);
        // The newer write cut the extent being written back: the counters still add up.
        assert_eq!((cache.unclean(), cache.lock().writing), (0, 0));
    }

    /// Like [`Memory`], counting reads.
    struct Counting(Memory, std::sync::atomic::AtomicU64);

    impl Backend for Counting {
        fn hold(&self) -> BoxFut<'_, RbdResult<WriteRight>> {
            self.0.hold()
        }
        fn write(&self, writes: Vec<(u64, Bytes)>) -> BoxFut<'_, RbdResult<()>> {
            self.0.write(writes)
        }
        fn read(&self, off: u64, len: u64) -> BoxFut<'_, RbdResult<Bytes>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.read(off, len)
        }
        fn may_fill(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn sequential_reads_trigger_read_ahead_until_the_limit() {
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mem = Arc::new(Counting(Memory { data: Mutex::new(data.clone()) }, 0.into()));
        let cfg = CacheConfig {
            readahead_trigger_requests: 2,
            readahead_max_bytes: 16 << 10,
            readahead_disable_after_bytes: 64 << 10,
            ..config()
        };
        let cache = Cache::new(cfg, mem.clone(), 1 << 22).unwrap();
        let reads = || mem.1.load(std::sync::atomic::Ordering::SeqCst);
        let mut at = 0u64;
        // Three sequential 4 KiB reads: the third starts read-ahead of 16 KiB.
        for _ in 0..3 {
            assert_eq!(&cache.read(at, 4096).await.unwrap()[..], &data[at as usize..][..4096]);
            at += 4096;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = reads();
        assert_eq!(before, 4, "three reads and one read-ahead");
        for _ in 0..4 {
            assert_eq!(&cache.read(at, 4096).await.unwrap()[..], &data[at as usize..][..4096]);
            at += 4096;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Served from the read-ahead (the next windows are fetched as the reader goes).
        assert!(reads() <= before + 2, "{} reads", reads());
        // Past rbd_readahead_disable_after_bytes every read goes to the backend again.
        while at < 128 << 10 {
            cache.read(at, 4096).await.unwrap();
            at += 4096;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = reads();
        for _ in 0..4 {
            cache.read(at, 4096).await.unwrap();
            at += 4096;
        }
        assert_eq!(reads(), before + 4, "read-ahead stopped");
    }

    fn config() -> CacheConfig {
        CacheConfig {
            size: 64 << 10,
            max_dirty: 32 << 10,
            target_dirty: 16 << 10,
            writethrough_until_flush: false,
            ..CacheConfig::default()
        }
    }

    #[tokio::test]
    async fn buffered_writes_read_back_and_flush_writes_them() {
        let mem = Arc::new(Memory { data: Mutex::new(vec![0; 1 << 20]) });
        let cache = Cache::new(config(), mem.clone(), 1 << 22).unwrap();
        cache.buffer(10, Bytes::from_static(b"hello")).await;
        cache.buffer(12, Bytes::from_static(b"LL")).await;
        assert_eq!(&cache.read(8, 10).await.unwrap()[..], b"\0\0heLLo\0\0\0");
        assert_eq!(&mem.data.lock().unwrap()[10..15], b"\0\0\0\0\0");
        cache.flush(true, true).await.unwrap();
        assert_eq!(&mem.data.lock().unwrap()[10..15], b"heLLo");
        assert_eq!((cache.unclean(), cache.lock().writing), (0, 0));
    }

    #[tokio::test]
    async fn memory_stays_bounded() {
        let mem = Arc::new(Memory { data: Mutex::new(vec![0; 1 << 20]) });
        let cache = Cache::new(config(), mem.clone(), 1 << 22).unwrap();
        let flusher = cache.start_flusher().unwrap();
        for i in 0..200u64 {
            cache.buffer(i * 4096 % (1 << 20), Bytes::from(vec![i as u8; 4096])).await;
            let _ = cache.read((i * 7919 * 512) % (1 << 20), 4096).await.unwrap();
            let st = cache.lock();
            assert!(st.unclean <= 32 << 10, "dirty {}", st.unclean);
            assert!(st.writing <= st.unclean, "writing {} of {}", st.writing, st.unclean);
            assert!(st.total <= 64 << 10, "total {}", st.total);
        }
        cache.flush(true, true).await.unwrap();
        flusher.abort();
        assert_eq!((cache.unclean(), cache.lock().writing), (0, 0));
    }

    /// Like [`Memory`], each write taking 5 ms and recorded: its pieces, and how many writes
    /// were in flight at once.
    struct Recording {
        mem: Memory,
        writes: Mutex<Vec<Vec<(u64, u64)>>>,
        now: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    impl Backend for Recording {
        fn hold(&self) -> BoxFut<'_, RbdResult<WriteRight>> {
            self.mem.hold()
        }
        fn write(&self, writes: Vec<(u64, Bytes)>) -> BoxFut<'_, RbdResult<()>> {
            use std::sync::atomic::Ordering::SeqCst;
            Box::pin(async move {
                let now = self.now.fetch_add(1, SeqCst) + 1;
                self.most.fetch_max(now, SeqCst);
                self.writes
                    .lock()
                    .unwrap()
                    .push(writes.iter().map(|(off, d)| (*off, d.len() as u64)).collect());
                tokio::time::sleep(Duration::from_millis(5)).await;
                self.now.fetch_sub(1, SeqCst);
                self.mem.write(writes).await
            })
        }
        fn read(&self, off: u64, len: u64) -> BoxFut<'_, RbdResult<Bytes>> {
            self.mem.read(off, len)
        }
        fn may_fill(&self) -> bool {
            true
        }
    }

    /// A sequential writer (16 KiB writes, objects of 64 KiB, a dirty limit of 8 objects):
    /// the background writeback sends whole objects, each write within one object, several at
    /// once, and everything lands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequential_writeback_sends_whole_objects_several_at_once() {
        use std::sync::atomic::Ordering::SeqCst;
        const UNIT: u64 = 64 << 10;
        let backend = Arc::new(Recording {
            mem: Memory { data: Mutex::new(vec![0; 4 << 20]) },
            writes: Mutex::new(Vec::new()),
            now: 0.into(),
            most: 0.into(),
        });
        let cfg = CacheConfig {
            size: 1 << 20,
            max_dirty: 8 * UNIT,
            target_dirty: 4 * UNIT,
            writethrough_until_flush: false,
            ..CacheConfig::default()
        };
        let cache = Cache::new(cfg, backend.clone(), UNIT).unwrap();
        let flusher = cache.start_flusher().unwrap();
        let piece = |i: u64| Bytes::from(vec![(i % 251) as u8 + 1; 16 << 10]);
        // Starts 8 KiB into the first object: writes straddle object boundaries.
        let first = 8 << 10;
        for i in 0..200u64 {
            cache.buffer(first + i * (16 << 10), piece(i)).await;
        }
        cache.flush(true, true).await.unwrap();
        flusher.abort();
        assert_eq!((cache.unclean(), cache.lock().writing), (0, 0));
        let data = backend.mem.data.lock().unwrap();
        for i in 0..200u64 {
            let at = (first + i * (16 << 10)) as usize;
            assert_eq!(&data[at..at + (16 << 10)], &piece(i)[..], "write {i}");
        }
        let writes = backend.writes.lock().unwrap();
        let mut whole = 0;
        for pieces in writes.iter() {
            let unit = pieces[0].0 / UNIT;
            for &(off, len) in pieces {
                assert_eq!((off / UNIT, (off + len - 1) / UNIT), (unit, unit), "{pieces:?}");
            }
            if pieces == &[(unit * UNIT, UNIT)] {
                whole += 1;
            }
        }
        // 3.1 MiB in 50 objects: all but the first, the last and a few around flushes whole.
        assert!(whole >= 40, "{whole} whole-object writes of {}: {writes:?}", writes.len());
        assert!(backend.most.load(SeqCst) >= 2, "one writeback at a time");
    }

    #[test]
    fn settings_parse_like_ceph() {
        let mut cfg = CacheConfig::default();
        cfg.set("rbd cache size", "64M").unwrap();
        cfg.set("rbd_cache_max_dirty", "0").unwrap();
        assert_eq!((cfg.size, cfg.mode()), (64 << 20, CacheMode::Writethrough));
        cfg.apply_args(&["--id".into(), "x".into(), "--rbd_cache=false".into()]).unwrap();
        assert_eq!(cfg.mode(), CacheMode::None);
        cfg.apply_args(&["--rbd-cache".into(), "true".into()]).unwrap();
        assert!(cfg.enabled);
        let args: Vec<String> =
            ["--id", "x", "--rbd_cache=false", "--rbd-cache-size", "1M", "-p", "rbd"]
                .map(String::from)
                .to_vec();
        assert_eq!(CacheConfig::strip_args(&args), ["--id", "x", "-p", "rbd"]);
        assert_eq!(cfg.set("rbd_cache", "maybe").unwrap_err().errno(), ErrorCode::EINVAL);
        assert_eq!(cfg.set("rbd_cache_sizes", "1").unwrap_err().errno(), ErrorCode::ENOENT);
        cfg.set("rbd_cache_max_dirty_age", "0.5").unwrap();
        assert_eq!(cfg.max_dirty_age, Duration::from_millis(500));
        let conf = Conf::parse(
            "[global]\nrbd cache = false\n[client]\nrbd_cache_writethrough_until_flush = false\n",
        )
        .unwrap();
        let cfg = CacheConfig::from_conf(&conf, &EntityName::client("admin")).unwrap();
        assert!(!cfg.enabled && !cfg.writethrough_until_flush);
        let bad = Conf::parse("[client]\nrbd_cache_size = lots\n").unwrap();
        assert!(CacheConfig::from_conf(&bad, &EntityName::client("admin")).is_err());
    }
}
