//! The router: the newest cluster map this OSD acts on, and the table of its running PG
//! groups. Applying a map creates a Raft group for every PG whose acting or up set names this
//! OSD (the primary initialises a brand-new group once; an OSD only in the up set starts it
//! uninitialised, as a learner the primary adds: `pg::membership`), and drops the PGs of
//! deleted pools and the PGs this OSD is in neither set of any more (their Raft group, their
//! objects in the store, their records in the WAL). The acting set changes only after the
//! PG's new voters committed (the primary reports, the monitor publishes), so a member that
//! leaves deletes its copy only once the others hold the PG. And only once Raft agrees: a
//! copy whose own group still counts this OSD a voter (a copy found on disk at start, whose
//! group is started to read its configuration; or one cut off while its PG moved) is
//! deleted only when a member answers that a configuration at least as new, committed,
//! leaves this OSD out (`RaftRpc::Committed`); until then it is kept and asked about again
//! every few seconds ([`Router::sweep_kept_copies`]).
//!
//! Maps are applied one at a time, in epoch order; an older map than the current one is
//! ignored. The first map after start is also compared with the PGs the store and the WAL
//! hold, so pools deleted while the OSD was down are dropped then.
//!
//! A PG marked damaged (`pg::repair`) is not started from the map: [`Router::repair`] takes
//! its group out, rebuilds its state machine from a peer's export and starts it again; maps
//! applied meanwhile leave it alone.
//!
//! A group whose Raft core stopped on an error that is not damage (a log write refused for
//! space, a store error while applying) is started again by [`Router::revive`] (driven by
//! `worker::revive`, with a back-off): its WAL state is reloaded from disk
//! (`Wal::reload_group`) and the group starts from the store and the log exactly as after a
//! restart of the OSD, so a full disk stops a PG only while the disk stays full.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::sync::{oneshot, watch};

use quarry_raftlog::Wal;
use quarry_store::Store;
use quarry_types::{OsdId, PgId};
use quarry_wire::ClusterMap;

use crate::pg::apply::ApplyBatcher;
use crate::pg::durability::Durability;
use crate::pg::network::{Peers, PgNetworkFactory, RaftRpc, RaftRpcReply};
use crate::pg::placer::PgPlacer;
use crate::pg::repair::{self, Damage, Exports};
use crate::pg::state_machine::{blocking, PgStateMachine, Signals};
use crate::pg::{group_id, pg_of_group, PgGroup, PgRaft, PgRaftConfig};
use crate::OsdError;

/// Log entries applied since the last snapshot after which openraft checkpoints the store
/// (and may then purge the log behind it). The checkpoint worker also checkpoints by time.
pub(crate) const SNAPSHOT_LOGS: u64 = 2000;
/// How long `shutdown` waits for a PG's state-machine worker to finish its queue.
const STATE_MACHINE_DRAIN: Duration = Duration::from_secs(10);

/// Everything a PG group is built from.
pub(crate) struct GroupDeps {
    pub(crate) me: OsdId,
    pub(crate) addr: SocketAddr,
    pub(crate) store: Arc<Store>,
    /// Applies committed entries of every PG, many PGs per store transaction.
    pub(crate) applier: Arc<ApplyBatcher>,
    pub(crate) wal: Arc<Wal>,
    pub(crate) durability: Arc<Durability>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) snapshot_dir: PathBuf,
    /// Damage marks and repair requests (`pg::repair`).
    pub(crate) damage: Arc<Damage>,
    /// PG exports staged for peers' repairs.
    pub(crate) exports: Exports,
    /// `osd_write_once_min_bytes` (0: off), changed at runtime (`tell::register_write_once`).
    pub(crate) write_once_min: Arc<std::sync::atomic::AtomicU64>,
    /// Large write payloads placed while they arrived (`pg::preplace`).
    pub(crate) preplaced: Arc<crate::pg::preplace::Preplaced>,
    /// Open while a client op is alone (`OpTracker::alone`): a one-voter PG's append writes
    /// its WAL round itself then (`PgPlacer::append_inline`).
    pub(crate) lone_op: crate::pg::apply::InlineGate,
}

/// A committed move of a PG, to report: (acting set before, voters now).
type RemapReport = (Vec<OsdId>, Vec<OsdId>);

