//! `-f json` / `--format json|json-pretty`: the JSON shapes Ceph's tools print for the
//! commands scripts query most (`ceph -s`, `health`, `fsid`, `osd ls|stat|tree`,
//! `osd pool ls [detail]`, `auth get|get-key|ls|get-or-create`, `df`, `rados df|ls`), and the
//! output formats themselves ([`Format`], [`render`]). The field names are Ceph's; fields
//! Quarry has no value for are left out rather than invented. Pure: values in,
//! `serde_json::Value` out.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize as _;
use serde_json::{json, Map, Value};

use quarry_wire::{AuthEntry, ClusterMap, OsdInfo, PoolInfo, StatusReport};

use super::plain::{check_code, check_severity, summary_of, utime, POOL_GET_KEYS};

/// Output format selected with `-f`/`--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Ceph's plain text.
    Plain,
    /// Compact JSON.
    Json,
    /// Indented JSON (4 spaces, as Ceph).
    JsonPretty,
}

impl Format {
    /// Parses a `--format` value (`plain`, `json`, `json-pretty`); None when unsupported.
    pub fn parse(text: Option<&str>) -> Option<Format> {
        match text {
            None | Some("plain") => Some(Format::Plain),
            Some("json") => Some(Format::Json),
            Some("json-pretty") => Some(Format::JsonPretty),
            Some(_) => None,
        }
    }

    /// True for the JSON formats.
    pub fn is_json(self) -> bool {
        self != Format::Plain
    }
}

/// The text of `value` in `format` (JSON formats), ending with a newline.
pub fn render(value: &Value, format: Format) -> String {
    let mut text = match format {
        Format::JsonPretty => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            match value.serialize(&mut ser) {
                Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
                Err(_) => value.to_string(),
            }
        }
        _ => value.to_string(),
    };
    text.push('\n');
    text
}

/// `ceph health -f json`.
pub fn health(s: &StatusReport) -> Value {
    health_with(s, true)
}

/// Health in Ceph's key order (`status`, `checks`, `mutes`; each check `severity`,
/// `summary`, then `detail` only with `detail` (`health detail`), `muted`), as `ceph
/// health [detail] -f json` and `ceph -s -f json` (without detail) print it.
pub fn health_with(s: &StatusReport, with_detail: bool) -> Value {
    let mut checks = Map::new();
    for (i, detail) in s.health_details.iter().enumerate() {
        let mut code = check_code(detail, i);
        let severity = check_severity(&code);
        if checks.contains_key(&code) {
            code = format!("{code}_{}", i + 1);
        }
        let summary = summary_of(detail);
        let count = summary.split_whitespace().find_map(|w| w.parse::<u64>().ok()).unwrap_or(1);
        let items: Vec<Value> =
            detail.lines().skip(1).map(|item| json!({"message": item})).collect();
        let check = if with_detail {
            json!({"severity": severity, "summary": {"message": summary, "count": count},
                   "detail": items, "muted": false})
        } else {
            json!({"severity": severity, "summary": {"message": summary, "count": count},
                   "muted": false})
        };
        checks.insert(code, check);
    }
    json!({"status": s.health, "checks": checks, "mutes": []})
}

/// `ceph -s -f json`.
pub fn status(s: &StatusReport) -> Value {
    status_with(s, &super::plain::report_states(s))
}

/// `ceph -s -f json` with the PGs counted by state (`states`, most common first).
pub fn status_with(s: &StatusReport, states: &[(&str, usize)]) -> Value {
    let (total, up, inn) = s.osds;
    let pgs = s.pgs.0;
    let states: Vec<Value> =
        states.iter().map(|(st, n)| json!({"state_name": st, "count": n})).collect();
    let quorum: Vec<usize> =
        s.mons.iter().enumerate().filter(|(_, m)| s.quorum.contains(m)).map(|(i, _)| i).collect();
    json!({
        "fsid": s.fsid,
        "health": health_with(s, false),
        "quorum": quorum,
        "quorum_names": s.quorum,
        "monmap": {"num_mons": s.mons.len()},
        "osdmap": {
            "epoch": s.epoch,
            "num_osds": total,
            "num_up_osds": up,
            "num_in_osds": inn,
            "num_remapped_pgs": 0
        },
        "pgmap": {
            "pgs_by_state": states,
            "num_pgs": pgs,
            "num_pools": s.pools.len(),
            "num_objects": s.objects,
            "data_bytes": s.stored_bytes,
            "bytes_used": s.used_bytes,
            "bytes_avail": s.avail_bytes,
            "bytes_total": s.used_bytes.saturating_add(s.avail_bytes)
        }
    })
}

