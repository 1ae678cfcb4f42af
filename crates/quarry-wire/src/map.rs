//! The cluster map: what the monitor agrees on and pushes to every client and OSD.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use quarry_types::{OsdId, PgId, PoolId, SnapContext, SnapId};

/// The cluster map at one epoch. Every change bumps `epoch`; clients and OSDs act on the
/// newest epoch they have seen and retry operations refused for a stale epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// The cluster's unique id (uuid string).
    pub fsid: String,
    /// Monotonic epoch, bumped by every change.
    pub epoch: u64,
    /// Monitors, by name.
    pub mons: BTreeMap<String, SocketAddr>,
    /// OSDs known to the cluster.
    pub osds: BTreeMap<OsdId, OsdInfo>,
    /// Pools by id.
    pub pools: BTreeMap<PoolId, PoolInfo>,
    /// Tickets of an entity issued before this unix time are no longer honoured (set when the
    /// entity is deleted or its caps change): revocation reaches open sessions at once.
    pub auth_floor: BTreeMap<String, u64>,
    /// Blocklisted client instances (`entity@global_id`) and addresses (`IP:PORT/NONCE`),
    /// with expiry (unix seconds); see `crate::blocklist` for how they match.
    pub blocklist: BTreeMap<String, u64>,
}

/// One OSD's entry in the map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OsdInfo {
    /// The OSD id.
    pub id: OsdId,
    /// Where it listens for clients and peers (None until it first boots).
    pub addr: Option<SocketAddr>,
    /// Host name (placement puts replicas on distinct hosts).
    pub host: String,
    /// Up: the daemon holds a valid liveness lease.
    pub up: bool,
    /// In: the OSD takes part in placement.
    pub in_cluster: bool,
    /// Relative capacity for placement.
    pub weight: f64,
    /// Bumped every time the OSD boots; a message from an older incarnation is stale.
    pub up_from: u64,
    /// Bytes used and available, as last reported.
    pub used_bytes: u64,
    /// Bytes available, as last reported.
    pub avail_bytes: u64,
    /// The operator's override weight (`ceph osd reweight`, 0.0..=1.0; Ceph's REWEIGHT
    /// column): 0 is out, 1 is in (`ceph osd out|in` set it). `in_cluster` is
    /// `reweight > 0`. Marking an OSD out moves its PGs' replicas elsewhere (the monitor
    /// recomputes the PGs' up sets; their primaries move the data).
    pub reweight: f64,
    /// When the OSD was last marked down (unix seconds; 0 while up or never booted): the
    /// monitor marks it out once it has been down `mon_osd_down_out_interval`.
    pub down_since: u64,
}

