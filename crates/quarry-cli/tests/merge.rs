//! PG merge through the tools, on separate `quarry mon` and `quarry osd` processes on
//! loopback: `ceph osd pool set POOL pg_num N` below the current value shrinks a pool with
//! data in it while a writer runs and a watcher watches an object that moves (every
//! acknowledged write, the pool snapshot, omap and xattrs read back; `rados ls` lists each
//! object once; the remaining PGs go active+clean; the watcher gets a notify after the
//! merges; then an OSD is SIGKILLed and everything still reads back), a shrink to a
//! non-power-of-two count (16 -> 6), and the refusals with Ceph's messages.
//!
//! The `Cluster` helper here is a trimmed version of tests/split.rs's, until the shared one
//! lands in tests/common (the lead is moving it there): replace it then.

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
    fn start(tmp: &Path, osds: u32, size: u32, pg_num: u32) -> Cluster {
        let dir = tmp.join("c");
        cluster_init(&dir, osds);
        let conf = dir.join("ceph.conf");
        let ids: Vec<String> = (0..osds).map(|i| i.to_string()).collect();
        let (ids, size, pg_num) = (ids.join(","), size.to_string(), pg_num.to_string());
        let args = ["-c", conf.to_str().unwrap(), "--osds", &ids, "--pool", "rbd"];
        let mut args: Vec<&str> = args.to_vec();
        args.extend(["--size", &size, "--pg-num", &pg_num, "--osd-grace", "5"]);
        let mon = spawn_mon(&dir, &args);
        // QUARRY_TEST_OSD_LOG=FILTER: the OSDs' RUST_LOG (their log files show the merge steps).
        let filter = std::env::var("QUARRY_TEST_OSD_LOG").ok();
        let osds =
            (0..osds).map(|id| Some(spawn_osd_logging(&dir, id, filter.as_deref()))).collect();
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
                    let all: Vec<String> =
                        self.osds.iter().flatten().chain([&self.mon]).map(tail).collect();
                    panic!("{what}: not within {limit:?}:\n{why}\n{}", all.join("\n"))
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

    /// Waits until pool `rbd` has `count` PGs, its pg_num says so, and every PG is
    /// `active+clean` with `voters` OSDs.
    fn wait_clean(&self, count: usize, voters: usize, limit: Duration) {
        self.wait(limit, "every pg active+clean", |c| {
            let pgs = c.pgs();
            let ok = pgs.iter().filter(|(id, _, _)| id.starts_with("1.")).count() == count
                && c.pool_get("pg_num") == format!("pg_num: {count}")
                && pgs.iter().all(|(_, s, acting)| s == "active+clean" && acting.len() == voters);
            ok.then_some(()).ok_or_else(|| format!("{pgs:?}"))
        });
    }

    fn pool_get(&self, var: &str) -> String {
        self.ceph(&["osd", "pool", "get", "rbd", var]).ok("pool get").out().trim().to_string()
    }

    fn shutdown(mut self) {
        for osd in self.osds.iter_mut().flatten() {
            osd.terminate();
        }
        self.mon.terminate();
    }
}

/// The test's directory: kept with `QUARRY_KEEP_TEST_DIR=1`.
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

fn put(c: &Cluster, tmp: &Path, name: &str, data: &[u8]) {
    let file = tmp.join(format!("in-{name}"));
    std::fs::write(&file, data).unwrap();
    c.rados(&["-p", "rbd", "put", name, file.to_str().unwrap()]).ok(&format!("put {name}"));
}

