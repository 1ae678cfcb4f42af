//! `ceph tell` against `quarry up --osds 2`: `version` from an OSD, every OSD and the
//! monitor in Ceph's JSON; `config get|set` and `injectargs` change the log levels of the
//! running daemons (the log file shows the OSD's debug lines only after `config set
//! debug_osd 10`) and refuse options that cannot change (EPERM), unknown ones (ENOENT) and
//! bad values (EINVAL) with Ceph's messages and exit codes; `bench` reports what it wrote;
//! a user without `allow *` is refused (EACCES, exit 13) as by Ceph.

mod common;

use std::path::Path;

use common::{run_bounded, tool_cmd, up, Run, COMMAND_TIMEOUT};

fn ceph(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("ceph", Some(conf), args), None, COMMAND_TIMEOUT)
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.out()).unwrap_or_else(|e| panic!("{e}: {}", run.out()))
}

/// Lines of the log file that the OSD crate logged at DEBUG or TRACE.
fn osd_debug_lines(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| (l.contains(" DEBUG ") || l.contains(" TRACE ")) && l.contains("quarry_osd"))
        .count()
}

#[test]
fn tell_answers_and_changes_log_levels_at_runtime() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 2);
    let conf = dir.join("ceph.conf");
    let conf = conf.as_path();
    let log = dir.join("log/quarry-up.log");

    let v = ceph(conf, &["tell", "osd.0", "version"]).ok("tell osd.0 version");
    assert!(v.out().starts_with("{\n    \"version\": \"16.2.15-quarry."), "{}", v.out());
    assert_eq!(json(&v)["release"], "pacific");
    let m = ceph(conf, &["tell", "mon.*", "version"]).ok("tell mon.* version");
    assert_eq!(json(&m)["release_type"], "stable");
    let all = ceph(conf, &["tell", "osd.*", "version"]).ok("tell osd.* version").out();
    assert!(all.starts_with("osd.0: {\n") && all.contains("\nosd.1: {\n"), "{all}");

    // Log levels at runtime: nothing of the OSD at DEBUG until debug_osd is raised.
    let rados =
        |args: &[&str]| run_bounded(tool_cmd("rados", Some(conf), args), None, COMMAND_TIMEOUT);
    rados(&["-p", "rbd", "put", "before", "/etc/hostname"]).ok("put");
    assert_eq!(osd_debug_lines(&log), 0, "debug lines before the level was raised");
    let got = ceph(conf, &["tell", "osd.0", "config", "get", "debug_osd"]).ok("config get");
    assert_eq!(json(&got)["debug_osd"], "1/1");
    let set = ceph(conf, &["tell", "osd.0", "config", "set", "debug_osd", "10"]).ok("config set");
    assert_eq!(json(&set)["success"], "");
    let got = ceph(conf, &["tell", "osd.0", "config", "get", "debug_osd"]).ok("config get");
    assert_eq!(json(&got)["debug_osd"], "10/10");
    for i in 0..4 {
        rados(&["-p", "rbd", "put", &format!("after{i}"), "/etc/hostname"]).ok("put");
    }
    assert!(osd_debug_lines(&log) > 0, "no debug lines after debug_osd 10");
    let inject = ceph(conf, &["tell", "osd.1", "injectargs", "--debug-osd 1/5 --debug-ms=0"]);
    let inject = inject.ok("injectargs");
    assert_eq!(inject.out(), "{}\n");
    assert_eq!(inject.stderr, "debug_osd = '1/5' \ndebug_ms = '0/0' \n");
    ceph(conf, &["tell", "osd.0", "injectargs", "--debug-rados", "2"]).ok("injectargs unquoted");

    // Refusals, with Ceph's messages and exit codes; nothing changes.
    let fixed = ceph(conf, &["tell", "osd.0", "config", "set", "ms_tcp_read_timeout", "5"]);
    assert_eq!(fixed.code(), 1, "{}", fixed.stderr);
    assert!(fixed.stderr.contains("may not be modified at runtime"), "{}", fixed.stderr);
    let got = ceph(conf, &["tell", "osd.0", "config", "get", "ms_tcp_read_timeout"]).ok("get");
    assert_eq!(json(&got)["ms_tcp_read_timeout"], "900");
    let unknown = ceph(conf, &["tell", "osd.0", "config", "get", "nosuch"]);
    assert_eq!(unknown.code(), 2);
    assert_eq!(
        unknown.stderr,
        "Error ENOENT: error getting 'nosuch': (2) No such file or directory\n"
    );
    let bad = ceph(conf, &["tell", "osd.0", "config", "set", "debug_osd", "loud"]);
    assert_eq!(bad.code(), 22, "{}", bad.stderr);
    let bad = ceph(conf, &["tell", "osd.0", "injectargs", "--nosuch 3"]);
    assert_eq!(bad.code(), 22, "{}", bad.stderr);
    let missing = ceph(conf, &["tell", "osd.7", "version"]);
    assert_eq!(missing.code(), 2);
    assert_eq!(missing.stderr, "Error ENOENT: problem getting command descriptions from osd.7\n");

    // bench: what it wrote, and figures that agree with each other.
    let b = ceph(conf, &["tell", "osd.1", "bench", "8388608", "1048576"]).ok("bench");
    let b = json(&b);
    assert_eq!(b["bytes_written"], 8388608);
    assert_eq!(b["blocksize"], 1048576);
    let secs = b["elapsed_sec"].as_f64().unwrap();
    let rate = b["bytes_per_sec"].as_f64().unwrap();
    assert!(secs > 0.0 && (rate * secs - 8388608.0).abs() < 1.0, "{b}");
    assert!((b["iops"].as_f64().unwrap() * secs - 8.0).abs() < 0.01, "{b}");
    let huge = ceph(conf, &["tell", "osd.1", "bench", "1048576", "134217728"]);
    assert_eq!(huge.code(), 22, "{}", huge.stderr);

    // Only `allow *` may tell, as in Ceph.
    let keyring = tmp.path().join("rbd.keyring");
    let k = keyring.to_str().unwrap();
    ceph(
        conf,
        &[
            "auth",
            "get-or-create",
            "client.rbd",
            "mon",
            "profile rbd",
            "osd",
            "profile rbd",
            "-o",
            k,
        ],
    )
    .ok("auth get-or-create");
    for target in ["osd.0", "mon.*"] {
        let r = ceph(conf, &["--id", "rbd", "--keyring", k, "tell", target, "version"]);
        assert_eq!(r.code(), 13, "{target}: {}", r.stderr);
        assert!(r.stderr.starts_with("Error EACCES: problem getting command descriptions"));
    }
}
