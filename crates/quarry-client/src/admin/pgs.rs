//! Placement-group and per-OSD views computed from the cluster map, in Ceph's shapes:
//! `ceph pg stat`, `pg ls`, `pg dump pgs_brief`, `osd df [tree]`, `quorum_status`, and the
//! PG state counts `ceph -s` prints. Pure: the map (and the status report's usage) in, text
//! or `serde_json::Value` out.
//!
//! # PG states (what Quarry's PGs can be, named as Ceph names them)
//! A PG's Raft group serves while its primary (leadership is pinned to it) and a majority of
//! its acting set are up; the states are `ClusterMap::pg_state`'s:
//! - `active+clean`: every replica of the pool's `size` is up;
//! - `active+undersized+degraded`: serving, with fewer replicas placed than `size`
//!   (`active+degraded`: a replica is down);
//! - `+remapped+backfilling` added: its up set differs from its acting set, its primary is
//!   moving it (new replicas catching up as Raft learners);
//! - `undersized+degraded+peered`: fewer replicas up than the pool's `min_size` or than a
//!   majority of its acting set (no I/O);
//! - `down`: its primary is down, or it has no OSD at all (no I/O).
//!
//! The rows' `up` is Ceph's up set: where placement wants the PG (the monitor's), the
//! `acting` set who serves it now (the Raft voters).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use quarry_types::{OsdId, PgId};
use quarry_wire::{ClusterMap, StatusReport};

use super::plain::{bytes_iec, Align, Table};

/// One PG as the views show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgRow {
    /// The PG (`1.1f`).
    pub pg: PgId,
    /// Its state (see the module docs).
    pub state: &'static str,
    /// Ceph's up set: where placement wants the PG, its members that are up.
    pub up: Vec<OsdId>,
    /// The acting set.
    pub acting: Vec<OsdId>,
}

impl PgRow {
    /// The primary: the acting set's first OSD, if up.
    pub fn primary(&self) -> Option<OsdId> {
        self.acting.first().copied().filter(|p| self.up.contains(p))
    }
}

/// Every PG of every pool, in pool and PG order.
pub fn pg_rows(map: &ClusterMap) -> Vec<PgRow> {
    let is_up = |osd: &OsdId| map.osds.get(osd).is_some_and(|o| o.up);
    let mut rows = Vec::new();
    for pool in map.pools.values() {
        for seed in 0..pool.pg_num {
            let pg = PgId { pool: pool.id, seed };
            let acting = map.acting(pg).to_vec();
            let up: Vec<OsdId> = map.up_set(pg).iter().copied().filter(is_up).collect();
            let state = map.pg_state(pg);
            rows.push(PgRow { pg, state, up, acting });
        }
    }
    rows
}

/// `ceph pg PGID query` (`PGID` as Ceph writes it: `POOL.SEED`, the seed in hex): the fields
/// Quarry knows from the map, in Ceph's places: `state`, `epoch`, `up`, `acting`,
/// `acting_recovery_backfill`, and `info` with `pgid` and `stats` (`state`,
/// `reported_epoch`, `up`, `acting`, `up_primary`, `acting_primary`; -1 for none). Ceph's
/// peering history, logs and scrub fields have no Quarry counterpart and are left out.
/// ENOENT `i don't have pgid X` for a PG the map lacks, EINVAL for a malformed id.
pub fn pg_query_json(map: &ClusterMap, pgid: &str) -> Result<Value, super::CommandReply> {
    let invalid = || {
        super::CommandReply::failed(
            quarry_types::ErrorCode::EINVAL,
            format!("pgid has invalid value '{pgid}': expected POOL.SEED (e.g. 1.1f)"),
        )
    };
    let (pool, seed) = pgid.split_once('.').ok_or_else(invalid)?;
    let pool: u64 = pool.parse().map_err(|_| invalid())?;
    let seed = u32::from_str_radix(seed, 16).map_err(|_| invalid())?;
    let pg = PgId { pool, seed };
    let Some(row) = pg_rows(map).into_iter().find(|r| r.pg == pg) else {
        return Err(super::CommandReply::failed(
            quarry_types::ErrorCode::ENOENT,
            format!("i don't have pgid {pgid}"),
        ));
    };
    let primary = |set: &[OsdId]| set.first().map(|&p| p as i64).unwrap_or(-1);
    let up_primary = row.primary().map(|p| p as i64).unwrap_or(-1);
    let backfill: Vec<String> = row.acting.iter().map(|o| o.to_string()).collect();
    Ok(json!({
        "state": row.state,
        "epoch": map.epoch,
        "up": row.up,
        "acting": row.acting,
        "acting_recovery_backfill": backfill,
        "info": {
            "pgid": pg.to_string(),
            "stats": {
                "state": row.state,
                "reported_epoch": map.epoch,
                "up": row.up,
                "acting": row.acting,
                "up_primary": up_primary,
                "acting_primary": primary(&row.acting),
            },
        },
    }))
}

