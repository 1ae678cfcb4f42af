//! Ceph's plain-text shapes of the admin commands: `ceph -s`, `ceph health`, `ceph osd tree`,
//! `ceph osd pool ls detail`, `ceph osd dump`, `ceph mon dump|stat`, `ceph auth ls`, `ceph df`
//! and `rados df`, with the helpers they share (Ceph's byte units, `utime_t` timestamps, aligned
//! tables). Pure (values in, strings out), so it is unit-tested without a cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quarry_wire::{AuthEntry, ClusterMap, OsdInfo, PoolInfo, StatusReport};

/// Bytes in IEC units the way Ceph's `byte_u_t` prints them: `0 B`, `192 KiB`, `1.5 GiB`,
/// `29 GiB` (an exact multiple has no fraction; otherwise the most precision that keeps the
/// text within 7 characters).
pub fn bytes_iec(v: u64) -> String {
    const UNITS: [&str; 7] = [" B", " KiB", " MiB", " GiB", " TiB", " PiB", " EiB"];
    let mut n = v;
    let mut index = 0;
    while n >= 1024 && index < 6 {
        n /= 1024;
        index += 1;
    }
    let unit = UNITS[index];
    let mult = 1u64 << (10 * index);
    if index == 0 || v & (mult - 1) == 0 {
        return format!("{n}{unit}");
    }
    let value = v as f64 / mult as f64;
    let mut text = String::new();
    for precision in (0..=2).rev() {
        text = format!("{value:.precision$}{unit}");
        if text.len() <= 7 {
            break;
        }
    }
    text
}

/// A time as Ceph's `utime_t` prints it: `2026-11-21T12:00:00.000000+0000` (always UTC here).
pub fn utime(sec: u64, nsec: u32) -> String {
    let days = (sec / 86_400) as i64;
    let rem = sec % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}+0000",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        nsec / 1000
    )
}

/// A time as `rados lssnap` prints it: `2026.11.21 12:00:00` (Ceph prints local time;
/// Quarry prints UTC, as everywhere else).
pub fn snap_stamp(sec: u64) -> String {
    let (y, m, d) = civil_from_days((sec / 86_400) as i64);
    let rem = sec % 86_400;
    format!("{y:04}.{m:02}.{d:02} {:02}:{:02}:{:02}", rem / 3600, (rem / 60) % 60, rem % 60)
}

