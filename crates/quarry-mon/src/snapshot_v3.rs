//! Version 3 of the monitor snapshot body, kept to read snapshots written before version 4
//! (which added to each pool its up sets, Ceph's "up": where placement wants each PG while
//! its acting set moves there; and to each OSD the time it was marked down, for
//! `mon_osd_down_out_interval`). Decoded with these types and converted: every PG's up set is
//! its acting set (nothing was moving), no OSD has a down stamp (an OSD down at the upgrade
//! is marked out one interval after its next down).

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
pub(crate) struct SnapshotFileV3 {
    meta: SnapshotMeta<u64, BasicNode>,
    state: MonStateV3,
}

#[derive(Deserialize)]
struct MonStateV3 {
    bootstrapped: bool,
    map: ClusterMapV3,
    auth: BTreeMap<EntityName, EntityAuth>,
    service_keys: Option<ServiceKeyRing>,
    next_global_id: u64,
    next_pool_id: PoolId,
    blocklist_adders: BTreeMap<String, String>,
    config: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ClusterMapV3 {
    fsid: String,
    epoch: u64,
    mons: BTreeMap<String, SocketAddr>,
    osds: BTreeMap<OsdId, OsdInfoV3>,
    pools: BTreeMap<PoolId, PoolInfoV3>,
    auth_floor: BTreeMap<String, u64>,
    blocklist: BTreeMap<String, u64>,
}

/// `OsdInfo` of version 3 (no `down_since`).
#[derive(Deserialize)]
struct OsdInfoV3 {
    id: OsdId,
    addr: Option<SocketAddr>,
    host: String,
    up: bool,
    in_cluster: bool,
    weight: f64,
    up_from: u64,
    used_bytes: u64,
    avail_bytes: u64,
    reweight: f64,
}

/// `PoolInfo` of version 3 (no `up`).
#[derive(Deserialize)]
struct PoolInfoV3 {
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
}

impl From<OsdInfoV3> for OsdInfo {
    fn from(o: OsdInfoV3) -> OsdInfo {
        OsdInfo {
            id: o.id,
            addr: o.addr,
            host: o.host,
            up: o.up,
            in_cluster: o.in_cluster,
            weight: o.weight,
            up_from: o.up_from,
            used_bytes: o.used_bytes,
            avail_bytes: o.avail_bytes,
            reweight: o.reweight,
            down_since: 0,
        }
    }
}

impl From<PoolInfoV3> for PoolInfo {
    fn from(p: PoolInfoV3) -> PoolInfo {
        PoolInfo {
            id: p.id,
            name: p.name,
            pg_num: p.pg_num,
            pg_num_target: p.pg_num,
            pg_num_pending: p.pg_num,
            creating: Default::default(),
            size: p.size,
            min_size: p.min_size,
            applications: p.applications,
            snap_seq: p.snap_seq,
            removed_snaps: p.removed_snaps,
            up: p.acting.clone(),
            acting: p.acting,
            stored_objects: p.stored_objects,
            stored_bytes: p.stored_bytes,
            snap_mode: p.snap_mode,
            pool_snaps: p.pool_snaps,
            flags: p.flags,
            quota_max_bytes: p.quota_max_bytes,
            quota_max_objects: p.quota_max_objects,
        }
    }
}

impl From<SnapshotFileV3> for SnapshotFile {
    fn from(v3: SnapshotFileV3) -> SnapshotFile {
        let s = v3.state;
        let m = s.map;
        let map = ClusterMap {
            fsid: m.fsid,
            epoch: m.epoch,
            mons: m.mons,
            osds: m.osds.into_iter().map(|(id, o)| (id, o.into())).collect(),
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
        SnapshotFile { meta: v3.meta, state }
    }
}