/// One pool's entry in the map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolInfo {
    /// Pool id.
    pub id: PoolId,
    /// Pool name.
    pub name: String,
    /// Number of placement groups.
    pub pg_num: u32,
    /// Replicas per object.
    pub size: u32,
    /// Replicas that must be up to accept writes.
    pub min_size: u32,
    /// Applications enabled on the pool (`rbd` after `rbd pool init`).
    pub applications: BTreeSet<String>,
    /// Newest snapshot id allocated in this pool (pool and self-managed snapshots share it).
    pub snap_seq: SnapId,
    /// Snapshot ids that were removed, pool or self-managed (the OSDs trim their data).
    pub removed_snaps: BTreeSet<SnapId>,
    /// Acting set per PG (index = PG seed), primary first: the PG's Raft voters, who serve it
    /// now. Changed only when the PG's primary reports a committed membership change (or, to
    /// move the primary off a down OSD, reordered with the same members).
    pub acting: Vec<Vec<OsdId>>,
    /// Objects and bytes stored, as last reported by the OSDs.
    pub stored_objects: u64,
    /// Bytes stored (sum of object sizes), as last reported.
    pub stored_bytes: u64,
    /// Which kind of snapshots the pool uses; set by the first snapshot and never changed.
    pub snap_mode: SnapMode,
    /// Live pool snapshots (`ceph osd pool mksnap`), by id.
    pub pool_snaps: BTreeMap<SnapId, PoolSnap>,
    /// Flags with Ceph's `pg_pool_t` bit values ([`pool_flags`]): `nodelete`,
    /// `nopgchange`, `nosizechange`, `noscrub`, `nodeep-scrub` set by the operator; `full`
    /// and `full_quota` by the monitor when the pool reaches a quota.
    pub flags: u64,
    /// `ceph osd pool set-quota POOL max_bytes N` (0: none).
    pub quota_max_bytes: u64,
    /// `ceph osd pool set-quota POOL max_objects N` (0: none).
    pub quota_max_objects: u64,
    /// Up set per PG (index = PG seed; Ceph's "up"): where placement wants the PG, computed
    /// by the monitor when the pool's size changes or an OSD goes out or in. Where it differs
    /// from `acting`, the PG is remapped: its primary adds the new OSDs as Raft learners,
    /// promotes them and removes the others, then reports, and the monitor sets acting = up.
    /// A PG missing here (maps built by tests) is where it acts.
    pub up: Vec<Vec<OsdId>>,
    /// Ceph's `pg_num_target`: the `pg_num` the operator asked for. Below `pg_num` while the
    /// pool shrinks: the monitor merges its last PG into its parent, one PG at a time, until
    /// `pg_num` reaches it (a growth sets both at once). Since map version 5.
    pub pg_num_target: u32,
    /// Ceph's `pg_num_pending`: `pg_num - 1` while the last PG `s = pg_num - 1` merges into
    /// `t = split_parent(s, pg_num - 1)` ([`PoolInfo::merging`]; both are then on the same
    /// OSDs and neither changes members), otherwise `pg_num`. `pg_num` drops to it when `t`'s
    /// primary reports the merge applied.
    pub pg_num_pending: u32,
    /// PGs (seeds) their OSDs have not created yet, Ceph's `creating`: the acting primary's
    /// last beacon says its store holds no state of them (a split's children until their
    /// parent applies the split; a new pool's PGs until their first entry is applied). The
    /// monitor fills it from the beacons it holds in the maps it answers
    /// (`quarry_mon::mon::overlay_usage`); empty in its replicated state. Since map
    /// version 5.
    pub creating: BTreeSet<u32>,
}

/// Pool flag bits, with Ceph's values (`pg_pool_t::FLAG_*`) and names (`flags_names`).
pub mod pool_flags {
    /// Objects are placed by a hash of the pool id too (always set, as Ceph's default).
    pub const HASHPSPOOL: u64 = 1 << 0;
    /// Writes are refused: the pool is full (set with `FULL_QUOTA` for a quota).
    pub const FULL: u64 = 1 << 1;
    /// `ceph osd pool delete` is refused (EPERM).
    pub const NODELETE: u64 = 1 << 4;
    /// `pg_num` changes are refused (EPERM).
    pub const NOPGCHANGE: u64 = 1 << 5;
    /// `size` changes are refused (EPERM).
    pub const NOSIZECHANGE: u64 = 1 << 6;
    /// No scrubs (stored; Quarry's scrub is on read).
    pub const NOSCRUB: u64 = 1 << 8;
    /// No deep scrubs (stored).
    pub const NODEEP_SCRUB: u64 = 1 << 9;
    /// The pool reached `quota_max_bytes` or `quota_max_objects`.
    pub const FULL_QUOTA: u64 = 1 << 10;

    /// The flags an operator sets with `ceph osd pool set POOL NAME true|false`, by name.
    pub const SETTABLE: [(&str, u64); 5] = [
        ("nodelete", NODELETE),
        ("nopgchange", NOPGCHANGE),
        ("nosizechange", NOSIZECHANGE),
        ("noscrub", NOSCRUB),
        ("nodeep-scrub", NODEEP_SCRUB),
    ];

    /// Ceph's `flags_names`: the set flags' names joined by commas, in bit order.
    pub fn names(flags: u64) -> String {
        const ALL: [(&str, u64); 8] = [
            ("hashpspool", HASHPSPOOL),
            ("full", FULL),
            ("nodelete", NODELETE),
            ("nopgchange", NOPGCHANGE),
            ("nosizechange", NOSIZECHANGE),
            ("noscrub", NOSCRUB),
            ("nodeep-scrub", NODEEP_SCRUB),
            ("full_quota", FULL_QUOTA),
        ];
        let set: Vec<&str> =
            ALL.iter().filter(|(_, bit)| flags & bit != 0).map(|(name, _)| *name).collect();
        set.join(",")
    }
}