/// How many PGs are in each state, most common first (Ceph's order in `ceph -s`).
pub fn by_state(rows: &[PgRow]) -> Vec<(&'static str, usize)> {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for row in rows {
        *counts.entry(row.state).or_default() += 1;
    }
    let mut counts: Vec<(&'static str, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts
}

/// `[0,1]p0`: a set with its primary, as `pg ls` prints it.
fn set_with_primary(set: &[OsdId], primary: Option<OsdId>) -> String {
    let ids: Vec<String> = set.iter().map(ToString::to_string).collect();
    let primary = primary.map_or("-1".to_string(), |p| p.to_string());
    format!("[{}]p{primary}", ids.join(","))
}

fn set_list(set: &[OsdId]) -> String {
    let ids: Vec<String> = set.iter().map(ToString::to_string).collect();
    format!("[{}]", ids.join(","))
}

/// `ceph pg stat`: `32 pgs: 32 active+clean; 0 B data, 5 MiB used, 9 GiB / 10 GiB avail`.
pub fn pg_stat(map: &ClusterMap, s: &StatusReport) -> String {
    let rows = pg_rows(map);
    let states: Vec<String> = by_state(&rows).iter().map(|(st, n)| format!("{n} {st}")).collect();
    format!(
        "{} pgs: {}; {} data, {} used, {} / {} avail\n",
        rows.len(),
        states.join(", "),
        bytes_iec(s.stored_bytes),
        bytes_iec(s.used_bytes),
        bytes_iec(s.avail_bytes),
        bytes_iec(s.used_bytes.saturating_add(s.avail_bytes))
    )
}

/// `ceph pg stat -f json`.
pub fn pg_stat_json(map: &ClusterMap, s: &StatusReport) -> Value {
    let rows = pg_rows(map);
    let states: Vec<Value> =
        by_state(&rows).iter().map(|(st, n)| json!({"name": st, "num": n})).collect();
    json!({
        "pg_ready": true,
        "num_pg_by_state": states,
        "num_pgs": rows.len(),
        "num_bytes": s.stored_bytes,
        "total_bytes": s.used_bytes.saturating_add(s.avail_bytes),
        "total_avail_bytes": s.avail_bytes,
        "total_used_bytes": s.used_bytes
    })
}

/// `ceph pg ls` (`brief`: `ceph pg dump pgs_brief`).
pub fn pg_list(map: &ClusterMap, brief: bool) -> String {
    let rows = pg_rows(map);
    if brief {
        let mut t = Table::new(&[
            ("PG_STAT", Align::Left),
            ("STATE", Align::Left),
            ("UP", Align::Left),
            ("UP_PRIMARY", Align::Right),
            ("ACTING", Align::Left),
            ("ACTING_PRIMARY", Align::Right),
        ]);
        for r in &rows {
            let primary = r.primary().map_or("-1".to_string(), |p| p.to_string());
            t.row(vec![
                r.pg.to_string(),
                r.state.into(),
                set_list(&r.up),
                primary.clone(),
                set_list(&r.acting),
                primary,
            ]);
        }
        return t.render();
    }
    let mut t = Table::new(&[
        ("PG", Align::Left),
        ("STATE", Align::Left),
        ("UP", Align::Left),
        ("ACTING", Align::Left),
    ]);
    for r in &rows {
        t.row(vec![
            r.pg.to_string(),
            r.state.into(),
            set_with_primary(&r.up, r.primary()),
            set_with_primary(&r.acting, r.primary()),
        ]);
    }
    t.render()
}

