//! Rebalancing through the tools, on a separate `quarry mon` and `quarry osd` processes on
//! loopback: a pool's size raised with data in it (every PG reaches its new voters, then the
//! OSD that held the only copy is SIGKILLed and every byte reads back), an OSD marked out
//! while a writer runs (its PGs move, then it is stopped for good: every acknowledged write
//! reads back, health is OK), an OSD down past `mon_osd_down_out_interval` (marked out by
//! the monitor, its PGs re-replicated), and `osd pool set size` refused as Ceph refuses it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{get, put, Cluster, PgRow, Spec, TestDir};
use common::workload::*;
use common::*;

/// The cluster of these tests: `osds` OSDs, pool `rbd` of `size` replicas and 8 PGs,
/// `extra` appended to ceph.conf.
fn start(tmp: &Path, osds: u32, size: u32, extra: &str) -> Cluster {
    Cluster::start(tmp, Spec { osds, size, pg_num: 8, extra })
}

/// Waits until every PG is `active+clean` with `voters` OSDs acting, none of them in
/// `without`.
fn wait_clean(c: &Cluster, voters: usize, without: &[u64], limit: Duration) {
    c.wait(limit, "every pg active+clean on its new voters", |c| {
        let pgs = c.pgs();
        let ok = pgs.iter().all(|p| {
            p.state == "active+clean"
                && p.acting.len() == voters
                && !p.acting.iter().any(|o| without.contains(o))
        });
        ok.then_some(()).ok_or_else(|| format!("{pgs:?}"))
    });
}

/// Goal (issue 13, rebalancing): `osd pool set rbd size 3` on a 3-OSD cluster whose pool had
/// one replica per PG moves every PG to three voters (learners caught up by snapshot and
/// log, then promoted); the OSD that held the only copy of its PGs is then SIGKILLed, and
/// every object (sizes from 0 to 4 MiB, omap, xattrs, a pool snapshot's version) reads back
/// byte-identical from the others, and writes work.
#[test]
fn size_one_to_three_then_the_original_osd_dies() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn()
        .allow("no beacon within grace: marking osd down osd=0")
        .allow("openraft::")
        .allow("raft group did not shut down cleanly");
    let tmp = TestDir::create();
    let mut c = start(tmp.path(), 3, 1, "");
    let sizes = [0usize, 1, 4097, 65536, 1 << 20, 4 << 20];
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        for copy in 0..4 {
            let name = format!("obj-{len}-{copy}");
            let data = pattern(len, (i * 10 + copy) as u64 + 1);
            put(&c, tmp.path(), &name, &data);
            objects.push((name, data));
        }
    }
    for i in 0..8 {
        let name = format!("meta-{i}");
        c.rados(&["-p", "rbd", "setomapval", &name, "k1", &format!("v{i}")]).ok("setomapval");
        c.rados(&["-p", "rbd", "setxattr", &name, "user.a", &format!("x{i}")]).ok("setxattr");
    }
    // A pool snapshot of one version, then a new version.
    c.rados(&["-p", "rbd", "mksnap", "before"]).ok("mksnap");
    let old = objects[8].1.clone();
    let new = pattern(old.len(), 999);
    put(&c, tmp.path(), &objects[8].0, &new);
    objects[8].1 = new;
    assert!(c
        .pgs()
        .iter()
        .all(|PgRow { state, acting, .. }| state == "active+clean" && acting.len() == 1));

    let set = c.ceph(&["osd", "pool", "set", "rbd", "size", "3"]).ok("pool set size");
    assert_eq!(set.stderr.trim(), "set pool 1 size to 3");
    let get_size = c.ceph(&["osd", "pool", "get", "rbd", "size"]).ok("pool get").out();
    assert_eq!(get_size.trim(), "size: 3");
    let started = Instant::now();
    wait_clean(&c, 3, &[], Duration::from_secs(120));
    eprintln!("8 pgs (~22 MiB) moved from 1 to 3 replicas in {:?}", started.elapsed());
    let status = c.ceph(&["-s"]).ok("status").out();
    assert!(status.contains("8 active+clean"), "{status}");

    // The OSD that held the only copy of its PGs (and led them) dies without warning.
    c.osds[0].take().unwrap().kill();
    c.wait(Duration::from_secs(60), "osd.0 down and its pgs served by others", |c| {
        let pgs = c.pgs();
        let served = pgs.iter().all(|PgRow { state, acting, .. }| {
            acting.first() != Some(&0) && state.starts_with("active")
        });
        served.then_some(()).ok_or_else(|| format!("{pgs:?}"))
    });
    for (name, data) in &objects {
        assert!(get(&c, tmp.path(), name, None) == *data, "{name} differs after osd.0 died");
    }
    for i in 0..8 {
        let name = format!("meta-{i}");
        let omap = c.rados(&["-p", "rbd", "listomapvals", &name]).ok("listomapvals").out();
        assert!(omap.contains("k1") && omap.contains(&format!("v{i}")), "{name}: {omap}");
        let x = c.rados(&["-p", "rbd", "getxattr", &name, "user.a"]).ok("getxattr").out();
        assert_eq!(x.trim(), format!("x{i}"));
    }
    let snap_file = tmp.path().join("at-snap");
    c.rados(&["-p", "rbd", "-s", "before", "get", &objects[8].0, snap_file.to_str().unwrap()])
        .ok("get at snapshot");
    assert!(std::fs::read(&snap_file).unwrap() == old, "the snapshot's version differs");
    put(&c, tmp.path(), "after-the-death", b"still writable");
    assert_eq!(get(&c, tmp.path(), "after-the-death", None), b"still writable");
    c.shutdown();
}