/// Ceph's rule: a pool uses pool snapshots or self-managed snapshots, never both. The mode is
/// set by the first snapshot of either kind and stays (removing every snapshot does not reset
/// it); the other kind is then EINVAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapMode {
    /// No snapshot was ever made.
    #[default]
    Unset,
    /// Pool snapshots: every write uses the pool's snap context, whatever the client sends.
    Pool,
    /// Self-managed snapshots (librbd's): writers send their own snap contexts.
    SelfManaged,
}

/// One pool snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSnap {
    /// Its name (unique in the pool).
    pub name: String,
    /// When it was taken (unix seconds).
    pub stamp: u64,
}

impl PoolInfo {
    /// The snap context of pool-snapshot mode: seq = the pool's, snaps = its live pool
    /// snapshots, newest first.
    pub fn pool_snapc(&self) -> SnapContext {
        SnapContext { seq: self.snap_seq, snaps: self.pool_snaps.keys().rev().copied().collect() }
    }

    /// True if flag `bit` ([`pool_flags`]) is set.
    pub fn has_flag(&self, bit: u64) -> bool {
        self.flags & bit != 0
    }

    /// True if the pool is full (a quota reached): writes wait, as Ceph's clients do.
    pub fn is_full(&self) -> bool {
        self.has_flag(pool_flags::FULL) || self.has_flag(pool_flags::FULL_QUOTA)
    }

    /// The merge under way, `(source, target)` seeds: while `pg_num_pending` is below
    /// `pg_num`, the last PG merges into its split parent at `pg_num - 1` PGs (Ceph's rule:
    /// the inverse of the split that made it).
    pub fn merging(&self) -> Option<(u32, u32)> {
        if self.pg_num_pending >= self.pg_num || self.pg_num < 2 {
            return None;
        }
        let source = self.pg_num - 1;
        Some((source, quarry_placement::split_parent(source, source)))
    }

    /// The id of the pool snapshot named `name`.
    pub fn pool_snap_by_name(&self, name: &str) -> Option<SnapId> {
        self.pool_snaps.iter().find(|(_, s)| s.name == name).map(|(id, _)| *id)
    }

    /// The snap context a write in this pool is applied with (what the primary proposes): in
    /// pool-snapshot mode the pool's own, whatever the client sent; otherwise the client's
    /// without the snapshots the map says were removed (Ceph's `filter_snapc`), so no version
    /// is ever kept for a removed snapshot.
    pub fn write_snapc(&self, client: &SnapContext) -> SnapContext {
        if self.snap_mode == SnapMode::Pool {
            return self.pool_snapc();
        }
        let mut snapc = client.clone();
        snapc.snaps.retain(|s| !self.removed_snaps.contains(s));
        snapc
    }
}

impl ClusterMap {
    /// The pool named `name`.
    pub fn pool_by_name(&self, name: &str) -> Option<&PoolInfo> {
        self.pools.values().find(|p| p.name == name)
    }

