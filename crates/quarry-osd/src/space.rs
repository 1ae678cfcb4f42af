//! Disk space: what the OSD reports to the monitor and the check that refuses writes on a
//! full disk before they reach the log.
//!
//! The report ([`Space::reported`]) is what the OSD stores (its data directory's blocks;
//! object data apart), with the file system's free space as what it may still use, until
//! the file system passes the nearfull ratio: from then on the file system's figures, so the
//! monitor's full states describe the disk. The write check below always uses the file
//! system's figures.
//!
//! Usage is measured on the file system holding the data directory (`statvfs`), minus the
//! space inside `store.redb` that redb will reuse (allocated on disk, free in the database:
//! deleted objects' pages, once a checkpoint released them). redb never shrinks its file, so
//! without that correction a disk filled once would look full forever; with it, deleting
//! objects brings the reported usage down within a checkpoint interval and writes resume.
//! The correction needs a walk of the database (`Store::space`, under redb's write lock:
//! applies wait), so it is refreshed only while the disk is at least nearfull, at most every
//! 20 times the last walk's duration, at least [`REUSABLE_REFRESH`], at most five times it.
//!
//! The write check ([`Space::admit`]), for op vectors that need space
//! (`ObjectOp::vector_needs_space`: not removes, truncates, zeroing, xattr/omap removal,
//! reads), refuses with ENOSPC `(28) No space left on device` when
//! - this OSD's usage is at `mon_osd_full_ratio` (the OSD's own measurement, the figures the
//!   monitor shows as OSD_FULL: it does not wait for the monitor); or
//! - the same figures, counting the write, every admitted write not yet answered and every
//!   write answered since the `statvfs` behind the figures (cached up to
//!   [`STATVFS_TTL`]) as used twice (the WAL's copy and the store's), would reach
//!   `osd_failsafe_full_ratio` (a write-once write, `pg::placer`, takes its store blocks
//!   when its entry is appended, after this check admitted it and before it is answered:
//!   inside the window where it counts, twice where it uses its size once; a placement
//!   that finds no space fails, and its data goes into the log entry instead); or
//! - the file system's own figures (without the reusable store space) are halfway between
//!   the failsafe ratio and 1 (98.5 % by default): the last line should redb not reuse its
//!   free pages as measured (in tests it does, within a checkpoint or two); or
//! - the map says another OSD of the PG's acting set is full (the figures its last beacon
//!   reported, which the monitor serves in the map, judged with the same ratios; the monitor
//!   pushes the map again when an OSD crosses a ratio).
//!
//! Refusing is Quarry's choice where Ceph's clients may wait for space instead: a refused
//! write did nothing (it never reached the log), so ENOSPC is a final, trustworthy answer.
//! Writes already admitted still complete: the margin between the full ratio and a really
//! full disk (5 % by default) is their room, and the WAL keeps its own reserve for starting
//! segments (quarry-raftlog's reserve file).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quarry_store::Store;
use quarry_types::{ErrorCode, FullRatios, FullState, ObjectOp, OsdId, PgId};
use quarry_wire::{ClusterMap, Reply};

/// A `statvfs` result is reused for this long by the write check.
const STATVFS_TTL: Duration = Duration::from_millis(100);
/// The reusable space inside the store is measured at most this often (nearfull only).
pub(crate) const REUSABLE_REFRESH: Duration = Duration::from_secs(2);
/// What a write costs beyond its data (log record, store pages, indexes), for the check.
const WRITE_OVERHEAD: u64 = 64 << 10;

/// Disk figures of one moment: bytes used and available (the reusable store space counted
/// as available).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    pub(crate) used: u64,
    pub(crate) avail: u64,
}