/// A running group and the signal that its state machine worker has exited.
struct Slot {
    group: Arc<PgGroup>,
    sm_done: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

/// The map this OSD acts on and its PG groups.
pub(crate) struct Router {
    deps: GroupDeps,
    map: watch::Sender<Arc<ClusterMap>>,
    groups: RwLock<HashMap<PgId, Arc<Slot>>>,
    /// Serialises map application; holds whether the start-up sweep of leftover PGs is done.
    update: tokio::sync::Mutex<bool>,
    /// PGs being rebuilt by [`Router::repair`] (not started from maps meanwhile).
    repairing: std::sync::Mutex<HashSet<PgId>>,
    /// PGs this OSD is moving as their primary (`pg::membership`).
    moving: std::sync::Mutex<HashSet<PgId>>,
    /// Committed moves to report to the monitor: PG -> (acting before, voters now).
    remap_reports: std::sync::Mutex<BTreeMap<PgId, RemapReport>>,
    /// Merges applied by groups this OSD leads, to report (`pg::merge`): target -> source.
    merge_reports: std::sync::Mutex<BTreeMap<PgId, u32>>,
    /// Merge targets whose log must be purged through this applied index (at or past their
    /// `Merge` entry) before their merge is reported (`pg::merge::tend`).
    merge_purges: std::sync::Mutex<BTreeMap<PgId, u64>>,
    /// Bounds the moves this OSD drives at once (`osd_max_backfills`).
    backfills: Arc<tokio::sync::Semaphore>,
    /// `osd_raft_heartbeat_interval` in milliseconds ([`raft_config`]).
    raft_heartbeat_ms: u64,
    /// Woken when a PG applied a split (its children are to be started) or a group started
    /// (its pg_num may need recording): `pg::split::tend` runs at once.
    split_wake: Arc<tokio::sync::Notify>,
}

/// How long a member has to answer whether a stale copy's OSD is still a voter.
const COMMITTED_ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest pause between two attempts to rebuild a damaged PG.
const REPAIR_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The openraft configuration of a PG group with `voters` replicas and a leader heartbeat
/// every `heartbeat_ms` (`osd_raft_heartbeat_interval`).
fn raft_config(voters: usize, heartbeat_ms: u64) -> Result<Arc<Config>, openraft::ConfigError> {
    let config = Config {
        cluster_name: "quarry-pg".into(),
        // openraft 0.9 also gives every AppendEntries call this long; a call that takes
        // longer (the follower's WAL fsync under load) is kept going and waited for by the
        // transport, not resent (`pg::network`), so the interval only sets how fast a dead
        // leader is noticed: elections after 2.5 to 5 silent intervals.
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: heartbeat_ms * 5 / 2,
        election_timeout_max: heartbeat_ms * 5,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_LOGS),
        // With one replica nobody needs the log behind a checkpoint: purge it all, so idle
        // PGs never pin old WAL segments. Replicated PGs keep a tail for lagging followers.
        max_in_snapshot_log_to_keep: if voters <= 1 { 0 } else { 500 },
        // Purge whatever a snapshot covers: a few entries left behind by an idle PG would pin
        // its WAL segment forever. Snapshots are already rate-limited (entries or time).
        purge_batch_size: 1,
        max_payload_entries: 64,
        snapshot_max_chunk_size: 4 << 20,
        // One chunk of a PG export (up to 4 MiB) must reach a new or lagging replica and be
        // imported there; openraft's 200 ms default fails every chunk of a large PG.
        install_snapshot_timeout: 30_000,
        ..Config::default()
    };
    config.validate().map(Arc::new)
}