    /// The acting set of `pg` (empty if the pool or PG is unknown).
    pub fn acting(&self, pg: PgId) -> &[OsdId] {
        self.pools
            .get(&pg.pool)
            .and_then(|p| p.acting.get(pg.seed as usize))
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    /// The up set of `pg` (its acting set if the map has none for it).
    pub fn up_set(&self, pg: PgId) -> &[OsdId] {
        match self.pools.get(&pg.pool).and_then(|p| p.up.get(pg.seed as usize)) {
            Some(up) => up.as_slice(),
            None => self.acting(pg),
        }
    }

    /// True if `pg`'s up set differs from its acting set (as sets: a reordered primary is
    /// not a move).
    pub fn is_remapped(&self, pg: PgId) -> bool {
        let (up, acting) = (self.up_set(pg), self.acting(pg));
        up.len() != acting.len() || up.iter().any(|o| !acting.contains(o))
    }

    /// The PGs whose acting or up set contains `osd`: those it runs a Raft group for (a
    /// member of the up set only is a learner until the move completes).
    pub fn pgs_hosted_by(&self, osd: OsdId) -> Vec<PgId> {
        let mut out = Vec::new();
        for pool in self.pools.values() {
            for seed in 0..pool.acting.len() {
                let pg = PgId { pool: pool.id, seed: seed as u32 };
                if self.acting(pg).contains(&osd) || self.up_set(pg).contains(&osd) {
                    out.push(pg);
                }
            }
        }
        out
    }

    /// The state of `pg` in Ceph's words, from the map alone:
    /// - `down`: no OSD, or the acting primary is down (no I/O);
    /// - `creating`: the acting primary's store holds no state of it yet
    ///   ([`PoolInfo::creating`]: a split's child before its parent applies the split), and
    ///   it is not one of a merge's pair (no I/O);
    /// - `undersized+degraded+peered`: fewer voters up than `min_size` or than a majority of
    ///   its voters (its Raft group elects no leader without one), and not a PG whose voters
    ///   are all up moving to enough OSDs (no I/O);
    /// - otherwise `active`, with `+undersized` (fewer voters up than the pool's size),
    ///   `+degraded` (undersized, or a voter down), `+remapped+backfilling` (its up set
    ///   differs: its primary is moving it), or `+clean` when none applies; `+premerge` for
    ///   the two PGs of a merge under way ([`PoolInfo::merging`]), also after `peered`.
    pub fn pg_state(&self, pg: PgId) -> &'static str {
        let Some(pool) = self.pools.get(&pg.pool) else { return "unknown" };
        let up = |osd: &OsdId| self.osds.get(osd).is_some_and(|o| o.up);
        let acting = self.acting(pg);
        let remapped = self.is_remapped(pg);
        let min_size = pool.min_size.max(1) as usize;
        if !acting.first().is_some_and(up) {
            return "down";
        }
        // Not created yet by its primary (a split's child before the split, a new PG before
        // its first entry): it serves nothing yet. A merging pair is `premerge` below (the
        // source's state goes when the merge is applied, before the monitor counts it).
        let merging = pool.merging().is_some_and(|(s, t)| pg.seed == s || pg.seed == t);
        if pool.creating.contains(&pg.seed) && !merging {
            return "creating";
        }
        let live = acting.iter().filter(|o| up(o)).count();
        // A PG whose voters are all up and that moves to enough OSDs serves meanwhile (a
        // pool whose size grew: the OSDs allow it).
        let growing = remapped && live == acting.len() && self.up_set(pg).len() >= min_size;
        // Its Raft group serves only with a majority of its voters (the acting set) up: a
        // size-2 PG with one voter down serves nothing, whatever min_size says.
        let majority = acting.len() / 2 + 1;
        if live < min_size.max(majority) && !growing {
            return if merging {
                "undersized+degraded+peered+premerge"
            } else {
                "undersized+degraded+peered"
            };
        }
        let undersized = live < pool.size as usize;
        let degraded = undersized || live < acting.len();
        // Ceph's `premerge`: the merging pair (never remapped: the monitor marks the merge
        // only once both are where they belong), after `clean` in Ceph's order.
        if merging {
            return match (undersized, degraded) {
                (false, false) => "active+clean+premerge",
                (true, _) => "active+undersized+degraded+premerge",
                (false, true) => "active+degraded+premerge",
            };
        }
        match (undersized, degraded, remapped) {
            (false, false, false) => "active+clean",
            (false, false, true) => "active+remapped+backfilling",
            (true, _, false) => "active+undersized+degraded",
            (true, _, true) => "active+undersized+degraded+remapped+backfilling",
            (false, true, false) => "active+degraded",
            (false, true, true) => "active+degraded+remapped+backfilling",
        }
    }

    /// The PGs whose acting set contains `osd`.
    pub fn pgs_of_osd(&self, osd: OsdId) -> Vec<PgId> {
        let mut out = Vec::new();
        for pool in self.pools.values() {
            for (seed, set) in pool.acting.iter().enumerate() {
                if set.contains(&osd) {
                    out.push(PgId { pool: pool.id, seed: seed as u32 });
                }
            }
        }
        out
    }

    /// Number of OSDs that are up, and that are in.
    pub fn osd_counts(&self) -> (usize, usize) {
        let up = self.osds.values().filter(|o| o.up).count();
        let inn = self.osds.values().filter(|o| o.in_cluster).count();
        (up, inn)
    }
}
