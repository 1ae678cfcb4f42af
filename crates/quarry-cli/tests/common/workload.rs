//! The workload of the tests that move data between PGs (split, merge, rebalance): objects
//! of every size with omap, xattrs and a pool snapshot written before, checked after; a
//! writer and a lister running meanwhile; a watcher on one object; an RBD image with a
//! snapshot in a second pool.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cluster::{get, put, Cluster};
use super::{pattern, quarry, run_bounded, tool_cmd, Daemon, COMMAND_TIMEOUT};

/// Object names with their contents.
pub type Objects = Vec<(String, Vec<u8>)>;

/// Waits until pool `rbd` (pool 1) has `count` PGs, its pg_num says so, and every PG is
/// `active+clean` with `voters` OSDs.
pub fn wait_clean(c: &Cluster, count: usize, voters: usize, limit: Duration) {
    c.wait(limit, "every pg active+clean", |c| {
        let pgs = c.pgs();
        let ok = pgs.iter().filter(|p| p.pgid.starts_with("1.")).count() == count
            && c.pool_get("pg_num") == format!("pg_num: {count}")
            && pgs.iter().all(|p| p.state == "active+clean" && p.acting.len() == voters);
        ok.then_some(()).ok_or_else(|| format!("{pgs:?}"))
    });
}

/// `rados -p rbd ls`: every name, sorted; fails if a name is listed twice.
pub fn listed(c: &Cluster) -> Vec<String> {
    let out = c.rados(&["-p", "rbd", "ls"]).ok("ls").out();
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "an object listed twice");
    names
}

/// `rados -p rbd watch OBJ` with stdin held open by the caller's fifo (a fifo the test keeps
/// open: `rados watch` exits at EOF, as Ceph's does), named `name`, waiting until it watches.
pub fn spawn_watcher(conf: &Path, fifo: &Path, obj: &str, name: &str) -> Daemon {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("exec \"$0\" rados -p rbd watch \"$1\" < \"$2\"")
        .arg(quarry())
        .arg(obj)
        .arg(fifo)
        .env("CEPH_CONF", conf);
    let d = Daemon::spawn(name, cmd);
    wait_lines(&d, "press enter to exit...", 1);
    d
}

/// Waits until `d` printed `count` lines starting with `prefix`.
pub fn wait_lines(d: &Daemon, prefix: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.stdout.lock().unwrap().iter().filter(|l| l.starts_with(prefix)).count() < count {
        assert!(Instant::now() < deadline, "no '{prefix}' from {}\n{}", d.name, d.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Data written before the PGs change: objects of 0 B to 4 MiB, objects with omap and
/// xattrs, a pool snapshot `before` and a newer version of one object.
pub struct Written {
    pub objects: Objects,
    pub meta: Vec<String>,
    pub snapped: (String, Vec<u8>),
}

impl Written {
    /// Every name written (objects and the ones with omap and xattrs).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.objects.iter().map(|(n, _)| n.clone()).collect();
        names.extend(self.meta.iter().cloned());
        names
    }

    /// Every name there should be, sorted: these, `acked` and `extra`.
    pub fn all_names(&self, acked: &[(String, Vec<u8>)], extra: &[&str]) -> Vec<String> {
        let mut names = self.names();
        names.extend(acked.iter().map(|(n, _)| n.clone()));
        names.extend(extra.iter().map(|n| n.to_string()));
        names.sort();
        names
    }
}

/// Writes [`Written`]'s data into pool `rbd` (files in `tmp`).
pub fn write_data(c: &Cluster, tmp: &Path) -> Written {
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

/// Everything written reads back: objects (and `acked`), the snapshot's version, omap and
/// xattrs.
pub fn check_data(c: &Cluster, tmp: &Path, w: &Written, acked: &[(String, Vec<u8>)]) {
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

/// [`check_data`], with the cluster's state (`Cluster::dump`) printed if it fails.
pub fn check_data_or_dump(c: &Cluster, tmp: &Path, w: &Written, acked: &[(String, Vec<u8>)]) {
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_data(c, tmp, w, acked);
    }));
    if let Err(panic) = checked {
        c.dump();
        std::panic::resume_unwind(panic);
    }
}

/// A notify on `watched` reaches its one watcher (`watcher`, its `nth` notify), `when`.
pub fn notify_reaches(c: &Cluster, watcher: &Daemon, watched: &str, nth: usize, when: &str) {
    let run = c.rados(&["-p", "rbd", "notify", watched, when]).ok(&format!("notify {when}"));
    assert_eq!(run.out().lines().filter(|l| l.starts_with("reply client.")).count(), 1);
    wait_lines(watcher, "NOTIFY cookie ", nth);
}

/// How long a writer's or lister's command may run before the cluster's state is printed
/// (it is killed, failing the test, at `COMMAND_TIMEOUT`).
const SLOW_COMMAND: Duration = Duration::from_secs(30);

/// Runs `cmd` bounded; if it is still running after [`SLOW_COMMAND`], prints what every OSD
/// is handling (`ceph tell osd.* dump_ops_in_flight`) and the PGs (`ceph pg dump`) while it
/// hangs, so a failure says where the op waited.
fn run_watched(cmd: Command, conf: &Path, what: &str) -> quarry_testkit::process::Run {
    // Dropping `done` (the command ended) wakes the watchdog at once.
    let (done, ended) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let (conf, what) = (conf.to_owned(), what.to_owned());
        std::thread::spawn(move || {
            // Anything but a timeout: the command ended (its end dropped the sender).
            if ended.recv_timeout(SLOW_COMMAND) != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            eprintln!("{what} still running after {SLOW_COMMAND:?}; the cluster meanwhile:");
            for args in [&["tell", "osd.*", "dump_ops_in_flight"][..], &["pg", "dump"]] {
                let run = run_bounded(tool_cmd("ceph", Some(&conf), args), None, COMMAND_TIMEOUT);
                eprintln!("ceph {}:\n{}{}", args.join(" "), run.out(), run.stderr);
            }
        })
    };
    let run = run_bounded(cmd, None, COMMAND_TIMEOUT);
    drop(done);
    let _ = watchdog.join();
    run
}

