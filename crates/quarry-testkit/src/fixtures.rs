//! Map fixtures: cluster maps, OSD and pool entries built in one line, for unit tests that
//! need a `ClusterMap` without a monitor (routing, health, output, caps checks).
//!
//! Defaults are those of a healthy cluster: an OSD is up, in, weight 1, on host `host{id}`,
//! at `127.0.0.1:{6800 + id}`, `up_from` 1; a pool has `min_size` as the monitor sets it
//! (`size - size / 2`), no applications, no snapshots. [`MapBuilder::pool`] computes the
//! acting sets with `quarry_placement::place` over the OSDs that are in, as the monitor does.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use quarry_placement::Candidate;
use quarry_types::{OsdId, PgId, PoolId};
use quarry_wire::{ClusterMap, OsdInfo, PoolInfo};

/// The fsid of fixture maps.
pub const FIXTURE_FSID: &str = "00000000-0000-4000-8000-00000000f1c5";

/// An up, in OSD on `host{id}` at `127.0.0.1:{6800 + id}`.
pub fn osd_info(id: OsdId) -> OsdInfo {
    let port = 6800u16.saturating_add(u16::try_from(id).unwrap_or(u16::MAX));
    OsdInfo {
        id,
        addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        host: format!("host{id}"),
        up: true,
        in_cluster: true,
        weight: 1.0,
        up_from: 1,
        used_bytes: 0,
        avail_bytes: 0,
        reweight: 1.0,
        down_since: 0,
    }
}

/// A pool with the given acting sets (`pg_num` = their number).
pub fn pool_info(id: PoolId, name: &str, size: u32, acting: Vec<Vec<OsdId>>) -> PoolInfo {
    PoolInfo {
        id,
        name: name.to_string(),
        pg_num: acting.len() as u32,
        pg_num_target: acting.len() as u32,
        pg_num_pending: acting.len() as u32,
        creating: Default::default(),
        size,
        min_size: size - size / 2,
        applications: BTreeSet::new(),
        snap_seq: 0,
        removed_snaps: BTreeSet::new(),
        acting,
        stored_objects: 0,
        stored_bytes: 0,
        snap_mode: Default::default(),
        pool_snaps: Default::default(),
        flags: quarry_wire::pool_flags::HASHPSPOOL,
        quota_max_bytes: 0,
        quota_max_objects: 0,
        up: Vec::new(),
    }
}

/// Builds a [`ClusterMap`] step by step.
#[derive(Clone, Debug)]
pub struct MapBuilder {
    map: ClusterMap,
}

impl Default for MapBuilder {
    fn default() -> MapBuilder {
        MapBuilder::new()
    }
}

impl MapBuilder {
    /// An empty map at epoch 1 with fsid [`FIXTURE_FSID`].
    pub fn new() -> MapBuilder {
        MapBuilder { map: ClusterMap { fsid: FIXTURE_FSID.into(), epoch: 1, ..Default::default() } }
    }

    /// Sets the epoch.
    pub fn epoch(mut self, epoch: u64) -> MapBuilder {
        self.map.epoch = epoch;
        self
    }

    /// Adds monitor `name` at `addr`.
    pub fn mon(mut self, name: &str, addr: SocketAddr) -> MapBuilder {
        self.map.mons.insert(name.to_string(), addr);
        self
    }

    /// Adds OSDs `ids`, each as [`osd_info`] makes it.
    pub fn osds(mut self, ids: impl IntoIterator<Item = OsdId>) -> MapBuilder {
        for id in ids {
            self.map.osds.insert(id, osd_info(id));
        }
        self
    }

    /// Adds (or replaces) an OSD entry.
    pub fn osd(mut self, info: OsdInfo) -> MapBuilder {
        self.map.osds.insert(info.id, info);
        self
    }

    /// Changes an OSD already added.
    pub fn edit_osd(mut self, id: OsdId, edit: impl FnOnce(&mut OsdInfo)) -> MapBuilder {
        edit(self.map.osds.get_mut(&id).expect("edit_osd: add the OSD first"));
        self
    }

    /// Marks an OSD down.
    pub fn down(self, id: OsdId) -> MapBuilder {
        self.edit_osd(id, |o| o.up = false)
    }

    /// Adds pool `id` named `name` with `pg_num` PGs of `size` replicas, placed over the OSDs
    /// that are in (as the monitor places a new pool).
    pub fn pool(mut self, id: PoolId, name: &str, pg_num: u32, size: u32) -> MapBuilder {
        let candidates: Vec<Candidate> = self
            .map
            .osds
            .values()
            .filter(|o| o.in_cluster && o.weight > 0.0)
            .map(|o| Candidate { id: o.id, host: o.host.clone(), weight: o.weight })
            .collect();
        let acting = (0..pg_num)
            .map(|seed| {
                quarry_placement::place(PgId { pool: id, seed }, size as usize, &candidates)
            })
            .collect();
        self.map.pools.insert(id, pool_info(id, name, size, acting));
        self
    }

    /// Adds (or replaces) a pool entry.
    pub fn pool_entry(mut self, info: PoolInfo) -> MapBuilder {
        self.map.pools.insert(info.id, info);
        self
    }

    /// Changes a pool already added.
    pub fn edit_pool(mut self, id: PoolId, edit: impl FnOnce(&mut PoolInfo)) -> MapBuilder {
        edit(self.map.pools.get_mut(&id).expect("edit_pool: add the pool first"));
        self
    }

    /// The map.
    pub fn build(self) -> ClusterMap {
        self.map
    }
}

/// An object name (`{prefix}-{seed}-{i}`) that lands in PG `seed` of a pool of `pg_num` PGs.
pub fn name_in_pg(prefix: &str, pg_num: u32, seed: u32) -> String {
    (0..)
        .map(|i| format!("{prefix}-{seed}-{i}"))
        .find(|n| quarry_placement::pg_of(n, pg_num) == seed)
        .expect("some name lands in every PG")
}

/// The PGs of `pool` whose primary is `osd` in `map`.
pub fn pgs_with_primary(map: &ClusterMap, pool: PoolId, osd: OsdId) -> Vec<PgId> {
    let info = &map.pools[&pool];
    (0..info.pg_num)
        .filter(|&seed| info.acting[seed as usize].first() == Some(&osd))
        .map(|seed| PgId { pool, seed })
        .collect()
}