/// The OSD's view of its disk (shared by the op path, the beacon and the checkpoint worker).
pub(crate) struct Space {
    me: OsdId,
    dir: PathBuf,
    store_path: PathBuf,
    /// The thresholds; they change at runtime (`ceph config set osd mon_osd_full_ratio …`,
    /// [`Space::set_ratio`]).
    ratios: std::sync::RwLock<FullRatios>,
    /// Last `statvfs` (used, avail) and when.
    fs: Mutex<Option<(Instant, Figures)>>,
    /// Bytes of admitted writes answered since the last `statvfs` was taken: on the disk,
    /// but maybe not in the cached figures. (Without it, a burst of fast writes answered
    /// within one cache period was counted nowhere: 1 MiB puts every 20 ms hid ~10 MiB
    /// and the store ran out of space under an admitted write, stopping its PG.)
    answered: Arc<AtomicU64>,
    /// Bytes of `store.redb` on disk that redb will reuse (last measurement).
    reusable: AtomicU64,
    /// When `reusable` may be measured again.
    reusable_at: Mutex<Option<Instant>>,
    /// Data bytes of admitted writes not answered yet.
    inflight: Arc<AtomicU64>,
    /// Test-only: refuse nothing (shows that the full-disk tests fail without the check).
    disabled: bool,
}

/// An admitted write's share of [`Space`]'s in-flight bytes, moved to the answered bytes
/// when dropped (the write's bytes are on the disk then, or it failed: counting them until
/// the next `statvfs` errs on the safe side).
pub(crate) struct Admitted {
    bytes: u64,
    inflight: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // Answered first: for a moment the bytes count twice rather than nowhere.
        self.answered.fetch_add(self.bytes, Ordering::Relaxed);
        self.inflight.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Space {
    /// The OSD's data directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn new(me: OsdId, dir: &Path, store_path: PathBuf, ratios: FullRatios) -> Space {
        Space {
            me,
            dir: dir.to_path_buf(),
            store_path,
            ratios: std::sync::RwLock::new(ratios),
            fs: Mutex::new(None),
            answered: Arc::new(AtomicU64::new(0)),
            reusable: AtomicU64::new(0),
            reusable_at: Mutex::new(None),
            inflight: Arc::new(AtomicU64::new(0)),
            disabled: std::env::var_os("QUARRY_TEST_DISABLE_FULL_CHECK").is_some(),
        }
    }

    /// What the OSD reports to the monitor (`ceph df`, `osd df`, `-s`, and the full states
    /// of `ceph health`), and the object data bytes among them:
    /// - below the nearfull ratio of its file system: what the OSD stores, as Ceph's OSDs
    ///   report their store's figures: used = the blocks its data directory's files hold
    ///   (object data file, metadata database, WAL, less the database pages redb will reuse),
    ///   available = the file system's free space (the capacity a file-backed OSD may
    ///   grow into);
    /// - from the nearfull ratio on: the file system's figures ([`Space::figures`]), so the
    ///   health warnings and the replicas' write checks see the disk's real state even when
    ///   other files fill it;
    /// - past the last line: the file system's own figures (then writes are refused
    ///   whatever the corrected figures say, and `ceph health` must show it as OSD_FULL).
    ///
    /// Blocking (it walks the data directory): call off the runtime.
    pub(crate) fn reported(&self) -> (Figures, u64) {
        let (all, data) = self.own_bytes();
        let raw = self.raw();
        if quarry_types::usage_ratio(raw.used, raw.avail).unwrap_or(0.0) >= self.last_line() {
            return (raw, data.min(raw.used));
        }
        let fs = self.figures();
        if self.ratios().state(fs.used, fs.avail) != FullState::None {
            return (fs, data.min(fs.used));
        }
        let reusable = self.reusable.load(Ordering::Relaxed);
        let used = all.saturating_sub(reusable).min(fs.used);
        (Figures { used, avail: fs.avail }, data.min(used))
    }

    /// Bytes the OSD's files hold on disk: everything under its data directory, and of
    /// that the store's object data file.
    fn own_bytes(&self) -> (u64, u64) {
        let data = allocated(&self.store_path.with_extension("data"));
        (tree_allocated(&self.dir, 0), data)
    }

