//! `ceph -s`: the status report and the health checks, computed from the map (with the
//! leader's latest usage figures).
//!
//! Health checks (each adds one line and makes the cluster HEALTH_WARN):
//! Every check names its items on the lines after its summary (at most
//! [`DETAIL_LINES_MAX`], Ceph's `mon_health_max_detail`): `osd.1 (root=default,host=h1) is
//! down`, `pg 1.3 is down, acting [1]`, `pg 2.0 is active+undersized+degraded, acting [0]`,
//! `pg 1.1 is inconsistent, acting [1,0]`; `ceph health detail` prints them indented, its
//! JSON as each check's `detail`.
//!
//! - `N osds down`: OSDs that are `in` but not up;
//! - `Reduced data availability: N pgs inactive`: PGs whose primary is down (or that have
//!   no OSD at all), or whose acting set is smaller than the pool's `min_size` (the OSDs
//!   refuse their I/O with ENXIO); the latter are named per pool on detail lines
//!   (`pool 'big3': 8 pgs have 1 OSD, fewer than min_size 3`);
//! - `Degraded data redundancy: N pgs degraded, M pgs undersized`: PGs whose primary is up
//!   but a replica is down / whose acting set is smaller than the pool size;
//! - `N full osd(s)` (OSD_FULL, makes it HEALTH_ERR) and `N nearfull osd(s)` (OSD_NEARFULL):
//!   OSDs whose last beacon's disk figures pass `mon_osd_full_ratio` /
//!   `mon_osd_nearfull_ratio`. Their lines carry one detail per OSD after a newline
//!   (`osd.0 is full`), which `ceph health detail` prints indented under the summary.
//!
//! - `N pool(s) full` (`POOL_FULL`, [`pool_full_health`]): pools whose stored figures
//!   reached a quota (`osd pool set-quota`); writes to them wait, as Ceph's clients do;
//! - `N pgs stay on out osds ...` (Quarry's `OSD_OUT_HOLDS_PGS`, [`out_osds_health`]): PGs
//!   an out OSD still serves because no OSD that is in can take them (otherwise they are
//!   remapped and moved: `Degraded data redundancy` while they have fewer replicas);
//! - `N blocklist entries (the map is K KiB) ...` (`MON_BLOCKLIST_LARGE` in `ceph health
//!   detail`; Quarry's own check, [`blocklist_health`]): at least half of `mon_blocklist_max`
//!   live entries.
//!
//! Errors (HEALTH_ERR), from what OSDs report ([`damage_health`]):
//! - `Possible data damage: N pgs inconsistent` (Ceph's `PG_DAMAGED`): PGs an up OSD met
//!   damaged data in; the OSD rebuilds its replica from another one, then the line goes.

use std::collections::{BTreeMap, BTreeSet};

use quarry_types::{full_health, FullRatios, FullState, OsdId, PgId};
use quarry_wire::{ClusterMap, OsdInfo, PoolInfo, StatusReport};

use crate::mon::{unix_now, Mon};

/// PG counts by health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgCounts {
    /// All PGs.
    pub total: u64,
    /// Primary up and at least `min_size` OSDs in the acting set.
    pub active: u64,
    /// Acting set smaller than the pool's `min_size` (inactive whatever is up).
    pub below_min_size: u64,
    /// Active, but some replica down.
    pub degraded: u64,
    /// Active, acting set smaller than the pool size.
    pub undersized: u64,
    /// Active, being moved to its up set (`+remapped+backfilling`).
    pub remapped: u64,
}

