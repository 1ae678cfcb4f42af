//! `rados watch|notify|listwatchers` and `ceph osd blocklist add|rm|ls` as processes against
//! a `quarry up` cluster, with Ceph's output; a SIGKILLed `rados watch` stays listed until its
//! watch times out, and a notify meanwhile names it as timed out.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::workload::{spawn_watcher, wait_lines};
use common::*;

fn rados(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("rados", Some(conf), args), None, COMMAND_TIMEOUT)
}

fn ceph(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("ceph", Some(conf), args), None, COMMAND_TIMEOUT)
}

/// `(address, gid, cookie)` of each `watcher=ADDR client.GID cookie=C` line.
fn watchers(conf: &Path, obj: &str) -> Vec<(String, u64, u64)> {
    let out = rados(conf, &["-p", "rbd", "listwatchers", obj]).ok("listwatchers").stdout;
    let text = String::from_utf8(out).unwrap();
    text.lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w.len(), 3, "{l}");
            let addr = w[0].strip_prefix("watcher=").unwrap().to_string();
            let gid: u64 = w[1].strip_prefix("client.").unwrap().parse().unwrap();
            let cookie: u64 = w[2].strip_prefix("cookie=").unwrap().parse().unwrap();
            assert_eq!(addr, format!("127.0.0.1:0/{gid}"), "Ceph's address form: {l}");
            (addr, gid, cookie)
        })
        .collect()
}

/// Goal: the `rados` watch commands work between processes with Ceph's output, and a watcher
/// killed with SIGKILL (its connection closes, no more pings) is listed until its timeout
/// (`osd_client_watch_timeout = 3` in its ceph.conf), then disappears; a notify sent while
/// it is still listed completes naming it (`timeout client.G cookie C`, ETIMEDOUT, exit 1).
#[test]
fn rados_watch_notify_listwatchers_and_a_killed_watcher_times_out() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let base = dir.join("ceph.conf");
    let conf = tmp.path().join("watch.conf");
    let text = std::fs::read_to_string(&base).unwrap();
    std::fs::write(&conf, format!("{text}\n[client.admin]\nosd_client_watch_timeout = 3\n"))
        .unwrap();
    let file = tmp.path().join("payload");
    std::fs::write(&file, b"header").unwrap();
    rados(&conf, &["-p", "rbd", "put", "hdr", file.to_str().unwrap()]).ok("put");
    let missing = rados(&conf, &["-p", "rbd", "listwatchers", "nothing"]);
    assert_eq!(missing.code(), 1);
    assert!(missing.stderr.contains("(2) No such file or directory"), "{}", missing.stderr);

    let fifo = tmp.path().join("stdin");
    run_bounded(
        {
            let mut c = Command::new("mkfifo");
            c.arg(&fifo);
            c
        },
        None,
        COMMAND_TIMEOUT,
    )
    .ok("mkfifo");
    // Held open for reading and writing: the watchers' stdin never reaches EOF.
    let _hold = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let stays = spawn_watcher(&conf, &fifo, "hdr", "watcher 1");
    let first = watchers(&conf, "hdr");
    assert_eq!(first.len(), 1, "{first:?}");
    let mut victim = spawn_watcher(&conf, &fifo, "hdr", "watcher 2");
    let listed = watchers(&conf, "hdr");
    assert_eq!(listed.len(), 2, "{listed:?}");
    let victim_gid = listed.iter().find(|w| **w != first[0]).map(|w| (w.1, w.2)).unwrap();

    let run = rados(&conf, &["-p", "rbd", "notify", "hdr", "hello"]).ok("notify");
    let out = String::from_utf8(run.stdout).unwrap();
    let mut replies: Vec<(u64, u64)> = out
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!((w[0], w[2], w[4], w[5], w[6]), ("reply", "cookie", ":", "0", "bytes"));
            (w[1].strip_prefix("client.").unwrap().parse().unwrap(), w[3].parse().unwrap())
        })
        .collect();
    replies.sort();
    let mut want: Vec<(u64, u64)> = listed.iter().map(|w| (w.1, w.2)).collect();
    want.sort();
    assert_eq!(replies, want, "{out}");
    for d in [&stays, &victim] {
        wait_lines(d, "NOTIFY cookie ", 1);
        let lines = d.stdout.lock().unwrap().clone();
        let at = lines.iter().position(|l| l.starts_with("NOTIFY cookie ")).unwrap();
        assert!(lines[at].contains(" notify_id ") && lines[at].contains(" from "), "{lines:?}");
        // Ceph's tool sends the message length-prefixed; the watcher hexdumps it.
        assert_eq!(
            lines[at + 1],
            "00000000  05 00 00 00 68 65 6c 6c  6f                       |....hello|"
        );
        assert_eq!(lines[at + 2], "00000009");
    }

    victim.kill();
    let killed = Instant::now();
    // Still listed right after the kill: its watch lives until the timeout.
    assert!(watchers(&conf, "hdr").iter().any(|w| (w.1, w.2) == victim_gid));
    let run = rados(&conf, &["-p", "rbd", "notify", "hdr", "again"]);
    assert_eq!(run.code(), 1, "a notify a watcher missed fails: {}", run.stderr);
    assert!(run.stderr.contains("(110) Connection timed out"), "{}", run.stderr);
    let out = String::from_utf8(run.stdout).unwrap();
    let timeout_line = format!("timeout client.{} cookie {}", victim_gid.0, victim_gid.1);
    assert!(out.lines().any(|l| l == timeout_line), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("reply client.")).count(), 1, "{out}");

    let deadline = Instant::now() + Duration::from_secs(20);
    while watchers(&conf, "hdr").iter().any(|w| (w.1, w.2) == victim_gid) {
        assert!(Instant::now() < deadline, "the killed watcher never timed out");
        std::thread::sleep(Duration::from_millis(200));
    }
    let gone_after = killed.elapsed();
    assert!(gone_after >= Duration::from_secs(2), "gone after {gone_after:?}: before its timeout");
    assert_eq!(watchers(&conf, "hdr").len(), 1);
    drop(stays);
}

