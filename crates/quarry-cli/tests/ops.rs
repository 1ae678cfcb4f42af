//! The operators' commands that change how pools and OSDs run (issue 13), through the real
//! `ceph`/`rados` tools against `quarry up`: `osd pool set|get all|rename|stats`, `osd pool
//! set-quota|get-quota`, a `nodelete` pool's removal refused, `osd blocklist` in Ceph's
//! address forms and `clear`, `osd out|in|down|reweight`. Outputs, messages and exit codes are
//! Ceph 16's (recorded against a real Ceph 16.2 cluster; the lines are in the tests).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use quarry_client::{BlockingRados, ClientConfig};
use quarry_conf::CommonArgs;

fn ceph(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("ceph", Some(conf), args), None, COMMAND_TIMEOUT)
}

fn rados(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("rados", Some(conf), args), None, COMMAND_TIMEOUT)
}

fn connect(conf: &Path) -> BlockingRados {
    let args = CommonArgs { conf: Some(conf.to_path_buf()), ..Default::default() };
    let (parsed, _) = args.load_conf().unwrap();
    let cfg = ClientConfig::from_conf(&parsed, &args).unwrap();
    BlockingRados::connect(cfg, 1).unwrap()
}

/// Asserts a failed command's exit code and its `Error NAME: message` line.
fn fails(r: Run, code: i32, line: &str) {
    assert_eq!(r.code(), code, "stdout: {}\nstderr: {}", r.out(), r.stderr);
    assert!(r.stderr.contains(line), "wanted {line:?} in: {}", r.stderr);
}