/// `ceph osd stat -f json`.
pub fn osd_stat(map: &ClusterMap) -> Value {
    let (up, inn) = map.osd_counts();
    json!({"epoch": map.epoch, "num_osds": map.osds.len(), "num_up_osds": up, "num_in_osds": inn, "num_remapped_pgs": 0})
}

/// `ceph osd tree -f json`: root, hosts, OSDs as Ceph's `nodes` list.
pub fn osd_tree(map: &ClusterMap) -> Value {
    let mut hosts: BTreeMap<&str, Vec<&OsdInfo>> = BTreeMap::new();
    for osd in map.osds.values() {
        hosts.entry(osd.host.as_str()).or_default().push(osd);
    }
    let host_ids: Vec<i64> = (0..hosts.len()).map(|i| -(i as i64) - 2).collect();
    let mut nodes = vec![
        json!({"id": -1, "name": "default", "type": "root", "type_id": 11, "children": host_ids}),
    ];
    for (i, (host, osds)) in hosts.iter().enumerate() {
        let ids: Vec<u64> = osds.iter().map(|o| o.id).collect();
        nodes.push(json!({"id": -(i as i64) - 2, "name": host, "type": "host", "type_id": 1, "children": ids}));
    }
    for osds in hosts.values() {
        for o in osds {
            nodes.push(json!({
                "id": o.id,
                "device_class": "ssd",
                "name": format!("osd.{}", o.id),
                "type": "osd",
                "type_id": 0,
                "crush_weight": o.weight,
                "depth": 2,
                "exists": 1,
                "status": if o.up { "up" } else { "down" },
                "reweight": o.reweight,
                "primary_affinity": 1
            }));
        }
    }
    json!({"nodes": nodes, "stray": []})
}

/// One pool as `ceph osd pool ls detail -f json` lists it.
pub fn pool_detail(p: &PoolInfo) -> Value {
    let apps: Map<String, Value> = p.applications.iter().map(|a| (a.clone(), json!({}))).collect();
    json!({
        "pool_id": p.id,
        "pool_name": p.name,
        "flags": p.flags,
        "flags_names": quarry_wire::pool_flags::names(p.flags),
        "type": 1,
        "size": p.size,
        "min_size": p.min_size,
        "crush_rule": 0,
        "pg_num": p.pg_num,
        "pg_placement_num": p.pg_num,
        "pg_placement_num_target": p.pg_num_target,
        "pg_num_target": p.pg_num_target,
        "pg_num_pending": p.pg_num_pending,
        "snap_seq": p.snap_seq,
        "removed_snaps": p.removed_snaps,
        "quota_max_bytes": p.quota_max_bytes,
        "quota_max_objects": p.quota_max_objects,
        "application_metadata": apps
    })
}

/// `ceph osd pool ls [detail] -f json`.
pub fn pool_ls(map: &ClusterMap, detail: bool) -> Value {
    if detail {
        Value::Array(map.pools.values().map(pool_detail).collect())
    } else {
        Value::Array(map.pools.values().map(|p| json!(p.name)).collect())
    }
}

