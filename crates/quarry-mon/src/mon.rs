//! The running monitor: the Raft handle, the shared state, and what lives only in the
//! leader's memory (OSD beacons and usage figures, the reserved global id range). Proposing a
//! command and reading the current state go through here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::watch;

use quarry_types::{ErrorCode, FullRatios, FullState, OsdId, PgId, PoolId};
use quarry_wire::{ClusterMap, Usage};

use crate::log_op::{Applied, Op, OpError, Outcome, Proposal};
use crate::raft::{Core, MonRaft};
use crate::MonConfig;

/// How long a proposal may take before the requester gets ETIMEDOUT.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(15);
/// Global ids reserved per Raft command.
pub const GLOBAL_ID_BATCH: u64 = 1024;

/// The wall clock in unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the leader remembers of one OSD's latest beacon (not replicated: a new leader
/// starts the grace period afresh).
#[derive(Clone, Debug)]
pub struct Beacon {
    /// Incarnation that sent it.
    pub up_from: u64,
    /// When it arrived (or when this leader started watching the OSD).
    pub seen: Instant,
    /// Objects and bytes per pool on that OSD.
    pub usage: BTreeMap<PoolId, Usage>,
    /// Disk bytes used.
    pub disk_used: u64,
    /// Disk bytes available.
    pub disk_avail: u64,
    /// Of `disk_used`, object data.
    pub data_used: u64,
    /// The PGs whose state the OSD's store holds, by pool (None: not reported yet).
    pub pgs: Option<BTreeMap<PoolId, BTreeSet<u32>>>,
}

