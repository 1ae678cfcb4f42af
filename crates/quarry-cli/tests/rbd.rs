//! The `rbd` tool against a real `quarry up` cluster: the seed's golden image → snapshot →
//! clone workflow, Ceph's output shapes (`rbd info`, `snap ls`, `ls -l`, `du`, `children`,
//! `status`, JSON), export/import byte for byte, and the error paths a user hits (nonexistent
//! image or pool, existing name, shrink without `--allow-shrink`, rm with snapshots, clone of
//! an unprotected v1 snapshot, unprotect with children, protected snapshot removal), each with
//! Ceph's message and exit status and nothing changed.

mod common;

use std::path::Path;

use common::*;

fn run(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("rbd", Some(conf), args), None, COMMAND_TIMEOUT)
}

fn run_in(conf: &Path, args: &[&str], input: &[u8]) -> Run {
    run_bounded(tool_cmd("rbd", Some(conf), args), Some(input), COMMAND_TIMEOUT)
}

/// Runs and expects success; returns stdout.
fn ok(conf: &Path, args: &[&str]) -> String {
    let r = run(conf, args);
    assert_eq!(r.code(), 0, "rbd {}: {}", args.join(" "), r.stderr);
    r.out()
}

/// Runs and expects exit `code` with `stderr` containing `text`.
fn fails(conf: &Path, args: &[&str], code: i32, text: &str) {
    let r = run(conf, args);
    assert_eq!(r.code(), code, "rbd {}: {}", args.join(" "), r.stderr);
    assert!(
        r.stderr.contains(text),
        "rbd {}: stderr {:?} lacks {text:?}",
        args.join(" "),
        r.stderr
    );
}

