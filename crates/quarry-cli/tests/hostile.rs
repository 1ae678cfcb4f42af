//! Hostile and unlucky input seen through the real tools (issue 12): files that are not what
//! they claim (a device, a FIFO, a directory, binary data, too large) given as ceph.conf,
//! keyring, key file or input file; a ceph.conf for another cluster (fsid); `rados bench`
//! with an absurd `-t`. Each is refused quickly with a message saying what it is, and the
//! cluster is unchanged.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn run(tool: &str, conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd(tool, Some(conf), args), None, COMMAND_TIMEOUT)
}

/// A conf naming a monitor nobody needs to reach: the files are refused before any connect.
fn offline_conf(dir: &Path, extra: &str) -> std::path::PathBuf {
    let conf = dir.join("ceph.conf");
    std::fs::write(&conf, format!("[global]\n\tmon_host = 127.0.0.1:9\n{extra}")).unwrap();
    conf
}

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success());
}

#[test]
fn files_that_are_not_small_regular_text_are_refused_as_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let big = dir.join("big");
    std::fs::write(&big, vec![b'#'; (4 << 20) + 1]).unwrap();
    let binary = dir.join("binary.keyring");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00, 0x80, 0x81, 0x10, 0x9c]).unwrap();
    let conf = offline_conf(dir, "");
    let (dir_s, fifo_s, big_s) =
        (dir.to_str().unwrap(), fifo.to_str().unwrap(), big.to_str().unwrap());
    let started = Instant::now();

    // ceph.conf (-c) for every tool.
    for (file, said) in [
        ("/dev/zero", "cannot read /dev/zero: a character device, not a regular file"),
        (fifo_s, "a FIFO, not a regular file"),
        (dir_s, "Is a directory"),
        (big_s, "file too large (4194305 bytes; at most 4194304 are read)"),
    ] {
        for tool in ["ceph", "rados", "rbd"] {
            let what: &[&str] = match tool {
                "ceph" => &["-s"],
                "rados" => &["-p", "rbd", "ls"],
                _ => &["ls"],
            };
            let mut args = vec!["-c", file];
            args.extend_from_slice(what);
            let r = run(tool, &conf, &args);
            assert_ne!(r.code(), 0, "{tool} -c {file}");
            assert!(r.stderr.contains(said), "{tool} -c {file}: {}", r.stderr);
        }
    }

    // Keyrings (-k): what the file is, never "(2) No such file or directory".
    let binary_s = binary.to_str().unwrap();
    for (file, said) in [
        ("/dev/zero", "cannot read keyring /dev/zero: a character device, not a regular file: (22) Invalid argument"),
        (fifo_s, "a FIFO, not a regular file: (22) Invalid argument"),
        (dir_s, "(21) Is a directory"),
        (big_s, "file too large (4194305 bytes; at most 4194304 are read): (27) File too large"),
        (binary_s, "not text (binary data): (22) Invalid argument"),
    ] {
        for tool in ["ceph", "rados", "rbd"] {
            let what: &[&str] = if tool == "ceph" { &["-s"] } else { &["-p", "rbd", "ls"] };
            let mut args = vec!["--keyring", file];
            args.extend_from_slice(what);
            let r = run(tool, &conf, &args);
            assert_ne!(r.code(), 0, "{tool} --keyring {file}");
            assert!(r.stderr.contains(said), "{tool} --keyring {file}: {}", r.stderr);
            assert!(!r.stderr.contains("No such file"), "{tool} --keyring {file}: {}", r.stderr);
        }
    }

    // A key file (keyfile option) that is a device.
    let conf_keyfile = offline_conf(dir, "\tkeyfile = /dev/zero\n");
    let r = run("rados", &conf_keyfile, &["-p", "rbd", "ls"]);
    assert_ne!(r.code(), 0);
    assert!(
        r.stderr.contains("cannot read keyfile /dev/zero: a character device, not a regular file"),
        "{}",
        r.stderr
    );

    // `ceph auth import -i` reads its input the same way.
    let r = run("ceph", &conf, &["auth", "import", "-i", "/dev/zero"]);
    assert_ne!(r.code(), 0);
    assert!(r.stderr.contains("a character device, not a regular file"), "{}", r.stderr);

    // None of it read without bound or waited for a writer.
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}