/// Goal: on 4 OSDs with a size-3 pool, `ceph osd out` of one OSD while a writer runs moves
/// its PGs to the other three (the writer keeps being acknowledged); once moved, the OSD is
/// stopped for good: every acknowledged write reads back and health returns to HEALTH_OK.
#[test]
fn osd_out_moves_its_pgs_while_a_writer_runs() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn()
        .allow("no beacon within grace: marking osd down osd=3")
        .allow("openraft::")
        .allow("raft group did not shut down cleanly");
    let tmp = TestDir::create();
    let c = start(tmp.path(), 4, 3, "");
    wait_clean(&c, 3, &[], Duration::from_secs(30));
    let held = c.pgs().iter().filter(|PgRow { acting, .. }| acting.contains(&3)).count();
    assert!(held > 0, "osd.3 holds no pg");

    let writer = Writer::start(&c, tmp.path());
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let out = c.ceph(&["osd", "out", "3"]).ok("osd out");
    assert_eq!(out.stderr.trim(), "marked out osd.3.");
    let moving = c.pgs();
    assert!(
        moving.iter().any(|PgRow { state, .. }| state.contains("remapped")),
        "no pg remapped after osd out: {moving:?}"
    );
    wait_clean(&c, 3, &[3], Duration::from_secs(120));
    eprintln!("osd.3 out: its {held} pgs moved in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    let acked = writer.stop();
    let mut c = c;
    c.osds[3].take().unwrap().kill();
    for (name, data) in &acked {
        assert!(get(&c, tmp.path(), name, None) == *data, "acknowledged {name} differs");
    }
    c.wait(Duration::from_secs(30), "HEALTH_OK", |c| {
        let h = c.ceph(&["health"]).out();
        h.starts_with("HEALTH_OK").then_some(()).ok_or(h)
    });
    c.shutdown();
}

