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

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{get, put, Cluster, Spec, TestDir};
use common::*;

/// The cluster of these tests: `osds` OSDs, pool `rbd` of `size` replicas and `pg_num` PGs.
fn start(tmp: &Path, osds: u32, size: u32, pg_num: u32) -> Cluster {
    Cluster::start(tmp, Spec { osds, size, pg_num, extra: "" })
}

/// Waits until pool `rbd` has `count` PGs, its pg_num says so, and every PG is
/// `active+clean` with `voters` OSDs.
fn wait_clean(c: &Cluster, count: usize, voters: usize, limit: Duration) {
    c.wait(limit, "every pg active+clean", |c| {
        let pgs = c.pgs();
        let ok = pgs.iter().filter(|p| p.pgid.starts_with("1.")).count() == count
            && c.pool_get("pg_num") == format!("pg_num: {count}")
            && pgs.iter().all(|p| p.state == "active+clean" && p.acting.len() == voters);
        ok.then_some(()).ok_or_else(|| format!("{pgs:?}"))
    });
}

/// `rados ls`: every name, sorted; fails if a name is listed twice.
fn listed(c: &Cluster) -> Vec<String> {
    let out = c.rados(&["-p", "rbd", "ls"]).ok("ls").out();
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "an object listed twice");
    names
}

fn spawn_watcher(conf: &Path, fifo: &Path, obj: &str) -> Daemon {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("exec \"$0\" rados -p rbd watch \"$1\" < \"$2\"")
        .arg(quarry())
        .arg(obj)
        .arg(fifo)
        .env("CEPH_CONF", conf);
    let d = Daemon::spawn("watcher", cmd);
    wait_lines(&d, "press enter to exit...", 1);
    d
}