/// Counts PGs of every pool by health.
pub fn pg_counts(map: &ClusterMap) -> PgCounts {
    let mut counts = PgCounts::default();
    for pool in map.pools.values() {
        for seed in 0..pool.acting.len() {
            let pg = PgId { pool: pool.id, seed: seed as u32 };
            counts.total += 1;
            let state = map.pg_state(pg);
            if state.contains("peered") {
                counts.below_min_size += 1;
                continue;
            }
            if !state.starts_with("active") {
                continue;
            }
            counts.active += 1;
            // As before rebalancing: "degraded" counts PGs with a voter down; undersized
            // PGs are counted as such.
            let acting = map.acting(pg);
            let down = acting.iter().any(|o| !map.osds.get(o).is_some_and(|i| i.up));
            counts.degraded += u64::from(down);
            counts.undersized += u64::from(acting.len() < pool.size as usize);
            counts.remapped += u64::from(state.contains("remapped"));
        }
    }
    counts
}

/// The full state of every OSD of `map` from its reported disk figures, by id.
pub fn osd_full_states(map: &ClusterMap, ratios: &FullRatios) -> Vec<(u64, FullState)> {
    map.osds.values().map(|o| (o.id, ratios.state(o.used_bytes, o.avail_bytes))).collect()
}

/// `HEALTH_OK`, `HEALTH_WARN` or `HEALTH_ERR`, and one line per failing check (a check with
/// per-OSD details has them on the following lines of the same string).
pub fn health(map: &ClusterMap, ratios: &FullRatios) -> (String, Vec<String>) {
    let mut lines = Vec::new();
    let mut error = false;
    for (code, summary, details) in full_health(&osd_full_states(map, ratios)) {
        error |= code == "OSD_FULL";
        lines.push(std::iter::once(summary).chain(details).collect::<Vec<_>>().join("\n"));
    }
    let down: Vec<&OsdInfo> = map.osds.values().filter(|o| o.in_cluster && !o.up).collect();
    if !down.is_empty() {
        let items = down
            .iter()
            .map(|o| format!("osd.{} (root=default,host={}) is down", o.id, o.host))
            .collect();
        lines.push(with_details(format!("{} osds down", down.len()), items));
    }
    let (inactive_pgs, degraded_pgs) = pg_details(map);
    let pgs = pg_counts(map);
    if pgs.active < pgs.total {
        let mut line =
            format!("Reduced data availability: {} pgs inactive", pgs.total - pgs.active);
        for pool in map.pools.values() {
            let short: Vec<usize> = pool
                .acting
                .iter()
                .map(|a| a.len())
                .filter(|&n| n < pool.min_size as usize)
                .collect();
            let Some(&most) = short.iter().max() else { continue };
            let osds = if most == 1 { "OSD" } else { "OSDs" };
            line.push_str(&format!(
                "\npool '{}': {} pgs have {most} {osds} or fewer, below min_size {} (size {}): I/O refused",
                pool.name,
                short.len(),
                pool.min_size,
                pool.size
            ));
        }
        lines.push(with_details(line, inactive_pgs));
    }
    let mut degraded = Vec::new();
    if pgs.degraded > 0 {
        degraded.push(format!("{} pgs degraded", pgs.degraded));
    }
    if pgs.undersized > 0 {
        degraded.push(format!("{} pgs undersized", pgs.undersized));
    }
    if !degraded.is_empty() {
        let line = format!("Degraded data redundancy: {}", degraded.join(", "));
        lines.push(with_details(line, degraded_pgs));
    }
    if let Some(line) = out_osds_health(map) {
        lines.push(line);
    }
    if let Some(line) = pool_full_health(map) {
        lines.push(line);
    }
    let status = match (error, lines.is_empty()) {
        (true, _) => "HEALTH_ERR",
        (false, true) => "HEALTH_OK",
        (false, false) => "HEALTH_WARN",
    };
    (status.to_string(), lines)
}