/// The running monitor, shared by the listener, the request handlers and the timers.
pub struct Mon {
    /// Configuration.
    pub cfg: MonConfig,
    /// This monitor's Raft node id.
    pub node_id: u64,
    /// The Raft node.
    pub raft: MonRaft,
    /// Replicated state.
    pub core: Arc<Core>,
    /// Latest beacon per OSD.
    beacons: Mutex<BTreeMap<OsdId, Beacon>>,
    /// Reserved, unused global ids: `next..end`.
    ids: tokio::sync::Mutex<(u64, u64)>,
    /// The PGs each OSD reports damaged, with the incarnation that reported them (leader's
    /// memory, like beacons; `Request::OsdDamaged`).
    damaged: Mutex<BTreeMap<OsdId, (u64, Vec<PgId>)>>,
    /// Bumped whenever an OSD's full state (none, nearfull, full, failsafe) changes with a
    /// beacon: subscribers then get the map again (same epoch, new figures), so primaries
    /// learn at once that a replica is full.
    pub full_changes: watch::Sender<u64>,
    /// Becomes true when the monitor shuts down.
    pub shutdown: watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Mon {
    /// Wraps a started Raft node.
    pub fn new(
        cfg: MonConfig,
        node_id: u64,
        raft: MonRaft,
        core: Arc<Core>,
        shutdown: watch::Receiver<bool>,
    ) -> Mon {
        let beacons = Mutex::new(BTreeMap::new());
        let ids = tokio::sync::Mutex::new((0, 0));
        let full_changes = watch::Sender::new(0);
        let damaged = Mutex::new(BTreeMap::new());
        Mon { cfg, node_id, raft, core, beacons, ids, damaged, full_changes, shutdown }
    }

    /// Proposes `op` with the current clock and waits until it is applied here.
    pub async fn propose(&self, op: Op) -> Applied {
        let proposal = Proposal { now_unix: unix_now(), op };
        let write = tokio::time::timeout(PROPOSAL_TIMEOUT, self.raft.client_write(proposal));
        match write.await {
            Ok(Ok(response)) => response.data,
            Ok(Err(e)) => Err(raft_write_error(e)),
            Err(_) => Err(OpError::new(
                ErrorCode::ETIMEDOUT,
                "the monitor did not commit the command in time",
            )),
        }
    }

    /// True if this monitor is the Raft leader now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// A fresh global id for a new session (reserved in batches through Raft).
    pub async fn reserve_global_id(&self) -> Result<u64, OpError> {
        let mut ids = self.ids.lock().await;
        if ids.0 >= ids.1 {
            let Outcome::GlobalIds { start } =
                self.propose(Op::AllocGlobalIds { count: GLOBAL_ID_BATCH }).await?
            else {
                return Err(OpError::new(
                    ErrorCode::EIO,
                    "unexpected reply to a global id reservation",
                ));
            };
            *ids = (start, start + GLOBAL_ID_BATCH);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Records the damaged PGs the current incarnation `up_from` of an OSD reports.
    pub fn record_damage(&self, id: OsdId, up_from: u64, pgs: Vec<PgId>) {
        let mut damaged = lock(&self.damaged);
        if pgs.is_empty() {
            damaged.remove(&id);
        } else {
            damaged.insert(id, (up_from, pgs));
        }
    }

    /// The damaged PGs reported by OSDs (per OSD, with the reporting incarnation).
    pub fn damage_reports(&self) -> BTreeMap<OsdId, (u64, Vec<PgId>)> {
        lock(&self.damaged).clone()
    }

    /// Records a beacon from the current incarnation of an OSD.
    pub fn record_beacon(&self, id: OsdId, beacon: Beacon) {
        let old = lock(&self.beacons).insert(id, beacon.clone());
        if full_state_changed(&self.cfg.full_ratios, old.as_ref(), &beacon) {
            self.full_changes.send_modify(|generation| *generation += 1);
        }
    }

    /// Up OSDs silent for longer than `osd_grace`: `(id, up_from)`. An up OSD this leader
    /// has not heard from yet starts its grace period now.
    pub fn silent_osds(&self, map: &ClusterMap, now: Instant) -> Vec<(OsdId, u64)> {
        let mut beacons = lock(&self.beacons);
        let mut silent = Vec::new();
        for osd in map.osds.values().filter(|o| o.up) {
            let entry = beacons.entry(osd.id).or_insert_with(|| Beacon {
                up_from: osd.up_from,
                seen: now,
                usage: BTreeMap::new(),
                disk_used: 0,
                disk_avail: 0,
                data_used: 0,
                pgs: None,
            });
            if entry.up_from != osd.up_from {
                entry.up_from = osd.up_from;
                entry.seen = now;
            }
            if now.saturating_duration_since(entry.seen) > self.cfg.osd_grace {
                silent.push((osd.id, osd.up_from));
            }
        }
        silent
    }

    /// The latest beacon of every OSD heard from.
    pub fn beacons_snapshot(&self) -> BTreeMap<OsdId, Beacon> {
        lock(&self.beacons).clone()
    }

    /// The map with the usage figures of the latest beacons filled in (same epoch).
    pub fn map_with_usage(&self) -> ClusterMap {
        let mut map = ClusterMap::clone(&self.core.map());
        overlay_usage(&mut map, &lock(&self.beacons));
        map
    }
}

/// True if `new` puts its OSD in another full state than `old` (no earlier beacon counts as
/// not full).
pub fn full_state_changed(ratios: &FullRatios, old: Option<&Beacon>, new: &Beacon) -> bool {
    let state = |b: &Beacon| ratios.state(b.disk_used, b.disk_avail);
    old.map_or(FullState::None, state) != state(new)
}

/// Fills OSD disk figures and pool stored figures from beacons. Every replica reports the
/// objects it holds, so a pool's sum is divided by its average acting-set size. Also each
/// pool's `creating` PGs: those whose acting primary is up and whose last beacon from this
/// incarnation reports PGs, but not this one (no beacon yet: nothing is claimed).
pub fn overlay_usage(map: &mut ClusterMap, beacons: &BTreeMap<OsdId, Beacon>) {
    let osds = &map.osds;
    for pool in map.pools.values_mut() {
        let not_created = |seed: &u32| {
            let Some(&primary) = pool.acting.get(*seed as usize).and_then(|a| a.first()) else {
                return false;
            };
            let Some(beacon) = beacons.get(&primary) else { return false };
            let current = osds.get(&primary).is_some_and(|o| o.up && o.up_from == beacon.up_from);
            let Some(held) = beacon.pgs.as_ref().filter(|_| current) else { return false };
            !held.get(&pool.id).is_some_and(|seeds| seeds.contains(seed))
        };
        pool.creating = (0..pool.pg_num).filter(not_created).collect();
    }
    for (id, beacon) in beacons {
        if let Some(osd) = map.osds.get_mut(id) {
            osd.used_bytes = beacon.disk_used;
            osd.avail_bytes = beacon.disk_avail;
        }
    }
    for pool in map.pools.values_mut() {
        let placed: usize = pool.acting.iter().map(Vec::len).sum();
        let copies = (placed / pool.acting.len().max(1)).max(1) as u64;
        let mut total = Usage::default();
        for usage in beacons.values().filter_map(|b| b.usage.get(&pool.id)) {
            // Figures from OSDs: saturate rather than overflow.
            total.objects = total.objects.saturating_add(usage.objects);
            total.bytes = total.bytes.saturating_add(usage.bytes);
        }
        pool.stored_objects = total.objects / copies;
        pool.stored_bytes = total.bytes / copies;
    }
}

fn raft_write_error(e: RaftError<u64, ClientWriteError<u64, openraft::BasicNode>>) -> OpError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            let leader = f.leader_id.map_or("unknown".to_string(), |id| format!("node {id}"));
            OpError::new(
                ErrorCode::EAGAIN,
                format!("this monitor is not the leader (leader: {leader})"),
            )
        }
        other => OpError::new(ErrorCode::EIO, format!("monitor consensus failed: {other}")),
    }
}