impl Router {
    pub(crate) fn new(
        deps: GroupDeps,
        map: watch::Sender<Arc<ClusterMap>>,
        max_backfills: usize,
        raft_heartbeat: Duration,
    ) -> Router {
        Router {
            deps,
            map,
            groups: RwLock::new(HashMap::new()),
            update: tokio::sync::Mutex::new(false),
            repairing: std::sync::Mutex::new(HashSet::new()),
            moving: std::sync::Mutex::new(HashSet::new()),
            remap_reports: std::sync::Mutex::new(BTreeMap::new()),
            merge_reports: std::sync::Mutex::new(BTreeMap::new()),
            merge_purges: std::sync::Mutex::new(BTreeMap::new()),
            backfills: Arc::new(tokio::sync::Semaphore::new(max_backfills.max(1))),
            raft_heartbeat_ms: u64::try_from(raft_heartbeat.as_millis()).unwrap_or(1000).max(1),
            split_wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Wakes the split worker (`pg::split::tend`): a write waits for its PG's pg_num to be
    /// recorded.
    pub(crate) fn wake_split_worker(&self) {
        self.split_wake.notify_one();
    }

    /// Resolves when a split was applied or a group started since the last call
    /// (`pg::split::tend` is due).
    pub(crate) async fn split_applied(&self) {
        self.split_wake.notified().await;
    }

    /// Starts the groups of split children hosted here that are not running: a child's state
    /// is created by its parent's split (`pg::split`), so it starts once that is applied.
    pub(crate) async fn start_split_children(&self) {
        let map = self.map();
        let missing: Vec<PgId> = {
            let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
            map.pgs_hosted_by(self.deps.me)
                .into_iter()
                .filter(|pg| !groups.contains_key(pg))
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let _update = self.update.lock().await;
        let map = self.map();
        for pg in missing {
            if self.group(pg).is_some()
                || self.repairing().contains(&pg)
                || self.deps.damage.marks.contains(pg)
                || !map.pgs_hosted_by(self.deps.me).contains(&pg)
            {
                continue;
            }
            if let Err(e) = self.start_group(pg, &map).await {
                tracing::warn!(%pg, error = %e, "split child not started");
            }
        }
    }

    /// Queues the report of a committed move of `pg` (sent by the monitor session).
    pub(crate) fn queue_remap_report(&self, pg: PgId, from: Vec<OsdId>, to: Vec<OsdId>) {
        let mut reports = self.remap_reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.insert(pg, (from, to));
    }

    /// The queued move reports, taken out (the session puts back those it could not send).
    pub(crate) fn take_remap_reports(&self) -> Vec<(PgId, Vec<OsdId>, Vec<OsdId>)> {
        let mut reports = self.remap_reports.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *reports).into_iter().map(|(pg, (f, t))| (pg, f, t)).collect()
    }

    /// PGs this OSD is the acting primary of whose up set differs (to be moved), and that
    /// are not being moved now.
    pub(crate) fn pgs_to_move(&self) -> Vec<PgId> {
        let map = self.map();
        let me = self.deps.me;
        let moving = self.moving.lock().unwrap_or_else(|p| p.into_inner()).clone();
        map.pgs_of_osd(me)
            .into_iter()
            .filter(|pg| map.acting(*pg).first() == Some(&me) && map.is_remapped(*pg))
            .filter(|pg| !moving.contains(pg))
            .collect()
    }

    /// Moves `pg` (`pg::membership::move_pg`) within the `osd_max_backfills` bound; claims
    /// it first so that one PG has one move at a time.
    pub(crate) async fn move_pg(&self, pg: PgId) {
        if !self.moving.lock().unwrap_or_else(|p| p.into_inner()).insert(pg) {
            return;
        }
        if let Ok(_permit) = self.backfills.clone().acquire_owned().await {
            if let Err(e) = crate::pg::membership::move_pg(self, pg).await {
                tracing::info!(%pg, error = %e, "pg move not finished: retrying later");
            }
        }
        self.moving.lock().unwrap_or_else(|p| p.into_inner()).remove(&pg);
    }

    /// Exports staged for peers' repairs.
    pub(crate) fn exports(&self) -> &Exports {
        &self.deps.exports
    }

    /// True if `pg` is marked damaged on this OSD (its repair is pending or running).
    pub(crate) fn is_damaged(&self, pg: PgId) -> bool {
        self.deps.damage.marks.contains(pg)
    }

    /// Marks `pg` damaged and requests its rebuild (a read met damaged data in it).
    pub(crate) async fn report_damage(&self, pg: PgId, detail: String) {
        let damage = self.deps.damage.clone();
        let _ = tokio::task::spawn_blocking(move || damage.report(pg, &detail)).await;
    }

    /// The PGs marked damaged on this OSD.
    pub(crate) fn damaged_pgs(&self) -> Vec<PgId> {
        self.deps.damage.marks.list()
    }

    fn repairing(&self) -> std::sync::MutexGuard<'_, HashSet<PgId>> {
        self.repairing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the repair of `pg`; false if it is being repaired already.
    pub(crate) fn begin_repair(&self, pg: PgId) -> bool {
        self.repairing().insert(pg)
    }

    /// Rebuilds the damaged `pg` (claimed with [`Router::begin_repair`]): fetches a peer's
    /// export, stops its group (if it still runs: a read met the damage), installs the export
    /// (`pg::repair`), retrying until a peer can serve one, and starts the group again. Runs
    /// until done (the repair worker's task is aborted at shutdown).
    pub(crate) async fn repair(&self, pg: PgId) {
        tracing::info!(%pg, "rebuilding the damaged pg from a healthy replica");
        let mut pause = Duration::from_millis(100);
        loop {
            let map = self.map();
            if map.epoch > 0 && !map.pools.contains_key(&pg.pool) {
                // The pool is gone: nothing to repair; drop what is left of the PG.
                let _update = self.update.lock().await;
                if let Err(e) = self.remove_pg(pg).await {
                    tracing::error!(%pg, error = %e, "removing the pg of a deleted pool failed");
                }
                let _ = self.deps.damage.marks.clear(pg);
                self.repairing().remove(&pg);
                return;
            }
            match self.rebuild(pg, &map).await {
                Ok(peer) => {
                    tracing::info!(%pg, peer, "damaged pg rebuilt from a replica's export");
                    break;
                }
                Err(why) => {
                    tracing::info!(%pg, %why, "pg not rebuilt yet: retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(REPAIR_BACKOFF_MAX);
                }
            }
        }
        let _update = self.update.lock().await;
        if let Err(e) = self.deps.damage.marks.clear(pg) {
            tracing::error!(%pg, error = %e, "cannot clear the damage mark (the next start repairs again)");
        }
        let map = self.map();
        let hosted = map.pgs_hosted_by(self.deps.me).contains(&pg);
        let started = if hosted && self.group(pg).is_none() {
            self.start_group(pg, &map).await
        } else {
            Ok(())
        };
        self.repairing().remove(&pg);
        if let Err(e) = started {
            tracing::error!(%pg, error = %e, "pg rebuilt but its group did not start");
        }
    }

    /// One attempt: fetch an export from a peer of the acting set (the primary first) and
    /// install it. Returns the peer that served it.
    async fn rebuild(&self, pg: PgId, map: &ClusterMap) -> Result<OsdId, String> {
        let group = group_id(pg);
        let peers: Vec<OsdId> =
            map.acting(pg).iter().copied().filter(|&osd| osd != self.deps.me).collect();
        if peers.is_empty() {
            return Err("no other replica to repair from".into());
        }
        let mut why = Vec::new();
        for peer in peers {
            let fetched =
                repair::fetch(&self.deps.peers, peer, group, &self.deps.snapshot_dir).await;
            let (meta, file) = match fetched {
                Ok(fetched) => fetched,
                Err(e) => {
                    why.push(e);
                    continue;
                }
            };
            // The group's own log store must be idle before this one touches the log.
            let slot = self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&pg);
            if let Some(slot) = slot {
                stop_slot(pg, &slot).await;
            }
            let mut log = self.deps.wal.log_store::<PgRaftConfig>(group);
            let (store, durability) = (&self.deps.store, &self.deps.durability);
            match repair::install(pg, &mut log, store, durability, meta, file).await {
                Ok(()) => return Ok(peer),
                Err(e) => why.push(format!("osd.{peer}: {e}")),
            }
        }
        Err(why.join("; "))
    }

    /// PGs hosted here whose group stopped on an error (not for damage: the repair handles
    /// those) or is missing (a revive whose start failed), to be revived.
    pub(crate) fn stopped_pgs(&self) -> Vec<PgId> {
        let map = self.map();
        let repairing = self.repairing().clone();
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        map.pgs_hosted_by(self.deps.me)
            .into_iter()
            .filter(|pg| !repairing.contains(pg) && !self.deps.damage.marks.contains(*pg))
            .filter(|pg| match groups.get(pg) {
                Some(slot) => slot.group.raft.metrics().borrow().running_state.is_err(),
                None => map.epoch > 0 && map.pools.contains_key(&pg.pool),
            })
            .collect()
    }

    /// Starts the stopped (or missing) group of `pg` again: takes the stopped group out,
    /// reloads the PG's WAL state from disk (a refused write left it ahead of the disk) and
    /// starts the group from the store and the log, as a restart of the OSD would. Does
    /// nothing if the group runs (again) or the PG is no longer hosted or is being repaired.
    pub(crate) async fn revive(&self, pg: PgId) -> Result<(), OsdError> {
        let _update = self.update.lock().await;
        let map = self.map();
        if !map.pgs_hosted_by(self.deps.me).contains(&pg)
            || self.repairing().contains(&pg)
            || self.deps.damage.marks.contains(pg)
        {
            return Ok(());
        }
        let slot = {
            let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
            match groups.get(&pg) {
                Some(slot) if slot.group.raft.metrics().borrow().running_state.is_ok() => {
                    return Ok(())
                }
                _ => groups.remove(&pg),
            }
        };
        if let Some(slot) = slot {
            let why = slot.group.raft.metrics().borrow().running_state.clone().err();
            tracing::warn!(%pg, error = ?why, "restarting a pg whose raft group stopped on an error");
            stop_slot(pg, &slot).await;
        }
        self.deps.wal.reload_group(group_id(pg)).await?;
        self.start_group(pg, &map).await?;
        tracing::info!(%pg, "pg group restarted");
        Ok(())
    }

    pub(crate) fn me(&self) -> OsdId {
        self.deps.me
    }

    pub(crate) fn wal(&self) -> &Arc<Wal> {
        &self.deps.wal
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.deps.store
    }

    /// The connections to the other OSDs.
    pub(crate) fn peers(&self) -> &Arc<Peers> {
        &self.deps.peers
    }

    /// The map this OSD acts on now.
    pub(crate) fn map(&self) -> Arc<ClusterMap> {
        self.map.borrow().clone()
    }

    /// Waits (bounded) until the map reaches `epoch`; returns the map it has then.
    pub(crate) async fn wait_epoch(&self, epoch: u64, timeout: Duration) -> Arc<ClusterMap> {
        let mut rx = self.map.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|m| m.epoch >= epoch)).await;
        self.map()
    }