    /// The thresholds in force.
    pub(crate) fn ratios(&self) -> FullRatios {
        *self.ratios.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets one threshold (`mon_osd_nearfull_ratio`, `mon_osd_full_ratio` or
    /// `osd_failsafe_full_ratio`) to `value`; refused (nothing changes) when it is not in
    /// (0, 1]. Three out of order are accepted with a warning (Ceph's monitor takes them
    /// too and warns; changed one at a time they may pass through disorder).
    pub(crate) fn set_ratio(&self, option: &str, value: f64) -> Result<FullRatios, String> {
        let mut guard = self.ratios.write().unwrap_or_else(|p| p.into_inner());
        let mut next = *guard;
        match option {
            "mon_osd_nearfull_ratio" => next.nearfull = value,
            "mon_osd_full_ratio" => next.full = value,
            "osd_failsafe_full_ratio" => next.failsafe = value,
            other => return Err(format!("{other} is not a full ratio")),
        }
        if !(value > 0.0 && value <= 1.0) {
            return Err("expected a number in (0, 1]".into());
        }
        if let Err(why) = next.validate() {
            tracing::warn!(osd = self.me, reason = %why, "full ratios out of order");
        }
        *guard = next;
        Ok(next)
    }

    /// The raw usage at which every write that needs space stops: halfway between the
    /// failsafe ratio and a full disk.
    fn last_line(&self) -> f64 {
        (1.0 + self.ratios().failsafe) / 2.0
    }

    /// Current figures (a `statvfs` at most [`STATVFS_TTL`] old, corrected by the reusable
    /// store space).
    pub(crate) fn figures(&self) -> Figures {
        self.corrected(self.raw())
    }

    /// The file system's figures `fs` corrected by the reusable store space.
    fn corrected(&self, fs: Figures) -> Figures {
        let reusable = self.reusable.load(Ordering::Relaxed).min(fs.used);
        Figures { used: fs.used - reusable, avail: fs.avail.saturating_add(reusable) }
    }

    /// The file system's own figures (a `statvfs` at most [`STATVFS_TTL`] old).
    fn raw(&self) -> Figures {
        self.raw_and_answered().0
    }

    /// [`Space::raw`], and the bytes of admitted writes answered since that `statvfs` was
    /// taken (the disk holds them; the figures may not show them).
    fn raw_and_answered(&self) -> (Figures, u64) {
        let mut cached = self.fs.lock().unwrap_or_else(|p| p.into_inner());
        let figures = match *cached {
            Some((at, figures)) if at.elapsed() < STATVFS_TTL => figures,
            _ => {
                // Reset before measuring: a write answered in between is counted twice
                // (in the figures and here), never missed.
                self.answered.store(0, Ordering::Relaxed);
                let figures = statvfs(&self.dir);
                *cached = Some((Instant::now(), figures));
                figures
            }
        };
        (figures, self.answered.load(Ordering::Relaxed))
    }

    /// Re-measures the space redb will reuse, if the disk is at least nearfull and the last
    /// measurement is older than [`REUSABLE_REFRESH`] (below nearfull it is forgotten: the
    /// correction matters only near the thresholds). Blocking: call off the runtime.
    pub(crate) fn refresh_reusable(&self, store: &Store) {
        let fs = statvfs(&self.dir);
        if self.ratios().state(fs.used, fs.avail) == FullState::None {
            self.reusable.store(0, Ordering::Relaxed);
            return;
        }
        {
            let next = self.reusable_at.lock().unwrap_or_else(|p| p.into_inner());
            if next.is_some_and(|next| Instant::now() < next) {
                return;
            }
        }
        let started = Instant::now();
        if let Some((reusable, _)) = reusable_bytes(store, &self.store_path) {
            self.reusable.store(reusable, Ordering::Relaxed);
        }
        // The walk holds redb's write lock (applies wait): on a big store, walk rarely.
        let pause = (started.elapsed() * 20).clamp(REUSABLE_REFRESH, REUSABLE_REFRESH * 5);
        *self.reusable_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + pause);
    }

    /// Whether the OSD refuses writes now (full or past its failsafe), from the last
    /// `statvfs` (at most [`STATVFS_TTL`] old): no write is worth starting early then.
    pub(crate) fn refuses_writes(&self) -> bool {
        if self.disabled {
            return false;
        }
        let now = self.corrected(self.raw());
        self.ratios().state(now.used, now.avail).refuses_writes()
    }

    /// The write check (see the module docs): `Ok` with the write's share of the in-flight
    /// bytes (hold it until the write is answered), or the ENOSPC reply.
    pub(crate) fn admit(
        &self,
        map: &ClusterMap,
        pg: PgId,
        ops: &[ObjectOp],
    ) -> Result<Option<Admitted>, Reply> {
        if !ObjectOp::vector_needs_space(ops) || self.disabled {
            return Ok(None);
        }
        let bytes = ops.iter().map(ObjectOp::data_bytes).sum::<u64>() + WRITE_OVERHEAD;
        let inflight = self.inflight.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let admitted =
            Admitted { bytes, inflight: self.inflight.clone(), answered: self.answered.clone() };
        let (raw, answered) = self.raw_and_answered();
        let now = self.corrected(raw);
        // Admitted writes not answered yet (this one included) and those answered since the
        // figures were measured count as used, twice (the WAL's copy and the store's): a
        // burst cannot pass the failsafe between two measurements.
        let pending = inflight.saturating_add(answered);
        let after = |now: Figures| {
            let coming = pending.saturating_mul(2).min(now.avail);
            self.ratios().state(now.used + coming, now.avail - coming)
        };
        let percent = |now: Figures| quarry_types::usage_ratio(now.used, now.avail).unwrap_or(0.0);
        if self.ratios().state(now.used, now.avail).refuses_writes() {
            return Err(no_space(format!(
                "osd.{} is full ({:.1}% used, mon_osd_full_ratio {})",
                self.me,
                percent(now) * 100.0,
                self.ratios().full
            )));
        }
        if after(now) == FullState::Failsafe {
            return Err(no_space(format!(
                "osd.{} would pass its failsafe ratio ({:.1}% used, osd_failsafe_full_ratio {})",
                self.me,
                percent(now) * 100.0,
                self.ratios().failsafe
            )));
        }
        // The last line, on the file system's own figures: should redb not reuse its free
        // pages after all, the disk stops halfway between the failsafe ratio and full.
        let last_line = self.last_line();
        if percent(raw) >= last_line {
            return Err(no_space(format!(
                "osd.{}'s disk is {:.1}% used (stop at {:.1}%)",
                self.me,
                percent(raw) * 100.0,
                last_line * 100.0
            )));
        }
        for id in map.acting(pg).iter().filter(|&&id| id != self.me) {
            let Some(osd) = map.osds.get(id) else { continue };
            if self.ratios().state(osd.used_bytes, osd.avail_bytes).refuses_writes() {
                return Err(no_space(format!("osd.{id} (a replica of pg {pg}) is full")));
            }
        }
        Ok(Some(admitted))
    }
}

/// Deepest directory level [`tree_allocated`] walks (the data directory's layout is
/// `wal/`, `snapshots/`, files: two levels are all there is).
const TREE_DEPTH_MAX: u32 = 3;

/// Blocks a file holds on disk, in bytes (0 if it cannot be read).
fn allocated(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).map(|m| m.blocks().saturating_mul(512)).unwrap_or(0)
}