/// `ceph pg ls -f json` / `ceph pg dump pgs_brief -f json`.
pub fn pg_list_json(map: &ClusterMap) -> Value {
    let stats: Vec<Value> = pg_rows(map)
        .iter()
        .map(|r| {
            let primary = r.primary().map_or(-1, |p| p as i64);
            json!({
                "pgid": r.pg.to_string(),
                "state": r.state,
                "up": r.up,
                "up_primary": primary,
                "acting": r.acting,
                "acting_primary": primary
            })
        })
        .collect();
    json!({"pg_ready": true, "pg_stats": stats})
}

/// One OSD's figures: (id, size, used, avail, utilisation %, PGs).
type OsdUse = (OsdId, u64, u64, u64, f64, usize);

/// What `osd df` prints, in both formats: per-OSD figures and their totals.
struct OsdDf {
    osds: Vec<OsdUse>,
    /// (size, used, avail) of every OSD.
    total: (u64, u64, u64),
    /// Used / size of every OSD, %.
    average: f64,
}

impl OsdDf {
    fn of(map: &ClusterMap) -> OsdDf {
        let rows = pg_rows(map);
        let osds: Vec<OsdUse> = map
            .osds
            .values()
            .map(|o| {
                let size = o.used_bytes.saturating_add(o.avail_bytes);
                let util = if size == 0 { 0.0 } else { o.used_bytes as f64 * 100.0 / size as f64 };
                let pgs = rows.iter().filter(|r| r.acting.contains(&o.id)).count();
                (o.id, size, o.used_bytes, o.avail_bytes, util, pgs)
            })
            .collect();
        let total = sum(osds.iter());
        let average = if total.0 == 0 { 0.0 } else { total.1 as f64 * 100.0 / total.0 as f64 };
        OsdDf { osds, total, average }
    }

    /// An utilisation relative to the average (Ceph's VAR).
    fn var(&self, util: f64) -> f64 {
        if self.average == 0.0 {
            1.0
        } else {
            util / self.average
        }
    }

    /// The smallest and largest VAR (0 and 0 without OSDs).
    fn min_max_var(&self) -> (f64, f64) {
        let vars = self.osds.iter().map(|u| self.var(u.4));
        let (min, max) = vars.fold((f64::MAX, 0.0f64), |m, v| (m.0.min(v), m.1.max(v)));
        if self.osds.is_empty() {
            (0.0, 0.0)
        } else {
            (min, max)
        }
    }

    /// The standard deviation of the utilisations.
    fn stddev(&self) -> f64 {
        if self.osds.is_empty() {
            return 0.0;
        }
        let sum: f64 = self.osds.iter().map(|u| (u.4 - self.average).powi(2)).sum();
        (sum / self.osds.len() as f64).sqrt()
    }
}

/// (size, used, avail) summed over `osds`.
fn sum<'a>(osds: impl Iterator<Item = &'a OsdUse>) -> (u64, u64, u64) {
    osds.fold((0, 0, 0), |t, u| (t.0 + u.1, t.1 + u.2, t.2 + u.3))
}