/// `N pgs stay on out osds ...` (Quarry's `OSD_OUT_HOLDS_PGS`): PGs whose up set still
/// names an out OSD, because placement found no other OSD that is in (the out OSD keeps
/// serving them). PGs that can move are remapped instead (their primaries move them, and
/// `ceph -s` counts them `remapped+backfilling`). One detail line per out OSD.
pub fn out_osds_health(map: &ClusterMap) -> Option<String> {
    let out: BTreeSet<OsdId> = map.osds.values().filter(|o| !o.in_cluster).map(|o| o.id).collect();
    if out.is_empty() {
        return None;
    }
    let mut pgs = 0;
    let mut per_osd: BTreeMap<OsdId, usize> = BTreeMap::new();
    for pool in map.pools.values() {
        for seed in 0..pool.acting.len() {
            let pg = PgId { pool: pool.id, seed: seed as u32 };
            let held: Vec<&OsdId> = map.up_set(pg).iter().filter(|id| out.contains(id)).collect();
            if !held.is_empty() {
                pgs += 1;
            }
            for id in held {
                *per_osd.entry(*id).or_default() += 1;
            }
        }
    }
    if pgs == 0 {
        return None;
    }
    let mut line = format!(
        "{pgs} pgs stay on out osds: no OSD that is in can take them, the out OSD keeps serving them"
    );
    for (id, n) in per_osd {
        line.push_str(&format!("\nosd.{id} is out and still holds {n} pgs"));
    }
    Some(line)
}

/// `N pool(s) full` (Ceph's `POOL_FULL`) with one detail per pool that reached a quota:
/// `pool 'p' is full (reached quota's max_objects: 10)` (or `max_bytes: 1 MiB`).
pub fn pool_full_health(map: &ClusterMap) -> Option<String> {
    let full: Vec<&PoolInfo> = map.pools.values().filter(|p| p.is_full()).collect();
    if full.is_empty() {
        return None;
    }
    let mut line = format!("{} pool(s) full", full.len());
    for p in full {
        let reached = if p.quota_max_objects > 0 && p.stored_objects >= p.quota_max_objects {
            format!("max_objects: {}", p.quota_max_objects)
        } else if p.quota_max_bytes > 0 {
            format!("max_bytes: {}", bytes_iec(p.quota_max_bytes))
        } else {
            format!("max_objects: {}", p.quota_max_objects)
        };
        line.push_str(&format!("\npool '{}' is full (reached quota's {reached})", p.name));
    }
    Some(line)
}

