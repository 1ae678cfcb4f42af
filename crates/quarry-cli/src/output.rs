//! Output formatting shared by the `ceph` and `rados` commands: Ceph's byte units, hexdumps,
//! timestamps, numbers as C++ streams print them, aligned tables, and the text shapes of
//! `ceph -s`, `ceph health`, `ceph osd tree`, `ceph osd pool ls detail`, `ceph auth ls` and
//! `ceph df`. Everything here is pure (strings in, strings out) so it is unit-tested without a
//! cluster; callers write the result to stdout or stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use quarry_types::ErrorCode;

/// `println!` that never panics: a closed stdout (`quarry up | head -1`, `rados bench | head`)
/// must not kill a running cluster or benchmark, so write errors are ignored.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
use quarry_wire::{AuthEntry, ClusterMap, PoolInfo, StatusReport};

/// The symbolic name of an errno as `ceph` prints it in `Error ENOENT: ...`.
pub fn errno_name(code: ErrorCode) -> String {
    let name = match code.0 {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        11 => "EAGAIN",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        22 => "EINVAL",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        34 => "ERANGE",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        61 => "ENODATA",
        71 => "EPROTO",
        90 => "EMSGSIZE",
        95 => "EOPNOTSUPP",
        108 => "ESHUTDOWN",
        110 => "ETIMEDOUT",
        125 => "ECANCELED",
        n => return format!("Unknown({n})"),
    };
    name.to_string()
}

/// The text python-rados gives a failed call (`rados.Error.__str__`), as the `ceph` tool
/// prints it when it cannot connect:
/// `[errno 1] RADOS permission error (error connecting to the cluster)`.
pub fn rados_python_error(code: ErrorCode, context: &str) -> String {
    let class = match code.0 {
        1 => Some("RADOS permission error"),
        2 => Some("RADOS object not found"),
        5 => Some("RADOS I/O error"),
        13 => Some("RADOS permission denied"),
        16 => Some("RADOS object busy"),
        17 => Some("RADOS object exists"),
        22 => Some("RADOS invalid argument"),
        28 => Some("RADOS no space"),
        34 => Some("RADOS out of range"),
        61 => Some("RADOS no data"),
        108 => Some("RADOS connection shutdown"),
        110 => Some("RADOS timed out"),
        _ => None,
    };
    match class {
        Some(class) => format!("[errno {}] {class} ({context})", code.0),
        None => format!("[errno {}] {context}", code.0),
    }
}

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