fn get(c: &Cluster, tmp: &Path, name: &str, snap: Option<&str>) -> Vec<u8> {
    let file = tmp.join(format!("out-{name}"));
    let mut args = vec!["-p", "rbd"];
    if let Some(snap) = snap {
        args.extend(["-s", snap]);
    }
    args.extend(["get", name, file.to_str().unwrap()]);
    c.rados(&args).ok(&format!("get {name}"));
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

/// Goal (issue 13, PG merge): on 4 OSDs, a size-3 pool of 16 PGs holding objects of 0 B to
/// 4 MiB, omap, xattrs and a pool snapshot shrinks to 4 PGs while a writer runs and a
/// watcher watches an object of a merged PG. `osd pool ls detail` shows Ceph's
/// `pg_num_target` meanwhile; every acknowledged write, the snapshot's version, omap and
/// xattrs read back; `rados ls` lists every object once; the 4 PGs go active+clean; a
/// notify after the merges reaches the watcher; no OSD keeps a group of a merged PG. Then
/// osd.0 is SIGKILLed and everything still reads back.
#[test]
fn shrink_16_to_4_under_a_writer_then_an_osd_dies() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn()
        .allow("no beacon within grace: marking osd down")
        .allow("no monitor session; retrying")
        .allow("openraft::")
        .allow("raft group did not shut down cleanly");
    let (_guard, tmp) = test_dir();
    let tmp = tmp.as_path();
    let mut c = Cluster::start(tmp, 4, 3, 16);
    c.wait_clean(16, 3, Duration::from_secs(90));
    let w = write_data(&c, tmp);
    let watched = (0..)
        .map(|i| format!("hdr-{i}"))
        .find(|n| quarry_placement::pg_of(n, 16) >= 4)
        .unwrap();
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
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", "4"]).ok("pool set pg_num");
    assert_eq!(set.stderr.trim(), "set pool 1 pg_num to 4");
    let detail = c.ceph(&["osd", "pool", "ls", "detail"]).ok("ls detail").out();
    assert!(detail.contains("pg_num_target 4 pgp_num_target 4"), "{detail}");
    c.wait_clean(4, 3, Duration::from_secs(300));
    eprintln!("16 pgs merged into 4 (active+clean) in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 5, "only {} writes acknowledged", acked.len());

    let run = c.rados(&["-p", "rbd", "notify", &watched, "after"]).ok("notify after the merges");
    assert_eq!(run.out().lines().filter(|l| l.starts_with("reply client.")).count(), 1);
    wait_lines(&watcher, "NOTIFY cookie ", 2);

    check_data(&c, tmp, &w, &acked);
    let mut want: Vec<String> = w.objects.iter().chain(&acked).map(|(n, _)| n.clone()).collect();
    want.extend(w.meta.iter().cloned());
    want.push(watched.clone());
    want.sort();
    assert_eq!(listed(&c), want, "rados ls after the merges");
    let detail = c.ceph(&["osd", "pool", "ls", "detail"]).ok("ls detail").out();
    assert!(detail.contains("pg_num 4 pgp_num 4 autoscale_mode"), "{detail}");
    let status = c.ceph(&["-s"]).ok("status").out();
    assert!(status.contains("4 active+clean"), "{status}");
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
    // No stale copy of a merged PG is left in a store (osd.0 was killed: its last
    // checkpoint may predate a removal, which its next start finishes).
    for osd in 1..4 {
        let path = tmp.join(format!("c/osd.{osd}/store.redb"));
        let store = quarry_store::Store::open(&path).unwrap();
        let stale: Vec<_> =
            store.pgs().unwrap().into_iter().filter(|pg| pg.pool == 1 && pg.seed >= 4).collect();
        assert!(stale.is_empty(), "osd.{osd} still holds {stale:?}");
    }
}

/// Goal: a shrink to a non-power-of-two count (16 -> 6) keeps every object readable and
/// listed once; the refusals answer as Ceph does and change nothing (nopgchange EPERM, 0
/// ERANGE); a later growth splits again.
#[test]
fn shrink_to_6_and_refusals() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn().allow("openraft::").allow("raft group did not shut down cleanly");
    let (_guard, tmp) = test_dir();
    let tmp = tmp.as_path();
    let c = Cluster::start(tmp, 2, 1, 16);
    c.wait_clean(16, 1, Duration::from_secs(60));
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
    c.wait_clean(6, 1, Duration::from_secs(180));
    for (name, data) in &objects {
        assert!(get(&c, tmp, name, None) == *data, "{name} differs at pg_num 6");
    }
    assert_eq!(listed(&c), names, "rados ls at pg_num 6");
    let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", "8"]).ok("grow again");
    assert_eq!(set.stderr.trim(), "set pool 1 pg_num to 8");
    c.wait_clean(8, 1, Duration::from_secs(90));
    for (name, data) in &objects {
        assert!(get(&c, tmp, name, None) == *data, "{name} differs at pg_num 8");
    }
    assert_eq!(listed(&c), names, "rados ls at pg_num 8");
    c.shutdown();
}