/// A time as librbd prints it (`ctime` without the newline): `Sat Nov 21 10:49:30 2026`
/// (Ceph prints local time; Quarry prints UTC, as everywhere else).
pub fn ctime(sec: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = sec / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let rem = sec % 86_400;
    format!(
        "{} {} {d:>2} {:02}:{:02}:{:02} {y}",
        DAYS[(days % 7) as usize],
        MONTHS[(m as usize - 1) % 12],
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Column alignment in a [`Table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Pad on the right.
    Left,
    /// Pad on the left.
    Right,
}

/// A text table like Ceph's `TextTable`: a header row, columns padded to their widest cell and
/// separated by two spaces, trailing blanks trimmed.
#[derive(Debug, Default)]
pub struct Table {
    heads: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
    /// Headings padded on the right whatever their column's alignment (Ceph's `rbd`
    /// tables: `SIZE   ` over right-aligned `  1 GiB`).
    left_heads: bool,
}

impl Table {
    /// A table with these column headings.
    pub fn new(heads: &[(&str, Align)]) -> Table {
        Table {
            heads: heads.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            rows: Vec::new(),
            left_heads: false,
        }
    }

    /// The same table with every heading left-aligned (values keep their alignment).
    pub fn left_heads(mut self) -> Table {
        self.left_heads = true;
        self
    }

    /// Adds a row (missing cells are blank, extra cells are ignored).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The rendered table, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.heads.iter().map(|(h, _)| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(widths.len()) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let heads: Vec<String> = self.heads.iter().map(|(h, _)| h.clone()).collect();
        for (r, row) in std::iter::once(&heads).chain(self.rows.iter()).enumerate() {
            let mut line = String::new();
            for (i, (_, align)) in self.heads.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                let pad = widths[i].saturating_sub(cell.chars().count());
                let align = if r == 0 && self.left_heads { &Align::Left } else { align };
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `ceph -s` / `ceph status`.
pub fn status(s: &StatusReport) -> String {
    status_with(s, &report_states(s))
}

/// PG state counts from the monitor's report alone: active ones as `active+clean`, the rest
/// `down` ([`super::pgs::by_state`] tells more, from the map).
pub fn report_states(s: &StatusReport) -> Vec<(&'static str, usize)> {
    let (pgs, active) = s.pgs;
    let mut states = Vec::new();
    if active > 0 {
        states.push(("active+clean", active as usize));
    }
    if pgs > active {
        states.push(("down", (pgs - active) as usize));
    }
    states
}

/// `ceph -s` with the PGs counted by state (`states`, most common first).
pub fn status_with(s: &StatusReport, states: &[(&str, usize)]) -> String {
    let mut out = String::new();
    out.push_str("  cluster:\n");
    let _ = writeln!(out, "    id:     {}", s.fsid);
    let _ = writeln!(out, "    health: {}", s.health);
    for detail in &s.health_details {
        let _ = writeln!(out, "            {}", summary_of(detail));
    }
    out.push_str(" \n  services:\n");
    let _ = write!(out, "    mon: {} daemons, quorum {}", s.mons.len(), s.quorum.join(","));
    let out_of_quorum: Vec<&str> =
        s.mons.iter().filter(|m| !s.quorum.contains(m)).map(String::as_str).collect();
    if !out_of_quorum.is_empty() {
        let _ = write!(out, ", out of quorum: {}", out_of_quorum.join(", "));
    }
    out.push('\n');
    let (total, up, inn) = s.osds;
    let _ = writeln!(out, "    osd: {total} osds: {up} up, {inn} in");
    out.push_str(" \n  data:\n");
    let _ = writeln!(out, "    pools:   {} pools, {} pgs", s.pools.len(), s.pgs.0);
    let _ = writeln!(out, "    objects: {} objects, {}", s.objects, bytes_iec(s.stored_bytes));
    let _ = writeln!(
        out,
        "    usage:   {} used, {} / {} avail",
        bytes_iec(s.used_bytes),
        bytes_iec(s.avail_bytes),
        bytes_iec(s.used_bytes.saturating_add(s.avail_bytes))
    );
    let states: Vec<String> = states.iter().map(|(st, n)| format!("{n} {st}")).collect();
    if states.is_empty() {
        out.push_str("    pgs:\n");
    } else {
        let _ = writeln!(out, "    pgs:     {}", states.join("\n             "));
    }
    out.push_str(" \n");
    out
}

/// The name of the Ceph health check a monitor health line reports (`OSD_DOWN`,
/// `PG_AVAILABILITY`, `PG_DEGRADED`, `OSD_FULL`, `OSD_NEARFULL`), or `HEALTH_CHECK_N` for one
/// Ceph has no name for.
pub fn check_code(detail: &str, index: usize) -> String {
    let summary = summary_of(detail);
    if summary.contains("osds down") {
        "OSD_DOWN".into()
    } else if summary.starts_with("Reduced data availability") {
        "PG_AVAILABILITY".into()
    } else if summary.starts_with("Degraded data redundancy") {
        "PG_DEGRADED".into()
    } else if summary.ends_with(" nearfull osd(s)") {
        "OSD_NEARFULL".into()
    } else if summary.ends_with(" full osd(s)") {
        "OSD_FULL".into()
    } else if summary.contains(" blocklist entries ") {
        "MON_BLOCKLIST_LARGE".into()
    } else if summary.ends_with(" pool(s) full") {
        "POOL_FULL".into()
    } else if summary.contains(" pgs stay on out osds") {
        "OSD_OUT_HOLDS_PGS".into()
    } else {
        format!("HEALTH_CHECK_{}", index + 1)
    }
}

/// The severity of a health check by its code: `OSD_FULL` is an error, the rest warnings.
pub fn check_severity(code: &str) -> &'static str {
    if code == "OSD_FULL" {
        "HEALTH_ERR"
    } else {
        "HEALTH_WARN"
    }
}

/// A monitor health line's summary: its first line (the others are per-item details, such
/// as `osd.0 is full`).
pub fn summary_of(detail: &str) -> &str {
    detail.lines().next().unwrap_or("")
}

/// `ceph health` (one line) or `ceph health detail` (the line, then one
/// `[WRN] CODE: message` line per check, each followed by its details indented).
pub fn health(s: &StatusReport, detail: bool) -> String {
    let mut out = s.health.clone();
    if !s.health_details.is_empty() {
        out.push(' ');
        let summaries: Vec<&str> = s.health_details.iter().map(|d| summary_of(d)).collect();
        out.push_str(&summaries.join("; "));
    }
    out.push('\n');
    if detail {
        for (i, d) in s.health_details.iter().enumerate() {
            let code = check_code(d, i);
            let tag = if check_severity(&code) == "HEALTH_ERR" { "[ERR]" } else { "[WRN]" };
            let _ = writeln!(out, "{tag} {code}: {}", summary_of(d));
            for item in d.lines().skip(1) {
                let _ = writeln!(out, "    {item}");
            }
        }
    }
    out
}

/// One pool as `ceph osd pool ls detail` prints it (followed by a blank line, as Ceph does).
pub fn pool_detail(p: &PoolInfo, epoch: u64) -> String {
    // Ceph prints the targets and the pending count only where they differ (a pool
    // shrinking by PG merges); pgp_num follows pg_num in Quarry.
    let mut targets = String::new();
    if p.pg_num_target != p.pg_num {
        let _ = write!(
            targets,
            " pg_num_target {} pgp_num_target {}",
            p.pg_num_target, p.pg_num_target
        );
    }
    if p.pg_num_pending != p.pg_num {
        let _ = write!(targets, " pg_num_pending {}", p.pg_num_pending);
    }
    let mut line = format!(
        "pool {} '{}' replicated size {} min_size {} crush_rule 0 object_hash rjenkins \
         pg_num {} pgp_num {}{targets} autoscale_mode off last_change {} flags {}",
        p.id,
        p.name,
        p.size,
        p.min_size,
        p.pg_num,
        p.pg_num,
        epoch,
        quarry_wire::pool_flags::names(p.flags)
    );
    if p.snap_seq > 0 {
        line.push_str(",selfmanaged_snaps");
    }
    if p.quota_max_bytes > 0 {
        let _ = write!(line, " max_bytes {}", p.quota_max_bytes);
    }
    if p.quota_max_objects > 0 {
        let _ = write!(line, " max_objects {}", p.quota_max_objects);
    }
    line.push_str(" stripe_width 0");
    if !p.applications.is_empty() {
        let apps: Vec<&str> = p.applications.iter().map(String::as_str).collect();
        let _ = write!(line, " application {}", apps.join(","));
    }
    line.push_str("\n\n");
    line
}

/// `ceph osd tree`: the root, one bucket per host, the OSDs under it.
pub fn osd_tree(map: &ClusterMap) -> String {
    bucket_tree(map, true)
}

/// `ceph osd crush tree`: the root, hosts and OSDs with their weights (no status columns).
pub fn crush_tree(map: &ClusterMap) -> String {
    bucket_tree(map, false)
}

/// The root, its hosts and their OSDs with weights; `status` adds `osd tree`'s columns.
fn bucket_tree(map: &ClusterMap, status: bool) -> String {
    let mut hosts: BTreeMap<&str, Vec<&OsdInfo>> = BTreeMap::new();
    for osd in map.osds.values() {
        hosts.entry(osd.host.as_str()).or_default().push(osd);
    }
    let mut heads = vec![
        ("ID", Align::Right),
        ("CLASS", Align::Right),
        ("WEIGHT", Align::Right),
        ("TYPE NAME", Align::Left),
    ];
    if status {
        heads.extend([
            ("STATUS", Align::Right),
            ("REWEIGHT", Align::Right),
            ("PRI-AFF", Align::Right),
        ]);
    }
    let mut t = Table::new(&heads);
    let total: f64 = map.osds.values().map(|o| o.weight).sum();
    t.row(vec!["-1".into(), String::new(), weight(total), "root default".into()]);
    for (i, (host, osds)) in hosts.iter().enumerate() {
        let host_weight: f64 = osds.iter().map(|o| o.weight).sum();
        t.row(vec![
            format!("-{}", i + 2),
            String::new(),
            weight(host_weight),
            format!("    host {host}"),
        ]);
        for osd in osds {
            let mut row = vec![
                osd.id.to_string(),
                "ssd".into(),
                weight(osd.weight),
                format!("        osd.{}", osd.id),
            ];
            if status {
                row.push(if osd.up { "up".into() } else { "down".into() });
                row.push(weight(osd.reweight));
                row.push("1.00000".into());
            }
            t.row(row);
        }
    }
    t.render()
}

/// `osd dump`'s weight (the override weight): `1`, `0` or `0.5` as Ceph prints a float.
fn reweight(w: f64) -> String {
    format!("{w}")
}

/// A CRUSH-style weight: five decimals, `0` when zero (Ceph's `weightf_t`).
pub fn weight(w: f64) -> String {
    if w < 0.000_001 {
        "0".into()
    } else {
        format!("{w:.5}")
    }
}

/// `ceph osd stat`.
pub fn osd_stat(map: &ClusterMap) -> String {
    let (up, inn) = map.osd_counts();
    format!("{} osds: {} up, {} in; epoch: e{}\n", map.osds.len(), up, inn, map.epoch)
}

/// Keys `ceph osd pool get` answers.
pub const POOL_GET_KEYS: [&str; 13] = [
    "size",
    "min_size",
    "pg_num",
    "pgp_num",
    "crush_rule",
    "hashpspool",
    "nodelete",
    "nopgchange",
    "nosizechange",
    "write_fadvise_dontneed",
    "noscrub",
    "nodeep-scrub",
    "all",
];

/// A pool flag's bit by its `osd pool get|set` name (None: not a flag).
pub fn pool_flag_bit(key: &str) -> Option<u64> {
    use quarry_wire::pool_flags::*;
    Some(match key {
        "hashpspool" => HASHPSPOOL,
        "nodelete" => NODELETE,
        "nopgchange" => NOPGCHANGE,
        "nosizechange" => NOSIZECHANGE,
        "noscrub" => NOSCRUB,
        "nodeep-scrub" => NODEEP_SCRUB,
        // Quarry has no such hint: never set.
        "write_fadvise_dontneed" => 0,
        _ => return None,
    })
}

/// The value of one pool variable (`key` from [`POOL_GET_KEYS`] but `all`).
pub fn pool_var(p: &PoolInfo, key: &str) -> Option<String> {
    if let Some(bit) = pool_flag_bit(key) {
        return Some((bit != 0 && p.has_flag(bit)).to_string());
    }
    Some(match key {
        "size" => p.size.to_string(),
        "min_size" => p.min_size.to_string(),
        "pg_num" | "pgp_num" => p.pg_num.to_string(),
        "crush_rule" => "replicated_rule".to_string(),
        _ => return None,
    })
}

/// `ceph osd pool get POOL KEY`: `size: 3`, or every variable for `all`.
pub fn pool_get(p: &PoolInfo, key: &str) -> String {
    let all = &POOL_GET_KEYS[..POOL_GET_KEYS.len() - 1];
    let keys: Vec<&str> = if key == "all" { all.to_vec() } else { vec![key] };
    keys.iter().filter_map(|k| pool_var(p, k).map(|v| format!("{k}: {v}\n"))).collect()
}

/// `ceph osd dump`: the map's epoch and fsid, every pool, every OSD.
pub fn osd_dump(map: &ClusterMap) -> String {
    let mut out = format!("epoch {}\nfsid {}\n", map.epoch, map.fsid);
    let _ = writeln!(out, "max_osd {}", map.osds.keys().max().map_or(0, |m| m + 1));
    out.push('\n');
    for p in map.pools.values() {
        out.push_str(&pool_detail(p, map.epoch));
    }
    for o in map.osds.values() {
        let addr = o.addr.map_or_else(|| "-".to_string(), addr_list);
        let _ = writeln!(
            out,
            "osd.{} {} {} weight {} up_from {} {} host {}",
            o.id,
            if o.up { "up  " } else { "down" },
            if o.in_cluster { "in " } else { "out" },
            reweight(o.reweight),
            o.up_from,
            addr,
            o.host
        );
    }
    if !map.blocklist.is_empty() {
        for (instance, until) in &map.blocklist {
            let _ = writeln!(out, "blocklist {instance} expires {}", utime(*until, 0));
        }
    }
    out
}

/// `ceph mon dump`: Ceph's lines, addresses as Ceph's address vectors.
pub fn mon_dump(map: &ClusterMap) -> String {
    let mut out = format!("epoch {}\nfsid {}\n", map.epoch, map.fsid);
    out.push_str("min_mon_release 16 (pacific)\nelection_strategy: 1\n");
    for (rank, (name, addr)) in map.mons.iter().enumerate() {
        let _ = writeln!(out, "{rank}: {} mon.{name}", addr_list(*addr));
    }
    out
}

/// A daemon address as Ceph prints an address vector: `[v2:IP:PORT/0]` (Quarry listens on
/// one address, Ceph's monitors have nonce 0).
pub fn addr_list(addr: std::net::SocketAddr) -> String {
    format!("[v2:{addr}/0]")
}

/// `ceph mon stat`.
pub fn mon_stat(map: &ClusterMap) -> String {
    let mons: Vec<String> =
        map.mons.iter().map(|(n, a)| format!("{n}={}", addr_list(*a))).collect();
    let names: Vec<&str> = map.mons.keys().map(String::as_str).collect();
    let ranks: Vec<String> = (0..names.len()).map(|r| r.to_string()).collect();
    format!(
        "e{}: {} mons at {{{}}}, leader 0 {}, quorum {} {}\n",
        map.epoch,
        map.mons.len(),
        mons.join(","),
        names.first().copied().unwrap_or("-"),
        ranks.join(","),
        names.join(",")
    )
}

/// `ceph auth ls`: entity, key and caps per entry.
pub fn auth_list(entries: &[AuthEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let _ = writeln!(out, "{}", e.entity);
        let _ = writeln!(out, "\tkey: {}", e.key);
        for (service, cap) in &e.caps {
            let _ = writeln!(out, "\tcaps: [{service}] {cap}");
        }
    }
    out
}

/// `ceph df`: raw storage, then per pool.
pub fn df(s: &StatusReport) -> String {
    df_table(s, false)
}

/// `ceph df detail`: `ceph df` with Ceph's extra pool columns (no quotas, no compression).
pub fn df_detail(s: &StatusReport) -> String {
    df_table(s, true)
}

fn df_table(s: &StatusReport, detail: bool) -> String {
    let mut out = String::from("--- RAW STORAGE ---\n");
    let size = s.used_bytes.saturating_add(s.avail_bytes);
    let pct = if size == 0 { 0.0 } else { s.used_bytes as f64 * 100.0 / size as f64 };
    let mut raw = Table::new(&[
        ("CLASS", Align::Left),
        ("SIZE", Align::Right),
        ("AVAIL", Align::Right),
        ("USED", Align::Right),
        ("RAW USED", Align::Right),
        ("%RAW USED", Align::Right),
    ]);
    for class in ["ssd", "TOTAL"] {
        raw.row(vec![
            class.into(),
            bytes_iec(size),
            bytes_iec(s.avail_bytes),
            bytes_iec(s.data_bytes.min(s.used_bytes)),
            bytes_iec(s.used_bytes),
            format!("{pct:.2}"),
        ]);
    }
    out.push_str(&raw.render());
    out.push_str(" \n--- POOLS ---\n");
    let mut heads = vec![
        ("POOL", Align::Left),
        ("ID", Align::Right),
        ("PGS", Align::Right),
        ("STORED", Align::Right),
        ("OBJECTS", Align::Right),
        ("USED", Align::Right),
        ("%USED", Align::Right),
        ("MAX AVAIL", Align::Right),
    ];
    if detail {
        heads.extend([
            ("QUOTA OBJECTS", Align::Right),
            ("QUOTA BYTES", Align::Right),
            ("DIRTY", Align::Right),
            ("USED COMPR", Align::Right),
            ("UNDER COMPR", Align::Right),
        ]);
    }
    let mut pools = Table::new(&heads);
    for p in &s.pools {
        let replicas = u64::from(p.size.max(1));
        let used = p.stored_bytes.saturating_mul(replicas);
        let max_avail = s.avail_bytes / replicas;
        let pct = if used + max_avail == 0 {
            0.0
        } else {
            used as f64 * 100.0 / (used + max_avail) as f64
        };
        pools.row(vec![
            p.name.clone(),
            p.id.to_string(),
            p.pg_num.to_string(),
            bytes_iec(p.stored_bytes),
            p.stored_objects.to_string(),
            bytes_iec(used),
            format!("{pct:.2}"),
            bytes_iec(max_avail),
            match p.quota_max_objects {
                0 => "N/A".into(),
                n => n.to_string(),
            },
            match p.quota_max_bytes {
                0 => "N/A".into(),
                n => bytes_iec(n),
            },
            "N/A".into(),
            "0 B".into(),
            "0 B".into(),
        ]);
    }
    out.push_str(&pools.render());
    out
}

/// `rados df`: one row per pool of `pools` (already filtered and sorted), then cluster totals.
pub fn rados_df(s: &StatusReport, pools: &[&PoolInfo]) -> String {
    use Align::{Left, Right};
    let mut t = Table::new(&[
        ("POOL_NAME", Left),
        ("USED", Right),
        ("OBJECTS", Right),
        ("CLONES", Right),
        ("COPIES", Right),
        ("MISSING_ON_PRIMARY", Right),
        ("UNFOUND", Right),
        ("DEGRADED", Right),
        ("RD_OPS", Right),
        ("RD", Right),
        ("WR_OPS", Right),
        ("WR", Right),
        ("USED COMPR", Right),
        ("UNDER COMPR", Right),
    ]);
    for p in pools {
        let size = u64::from(p.size.max(1));
        t.row(vec![
            p.name.clone(),
            bytes_iec(p.stored_bytes.saturating_mul(size)),
            p.stored_objects.to_string(),
            "0".into(),
            (p.stored_objects * size).to_string(),
            "0".into(),
            "0".into(),
            "0".into(),
            "0".into(),
            "0 B".into(),
            "0".into(),
            "0 B".into(),
            "0 B".into(),
            "0 B".into(),
        ]);
    }
    format!(
        "{}\ntotal_objects    {}\ntotal_used       {}\ntotal_avail      {}\ntotal_space      {}\n",
        t.render(),
        s.objects,
        bytes_iec(s.used_bytes),
        bytes_iec(s.avail_bytes),
        bytes_iec(s.used_bytes.saturating_add(s.avail_bytes)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_is_librbds_shape() {
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(1_763_722_170), "Fri Nov 21 10:49:30 2025");
    }
    use std::collections::BTreeSet;

    #[test]
    fn byte_units_match_ceph() {
        assert_eq!(bytes_iec(0), "0 B");
        assert_eq!(bytes_iec(1023), "1023 B");
        assert_eq!(bytes_iec(1024), "1 KiB");
        assert_eq!(bytes_iec(192 * 1024), "192 KiB");
        assert_eq!(bytes_iec(1536), "1.5 KiB");
        assert_eq!(bytes_iec(1024 * 1024 * 1024 + 40 * 1024 * 1024), "1.0 GiB");
        assert_eq!(bytes_iec((29.3 * (1u64 << 30) as f64) as u64), "29 GiB");
        assert_eq!(bytes_iec(10239), "10 KiB");
    }

    #[test]
    fn utime_prints_utc() {
        assert_eq!(utime(0, 0), "1970-01-01T00:00:00.000000+0000");
        // 2026-11-21T12:00:00Z
        assert_eq!(utime(1_795_262_400, 123_456_789), "2026-11-21T12:00:00.123456+0000");
        assert_eq!(utime(951_782_400, 0), "2000-02-29T00:00:00.000000+0000");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&[("NAME", Align::Left), ("SIZE", Align::Right)]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["long-name".into(), "1234".into()]);
        assert_eq!(t.render(), "NAME       SIZE\na             1\nlong-name  1234\n");
    }

    fn pool() -> PoolInfo {
        PoolInfo {
            id: 1,
            name: "rbd".into(),
            pg_num: 32,
            pg_num_target: 32,
            pg_num_pending: 32,
            creating: Default::default(),
            size: 1,
            min_size: 1,
            applications: BTreeSet::from(["rbd".to_string()]),
            snap_seq: 0,
            removed_snaps: BTreeSet::new(),
            acting: vec![],
            stored_objects: 3,
            stored_bytes: 3 << 20,
            snap_mode: Default::default(),
            pool_snaps: Default::default(),
            flags: quarry_wire::pool_flags::HASHPSPOOL,
            quota_max_bytes: 0,
            quota_max_objects: 0,
            up: Vec::new(),
        }
    }

    fn report() -> StatusReport {
        StatusReport {
            fsid: "0b5e1d2c-0000-4000-8000-000000000001".into(),
            health: "HEALTH_OK".into(),
            health_details: vec![],
            mons: vec!["a".into()],
            quorum: vec!["a".into()],
            epoch: 7,
            osds: (3, 3, 3),
            pools: vec![pool()],
            pgs: (32, 32),
            objects: 3,
            stored_bytes: 3 << 20,
            used_bytes: 1 << 30,
            avail_bytes: 29 << 30,
            data_bytes: 1 << 29,
        }
    }

    #[test]
    fn status_has_cephs_shape() {
        let text = status(&report());
        let expected = "  cluster:\n    id:     0b5e1d2c-0000-4000-8000-000000000001\n    health: HEALTH_OK\n \n  services:\n    mon: 1 daemons, quorum a\n    osd: 3 osds: 3 up, 3 in\n \n  data:\n    pools:   1 pools, 32 pgs\n    objects: 3 objects, 3 MiB\n    usage:   1 GiB used, 29 GiB / 30 GiB avail\n    pgs:     32 active+clean\n \n";
        assert_eq!(text, expected);
        let mut warn = report();
        warn.health = "HEALTH_WARN".into();
        warn.health_details = vec!["1 osds down".into()];
        warn.pgs = (32, 20);
        let text = status(&warn);
        assert!(text.contains("    health: HEALTH_WARN\n            1 osds down\n"), "{text}");
        assert!(text.contains("    pgs:     20 active+clean\n             12 down\n"), "{text}");
        assert_eq!(health(&warn, false), "HEALTH_WARN 1 osds down\n");
        assert_eq!(health(&warn, true), "HEALTH_WARN 1 osds down\n[WRN] OSD_DOWN: 1 osds down\n");
        assert_eq!(health(&report(), true), "HEALTH_OK\n");
    }

    #[test]
    fn pool_detail_line() {
        assert_eq!(
            pool_detail(&pool(), 9),
            "pool 1 'rbd' replicated size 1 min_size 1 crush_rule 0 object_hash rjenkins pg_num 32 \
             pgp_num 32 autoscale_mode off last_change 9 flags hashpspool stripe_width 0 \
             application rbd\n\n"
        );
        // Shrinking, a merge marked: Ceph's extra fields, in its order.
        let shrinking = PoolInfo { pg_num_target: 8, pg_num_pending: 31, ..pool() };
        assert!(pool_detail(&shrinking, 9).contains(
            "pg_num 32 pgp_num 32 pg_num_target 8 pgp_num_target 8 pg_num_pending 31 autoscale_mode"
        ));
    }

    #[test]
    fn pool_get_and_dumps() {
        let p = pool();
        assert_eq!(pool_get(&p, "size"), "size: 1\n");
        assert_eq!(
            pool_get(&p, "all"),
            "size: 1\nmin_size: 1\npg_num: 32\npgp_num: 32\ncrush_rule: replicated_rule\n\
             hashpspool: true\nnodelete: false\nnopgchange: false\nnosizechange: false\n\
             write_fadvise_dontneed: false\nnoscrub: false\nnodeep-scrub: false\n"
        );
        let mut map = ClusterMap { fsid: "f".into(), epoch: 4, ..Default::default() };
        map.pools.insert(1, p);
        map.mons.insert("a".into(), "127.0.0.1:6789".parse().unwrap());
        map.osds.insert(
            0,
            OsdInfo {
                id: 0,
                addr: Some("127.0.0.1:7000".parse().unwrap()),
                host: "h".into(),
                up: true,
                in_cluster: true,
                weight: 1.0,
                up_from: 3,
                used_bytes: 0,
                avail_bytes: 0,
                reweight: 1.0,
                down_since: 0,
            },
        );
        let dump = osd_dump(&map);
        assert!(dump.starts_with("epoch 4\nfsid f\nmax_osd 1\n\npool 1 'rbd'"), "{dump}");
        assert!(
            dump.contains("osd.0 up   in  weight 1 up_from 3 [v2:127.0.0.1:7000/0] host h\n"),
            "{dump}"
        );
        assert_eq!(
            mon_dump(&map),
            "epoch 4\nfsid f\nmin_mon_release 16 (pacific)\nelection_strategy: 1\n0: [v2:127.0.0.1:6789/0] mon.a\n"
        );
        assert_eq!(
            mon_stat(&map),
            "e4: 1 mons at {a=[v2:127.0.0.1:6789/0]}, leader 0 a, quorum 0 a\n"
        );
    }

    #[test]
    fn auth_list_shape() {
        let entries = vec![AuthEntry {
            entity: "client.qemu".into(),
            key: "AQAAAA==".into(),
            caps: BTreeMap::from([
                ("mon".to_string(), "profile rbd".to_string()),
                ("osd".to_string(), "profile rbd pool=rbdpool".to_string()),
            ]),
        }];
        assert_eq!(
            auth_list(&entries),
            "client.qemu\n\tkey: AQAAAA==\n\tcaps: [mon] profile rbd\n\tcaps: [osd] profile rbd pool=rbdpool\n"
        );
    }
}
