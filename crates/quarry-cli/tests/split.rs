//! PG split through the tools, on separate `quarry mon` and `quarry osd` processes on
//! loopback: `ceph osd pool set POOL pg_num N` grows a pool with data in it while a writer
//! runs and a watcher watches an object that moves (every acknowledged write, snapshot,
//! omap and xattr reads back; `rados ls` lists each object once; the 16 PGs go active+clean;
//! the watcher gets a notify after the split; then an OSD is SIGKILLed and everything still
//! reads back), growth in non-power-of-two steps (4 -> 6 -> 16), and the refusals (pgp_num,
//! nopgchange, Ceph's range and mon_max_pg_per_osd checks) with Ceph's
//! messages, changing nothing.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{get, put, Cluster, Spec, TestDir};
use common::workload::*;
use common::*;

/// The cluster of these tests: `osds` OSDs, pool `rbd` of `size` replicas and `pg_num` PGs.
fn start(tmp: &Path, osds: u32, size: u32, pg_num: u32) -> Cluster {
    Cluster::start(tmp, Spec { osds, size, pg_num, extra: "" })
}

/// Goal (issue 13, PG split): on 4 OSDs, a size-3 pool of 4 PGs holding objects of 0 B to
/// 4 MiB, omap, xattrs and a pool snapshot grows to 16 PGs while a writer runs and a
/// watcher watches an object that moves to a child PG. Every acknowledged write, the
/// snapshot's version, omap and xattrs read back; `rados ls` lists every object once; the
/// 16 PGs go active+clean (children whose placement differs from their parent's are moved
/// by the rebalancing); `pool get` says 16; a notify after the split reaches the watcher.
/// Then osd.0 is SIGKILLed and everything still reads back from the other replicas (size 3:
/// a Raft group keeps a majority; a size-2 PG that loses a voter cannot elect a leader).
#[test]
fn grow_4_to_16_under_a_writer_then_an_osd_dies() {
    let logs = quarry_testkit::log_guard();
    // Four debug OSDs on a loaded machine: a beacon may miss the 5 s grace (the OSD boots
    // again), besides osd.0's death.
    logs.allow_raft_churn()
        .allow("no beacon within grace: marking osd down")
        .allow("no monitor session; retrying")
        .allow("openraft::")
        .allow("raft group did not shut down cleanly");
    let dir = TestDir::create();
    let tmp = dir.path();
    let mut c = start(tmp, 4, 3, 4);
    wait_clean(&c, 4, 3, Duration::from_secs(60));
    let w = write_data(&c, tmp);
    // A watched object that moves to a child PG when the pool grows to 16.
    let watched = (0..)
        .map(|i| format!("hdr-{i}"))
        .find(|n| quarry_placement::pg_of(n, 4) != quarry_placement::pg_of(n, 16))
        .unwrap();
    put(&c, tmp, &watched, b"header");
    let fifo = tmp.join("stdin");
    let mut mkfifo = Command::new("mkfifo");
    mkfifo.arg(&fifo);
    run_bounded(mkfifo, None, COMMAND_TIMEOUT).ok("mkfifo");
    let _hold = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let watcher = spawn_watcher(&c.conf, &fifo, &watched, "watcher");
    notify_reaches(&c, &watcher, &watched, 1, "before the split");

    let writer = Writer::start(&c, tmp);
    // A lister: `rados ls` over and over while the PGs split; every listing must give each
    // object written before once (a listing that holds the map of 4 PGs while the parents
    // split, or reads a parent after its objects moved, must still find them).
    let mut base = w.names();
    base.push(watched.clone());
    let lister = Lister::start(&c, base.clone(), "the split");
    std::thread::sleep(Duration::from_secs(2));
    // And one slow listing (a pause before each PG, test-only) that starts with the map of
    // 4 PGs and lists them while they split.
    let slow = {
        let mut cmd = tool_cmd("rados", Some(&c.conf), &["-p", "rbd", "ls"]);
        cmd.env("QUARRY_TEST_LIST_PAUSE_MS", "400");
        std::thread::spawn(move || run_bounded(cmd, None, COMMAND_TIMEOUT))
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", "16"]).ok("pool set pg_num");
    assert_eq!(set.stderr.trim(), "set pool 1 pg_num to 16");
    assert_eq!(c.pool_get("pg_num"), "pg_num: 16");
    assert_eq!(c.pool_get("pgp_num"), "pgp_num: 16");
    wait_clean(&c, 16, 3, Duration::from_secs(120));
    eprintln!("4 pgs split into 16 (active+clean) in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    let acked = writer.stop();
    let listings = lister.stop();
    eprintln!("{listings} listings ran during the split, each complete");
    let out = slow.join().unwrap().ok("slow ls").out();
    let unique: BTreeSet<&str> = out.lines().collect();
    assert_eq!(unique.len(), out.lines().count(), "the slow listing gave an object twice");
    let missing: Vec<&String> = base.iter().filter(|n| !unique.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "the listing across the split missed {missing:?}");

    // The watch followed its object to the child PG.
    notify_reaches(&c, &watcher, &watched, 2, "after the split");

    check_data_or_dump(&c, tmp, &w, &acked);
    let want = w.all_names(&acked, &[&watched]);
    assert_eq!(listed(&c), want, "rados ls after the split");
    let detail = c.ceph(&["osd", "pool", "ls", "detail"]).ok("ls detail").out();
    assert!(detail.contains("pg_num 16 pgp_num 16"), "{detail}");
    let status = c.ceph(&["-s"]).ok("status").out();
    assert!(status.contains("16 active+clean"), "{status}");

    // osd.0 dies without warning: every PG it was in keeps a replica elsewhere.
    drop(watcher);
    c.osds[0].take().unwrap().kill();
    c.wait(Duration::from_secs(60), "osd.0 down and its pgs served by others", |c| {
        let pgs = c.pgs();
        let served =
            pgs.iter().all(|p| p.acting.first() != Some(&0) && p.state.starts_with("active"));
        served.then_some(()).ok_or_else(|| format!("{pgs:?}"))
    });
    check_data(&c, tmp, &w, &acked);
    put(&c, tmp, "after-the-death", b"still writable");
    assert_eq!(get(&c, tmp, "after-the-death", None), b"still writable");
    c.shutdown();
}

/// Goal: growth in non-power-of-two steps (4 -> 6 -> 16) keeps every object readable and
/// listed once; an RBD image's self-managed snapshot and head read back after its pool
/// grows 4 -> 16; the refusals answer as Ceph does (its message and exit code) and change
/// nothing: pgp_num above pg_num (EINVAL) or below
/// it (EOPNOTSUPP: it follows pg_num), above 65536 (ERANGE), past mon_max_pg_per_osd
/// (ERANGE, Ceph's "would mean" message), with nopgchange set (EPERM).
#[test]
fn non_power_of_two_steps_and_refusals() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn().allow("openraft::");
    let dir = TestDir::create();
    let tmp = dir.path();
    let c = start(tmp, 2, 1, 4);
    wait_clean(&c, 4, 1, Duration::from_secs(60));
    let objects: Vec<(String, Vec<u8>)> =
        (0..48).map(|i| (format!("o{i}"), pattern(100 + i * 997, i as u64 + 3))).collect();
    for (name, data) in &objects {
        put(&c, tmp, name, data);
    }
    // A second pool with an RBD image and a self-managed snapshot (rbd snap), then new data
    // in the image: the snapshot's clones split with their objects.
    let img = VmImage::create(&c, tmp, 4);
    let names = |extra: &[String]| {
        let mut all: Vec<String> = objects.iter().map(|(n, _)| n.clone()).collect();
        all.extend(extra.iter().cloned());
        all.sort();
        all
    };
    let mut extra: Vec<String> = Vec::new();
    for step in [6u32, 16] {
        let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", &step.to_string()]);
        assert_eq!(set.ok("pool set").stderr.trim(), format!("set pool 1 pg_num to {step}"));
        wait_clean(&c, step as usize, 1, Duration::from_secs(90));
        for (name, data) in &objects {
            assert!(get(&c, tmp, name, None) == *data, "{name} differs at pg_num {step}");
        }
        assert_eq!(listed(&c), names(&extra), "rados ls at pg_num {step}");
        let new = format!("new-{step}");
        put(&c, tmp, &new, b"written after the step");
        extra.push(new);
    }
    assert_eq!(listed(&c), names(&extra));
    let set = c.ceph(&["osd", "pool", "set", "vm", "pg_num", "16"]).ok("pool set vm pg_num");
    assert_eq!(set.stderr.trim(), "set pool 2 pg_num to 16");
    assert!(img.export("vm/img@s1") == img.image, "the snapshot's data differs after the split");
    assert!(img.export("vm/img") == img.head, "the image differs after the split");

    let refused = |args: &[&str], code: i32, message: &str| {
        let mut all = vec!["osd", "pool", "set", "rbd"];
        all.extend(args);
        let run = c.ceph(&all);
        assert_eq!(run.code(), code, "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.trim(), message, "{args:?}");
        assert_eq!(c.pool_get("pg_num"), "pg_num: 16", "{args:?} changed pg_num");
    };
    refused(&["pgp_num", "32"], 22, "Error EINVAL: specified pgp_num 32 > pg_num 16");
    refused(
        &["pgp_num", "8"],
        95,
        "Error EOPNOTSUPP: pgp_num follows pg_num in Quarry (each PG is placed by its own id): pool 'rbd' keeps pgp_num 16; set pg_num instead",
    );
    refused(
        &["pg_num", "65537"],
        34,
        "Error ERANGE: 'pg_num' must be greater than 0 and less than or equal to 65536 (you may adjust 'mon max pool pg num' for higher values)",
    );
    refused(
        &["pg_num", "1024"],
        34,
        "Error ERANGE: pool id 1 pg_num 1024 size 1 would mean 1040 total pgs, which exceeds max 750 (mon_max_pg_per_osd 250 * num_in_osds 3)",
    );
    c.ceph(&["osd", "pool", "set", "rbd", "nopgchange", "1"]).ok("set nopgchange");
    refused(
        &["pg_num", "32"],
        1,
        "Error EPERM: pool pg_num change is disabled; you must unset nopgchange flag for the pool first",
    );
    assert_eq!(c.pgs().len(), 32);
    c.shutdown();
}

/// Goal: objects written to a brand-new pool in the first moments of its PGs (before each
/// PG recorded its pg_num, the primary's first entry as leader) are found after the pool
/// grows at once: a write waits for the recording, so a split never meets objects it does
/// not know how to place (teeth: with writes let through unrecorded PGs, the split recorded
/// 16 without moving them and `rados get` of the children's objects said ENOENT).
#[test]
fn writes_to_a_new_pool_then_growth_at_once_lose_nothing() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let ceph =
        |args: &[&str]| run_bounded(tool_cmd("ceph", Some(&conf), args), None, COMMAND_TIMEOUT);
    let rados =
        |args: &[&str]| run_bounded(tool_cmd("rados", Some(&conf), args), None, COMMAND_TIMEOUT);
    for round in 0..2 {
        let pool = format!("fresh{round}");
        ceph(&["osd", "pool", "create", &pool, "4"]).ok("pool create");
        let file = tmp.path().join("obj");
        std::fs::write(&file, b"early data").unwrap();
        let names: Vec<String> = (0..12).map(|i| format!("early{i}")).collect();
        std::thread::scope(|scope| {
            for name in &names {
                let (pool, file, rados) = (&pool, &file, &rados);
                scope.spawn(move || {
                    rados(&["-p", pool, "put", name, file.to_str().unwrap()]).ok("early put");
                });
            }
        });
        ceph(&["osd", "pool", "set", &pool, "pg_num", "16"]).ok("grow");
        for name in &names {
            let out = tmp.path().join("out");
            rados(&["-p", &pool, "get", name, out.to_str().unwrap()]).ok(&format!("get {name}"));
            assert_eq!(std::fs::read(&out).unwrap(), b"early data", "{name}");
        }
        let listed = rados(&["-p", &pool, "ls"]).ok("ls").out();
        assert_eq!(listed.lines().count(), names.len(), "{listed}");
    }
}

/// Goal (issue 13, truthful PG states): a split that cannot happen yet shows its children
/// `creating`, not `active+clean`. On 2 OSDs, a size-2 pool of 4 PGs with osd.1 killed
/// (no Raft majority: the parents cannot split) grows to 8: `pg ls`, `pg stat`, `pg dump`
/// and `ceph -s` show the 4 children `creating` (and still do 3 s later), the parents not;
/// osd.1 started again, the parents split, all 8 PGs go active+clean and every object reads
/// back (teeth: before the beacons reported the PGs each OSD's store holds, the children
/// were `active+undersized+degraded` here, I/O on them hanging). The parents, one of two
/// voters up, are `undersized+degraded+peered` (no Raft majority: no I/O either).
#[test]
fn children_not_split_yet_are_creating() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn()
        .allow("no beacon within grace: marking osd down")
        .allow("openraft::")
        .allow("raft group did not shut down cleanly");
    let dir = TestDir::create();
    let tmp = dir.path();
    let mut c = start(tmp, 2, 2, 4);
    wait_clean(&c, 4, 2, Duration::from_secs(60));
    let objects: Vec<(String, Vec<u8>)> =
        (0..16).map(|i| (format!("o{i}"), pattern(100 + i * 997, i as u64 + 3))).collect();
    for (name, data) in &objects {
        put(&c, tmp, name, data);
    }
    c.osds[1].take().unwrap().kill();
    c.wait(Duration::from_secs(60), "osd.1 marked down", |c| {
        let s = c.ceph(&["-s"]).out();
        s.contains(": 1 up").then_some(()).ok_or(s)
    });
    let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", "8"]).ok("pool set pg_num");
    assert_eq!(set.stderr.trim(), "set pool 1 pg_num to 8");
    let children_creating = |c: &Cluster| {
        let pgs = c.pgs();
        let ok = pgs.len() == 8
            && pgs.iter().all(|p| {
                let seed = u32::from_str_radix(p.pgid.split_once('.').unwrap().1, 16).unwrap();
                (seed >= 4) == (p.state == "creating")
            });
        ok.then_some(()).ok_or_else(|| format!("{pgs:?}"))
    };
    c.wait(Duration::from_secs(30), "the children creating", children_creating);
    std::thread::sleep(Duration::from_secs(3));
    c.wait(Duration::from_millis(1), "the children still creating", children_creating);
    let stat = c.ceph(&["pg", "stat"]).ok("pg stat").out();
    // The parents have one of their two voters up: no Raft majority, no I/O.
    assert!(stat.starts_with("8 pgs: 4 creating, 4 undersized+degraded+peered;"), "{stat}");
    let dump = c.ceph(&["pg", "dump", "pgs_brief"]).ok("pg dump").out();
    assert_eq!(dump.matches("creating").count(), 4, "{dump}");
    let status = c.ceph(&["-s"]).ok("status").out();
    assert!(status.contains("4 creating"), "{status}");
    c.osds[1] = Some(spawn_osd(&tmp.join("c"), 1));
    wait_clean(&c, 8, 2, Duration::from_secs(120));
    for (name, data) in &objects {
        assert!(get(&c, tmp, name, None) == *data, "{name} differs after the split");
    }
    c.shutdown();
}
