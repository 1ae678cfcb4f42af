//! PG merge through the tools, on separate `quarry mon` and `quarry osd` processes on
//! loopback: `ceph osd pool set POOL pg_num N` below the current value shrinks a pool with
//! data in it while a writer and listers run and a watcher watches an object that moves
//! (every acknowledged write, the pool snapshot, omap and xattrs read back; `rados ls`
//! lists each object once, during the merges too; `ceph pg ls` shows the merging pair
//! `premerge` meanwhile and the remaining PGs end active+clean; the watcher gets a notify
//! after the merges; then an OSD is SIGKILLed and restarted and everything still reads
//! back), a shrink to a non-power-of-two count (16 -> 6) with an RBD image and its
//! snapshot in a second pool shrinking too, and the refusals with Ceph's messages.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{get, put, Cluster, Spec, TestDir};
use common::workload::*;
use common::*;

/// The cluster of these tests: `osds` OSDs, pool `rbd` of `size` replicas and `pg_num` PGs.
fn start(tmp: &Path, osds: u32, size: u32, pg_num: u32) -> Cluster {
    Cluster::start(tmp, Spec { osds, size, pg_num, extra: "" })
}

/// Every distinct `ceph pg ls` state of pool `rbd` seen while `stop` is unset (polled every
/// 0.2 s), with how often.
fn watch_states(
    conf: &Path,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeMap<String, u32>> {
    let conf = conf.to_path_buf();
    std::thread::spawn(move || {
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            let run = run_bounded(
                tool_cmd("ceph", Some(&conf), &["pg", "ls", "-f", "json"]),
                None,
                COMMAND_TIMEOUT,
            );
            if !run.status.success() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&run.out()).unwrap();
            for p in v["pg_stats"].as_array().unwrap() {
                if p["pgid"].as_str().unwrap().starts_with("1.") {
                    *seen.entry(p["state"].as_str().unwrap().to_string()).or_default() += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        seen
    })
}

/// Goal (issue 13, PG merge): on 3 OSDs, a size-2 pool of 16 PGs holding objects of 0 B to
/// 4 MiB, omap, xattrs and a pool snapshot shrinks to 4 PGs while a writer and a lister run
/// and a watcher watches an object of a merged PG. `osd pool ls detail` shows Ceph's
/// `pg_num_target` meanwhile and `pg ls` the merging pairs `premerge`; every acknowledged
/// write, the snapshot's version, omap and xattrs read back; every listing, during the
/// merges and after, gives each object once; the 4 PGs go active+clean; a notify after the
/// merges reaches the watcher. Then osd.0 is SIGKILLed and started again: everything still
/// reads back and no OSD's store keeps a copy of a merged PG.
#[test]
fn shrink_16_to_4_under_a_writer_then_an_osd_dies() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn()
        .allow("no beacon within grace: marking osd down")
        .allow("no monitor session; retrying")
        .allow("openraft::")
        .allow("raft group did not shut down cleanly");
    let dir = TestDir::create();
    let tmp = dir.path();
    let mut c = start(tmp, 3, 2, 16);
    wait_clean(&c, 16, 2, Duration::from_secs(90));
    let w = write_data(&c, tmp);
    // A watched object in a PG that merges away.
    let watched =
        (0..).map(|i| format!("hdr-{i}")).find(|n| quarry_placement::pg_of(n, 16) >= 4).unwrap();
    put(&c, tmp, &watched, b"header");
    let fifo = tmp.join("stdin");
    let mut mkfifo = Command::new("mkfifo");
    mkfifo.arg(&fifo);
    run_bounded(mkfifo, None, COMMAND_TIMEOUT).ok("mkfifo");
    let _hold = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let watcher = spawn_watcher(&c.conf, &fifo, &watched, "watcher");
    notify_reaches(&c, &watcher, &watched, 1, "before the merges");

    let writer = Writer::start(&c, tmp);
    // A lister: every listing while the PGs merge gives each object written before once.
    let mut base = w.names();
    base.push(watched.clone());
    let lister = Lister::start(&c, base.clone(), "the merges");
    let stop = Arc::new(AtomicBool::new(false));
    let states = watch_states(&c.conf, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", "4"]).ok("pool set pg_num");
    assert_eq!(set.stderr.trim(), "set pool 1 pg_num to 4");
    let detail = c.ceph(&["osd", "pool", "ls", "detail"]).ok("ls detail").out();
    assert!(detail.contains("pg_num_target 4 pgp_num_target 4"), "{detail}");
    wait_clean(&c, 4, 2, Duration::from_secs(400));
    eprintln!("16 pgs merged into 4 (active+clean) in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let acked = writer.stop();
    let listings = lister.stop();
    let states = states.join().unwrap();
    eprintln!(
        "{listings} listings ran during the merges, each complete; pg states seen: {states:?}"
    );
    assert!(states.keys().any(|s| s.ends_with("+premerge")), "no premerge seen: {states:?}");

    // The watch followed its object to the target PG.
    notify_reaches(&c, &watcher, &watched, 2, "after the merges");

    check_data_or_dump(&c, tmp, &w, &acked);
    let want = w.all_names(&acked, &[&watched]);
    assert_eq!(listed(&c), want, "rados ls after the merges");
    let detail = c.ceph(&["osd", "pool", "ls", "detail"]).ok("ls detail").out();
    assert!(detail.contains("pg_num 4 pgp_num 4 autoscale_mode"), "{detail}");
    let status = c.ceph(&["-s"]).ok("status").out();
    assert!(status.contains("4 active+clean"), "{status}");

    // osd.0 dies without warning (size 2: its PGs wait for it) and starts again.
    drop(watcher);
    c.osds[0].take().unwrap().kill();
    c.wait(Duration::from_secs(60), "osd.0 marked down", |c| {
        let s = c.ceph(&["-s"]).out();
        s.contains(": 2 up").then_some(()).ok_or(s)
    });
    c.osds[0] = Some(spawn_osd(&tmp.join("c"), 0));
    wait_clean(&c, 4, 2, Duration::from_secs(120));
    check_data(&c, tmp, &w, &acked);
    assert_eq!(listed(&c), want, "rados ls after the restart");
    put(&c, tmp, "after-the-restart", b"still writable");
    assert_eq!(get(&c, tmp, "after-the-restart", None), b"still writable");
    c.shutdown();
    // No copy of a merged PG is left in any store.
    assert_no_pg_at_or_above(&tmp.join("c"), 3, 4);
}

/// Goal: a shrink to a non-power-of-two count (16 -> 6) keeps every object readable and
/// listed once; an RBD image's self-managed snapshot and head read back after its pool
/// shrinks 8 -> 3; the refusals answer as Ceph does and change nothing (0 ERANGE,
/// nopgchange EPERM); a later growth splits again.
#[test]
fn shrink_to_6_rbd_snapshot_and_refusals() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn().allow("openraft::").allow("raft group did not shut down cleanly");
    let dir = TestDir::create();
    let tmp = dir.path();
    let c = start(tmp, 2, 1, 16);
    wait_clean(&c, 16, 1, Duration::from_secs(60));
    let objects: Vec<(String, Vec<u8>)> =
        (0..48).map(|i| (format!("o{i}"), pattern(100 + i * 997, i as u64 + 3))).collect();
    for (name, data) in &objects {
        put(&c, tmp, name, data);
    }
    let names: Vec<String> = {
        let mut all: Vec<String> = objects.iter().map(|(n, _)| n.clone()).collect();
        all.sort();
        all
    };
    // A second pool with an RBD image and a self-managed snapshot (rbd snap), then new data
    // in the image: the snapshot's clones merge with their objects.
    let img = VmImage::create(&c, tmp, 8);

    let refused = |args: &[&str], code: i32, message: &str| {
        let mut all = vec!["osd", "pool", "set", "rbd"];
        all.extend(args);
        let run = c.ceph(&all);
        assert_eq!(run.code(), code, "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.trim(), message, "{args:?}");
        assert_eq!(c.pool_get("pg_num"), "pg_num: 16", "{args:?} changed pg_num");
    };
    refused(
        &["pg_num", "0"],
        34,
        "Error ERANGE: 'pg_num' must be greater than 0 and less than or equal to 65536 (you may adjust 'mon max pool pg num' for higher values)",
    );
    c.ceph(&["osd", "pool", "set", "rbd", "nopgchange", "1"]).ok("set nopgchange");
    refused(
        &["pg_num", "6"],
        1,
        "Error EPERM: pool pg_num change is disabled; you must unset nopgchange flag for the pool first",
    );
    c.ceph(&["osd", "pool", "set", "rbd", "nopgchange", "0"]).ok("unset nopgchange");
    let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", "6"]).ok("pool set");
    assert_eq!(set.stderr.trim(), "set pool 1 pg_num to 6");
    let set = c.ceph(&["osd", "pool", "set", "vm", "pg_num", "3"]).ok("pool set vm");
    assert_eq!(set.stderr.trim(), "set pool 2 pg_num to 3");
    wait_clean(&c, 6, 1, Duration::from_secs(240));
    for (name, data) in &objects {
        assert!(get(&c, tmp, name, None) == *data, "{name} differs at pg_num 6");
    }
    assert_eq!(listed(&c), names, "rados ls at pg_num 6");
    c.wait(Duration::from_secs(240), "pool vm at 3 pgs, active+clean", |c| {
        let pgs = c.pgs();
        let vm: Vec<_> = pgs.iter().filter(|p| p.pgid.starts_with("2.")).collect();
        let ok = vm.len() == 3 && vm.iter().all(|p| p.state == "active+clean");
        ok.then_some(()).ok_or_else(|| format!("{vm:?}"))
    });
    assert!(img.export("vm/img@s1") == img.image, "the snapshot's data differs after the merges");
    assert!(img.export("vm/img") == img.head, "the image differs after the merges");
    let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", "8"]).ok("grow again");
    assert_eq!(set.stderr.trim(), "set pool 1 pg_num to 8");
    wait_clean(&c, 8, 1, Duration::from_secs(90));
    for (name, data) in &objects {
        assert!(get(&c, tmp, name, None) == *data, "{name} differs at pg_num 8");
    }
    assert_eq!(listed(&c), names, "rados ls at pg_num 8");
    c.shutdown();
}