/// A number as a C++ `ostream` prints a double with its default precision of 6 significant
/// digits (`%g`): `10.1951`, `194.604`, `0.0789473`, `48`.
pub fn g6(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    // Rounding to 6 significant digits may carry into the next power of ten.
    let sci = format!("{v:.5e}");
    let exp = sci.split_once('e').and_then(|(_, e)| e.parse::<i32>().ok()).unwrap_or(exp);
    if !(-5..6).contains(&exp) {
        let (mantissa, _) = sci.split_once('e').unwrap_or((&sci, ""));
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    trim_fraction(&format!("{v:.decimals$}")).to_string()
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Ceph's `bufferlist::hexdump`, which imitates `hexdump -C`: 16 bytes a row, a `*` for runs
/// of rows that repeat one byte, and a final line with the length. Empty input prints nothing.
pub fn hexdump(data: &[u8]) -> String {
    let mut out = String::new();
    if data.is_empty() {
        return out;
    }
    const PER: usize = 16;
    let mut last_row_byte = data[0];
    let mut was_same = false;
    let mut did_star = false;
    let mut o = 0;
    while o < data.len() {
        if o + PER < data.len() {
            let mut row_is_same = true;
            for i in 0..PER.min(data.len() - o) {
                let c = data[o + i];
                if c != last_row_byte {
                    if i == 0 {
                        last_row_byte = c;
                        was_same = false;
                        did_star = false;
                    } else {
                        row_is_same = false;
                    }
                }
            }
            if row_is_same {
                if was_same {
                    if !did_star {
                        out.push_str("\n*");
                        did_star = true;
                    }
                    o += PER;
                    continue;
                }
                was_same = true;
            } else {
                was_same = false;
                did_star = false;
            }
        }
        if o > 0 {
            out.push('\n');
        }
        let _ = write!(out, "{o:08x} ");
        let row = &data[o..(o + PER).min(data.len())];
        for i in 0..PER {
            if i == 8 {
                out.push(' ');
            }
            match row.get(i) {
                Some(b) => {
                    let _ = write!(out, " {b:02x}");
                }
                None => out.push_str("   "),
            }
        }
        out.push_str("  |");
        for &b in row {
            let printable = b.is_ascii_alphanumeric() || b == b' ' || b.is_ascii_punctuation();
            out.push(if printable { b as char } else { '.' });
        }
        out.push('|');
        o += PER;
    }
    let _ = write!(out, "\n{:08x}\n", data.len());
    out
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
}

impl Table {
    /// A table with these column headings.
    pub fn new(heads: &[(&str, Align)]) -> Table {
        Table { heads: heads.iter().map(|(h, a)| (h.to_string(), *a)).collect(), rows: Vec::new() }
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
        for row in std::iter::once(&heads).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, (_, align)) in self.heads.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                let pad = widths[i].saturating_sub(cell.chars().count());
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
    let mut out = String::new();
    out.push_str("  cluster:\n");
    let _ = writeln!(out, "    id:     {}", s.fsid);
    let _ = writeln!(out, "    health: {}", s.health);
    for detail in &s.health_details {
        let _ = writeln!(out, "            {detail}");
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
    let (pgs, active) = s.pgs;
    let _ = writeln!(out, "    pools:   {} pools, {} pgs", s.pools.len(), pgs);
    let _ = writeln!(out, "    objects: {} objects, {}", s.objects, bytes_iec(s.stored_bytes));
    let _ = writeln!(
        out,
        "    usage:   {} used, {} / {} avail",
        bytes_iec(s.used_bytes),
        bytes_iec(s.avail_bytes),
        bytes_iec(s.used_bytes.saturating_add(s.avail_bytes))
    );
    let mut states: Vec<String> = Vec::new();
    if active > 0 {
        states.push(format!("{active} active+clean"));
    }
    if pgs > active {
        states.push(format!("{} down", pgs - active));
    }
    if states.is_empty() {
        out.push_str("    pgs:\n");
    } else {
        let _ = writeln!(out, "    pgs:     {}", states.join("\n             "));
    }
    out.push_str(" \n");
    out
}

/// The name of the Ceph health check a monitor health line reports (`OSD_DOWN`,
/// `PG_AVAILABILITY`, `PG_DEGRADED`), or `HEALTH_CHECK_N` for one Ceph has no name for.
pub fn check_code(detail: &str, index: usize) -> String {
    if detail.contains("osds down") {
        "OSD_DOWN".into()
    } else if detail.starts_with("Reduced data availability") {
        "PG_AVAILABILITY".into()
    } else if detail.starts_with("Degraded data redundancy") {
        "PG_DEGRADED".into()
    } else {
        format!("HEALTH_CHECK_{}", index + 1)
    }
}

/// `ceph health` (one line) or `ceph health detail` (the line, then one
/// `[WRN] CODE: message` line per check).
pub fn health(s: &StatusReport, detail: bool) -> String {
    let mut out = s.health.clone();
    if !s.health_details.is_empty() {
        out.push(' ');
        out.push_str(&s.health_details.join("; "));
    }
    out.push('\n');
    if detail {
        let tag = if s.health == "HEALTH_ERR" { "[ERR]" } else { "[WRN]" };
        for (i, d) in s.health_details.iter().enumerate() {
            let _ = writeln!(out, "{tag} {}: {d}", check_code(d, i));
        }
    }
    out
}

/// One pool as `ceph osd pool ls detail` prints it (followed by a blank line, as Ceph does).
pub fn pool_detail(p: &PoolInfo, epoch: u64) -> String {
    let mut line = format!(
        "pool {} '{}' replicated size {} min_size {} crush_rule 0 object_hash rjenkins \
         pg_num {} pgp_num {} autoscale_mode off last_change {} flags hashpspool",
        p.id, p.name, p.size, p.min_size, p.pg_num, p.pg_num, epoch
    );
    if p.snap_seq > 0 {
        line.push_str(",selfmanaged_snaps");
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
    let mut hosts: BTreeMap<&str, Vec<&quarry_wire::OsdInfo>> = BTreeMap::new();
    for osd in map.osds.values() {
        hosts.entry(osd.host.as_str()).or_default().push(osd);
    }
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("CLASS", Align::Right),
        ("WEIGHT", Align::Right),
        ("TYPE NAME", Align::Left),
        ("STATUS", Align::Right),
        ("REWEIGHT", Align::Right),
        ("PRI-AFF", Align::Right),
    ]);
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
            t.row(vec![
                osd.id.to_string(),
                "ssd".into(),
                weight(osd.weight),
                format!("        osd.{}", osd.id),
                if osd.up { "up".into() } else { "down".into() },
                if osd.in_cluster { "1.00000".into() } else { "0".into() },
                "1.00000".into(),
            ]);
        }
    }
    t.render()
}