/// Goal: `ceph osd blocklist add|rm|ls` take instances and addresses and answer as Ceph:
/// `blocklisting ADDR until STAMP (N sec)`, `un-blocklisting ADDR`, `ls` lines `ADDR STAMP`
/// with `listed N entries` on stderr; a blocklisted instance's `rados` op fails with
/// `(108) Cannot send after transport endpoint shutdown`.
#[test]
fn ceph_osd_blocklist_add_rm_ls() {
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");

    let add = ceph(&conf, &["osd", "blocklist", "add", "10.1.2.3:0/77", "600"]).ok("add");
    let status = add.stderr.trim();
    assert!(status.starts_with("blocklisting 10.1.2.3:0/77 until 20"), "{status}");
    assert!(status.ends_with("+0000 (600 sec)"), "{status}");
    ceph(&conf, &["osd", "blocklist", "add", "client.admin@999999"]).ok("add instance");
    let ls = ceph(&conf, &["osd", "blocklist", "ls"]).ok("ls");
    let out = String::from_utf8(ls.stdout).unwrap();
    let keys: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(keys, vec!["10.1.2.3:0/77", "client.admin@999999"], "{out}");
    assert!(out.lines().all(|l| l.split(' ').nth(1).is_some_and(|s| s.ends_with("+0000"))));
    assert_eq!(ls.stderr.trim(), "listed 2 entries");
    let rm = ceph(&conf, &["osd", "blocklist", "rm", "10.1.2.3:0/77"]).ok("rm");
    assert_eq!(rm.stderr.trim(), "un-blocklisting 10.1.2.3:0/77");
    let again = ceph(&conf, &["osd", "blocklist", "rm", "10.1.2.3:0/77"]).ok("rm again");
    assert_eq!(again.stderr.trim(), "10.1.2.3:0/77 isn't blocklisted");
    let bad = ceph(&conf, &["osd", "blocklist", "add", "garbage"]);
    assert_ne!(bad.code(), 0);

    // Every client from 127.0.0.1: the next rados op is fenced.
    ceph(&conf, &["osd", "blocklist", "add", "127.0.0.1"]).ok("add ip");
    let file = tmp.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let put = rados(&conf, &["-p", "rbd", "put", "obj", file.to_str().unwrap()]);
    assert_eq!(put.code(), 1);
    assert!(
        put.stderr.contains("(108) Cannot send after transport endpoint shutdown"),
        "{}",
        put.stderr
    );
    ceph(&conf, &["osd", "blocklist", "rm", "127.0.0.1:0/0"]).ok("rm ip");
    rados(&conf, &["-p", "rbd", "put", "obj", file.to_str().unwrap()]).ok("put after rm");
}