/// Blocks the regular files under `dir` hold, in bytes (symbolic links not followed; at
/// most [`TREE_DEPTH_MAX`] levels).
fn tree_allocated(dir: &Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut total: u64 = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() && depth < TREE_DEPTH_MAX {
            total = total.saturating_add(tree_allocated(&entry.path(), depth + 1));
        } else if meta.is_file() {
            total = total.saturating_add(meta.blocks().saturating_mul(512));
        }
    }
    total
}

/// Bytes of the store file on disk that redb will reuse, and the bytes on disk (None if
/// unknown). Only what is on the disk counts: a sparse tail is no space to give back.
pub(crate) fn reusable_bytes(store: &Store, path: &Path) -> Option<(u64, u64)> {
    match (store.space(), std::fs::metadata(path)) {
        (Ok(space), Ok(meta)) => {
            let on_disk = meta.blocks().saturating_mul(512).min(space.file_bytes);
            let reusable = on_disk.saturating_sub(space.allocated_bytes);
            tracing::debug!(
                reusable,
                allocated = space.allocated_bytes,
                on_disk,
                "store space measured"
            );
            Some((reusable, on_disk))
        }
        (Err(e), _) => {
            tracing::debug!(error = %e, "cannot measure the store's free pages");
            None
        }
        (_, Err(e)) => {
            tracing::debug!(error = %e, "cannot stat the store file");
            None
        }
    }
}

