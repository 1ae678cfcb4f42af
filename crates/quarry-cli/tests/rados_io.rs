//! `rados append`, `rados export` / `import` and `rados lock` against `quarry up`: data,
//! xattrs, omap header and entries of every namespace survive an export and an import into
//! another pool; an export made by Ceph 16.2's `rados export` imports (the fixture
//! `ceph16-pool-export.bin`); a truncated or corrupt export is refused with nothing written;
//! appends land at the end; locks are taken, listed, refused while held and broken, with
//! Ceph's output; 4 MiB objects written in parallel to a size-2 pool replicate and read back
//! (with a 0.1 s Raft heartbeat, so every call outlives openraft's timeout for it; teeth: when
//! the transport resends such calls, a put does not finish in 90 s).

mod common;

use std::path::Path;

use common::{pattern, run_bounded, tool_cmd, up, Run, COMMAND_TIMEOUT};

fn rados(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("rados", Some(conf), args), None, COMMAND_TIMEOUT)
}

fn rados_in(conf: &Path, args: &[&str], input: &[u8]) -> Run {
    run_bounded(tool_cmd("rados", Some(conf), args), Some(input), COMMAND_TIMEOUT)
}

fn ceph(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("ceph", Some(conf), args), None, COMMAND_TIMEOUT)
}

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ceph16-pool-export.bin");

