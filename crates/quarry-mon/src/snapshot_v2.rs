//! Version 2 of the monitor snapshot body, kept to read snapshots written before version 3
//! (which added to each pool its flags and quotas, to each OSD its override weight
//! `reweight`, and to the state the blocklist adders and the central config). Decoded with
//! these types and converted: pools get `hashpspool` and no quota, OSDs the reweight their
//! `in` implies (1 or 0), entries added before have no adder (they count for nobody), the
//! central config is empty; and what version 4 added (`snapshot_v3`): up sets equal to the
//! acting sets, no down stamps. Version 1 is converted to these types first (`snapshot_v1`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use openraft::{BasicNode, SnapshotMeta};
use serde::Deserialize;

use quarry_auth::ServiceKeyRing;
use quarry_types::{EntityName, OsdId, PoolId, SnapId};
use quarry_wire::{pool_flags, ClusterMap, OsdInfo, PoolInfo, PoolSnap, SnapMode};

use crate::snapshot::SnapshotFile;
use crate::state::{EntityAuth, MonState};

#[derive(Deserialize)]
pub(crate) struct SnapshotFileV2 {
    pub(crate) meta: SnapshotMeta<u64, BasicNode>,
    pub(crate) state: MonStateV2,
}

#[derive(Deserialize)]
pub(crate) struct MonStateV2 {
    pub(crate) bootstrapped: bool,
    pub(crate) map: ClusterMapV2,
    pub(crate) auth: BTreeMap<EntityName, EntityAuth>,
    pub(crate) service_keys: Option<ServiceKeyRing>,
    pub(crate) next_global_id: u64,
    pub(crate) next_pool_id: PoolId,
}

#[derive(Deserialize)]
pub(crate) struct ClusterMapV2 {
    pub(crate) fsid: String,
    pub(crate) epoch: u64,
    pub(crate) mons: BTreeMap<String, SocketAddr>,
    pub(crate) osds: BTreeMap<OsdId, OsdInfoV2>,
    pub(crate) pools: BTreeMap<PoolId, PoolInfoV2>,
    pub(crate) auth_floor: BTreeMap<String, u64>,
    pub(crate) blocklist: BTreeMap<String, u64>,
}

/// `OsdInfo` of versions 1 and 2 (no `reweight`).
#[derive(Deserialize)]
pub(crate) struct OsdInfoV2 {
    pub(crate) id: OsdId,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) host: String,
    pub(crate) up: bool,
    pub(crate) in_cluster: bool,
    pub(crate) weight: f64,
    pub(crate) up_from: u64,
    pub(crate) used_bytes: u64,
    pub(crate) avail_bytes: u64,
}

#[derive(Deserialize)]
pub(crate) struct PoolInfoV2 {
    pub(crate) id: PoolId,
    pub(crate) name: String,
    pub(crate) pg_num: u32,
    pub(crate) size: u32,
    pub(crate) min_size: u32,
    pub(crate) applications: BTreeSet<String>,
    pub(crate) snap_seq: SnapId,
    pub(crate) removed_snaps: BTreeSet<SnapId>,
    pub(crate) acting: Vec<Vec<OsdId>>,
    pub(crate) stored_objects: u64,
    pub(crate) stored_bytes: u64,
    pub(crate) snap_mode: SnapMode,
    pub(crate) pool_snaps: BTreeMap<SnapId, PoolSnap>,
}

impl From<OsdInfoV2> for OsdInfo {
    fn from(o: OsdInfoV2) -> OsdInfo {
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
            reweight: if o.in_cluster { 1.0 } else { 0.0 },
            down_since: 0,
        }
    }
}

impl From<PoolInfoV2> for PoolInfo {
    fn from(p: PoolInfoV2) -> PoolInfo {
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
            flags: pool_flags::HASHPSPOOL,
            quota_max_bytes: 0,
            quota_max_objects: 0,
        }
    }
}

impl From<SnapshotFileV2> for SnapshotFile {
    fn from(v2: SnapshotFileV2) -> SnapshotFile {
        let s = v2.state;
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
            blocklist_adders: BTreeMap::new(),
            config: BTreeMap::new(),
        };
        SnapshotFile { meta: v2.meta, state }
    }
}
