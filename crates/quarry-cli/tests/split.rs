//! PG split through the tools, on separate `quarry mon` and `quarry osd` processes on
//! loopback: `ceph osd pool set POOL pg_num N` grows a pool with data in it while a writer
//! runs and a watcher watches an object that moves (every acknowledged write, snapshot,
//! omap and xattr reads back; `rados ls` lists each object once; the 16 PGs go active+clean;
//! the watcher gets a notify after the split; then an OSD is SIGKILLed and everything still
//! reads back), growth in non-power-of-two steps (4 -> 6 -> 16), and the refusals (a
//! decrease, pgp_num, nopgchange, Ceph's range and mon_max_pg_per_osd checks) with Ceph's
//! messages, changing nothing.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A cluster of one monitor and `osds` OSDs as separate processes.
struct Cluster {
    conf: PathBuf,
    mon: Daemon,
    osds: Vec<Option<Daemon>>,
}

impl Cluster {
    /// `cluster-init`, the monitor (pool `rbd` of `size` and `pg_num` PGs, OSDs marked down
    /// 5 s after their last beacon) and every OSD.
    fn start(tmp: &Path, osds: u32, size: u32, pg_num: u32) -> Cluster {
        let dir = tmp.join("c");
        cluster_init(&dir, osds);
        let conf = dir.join("ceph.conf");
        let ids: Vec<String> = (0..osds).map(|i| i.to_string()).collect();
        let (ids, size, pg_num) = (ids.join(","), size.to_string(), pg_num.to_string());
        let mon = spawn_mon(
            &dir,
            &[
                "-c",
                conf.to_str().unwrap(),
                "--osds",
                &ids,
                "--pool",
                "rbd",
                "--size",
                &size,
                "--pg-num",
                &pg_num,
                "--osd-grace",
                "5",
            ],
        );
        let osds = (0..osds).map(|id| Some(spawn_osd(&dir, id))).collect();
        let cluster = Cluster { conf, mon, osds };
        cluster.wait(Duration::from_secs(60), "every osd up", |c| {
            let s = c.ceph(&["-s"]).out();
            s.contains(&format!(": {} up", c.osds.len())).then_some(()).ok_or(s)
        });
        cluster
    }

    fn ceph(&self, args: &[&str]) -> Run {
        run_bounded(tool_cmd("ceph", Some(&self.conf), args), None, COMMAND_TIMEOUT)
    }

    fn rados(&self, args: &[&str]) -> Run {
        run_bounded(tool_cmd("rados", Some(&self.conf), args), None, COMMAND_TIMEOUT)
    }

