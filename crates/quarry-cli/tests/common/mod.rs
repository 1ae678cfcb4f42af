//! Helpers for the CLI tests: run the built `quarry` binary (under the names `ceph`, `rados`
//! through argv[0]), start `quarry up` or separate daemons in temporary directories on free
//! loopback ports, wait for their `ready` line, and stop only the processes started here.
//! The child-process machinery is `quarry_testkit::process` (bounded waits; the daemons'
//! WARN/ERROR lines reach the test's log guard).

#![allow(dead_code)]

pub mod cluster;
pub mod workload;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

// Each test binary uses a different part of this module.
#[allow(unused_imports)]
pub use quarry_testkit::process::{run_bounded, Daemon, Run, COMMAND_TIMEOUT};

/// The binary under test.
pub fn quarry() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quarry"))
}

/// `quarry` invoked as `tool` (argv[0]), with `conf` as CEPH_CONF and no CEPH_ARGS.
pub fn tool_cmd(tool: &str, conf: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(quarry());
    cmd.arg0(tool).args(args).env_remove("CEPH_ARGS").env_remove("RUST_LOG");
    match conf {
        Some(c) => cmd.env("CEPH_CONF", c),
        None => cmd.env_remove("CEPH_CONF"),
    };
    cmd
}

/// `quarry up DIR --osds N`, started and ready (full-disk thresholds raised: the host disk's
/// fill level is not what the tests test, `quarry_testkit::host_disk_args`).
pub fn up(dir: &Path, osds: u32) -> Daemon {
    quarry_testkit::process::up(&quarry(), dir, osds)
}

/// `quarry up DIR --osds 1` with the full ratios of ceph.conf or the central config (Ceph's
/// defaults unless set): for the tests of full disks and of those ratios (the command
/// line's values would win over the central config's).
pub fn up_default_ratios(dir: &Path) -> Daemon {
    quarry_testkit::process::up_with_args(&quarry(), dir, 1, &[])
}

/// The value of `key` in a ceph.conf text (panics when missing: the test's own file).
pub fn conf_value(conf: &str, key: &str) -> String {
    conf.lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} missing in\n{conf}"))
}

/// `quarry cluster-init DIR --osds N`: the conf, keys and data directories of a cluster of
/// separate daemons.
pub fn cluster_init(dir: &Path, osds: u32) -> Run {
    let mut init = Command::new(quarry());
    init.args(["cluster-init"]).arg(dir).args(["--osds", &osds.to_string()]);
    run_bounded(init, None, COMMAND_TIMEOUT).ok("cluster-init")
}

/// `quarry mon --mkfs` of the cluster directory `dir` (made by `quarry cluster-init`: the
/// address, fsid and keyring come from it), `args` appended (`--osds`, `--pool`, `--size`,
/// `--osd-grace`, ...), started and ready.
pub fn spawn_mon(dir: &Path, args: &[&str]) -> Daemon {
    let text = std::fs::read_to_string(dir.join("ceph.conf")).unwrap();
    let mut cmd = Command::new(quarry());
    cmd.arg("mon")
        .arg("--data")
        .arg(dir.join("mon"))
        .args(["--addr", &conf_value(&text, "mon_host"), "--mkfs"])
        .args(["--fsid", &conf_value(&text, "fsid")])
        .arg("--keyring")
        .arg(dir.join("mon.keyring"))
        .args(args);
    let mut d = Daemon::spawn("mon.a", cmd);
    d.wait_ready();
    d
}

/// Waits (90 s) until `ceph -s` shows `want` OSDs up.
pub fn wait_osds_up(conf: &Path, want: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        let r = run_bounded(tool_cmd("ceph", Some(conf), &["-s"]), None, COMMAND_TIMEOUT);
        last = r.out();
        if r.status.success() && last.contains(&format!(": {want} up")) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("never {want} OSDs up:\n{last}");
}

/// `quarry osd --id ID` of the cluster directory `dir` (made by `quarry cluster-init`),
/// started and ready.
pub fn spawn_osd(dir: &Path, id: u32) -> Daemon {
    spawn_osd_logging(dir, id, None)
}

/// [`spawn_osd`] with `RUST_LOG` = `rust_log` for this OSD (None: the default).
pub fn spawn_osd_logging(dir: &Path, id: u32, rust_log: Option<&str>) -> Daemon {
    let mut cmd = Command::new(quarry());
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    cmd.arg("osd")
        .args(["--id", &id.to_string()])
        .arg("--data")
        .arg(dir.join(format!("osd.{id}")))
        .arg("-c")
        .arg(dir.join("ceph.conf"))
        .arg("--keyring")
        .arg(dir.join(format!("osd.{id}/keyring")));
    let mut d = Daemon::spawn(&format!("osd.{id}"), cmd);
    d.wait_ready();
    d
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