    /// `osd_write_once_min_bytes` (0: off).
    pub(crate) fn write_once_min(&self) -> u64 {
        self.deps.write_once_min.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The apply batcher (its `perf dump` counters).
    pub(crate) fn applier(&self) -> &Arc<crate::pg::apply::ApplyBatcher> {
        &self.deps.applier
    }

    /// Large write payloads placed while they arrived.
    pub(crate) fn preplaced(&self) -> &Arc<crate::pg::preplace::Preplaced> {
        &self.deps.preplaced
    }

    /// The running group of `pg`.
    pub(crate) fn group(&self, pg: PgId) -> Option<Arc<PgGroup>> {
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        groups.get(&pg).map(|slot| slot.group.clone())
    }

    /// The running group with Raft group id `group`.
    pub(crate) fn group_by_id(&self, group: u64) -> Option<Arc<PgGroup>> {
        self.group(pg_of_group(group))
    }

    /// Every running group.
    pub(crate) fn groups(&self) -> Vec<Arc<PgGroup>> {
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        groups.values().map(|slot| slot.group.clone()).collect()
    }

    /// Acts on `new`: drops PGs of deleted pools, starts groups for new PGs, then publishes
    /// the map. Maps older than the current one are ignored.
    pub(crate) async fn apply_map(&self, new: Arc<ClusterMap>) -> Result<(), OsdError> {
        let mut swept = self.update.lock().await;
        let old = self.map();
        if new.epoch < old.epoch {
            tracing::debug!(old = old.epoch, new = new.epoch, "ignoring an older map");
            return Ok(());
        }
        let mut held: BTreeSet<PgId> = self.groups_held();
        if !*swept {
            held.extend(self.pgs_on_disk().await?);
        }
        let hosted: BTreeSet<PgId> = new.pgs_hosted_by(self.deps.me).into_iter().collect();
        for pg in held {
            if !new.pools.contains_key(&pg.pool) {
                self.remove_pg(pg).await?;
            } else if new.epoch > 0 && !hosted.contains(&pg) && !self.repairing().contains(&pg) {
                // In neither the acting nor the up set: the PG's voters committed without
                // this OSD (the acting set changes only after that), or it was a learner
                // whose move was called off. Unless Raft says otherwise: a move that added
                // this OSD may have committed before the monitor applied its report, and an
                // up set recomputed meanwhile leaves it out of both sets while it is a voter
                // that may hold entries a majority needs. It keeps its copy (and serves the
                // group) until a membership change removes it. A copy found on disk at start
                // has no running group: it is started to read its Raft configuration.
                if self.group(pg).is_none() {
                    if let Err(e) = self.start_group(pg, &new).await {
                        tracing::warn!(%pg, error = %e,
                            "pg copy not hosted here does not start: removing it");
                    }
                }
                if !self.copy_removable(pg, &new).await {
                    tracing::info!(%pg, epoch = new.epoch,
                        "pg not in this OSD's sets of the map, but a voter of its Raft group: kept until Raft removes it");
                    continue;
                }
                tracing::info!(%pg, epoch = new.epoch, "pg no longer hosted here: removing its copy");
                self.remove_pg(pg).await?;
            }
        }
        *swept = true;
        for pg in hosted {
            if self.repairing().contains(&pg) {
                continue;
            }
            match self.group(pg) {
                None if self.deps.damage.marks.contains(pg) && new.acting(pg).len() > 1 => {
                    // Damaged before a restart: rebuilt before its group starts (replaying
                    // the log would meet the damage again).
                    self.deps.damage.request(pg);
                }
                None => match self.start_group(pg, &new).await {
                    Ok(()) => {}
                    // Replaying the log at start met damaged data: reported and being rebuilt.
                    Err(e) if self.deps.damage.marks.contains(pg) => {
                        tracing::info!(%pg, error = %e, "pg not started: it is rebuilt first");
                    }
                    Err(e) => return Err(e),
                },
                Some(group) => {
                    let primary = new.acting(pg).first() == Some(&self.deps.me);
                    group.pin_leadership(primary);
                    if primary {
                        // Campaign now rather than at the next election timeout (a no-op
                        // for a leader or a learner).
                        let _ = group.raft.trigger().elect().await;
                    }
                }
            }
        }
        let epoch = new.epoch;
        self.map.send_replace(new);
        tracing::debug!(epoch, pgs = self.groups().len(), "map applied");
        Ok(())
    }

    fn groups_held(&self) -> BTreeSet<PgId> {
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        groups.keys().copied().collect()
    }

    /// PGs with state in the store or the WAL (start-up: some may belong to deleted pools).
    async fn pgs_on_disk(&self) -> Result<BTreeSet<PgId>, OsdError> {
        let store = self.deps.store.clone();
        let mut pgs: BTreeSet<PgId> = blocking(move || store.pgs()).await?.into_iter().collect();
        pgs.extend(self.deps.wal.groups().into_iter().map(pg_of_group));
        Ok(pgs)
    }

    /// Creates the Raft group of `pg`, initialising it if this OSD is the primary of a group
    /// that never started (openraft persists that it was initialised: no second init).
    async fn start_group(&self, pg: PgId, map: &ClusterMap) -> Result<(), OsdError> {
        if crate::pg::split::awaiting_split(self, pg) {
            // A group here creates this PG when it applies its split: started then.
            tracing::debug!(%pg, "pg not started: a split here will create it");
            return Ok(());
        }
        if crate::pg::merge::merged_here(self, pg, map).await? {
            // Its merge target applied the merge here: nothing of it is left to serve.
            tracing::info!(%pg, "pg not started: merged into its target; removing what is left");
            // Callers hold the update lock.
            self.remove_pg(pg).await?;
            return Ok(());
        }
        let acting = map.acting(pg).to_vec();
        let raft_err = |detail: String| OsdError::Raft { pg, detail };
        let config = raft_config(acting.len(), self.raft_heartbeat_ms)
            .map_err(|e| raft_err(e.to_string()))?;
        let (done_tx, done_rx) = oneshot::channel();
        let sm = match PgStateMachine::open(
            pg,
            self.deps.store.clone(),
            self.deps.applier.clone(),
            self.deps.durability.clone(),
            self.deps.damage.clone(),
            self.deps.snapshot_dir.clone(),
            Signals { split_applied: self.split_wake.clone(), done: done_tx },
        )
        .await
        {
            Ok(sm) => sm,
            Err(e @ quarry_store::StoreError::Corrupt { .. }) if acting.len() > 1 => {
                // The PG's own state is damaged: rebuilt from a replica like damaged data.
                tracing::error!(%pg, error = %e, "damaged pg state: rebuilding from a replica");
                let damage = self.deps.damage.clone();
                let detail = format!("open: {e}");
                let _ = tokio::task::spawn_blocking(move || damage.report(pg, &detail)).await;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let pg_num = sm.pg_num_handle();
        let solo = sm.solo_handle();
        let sealed = sm.sealed_handle();
        let group = group_id(pg);
        let votes = Arc::new(crate::pg::network::VoteFeedback::default());
        let network = PgNetworkFactory {
            group,
            peers: self.deps.peers.clone(),
            store: self.deps.store.clone(),
            snapshots: HashMap::new(),
            votes: votes.clone(),
        };
        // Large writes of a one-replica PG are placed in the store, not the log (write-once).
        let placer = Arc::new(PgPlacer::new(
            self.deps.store.clone(),
            sm.solo_handle(),
            self.deps.write_once_min.clone(),
            self.deps.preplaced.clone(),
            self.deps.lone_op.clone(),
        ));
        let log = self.deps.wal.log_store_placed(group, placer);
        let raft = PgRaft::new(self.deps.me, config, network, log, sm)
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        let primary = acting.first() == Some(&self.deps.me);
        let group = Arc::new(PgGroup::new(pg, raft, pg_num, sealed, votes, solo));
        group.pin_leadership(primary);
        if !acting.contains(&self.deps.me) && map.up_set(pg).contains(&self.deps.me) {
            tracing::info!(%pg, ?acting, up = ?map.up_set(pg), "pg started as a learner: its primary adds it");
        }
        if primary {
            self.initialise(pg, &group.raft, &acting, map).await?;
        }
        let slot = Slot { group, sm_done: tokio::sync::Mutex::new(Some(done_rx)) };
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(pg, Arc::new(slot));
        self.split_wake.notify_one();
        tracing::debug!(%pg, ?acting, "pg group started");
        Ok(())
    }

    async fn initialise(
        &self,
        pg: PgId,
        raft: &PgRaft,
        acting: &[OsdId],
        map: &ClusterMap,
    ) -> Result<(), OsdError> {
        let raft_err = |detail: String| OsdError::Raft { pg, detail };
        if raft.is_initialized().await.map_err(|e| raft_err(e.to_string()))? {
            return Ok(());
        }
        let members: BTreeMap<OsdId, BasicNode> = acting
            .iter()
            .map(|&osd| {
                let addr = if osd == self.deps.me {
                    Some(self.deps.addr)
                } else {
                    map.osds.get(&osd).and_then(|o| o.addr)
                };
                (osd, BasicNode::new(addr.map(|a| a.to_string()).unwrap_or_default()))
            })
            .collect();
        match raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(%pg, ?acting, "pg group initialised");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(raft_err(e.to_string())),
        }
    }

    /// Deletes the copies [`Router::apply_map`] kept because no member had confirmed that
    /// this OSD left their voters (members not reachable yet, e.g. right after a restart),
    /// once one does. Run every few seconds by `worker::rebalance`.
    pub(crate) async fn sweep_kept_copies(&self) {
        let map = self.map();
        if map.epoch == 0 {
            return;
        }
        let hosted: BTreeSet<PgId> = map.pgs_hosted_by(self.deps.me).into_iter().collect();
        let kept: Vec<PgId> = self
            .groups_held()
            .into_iter()
            .filter(|pg| map.pools.contains_key(&pg.pool) && !hosted.contains(pg))
            .filter(|pg| !self.repairing().contains(pg))
            .collect();
        for pg in kept {
            // Asked without holding the map lock (the members have a second each to answer);
            // removed under it if the newest map still leaves this OSD out.
            if !self.copy_removable(pg, &map).await {
                continue;
            }
            let _update = self.update.lock().await;
            let now = self.map();
            if now.pgs_hosted_by(self.deps.me).contains(&pg) || self.repairing().contains(&pg) {
                continue;
            }
            tracing::info!(%pg, epoch = now.epoch, "pg no longer hosted here: removing its copy");
            if let Err(e) = self.remove_pg(pg).await {
                tracing::error!(%pg, error = %e, "removing a stale pg copy failed");
            }
        }
    }

    /// Whether the copy of `pg` here, which `map` gives to other OSDs, may be deleted: this
    /// OSD is no voter (in either half) of the newest configuration its group knows (asked of
    /// the group's Raft core: a group just started has not published metrics yet), or a
    /// member of the acting set answers that a configuration at least as new, committed,
    /// leaves it out. A voter that does not know it was removed (it was down or cut off
    /// while the PG moved) learns it so; a copy whose removal nobody confirms is kept (it
    /// may hold entries a majority needs) and asked about again at the next map. A group not
    /// running here (it did not start) says nothing: removable.
    async fn copy_removable(&self, pg: PgId, map: &ClusterMap) -> bool {
        let Some(group) = self.group(pg) else { return true };
        let me = self.deps.me;
        let newest = group
            .raft
            .with_raft_state(move |state| {
                let effective = state.membership_state.effective();
                let voter =
                    effective.membership().get_joint_config().iter().any(|v| v.contains(&me));
                (voter, effective.log_id().as_ref().copied())
            })
            .await;
        let Ok((true, mine)) = newest else { return true };
        for &peer in map.acting(pg).iter().filter(|&&p| p != me) {
            if !map.osds.get(&peer).is_some_and(|o| o.up) {
                continue;
            }
            let asked = self
                .deps
                .peers
                .call(peer, None, group_id(pg), &RaftRpc::Committed, COMMITTED_ASK_TIMEOUT)
                .await;
            match asked {
                Ok(RaftRpcReply::Committed(Ok(theirs))) if theirs.log_id >= mine => {
                    let voter = theirs.voters.iter().any(|v| v.contains(&me));
                    tracing::info!(%pg, peer, ?theirs, voter,
                        "asked a member whether this OSD is still a voter of the pg");
                    return !voter;
                }
                Ok(RaftRpcReply::Committed(Ok(theirs))) => {
                    tracing::debug!(%pg, peer, ?theirs, ?mine, "member's committed configuration is older");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(%pg, peer, error = %e, "cannot ask a member about the pg")
                }
            }
        }
        false
    }

    /// Stops the group of merge source `pg` (merged into its target here) and deletes what
    /// is left of it (the state its group may have written since, its log).
    pub(crate) async fn remove_merged(&self, pg: PgId) -> Result<(), OsdError> {
        let _update = self.update.lock().await;
        self.remove_pg(pg).await
    }

    /// Queues the report of a merge applied by `target` (sent by the monitor session).
    pub(crate) fn queue_merge_report(&self, target: PgId, source: u32) {
        let mut reports = self.merge_reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.insert(target, source);
    }

    /// The applied index through which merge target `pg`'s log is to be purged: the first
    /// call's `applied` (past the `Merge` entry: the caller saw it applied), kept until
    /// [`Router::merge_purged`].
    pub(crate) fn merge_purge_mark(&self, pg: PgId, applied: u64) -> u64 {
        let mut marks = self.merge_purges.lock().unwrap_or_else(|p| p.into_inner());
        *marks.entry(pg).or_insert(applied)
    }

    /// Forgets merge target `pg`'s purge mark (its merge was counted by the monitor).
    pub(crate) fn merge_purged(&self, pg: PgId) {
        self.merge_purges.lock().unwrap_or_else(|p| p.into_inner()).remove(&pg);
    }

    /// The queued merge reports, taken out.
    pub(crate) fn take_merge_reports(&self) -> Vec<(PgId, u32)> {
        let mut reports = self.merge_reports.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *reports).into_iter().collect()
    }

    /// Stops the group of `pg` (if running) and deletes its objects and log.
    async fn remove_pg(&self, pg: PgId) -> Result<(), OsdError> {
        let slot = self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&pg);
        if let Some(slot) = slot {
            stop_slot(pg, &slot).await;
        }
        let store = self.deps.store.clone();
        blocking(move || store.remove_pg(pg)).await?;
        self.deps.wal.remove_group(group_id(pg))?;
        tracing::info!(%pg, "pg removed");
        Ok(())
    }

    /// Stops every group (shutdown). Their state machines have finished when this returns.
    pub(crate) async fn shutdown_groups(&self) {
        let slots: Vec<(PgId, Arc<Slot>)> =
            self.groups.write().unwrap_or_else(|p| p.into_inner()).drain().collect();
        let mut stops = tokio::task::JoinSet::new();
        for (pg, slot) in slots {
            stops.spawn(async move { stop_slot(pg, &slot).await });
        }
        while stops.join_next().await.is_some() {}
    }
}

/// Shuts a group down and waits for its state machine worker to drain and exit.
async fn stop_slot(pg: PgId, slot: &Slot) {
    if let Err(e) = slot.group.raft.shutdown().await {
        tracing::warn!(%pg, error = %e, "raft group did not shut down cleanly");
    }
    let done = slot.sm_done.lock().await.take();
    if let Some(done) = done {
        if tokio::time::timeout(STATE_MACHINE_DRAIN, done).await.is_err() {
            tracing::warn!(%pg, "state machine worker still running after shutdown");
        }
    }
}