/// `ceph osd pool get POOL KEY -f json`: `{"pool": .., "pool_id": .., KEY: value}`.
pub fn pool_get(p: &PoolInfo, key: &str) -> Value {
    let mut obj = Map::new();
    obj.insert("pool".into(), json!(p.name));
    obj.insert("pool_id".into(), json!(p.id));
    let all = &POOL_GET_KEYS[..POOL_GET_KEYS.len() - 1];
    let keys: Vec<&str> = if key == "all" { all.to_vec() } else { vec![key] };
    for k in keys {
        let value = match k {
            flag if super::plain::pool_flag_bit(flag).is_some() => {
                let bit = super::plain::pool_flag_bit(flag).unwrap_or(0);
                json!(bit != 0 && p.has_flag(bit))
            }
            "size" => json!(p.size),
            "min_size" => json!(p.min_size),
            "pg_num" | "pgp_num" => json!(p.pg_num),
            _ => json!("replicated_rule"),
        };
        obj.insert(k.to_string(), value);
    }
    Value::Object(obj)
}

/// `ceph osd dump -f json`.
pub fn osd_dump(map: &ClusterMap) -> Value {
    let osds: Vec<Value> = map
        .osds
        .values()
        .map(|o| {
            json!({
                "osd": o.id,
                "up": u8::from(o.up),
                "in": u8::from(o.in_cluster),
                "weight": o.reweight,
                "up_from": o.up_from,
                "public_addrs": o.addr.map_or_else(|| json!({"addrvec": []}), addrvec),
                "public_addr": o.addr.map(legacy_addr),
                "host": o.host
            })
        })
        .collect();
    let blocklist: Map<String, Value> =
        map.blocklist.iter().map(|(k, v)| (k.clone(), json!(utime(*v, 0)))).collect();
    json!({
        "epoch": map.epoch,
        "fsid": map.fsid,
        "max_osd": map.osds.keys().max().map_or(0, |m| m + 1),
        "pools": map.pools.values().map(pool_detail).collect::<Vec<_>>(),
        "osds": osds,
        "blocklist": blocklist
    })
}

/// `ceph mon dump -f json`, in Ceph's shape: each monitor's `public_addrs.addrvec` and its
/// legacy `addr` / `public_addr` as `IP:PORT/NONCE` (what OpenStack Nova and Cinder parse:
/// they cut at the last `/`, then split host and port).
pub fn mon_dump(map: &ClusterMap) -> Value {
    let mons: Vec<Value> = map
        .mons
        .iter()
        .enumerate()
        .map(|(rank, (name, addr))| {
            json!({
                "rank": rank,
                "name": name,
                "public_addrs": addrvec(*addr),
                "addr": legacy_addr(*addr),
                "public_addr": legacy_addr(*addr),
                "priority": 0,
                "weight": 0,
                "crush_location": "{}"
            })
        })
        .collect();
    json!({
        "epoch": map.epoch,
        "fsid": map.fsid,
        "min_mon_release": 16,
        "min_mon_release_name": "pacific",
        "election_strategy": 1,
        "stretch_mode": false,
        "mons": mons,
        "quorum": (0..map.mons.len()).collect::<Vec<_>>()
    })
}

/// A daemon address as Ceph's JSON `addrvec` (Quarry listens on one address: one entry of
/// type `v2`, nonce 0 as Ceph's monitors have).
pub fn addrvec(addr: SocketAddr) -> Value {
    json!({"addrvec": [{"type": "v2", "addr": addr.to_string(), "nonce": 0}]})
}

/// A daemon address in Ceph's legacy form `IP:PORT/NONCE`.
pub fn legacy_addr(addr: SocketAddr) -> String {
    format!("{addr}/0")
}

/// Entities with key and caps, as `ceph auth get -f json` prints them.
pub fn auth_entries(entries: &[AuthEntry]) -> Value {
    Value::Array(
        entries.iter().map(|e| json!({"entity": e.entity, "key": e.key, "caps": e.caps})).collect(),
    )
}

/// Keyring text (from the monitor) as [`auth_entries`].
pub fn keyring_entries(text: &str) -> Option<Value> {
    let ring = quarry_auth::Keyring::parse(text).ok()?;
    let entries: Vec<AuthEntry> = ring
        .entries
        .iter()
        .map(|(name, e)| AuthEntry {
            entity: name.to_string(),
            key: e.key.to_base64(),
            caps: e.caps.clone(),
        })
        .collect();
    Some(auth_entries(&entries))
}