/// Export a pool with a multi-piece object, xattrs, an omap header and entries, an empty
/// object and a second namespace; import it into another pool and compare
/// everything; `--no-overwrite` and `--dry-run`; standard input and output; Ceph's own export
/// file; and refusals: a truncated file, a flipped byte, a file that is no export.
#[test]
fn export_and_import_round_trip_and_refuse_damage() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let conf = conf.as_path();
    let file = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();

    let big = pattern((9 << 20) + 77, 11);
    std::fs::write(file("big"), &big).unwrap();
    rados(conf, &["-p", "rbd", "put", "big", &file("big")]).ok("put big");
    rados(conf, &["-p", "rbd", "setxattr", "big", "colour", "blue"]).ok("setxattr");
    rados(conf, &["-p", "rbd", "setomapheader", "big", "HDR"]).ok("setomapheader");
    // A few omap keys, one value from standard input.
    rados_in(conf, &["-p", "rbd", "setomapval", "big", "k0000"], b"v0").ok("setomapval");
    for i in [1, 511, 512, 599] {
        let key = format!("k{i:04}");
        rados(conf, &["-p", "rbd", "setomapval", "big", &key, &format!("v{i}")]).ok("omap");
    }
    rados(conf, &["-p", "rbd", "-N", "ns1", "put", "a:b", "/etc/hostname"]).ok("put ns1");
    rados(conf, &["-p", "rbd", "create", "empty"]).ok("create empty");

    rados(conf, &["-p", "rbd", "export", &file("pool.exp")]).ok("export");
    let exported = std::fs::read(file("pool.exp")).unwrap();
    let to_stdout = rados(conf, &["-p", "rbd", "export"]).ok("export to stdout");
    assert!(to_stdout.stdout == exported, "export to stdout differs from the file");

    ceph(conf, &["osd", "pool", "create", "copy", "8"]).ok("pool create");
    let imported = rados(conf, &["-p", "copy", "import", &file("pool.exp")]).ok("import");
    let lines = imported.out();
    assert!(lines.starts_with("Importing pool\n"), "{lines}");
    assert!(lines.contains("Write #-9223372036854775808:00000000:::big:head#\n"), "{lines}");
    assert!(lines.contains("Write #-9223372036854775808:00000000:ns1::a%3ab:head#\n"), "{lines}");
    let ls = rados(conf, &["-p", "copy", "ls", "--all"]).ok("ls").out();
    let mut names: Vec<&str> = ls.lines().collect();
    names.sort();
    assert_eq!(names, vec!["\tbig", "\tempty", "ns1\ta:b"]);
    rados(conf, &["-p", "copy", "get", "big", &file("big.out")]).ok("get");
    assert!(std::fs::read(file("big.out")).unwrap() == big, "imported data differs");
    assert_eq!(rados(conf, &["-p", "copy", "getxattr", "big", "colour"]).ok("x").out(), "blue");
    assert_eq!(rados(conf, &["-p", "copy", "listxattr", "big"]).ok("listxattr").out(), "colour\n");
    let header = rados(conf, &["-p", "copy", "getomapheader", "big"]).ok("hdr").out();
    assert!(header.contains("|HDR|"), "{header}");
    let keys = rados(conf, &["-p", "copy", "listomapkeys", "big"]).ok("keys").out();
    assert_eq!(keys, "k0000\nk0001\nk0511\nk0512\nk0599\n");
    let stat = rados(conf, &["-p", "copy", "stat", "empty"]).ok("stat empty").out();
    assert!(stat.ends_with("size 0\n"), "{stat}");

    // Again: existing objects are replaced, or kept with --no-overwrite; a dry run says so.
    rados(conf, &["-p", "copy", "put", "big", "/etc/hostname"]).ok("change big");
    let dry = rados(conf, &["-p", "copy", "import", "--dry-run", &file("pool.exp")]).ok("dry");
    assert!(dry.out().contains("***Overwrite*** #-9223372036854775808:00000000:::big:head#"));
    let keep = rados(conf, &["-p", "copy", "import", "--no-overwrite", &file("pool.exp")]);
    assert!(keep.ok("no-overwrite").out().contains("Skipping existing #"));
    let size = |pool: &str| rados(conf, &["-p", pool, "stat", "big"]).ok("stat").out();
    assert!(!size("copy").contains(&format!("size {}", big.len())), "dry run or skip wrote");
    let stdin = rados_in(conf, &["-p", "copy", "import", "-"], &exported).ok("import -");
    assert!(stdin.out().contains("***Overwrite*** #"), "{}", stdin.out());
    assert!(size("copy").ends_with(&format!("size {}\n", big.len())));

    // Ceph 16.2's own export of a pool (o1 with data, an xattr, omap header and two
    // entries; ns1/e:mpty empty).
    ceph(conf, &["osd", "pool", "create", "fromceph", "8"]).ok("pool create");
    rados(conf, &["-p", "fromceph", "import", FIXTURE]).ok("import Ceph's export");
    assert_eq!(rados(conf, &["-p", "fromceph", "get", "o1", "-"]).ok("get").out(), "hello world");
    assert_eq!(rados(conf, &["-p", "fromceph", "getxattr", "o1", "user.a"]).ok("x").out(), "va");
    let vals = rados(conf, &["-p", "fromceph", "listomapkeys", "o1"]).ok("keys").out();
    assert_eq!(vals, "k1\nk2\n");
    rados(conf, &["-p", "fromceph", "-N", "ns1", "stat", "e:mpty"]).ok("stat ns1 object");

    // Damage: nothing is written, the error says what and where, exit 1 (Ceph's last line).
    ceph(conf, &["osd", "pool", "create", "victim", "8"]).ok("pool create");
    let cut = &exported[..exported.len() / 2];
    std::fs::write(file("cut.exp"), cut).unwrap();
    let mut flipped = exported.clone();
    flipped[exported.len() / 3] ^= 0x01;
    std::fs::write(file("flipped.exp"), &flipped).unwrap();
    std::fs::write(file("junk.exp"), pattern(4096, 3)).unwrap();
    for (name, says) in [
        ("cut.exp", "Unexpected EOF at byte"),
        ("flipped.exp", "checksum mismatch in the section at byte"),
        ("junk.exp", "Invalid magic number"),
    ] {
        let r = rados(conf, &["-p", "victim", "import", &file(name)]);
        assert_eq!(r.code(), 1, "{name}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{name}: {}", r.stderr);
        assert!(r.stderr.contains("nothing was imported"), "{name}: {}", r.stderr);
        assert!(r.stderr.ends_with("error from import: (14) Bad address\n"), "{}", r.stderr);
        let left = rados(conf, &["-p", "victim", "ls", "--all"]).ok("ls victim").out();
        assert_eq!(left, "", "{name} wrote objects before it was refused");
    }
    let r = rados_in(conf, &["-p", "victim", "import", "-"], cut);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let missing = rados(conf, &["-p", "victim", "import", &file("nope")]);
    assert_eq!(missing.code(), 1);
    assert!(missing.stderr.contains("(2) No such file or directory"), "{}", missing.stderr);
    assert_eq!(rados(conf, &["-p", "victim", "ls"]).ok("ls").out(), "");
}