/// Goal: `osd pool set` stores `min_size` and the flags with Ceph's lines and checks, `pool get
/// all` shows them (plain and JSON), a `nodelete` pool cannot be removed (EPERM, as Ceph),
/// `size` changes (data moves), a smaller `pg_num` is refused with a clear reason (no merge),
/// and `rename` keeps data and open clients working (pools are addressed by id); `stats`
/// has Ceph's shape. Every refusal changes nothing.
#[test]
fn pool_settings_rename_and_stats() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    ceph(&conf, &["osd", "pool", "create", "p1", "8"]).ok("create");
    let all = ceph(&conf, &["osd", "pool", "get", "p1", "all"]).ok("get all").out();
    assert_eq!(
        all,
        "size: 1\nmin_size: 1\npg_num: 8\npgp_num: 8\ncrush_rule: replicated_rule\n\
         hashpspool: true\nnodelete: false\nnopgchange: false\nnosizechange: false\n\
         write_fadvise_dontneed: false\nnoscrub: false\nnodeep-scrub: false\n"
    );
    let set = |var: &str, val: &str| ceph(&conf, &["osd", "pool", "set", "p1", var, val]);
    let r = set("min_size", "1").ok("min_size");
    assert_eq!(r.stderr.trim_end(), "set pool 2 min_size to 1");
    fails(
        set("min_size", "5"),
        22,
        "Error EINVAL: pool min_size must be between 1 and size, which is set to 1",
    );
    let r = set("nodelete", "true").ok("nodelete");
    assert_eq!(r.stderr.trim_end(), "set pool 2 nodelete to true");
    set("noscrub", "1").ok("noscrub");
    fails(
        set("nodeep-scrub", "yes"),
        22,
        "Error EINVAL: expecting value 'true', 'false', '0', or '1'",
    );
    let r = ceph(&conf, &["osd", "pool", "get", "p1", "nodelete"]).ok("get nodelete");
    assert_eq!(r.out(), "nodelete: true\n");
    let json = ceph(&conf, &["osd", "pool", "get", "p1", "all", "--format=json"]).ok("json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!((v["nodelete"].as_bool(), v["noscrub"].as_bool()), (Some(true), Some(true)));
    assert_eq!(v["nodeep-scrub"].as_bool(), Some(false));

    // A nodelete pool stays.
    let rm = ceph(&conf, &["osd", "pool", "rm", "p1", "p1", "--yes-i-really-really-mean-it"]);
    fails(
        rm,
        1,
        "Error EPERM: pool deletion is disabled; you must unset nodelete flag for the pool first",
    );
    assert!(ceph(&conf, &["osd", "pool", "ls"]).ok("ls").out().contains("p1\n"));

    // size: another value moves the data (one OSD here: the PGs stay undersized); pg_num:
    // the same value is accepted (growth splits PGs: tests/split.rs; a decrease merges them:
    // tests/merge.rs).
    set("size", "1").ok("same size");
    assert_eq!(set("size", "2").ok("size 2").stderr.trim_end(), "set pool 2 size to 2");
    set("size", "1").ok("size 1 again");
    fails(set("size", "11"), 22, "Error EINVAL: pool size must be between 1 and 10");
    let r = set("pg_num", "8").ok("same pg_num");
    assert!(r.stderr.trim().is_empty(), "{}", r.stderr);
    fails(
        set("pg_num", "0"),
        34,
        "Error ERANGE: 'pg_num' must be greater than 0 and less than or equal to 65536",
    );
    set("nosizechange", "true").ok("nosizechange");
    fails(
        set("size", "1"),
        1,
        "Error EPERM: pool size change is disabled; you must unset nosizechange flag for the pool first",
    );
    fails(set("crush_rule", "x"), 22, "Error EINVAL: pool setting 'crush_rule' is not supported");
    fails(
        ceph(&conf, &["osd", "pool", "set", "nopool", "min_size", "1"]),
        2,
        "Error ENOENT: unrecognized pool 'nopool'",
    );
    let detail = ceph(&conf, &["osd", "pool", "ls", "detail"]).ok("ls detail").out();
    assert!(
        detail.contains("flags hashpspool,nodelete,nosizechange,noscrub stripe_width 0"),
        "{detail}"
    );
    assert_eq!(ceph(&conf, &["osd", "pool", "get", "p1", "size"]).ok("size").out(), "size: 1\n");

    // Rename: the data and a client that opened the pool before keep working.
    let f = tmp.path().join("obj");
    std::fs::write(&f, b"before the rename").unwrap();
    rados(&conf, &["-p", "p1", "put", "a", f.to_str().unwrap()]).ok("put");
    let client = connect(&conf);
    let io = client.block_on(client.rados().ioctx("p1")).unwrap();
    let r = ceph(&conf, &["osd", "pool", "rename", "p1", "p2"]).ok("rename");
    assert_eq!(r.stderr.trim_end(), "pool 'p1' renamed to 'p2'");
    let r = ceph(&conf, &["osd", "pool", "rename", "p1", "p2"]).ok("rename again");
    assert_eq!(
        r.stderr.trim_end(),
        "pool 'p1' does not exist; pool 'p2' does -- assuming successful rename"
    );
    fails(
        ceph(&conf, &["osd", "pool", "rename", "p2", "rbd"]),
        17,
        "Error EEXIST: pool 'rbd' already exists",
    );
    client.block_on(io.write_full("b", b"written through the old handle".to_vec().into())).unwrap();
    assert_eq!(
        rados(&conf, &["-p", "p2", "get", "a", "-"]).ok("get a").stdout,
        b"before the rename"
    );
    assert_eq!(
        rados(&conf, &["-p", "p2", "get", "b", "-"]).ok("get b").stdout,
        b"written through the old handle"
    );
    let gone = rados(&conf, &["-p", "p1", "ls"]);
    assert_ne!(gone.code(), 0, "the old name is gone");
    let back = client.block_on(io.read("a", 0, 100)).unwrap();
    assert_eq!(&back[..], b"before the rename");

    // stats: Ceph's shape; Quarry measures no rates, so every pool is idle.
    let stats = ceph(&conf, &["osd", "pool", "stats", "p2"]).ok("stats").out();
    assert_eq!(stats, "pool p2 id 2\n  nothing is going on\n\n");
    let json = ceph(&conf, &["osd", "pool", "stats", "--format=json"]).ok("stats json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert_eq!(v[1]["pool_name"], "p2");
    assert!(v[1]["client_io_rate"].as_object().is_some_and(|o| o.is_empty()));
    fails(
        ceph(&conf, &["osd", "pool", "stats", "nopool"]),
        2,
        "Error ENOENT: unrecognized pool 'nopool'",
    );

    // Once nodelete is unset the pool goes.
    ceph(&conf, &["osd", "pool", "set", "p2", "nodelete", "false"]).ok("unset");
    ceph(&conf, &["osd", "pool", "rm", "p2", "p2", "--yes-i-really-really-mean-it"]).ok("rm");
}

/// Goal: `osd out|in|down|reweight` answer as Ceph, `osd tree` shows the REWEIGHT, health
/// says that an out OSD's PGs did not move (Quarry does not rebalance) while I/O goes on, a
/// marked-down OSD comes back up by itself; `osd blocklist` takes Ceph's address forms
/// (`IP`, `IP/NONCE`, `IP:PORT/NONCE`) and `clear` empties it.
#[test]
fn osd_marks_and_blocklist_forms() {
    let logs = quarry_testkit::log_guard();
    // `osd down`: the OSD's next beacon is refused and it boots again.
    logs.expect("is not up in epoch");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let osd = |args: &[&str]| {
        let mut all = vec!["osd"];
        all.extend_from_slice(args);
        ceph(&conf, &all)
    };
    let r = osd(&["out", "0", "9"]).ok("out");
    assert_eq!(r.stderr.trim_end(), "marked out osd.0. osd.9 does not exist.");
    assert_eq!(osd(&["out", "osd.0"]).ok("out again").stderr.trim_end(), "osd.0 is already out.");
    let tree = osd(&["tree"]).ok("tree").out();
    assert!(
        tree.lines().any(|l| l.contains("osd.0") && l.contains(" up ") && l.contains("  0  ")),
        "{tree}"
    );
    let status = ceph(&conf, &["-s"]).ok("status").out();
    assert!(status.contains("osd: 1 osds: 1 up, 0 in"), "{status}");
    let health = ceph(&conf, &["health", "detail"]).ok("health").out();
    assert!(health.contains("[WRN] OSD_OUT_HOLDS_PGS: 32 pgs stay on out osds"), "{health}");
    assert!(health.contains("osd.0 is out and still holds 32 pgs"), "{health}");
    // The data did not move and is still served.
    let f = tmp.path().join("obj");
    std::fs::write(&f, b"still served").unwrap();
    rados(&conf, &["-p", "rbd", "put", "a", f.to_str().unwrap()]).ok("put while out");
    assert_eq!(rados(&conf, &["-p", "rbd", "get", "a", "-"]).ok("get").stdout, b"still served");
    assert_eq!(osd(&["in", "0"]).ok("in").stderr.trim_end(), "marked in osd.0.");
    assert!(!ceph(&conf, &["health", "detail"]).ok("health").out().contains("OSD_OUT_HOLDS_PGS"));

    let r = osd(&["reweight", "0", "0.5"]).ok("reweight");
    assert_eq!(r.stderr.trim_end(), "reweighted osd.0 to 0.5 (8000)");
    let tree = osd(&["tree"]).ok("tree").out();
    assert!(tree.lines().any(|l| l.contains("osd.0") && l.contains("0.50000")), "{tree}");
    fails(osd(&["reweight", "0", "1.5"]), 22, "1.5 not in range [0.0, 1.0]");
    fails(osd(&["reweight", "9", "0.5"]), 2, "Error ENOENT: osd.9 does not exist");
    osd(&["reweight", "0", "1"]).ok("reweight 1");

    // down: the OSD re-asserts itself at its next beacon.
    assert_eq!(osd(&["down", "0"]).ok("down").stderr.trim_end(), "marked down osd.0.");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stat = osd(&["stat"]).ok("stat").out();
        if stat.contains("1 up") {
            break;
        }
        assert!(Instant::now() < deadline, "osd.0 never came back up: {stat}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // Blocklist: Ceph's address forms and lines.
    let r = osd(&["blocklist", "add", "10.0.0.1/77", "60"]).ok("add IP/NONCE");
    assert!(r.stderr.starts_with("blocklisting 10.0.0.1:0/77 until 20"), "{}", r.stderr);
    assert!(r.stderr.trim_end().ends_with("+0000 (60 sec)"), "{}", r.stderr);
    let r = osd(&["blocklist", "add", "10.0.0.2"]).ok("add IP");
    assert!(
        r.stderr.contains("blocklisting 10.0.0.2:0/0 until") && r.stderr.contains("(3600 sec)")
    );
    osd(&["blocklist", "add", "10.0.0.3:6800"]).ok("add IP:PORT");
    let ls = osd(&["blocklist", "ls"]).ok("ls");
    assert!(ls.stderr.contains("listed 3 entries"), "{}", ls.stderr);
    let lines: Vec<String> = ls.out().lines().map(String::from).collect();
    assert!(lines.iter().any(|l| l.starts_with("10.0.0.3:6800/0 20")), "{lines:?}");
    let json = osd(&["blocklist", "ls", "--format=json"]).ok("ls json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|e| e["addr"] == "10.0.0.1:0/77"
        && e["until"].as_str().is_some_and(|u| u.ends_with("+0000"))));
    assert_eq!(
        osd(&["blocklist", "rm", "10.0.0.2"]).ok("rm").stderr.trim_end(),
        "un-blocklisting 10.0.0.2:0/0"
    );
    fails(osd(&["blocklist", "add", "garbage"]), 22, "Error EINVAL");
    let r = osd(&["blocklist", "clear"]).ok("clear");
    assert_eq!(r.stderr.trim_end(), " removed all blocklist entries");
    assert!(osd(&["blocklist", "ls"]).ok("ls").stderr.contains("listed 0 entries"));

    // `ceph report`: Ceph's top-level sections that Quarry fills, `report CRC` on stderr.
    let r = ceph(&conf, &["report"]).ok("report");
    let crc = r.stderr.trim_end().strip_prefix("report ").unwrap_or_default();
    assert!(crc.parse::<u32>().is_ok(), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    for key in ["cluster_fingerprint", "version", "timestamp", "health", "monmap", "osdmap"] {
        assert!(v.get(key).is_some(), "report lacks {key}: {v}");
    }
    // (HEALTH_WARN on a nearly full test disk: OSD_NEARFULL.)
    assert!(v["health"]["status"].as_str().is_some_and(|s| s.starts_with("HEALTH_")), "{v}");
    assert_eq!(v["monmap"]["mons"][0]["name"], "a");
    assert_eq!(v["osdmap"]["osds"][0]["osd"], 0);
    assert_eq!((v["num_pg"].as_u64(), v["num_pg_active"].as_u64()), (Some(32), Some(32)));
    assert_eq!(v["pool_stats"][0]["poolid"], 1);
    assert_eq!(v["num_pg_by_state"][0]["state"], "active+clean");
    assert!(v["version"].as_str().is_some_and(|s| s.starts_with("16.2.")), "{v}");
}

/// Waits up to 20 s for `ceph health detail` to contain (or, `present: false`, to lose)
/// `text`.
fn wait_health(conf: &Path, text: &str, present: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = ceph(conf, &["health", "detail"]).ok("health").out();
        if health.contains(text) == present {
            return health;
        }
        assert!(Instant::now() < deadline, "health never {present} for {text:?}: {health}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Goal (issue 13): real pool quotas on two OSDs. When the OSDs' reported usage reaches
/// `max_objects` or `max_bytes`, the monitor marks the pool full (`POOL_FULL` with Ceph's
/// text, `full_quota` in the pool's flags, the quota in `df detail`); a write then waits, as
/// Ceph's clients do (its op timeout ends it with ETIMEDOUT), while reads and removals go on;
/// raising the quota, or removing data, lets the waiting write finish.
#[test]
fn pool_quotas_block_writes_until_raised() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn();
    logs.expect("pool is full: it reached its quota");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _cluster = up(&dir, 2);
    let conf = dir.join("ceph.conf");
    let f = tmp.path().join("obj");
    std::fs::write(&f, b"hello quota").unwrap();
    let f = f.to_str().unwrap();
    ceph(&conf, &["osd", "pool", "create", "q", "8", "--size", "2"]).ok("create");
    let r = ceph(&conf, &["osd", "pool", "set-quota", "q", "max_objects", "2"]).ok("quota");
    assert_eq!(r.stderr.trim_end(), "set-quota max_objects = 2 for pool q");
    rados(&conf, &["-p", "q", "put", "o1", f]).ok("put o1");
    rados(&conf, &["-p", "q", "put", "o2", f]).ok("put o2");
    let health = wait_health(&conf, "POOL_FULL", true);
    assert!(health.contains("[WRN] POOL_FULL: 1 pool(s) full\n"), "{health}");
    assert!(health.contains("    pool 'q' is full (reached quota's max_objects: 2)"), "{health}");
    let detail = ceph(&conf, &["osd", "pool", "ls", "detail"]).ok("ls detail").out();
    assert!(detail.contains("flags hashpspool,full,full_quota max_objects 2 "), "{detail}");
    let df = ceph(&conf, &["df", "detail"]).ok("df detail").out();
    let q = df.lines().find(|l| l.starts_with("q ")).unwrap_or_default().to_string();
    // ... QUOTA OBJECTS, QUOTA BYTES, DIRTY, USED COMPR, UNDER COMPR ("0 B" twice).
    assert_eq!(q.split_whitespace().nth_back(6), Some("2"), "QUOTA OBJECTS: {df}");
    assert_eq!(q.split_whitespace().nth_back(5), Some("N/A"), "QUOTA BYTES: {df}");
    let quota = ceph(&conf, &["osd", "pool", "get-quota", "q"]).ok("get-quota").out();
    assert_eq!(
        quota,
        "quotas for pool 'q':\n  max objects: 2 objects  (current num objects: 2 objects)\n  max bytes  : N/A\n"
    );

    // A write waits; its op timeout ends it.
    let started = Instant::now();
    let r = rados(&conf, &["--rados-osd-op-timeout", "2", "-p", "q", "put", "o3", f]);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("error putting q/o3: (110) Connection timed out"), "{}", r.stderr);
    assert!(started.elapsed() >= Duration::from_secs(2), "it did not wait");
    // Reads go on; a write without a timeout waits until the quota is raised.
    assert_eq!(rados(&conf, &["-p", "q", "get", "o1", "-"]).ok("get").stdout, b"hello quota");
    let mut waiting = tool_cmd("rados", Some(&conf), &["-p", "q", "put", "o3", f])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(waiting.try_wait().unwrap().is_none(), "the write to a full pool did not wait");
    ceph(&conf, &["osd", "pool", "set-quota", "q", "max_objects", "10"]).ok("raise");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = waiting.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = waiting.kill();
            panic!("the waiting write did not finish after the quota was raised");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    wait_health(&conf, "POOL_FULL", false);
    assert_eq!(rados(&conf, &["-p", "q", "get", "o3", "-"]).ok("get o3").stdout, b"hello quota");

    // Bytes: 3 objects of 11 bytes pass a 30-byte quota; a removal brings the pool back.
    ceph(&conf, &["osd", "pool", "set-quota", "q", "max_bytes", "30"]).ok("bytes quota");
    let health = wait_health(&conf, "POOL_FULL", true);
    assert!(health.contains("pool 'q' is full (reached quota's max_bytes: 30 B)"), "{health}");
    let r = rados(&conf, &["--rados-osd-op-timeout", "1", "-p", "q", "put", "o4", f]);
    assert!(r.stderr.contains("(110) Connection timed out"), "{}", r.stderr);
    rados(&conf, &["-p", "q", "rm", "o3"]).ok("rm while full");
    wait_health(&conf, "POOL_FULL", false);
    rados(&conf, &["-p", "q", "put", "o4", f]).ok("put after the removal");
    let ls = rados(&conf, &["-p", "q", "ls"]).ok("ls").out();
    let mut names: Vec<&str> = ls.lines().collect();
    names.sort();
    assert_eq!(names, ["o1", "o2", "o4"], "the timed-out writes left nothing");
}

/// Goal: the central config (`ceph config set|rm|get|dump`) is kept in the monitor's
/// replicated state (it survives a restart), checks keys and values against the options
/// Quarry knows with Ceph's errors, resolves `get` from the most specific section to the
/// option's default, and prints Ceph's table and JSON; `config show` has the OSD's value.
#[test]
fn central_config_is_kept_and_checked() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let config = |args: &[&str]| {
        let mut all = vec!["config"];
        all.extend_from_slice(args);
        ceph(&conf, &all)
    };
    let r = config(&["set", "osd", "osd_max_backfills", "3"]).ok("set");
    assert!(r.stdout.is_empty() && r.stderr.trim().is_empty(), "{}", r.stderr);
    config(&["set", "osd.0", "debug_osd", "5/5"]).ok("set daemon");
    config(&["set", "client", "rbd-cache", "false"]).ok("set with dashes");
    fails(
        config(&["set", "global", "bogus_key", "1"]),
        22,
        "Error EINVAL: unrecognized config option 'bogus_key'",
    );
    fails(
        config(&["set", "client", "rbd_cache", "maybe"]),
        22,
        "Error EINVAL: error parsing value",
    );
    fails(config(&["set", "client", "key", "AQBs"]), 22, "keep keys in keyrings");
    fails(
        config(&["set", "bogus", "rbd_cache", "true"]),
        22,
        "Error EINVAL: unrecognized config target 'bogus'",
    );
    let get = config(&["get", "osd.0"]).ok("get").out();
    assert_eq!(
        get,
        "WHO    MASK  LEVEL     OPTION             VALUE  RO\n\
         osd.0        advanced  debug_osd          5/5\n\
         osd          advanced  osd_max_backfills  3      *\n"
    );
    assert_eq!(config(&["get", "osd.0", "osd_max_backfills"]).ok("get key").out(), "3\n");
    assert_eq!(config(&["get", "client.admin", "rbd_cache"]).ok("get client").out(), "false\n");
    assert_eq!(config(&["get", "osd.0", "rbd_cache"]).ok("default").out(), "true\n");
    fails(config(&["get", "osd.0", "bogus_key"]), 2, "Error ENOENT: unrecognized key 'bogus_key'");
    let dump = "WHO        MASK  LEVEL     OPTION             VALUE  RO\n  \
                osd            advanced  osd_max_backfills  3      *\n    \
                osd.0        advanced  debug_osd          5/5\n  \
                client         advanced  rbd_cache          false\n";
    let got = config(&["dump"]).ok("dump").out();
    assert_eq!(got, dump);
    let json = config(&["dump", "--format=json"]).ok("dump json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[0]["section"], "osd");
    assert_eq!(v[0]["name"], "osd_max_backfills");
    assert_eq!(v[0]["value"], "3");
    assert_eq!(v[2]["section"], "client");

    // Replicated state: a restarted cluster has it.
    cluster.terminate();
    let _cluster = up(&dir, 1);
    assert_eq!(config(&["dump"]).ok("dump after restart").out(), dump);
    config(&["rm", "osd", "osd_max_backfills"]).ok("rm");
    config(&["rm", "osd", "osd_max_backfills"]).ok("rm again");
    config(&["rm", "osd", "bogus_key"]).ok("rm unknown");
    assert!(!config(&["dump"]).ok("dump").out().contains("osd_max_backfills"));
    // The running OSD took osd.0's debug level from the central config.
    let show = config(&["show", "osd.0"]).ok("show").out();
    assert!(show.starts_with("NAME "), "{show}");
    let row = show.lines().find(|l| l.starts_with("debug_osd ")).unwrap_or_default();
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["debug_osd", "5/5", "mon"], "{show}");
}
