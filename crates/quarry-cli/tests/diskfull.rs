//! A full disk, end to end (issue 8 c, h): `quarry up` on a small tmpfs of its own, filled
//! with `rados put` until refused. Goal: the refusal is a clean ENOSPC `(28) No space left
//! on device` and never an abort or an EIO; every acknowledged object reads back intact;
//! `ceph health detail` shows OSD_FULL with Ceph's texts; `quarry up` restarts on a disk
//! filled to the last byte (it needs no free space to start); removes work at full, the
//! usage `ceph -s` reports drops, health recovers and writes resume; a restart on the
//! nearly full disk (which compacts the store) keeps every acknowledged object.
//!
//! Method: the test mounts a 192 MiB tmpfs (root only; it skips with a message otherwise)
//! and unmounts it at the end. Teeth: with `QUARRY_TEST_DISABLE_FULL_CHECK=1` in the
//! environment (inherited by `quarry up`; the OSD then admits every write) the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: usize) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}M"), "tmpfs"])
            .arg(&path)
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { path, _parent: parent }),
            other => {
                eprintln!("SKIPPED: cannot mount a tmpfs (needs root): {other:?}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn ceph(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("ceph", Some(conf), args), None, COMMAND_TIMEOUT)
}

fn rados(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("rados", Some(conf), args), None, COMMAND_TIMEOUT)
}

/// `rados put NAME` of `data` (through a file: the tool reads it).
fn put(conf: &Path, scratch: &Path, name: &str, data: &[u8]) -> Run {
    let file = scratch.join("input");
    std::fs::write(&file, data).unwrap();
    rados(conf, &["-p", "rbd", "put", name, file.to_str().unwrap()])
}

fn get(conf: &Path, name: &str) -> Run {
    rados(conf, &["-p", "rbd", "get", name, "-"])
}

fn object(i: usize) -> Vec<u8> {
    pattern(MIB, i as u64 + 1)
}

