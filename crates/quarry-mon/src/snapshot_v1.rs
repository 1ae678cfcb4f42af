//! Version 1 of the monitor snapshot body, kept to read snapshots written before pool
//! snapshots existed (version 2 added `snap_mode` and `pool_snaps` to each pool). Decoded
//! with these types and converted: a pool that had allocated self-managed snapshot ids is in
//! self-managed mode, any other has no mode yet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use openraft::{BasicNode, SnapshotMeta};
use serde::Deserialize;

use quarry_auth::ServiceKeyRing;
use quarry_types::{EntityName, OsdId, PoolId, SnapId};
use quarry_wire::SnapMode;

use crate::snapshot_v2::{ClusterMapV2, MonStateV2, OsdInfoV2, PoolInfoV2, SnapshotFileV2};
use crate::state::EntityAuth;

#[derive(Deserialize)]
pub(crate) struct SnapshotFileV1 {
    meta: SnapshotMeta<u64, BasicNode>,
    state: MonStateV1,
}

#[derive(Deserialize)]
struct MonStateV1 {
    bootstrapped: bool,
    map: ClusterMapV1,
    auth: BTreeMap<EntityName, EntityAuth>,
    service_keys: Option<ServiceKeyRing>,
    next_global_id: u64,
    next_pool_id: PoolId,
}

#[derive(Deserialize)]
struct ClusterMapV1 {
    fsid: String,
    epoch: u64,
    mons: BTreeMap<String, SocketAddr>,
    osds: BTreeMap<OsdId, OsdInfoV2>,
    pools: BTreeMap<PoolId, PoolInfoV1>,
    auth_floor: BTreeMap<String, u64>,
    blocklist: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct PoolInfoV1 {
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
}

impl From<SnapshotFileV1> for SnapshotFileV2 {
    fn from(v1: SnapshotFileV1) -> SnapshotFileV2 {
        let s = v1.state;
        let m = s.map;
        let pools = m
            .pools
            .into_iter()
            .map(|(id, p)| {
                let snap_mode =
                    if p.snap_seq > 0 { SnapMode::SelfManaged } else { SnapMode::Unset };
                let pool = PoolInfoV2 {
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
                    snap_mode,
                    pool_snaps: BTreeMap::new(),
                };
                (id, pool)
            })
            .collect();
        let map = ClusterMapV2 {
            fsid: m.fsid,
            epoch: m.epoch,
            mons: m.mons,
            osds: m.osds,
            pools,
            auth_floor: m.auth_floor,
            blocklist: m.blocklist,
        };
        let state = MonStateV2 {
            bootstrapped: s.bootstrapped,
            map,
            auth: s.auth,
            service_keys: s.service_keys,
            next_global_id: s.next_global_id,
            next_pool_id: s.next_pool_id,
        };
        SnapshotFileV2 { meta: v1.meta, state }
    }
}