#[test]
fn a_directory_as_input_file_and_a_conf_for_another_cluster_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");

    // A directory as input: EISDIR in Ceph's words, and nothing written.
    let r = run("rados", &conf, &["-p", "rbd", "put", "obj", tmp.path().to_str().unwrap()]);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("(21) Is a directory"), "{}", r.stderr);
    assert_eq!(run("rados", &conf, &["-p", "rbd", "ls"]).ok("ls").out(), "");
    let tmp_s = tmp.path().to_str().unwrap();
    let r = run("rbd", &conf, &["import", tmp_s, "img"]);
    assert_eq!(r.code(), 21, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("rbd: error opening {tmp_s}: (21) Is a directory")),
        "{}",
        r.stderr
    );
    assert_eq!(run("rbd", &conf, &["ls"]).ok("rbd ls").out(), "", "no image made");
    let r = run("ceph", &conf, &["auth", "import", "-i", tmp_s]);
    assert_eq!(r.code(), 21, "{}", r.stderr);
    assert!(r.stderr.contains("Error EISDIR: can't read"), "{}", r.stderr);
    run("rados", &conf, &["-p", "rbd", "put", "obj", conf.to_str().unwrap()]).ok("put");

    // The same conf with another fsid: every tool refuses the cluster, nothing changes.
    let text = std::fs::read_to_string(&conf).unwrap();
    let fsid_line = text.lines().find(|l| l.trim_start().starts_with("fsid")).expect("fsid");
    let other = tmp.path().join("other.conf");
    let foreign = "fsid = 00000000-0000-4000-8000-000000000000";
    std::fs::write(&other, text.replace(fsid_line.trim(), foreign)).unwrap();
    for (tool, args, status) in [
        ("rados", &["-p", "rbd", "rm", "obj"][..], 1),
        ("rbd", &["create", "--size", "1M", "img"][..], 22),
        ("ceph", &["osd", "pool", "create", "p2", "8"][..], 1),
    ] {
        let r = run(tool, &other, args);
        assert_eq!(r.code(), status, "{tool}: {}", r.stderr);
        assert!(
            r.stderr.contains("fsid 00000000-0000-4000-8000-000000000000 in the configuration does not match the cluster's fsid"),
            "{tool}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("(22) Invalid argument"), "{tool}: {}", r.stderr);
    }
    assert_eq!(run("rados", &conf, &["-p", "rbd", "ls"]).ok("ls").out(), "obj\n");
    assert_eq!(run("rbd", &conf, &["ls"]).ok("rbd ls").out(), "");
    assert!(!run("ceph", &conf, &["osd", "pool", "ls"]).ok("pool ls").out().contains("p2"));
}

#[test]
fn rados_bench_with_an_absurd_concurrency_ends_near_its_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let started = Instant::now();
    let r = run("rados", &conf, &["-p", "rbd", "bench", "2", "write", "-t", "100000"]).ok("bench");
    let took = started.elapsed();
    assert!(
        r.stderr.contains("using -t 64 (at most 1024 ops and 256 MiB in flight)"),
        "{}",
        r.stderr
    );
    assert!(r.out().contains("Total time run:"), "{}", r.out());
    // 2 s of writes, then at most 256 MiB in flight to finish and the cleanup.
    assert!(took < Duration::from_secs(30), "bench -t 100000 took {took:?}");
    assert_eq!(run("rados", &conf, &["-p", "rbd", "ls"]).ok("ls").out(), "", "cleaned up");
}