/// Waits until `ceph health detail` satisfies `pred`; returns its output.
fn wait_health(conf: &Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ceph(conf, &["health", "detail"]).ok("health detail").out();
        if pred(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "health never became {what}: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The "used" figure of `ceph -s` in MiB (`usage:   123 MiB used, ...`).
fn reported_used_mib(conf: &Path) -> f64 {
    let s = ceph(conf, &["-s"]).ok("ceph -s").out();
    let line = s.lines().find(|l| l.contains(" used, ")).unwrap_or_else(|| panic!("{s}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "used,").unwrap();
    let value: f64 = words[at - 2].parse().unwrap();
    match words[at - 1] {
        "KiB" => value / 1024.0,
        "MiB" => value,
        "GiB" => value * 1024.0,
        unit => panic!("unit {unit} in {line}"),
    }
}

/// Puts objects until the OSD refuses one (after a pause, twice in a row: a refusal can
/// pass once the WAL behind a checkpoint is deleted). Returns the acknowledged indexes.
/// Refused puts are final (they never reached the log): their objects must not exist.
fn fill(conf: &Path, scratch: &Path, from: usize) -> Vec<usize> {
    let mut acknowledged = Vec::new();
    let mut refusals = 0;
    for i in from..from + 400 {
        let r = put(conf, scratch, &format!("obj{i}"), &object(i));
        if r.status.success() {
            acknowledged.push(i);
            refusals = 0;
            continue;
        }
        assert!(
            r.stderr.contains("(28) No space left on device"),
            "a put on a full disk failed otherwise than ENOSPC: {}",
            r.stderr
        );
        let absent = get(conf, &format!("obj{i}"));
        assert!(
            absent.stderr.contains("(2) No such file or directory"),
            "refused obj{i}: {}",
            absent.stderr
        );
        refusals += 1;
        if refusals == 3 {
            return acknowledged;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    panic!("the disk never filled");
}

fn check_objects(conf: &Path, indexes: &[usize]) {
    for &i in indexes {
        let r = get(conf, &format!("obj{i}"));
        assert!(r.status.success(), "acknowledged obj{i} unreadable: {}", r.stderr);
        assert!(r.stdout == object(i), "acknowledged obj{i} has other content");
    }
}

#[test]
fn a_full_disk_refuses_writes_cleanly_and_recovers_after_removes() {
    let Some(disk) = Tmpfs::mount(192) else { return };
    let logs = quarry_testkit::log_guard();
    // Restarting on a disk filled to the last byte: the WAL starts its segment from its
    // reserve, and the OSD may not record its address (both said once per start).
    logs.allow("WAL segment start refused for space: using the space reserve");
    logs.allow("cannot record the listening address");
    let scratch = tempfile::tempdir().unwrap();
    let dir = disk.path.join("cluster");
    let conf = dir.join("ceph.conf");
    let mut cluster = up_default_ratios(&dir);

    let mut acknowledged = fill(&conf, scratch.path(), 0);
    assert!(acknowledged.len() > 100, "only {} objects fit", acknowledged.len());
    let health = wait_health(&conf, "OSD_FULL", |h| h.starts_with("HEALTH_ERR"));
    assert!(health.contains("[ERR] OSD_FULL: 1 full osd(s)\n    osd.0 is full\n"), "{health}");
    let status = ceph(&conf, &["-s"]).ok("ceph -s").out();
    assert!(status.contains("health: HEALTH_ERR") && status.contains("1 full osd(s)"), "{status}");
    check_objects(&conf, &acknowledged);

    // Restart once while full, with the disk filled to the last byte by someone else.
    assert!(cluster.terminate().success(), "quarry up did not stop cleanly");
    let filler = disk.path.join("filler");
    fill_to_the_last_byte(&filler);
    let mut cluster = up_default_ratios(&dir);
    check_objects(&conf, &acknowledged[..10]);
    let refused = put(&conf, scratch.path(), "late", &object(9999));
    assert!(refused.stderr.contains("(28) No space left on device"), "{}", refused.stderr);
    std::fs::remove_file(&filler).unwrap();

    // Removes work at full; the reported usage drops and the OSD leaves the full state.
    let before = reported_used_mib(&conf);
    let removed: Vec<usize> = acknowledged.drain(..60).collect();
    for &i in &removed {
        rados(&conf, &["-p", "rbd", "rm", &format!("obj{i}")]).ok("rm at full");
    }
    // The OSD measures the store's free pages every 2 to 10 s (longer when the walk is slow).
    // 60 MiB were removed; redb makes the pages of removed objects reusable in steps (after
    // checkpoints, once no reader holds them): 29 to 36 MiB came back within seconds in the
    // runs measured (more under less load). What must hold: usage drops by a clear margin
    // and the OSD leaves the full state.
    let deadline = Instant::now() + Duration::from_secs(90);
    while reported_used_mib(&conf) > before - 16.0 {
        assert!(Instant::now() < deadline, "usage stayed at {}", reported_used_mib(&conf));
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_health(&conf, "not full", |h| !h.contains("OSD_FULL"));

    // Writes resume, in the space the removed objects left. redb reuses its freed pages but
    // never shrinks its file, so the disk itself stays near the failsafe ratio and the log's
    // copy of recent writes may make a write wait a moment: a refusal is retried. (Ten
    // objects: under a loaded machine fewer freed pages are reusable yet — issue 8 — and 20
    // ran into the failsafe once in a full run; under a full run's load one write waited
    // more than 20 s once, so each may wait up to 45.)
    for i in 1000..1010 {
        let mut tries = 0;
        loop {
            let r = put(&conf, scratch.path(), &format!("obj{i}"), &object(i));
            if r.status.success() {
                break;
            }
            assert!(r.stderr.contains("(28) No space left on device"), "{}", r.stderr);
            tries += 1;
            assert!(tries < 45, "writes did not resume after removes: {}", r.stderr);
            std::thread::sleep(Duration::from_secs(1));
        }
        acknowledged.push(i);
    }
    check_objects(&conf, &acknowledged);
    for &i in &removed[..5] {
        let r = get(&conf, &format!("obj{i}"));
        assert!(r.stderr.contains("(2) No such file or directory"), "{}", r.stderr);
    }

    // redb reuses its free pages but never shrinks its file: a restart on the nearly full
    // disk compacts the store (measured here: redb moved too little to shrink the file, see
    // the store's space test for a case where it gives back most of it). Whatever it does,
    // every acknowledged object is intact after it, and the disk did not fill up.
    assert!(cluster.terminate().success(), "quarry up did not stop cleanly");
    let raw_before = fs_used(&disk.path);
    let mut cluster = up_default_ratios(&dir);
    let raw_after = fs_used(&disk.path);
    eprintln!("disk used before/after the restart: {raw_before} / {raw_after} bytes");
    assert!(raw_after < raw_before + (4 << 20), "{raw_before} -> {raw_after} bytes");
    check_objects(&conf, &acknowledged);
    assert!(cluster.terminate().success(), "quarry up did not stop cleanly");
    drop(cluster);
    logs.finish();
}

/// Bytes used on the file system holding `path` (`df`).
fn fs_used(path: &Path) -> u64 {
    let out = Command::new("df").args(["-B1", "--output=used"]).arg(path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("{text}"))
}

/// Writes zeros to `path` until the file system refuses (ENOSPC).
fn fill_to_the_last_byte(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        if let Err(e) = file.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(28), "{e}");
            break;
        }
    }
    // Whatever did not fit in a whole chunk.
    let one = [0u8; 1];
    while file.write_all(&one).is_ok() {}
}