/// At open, on a disk at least nearfull: gives the store's free pages back to the file
/// system when they are a tenth of the file or more (redb never shrinks its file on its own;
/// compaction needs the store to itself, which only start-up has). On failure the store is
/// reopened (redb refuses further work after an I/O error) and starts uncompacted.
pub(crate) fn compact_at_open(
    store: Store,
    path: &Path,
    dir: &Path,
    ratios: &FullRatios,
    reopen: impl FnOnce() -> Result<Store, quarry_store::StoreError>,
) -> Result<Store, quarry_store::StoreError> {
    let fs = statvfs(dir);
    if ratios.state(fs.used, fs.avail) == FullState::None {
        return Ok(store);
    }
    let Some((reusable, on_disk)) = reusable_bytes(&store, path) else { return Ok(store) };
    if reusable < (on_disk / 10).max(1 << 20) {
        return Ok(store);
    }
    let mut store = store;
    let started = Instant::now();
    match store.compact() {
        Ok(_) => {
            let after = std::fs::metadata(path).map_or(0, |m| m.blocks() * 512);
            tracing::info!(before = on_disk, after, took = ?started.elapsed(),
                "store compacted at start: the disk is nearly full");
            Ok(store)
        }
        Err(e) => {
            tracing::warn!(error = %e, "store compaction at start failed; reopening uncompacted");
            drop(store);
            reopen()
        }
    }
}

fn no_space(message: String) -> Reply {
    tracing::debug!(%message, "write refused: no space");
    Reply::Failed { code: ErrorCode::ENOSPC, message }
}

/// Bytes used and available on the file system holding `dir` (0, 0 if unknown).
pub(crate) fn statvfs(dir: &Path) -> Figures {
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            let used = st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(st.f_frsize);
            Figures { used, avail: st.f_bavail.saturating_mul(st.f_frsize) }
        }
        Err(e) => {
            tracing::debug!(error = %e, "statvfs failed");
            Figures::default()
        }
    }
}