/// `rados append` adds at the end (files, standard input, an empty file creates the object,
/// a missing file fails with nothing written); `rados lock` takes, lists, shows, refuses and
/// breaks locks with Ceph's JSON and messages.
#[test]
fn append_and_advisory_locks() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let conf = conf.as_path();
    let file = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();

    let first = pattern((5 << 20) + 3, 1);
    std::fs::write(file("first"), &first).unwrap();
    std::fs::write(file("empty"), b"").unwrap();
    rados(conf, &["-p", "rbd", "append", "log", &file("first")]).ok("append a file");
    rados_in(conf, &["-p", "rbd", "append", "log", "-"], b"tail").ok("append stdin");
    let got = rados(conf, &["-p", "rbd", "get", "log", "-"]).ok("get");
    let mut want = first.clone();
    want.extend_from_slice(b"tail");
    assert!(got.stdout == want, "appended object differs ({} bytes)", got.stdout.len());
    rados(conf, &["-p", "rbd", "append", "new", &file("empty")]).ok("append empty");
    assert!(rados(conf, &["-p", "rbd", "stat", "new"]).ok("stat").out().ends_with("size 0\n"));
    let missing = rados(conf, &["-p", "rbd", "append", "other", &file("nope")]);
    assert_eq!(missing.code(), 1, "{}", missing.stderr);
    assert!(
        missing.stderr.starts_with(&format!(
            "error reading input file {}: (2) No such file or directory",
            file("nope")
        )),
        "{}",
        missing.stderr
    );
    assert_eq!(rados(conf, &["-p", "rbd", "stat", "other"]).code(), 1, "a failed append wrote");

    let lock = |args: &[&str]| {
        let mut all = vec!["-p", "rbd", "lock"];
        all.extend_from_slice(args);
        rados(conf, &all)
    };
    assert_eq!(lock(&["list", "log"]).ok("list").out(), r#"{"objname":"log","locks":[]}"#);
    lock(&["get", "log", "l1"]).ok("get");
    let busy = lock(&["get", "log", "l1"]);
    assert_eq!(busy.code(), 1);
    assert_eq!(
        busy.stderr,
        "ERROR: failed locking: (16) Device or resource busy\n\
         error 16: (16) Device or resource busy\n"
    );
    lock(&[
        "get",
        "log",
        "l2",
        "--lock-type",
        "shared",
        "--lock-tag",
        "t",
        "--lock-cookie",
        "c1",
        "--lock-description",
        "my desc",
        "--lock-duration",
        "60",
    ])
    .ok("get shared");
    let listed = lock(&["list", "log"]).ok("list").out();
    assert_eq!(listed, r#"{"objname":"log","locks":[{"name":"l1"},{"name":"l2"}]}"#);
    let info = lock(&["info", "log", "l2", "--format", "json-pretty"]).ok("info").out();
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["type"], "shared");
    assert_eq!(v["tag"], "t");
    let holder = &v["lockers"][0];
    assert_eq!(holder["cookie"], "c1");
    assert_eq!(holder["description"], "my desc");
    assert!(holder["expiration"].as_str().unwrap().ends_with("+0000"), "{info}");
    assert!(holder["name"].as_str().unwrap().starts_with("client."), "{info}");
    let at = |key: &str| info.find(&format!("\"{key}\"")).unwrap();
    assert!(at("name") < at("type") && at("type") < at("tag") && at("tag") < at("lockers"));

    let l1 = lock(&["info", "log", "l1"]).ok("info l1").out();
    let v: serde_json::Value = serde_json::from_str(&l1).unwrap();
    let holder = v["lockers"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(v["lockers"][0]["expiration"], "0.000000");
    let wrong = lock(&["break", "log", "l1", "client.1"]);
    assert_eq!(wrong.code(), 1);
    assert!(
        wrong.stderr.starts_with("ERROR: failed breaking lock: (2) No such file"),
        "{}",
        wrong.stderr
    );
    let bogus = lock(&["break", "log", "l1", "bogus"]);
    assert_eq!(
        bogus.stderr,
        "ERROR: failed to parse locker name (bogus)\nerror 22: (22) Invalid argument\n"
    );
    lock(&["break", "log", "l1", &holder]).ok("break");
    lock(&["get", "log", "l1"]).ok("get after break");
    let none = lock(&["list", "nosuch"]);
    assert_eq!(none.code(), 1);
    assert!(
        none.stderr.starts_with("ERROR: rados_list_locks(): (2) No such file"),
        "{}",
        none.stderr
    );
}

/// 4 MiB objects written eight at a time to a size-2 pool are replicated and read back
/// intact. openraft gives each AppendEntries call `heartbeat_interval` to be sent, persisted
/// by the follower and answered; at 250 ms, with up to 64 entries of 4 MiB per call, the
/// calls of a loaded PG never fit, and a 4 MiB `rados put` to a replicated pool hung (the
/// follower's log said `osd.0 did not answer in time` over and over). Calls now carry at
/// most 4 MiB of entries, and a call openraft gave up on is kept going and waited for, not
/// resent (`pg::network`): the test runs with a 0.1 s heartbeat, which every 4 MiB call
/// outlives (teeth: resending, as before, no put finished in 90 s).
#[test]
fn large_writes_to_a_replicated_pool_complete() {
    let logs = quarry_testkit::log_guard();
    logs.allow_raft_churn();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    // A heartbeat of 0.1 s: every AppendEntries call of 4 MiB outlives openraft's timeout
    // for it, so the transport must keep the call going instead of resending it.
    let mut first = up(&dir, 2);
    first.terminate();
    let mut text = std::fs::read_to_string(dir.join("ceph.conf")).unwrap();
    text.push_str("[osd]\n\tosd_raft_heartbeat_interval = 0.1\n");
    std::fs::write(dir.join("ceph.conf"), text).unwrap();
    let _cluster = up(&dir, 2);
    let conf = dir.join("ceph.conf");
    let conf = conf.as_path();
    ceph(conf, &["osd", "pool", "create", "two", "8", "8", "replicated", "--size", "2"])
        .ok("pool create");
    let objects: Vec<(String, Vec<u8>)> =
        (0..8).map(|i| (format!("big{i}"), pattern(4 << 20, 100 + i))).collect();
    std::thread::scope(|scope| {
        for (name, data) in &objects {
            let file = tmp.path().join(name);
            std::fs::write(&file, data).unwrap();
            scope.spawn(move || {
                rados(conf, &["-p", "two", "put", name, file.to_str().unwrap()]).ok("put 4 MiB");
            });
        }
    });
    for (name, data) in &objects {
        let out = tmp.path().join(format!("{name}.out"));
        rados(conf, &["-p", "two", "get", name, out.to_str().unwrap()]).ok("get 4 MiB");
        assert!(std::fs::read(&out).unwrap() == *data, "{name} differs");
    }
}
