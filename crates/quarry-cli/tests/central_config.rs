//! The central config applied (issue 13): `ceph config set` reaches the running OSDs (they
//! subscribe to it, as Ceph's daemons do) and changes what they do for the options they
//! read at runtime, is applied at the next start for the others, loses to ceph.conf for the
//! same key (Ceph's order: default < mon < file < command line), and clients take their
//! `client` section at connect. `ceph config show osd.N` shows the running values with
//! their sources. Everything through the real `ceph`/`rados` tools against `quarry up`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn ceph(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("ceph", Some(conf), args), None, COMMAND_TIMEOUT)
}

fn rados(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("rados", Some(conf), args), None, COMMAND_TIMEOUT)
}

/// Puts `name` until `refused` says whether the write is refused as full, or panics after
/// 10 s. Returns the last run.
fn put_until(conf: &Path, file: &str, name: &str, refused: bool) -> Run {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = rados(conf, &["-p", "rbd", "put", name, file]);
        let full = r.stderr.contains("(28) No space left on device");
        if full == refused {
            if !refused {
                assert_eq!(r.code(), 0, "{}", r.stderr);
            }
            return r;
        }
        assert!(Instant::now() < deadline, "put {name}: wanted refused={refused}: {}", r.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `config show` row of `name` (its whitespace-separated cells).
fn show_row(conf: &Path, who: &str, name: &str) -> Vec<String> {
    let out = ceph(conf, &["config", "show", who]).ok("config show").out();
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} missing in\n{out}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Goal: a runtime option set centrally changes a running OSD's behaviour within a second
/// or two and stays applied across a restart; removing it brings the default back; the
/// same key in ceph.conf wins over the central value (`config show` says so with Ceph's
/// columns); an option read at start is marked `RO`, shown under IGNORES until the next
/// start, and applied then.
/// Method: `mon_osd_full_ratio` (the OSD's own full-disk write check reads it) set to a
/// tiny ratio makes every write fail with ENOSPC; a write is tried after each step. The
/// cluster starts without the test kit's raised ratios on its command line (they would win
/// over the central config).
#[test]
fn central_options_reach_the_running_osd_and_survive_a_restart() {
    let logs = quarry_testkit::log_guard();
    logs.allow("is full");
    logs.allow("full ratios out of order");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut cluster = up_default_ratios(&dir);
    let conf = dir.join("ceph.conf");
    let f = tmp.path().join("obj");
    std::fs::write(&f, b"central").unwrap();
    let f = f.to_str().unwrap();
    rados(&conf, &["-p", "rbd", "put", "o1", f]).ok("put before");

    // Runtime: the running OSD refuses writes as full at once (nearfull first: the three
    // ratios stay in order).
    ceph(&conf, &["config", "set", "osd", "mon_osd_nearfull_ratio", "0.0000005"]).ok("near");
    ceph(&conf, &["config", "set", "osd", "mon_osd_full_ratio", "0.000001"]).ok("set");
    let r = put_until(&conf, f, "o2", true);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let row = show_row(&conf, "osd.0", "mon_osd_full_ratio");
    assert_eq!(row[1..], ["0.000001", "mon"], "{row:?}");
    let json = ceph(&conf, &["config", "show", "osd.0", "--format=json"]).ok("show json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let item = v.as_array().unwrap().iter().find(|o| o["name"] == "mon_osd_full_ratio").unwrap();
    assert_eq!((&item["value"], &item["source"]), (&"0.000001".into(), &"mon".into()));
    assert_eq!(
        ceph(&conf, &["config", "show", "osd.0", "mon_osd_full_ratio"]).ok("show key").out(),
        "0.000001\n"
    );
    let all = ceph(&conf, &["config", "show-with-defaults", "osd.0"]).ok("with defaults").out();
    assert!(all.starts_with("NAME "), "{all}");
    assert!(all.lines().any(|l| l.starts_with("osd_memory_target ")), "{all}");

    // Read at start: marked RO, ignored until the next start.
    ceph(&conf, &["config", "set", "osd", "osd_client_message_cap", "100"]).ok("set RO");
    let dump = ceph(&conf, &["config", "dump"]).ok("dump").out();
    let line = dump.lines().find(|l| l.contains("osd_client_message_cap")).unwrap();
    assert!(line.trim_end().ends_with('*'), "{dump}");
    let line = dump.lines().find(|l| l.contains("mon_osd_full_ratio")).unwrap();
    assert!(!line.trim_end().ends_with('*'), "{dump}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let row = show_row(&conf, "osd.0", "osd_client_message_cap");
        if row.last().map(String::as_str) == Some("mon[100]") || Instant::now() > deadline {
            break row;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(row[1..], ["256", "default", "mon[100]"], "{row:?}");

    // Restart: both are applied from the start.
    cluster.terminate();
    let mut cluster = up_default_ratios(&dir);
    put_until(&conf, f, "o2", true);
    assert_eq!(show_row(&conf, "osd.0", "osd_client_message_cap")[1..], ["100", "mon"]);

    // Removed: the default is back, writes pass.
    ceph(&conf, &["config", "rm", "osd", "mon_osd_full_ratio"]).ok("rm");
    put_until(&conf, f, "o2", false);

    // ceph.conf wins over the central config for the same key.
    ceph(&conf, &["config", "set", "osd.0", "mon_osd_full_ratio", "0.000001"]).ok("set again");
    put_until(&conf, f, "o3", true);
    cluster.terminate();
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\n[osd]\n\tmon_osd_full_ratio = 0.95\n");
    std::fs::write(&conf, text).unwrap();
    let _cluster = up_default_ratios(&dir);
    put_until(&conf, f, "o3", false);
    let row = show_row(&conf, "osd.0", "mon_osd_full_ratio");
    assert_eq!(row[1..], ["0.95", "file", "mon[0.000001]"], "{row:?}");

    // Only OSDs report their running config.
    let r = ceph(&conf, &["config", "show", "mon.a"]);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(r.stderr.contains("Error ENOENT: no config state for daemon mon.a"), "{}", r.stderr);
}

/// Goal: clients take the central config's `client` section at connect, under their own
/// ceph.conf and command line: `rados_osd_op_timeout` set with `ceph config set client`
/// ends a write that waits on a full pool; the command line's value wins over it.
#[test]
fn clients_take_their_section_at_connect() {
    let logs = quarry_testkit::log_guard();
    logs.expect("pool is full: it reached its quota");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let f = tmp.path().join("obj");
    std::fs::write(&f, b"quota").unwrap();
    let f = f.to_str().unwrap();
    ceph(&conf, &["osd", "pool", "create", "q", "8"]).ok("create");
    ceph(&conf, &["osd", "pool", "set-quota", "q", "max_objects", "1"]).ok("quota");
    rados(&conf, &["-p", "q", "put", "o1", f]).ok("put o1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ceph(&conf, &["health", "detail"]).ok("health").out().contains("POOL_FULL") {
        assert!(Instant::now() < deadline, "the pool never became full");
        std::thread::sleep(Duration::from_millis(200));
    }
    ceph(&conf, &["config", "set", "client", "rados_osd_op_timeout", "2"]).ok("set");
    let started = Instant::now();
    let r = rados(&conf, &["-p", "q", "put", "o2", f]);
    assert!(r.stderr.contains("(110) Connection timed out"), "{}", r.stderr);
    assert!(started.elapsed() >= Duration::from_secs(2), "it did not wait");
    // The command line wins: a longer timeout.
    let started = Instant::now();
    let r = rados(&conf, &["--rados-osd-op-timeout", "4", "-p", "q", "put", "o2", f]);
    assert!(r.stderr.contains("(110) Connection timed out"), "{}", r.stderr);
    assert!(started.elapsed() >= Duration::from_secs(4), "the central value won");
}