/// Total bytes of the file system holding `dir` (0 if unknown).
pub(crate) fn fs_total(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir).map_or(0, |st| st.f_blocks.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quarry_testkit::fixtures::MapBuilder;
    use quarry_types::Payload;

    fn write() -> Vec<ObjectOp> {
        vec![ObjectOp::WriteFull { data: Payload::new(Bytes::from_static(b"x")) }]
    }

    /// Goal: the write check refuses what needs space on a full OSD (its own figures, without
    /// the monitor) and lets removes, truncates and reads through; a replica the map shows
    /// full refuses its PG's writes too. Method: ratios so low that the test machine's disk
    /// counts as full (any used byte), then defaults with figures in the map.
    #[test]
    fn full_refuses_what_needs_space_only() {
        let dir = tempfile::tempdir().unwrap();
        let tiny = FullRatios { nearfull: 1e-9, full: 1e-9, failsafe: 1e-9 };
        let space = Space::new(0, dir.path(), dir.path().join("store.redb"), tiny);
        let map = MapBuilder::new().osds(0..2).pool(1, "rbd", 1, 2).build();
        let pg = PgId { pool: 1, seed: 0 };
        let Err(Reply::Failed { code, message }) = space.admit(&map, pg, &write()) else {
            panic!("a write on a full disk was admitted");
        };
        assert_eq!(code, ErrorCode::ENOSPC);
        assert!(message.contains("osd.0 is full"), "{message}");
        for ops in [vec![ObjectOp::Remove], vec![ObjectOp::Truncate { size: 0 }], vec![]] {
            assert!(space.admit(&map, pg, &ops).unwrap().is_none(), "{ops:?} refused");
        }
        assert_eq!(space.inflight.load(Ordering::Relaxed), 0, "a refusal kept its share");

        // Room on our disk, a replica reported full in the map.
        let space = Space::new(0, dir.path(), dir.path().join("store.redb"), FullRatios::default());
        let fs = statvfs(dir.path());
        if FullRatios::default().state(fs.used, fs.avail) != FullState::None {
            eprintln!("SKIPPED the replica half: the test machine's disk is nearly full");
            return;
        }
        let mut map = map;
        let acting = map.acting(pg).to_vec();
        let replica = *acting.iter().find(|&&id| id != 0).expect("a replica");
        let primary_first: Vec<OsdId> = std::iter::once(0).chain([replica]).collect();
        map.pools.get_mut(&1).unwrap().acting[0] = primary_first;
        let held = space.admit(&map, pg, &write()).unwrap().expect("admitted");
        assert!(space.inflight.load(Ordering::Relaxed) > 0);
        drop(held);
        assert_eq!(space.inflight.load(Ordering::Relaxed), 0);
        let osd = map.osds.get_mut(&replica).unwrap();
        (osd.used_bytes, osd.avail_bytes) = (96 << 20, 4 << 20);
        let Err(Reply::Failed { code, message }) = space.admit(&map, pg, &write()) else {
            panic!("a write to a pg with a full replica was admitted");
        };
        assert_eq!(code, ErrorCode::ENOSPC);
        assert!(
            message.contains(&format!("osd.{replica} (a replica of pg 1.0) is full")),
            "{message}"
        );
    }
    /// Goal: writes answered since the cached `statvfs` still count until the next one (they
    /// are on the disk, the figures may not show them): a burst of fast writes cannot pass
    /// the failsafe ratio inside one cache period. Method: a fixed sample (200 MiB disk, half
    /// used, never refreshed during the test) and failsafe at 65%: four 4 MiB writes answered
    /// one after the other (each counted twice) reach it at the fourth. Teeth: forgetting
    /// answered writes (the code before) admits all four.
    #[test]
    fn writes_answered_since_the_sample_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let ratios = FullRatios { nearfull: 0.6, full: 0.64, failsafe: 0.65 };
        let space = Space::new(0, dir.path(), dir.path().join("store.redb"), ratios);
        let half = Figures { used: 100 << 20, avail: 100 << 20 };
        let later = Instant::now() + Duration::from_secs(3600);
        *space.fs.lock().unwrap() = Some((later, half));
        let map = MapBuilder::new().osds(0..1).pool(1, "rbd", 1, 1).build();
        let pg = PgId { pool: 1, seed: 0 };
        let big = || {
            let data = Payload::new(Bytes::from(vec![7u8; 4 << 20]));
            vec![ObjectOp::WriteFull { data }]
        };
        for i in 0..3 {
            let answered = space.admit(&map, pg, &big()).unwrap_or_else(|_| panic!("write {i}"));
            drop(answered);
        }
        let Err(Reply::Failed { code, message }) = space.admit(&map, pg, &big()) else {
            panic!("12 MiB answered inside one statvfs period were forgotten");
        };
        assert_eq!(code, ErrorCode::ENOSPC);
        assert!(message.contains("would pass its failsafe ratio"), "{message}");
        assert_eq!(space.inflight.load(Ordering::Relaxed), 0, "a refusal kept its share");
        // A new measurement (a real statvfs here) includes what was answered: the count
        // starts again from zero.
        *space.fs.lock().unwrap() = None;
        space.raw();
        *space.fs.lock().unwrap() = Some((later, half));
        assert_eq!(space.answered.load(Ordering::Relaxed), 0, "a new sample keeps old answers");
        assert!(space.admit(&map, pg, &big()).unwrap().is_some());
    }
}