/// `ceph osd df [tree]`.
pub fn osd_df(map: &ClusterMap, tree: bool) -> String {
    let df = OsdDf::of(map);
    let (usage, total, average) = (&df.osds, df.total, df.average);
    let var = |util: f64| df.var(util);
    let mut heads = vec![
        ("ID", Align::Right),
        ("CLASS", Align::Right),
        ("WEIGHT", Align::Right),
        ("REWEIGHT", Align::Right),
        ("SIZE", Align::Right),
        ("RAW USE", Align::Right),
        ("DATA", Align::Right),
        ("OMAP", Align::Right),
        ("META", Align::Right),
        ("AVAIL", Align::Right),
        ("%USE", Align::Right),
        ("VAR", Align::Right),
        ("PGS", Align::Right),
        ("STATUS", Align::Right),
    ];
    if tree {
        heads.push(("TYPE NAME", Align::Left));
    }
    let mut t = Table::new(&heads);
    let mut hosts: BTreeMap<&str, Vec<OsdId>> = BTreeMap::new();
    for o in map.osds.values() {
        hosts.entry(o.host.as_str()).or_default().push(o.id);
    }
    let osd_row = |id: OsdId| -> Vec<String> {
        let o = &map.osds[&id];
        let u = usage.iter().find(|u| u.0 == id).copied().unwrap_or((id, 0, 0, 0, 0.0, 0));
        let mut row = vec![
            id.to_string(),
            "ssd".into(),
            format!("{:.5}", o.weight),
            super::plain::weight(o.reweight),
            bytes_iec(u.1),
            bytes_iec(u.2),
            bytes_iec(u.2),
            "0 B".into(),
            "0 B".into(),
            bytes_iec(u.3),
            format!("{:.2}", u.4),
            format!("{:.2}", var(u.4)),
            u.5.to_string(),
            if o.up { "up".into() } else { "down".into() },
        ];
        if tree {
            row.push(format!("        osd.{id}"));
        }
        row
    };
    if tree {
        let bucket = |id: String, name: String, (size, used, avail): (u64, u64, u64)| {
            let util = if size == 0 { 0.0 } else { used as f64 * 100.0 / size as f64 };
            let mut row = vec![id, String::new(), String::new(), "-".into()];
            row.extend([bytes_iec(size), bytes_iec(used), bytes_iec(used)]);
            row.extend(["0 B".into(), "0 B".into(), bytes_iec(avail)]);
            row.extend([
                format!("{util:.2}"),
                format!("{:.2}", var(util)),
                "-".into(),
                String::new(),
            ]);
            row.push(name);
            row
        };
        t.row(bucket("-1".into(), "root default".into(), total));
        for (i, (host, ids)) in hosts.iter().enumerate() {
            let host_sum = sum(usage.iter().filter(|u| ids.contains(&u.0)));
            t.row(bucket(format!("-{}", i + 2), format!("    host {host}"), host_sum));
            for id in ids {
                t.row(osd_row(*id));
            }
        }
    } else {
        for id in map.osds.keys() {
            t.row(osd_row(*id));
        }
    }
    let mut total_row = vec![String::new(); 4];
    total_row[3] = "TOTAL".into();
    total_row.extend([bytes_iec(total.0), bytes_iec(total.1), bytes_iec(total.1)]);
    total_row.extend(["0 B".into(), "0 B".into(), bytes_iec(total.2), format!("{average:.2}")]);
    t.row(total_row);
    let (min, max) = df.min_max_var();
    let mut out = t.render();
    let _ = writeln!(out, "MIN/MAX VAR: {min:.2}/{max:.2}  STDDEV: {:.2}", df.stddev());
    out
}