#[test]
fn golden_image_snapshot_clone_workflow() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let c = conf.as_path();

    // The seed's rbd info shape after a 10G create.
    assert_eq!(ok(c, &["create", "--size", "10G", "yujiang"]), "");
    let info = ok(c, &["info", "yujiang"]);
    let lines: Vec<&str> = info.lines().collect();
    assert_eq!(lines[0], "rbd image 'yujiang':");
    assert_eq!(lines[1], "\tsize 10 GiB in 2560 objects");
    assert_eq!(lines[2], "\torder 22 (4 MiB objects)");
    assert_eq!(lines[3], "\tsnapshot_count: 0");
    let id = lines[4].strip_prefix("\tid: ").unwrap();
    assert_eq!(lines[5], format!("\tblock_name_prefix: rbd_data.{id}"));
    assert_eq!(lines[6], "\tformat: 2");
    assert_eq!(
        lines[7],
        "\tfeatures: layering, exclusive-lock, object-map, fast-diff, deep-flatten"
    );
    assert_eq!(lines[8], "\top_features: ");
    assert_eq!(lines[9], "\tflags: ");
    assert!(lines[10].starts_with("\tcreate_timestamp: "), "{info}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(c, &["info", "--format", "json", "rbd/yujiang"])).unwrap();
    assert_eq!(json["size"], 10u64 << 30);
    assert_eq!(json["objects"], 2560);
    assert_eq!(json["features"][0], "layering");
    ok(c, &["resize", "--size", "20G", "yujiang"]);
    assert!(ok(c, &["info", "yujiang"]).contains("\tsize 20 GiB in 5120 objects\n"));

    // A golden image with data, exported and imported byte for byte.
    let data = pattern(3 << 20, 7);
    let r = run_in(c, &["import", "-", "rbd/golden"], &data);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let exported = tmp.path().join("golden.raw");
    ok(c, &["export", "golden", exported.to_str().unwrap()]);
    assert_eq!(std::fs::read(&exported).unwrap(), data);

    // Snapshot, protect, clone (v1 and v2), children, ls -l, du.
    ok(c, &["snap", "create", "golden@base"]);
    let snaps = ok(c, &["snap", "ls", "golden"]);
    assert!(snaps.starts_with("SNAPID  NAME  SIZE   PROTECTED  TIMESTAMP"), "{snaps}");
    assert!(snaps.lines().nth(1).unwrap().contains("base  3 MiB"), "{snaps}");
    fails(
        c,
        &["clone", "--rbd-default-clone-format", "1", "golden@base", "vm-v1"],
        22,
        "rbd: clone error: (22) Invalid argument",
    );
    assert_eq!(run(c, &["info", "vm-v1"]).code(), 2, "a refused clone leaves no image");
    ok(c, &["snap", "protect", "golden@base"]);
    fails(c, &["snap", "protect", "golden@base"], 16, "rbd: snap is already protected");
    ok(c, &["clone", "--rbd-default-clone-format", "1", "golden@base", "vm-v1"]);
    ok(c, &["clone", "golden@base", "rbd/vm-v2"]);
    assert_eq!(ok(c, &["children", "golden@base"]), "rbd/vm-v1\nrbd/vm-v2\n");
    let clone_info = ok(c, &["info", "vm-v1"]);
    assert!(clone_info.contains("\tparent: rbd/golden@base\n\toverlap: 3 MiB\n"), "{clone_info}");
    let long = ok(c, &["ls", "-l"]);
    assert!(long.lines().any(|l| l.starts_with("golden@base") && l.contains("yes")), "{long}");
    assert!(
        long.lines().any(|l| l.starts_with("vm-v1") && l.contains("rbd/golden@base")),
        "{long}"
    );
    // The clone reads the parent's data; a write to it leaves the parent alone.
    let clone_file = tmp.path().join("clone.raw");
    ok(c, &["export", "vm-v2", clone_file.to_str().unwrap()]);
    assert_eq!(std::fs::read(&clone_file).unwrap(), data);
    assert_eq!(ok(c, &["diff", "golden"]), "Offset  Length   Type\n0       3145728  data\n");
    assert_eq!(ok(c, &["diff", "--from-snap", "base", "golden"]), "Offset  Length  Type\n");
    let du = ok(c, &["du", "golden"]);
    assert!(du.lines().any(|l| l.starts_with("golden@base") && l.ends_with("3 MiB")), "{du}");

    // Errors a user hits, with Ceph's words and statuses; nothing changes.
    fails(
        c,
        &["info", "nosuch"],
        2,
        "rbd: error opening image nosuch: (2) No such file or directory",
    );
    fails(
        c,
        &["rm", "--no-progress", "nosuch"],
        2,
        "rbd: delete error: (2) No such file or directory",
    );
    fails(
        c,
        &["create", "--size", "1G", "nopool/x"],
        2,
        "rbd: error opening pool 'nopool': (2) No such file or directory",
    );
    fails(c, &["ls", "nopool"], 2, "rbd: error opening pool 'nopool'");
    fails(c, &["create", "--size", "1G", "golden"], 17, "rbd: create error: (17) File exists");
    fails(
        c,
        &["snap", "create", "golden@base"],
        17,
        "rbd: failed to create snapshot: (17) File exists",
    );
    fails(c, &["rename", "vm-v1", "golden"], 17, "rbd: rename error: (17) File exists");
    fails(
        c,
        &["resize", "--size", "1M", "golden"],
        22,
        "rbd: shrinking an image is only allowed with the --allow-shrink flag",
    );
    fails(c, &["rm", "--no-progress", "golden"], 39, "rbd: image has snapshots - these must be deleted with 'rbd snap purge' before the image can be removed.");
    fails(c, &["snap", "rm", "golden@base"], 16, "rbd: snapshot 'base' is protected from removal.");
    fails(
        c,
        &["snap", "unprotect", "golden@base"],
        16,
        "rbd: unprotecting snap failed: (16) Device or resource busy",
    );
    fails(
        c,
        &["clone", "golden@nosnap", "vm3"],
        2,
        "rbd: clone error: (2) No such file or directory",
    );
    fails(c, &["create", "--size", "1G", "--order", "30", "bad"], 33, "rbd: create error: (33)");
    assert!(ok(c, &["info", "golden"]).contains("\tsnapshot_count: 1\n"));
    let ls = ok(c, &["ls"]);
    assert_eq!(ls, "golden\nvm-v1\nvm-v2\nyujiang\n");

    // Flatten one clone, remove the other; then the snapshot can go.
    // cp of a clone copies what it reads (the parent's data), sparse.
    ok(c, &["cp", "--no-progress", "vm-v2", "copied"]);
    let copied = tmp.path().join("copied.raw");
    ok(c, &["export", "copied", copied.to_str().unwrap()]);
    assert_eq!(std::fs::read(&copied).unwrap(), data);
    assert!(!ok(c, &["info", "copied"]).contains("parent:"));
    fails(c, &["cp", "vm-v2", "copied"], 17, "rbd: copy failed: (17) File exists");
    ok(c, &["rm", "--no-progress", "copied"]);
    ok(c, &["flatten", "--no-progress", "vm-v1"]);
    assert!(!ok(c, &["info", "vm-v1"]).contains("parent:"));
    ok(c, &["export", "vm-v1", tmp.path().join("flat.raw").to_str().unwrap()]);
    assert_eq!(std::fs::read(tmp.path().join("flat.raw")).unwrap(), data);
    ok(c, &["rm", "--no-progress", "vm-v2"]);
    assert_eq!(ok(c, &["children", "golden@base"]), "");
    ok(c, &["snap", "unprotect", "golden@base"]);
    ok(c, &["snap", "purge", "--no-progress", "golden"]);
    ok(c, &["rm", "--no-progress", "golden"]);
    assert_eq!(ok(c, &["status", "vm-v1"]), "Watchers: none\n");
    // rbd bench with Ceph's flags and output shape.
    let bench =
        ok(c, &["bench", "--io-type", "write", "--io-size", "4K", "--io-total", "64K", "vm-v1"]);
    let lines: Vec<&str> = bench.lines().collect();
    assert_eq!(
        lines[0],
        "bench  type write io_size 4096 io_threads 16 bytes 65536 pattern sequential"
    );
    assert_eq!(lines[1], "  SEC       OPS   OPS/SEC   BYTES/SEC");
    assert!(
        lines.last().unwrap().starts_with("elapsed: ")
            && lines.last().unwrap().contains("ops: 16 "),
        "{bench}"
    );
    let bench = ok(
        c,
        &["bench", "--io-type", "readwrite", "--io-pattern", "rand", "--io-total", "64K", "vm-v1"],
    );
    assert!(bench.contains("read_ratio 50"), "{bench}");
    fails(c, &["bench", "vm-v1"], 22, "must specify --io-type");

    // Features: enabling object-map builds the map from the objects that exist.
    ok(c, &["create", "--size", "16M", "--image-feature", "layering", "fe"]);
    ok(c, &["bench", "--io-type", "write", "--io-total", "64K", "fe"]);
    fails(
        c,
        &["feature", "enable", "fe", "object-map"],
        22,
        "failed to update image features: (22)",
    );
    ok(c, &["feature", "enable", "fe", "exclusive-lock", "object-map", "fast-diff"]);
    let info = ok(c, &["info", "fe"]);
    assert!(
        info.contains("\tfeatures: layering, exclusive-lock, object-map, fast-diff\n"),
        "{info}"
    );
    let du = ok(c, &["du", "fe"]);
    assert!(du.lines().any(|l| l.starts_with("fe ") && l.ends_with("4 MiB")), "{du}");
    ok(c, &["feature", "disable", "fe", "fast-diff", "object-map"]);
    fails(c, &["feature", "disable", "fe", "layering"], 22, "(22) Invalid argument");
    assert!(ok(c, &["info", "fe"]).contains("\tfeatures: layering, exclusive-lock\n"));
    ok(c, &["rm", "--no-progress", "fe"]);

    // rbd watch: listed by rbd status, prints the header update a resize sends.
    let fifo = tmp.path().join("stdin");
    let mut mk = std::process::Command::new("mkfifo");
    mk.arg(&fifo);
    run_bounded(mk, None, COMMAND_TIMEOUT).ok("mkfifo");
    let hold = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("exec \"$0\" rbd watch vm-v1 < \"$1\"")
        .arg(quarry())
        .arg(&fifo)
        .env("CEPH_CONF", c)
        .env_remove("CEPH_ARGS");
    let mut watcher = Daemon::spawn("rbd watch", cmd);
    let wait_line = |prefix: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !watcher.stdout.lock().unwrap().iter().any(|l| l.contains(prefix)) {
            assert!(std::time::Instant::now() < deadline, "no '{prefix}'\n{}", watcher.logs());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_line("press enter to exit...");
    let status = ok(c, &["status", "vm-v1"]);
    assert!(status.starts_with("Watchers:\n\twatcher=127.0.0.1:0/"), "{status}");
    ok(c, &["resize", "--size", "4M", "vm-v1"]);
    wait_line("vm-v1 received notification: notify_id=");
    assert!(watcher.stdout.lock().unwrap().iter().any(|l| l.ends_with("notify_op=HeaderUpdate")));
    // EOF on its stdin: it unwatches and exits by itself.
    drop(hold);
    let exit =
        watcher.wait_exit(std::time::Duration::from_secs(30)).expect("rbd watch exits at EOF");
    assert!(exit.success(), "{}", watcher.logs());
    assert_eq!(ok(c, &["status", "vm-v1"]), "Watchers: none\n");

    // Advisory locks.
    assert_eq!(ok(c, &["lock", "ls", "vm-v1"]), "");
    ok(c, &["lock", "add", "vm-v1", "mylock"]);
    let locks = ok(c, &["lock", "ls", "vm-v1"]);
    assert!(locks.starts_with("There is 1 exclusive lock on this image.\nLocker"), "{locks}");
    let line = locks.lines().nth(2).unwrap();
    let locker = line.split_whitespace().next().unwrap();
    assert!(line.contains("mylock"), "{locks}");
    // Ceph's formatted shape: a section per lock, named by its id.
    let json: serde_json::Value =
        serde_json::from_str(&ok(c, &["lock", "ls", "--format", "json", "vm-v1"])).unwrap();
    assert_eq!(json["mylock"]["locker"], locker, "{json}");
    let xml = ok(c, &["lock", "ls", "--format", "xml", "vm-v1"]);
    assert!(
        xml.starts_with(&format!("<locks><mylock><locker>{locker}</locker><address>")),
        "{xml}"
    );
    assert!(xml.ends_with("</address></mylock></locks>\n"), "{xml}");
    fails(c, &["lock", "add", "vm-v1", "other"], 16, "rbd: lock is already held by someone else");
    ok(c, &["lock", "rm", "vm-v1", "mylock", locker]);
    assert_eq!(ok(c, &["lock", "ls", "vm-v1"]), "");

    // Trash: move (the name is free), list, deferred removal needs --force, restore, purge.
    ok(c, &["trash", "mv", "--delay", "3600", "vm-v1"]);
    assert_eq!(run(c, &["info", "vm-v1"]).code(), 2);
    let listed = ok(c, &["trash", "ls"]);
    let (trash_id, trash_name) = listed.trim().split_once(' ').unwrap();
    assert_eq!(trash_name, "vm-v1");
    assert_eq!(
        ok(c, &["trash", "ls", "--format", "xml"]),
        format!("<trash><image><id>{trash_id}</id><name>vm-v1</name></image></trash>\n")
    );
    let long: serde_json::Value =
        serde_json::from_str(&ok(c, &["trash", "ls", "-l", "--format", "json"])).unwrap();
    assert_eq!(long[0]["source"], "USER", "{long}");
    assert!(long[0]["status"].as_str().unwrap().starts_with("protected until "), "{long}");
    fails(c, &["trash", "rm", trash_id], 1, "deferment time has not expired");
    ok(c, &["trash", "restore", trash_id]);
    assert!(ok(c, &["info", "vm-v1"]).contains(&format!("\tid: {trash_id}\n")));
    ok(c, &["trash", "mv", "vm-v1"]);
    ok(c, &["trash", "purge"]);
    assert_eq!(ok(c, &["trash", "ls"]), "");
    assert_eq!(ok(c, &["ls"]), "yujiang\n");
    assert_eq!(ok(c, &["ls", "--format", "json"]), "[\"yujiang\"]\n");
}

#[test]
fn sparse_import_and_export_skip_holes() {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let c = conf.as_path();

    // An 8 GiB sparse file with data at its start, in its middle (across an object boundary)
    // and at its very end.
    const GIB: u64 = 1 << 30;
    let source = tmp.path().join("sparse.raw");
    let pieces = [
        (0u64, pattern(4096, 1)),
        (5 * GIB - 8192, pattern(3 << 20, 2)),
        (8 * GIB - 512, pattern(512, 3)),
    ];
    {
        let mut file = std::fs::File::create(&source).unwrap();
        file.set_len(8 * GIB).unwrap();
        for (at, data) in &pieces {
            file.seek(SeekFrom::Start(*at)).unwrap();
            file.write_all(data).unwrap();
        }
    }
    ok(c, &["import", "--no-progress", source.to_str().unwrap(), "big"]);
    assert!(ok(c, &["info", "big"]).contains("\tsize 8 GiB in 2048 objects\n"));
    // Only the objects the data touches exist: 1 + 2 + 1 of 4 MiB.
    let du = ok(c, &["du", "big"]);
    let row: Vec<&str> = du.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["big", "8", "GiB", "16", "MiB"], "{du}");

    // Exported to a file: the same bytes, and holes where the image has no data (a file
    // written in full would allocate 8 GiB).
    let exported = tmp.path().join("exported.raw");
    ok(c, &["export", "--no-progress", "big", exported.to_str().unwrap()]);
    let meta = std::fs::metadata(&exported).unwrap();
    assert_eq!(meta.len(), 8 * GIB);
    assert!(meta.blocks() * 512 <= 64 << 20, "{} bytes allocated", meta.blocks() * 512);
    let mut file = std::fs::File::open(&exported).unwrap();
    for (at, data) in &pieces {
        let mut got = vec![0u8; data.len()];
        file.seek(SeekFrom::Start(*at)).unwrap();
        file.read_exact(&mut got).unwrap();
        assert_eq!(&got, data, "data at {at}");
    }
    let mut around = vec![0u8; 1 << 20];
    file.seek(SeekFrom::Start(5 * GIB - 8192 - (1 << 20))).unwrap();
    file.read_exact(&mut around).unwrap();
    assert!(around.iter().all(|&b| b == 0), "zeros before the middle piece");

    // To stdout the holes are written as zeros, in order (a smaller image).
    let data = pattern(4096, 9);
    let r =
        run_in(c, &["import", "-", "rbd/small-src"], &[vec![0u8; 5 << 20], data.clone()].concat());
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let r = run(c, &["export", "small-src", "-"]);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert_eq!(r.stdout.len(), (5 << 20) + 4096);
    assert!(r.stdout[..5 << 20].iter().all(|&b| b == 0));
    assert_eq!(&r.stdout[5 << 20..], &data[..]);

    // deep cp keeps the snapshots.
    ok(c, &["snap", "create", "small-src@one"]);
    ok(c, &["deep", "cp", "--no-progress", "small-src", "small-copy"]);
    let snaps = ok(c, &["snap", "ls", "small-copy"]);
    assert!(snaps.lines().nth(1).is_some_and(|l| l.contains("one")), "{snaps}");
    // The seed's pool set-up, and the device commands' honest refusal.
    let r = run_bounded(
        tool_cmd("ceph", Some(c), &["osd", "pool", "create", "data"]),
        None,
        COMMAND_TIMEOUT,
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    ok(c, &["pool", "init", "data"]);
    ok(c, &["create", "--size", "1G", "data/squeeze"]);
    assert_eq!(ok(c, &["ls", "data"]), "squeeze\n");
    fails(c, &["device", "map", "-t", "nbd", "data/squeeze"], 95, "quarry nbd serve");
    let r = run(c, &["export", "small-copy@one", "-"]);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert_eq!(&r.stdout[5 << 20..], &data[..]);
}

/// `export-diff` / `import-diff` / `merge-diff` (Ceph's "rbd diff v1" stream) between
/// snapshots, through files and pipes: the copy reads as the source at each snapshot, the
/// end snapshot is created, a missing start snapshot or an existing end snapshot is refused
/// with Ceph's words and changes nothing.
#[test]
fn export_diff_import_diff_round_trip() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let c = conf.as_path();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let export = |spec: &str| {
        let r = run(c, &["export", spec, "-"]);
        assert_eq!(r.code(), 0, "export {spec}: {}", r.stderr);
        r.stdout
    };

    // s1: 3 MiB of data in 1 MiB objects, then a 1 MiB hole; s2: random 4 KiB writes, a
    // grow and more writes.
    let mut base = pattern(3 << 20, 11);
    base.extend(vec![0u8; 1 << 20]);
    let r = run_in(c, &["import", "--object-size", "1M", "-", "src"], &base);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    ok(c, &["snap", "create", "src@s1"]);
    let bench = ["bench", "--io-type", "write", "--io-size", "4K", "--io-total", "256K"];
    ok(c, &[&bench[..], &["--io-pattern", "rand", "src"]].concat());
    ok(c, &["resize", "--size", "6M", "src"]);
    ok(c, &["snap", "create", "src@s2"]);

    let (d1, d2) = (path("d1"), path("d2"));
    ok(c, &["export-diff", "src@s1", &d1]);
    let incremental =
        run(c, &["export-diff", "--from-snap", "s1", "--whole-object", "src@s2", "-"]);
    assert_eq!(incremental.code(), 0, "{}", incremental.stderr);
    assert!(incremental.stdout.starts_with(b"rbd diff v1\nf\x02\0\0\0s1t\x02\0\0\0s2s"));
    std::fs::write(&d2, &incremental.stdout).unwrap();
    fails(c, &["export-diff", "src@s1", &d1], 17, "rbd: error opening");

    ok(c, &["create", "--size", "1M", "dst"]);
    // The incremental diff needs s1 on the target.
    fails(
        c,
        &["import-diff", &d2, "dst"],
        2,
        "start snapshot 's1' does not exist in the image, aborting",
    );
    assert!(ok(c, &["snap", "ls", "dst"]).is_empty());
    ok(c, &["import-diff", &d1, "dst"]);
    assert!(export("dst") == export("src@s1"), "dst differs from src@s1");
    assert!(export("dst@s1") == export("src@s1"));
    let r = run_in(c, &["import-diff", "-", "dst"], &incremental.stdout);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert!(export("dst") == export("src@s2"), "dst differs from src@s2");
    assert!(ok(c, &["info", "dst"]).contains("\tsize 6 MiB in 2 objects\n"));
    fails(c, &["import-diff", &d2, "dst"], 17, "end snapshot 's2' already exists, aborting");

    // merge-diff (no cluster needed): s1's full diff + (s1..s2) = s2's full diff.
    let merged = path("merged");
    let r = run_bounded(
        tool_cmd("rbd", None, &["merge-diff", &d1, &d2, &merged]),
        None,
        COMMAND_TIMEOUT,
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    ok(c, &["create", "--size", "1M", "dst2"]);
    ok(c, &["import-diff", &merged, "dst2"]);
    assert!(export("dst2") == export("src@s2"), "the merged diff differs from src@s2");
    fails(c, &["merge-diff", &d2, &d2, &path("bad")], 22, "rbd: merge-diff error");
    fails(c, &["import-diff", &path("nothing"), "dst"], 2, "rbd: error opening");
    let r = run_in(c, &["import-diff", "-", "dst"], b"not a diff");
    assert_eq!(r.code(), 22, "{}", r.stderr);
}

/// `--format xml [--pretty-format]`: Ceph's element names and field order, escaped text,
/// empty sections as `<x></x>`; JSON in Ceph's field order and pretty layout.
#[test]
fn xml_output_has_cephs_shape() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let c = conf.as_path();
    ok(c, &["create", "--size", "10M", "img"]);
    ok(c, &["snap", "create", "img@s"]);

    let info = ok(c, &["info", "--format", "xml", "img"]);
    assert!(info.starts_with("<image><name>img</name><id>"), "{info}");
    assert!(info.contains("</id><size>10485760</size><objects>3</objects><order>22</order><object_size>4194304</object_size><snapshot_count>1</snapshot_count><block_name_prefix>rbd_data."), "{info}");
    assert!(info.contains("<format>2</format><features><feature>layering</feature><feature>exclusive-lock</feature><feature>object-map</feature><feature>fast-diff</feature><feature>deep-flatten</feature></features><op_features></op_features><flags></flags><create_timestamp>"), "{info}");
    assert!(info.ends_with("</modify_timestamp></image>\n"), "{info}");
    let pretty = ok(c, &["info", "--format", "xml", "--pretty-format", "img"]);
    let lines: Vec<&str> = pretty.lines().collect();
    assert_eq!(lines[0], "<image>");
    assert_eq!(lines[1], "    <name>img</name>");
    assert!(
        lines.contains(&"    <features>") && lines.contains(&"        <feature>layering</feature>")
    );
    assert!(lines.contains(&"    <op_features></op_features>"), "{pretty}");
    assert_eq!(lines.last(), Some(&"</image>"));

    // JSON in Ceph's field order too (the anchor's `rbd info --format json --pretty-format`).
    let json = ok(c, &["info", "--format", "json", "img"]);
    assert!(json.starts_with("{\"name\":\"img\",\"id\":\""), "{json}");
    assert!(json.contains(",\"size\":10485760,\"objects\":3,\"order\":22,\"object_size\":4194304,\"snapshot_count\":1,\"block_name_prefix\":\"rbd_data."), "{json}");
    assert!(json.contains(",\"format\":2,\"features\":[\"layering\",\"exclusive-lock\",\"object-map\",\"fast-diff\",\"deep-flatten\"],\"op_features\":[],\"flags\":[],\"create_timestamp\":"), "{json}");
    let pretty = ok(c, &["info", "--format", "json", "--pretty-format", "img"]);
    let lines: Vec<&str> = pretty.lines().collect();
    assert_eq!(lines[..2], ["{", "    \"name\": \"img\","], "{pretty}");
    assert!(
        lines.contains(&"    \"features\": [") && lines.contains(&"        \"layering\","),
        "{pretty}"
    );
    assert!(lines.contains(&"    \"op_features\": [],"), "{pretty}");
    assert_eq!(lines.last(), Some(&"}"));
    let snaps = ok(c, &["snap", "ls", "--format", "xml", "img"]);
    assert!(
        snaps.starts_with("<snapshots><snapshot><id>")
            && snaps.contains(
                "</id><name>s</name><size>10485760</size><protected>false</protected><timestamp>"
            )
            && snaps.ends_with("</timestamp></snapshot></snapshots>\n"),
        "{snaps}"
    );
    assert_eq!(ok(c, &["ls", "--format", "xml"]), "<images><name>img</name></images>\n");
    let long = ok(c, &["ls", "-l", "--format", "xml"]);
    assert!(long.starts_with("<images><image><image>img</image><id>"), "{long}");
    assert!(long.contains("<snapshot>s</snapshot><snapshot_id>"), "{long}");
    assert_eq!(
        ok(c, &["status", "--format", "xml", "img"]),
        "<status><watchers></watchers></status>\n"
    );
    let du = ok(c, &["du", "--format", "xml", "img"]);
    assert!(du.starts_with("<stats><images><image><name>img</name><id>"), "{du}");
    assert!(du.contains("<total_provisioned_size>"), "{du}");
    ok(c, &["image-meta", "set", "img", "note", "a<b&c"]);
    assert_eq!(
        ok(c, &["image-meta", "list", "--format", "xml", "img"]),
        "<metadatas><note>a&lt;b&amp;c</note></metadatas>\n"
    );
    fails(c, &["ls", "--format", "yaml"], 22, "unsupported output format: yaml");
}