/// Goal: an OSD down longer than `mon_osd_down_out_interval` (3 s here) is marked out by the
/// monitor (its log says so, `ceph -s` counts it out) and its PGs are re-replicated on the
/// others; the data reads back. Size 3 on 4 OSDs: a PG changes its voters only with a
/// majority of them up (Raft), so a size-2 PG that lost one replica cannot be moved.
#[test]
fn an_osd_down_past_the_interval_is_marked_out_and_its_pgs_re_replicated() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn()
        .allow("no beacon within grace: marking osd down osd=2")
        .expect("Marking osd.2 out (has been down for ")
        .allow("openraft::")
        .allow("raft group did not shut down cleanly");
    let tmp = TestDir::create();
    let mut c = start(tmp.path(), 4, 3, "\n[mon]\nmon_osd_down_out_interval = 3\n");
    wait_clean(&c, 3, &[], Duration::from_secs(30));
    let objects: Vec<(String, Vec<u8>)> =
        (0..24).map(|i| (format!("o{i}"), pattern(1000 + i * 3000, i as u64 + 3))).collect();
    for (name, data) in &objects {
        put(&c, tmp.path(), name, data);
    }
    let held = c.pgs().iter().filter(|PgRow { acting, .. }| acting.contains(&2)).count();
    assert!(held > 0, "osd.2 holds no pg");
    c.osds[2].take().unwrap().kill();
    let started = Instant::now();
    wait_clean(&c, 3, &[2], Duration::from_secs(120));
    eprintln!("osd.2 killed: its pgs re-replicated after {:?}", started.elapsed());
    let status = c.ceph(&["-s"]).ok("status").out();
    assert!(status.contains("4 osds: 3 up") && status.contains("3 in"), "{status}");
    for (name, data) in &objects {
        assert!(get(&c, tmp.path(), name, None) == *data, "{name} differs");
    }

    // osd.2 comes back (still out): it never learned that its PGs' voters changed without
    // it, so each copy it finds on disk is a voter of the newest configuration it knows. It
    // asks a member, learns that the committed configuration leaves it out, and deletes the
    // copy; none is kept as a stale, idle group.
    let dir = c.conf.parent().unwrap().to_path_buf();
    let log2 = dir.join("osd.2/log/quarry-osd.2.log");
    let since = std::fs::metadata(&log2).map(|m| m.len() as usize).unwrap_or(0);
    let logs_since = || {
        let text = std::fs::read_to_string(&log2).unwrap_or_default();
        text.get(since..).unwrap_or_default().to_string()
    };
    let osd2 = spawn_osd_logging(&dir, 2, Some("warn,quarry_cli=info,quarry_osd::router=info"));
    let removed = || logs_since().matches("pg no longer hosted here: removing its copy").count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while removed() < held && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs2 = logs_since();
    assert_eq!(removed(), held, "osd.2 did not remove each of its {held} stale copies:\n{logs2}");
    assert!(logs2.contains("asked a member whether this OSD is still a voter"), "{logs2}");
    c.osds[2] = Some(osd2);
    for (name, data) in &objects {
        assert!(get(&c, tmp.path(), name, None) == *data, "{name} differs after osd.2 came back");
    }
    c.shutdown();
}

/// Goal: `osd pool set POOL size N` refuses what Ceph refuses, with Ceph's messages and exit
/// codes, and changes nothing: size 0 and 11, an unknown pool, a pool with `nosizechange`;
/// `pg_num` changes stay refused with the reason.
#[test]
fn bad_size_changes_are_refused_and_change_nothing() {
    let _logs = quarry_testkit::log_guard();
    let tmp = TestDir::create();
    let c = start(tmp.path(), 1, 1, "");
    let before = c.ceph(&["osd", "pool", "get", "rbd", "all"]).ok("get all").out();
    let refused = |args: &[&str], code: i32, message: &str| {
        let mut all = vec!["osd", "pool", "set"];
        all.extend_from_slice(args);
        let r = c.ceph(&all);
        assert_eq!(r.code(), code, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim(), message, "{args:?}");
    };
    refused(&["rbd", "size", "0"], 22, "Error EINVAL: pool size must be between 1 and 10");
    refused(&["rbd", "size", "11"], 22, "Error EINVAL: pool size must be between 1 and 10");
    refused(&["nosuch", "size", "2"], 2, "Error ENOENT: unrecognized pool 'nosuch'");
    c.ceph(&["osd", "pool", "set", "rbd", "nosizechange", "true"]).ok("nosizechange");
    refused(
        &["rbd", "size", "2"],
        1,
        "Error EPERM: pool size change is disabled; you must unset nosizechange flag for the pool first",
    );
    c.ceph(&["osd", "pool", "set", "rbd", "nosizechange", "false"]).ok("nosizechange off");
    let after = c.ceph(&["osd", "pool", "get", "rbd", "all"]).ok("get all").out();
    assert_eq!(after, before, "a refused change changed the pool");
    c.shutdown();
}
