//! Pool snapshots from the command line, against a real `quarry up` cluster: `rados mksnap |
//! lssnap | rmsnap | rollback | -s SNAP get` and `ceph osd pool mksnap | rmsnap`, with Ceph's
//! output lines and errors.

mod common;

use std::path::Path;

use common::*;

fn run(tool: &str, conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd(tool, Some(conf), args), None, COMMAND_TIMEOUT)
}

fn run_in(tool: &str, conf: &Path, args: &[&str], input: &[u8]) -> Run {
    run_bounded(tool_cmd(tool, Some(conf), args), Some(input), COMMAND_TIMEOUT)
}

/// Runs and expects success; returns stdout.
fn ok(tool: &str, conf: &Path, args: &[&str]) -> String {
    let r = run(tool, conf, args);
    assert_eq!(r.code(), 0, "{tool} {}: {}", args.join(" "), r.stderr);
    r.out()
}

/// One `lssnap` line: `ID\tNAME\tYYYY.MM.DD HH:MM:SS`.
fn is_snap_line(line: &str, id: &str, name: &str) -> bool {
    let parts: Vec<&str> = line.split('\t').collect();
    let stamp_ok = parts.get(2).is_some_and(|s| {
        s.len() == 19
            && s.chars().enumerate().all(|(i, c)| match i {
                4 | 7 => c == '.',
                10 => c == ' ',
                13 | 16 => c == ':',
                _ => c.is_ascii_digit(),
            })
    });
    parts.len() == 3 && parts[0] == id && parts[1] == name && stamp_ok
}

#[test]
fn rados_and_ceph_pool_snapshot_commands() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let c = conf.as_path();
    ok("ceph", c, &["osd", "pool", "create", "data", "8"]);
    assert_eq!(run_in("rados", c, &["-p", "data", "put", "obj", "-"], b"one").code(), 0);

    assert_eq!(ok("rados", c, &["-p", "data", "mksnap", "s1"]), "created pool data snap s1\n");
    let r = run("rados", c, &["-p", "data", "mksnap", "s1"]);
    assert_eq!(r.code(), 1);
    assert_eq!(r.stderr.trim(), "error creating pool data snapshot s1: (17) File exists");
    assert_eq!(run_in("rados", c, &["-p", "data", "put", "obj", "-"], b"two").code(), 0);

    assert_eq!(
        ok("rados", c, &["-p", "data", "-s", "s1", "get", "obj", "-"]),
        "selected snap 1 's1'\none"
    );
    assert_eq!(ok("rados", c, &["-p", "data", "get", "obj", "-"]), "two");
    let r = run("rados", c, &["-p", "data", "-s", "nope", "get", "obj", "-"]);
    assert_eq!(r.code(), 1);
    assert_eq!(r.stderr.trim(), "error looking up snap 'nope': (2) No such file or directory");

    let listed = ok("rados", c, &["-p", "data", "lssnap"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(is_snap_line(lines[0], "1", "s1"), "{listed}");
    assert_eq!(lines[1], "1 snaps");

    assert_eq!(
        ok("rados", c, &["-p", "data", "rollback", "obj", "s1"]),
        "rolled back pool data to snapshot s1\n"
    );
    assert_eq!(ok("rados", c, &["-p", "data", "get", "obj", "-"]), "one");
    let r = run("rados", c, &["-p", "data", "rollback", "obj", "nope"]);
    assert_eq!(r.code(), 1);
    assert_eq!(
        r.stderr.trim(),
        "error rolling back pool data to snapshot nope: (2) No such file or directory"
    );

    // The monitor commands: Ceph's status lines, idempotent.
    let r = run("ceph", c, &["osd", "pool", "mksnap", "data", "s2"]);
    assert_eq!((r.code(), r.stderr.trim()), (0, "created pool data snap s2"));
    let r = run("ceph", c, &["osd", "pool", "mksnap", "data", "s2"]);
    assert_eq!((r.code(), r.stderr.trim()), (0, "pool data snap s2 already exists"));
    let listed = ok("rados", c, &["-p", "data", "lssnap"]);
    assert!(listed.lines().any(|l| is_snap_line(l, "2", "s2")), "{listed}");
    assert!(listed.ends_with("2 snaps\n"), "{listed}");
    let r = run("ceph", c, &["osd", "pool", "rmsnap", "data", "s2"]);
    assert_eq!((r.code(), r.stderr.trim()), (0, "removed pool data snap s2"));
    let r = run("ceph", c, &["osd", "pool", "rmsnap", "data", "s2"]);
    assert_eq!((r.code(), r.stderr.trim()), (0, "pool data snap s2 does not exist"));
    let r = run("ceph", c, &["osd", "pool", "mksnap", "nopool", "x"]);
    assert_eq!(r.code(), 2, "{}", r.stderr);

    assert_eq!(ok("rados", c, &["-p", "data", "rmsnap", "s1"]), "removed pool data snap s1\n");
    let r = run("rados", c, &["-p", "data", "rmsnap", "s1"]);
    assert_eq!(r.code(), 1);
    assert_eq!(
        r.stderr.trim(),
        "error removing pool data snapshot s1: (2) No such file or directory"
    );
    assert_eq!(ok("rados", c, &["-p", "data", "lssnap"]), "0 snaps\n");
    assert_eq!(ok("rados", c, &["-p", "data", "get", "obj", "-"]), "one");
}