/// Ceph's byte unit text (`1 MiB`, `100 B`).
fn bytes_iec(v: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = v as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v} B")
    } else if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Detail lines per check at most (Ceph's `mon_health_max_detail`); more are counted on a
/// last line.
pub const DETAIL_LINES_MAX: usize = 50;

/// A check's summary with its detail lines (at most [`DETAIL_LINES_MAX`], then `... N more`),
/// one per line: `ceph health detail` prints them indented under the summary, its JSON as
/// the check's `detail`.
fn with_details(summary: String, items: Vec<String>) -> String {
    let mut text = summary;
    let extra = items.len().saturating_sub(DETAIL_LINES_MAX);
    for item in items.into_iter().take(DETAIL_LINES_MAX) {
        text.push('\n');
        text.push_str(&item);
    }
    if extra > 0 {
        text.push_str(&format!("\n... {extra} more"));
    }
    text
}

/// Ceph's per-PG detail lines: (inactive PGs, degraded or undersized active PGs), e.g.
/// `pg 1.3 is down, acting [1]`, `pg 2.0 is active+undersized+degraded, acting [0]`.
fn pg_details(map: &ClusterMap) -> (Vec<String>, Vec<String>) {
    let (mut inactive, mut degraded) = (Vec::new(), Vec::new());
    for pool in map.pools.values() {
        for (seed, acting) in pool.acting.iter().enumerate() {
            let pg = PgId { pool: pool.id, seed: seed as u32 };
            let set = acting.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let state = map.pg_state(pg);
            if !state.starts_with("active") {
                inactive.push(format!("pg {pg} is {state}, acting [{set}]"));
            } else if state.contains("degraded") {
                degraded.push(format!("pg {pg} is {state}, acting [{set}]"));
            }
        }
    }
    (inactive, degraded)
}

/// Adds `PG_DAMAGED` to `report` for the PGs the up OSDs of `map` (the incarnation that
/// reported) say are damaged on them, in pools that still exist: HEALTH_ERR.
pub fn damage_health(
    report: &mut StatusReport,
    map: &ClusterMap,
    damaged: &BTreeMap<OsdId, (u64, Vec<PgId>)>,
) {
    let current =
        |id: &OsdId, up_from: u64| map.osds.get(id).is_some_and(|o| o.up && o.up_from == up_from);
    let pgs: BTreeSet<PgId> = damaged
        .iter()
        .filter(|(id, (up_from, _))| current(id, *up_from))
        .flat_map(|(_, (_, pgs))| pgs.iter().copied())
        .filter(|pg| map.pools.contains_key(&pg.pool))
        .collect();
    if pgs.is_empty() {
        return;
    }
    let n = pgs.len();
    let plural = if n == 1 { "pg" } else { "pgs" };
    let items = pgs
        .iter()
        .map(|pg| {
            let set: Vec<String> = map.acting(*pg).iter().map(u64::to_string).collect();
            format!("pg {pg} is inconsistent, acting [{}]", set.join(","))
        })
        .collect();
    let summary = format!("Possible data damage: {n} {plural} inconsistent");
    report.health_details.push(with_details(summary, items));
    report.health = "HEALTH_ERR".to_string();
}

/// Adds a warning to `report` when the blocklist holds at least half of `max`
/// (`mon_blocklist_max`) live entries: `N blocklist entries (the map is K KiB); each user
/// without auth rights may add up to MAX of them` (the map goes to every client and OSD).
pub fn blocklist_health(report: &mut StatusReport, map: &ClusterMap, max: u32, now: u64) {
    let live = map.blocklist.values().filter(|&&until| until > now).count();
    if live == 0 || live < (max as usize).div_ceil(2) {
        return;
    }
    let kib = bincode::serialized_size(map).unwrap_or(0).div_ceil(1024);
    report.health_details.push(format!(
        "{live} blocklist entries (the map is {kib} KiB); each user without auth rights may add up to {max} of them (mon_blocklist_max)"
    ));
    if report.health == "HEALTH_OK" {
        report.health = "HEALTH_WARN".to_string();
    }
}

/// The report for `map` (usage already filled in) with the given quorum.
pub fn report(map: &ClusterMap, quorum: Vec<String>, ratios: &FullRatios) -> StatusReport {
    let (health, health_details) = health(map, ratios);
    let total = map.osds.len() as u32;
    let (up, inn) = map.osd_counts();
    let pgs = pg_counts(map);
    // Usage figures come from OSD beacons: saturate rather than overflow (which aborts a
    // debug build).
    let sum = |f: fn(&PoolInfo) -> u64| map.pools.values().map(f).fold(0, u64::saturating_add);
    let osd_sum = |f: fn(&OsdInfo) -> u64| map.osds.values().map(f).fold(0, u64::saturating_add);
    StatusReport {
        fsid: map.fsid.clone(),
        health,
        health_details,
        mons: map.mons.keys().cloned().collect(),
        quorum,
        epoch: map.epoch,
        osds: (total, up as u32, inn as u32),
        pools: map.pools.values().cloned().collect(),
        pgs: (pgs.total, pgs.active),
        objects: sum(|p| p.stored_objects),
        stored_bytes: sum(|p| p.stored_bytes),
        used_bytes: osd_sum(|o| o.used_bytes),
        avail_bytes: osd_sum(|o| o.avail_bytes),
        // Filled from the beacons by `Mon::status` (the map has raw figures only).
        data_bytes: 0,
    }
}

/// Object data bytes of the OSDs in `map`, from their latest beacons (at most their raw
/// usage).
fn lock_beacons_data(mon: &Mon, map: &ClusterMap) -> u64 {
    let beacons = mon.beacons_snapshot();
    map.osds
        .values()
        .filter_map(|o| beacons.get(&o.id).map(|b| b.data_used.min(o.used_bytes)))
        .fold(0, u64::saturating_add)
}

impl Mon {
    /// `ceph -s` as this monitor sees it.
    pub fn status(&self) -> StatusReport {
        let map = self.map_with_usage();
        let has_leader = self.raft.metrics().borrow().current_leader.is_some();
        let quorum = if has_leader { vec![self.cfg.name.clone()] } else { Vec::new() };
        let mut status = report(&map, quorum, &self.cfg.full_ratios);
        status.data_bytes = lock_beacons_data(self, &map);
        damage_health(&mut status, &map, &self.damage_reports());
        blocklist_health(&mut status, &map, self.cfg.blocklist_max, unix_now());
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn osd(id: u64, up: bool) -> OsdInfo {
        OsdInfo { up, ..quarry_testkit::fixtures::osd_info(id) }
    }

    fn pool(acting: Vec<Vec<u64>>, size: u32) -> PoolInfo {
        quarry_testkit::fixtures::pool_info(1, "rbd", size, acting)
    }

    #[test]
    fn health_lines() {
        let mut map = ClusterMap::default();
        for id in 0..3 {
            map.osds.insert(id, osd(id, true));
        }
        map.pools.insert(1, pool(vec![vec![0, 1], vec![1, 0], vec![0]], 2));
        let mut three = quarry_testkit::fixtures::pool_info(2, "three", 3, vec![vec![0, 2, 1]]);
        three.min_size = 1;
        map.pools.insert(2, three);
        assert_eq!(
            health(&map, &FullRatios::default()).1,
            vec!["Degraded data redundancy: 1 pgs undersized\n\
                  pg 1.2 is active+undersized+degraded, acting [0]"
                .to_string()]
        );
        map.osds.get_mut(&1).unwrap().up = false;
        let (status, lines) = health(&map, &FullRatios::default());
        assert_eq!(status, "HEALTH_WARN");
        // Each check names its items on the following lines (`ceph health detail`).
        assert_eq!(lines[0], "1 osds down\nosd.1 (root=default,host=host1) is down");
        // 1.0 has one of its two voters up: no Raft majority, so no I/O, whatever min_size
        // (1) says; 2.0 has two of three: it serves.
        assert_eq!(
            lines[1],
            "Reduced data availability: 2 pgs inactive\n\
             pg 1.0 is undersized+degraded+peered, acting [0,1]\n\
             pg 1.1 is down, acting [1,0]"
        );
        assert_eq!(
            lines[2],
            "Degraded data redundancy: 1 pgs degraded, 1 pgs undersized\n\
             pg 1.2 is active+undersized+degraded, acting [0]\n\
             pg 2.0 is active+undersized+degraded, acting [0,2,1]"
        );
        let r = report(&map, vec!["a".into()], &FullRatios::default());
        assert_eq!(r.pgs, (4, 2));
        assert_eq!(r.osds, (3, 2, 3));
        map.pools.clear();
        map.osds.get_mut(&1).unwrap().up = true;
        assert_eq!(health(&map, &FullRatios::default()), ("HEALTH_OK".to_string(), Vec::new()));
    }

    /// A PG with fewer OSDs than its pool's min_size is inactive, whatever is up, and the
    /// detail names the pool; a size-2 pool on one OSD (min_size 1) is only undersized.
    #[test]
    fn pgs_below_min_size_are_inactive() {
        let mut map = ClusterMap::default();
        map.osds.insert(0, osd(0, true));
        let mut big = quarry_testkit::fixtures::pool_info(2, "big3", 5, vec![vec![0]; 8]);
        big.min_size = 3;
        map.pools.insert(2, big);
        map.pools.insert(1, pool(vec![vec![0]; 4], 2));
        let pgs = pg_counts(&map);
        assert_eq!((pgs.total, pgs.active, pgs.below_min_size), (12, 4, 8));
        let (status, lines) = health(&map, &FullRatios::default());
        assert_eq!(status, "HEALTH_WARN");
        let inactive: Vec<&str> = lines[0].lines().collect();
        assert_eq!(inactive.len(), 10, "{inactive:?}");
        assert_eq!(inactive[0], "Reduced data availability: 8 pgs inactive");
        assert_eq!(
            inactive[1],
            "pool 'big3': 8 pgs have 1 OSD or fewer, below min_size 3 (size 5): I/O refused"
        );
        assert_eq!(inactive[2], "pg 2.0 is undersized+degraded+peered, acting [0]");
        assert_eq!(inactive[9], "pg 2.7 is undersized+degraded+peered, acting [0]");
        assert!(lines[1].starts_with("Degraded data redundancy: 4 pgs undersized\npg 1.0 is "));
        // More PGs than Ceph's mon_health_max_detail: 50 lines, then a count.
        map.pools.get_mut(&2).unwrap().acting = vec![vec![0]; 70];
        let (_, lines) = health(&map, &FullRatios::default());
        let inactive: Vec<&str> = lines[0].lines().collect();
        assert_eq!(inactive.len(), 2 + DETAIL_LINES_MAX + 1);
        assert_eq!(inactive.last(), Some(&"... 20 more"));
    }

    /// The blocklist warning starts at half of `mon_blocklist_max` live entries (expired
    /// ones do not count) and gives the map's size.
    #[test]
    fn a_large_blocklist_is_a_warning() {
        let mut map = ClusterMap::default();
        for i in 0..5 {
            map.blocklist.insert(format!("10.0.0.{i}:0/0"), 100);
        }
        map.blocklist.insert("10.0.1.1:0/0".into(), 10);
        let mut r = report(&map, Vec::new(), &FullRatios::default());
        blocklist_health(&mut r, &map, 12, 50);
        assert_eq!(r.health, "HEALTH_OK", "5 live of 12: {:?}", r.health_details);
        map.blocklist.insert("10.0.1.2:0/0".into(), 100);
        blocklist_health(&mut r, &map, 12, 50);
        assert_eq!(r.health, "HEALTH_WARN");
        assert_eq!(
            r.health_details,
            vec!["6 blocklist entries (the map is 1 KiB); each user without auth rights may add \
                  up to 12 of them (mon_blocklist_max)"
                .to_string()]
        );
    }

    /// Goal: figures reported by OSDs (beacons) cannot crash the monitor when summed: a sum
    /// that overflows saturates (overflow checks abort the process in debug builds).
    #[test]
    fn huge_usage_figures_saturate() {
        let mut map = ClusterMap::default();
        for id in [0, 1] {
            let mut o = osd(id, true);
            o.used_bytes = u64::MAX - 1;
            o.avail_bytes = u64::MAX / 2 + 1;
            map.osds.insert(id, o);
        }
        let mut p = pool(vec![vec![0], vec![1]], 1);
        p.stored_objects = u64::MAX;
        p.stored_bytes = u64::MAX;
        map.pools.insert(1, p.clone());
        p.id = 2;
        map.pools.insert(2, p);
        let r = report(&map, Vec::new(), &FullRatios::default());
        assert_eq!((r.used_bytes, r.avail_bytes), (u64::MAX, u64::MAX));
        assert_eq!((r.objects, r.stored_bytes), (u64::MAX, u64::MAX));

        let beacon = |objects, bytes| crate::mon::Beacon {
            up_from: 1,
            seen: std::time::Instant::now(),
            usage: [(1, quarry_wire::Usage { objects, bytes })].into(),
            disk_used: u64::MAX,
            disk_avail: u64::MAX,
            data_used: 0,
            pgs: None,
        };
        let beacons = [(0, beacon(u64::MAX, u64::MAX)), (1, beacon(u64::MAX, 7))].into();
        crate::mon::overlay_usage(&mut map, &beacons);
        let p = &map.pools[&1];
        assert_eq!((p.stored_objects, p.stored_bytes), (u64::MAX, u64::MAX));
    }

    /// Goal: a PG whose acting primary (up, this incarnation) reports PGs in its beacon but
    /// not this one is `creating` (a split's child before the split); a beacon without the
    /// report, from an older incarnation or of a down OSD claims nothing; a merging pair is
    /// `premerge` even once its source's state is gone (merged, not counted yet).
    #[test]
    fn pgs_not_in_their_primarys_store_are_creating() {
        let mut map = ClusterMap::default();
        for id in [0, 1] {
            map.osds.insert(id, osd(id, true));
        }
        map.pools.insert(1, pool(vec![vec![0], vec![1], vec![0], vec![1]], 1));
        let beacon = |up_from, held: Option<Vec<u32>>| crate::mon::Beacon {
            up_from,
            seen: std::time::Instant::now(),
            usage: Default::default(),
            disk_used: 0,
            disk_avail: 0,
            data_used: 0,
            pgs: held.map(|seeds| [(1, seeds.into_iter().collect())].into()),
        };
        let states = |map: &ClusterMap| -> Vec<&'static str> {
            (0..map.pools[&1].pg_num).map(|seed| map.pg_state(PgId { pool: 1, seed })).collect()
        };
        let mut shown = map.clone();
        // osd.0 holds PG 0 but not PG 2 (a child of 0 at pg_num 4, not split yet); osd.1
        // sent no report.
        let beacons = [(0, beacon(1, Some(vec![0]))), (1, beacon(1, None))].into();
        crate::mon::overlay_usage(&mut shown, &beacons);
        assert_eq!(shown.pools[&1].creating, BTreeSet::from([2]));
        assert_eq!(states(&shown), ["active+clean", "active+clean", "creating", "active+clean"]);
        // A report of another incarnation claims nothing.
        let mut shown = map.clone();
        let beacons = [(0, beacon(7, Some(vec![])))].into();
        crate::mon::overlay_usage(&mut shown, &beacons);
        assert!(shown.pools[&1].creating.is_empty());
        // A merge of 3 into 1 marked, 3's state gone from osd.1: premerge, not creating.
        let mut merging = map.clone();
        merging.pools.get_mut(&1).unwrap().pg_num_pending = 3;
        merging.pools.get_mut(&1).unwrap().pg_num_target = 2;
        let beacons = [(0, beacon(1, Some(vec![0, 2]))), (1, beacon(1, Some(vec![1])))].into();
        crate::mon::overlay_usage(&mut merging, &beacons);
        assert_eq!(merging.pools[&1].creating, BTreeSet::from([3]));
        assert_eq!(
            states(&merging),
            ["active+clean", "active+clean+premerge", "active+clean", "active+clean+premerge"]
        );
    }

    /// Goal: PG_DAMAGED counts each damaged PG once, only from up OSDs' current incarnation
    /// and existing pools, and makes the cluster HEALTH_ERR; no report, no line.
    #[test]
    fn damaged_pgs_make_health_err() {
        let mut map = ClusterMap::default();
        for id in [0, 1, 2] {
            map.osds.insert(id, osd(id, id != 2));
        }
        map.pools.insert(1, pool(vec![vec![0, 1], vec![1, 0]], 2));
        let pg = |seed| PgId { pool: 1, seed };
        let up_from = map.osds[&0].up_from;
        let mut damaged = BTreeMap::new();
        let mut r = report(&map, Vec::new(), &FullRatios::default());
        damage_health(&mut r, &map, &damaged);
        assert_eq!(r.health, "HEALTH_WARN", "osd.2 is down");
        assert_eq!(
            r.health_details,
            vec!["1 osds down\nosd.2 (root=default,host=host2) is down".to_string()]
        );
        damaged.insert(0, (up_from, vec![pg(0), pg(1)]));
        damaged.insert(1, (map.osds[&1].up_from, vec![pg(1)]));
        damaged.insert(2, (map.osds[&2].up_from, vec![pg(5)])); // down
        damaged.insert(3, (0, vec![PgId { pool: 9, seed: 0 }])); // unknown osd, pool
        let mut r = report(&map, Vec::new(), &FullRatios::default());
        damage_health(&mut r, &map, &damaged);
        assert_eq!(r.health, "HEALTH_ERR");
        assert_eq!(
            r.health_details[1],
            "Possible data damage: 2 pgs inconsistent\npg 1.0 is inconsistent, acting [0,1]\n\
             pg 1.1 is inconsistent, acting [1,0]"
        );
        damaged.insert(0, (up_from + 1, vec![pg(0)])); // an older incarnation's report
        let mut r = report(&map, Vec::new(), &FullRatios::default());
        damage_health(&mut r, &map, &damaged);
        assert_eq!(
            r.health_details[1],
            "Possible data damage: 1 pg inconsistent\npg 1.1 is inconsistent, acting [1,0]"
        );
    }

    /// Goal: a beacon that moves its OSD across a ratio (either way) is noticed, so
    /// subscribers get the map with the new figures; one within the same state is not.
    #[test]
    fn full_state_changes_are_noticed() {
        let ratios = FullRatios::default();
        let beacon = |used: u64| crate::mon::Beacon {
            up_from: 1,
            seen: std::time::Instant::now(),
            usage: Default::default(),
            disk_used: used << 20,
            disk_avail: (100 - used) << 20,
            data_used: 0,
            pgs: None,
        };
        let changed = |old: Option<u64>, new: u64| {
            crate::mon::full_state_changed(&ratios, old.map(beacon).as_ref(), &beacon(new))
        };
        assert!(!changed(None, 10));
        assert!(!changed(Some(10), 80));
        assert!(changed(Some(80), 86));
        assert!(!changed(Some(86), 90));
        assert!(changed(Some(90), 95));
        assert!(changed(Some(95), 97));
        assert!(changed(Some(97), 50));
        assert!(changed(None, 96));
    }

    /// Goal: OSDs whose reported disk figures pass the ratios show as Ceph shows them:
    /// OSD_NEARFULL is a warning, OSD_FULL (also at failsafe) an error, each with per-OSD
    /// details; an OSD that has not reported (0/0) is not full.
    #[test]
    fn full_and_nearfull_osds() {
        let mut map = ClusterMap::default();
        let ratios = FullRatios::default();
        for (id, used) in [(0u64, 96u64), (1, 86), (2, 10), (3, 99)] {
            let mut o = osd(id, true);
            o.used_bytes = used << 20;
            o.avail_bytes = (100 - used) << 20;
            map.osds.insert(id, o);
        }
        map.osds.insert(4, osd(4, true));
        let (status, lines) = health(&map, &ratios);
        assert_eq!(status, "HEALTH_ERR");
        assert_eq!(lines[0], "2 full osd(s)\nosd.0 is full\nosd.3 is full");
        assert_eq!(lines[1], "1 nearfull osd(s)\nosd.1 is near full");
        for id in [0, 3] {
            let o = map.osds.get_mut(&id).unwrap();
            (o.used_bytes, o.avail_bytes) = (50 << 20, 50 << 20);
        }
        let (status, lines) = health(&map, &ratios);
        assert_eq!(status, "HEALTH_WARN");
        assert_eq!(lines, vec!["1 nearfull osd(s)\nosd.1 is near full".to_string()]);
        // Other ratios (ceph.conf) move the thresholds.
        let lax = FullRatios { nearfull: 0.9, full: 0.95, failsafe: 0.97 };
        assert_eq!(health(&map, &lax).0, "HEALTH_OK");
    }
}