/// `ceph df -f json`.
pub fn df(s: &StatusReport) -> Value {
    let total = s.used_bytes.saturating_add(s.avail_bytes);
    let ratio = if total == 0 { 0.0 } else { s.used_bytes as f64 / total as f64 };
    let pools: Vec<Value> = s
        .pools
        .iter()
        .map(|p| {
            let replicas = u64::from(p.size.max(1));
            let used = p.stored_bytes.saturating_mul(replicas);
            let max_avail = s.avail_bytes / replicas;
            let pct =
                if used + max_avail == 0 { 0.0 } else { used as f64 / (used + max_avail) as f64 };
            json!({"name": p.name, "id": p.id, "stats": {
                "stored": p.stored_bytes,
                "objects": p.stored_objects,
                "kb_used": used.div_ceil(1024),
                "bytes_used": used,
                "percent_used": pct,
                "max_avail": max_avail,
                "quota_objects": p.quota_max_objects,
                "quota_bytes": p.quota_max_bytes
            }})
        })
        .collect();
    json!({
        "stats": {
            "total_bytes": total,
            "total_avail_bytes": s.avail_bytes,
            "total_used_bytes": s.data_bytes.min(s.used_bytes),
            "total_used_raw_bytes": s.used_bytes,
            "total_used_raw_ratio": ratio,
            "num_osds": s.osds.0
        },
        "pools": pools
    })
}

/// `rados df -f json` for `pools` (already filtered and sorted).
pub fn rados_df(s: &StatusReport, pools: &[&PoolInfo]) -> Value {
    let rows: Vec<Value> = pools
        .iter()
        .map(|p| {
            let replicas = u64::from(p.size.max(1));
            let used = p.stored_bytes.saturating_mul(replicas);
            json!({
                "name": p.name,
                "id": p.id,
                "size_bytes": used,
                "size_kb": used.div_ceil(1024),
                "num_objects": p.stored_objects,
                "num_object_clones": 0,
                "num_object_copies": p.stored_objects * replicas,
                "num_objects_missing_on_primary": 0,
                "num_objects_unfound": 0,
                "num_objects_degraded": 0,
                "read_ops": 0,
                "read_bytes": 0,
                "write_ops": 0,
                "write_bytes": 0,
                "compress_bytes_used": 0,
                "compress_under_bytes": 0
            })
        })
        .collect();
    json!({
        "pools": rows,
        "total_objects": s.objects,
        "total_used": s.used_bytes / 1024,
        "total_avail": s.avail_bytes / 1024,
        "total_space": s.used_bytes.saturating_add(s.avail_bytes) / 1024
    })
}

