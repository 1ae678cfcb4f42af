//! An op on a PG whose only OSD is down, through the tools: a separate `quarry mon` and two
//! `quarry osd` processes, a pool of one replica, osd.1 stopped. Reads of objects on osd.0
//! work; a read on osd.1's PGs says `waiting for PG P.S: no OSD up` on stderr after a few
//! seconds (instead of silence) and, with `--rados-osd-op-timeout`, fails with Ceph's
//! ETIMEDOUT line after it; `rados_osd_op_timeout` in CEPH_ARGS does the same.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn conf_value(conf: &str, key: &str) -> String {
    conf.lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} missing in\n{conf}"))
}

fn osd(dir: &Path, id: u32) -> Daemon {
    let mut cmd = Command::new(quarry());
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

/// Waits until `ceph -s` shows `want` OSDs up.
fn wait_up(conf: &Path, want: u32) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    while Instant::now() < deadline {
        let r = run_bounded(tool_cmd("ceph", Some(conf), &["-s"]), None, COMMAND_TIMEOUT);
        last = r.out();
        if r.status.success() && last.contains(&format!(": {want} up")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("never {want} OSDs up:\n{last}");
}

#[test]
fn a_read_on_a_down_pg_says_so_and_times_out() {
    let logs = quarry_testkit::log_guard();
    // osd.0 and the monitor see osd.1 go: its peers' sessions and the down-marking (a
    // stopped OSD is marked down after its grace).
    logs.allow_raft_churn().expect("no beacon within grace: marking osd down osd=1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut init = Command::new(quarry());
    init.args(["cluster-init"]).arg(&dir).args(["--osds", "2"]);
    run_bounded(init, None, COMMAND_TIMEOUT).ok("cluster-init");
    let conf = dir.join("ceph.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let mut mon_cmd = Command::new(quarry());
    mon_cmd
        .arg("mon")
        .arg("--data")
        .arg(dir.join("mon"))
        .args(["--addr", &conf_value(&text, "mon_host"), "--mkfs"])
        .args(["--fsid", &conf_value(&text, "fsid")])
        .arg("--keyring")
        .arg(dir.join("mon.keyring"))
        .args(["--osds", "0,1", "--pool", "rbd", "--size", "1"]);
    let mut mon = Daemon::spawn("mon.a", mon_cmd);
    mon.wait_ready();
    let mut osd0 = osd(&dir, 0);
    let mut osd1 = osd(&dir, 1);
    wait_up(&conf, 2);
    let rados =
        |args: &[&str]| run_bounded(tool_cmd("rados", Some(&conf), args), None, COMMAND_TIMEOUT);
    let names: Vec<String> = (0..8).map(|i| format!("o{i}")).collect();
    for name in &names {
        rados(&["-p", "rbd", "put", name, "/etc/hostname"]).ok("put");
    }
    osd1.terminate();
    wait_up(&conf, 1);

    // Every object: those on osd.0 answer at once, those on osd.1 wait, say so, time out.
    let readers: Vec<_> = names
        .iter()
        .map(|name| {
            let (conf, name) = (conf.clone(), name.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let args = ["--rados-osd-op-timeout", "6", "-p", "rbd", "get", &name, "-"];
                let r = run_bounded(tool_cmd("rados", Some(&conf), &args), None, COMMAND_TIMEOUT);
                (name, r, started.elapsed())
            })
        })
        .collect();
    let mut waited = 0;
    for reader in readers {
        let (name, r, took) = reader.join().unwrap();
        if r.status.success() {
            assert!(took < Duration::from_secs(5), "{name} took {took:?}");
            continue;
        }
        waited += 1;
        assert_eq!(r.code(), 1, "{name}: {}", r.stderr);
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{name}: {}", r.stderr);
        assert!(
            lines[0].starts_with("waiting for PG ") && lines[0].ends_with(": no OSD up"),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(lines[1], format!("error getting rbd/{name}: (110) Connection timed out"));
        assert!(took >= Duration::from_secs(6) && took < Duration::from_secs(12), "{took:?}");
    }
    assert!(waited > 0 && waited < names.len(), "{waited} of {} reads waited", names.len());

    // The same option from CEPH_ARGS.
    let down = (0..8)
        .map(|i| format!("o{i}"))
        .find(|n| {
            let mut cmd = tool_cmd("rados", Some(&conf), &["-p", "rbd", "stat", n]);
            cmd.env("CEPH_ARGS", "--rados_osd_op_timeout=2");
            run_bounded(cmd, None, COMMAND_TIMEOUT).code() == 1
        })
        .expect("an object on osd.1");
    let mut cmd = tool_cmd("rados", Some(&conf), &["-p", "rbd", "stat", &down]);
    cmd.env("CEPH_ARGS", "--rados_osd_op_timeout=2");
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT);
    assert!(r.stderr.contains("(110) Connection timed out"), "{}", r.stderr);

    osd0.terminate();
    mon.terminate();
}