    fn wait<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Cluster) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            match check(self) {
                Ok(v) => return v,
                Err(why) if Instant::now() >= deadline => {
                    let tail = |d: &Daemon| {
                        let logs = d.logs();
                        let from = logs.len().saturating_sub(3000);
                        let from = (from..logs.len()).find(|&i| logs.is_char_boundary(i));
                        logs[from.unwrap_or(0)..].to_string()
                    };
                    let osds: Vec<String> = self.osds.iter().flatten().map(tail).collect();
                    panic!("{what}: not within {limit:?}:\n{why}\n{}", osds.join("\n"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// `ceph pg ls -f json`: (pgid, state, acting) per PG.
    fn pgs(&self) -> Vec<(String, String, Vec<u64>)> {
        let out = self.ceph(&["pg", "ls", "-f", "json"]).ok("pg ls").out();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let ids = |x: &serde_json::Value| -> Vec<u64> {
            x.as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect()
        };
        v["pg_stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let pgid = p["pgid"].as_str().unwrap().to_string();
                let state = p["state"].as_str().unwrap().to_string();
                (pgid, state, ids(&p["acting"]))
            })
            .collect()
    }

    /// Waits until `ceph pg ls` shows `count` PGs of pool 1 (`rbd`) and every PG
    /// `active+clean` with `voters` OSDs.
    fn wait_clean(&self, count: usize, voters: usize, limit: Duration) {
        self.wait(limit, "every pg active+clean", |c| {
            let pgs = c.pgs();
            let ok = pgs.iter().filter(|(id, _, _)| id.starts_with("1.")).count() == count
                && pgs.iter().all(|(_, s, acting)| s == "active+clean" && acting.len() == voters);
            ok.then_some(()).ok_or_else(|| format!("{pgs:?}"))
        });
    }

    fn pool_get(&self, var: &str) -> String {
        self.ceph(&["osd", "pool", "get", "rbd", var]).ok("pool get").out().trim().to_string()
    }

    /// Every daemon's output (printed when a check fails, with `QUARRY_KEEP_TEST_DIR`).
    fn dump(&self) {
        if std::env::var_os("QUARRY_KEEP_TEST_DIR").is_some() {
            for d in self.osds.iter().flatten().chain([&self.mon]) {
                let logs = d.logs();
                let tail: Vec<&str> = logs.lines().rev().take(60).collect();
                eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
        }
    }

    fn shutdown(mut self) {
        for osd in self.osds.iter_mut().flatten() {
            osd.terminate();
        }
        self.mon.terminate();
    }
}

/// The test's directory: kept with `QUARRY_KEEP_TEST_DIR=1` (the daemons' logs are under
/// `c/*/log`).
fn test_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("QUARRY_KEEP_TEST_DIR").is_some() {
        let path = dir.keep();
        eprintln!("test directory kept: {}", path.display());
        return (None, path);
    }
    let path = dir.path().to_path_buf();
    (Some(dir), path)
}

/// Writes `name` with `data` through `rados put`.
fn put(c: &Cluster, tmp: &Path, name: &str, data: &[u8]) {
    let file = tmp.join(format!("in-{name}"));
    std::fs::write(&file, data).unwrap();
    c.rados(&["-p", "rbd", "put", name, file.to_str().unwrap()]).ok(&format!("put {name}"));
}

/// Reads `name` back through `rados get` (at pool snapshot `snap` if given).
fn get(c: &Cluster, tmp: &Path, name: &str, snap: Option<&str>) -> Vec<u8> {
    let file = tmp.join(format!("out-{name}"));
    let mut args = vec!["-p", "rbd"];
    if let Some(snap) = snap {
        args.extend(["-s", snap]);
    }
    args.extend(["get", name, file.to_str().unwrap()]);
    let run = c.rados(&args);
    if !run.status.success() {
        c.dump();
    }
    run.ok(&format!("get {name}"));
    std::fs::read(&file).unwrap()
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

/// `rados -p rbd watch OBJ` with stdin held open by the caller's fifo, waiting until it
/// watches.
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

/// Waits until `d` printed `count` lines starting with `prefix`.
fn wait_lines(d: &Daemon, prefix: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.stdout.lock().unwrap().iter().filter(|l| l.starts_with(prefix)).count() < count {
        assert!(Instant::now() < deadline, "no '{prefix}' from {}\n{}", d.name, d.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Object names with their contents.
type Objects = Vec<(String, Vec<u8>)>;

/// Data written before the split: objects of 0 B to 4 MiB, objects with omap and xattrs, a
/// pool snapshot `before` and a newer version of one object.
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

/// Everything written reads back: objects, the snapshot's version, omap and xattrs.
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
    let (_guard, tmp) = test_dir();
    let tmp = tmp.as_path();
    let mut c = Cluster::start(tmp, 4, 3, 4);
    c.wait_clean(4, 3, Duration::from_secs(60));
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
    let watcher = spawn_watcher(&c.conf, &fifo, &watched);
    c.rados(&["-p", "rbd", "notify", &watched, "before"]).ok("notify before the split");
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
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", "16"]).ok("pool set pg_num");
    assert_eq!(set.stderr.trim(), "set pool 1 pg_num to 16");
    assert_eq!(c.pool_get("pg_num"), "pg_num: 16");
    assert_eq!(c.pool_get("pgp_num"), "pgp_num: 16");
    c.wait_clean(16, 3, Duration::from_secs(120));
    eprintln!("4 pgs split into 16 (active+clean) in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 5, "only {} writes acknowledged", acked.len());

    // The watch followed its object to the child PG.
    let run = c.rados(&["-p", "rbd", "notify", &watched, "after"]).ok("notify after the split");
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
            pgs.iter().all(|(_, s, acting)| acting.first() != Some(&0) && s.starts_with("active"));
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
/// nothing: a decrease (Quarry does not merge PGs), pgp_num above pg_num (EINVAL) or below
/// it (EOPNOTSUPP: it follows pg_num), above 65536 (ERANGE), past mon_max_pg_per_osd
/// (ERANGE, Ceph's "would mean" message), with nopgchange set (EPERM).
#[test]
fn non_power_of_two_steps_and_refusals() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn().allow("openraft::");
    let (_guard, tmp) = test_dir();
    let tmp = tmp.as_path();
    let c = Cluster::start(tmp, 2, 1, 4);
    c.wait_clean(4, 1, Duration::from_secs(60));
    let objects: Vec<(String, Vec<u8>)> =
        (0..48).map(|i| (format!("o{i}"), pattern(100 + i * 997, i as u64 + 3))).collect();
    for (name, data) in &objects {
        put(&c, tmp, name, data);
    }
    // A second pool with an RBD image and a self-managed snapshot (rbd snap), then new data
    // in the image: the snapshot's clones split with their objects.
    c.ceph(&["osd", "pool", "create", "vm", "4"]).ok("pool create vm");
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
        c.wait_clean(step as usize, 1, Duration::from_secs(90));
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
    assert!(export("vm/img@s1") == image, "the snapshot's data differs after the split");
    assert!(export("vm/img") == head, "the image differs after the split");

    let refused = |args: &[&str], code: i32, message: &str| {
        let mut all = vec!["osd", "pool", "set", "rbd"];
        all.extend(args);
        let run = c.ceph(&all);
        assert_eq!(run.code(), code, "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.trim(), message, "{args:?}");
        assert_eq!(c.pool_get("pg_num"), "pg_num: 16", "{args:?} changed pg_num");
    };
    refused(
        &["pg_num", "8"],
        95,
        "Error EOPNOTSUPP: decreasing pg_num is not supported: Quarry splits PGs but does not merge them yet; pool 'rbd' keeps pg_num 16",
    );
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
