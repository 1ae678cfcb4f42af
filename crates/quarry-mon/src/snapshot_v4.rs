//! Version 4 of the monitor snapshot body, kept to read snapshots written before version 5
//! (which added to each pool Ceph's `pg_num_target` and `pg_num_pending`: a pool shrinking by
//! PG merges). Decoded with these types and converted: both are the pool's `pg_num` (no pool
//! was shrinking: version 4 refused a `pg_num` decrease).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use openraft::{BasicNode, SnapshotMeta};
use serde::Deserialize;

use quarry_auth::ServiceKeyRing;
use quarry_types::{EntityName, OsdId, PoolId, SnapId};
use quarry_wire::{ClusterMap, OsdInfo, PoolInfo, PoolSnap, SnapMode};

use crate::snapshot::SnapshotFile;
use crate::state::{EntityAuth, MonState};

#[derive(Deserialize)]
pub(crate) struct SnapshotFileV4 {
    meta: SnapshotMeta<u64, BasicNode>,
    state: MonStateV4,
}

#[derive(Deserialize)]
struct MonStateV4 {
    bootstrapped: bool,
    map: ClusterMapV4,
    auth: BTreeMap<EntityName, EntityAuth>,
    service_keys: Option<ServiceKeyRing>,
    next_global_id: u64,
    next_pool_id: PoolId,
    blocklist_adders: BTreeMap<String, String>,
    config: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ClusterMapV4 {
    fsid: String,
    epoch: u64,
    mons: BTreeMap<String, SocketAddr>,
    osds: BTreeMap<OsdId, OsdInfo>,
    pools: BTreeMap<PoolId, PoolInfoV4>,
    auth_floor: BTreeMap<String, u64>,
    blocklist: BTreeMap<String, u64>,
}

/// `PoolInfo` of version 4 (no `pg_num_target`, `pg_num_pending`).
#[derive(Deserialize)]
struct PoolInfoV4 {
    id: PoolId,
    name: String,
    pg_num: u32,
    size: u32,
    min_size: u32,
    applications: BTreeSet<String>,
    snap_seq: SnapId,
    removed_snaps: BTreeSet<SnapId>,
    acting: Vec<Vec<OsdId>>,
    stored_objects: u64,
    stored_bytes: u64,
    snap_mode: SnapMode,
    pool_snaps: BTreeMap<SnapId, PoolSnap>,
    flags: u64,
    quota_max_bytes: u64,
    quota_max_objects: u64,
    up: Vec<Vec<OsdId>>,
}

impl From<PoolInfoV4> for PoolInfo {
    fn from(p: PoolInfoV4) -> PoolInfo {
        PoolInfo {
            id: p.id,
            name: p.name,
            pg_num: p.pg_num,
            size: p.size,
            min_size: p.min_size,
            applications: p.applications,
            snap_seq: p.snap_seq,
            removed_snaps: p.removed_snaps,
            acting: p.acting,
            stored_objects: p.stored_objects,
            stored_bytes: p.stored_bytes,
            snap_mode: p.snap_mode,
            pool_snaps: p.pool_snaps,
            flags: p.flags,
            quota_max_bytes: p.quota_max_bytes,
            quota_max_objects: p.quota_max_objects,
            up: p.up,
            pg_num_target: p.pg_num,
            pg_num_pending: p.pg_num,
            creating: Default::default(),
        }
    }
}

impl From<SnapshotFileV4> for SnapshotFile {
    fn from(v4: SnapshotFileV4) -> SnapshotFile {
        let s = v4.state;
        let m = s.map;
        let map = ClusterMap {
            fsid: m.fsid,
            epoch: m.epoch,
            mons: m.mons,
            osds: m.osds,
            pools: m.pools.into_iter().map(|(id, p)| (id, p.into())).collect(),
            auth_floor: m.auth_floor,
            blocklist: m.blocklist,
        };
        let state = MonState {
            bootstrapped: s.bootstrapped,
            map,
            auth: s.auth,
            service_keys: s.service_keys,
            next_global_id: s.next_global_id,
            next_pool_id: s.next_pool_id,
            blocklist_adders: s.blocklist_adders,
            config: s.config,
        };
        SnapshotFile { meta: v4.meta, state }
    }
}