/// `rados ls -f json`.
pub fn rados_ls(objects: &[(String, String)]) -> Value {
    Value::Array(
        objects
            .iter()
            .map(|(namespace, name)| json!({"namespace": namespace, "name": name}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn report() -> StatusReport {
        StatusReport {
            fsid: "f".into(),
            health: "HEALTH_WARN".into(),
            health_details: vec![
                "1 osds down".into(),
                "Degraded data redundancy: 3 pgs degraded".into(),
            ],
            mons: vec!["a".into()],
            quorum: vec!["a".into()],
            epoch: 9,
            osds: (3, 2, 3),
            pools: vec![PoolInfo {
                id: 1,
                name: "rbd".into(),
                pg_num: 32,
                pg_num_target: 32,
                pg_num_pending: 32,
                creating: Default::default(),
                size: 3,
                min_size: 2,
                applications: BTreeSet::from(["rbd".to_string()]),
                snap_seq: 0,
                removed_snaps: BTreeSet::new(),
                acting: vec![],
                stored_objects: 2,
                stored_bytes: 2048,
                snap_mode: Default::default(),
                pool_snaps: Default::default(),
                flags: quarry_wire::pool_flags::HASHPSPOOL,
                quota_max_bytes: 0,
                quota_max_objects: 0,
                up: Vec::new(),
            }],
            pgs: (32, 32),
            objects: 2,
            stored_bytes: 2048,
            used_bytes: 1 << 30,
            avail_bytes: 3 << 30,
            data_bytes: 1 << 29,
        }
    }

    #[test]
    fn status_and_health_have_cephs_fields() {
        let v = status(&report());
        assert_eq!(v["fsid"], "f");
        assert_eq!(v["health"]["status"], "HEALTH_WARN");
        assert_eq!(v["health"]["checks"]["OSD_DOWN"]["summary"]["message"], "1 osds down");
        assert_eq!(v["health"]["checks"]["OSD_DOWN"]["summary"]["count"], 1);
        assert_eq!(v["health"]["checks"]["PG_DEGRADED"]["severity"], "HEALTH_WARN");
        assert_eq!(v["osdmap"]["num_up_osds"], 2);
        assert_eq!(v["pgmap"]["pgs_by_state"][0]["count"], 32);
        assert_eq!(v["pgmap"]["bytes_total"], 4u64 << 30);
        assert_eq!(v["quorum_names"][0], "a");
    }

    /// Goal: full OSDs render as Ceph renders them: OSD_FULL is an error and OSD_NEARFULL a
    /// warning (each check has its own severity), with per-OSD details in `ceph health
    /// detail` (indented) and in the JSON's `detail` list, never in the one-line forms.
    #[test]
    fn full_osds_render_as_ceph() {
        let mut r = report();
        r.health = "HEALTH_ERR".into();
        r.health_details = vec![
            "1 full osd(s)\nosd.0 is full".into(),
            "2 nearfull osd(s)\nosd.1 is near full\nosd.2 is near full".into(),
        ];
        let v = health(&r);
        assert_eq!(v["status"], "HEALTH_ERR");
        assert_eq!(v["checks"]["OSD_FULL"]["severity"], "HEALTH_ERR");
        assert_eq!(v["checks"]["OSD_FULL"]["summary"]["message"], "1 full osd(s)");
        assert_eq!(v["checks"]["OSD_FULL"]["detail"][0]["message"], "osd.0 is full");
        assert_eq!(v["checks"]["OSD_NEARFULL"]["severity"], "HEALTH_WARN");
        assert_eq!(v["checks"]["OSD_NEARFULL"]["summary"]["count"], 2);
        assert_eq!(
            crate::admin::plain::health(&r, false),
            "HEALTH_ERR 1 full osd(s); 2 nearfull osd(s)\n"
        );
        assert_eq!(
            crate::admin::plain::health(&r, true),
            "HEALTH_ERR 1 full osd(s); 2 nearfull osd(s)\n\
             [ERR] OSD_FULL: 1 full osd(s)\n    osd.0 is full\n\
             [WRN] OSD_NEARFULL: 2 nearfull osd(s)\n    osd.1 is near full\n    osd.2 is near full\n"
        );
        let status = crate::admin::plain::status(&r);
        assert!(status.contains("    health: HEALTH_ERR\n            1 full osd(s)\n            2 nearfull osd(s)\n"), "{status}");
    }

    #[test]
    fn pools_and_rendering() {
        let r = report();
        let d = pool_detail(&r.pools[0]);
        assert_eq!(d["pool_name"], "rbd");
        assert_eq!(d["application_metadata"]["rbd"], json!({}));
        assert_eq!(render(&json!(["rbd"]), Format::Json), "[\"rbd\"]\n");
        assert_eq!(render(&json!({"a": 1}), Format::JsonPretty), "{\n    \"a\": 1\n}\n");
        assert_eq!(Format::parse(Some("xml")), None);
        let df = rados_df(&r, &[&r.pools[0]]);
        assert_eq!(df["pools"][0]["num_object_copies"], 6);
        assert_eq!(df["total_space"], 4u64 << 20);
    }

    #[test]
    fn keyring_text_to_entries() {
        let text = "[client.qemu]\n\tkey = AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\n\tcaps mon = \"profile rbd\"\n";
        let v = keyring_entries(text).unwrap();
        assert_eq!(v[0]["entity"], "client.qemu");
        assert_eq!(v[0]["key"], "AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==");
        assert_eq!(v[0]["caps"]["mon"], "profile rbd");
    }
}