/// Goal (issue 12, item 6): a pool whose size exceeds the OSDs never acknowledges a write
/// with fewer copies than its min_size. Method: on one OSD, `ceph osd pool create big3 8
/// --size 5` (min_size 3): a put must fail at once with ENXIO and store nothing, health must
/// say why; a size-2 pool (min_size 1) and the size-1 pool keep working, and `quarry up`
/// starts again (it does not wait for PGs that can never serve).
#[test]
fn a_pool_below_min_size_refuses_io_and_health_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let input = tmp.path().join("f");
    std::fs::write(&input, b"one copy is not enough").unwrap();
    let f = input.to_str().unwrap();

    run("ceph", &conf, &["osd", "pool", "create", "big3", "8", "--size", "5"]).ok("create big3");
    assert_eq!(
        run("ceph", &conf, &["osd", "pool", "get", "big3", "min_size"]).ok("get").out(),
        "min_size: 3\n"
    );
    let started = Instant::now();
    let r = run("rados", &conf, &["-p", "big3", "put", "a", f]);
    assert_eq!(r.code(), 1, "a write below min_size must not succeed: {}", r.stderr);
    assert!(
        r.stderr.contains("error putting big3/a: (6) No such device or address"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let r = run("rados", &conf, &["-p", "big3", "get", "a", "-"]);
    assert_ne!(r.code(), 0, "{}", r.stderr);
    // Health as the monitor last heard it: right after the start, a PG of `rbd` can still
    // show `creating` for a beacon interval (seen once: "9 pgs inactive", pg 1.1f creating).
    let inactive = "[WRN] PG_AVAILABILITY: Reduced data availability: 8 pgs inactive";
    let why = "pool 'big3': 8 pgs have 1 OSD or fewer, below min_size 3 (size 5): I/O refused";
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let health = run("ceph", &conf, &["health", "detail"]).ok("health detail").out();
        if (health.contains(inactive) && health.contains(why)) || Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(health.contains(inactive), "{health}");
    assert!(health.contains(why), "{health}");

    // min_size 1 of a size-2 pool is met by the one OSD: served (undersized, as health says).
    run("ceph", &conf, &["osd", "pool", "create", "two", "8", "--size", "2"]).ok("create two");
    run("rados", &conf, &["-p", "two", "put", "a", f]).ok("put in a size-2 pool");
    run("rados", &conf, &["-p", "rbd", "put", "a", f]).ok("put in rbd");
    assert_eq!(run("rados", &conf, &["-p", "big3", "ls"]).code(), 1, "listing refused too");

    cluster.terminate();
    let _cluster = up(&dir, 1);
    assert_eq!(
        run("rados", &conf, &["-p", "two", "get", "a", "-"]).ok("get").stdout,
        b"one copy is not enough"
    );
    let r = run("rados", &conf, &["-p", "big3", "put", "a", f]);
    assert!(r.stderr.contains("(6) No such device or address"), "{}", r.stderr);
}

/// Goal (issue 12, item 3c): blocklist entries expire and leave the map, and a `profile rbd`
/// user cannot grow the blocklist (which every client and OSD receives) without bound, while
/// another such user and an admin still can fence: the bound is per adding entity. Method:
/// `mon_blocklist_max = 12` in the cluster's ceph.conf; a `profile rbd` user adds 12
/// entries, the 13th is refused with ENOSPC (exit 28) and changes nothing, renewing an entry
/// still works, a second `profile rbd` user adds its own entries, the admin adds one more,
/// health warns with the map's size; entries added with a 1 s expiry leave the map (`osd
/// dump`) within seconds, and an expired or removed entry gives its adder room again.
#[test]
fn blocklist_entries_are_bounded_per_user_and_expire() {
    let logs = quarry_testkit::log_guard();
    logs.expect("blocklist add refused: blocklist full entity=client.locker");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let kr = tmp.path().join("locker.keyring");
    let kr_s = kr.to_str().unwrap();
    let kr2 = tmp.path().join("other.keyring");
    let kr2_s = kr2.to_str().unwrap();
    for (user, file) in [("client.locker", kr_s), ("client.other", kr2_s)] {
        run(
            "ceph",
            &conf,
            &[
                "auth",
                "get-or-create",
                user,
                "mon",
                "profile rbd",
                "osd",
                "profile rbd",
                "-o",
                file,
            ],
        )
        .ok("get-or-create");
    }
    cluster.terminate();
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\tmon_blocklist_max = 12\n");
    std::fs::write(&conf, text).unwrap();
    let _cluster = up(&dir, 1);

    let as_user = |id: &str, keyring: &str, args: &[&str]| {
        let mut all = vec!["--id", id, "--keyring", keyring];
        all.extend_from_slice(args);
        run("ceph", &conf, &all)
    };
    let locker = |args: &[&str]| as_user("locker", kr_s, args);
    let other = |args: &[&str]| as_user("other", kr2_s, args);
    for i in 0..12 {
        let entry = format!("10.0.0.{i}:0/{}", 4000 + i);
        let r = locker(&["osd", "blocklist", "add", &entry]).ok("add");
        assert!(r.stderr.contains(&format!("blocklisting {entry} until")), "{}", r.stderr);
    }
    let r = locker(&["osd", "blocklist", "add", "10.0.1.1:0/1"]);
    assert_eq!(r.code(), 28, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "Error ENOSPC: client.locker has 12 live blocklist entries, the most one entity may add (12, mon_blocklist_max)"
        ),
        "{}",
        r.stderr
    );
    let listed = run("ceph", &conf, &["osd", "blocklist", "ls"]).ok("ls");
    assert!(listed.stderr.contains("listed 12 entries"), "{}", listed.stderr);
    assert!(!listed.out().contains("10.0.1.1"), "the refused entry changed nothing");
    // Renewing an existing entry is not a new one.
    locker(&["osd", "blocklist", "add", "10.0.0.0:0/4000", "600"]).ok("renew");
    // Another non-admin user has its own share: the first one's entries do not count.
    for i in 0..3 {
        let entry = format!("10.0.4.{i}:0/{i}");
        let r = other(&["osd", "blocklist", "add", &entry, "600"]).ok("other user add");
        assert!(r.stderr.contains(&format!("blocklisting {entry} until")), "{}", r.stderr);
    }
    // An admin can still fence.
    run("ceph", &conf, &["osd", "blocklist", "add", "10.0.2.2:0/2", "600"]).ok("admin add");
    let health = run("ceph", &conf, &["health", "detail"]).ok("health").out();
    assert!(
        health.contains("[WRN] MON_BLOCKLIST_LARGE: 16 blocklist entries (the map is "),
        "{health}"
    );
    assert!(
        health
            .contains("each user without auth rights may add up to 12 of them (mon_blocklist_max)"),
        "{health}"
    );
    for i in 0..3 {
        run("ceph", &conf, &["osd", "blocklist", "rm", &format!("10.0.4.{i}:0/{i}")]).ok("rm");
    }

    // Expiry: an entry of 1 s leaves the map itself (`osd dump` shows every entry of the
    // map, expired or not; `blocklist ls` only live ones).
    run("ceph", &conf, &["osd", "blocklist", "add", "10.0.2.3:0/3", "1"]).ok("admin add 1 s");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = run("ceph", &conf, &["osd", "dump"]).ok("osd dump").out();
        assert!(out.contains("blocklist 10.0.0.0:0/4000 expires"), "{out}");
        if !out.contains("blocklist 10.0.2.3:0/3 ") {
            break;
        }
        assert!(Instant::now() < deadline, "an expired entry stayed in the map: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Room again for the user once one of its entries goes; its 1 s entry expires too.
    run("ceph", &conf, &["osd", "blocklist", "rm", "10.0.0.1:0/4001"]).ok("rm");
    run("ceph", &conf, &["osd", "blocklist", "rm", "10.0.2.2:0/2"]).ok("rm");
    locker(&["osd", "blocklist", "add", "10.0.3.3:0/3", "1"]).ok("add after rm: room again");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = run("ceph", &conf, &["osd", "dump"]).ok("osd dump").out();
        if !out.contains("blocklist 10.0.3.3:0/3 ") {
            let r = run("ceph", &conf, &["osd", "blocklist", "ls"]).ok("ls");
            assert!(r.stderr.contains("listed 11 entries"), "{}", r.stderr);
            break;
        }
        assert!(Instant::now() < deadline, "an expired entry stayed in the map: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
