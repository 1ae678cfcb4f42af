//! PG merge and OSD crashes at its steps, on separate `quarry mon` and `quarry osd`
//! processes on loopback: the source's primary aborting right after its PG applied the seal,
//! and the target's primary aborting right after its PG applied the merge but before the
//! monitor counted it (`QUARRY_TEST_MERGE_CRASH`, test-only: an abort, like SIGKILL). Started
//! again, the OSDs finish the merges: the pool reaches its target, every PG active+clean,
//! every object reads back and is listed once, and no store keeps a merged PG.
//!
//! A test binary of its own: the crash switch is the OSDs' environment, inherited from this
//! process.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{get, put, Cluster, Spec, TestDir};
use common::workload::{assert_no_pg_at_or_above, wait_clean};
use common::*;

/// Arms the crash at `step`, sets pg_num to `pg_num`, waits for an OSD to abort, checks
/// that `pg ls` shows the merging pair `(source, target)` `premerge` and no other PG so,
/// starts the OSD again and waits until the pool is clean at `pg_num`.
fn shrink_through_a_crash(
    c: &mut Cluster,
    tmp: &Path,
    crash: &Path,
    (step, pg_num): (&str, u32),
    (source, target): (u32, u32),
) {
    std::fs::write(crash.join(step), b"").unwrap();
    let set = c.ceph(&["osd", "pool", "set", "rbd", "pg_num", &pg_num.to_string()]);
    assert_eq!(set.ok("pool set").stderr.trim(), format!("set pool 1 pg_num to {pg_num}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let crashed = loop {
        let exited = c.osds.iter_mut().position(|d| {
            d.as_mut().is_some_and(|d| d.wait_exit(Duration::from_millis(100)).is_some())
        });
        if let Some(i) = exited {
            break i;
        }
        if std::time::Instant::now() > deadline {
            let detail = c.ceph(&["osd", "pool", "ls", "detail"]).out();
            panic!("no OSD aborted at the {step} step: {:?}\n{detail}\n{}", c.pgs(), c.tails());
        }
    };
    let logs = c.osds[crashed].take().unwrap().logs();
    assert!(logs.contains(&format!("aborting after the {step} step")), "{logs}");
    assert!(!crash.join(step).exists());
    // The pair waits (sealed, or merged and not counted): `premerge`, not `active+clean` nor
    // `creating`, the others not; `ls detail` shows the merge pending.
    let pgs = c.pgs();
    for p in &pgs {
        let seed = u32::from_str_radix(p.pgid.split_once('.').unwrap().1, 16).unwrap();
        let pair = seed == source || seed == target;
        assert_eq!(pair, p.state.ends_with("+premerge"), "after the {step} step: {pgs:?}");
    }
    let detail = c.ceph(&["osd", "pool", "ls", "detail"]).ok("ls detail").out();
    assert!(detail.contains(&format!("pg_num_pending {source}")), "{detail}");
    eprintln!("osd.{crashed} aborted after the {step} step ({pgs:?}); starting it again");
    c.osds[crashed] = Some(spawn_osd(&tmp.join("c"), crashed as u32));
    wait_clean(c, pg_num as usize, 2, Duration::from_secs(240));
}

/// Goal (issue 13, merge restart safety): on 2 OSDs, a size-2 pool of 8 PGs with 40
/// objects shrinks to 6 while the source's primary aborts after applying the seal, then to
/// 4 while the target's primary aborts after applying the merge and before reporting it.
/// While the OSD is down the pair shows `premerge` and `ls detail` the pending merge.
/// Both times the restarted OSD and its peer finish: pg_num reaches the target (the merge
/// reported once the OSD is back is counted once: not 5 or 3), every PG active+clean,
/// every object reads back and is listed once, and no store holds a PG at or past pg_num.
#[test]
fn merges_finish_after_crashes_at_the_seal_and_the_merge() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn()
        .allow("no beacon within grace: marking osd down")
        .allow("no monitor session; retrying")
        .allow("openraft::")
        .allow("raft group did not shut down cleanly")
        .allow("QUARRY_TEST_MERGE_CRASH");
    let dir = TestDir::create();
    let tmp = dir.path();
    let crash = tmp.join("crash");
    std::fs::create_dir_all(&crash).unwrap();
    // Inherited by every OSD started here; nothing aborts until a step's file exists.
    std::env::set_var("QUARRY_TEST_MERGE_CRASH", &crash);
    let mut c = Cluster::start(tmp, Spec { osds: 2, size: 2, pg_num: 8, extra: "" });
    wait_clean(&c, 8, 2, Duration::from_secs(90));
    let objects: Vec<(String, Vec<u8>)> =
        (0..40).map(|i| (format!("o{i}"), pattern(100 + i * 1999, i as u64 + 5))).collect();
    for (name, data) in &objects {
        put(&c, tmp, name, data);
    }
    let mut names: Vec<String> = objects.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let check = |c: &Cluster, when: &str| {
        for (name, data) in &objects {
            assert!(get(c, tmp, name, None) == *data, "{name} differs {when}");
        }
        let out = c.rados(&["-p", "rbd", "ls"]).ok("ls").out();
        let mut listed: Vec<String> = out.lines().map(str::to_string).collect();
        listed.sort();
        assert_eq!(listed, names, "rados ls {when}");
    };
    // 8 -> 6: 7 merges into 3 (the crash), then 6 into 2.
    shrink_through_a_crash(&mut c, tmp, &crash, ("seal", 6), (7, 3));
    check(&c, "after the crash at the seal");
    // 6 -> 4: 5 merges into 1 (the crash), then 4 into 0.
    shrink_through_a_crash(&mut c, tmp, &crash, ("merge", 4), (5, 1));
    check(&c, "after the crash at the merge");
    c.shutdown();
    assert_no_pg_at_or_above(&tmp.join("c"), 2, 4);
}