fn wait_lines(d: &Daemon, prefix: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.stdout.lock().unwrap().iter().filter(|l| l.starts_with(prefix)).count() < count {
        assert!(Instant::now() < deadline, "no '{prefix}' from {}\n{}", d.name, d.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

type Objects = Vec<(String, Vec<u8>)>;

/// Objects of 0 B to 4 MiB, objects with omap and xattrs, a pool snapshot `before` and a
/// newer version of one object.
struct Written {
    objects: Objects,
    meta: Vec<String>,
    snapped: (String, Vec<u8>),
}

fn write_data(c: &Cluster, tmp: &Path) -> Written {
    let sizes = [0usize, 1, 4097, 65536, 1 << 20, 4 << 20];
    let mut objects = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        for copy in 0..3 {
            let name = format!("obj-{len}-{copy}");
            let data = pattern(len, (i * 10 + copy) as u64 + 1);
            put(c, tmp, &name, &data);
            objects.push((name, data));
        }
    }
    let mut meta = Vec::new();
    for i in 0..12 {
        let name = format!("meta-{i}");
        c.rados(&["-p", "rbd", "setomapval", &name, "k1", &format!("v{i}")]).ok("setomapval");
        c.rados(&["-p", "rbd", "setxattr", &name, "user.a", &format!("x{i}")]).ok("setxattr");
        meta.push(name);
    }
    c.rados(&["-p", "rbd", "mksnap", "before"]).ok("mksnap");
    let old = objects[7].1.clone();
    let new = pattern(old.len(), 999);
    put(c, tmp, &objects[7].0, &new);
    let snapped = (objects[7].0.clone(), old);
    objects[7].1 = new;
    Written { objects, meta, snapped }
}

fn check_data(c: &Cluster, tmp: &Path, w: &Written, acked: &[(String, Vec<u8>)]) {
    for (name, data) in w.objects.iter().chain(acked) {
        assert!(get(c, tmp, name, None) == *data, "{name} differs");
    }
    assert!(get(c, tmp, &w.snapped.0, Some("before")) == w.snapped.1, "snapshot differs");
    for (i, name) in w.meta.iter().enumerate() {
        let omap = c.rados(&["-p", "rbd", "listomapvals", name]).ok("listomapvals").out();
        assert!(omap.contains("k1") && omap.contains(&format!("v{i}")), "{name}: {omap}");
        let x = c.rados(&["-p", "rbd", "getxattr", name, "user.a"]).ok("getxattr").out();
        assert_eq!(x.trim(), format!("x{i}"));
    }
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
    let watcher = spawn_watcher(&c.conf, &fifo, &watched);
    c.rados(&["-p", "rbd", "notify", &watched, "before"]).ok("notify before the merges");
    wait_lines(&watcher, "NOTIFY cookie ", 1);

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Objects>> = Arc::default();
    let writer = {
        let (stop, acked, conf) = (stop.clone(), acked.clone(), c.conf.clone());
        let dir = tmp.to_path_buf();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{i}");
                let data = pattern(4096 + (i as usize % 7) * 10_000, i + 7);
                let file = dir.join(format!("w-{i}"));
                std::fs::write(&file, &data).unwrap();
                let args = ["-p", "rbd", "put", &name, file.to_str().unwrap()];
                let r = run_bounded(tool_cmd("rados", Some(&conf), &args), None, COMMAND_TIMEOUT);
                if r.status.success() {
                    acked.lock().unwrap().push((name, data));
                }
                i += 1;
            }
        })
    };
    // A lister: every listing while the PGs merge gives each object written before once.
    let mut base: Vec<String> = w.objects.iter().map(|(n, _)| n.clone()).collect();
    base.extend(w.meta.iter().cloned());
    base.push(watched.clone());
    let lister = {
        let (stop, conf, base) = (stop.clone(), c.conf.clone(), base.clone());
        std::thread::spawn(move || {
            let mut listings = 0;
            while !stop.load(Ordering::Relaxed) {
                let args = ["-p", "rbd", "ls"];
                let r = run_bounded(tool_cmd("rados", Some(&conf), &args), None, COMMAND_TIMEOUT);
                let out = r.ok("ls during the merges").out();
                let names: Vec<&str> = out.lines().collect();
                let unique: BTreeSet<&str> = names.iter().copied().collect();
                assert_eq!(unique.len(), names.len(), "an object listed twice during the merges");
                let missing: Vec<&String> =
                    base.iter().filter(|n| !unique.contains(n.as_str())).collect();
                assert!(missing.is_empty(), "listing {listings} missed {missing:?}");
                listings += 1;
            }
            listings
        })
    };
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
    writer.join().unwrap();
    let listings = lister.join().unwrap();
    let states = states.join().unwrap();
    eprintln!(
        "{listings} listings ran during the merges, each complete; pg states seen: {states:?}"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 5, "only {} writes acknowledged", acked.len());
    assert!(states.keys().any(|s| s.ends_with("+premerge")), "no premerge seen: {states:?}");

    // The watch followed its object to the target PG.
    let run = c.rados(&["-p", "rbd", "notify", &watched, "after"]).ok("notify after the merges");
    assert_eq!(run.out().lines().filter(|l| l.starts_with("reply client.")).count(), 1);
    wait_lines(&watcher, "NOTIFY cookie ", 2);

    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_data(&c, tmp, &w, &acked);
    }));
    if let Err(panic) = checked {
        c.dump();
        std::panic::resume_unwind(panic);
    }
    let mut want: Vec<String> = w.objects.iter().chain(&acked).map(|(n, _)| n.clone()).collect();
    want.extend(w.meta.iter().cloned());
    want.push(watched.clone());
    want.sort();
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
    for osd in 0..3 {
        let path = tmp.join(format!("c/osd.{osd}/store.redb"));
        let store = quarry_store::Store::open(&path).unwrap();
        let stale: Vec<_> =
            store.pgs().unwrap().into_iter().filter(|pg| pg.pool == 1 && pg.seed >= 4).collect();
        assert!(stale.is_empty(), "osd.{osd} still holds {stale:?}");
    }
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
    c.ceph(&["osd", "pool", "create", "vm", "8"]).ok("pool create vm");
    let rbd = |args: &[&str], input: Option<&[u8]>| {
        let run = run_bounded(tool_cmd("rbd", Some(&c.conf), args), input, COMMAND_TIMEOUT);
        run.ok(&format!("rbd {args:?}"))
    };
    rbd(&["pool", "init", "vm"], None);
    let image = pattern(2 << 20, 77);
    rbd(&["import", "-", "vm/img"], Some(&image));
    rbd(&["snap", "create", "vm/img@s1"], None);
    rbd(&["bench", "--io-type", "write", "--io-size", "4K", "--io-total", "256K", "vm/img"], None);
    let export = |spec: &str| {
        let file = tmp.join(format!("export-{}", spec.replace(['/', '@'], "-")));
        let _ = std::fs::remove_file(&file);
        rbd(&["export", spec, file.to_str().unwrap()], None);
        std::fs::read(&file).unwrap()
    };
    let head = export("vm/img");
    assert!(head != image, "rbd bench changed the image");

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
    assert!(export("vm/img@s1") == image, "the snapshot's data differs after the merges");
    assert!(export("vm/img") == head, "the image differs after the merges");
    let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", "8"]).ok("grow again");
    assert_eq!(set.stderr.trim(), "set pool 1 pg_num to 8");
    wait_clean(&c, 8, 1, Duration::from_secs(90));
    for (name, data) in &objects {
        assert!(get(&c, tmp, name, None) == *data, "{name} differs at pg_num 8");
    }
    assert_eq!(listed(&c), names, "rados ls at pg_num 8");
    c.shutdown();
}
