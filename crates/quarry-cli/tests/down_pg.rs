//! An op on a PG whose only OSD is down, through the tools: a separate `quarry mon` and two
//! `quarry osd` processes, a pool of one replica, osd.1 stopped. Reads of objects on osd.0
//! work; a read on osd.1's PGs says `waiting for PG P.S: no OSD up` on stderr after a few
//! seconds (instead of silence) and, with `--rados-osd-op-timeout`, fails with Ceph's
//! ETIMEDOUT line after it; `rados_osd_op_timeout` in CEPH_ARGS does the same. `ceph health
//! detail` then names osd.1 and each PG it holds back (and its JSON `detail` the same), and
//! `ceph pg PGID query` shows such a PG `down` with its acting set.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_read_on_a_down_pg_says_so_and_times_out() {
    let logs = quarry_testkit::log_guard();
    // osd.0 and the monitor see osd.1 go: its peers' sessions and the down-marking (a
    // stopped OSD is marked down after its grace).
    logs.allow_raft_churn().expect("no beacon within grace: marking osd down osd=1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    cluster_init(&dir, 2);
    let conf = dir.join("ceph.conf");
    let mut mon = spawn_mon(&dir, &["--osds", "0,1", "--pool", "rbd", "--size", "1"]);
    let mut osd0 = spawn_osd(&dir, 0);
    let mut osd1 = spawn_osd(&dir, 1);
    wait_osds_up(&conf, 2);
    let rados =
        |args: &[&str]| run_bounded(tool_cmd("rados", Some(&conf), args), None, COMMAND_TIMEOUT);
    let names: Vec<String> = (0..8).map(|i| format!("o{i}")).collect();
    for name in &names {
        rados(&["-p", "rbd", "put", name, "/etc/hostname"]).ok("put");
    }
    osd1.terminate();
    wait_osds_up(&conf, 1);

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

    // `ceph health detail` names each down OSD and each PG it holds back; its JSON has the
    // same items under each check's `detail`.
    let ceph =
        |args: &[&str]| run_bounded(tool_cmd("ceph", Some(&conf), args), None, COMMAND_TIMEOUT);
    let detail = ceph(&["health", "detail"]).ok("health detail").out();
    assert!(
        detail.contains("[WRN] OSD_DOWN: 1 osds down\n    osd.1 (root=default,host="),
        "{detail}"
    );
    assert!(detail.contains(") is down\n"), "{detail}");
    let down_pgs: Vec<&str> = detail
        .lines()
        .filter(|l| l.starts_with("    pg ") && l.ends_with(" is down, acting [1]"))
        .collect();
    assert!(!down_pgs.is_empty(), "{detail}");
    let json = ceph(&["health", "detail", "-f", "json"]).ok("health detail json").out();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let items = v["checks"]["PG_AVAILABILITY"]["detail"].as_array().unwrap();
    assert_eq!(items.len(), down_pgs.len(), "{json}");
    assert_eq!(items[0]["message"], down_pgs[0].trim());
    assert_eq!(v["checks"]["OSD_DOWN"]["detail"].as_array().unwrap().len(), 1, "{json}");

    // `ceph pg PGID query` of a PG held back by osd.1 and of one served by osd.0.
    let pgid = down_pgs[0].split_whitespace().nth(1).unwrap();
    let q = ceph(&["pg", pgid, "query"]).ok("pg query").out();
    let v: serde_json::Value = serde_json::from_str(&q).unwrap();
    assert_eq!(v["state"], "down", "{q}");
    assert_eq!(v["acting"], serde_json::json!([1]));
    assert_eq!(v["up"], serde_json::json!([]));
    assert_eq!(v["info"]["pgid"], pgid);
    assert_eq!(v["info"]["stats"]["up_primary"], -1);
    assert_eq!(v["info"]["stats"]["acting_primary"], 1);
    let missing = ceph(&["pg", "7.0", "query"]);
    assert_eq!(missing.code(), 2, "{}", missing.stderr);
    assert_eq!(missing.stderr, "Error ENOENT: i don't have pgid 7.0\n");

    osd0.terminate();
    mon.terminate();
}