/// A CRUSH-style weight: five decimals, `0` when zero (Ceph's `weightf_t`).
fn weight(w: f64) -> String {
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
pub const POOL_GET_KEYS: [&str; 6] = ["size", "min_size", "pg_num", "pgp_num", "crush_rule", "all"];

/// The value of one pool variable (`key` from [`POOL_GET_KEYS`] but `all`).
pub fn pool_var(p: &PoolInfo, key: &str) -> Option<String> {
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
    let keys: Vec<&str> = if key == "all" { POOL_GET_KEYS[..5].to_vec() } else { vec![key] };
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
        let addr = o.addr.map_or_else(|| "-".to_string(), |a| a.to_string());
        let _ = writeln!(
            out,
            "osd.{} {} {} weight {} up_from {} {} host {}",
            o.id,
            if o.up { "up  " } else { "down" },
            if o.in_cluster { "in " } else { "out" },
            weight(o.weight),
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

/// `ceph mon dump`.
pub fn mon_dump(map: &ClusterMap) -> String {
    let mut out = format!("epoch {}\nfsid {}\n", map.epoch, map.fsid);
    for (rank, (name, addr)) in map.mons.iter().enumerate() {
        let _ = writeln!(out, "{rank}: {addr} mon.{name}");
    }
    out
}

/// `ceph mon stat`.
pub fn mon_stat(map: &ClusterMap) -> String {
    let mons: Vec<String> = map.mons.iter().map(|(n, a)| format!("{n}={a}")).collect();
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
            bytes_iec(s.used_bytes),
            bytes_iec(s.used_bytes),
            format!("{pct:.2}"),
        ]);
    }
    out.push_str(&raw.render());
    out.push_str(" \n--- POOLS ---\n");
    let mut pools = Table::new(&[
        ("POOL", Align::Left),
        ("ID", Align::Right),
        ("PGS", Align::Right),
        ("STORED", Align::Right),
        ("OBJECTS", Align::Right),
        ("USED", Align::Right),
        ("%USED", Align::Right),
        ("MAX AVAIL", Align::Right),
    ]);
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
        ]);
    }
    out.push_str(&pools.render());
    out
}

/// Writes `bytes` to stdout and flushes. A closed pipe (`| head`) is not an error worth
/// reporting: the caller stops quietly.
pub fn stdout_bytes(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn numbers_print_like_cpp_streams() {
        assert_eq!(g6(10.19512), "10.1951");
        assert_eq!(g6(194.6041), "194.604");
        assert_eq!(g6(0.07894731), "0.0789473");
        assert_eq!(g6(48.0), "48");
        assert_eq!(g6(0.0), "0");
        assert_eq!(g6(1234567.0), "1.23457e+06");
        assert_eq!(g6(0.000001234), "1.234e-06");
        assert_eq!(g6(999999.7), "1e+06");
    }

    #[test]
    fn hexdump_matches_hexdump_c() {
        assert_eq!(
            hexdump(b"hello"),
            "00000000  68 65 6c 6c 6f                                    |hello|\n00000005\n"
        );
        let all: Vec<u8> = (0u8..20).collect();
        assert_eq!(
            hexdump(&all),
            "00000000  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|\n\
             00000010  10 11 12 13                                       |....|\n00000014\n"
        );
        let zeros = vec![0u8; 64];
        assert_eq!(
            hexdump(&zeros),
            "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n*\n\
             00000030  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n00000040\n"
        );
        assert_eq!(hexdump(b""), "");
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
            size: 1,
            min_size: 1,
            applications: BTreeSet::from(["rbd".to_string()]),
            snap_seq: 0,
            removed_snaps: BTreeSet::new(),
            acting: vec![],
            stored_objects: 3,
            stored_bytes: 3 << 20,
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
    }

    #[test]
    fn pool_get_and_dumps() {
        let p = pool();
        assert_eq!(pool_get(&p, "size"), "size: 1\n");
        assert_eq!(
            pool_get(&p, "all"),
            "size: 1\nmin_size: 1\npg_num: 32\npgp_num: 32\ncrush_rule: replicated_rule\n"
        );
        let mut map = ClusterMap { fsid: "f".into(), epoch: 4, ..Default::default() };
        map.pools.insert(1, p);
        map.mons.insert("a".into(), "127.0.0.1:6789".parse().unwrap());
        map.osds.insert(
            0,
            quarry_wire::OsdInfo {
                id: 0,
                addr: Some("127.0.0.1:7000".parse().unwrap()),
                host: "h".into(),
                up: true,
                in_cluster: true,
                weight: 1.0,
                up_from: 3,
                used_bytes: 0,
                avail_bytes: 0,
            },
        );
        let dump = osd_dump(&map);
        assert!(dump.starts_with("epoch 4\nfsid f\nmax_osd 1\n\npool 1 'rbd'"), "{dump}");
        assert!(
            dump.contains("osd.0 up   in  weight 1.00000 up_from 3 127.0.0.1:7000 host h\n"),
            "{dump}"
        );
        assert_eq!(mon_dump(&map), "epoch 4\nfsid f\n0: 127.0.0.1:6789 mon.a\n");
        assert_eq!(mon_stat(&map), "e4: 1 mons at {a=127.0.0.1:6789}, leader 0 a, quorum 0 a\n");
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

    #[test]
    fn python_errors() {
        assert_eq!(
            rados_python_error(ErrorCode::EPERM, "error connecting to the cluster"),
            "[errno 1] RADOS permission error (error connecting to the cluster)"
        );
        assert_eq!(
            rados_python_error(ErrorCode(71), "error connecting to the cluster"),
            "[errno 71] error connecting to the cluster"
        );
        assert_eq!(errno_name(ErrorCode::EACCES), "EACCES");
    }
}
