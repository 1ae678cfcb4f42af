//! `ceph tell osd.N dump_ops_in_flight` and `dump_historic_ops` (issue 13): the ops an OSD
//! is handling, in Ceph's JSON shape, with their age. A separate `quarry mon` and two
//! `quarry osd` processes, a pool of two replicas; osd.1 is frozen (SIGSTOP), so a write
//! whose primary is osd.0 waits inside osd.0 for its replica.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn ceph(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("ceph", Some(conf), args), None, COMMAND_TIMEOUT)
}

fn dump(conf: &Path, what: &str) -> serde_json::Value {
    let r = ceph(conf, &["tell", "osd.0", what]).ok(what);
    serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {}", r.out()))
}

/// Goal: a write held inside the OSD (its replica does not answer) shows up in
/// `dump_ops_in_flight` with Ceph's fields, its description naming the object and the op,
/// and an age that grows; once the replica answers it completes, leaves the list and is in
/// `dump_historic_ops`.
#[test]
fn a_held_write_shows_in_dump_ops_in_flight_with_its_age() {
    let logs = quarry_testkit::log_guard();
    // osd.0's PG groups find osd.1 frozen: their votes and appends to it time out.
    logs.allow_raft_churn().allow("openraft::core::raft_core: timeout error=timeout after");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    cluster_init(&dir, 2);
    let conf = dir.join("ceph.conf");
    let _mon = spawn_mon(
        &dir,
        // A long grace: the frozen OSD must not be marked down while the test looks.
        &["--osd-grace", "120", "--osds", "0,1", "--pool", "rbd", "--size", "2"],
    );
    let _osd0 = spawn_osd(&dir, 0);
    let osd1 = spawn_osd(&dir, 1);
    wait_osds_up(&conf, 2);
    let empty = dump(&conf, "dump_ops_in_flight");
    assert_eq!(empty["num_ops"], 0, "{empty}");
    assert_eq!(empty["ops"].as_array().map(Vec::len), Some(0), "{empty}");

    // Objects whose primary is osd.0 (its first PGs' writes wait for osd.1).
    let f = tmp.path().join("obj");
    std::fs::write(&f, b"held").unwrap();
    osd1.signal(quarry_testkit::process::Signal::STOP);
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let mut cmd = tool_cmd("rados", Some(&conf), &["-p", "rbd", "put", &format!("o{i}")]);
            cmd.arg(&f).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
            cmd.spawn().unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let v = dump(&conf, "dump_ops_in_flight");
        if v["num_ops"].as_u64().unwrap_or(0) > 0 {
            break v;
        }
        assert!(Instant::now() < deadline, "no op in flight on osd.0: {v}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let op = &first["ops"][0];
    let description = op["description"].as_str().unwrap();
    assert!(description.starts_with("osd_op(client.admin.0:"), "{op}");
    assert!(description.contains("[writefull 0~4]"), "{op}");
    assert!(op["initiated_at"].as_str().unwrap().ends_with("+0000"), "{op}");
    assert_eq!(op["type_data"]["flag_point"], "started", "{op}");
    assert_eq!(op["type_data"]["client_info"]["client"], "client.admin", "{op}");
    assert_eq!(op["type_data"]["events"][0]["event"], "initiated", "{op}");
    let age0 = op["age"].as_f64().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let later = dump(&conf, "dump_ops_in_flight");
    let same = later["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["description"] == op["description"])
        .unwrap_or_else(|| panic!("the held op left: {later}"));
    assert!(same["age"].as_f64().unwrap() >= age0 + 1.0, "{op} then {same}");

    // The replica answers: every write completes, nothing is left in flight.
    osd1.signal(quarry_testkit::process::Signal::CONT);
    for mut w in writers {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = w.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "a write never completed");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "{status:?}");
    }
    let done = dump(&conf, "dump_ops_in_flight");
    assert_eq!(done["num_ops"], 0, "{done}");
    let historic = dump(&conf, "dump_historic_ops");
    assert_eq!(historic["size"], 20, "{historic}");
    let held = historic["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["description"] == op["description"])
        .unwrap_or_else(|| panic!("the held op is not in the history: {historic}"));
    assert!(held["duration"].as_f64().unwrap() >= 1.5, "{held}");
    assert_eq!(held["type_data"]["flag_point"], "done", "{held}");
}