/// `ceph osd df -f json`.
pub fn osd_df_json(map: &ClusterMap) -> Value {
    let df = OsdDf::of(map);
    let (total, average) = (df.total, df.average);
    let nodes: Vec<Value> = df
        .osds
        .iter()
        .map(|&(id, size, used, avail, util, pgs)| {
            let o = &map.osds[&id];
            json!({
                "id": id, "device_class": "ssd", "name": format!("osd.{id}"), "type": "osd",
                "type_id": 0, "crush_weight": o.weight, "depth": 2,
                "reweight": o.reweight,
                "kb": size / 1024, "kb_used": used / 1024, "kb_used_data": used / 1024,
                "kb_used_omap": 0, "kb_used_meta": 0, "kb_avail": avail / 1024,
                "utilization": util, "var": df.var(util), "pgs": pgs,
                "status": if o.up { "up" } else { "down" }
            })
        })
        .collect();
    let (min_var, max_var) = df.min_max_var();
    json!({
        "nodes": nodes,
        "stray": [],
        "summary": {
            "total_kb": total.0 / 1024, "total_kb_used": total.1 / 1024,
            "total_kb_used_data": total.1 / 1024, "total_kb_used_omap": 0,
            "total_kb_used_meta": 0, "total_kb_avail": total.2 / 1024,
            "average_utilization": average,
            "min_var": min_var,
            "max_var": max_var,
            "dev": df.stddev()
        }
    })
}

/// `ceph quorum_status` (JSON always, as Ceph's).
pub fn quorum_status(map: &ClusterMap) -> Value {
    let names: Vec<&String> = map.mons.keys().collect();
    json!({
        "election_epoch": 1,
        "quorum": (0..names.len()).collect::<Vec<_>>(),
        "quorum_names": names,
        "quorum_leader_name": names.first(),
        "monmap": super::json::mon_dump(map)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_wire::{OsdInfo, PoolInfo};

    fn osd(id: OsdId, up: bool) -> OsdInfo {
        OsdInfo {
            id,
            addr: None,
            host: "h".into(),
            up,
            in_cluster: true,
            weight: 1.0,
            up_from: 1,
            used_bytes: 1 << 30,
            avail_bytes: 3 << 30,
            reweight: 1.0,
            down_since: 0,
        }
    }

    fn states(map: &ClusterMap) -> Vec<&'static str> {
        pg_rows(map).iter().map(|r| r.state).collect()
    }

    #[test]
    fn states_tell_the_truth() {
        let mut map = ClusterMap::default();
        for id in 0..3 {
            map.osds.insert(id, osd(id, id != 2));
        }
        let pool = PoolInfo {
            id: 1,
            name: "rbd".into(),
            pg_num: 4,
            pg_num_target: 4,
            pg_num_pending: 4,
            creating: Default::default(),
            size: 3,
            min_size: 2,
            applications: Default::default(),
            snap_seq: 0,
            removed_snaps: Default::default(),
            acting: vec![vec![0, 1, 2], vec![2, 0, 1], vec![0, 1], vec![1, 2, 0]],
            stored_objects: 0,
            stored_bytes: 0,
            snap_mode: Default::default(),
            pool_snaps: Default::default(),
            flags: quarry_wire::pool_flags::HASHPSPOOL,
            quota_max_bytes: 0,
            quota_max_objects: 0,
            up: Vec::new(),
        };
        map.pools.insert(1, pool);
        let undersized = "active+undersized+degraded";
        assert_eq!(states(&map), [undersized, "down", undersized, undersized]);
        map.osds.get_mut(&2).unwrap().up = true;
        assert_eq!(states(&map), ["active+clean", "active+clean", undersized, "active+clean"]);
        map.osds.get_mut(&1).unwrap().up = false;
        map.osds.get_mut(&2).unwrap().up = false;
        let peered = "undersized+degraded+peered";
        assert_eq!(states(&map), [peered, "down", peered, "down"]);
        assert_eq!(by_state(&pg_rows(&map)), [("down", 2), (peered, 2)]);
        let rows = pg_rows(&map);
        assert_eq!(rows[0].primary(), Some(0));
        assert_eq!(rows[1].primary(), None);
        let text = pg_list(&map, false);
        assert!(text.contains("1.1  down                        [0]p-1  [2,0,1]p-1"), "{text}");
        let df = osd_df(&map, false);
        assert!(df.contains("MIN/MAX VAR: 1.00/1.00  STDDEV: 0.00"), "{df}");
    }
}