/// A writer: `rados put` of `w0`, `w1`, ... (4 KiB to 64 KiB, files in a directory) into
/// pool `rbd`, one after the other until stopped, keeping the acknowledged ones.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Objects>>,
    thread: JoinHandle<()>,
}

impl Writer {
    pub fn start(c: &Cluster, dir: &Path) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Objects>> = Arc::default();
        let (flag, done, conf, dir) = (stop.clone(), acked.clone(), c.conf.clone(), dir.to_owned());
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let name = format!("w{i}");
                let data = pattern(4096 + (i as usize % 7) * 10_000, i + 7);
                let file = dir.join(format!("w-{i}"));
                std::fs::write(&file, &data).unwrap();
                let args = ["-p", "rbd", "put", &name, file.to_str().unwrap()];
                let r = run_watched(tool_cmd("rados", Some(&conf), &args), &conf, &name);
                if r.status.success() {
                    done.lock().unwrap().push((name, data));
                }
                i += 1;
            }
        });
        Writer { stop, acked, thread }
    }

    /// Stops it; the acknowledged writes (at least 5, or the test fails).
    pub fn stop(self) -> Objects {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        assert!(acked.len() >= 5, "only {} writes acknowledged", acked.len());
        acked
    }
}

/// A lister: `rados -p rbd ls` over and over until stopped; every listing must give each
/// of `base` and no name twice (`during` names the phase in the failure).
pub struct Lister {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<usize>,
}

impl Lister {
    pub fn start(c: &Cluster, base: Vec<String>, during: &'static str) -> Lister {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, conf) = (stop.clone(), c.conf.clone());
        let thread = std::thread::spawn(move || {
            let mut listings = 0;
            while !flag.load(Ordering::Relaxed) {
                let args = ["-p", "rbd", "ls"];
                let r = run_watched(tool_cmd("rados", Some(&conf), &args), &conf, "ls");
                let out = r.ok(&format!("ls during {during}")).out();
                let names: Vec<&str> = out.lines().collect();
                let unique: BTreeSet<&str> = names.iter().copied().collect();
                assert_eq!(unique.len(), names.len(), "an object listed twice during {during}");
                let missing: Vec<&String> =
                    base.iter().filter(|n| !unique.contains(n.as_str())).collect();
                assert!(missing.is_empty(), "listing {listings} missed {missing:?}");
                listings += 1;
            }
            listings
        });
        Lister { stop, thread }
    }

    /// Stops it; how many listings ran (each complete).
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Fails if the store of any of OSDs `0..osds` under `dir` (`DIR/osd.N/store.redb`, the
/// cluster stopped) still holds a PG of pool 1 with a seed at or above `pg_num`.
pub fn assert_no_pg_at_or_above(dir: &Path, osds: u32, pg_num: u32) {
    for osd in 0..osds {
        let path = dir.join(format!("osd.{osd}/store.redb"));
        let store = quarry_store::Store::open(&path).unwrap();
        let stale: Vec<_> = store
            .pgs()
            .unwrap()
            .into_iter()
            .filter(|pg| pg.pool == 1 && pg.seed >= pg_num)
            .collect();
        assert!(stale.is_empty(), "osd.{osd} still holds {stale:?}");
    }
}

/// Pool `vm` (`pg_num` PGs) with an RBD image `vm/img`: 2 MiB imported (`image`), its
/// self-managed snapshot `s1`, then 256 KiB of 4 KiB writes (`rbd bench`; `head` is the image
/// after them), so the snapshot's clones move with their objects when the pool's PGs change.
pub struct VmImage<'a> {
    c: &'a Cluster,
    tmp: &'a Path,
    pub image: Vec<u8>,
    pub head: Vec<u8>,
}

impl<'a> VmImage<'a> {
    pub fn create(c: &'a Cluster, tmp: &'a Path, pg_num: u32) -> VmImage<'a> {
        c.ceph(&["osd", "pool", "create", "vm", &pg_num.to_string()]).ok("pool create vm");
        let mut img = VmImage { c, tmp, image: pattern(2 << 20, 77), head: Vec::new() };
        img.rbd(&["pool", "init", "vm"], None);
        img.rbd(&["import", "-", "vm/img"], Some(&img.image));
        img.rbd(&["snap", "create", "vm/img@s1"], None);
        let bench = ["bench", "--io-type", "write", "--io-size", "4K", "--io-total", "256K"];
        img.rbd(&[&bench[..], &["vm/img"]].concat(), None);
        img.head = img.export("vm/img");
        assert!(img.head != img.image, "rbd bench changed the image");
        img
    }

    fn rbd(&self, args: &[&str], input: Option<&[u8]>) {
        let run = run_bounded(tool_cmd("rbd", Some(&self.c.conf), args), input, COMMAND_TIMEOUT);
        run.ok(&format!("rbd {args:?}"));
    }

    /// `rbd export SPEC` (the image or `IMAGE@SNAP`), read back.
    pub fn export(&self, spec: &str) -> Vec<u8> {
        let file = self.tmp.join(format!("export-{}", spec.replace(['/', '@'], "-")));
        let _ = std::fs::remove_file(&file);
        self.rbd(&["export", spec, file.to_str().unwrap()], None);
        std::fs::read(&file).unwrap()
    }
}
