//! A cluster of separate processes on loopback: `quarry cluster-init`, one `quarry mon` and
//! three `quarry osd`, concurrent `rados` clients writing while an OSD and then the monitor
//! are killed (SIGKILL) and restarted, then every object read back byte for byte; every
//! daemon exits 0 on SIGTERM.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn wait_healthy(conf: &Path, osds: u32) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    while Instant::now() < deadline {
        let r = run_bounded(tool_cmd("ceph", Some(conf), &["-s"]), None, COMMAND_TIMEOUT);
        last = format!("{}{}", r.out(), r.stderr);
        if r.status.success() && last.contains(&format!("{osds} up")) && !last.contains(" down") {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("cluster not healthy in time:\n{last}");
}

#[test]
fn separate_daemons_survive_osd_and_monitor_kills() {
    let logs = quarry_testkit::log_guard();
    // OSDs and the monitor are SIGKILLed and restarted: the others notice (openraft's
    // chatter about unreachable peers, the OSDs' monitor sessions).
    logs.allow_raft_churn().expect("no monitor session; retrying");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut init = Command::new(quarry());
    init.args(["cluster-init"]).arg(&dir).args(["--osds", "3"]);
    let r = run_bounded(init, None, COMMAND_TIMEOUT).ok("cluster-init");
    assert!(r.out().contains("quarry mon --data"), "{}", r.out());
    let conf = dir.join("ceph.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let fsid = conf_value(&text, "fsid");
    let mon_addr = conf_value(&text, "mon_host");

    let mut mon_cmd = Command::new(quarry());
    mon_cmd
        .arg("mon")
        .arg("--data")
        .arg(dir.join("mon"))
        .args(["--addr", &mon_addr, "--mkfs", "--fsid", &fsid])
        .arg("--keyring")
        .arg(dir.join("mon.keyring"))
        .args(["--osds", "0,1,2", "--pool", "rbd", "--size", "3"]);
    let mut mon = Daemon::spawn("mon.a", mon_cmd);
    mon.wait_ready();
    let mut osds: Vec<Daemon> = (0..3).map(|id| spawn_osd(&dir, id)).collect();
    wait_healthy(&conf, 3);
    let s = run_bounded(
        tool_cmd("ceph", Some(&conf), &["osd", "pool", "ls", "detail"]),
        None,
        COMMAND_TIMEOUT,
    )
    .ok("pool ls detail")
    .out();
    assert!(s.contains("'rbd' replicated size 3"), "{s}");

    // Concurrent writers keep writing new objects until told to stop; osd.1 is killed
    // (SIGKILL) and restarted while they run.
    let files: PathBuf = tmp.path().join("data");
    std::fs::create_dir(&files).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(Mutex::new(Vec::<String>::new()));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (conf, files, stop, written) =
                (conf.clone(), files.clone(), stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 200 {
                    let name = format!("w{w}-o{i}");
                    let data = pattern(64 * 1024 + (w * 7 + i) as usize * 1000, w * 1000 + i + 1);
                    let path = files.join(&name);
                    std::fs::write(&path, &data).unwrap();
                    let args = ["-p", "rbd", "put", &name, path.to_str().unwrap()];
                    run_bounded(tool_cmd("rados", Some(&conf), &args), None, COMMAND_TIMEOUT)
                        .ok("put during kill");
                    written.lock().unwrap().push(name);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let before_kill = written.lock().unwrap().len();
    osds[1].kill();
    std::thread::sleep(Duration::from_secs(3));
    let while_down = written.lock().unwrap().len() - before_kill;
    osds[1] = spawn_osd(&dir, 1);
    std::thread::sleep(Duration::from_millis(1000));
    // Then the monitor: SIGKILL, down for 2 s (new clients wait to connect; OSDs keep
    // serving), restarted on its data directory without --mkfs.
    let before_mon_kill = written.lock().unwrap().len();
    mon.kill();
    std::thread::sleep(Duration::from_secs(2));
    let mut mon_cmd = Command::new(quarry());
    mon_cmd.arg("mon").arg("--data").arg(dir.join("mon")).args(["--addr", &mon_addr]);
    mon = Daemon::spawn("mon.a", mon_cmd);
    mon.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(60);
    while written.lock().unwrap().len() < before_mon_kill + 8 {
        assert!(Instant::now() < deadline, "no writes after the monitor restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread");
    }
    let names = written.lock().unwrap().clone();
    assert!(before_kill > 0, "no write finished before the kill");
    eprintln!(
        "{} objects written, {before_kill} before the kill, {while_down} while osd.1 was down",
        names.len()
    );
    wait_healthy(&conf, 3);

    // Every object back, byte for byte, by concurrent readers.
    let chunks: Vec<Vec<String>> =
        names.chunks(names.len().div_ceil(4)).map(|c| c.to_vec()).collect();
    let readers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (conf, files) = (conf.clone(), files.clone());
            std::thread::spawn(move || {
                for name in chunk {
                    let want = std::fs::read(files.join(&name)).unwrap();
                    let args = ["-p", "rbd", "get", &name, "-"];
                    let got =
                        run_bounded(tool_cmd("rados", Some(&conf), &args), None, COMMAND_TIMEOUT)
                            .ok("get after restart");
                    assert!(got.stdout == want, "{name} differs after the OSD restart");
                }
            })
        })
        .collect();
    for r in readers {
        r.join().expect("reader thread");
    }
    let ls =
        run_bounded(tool_cmd("rados", Some(&conf), &["-p", "rbd", "ls"]), None, COMMAND_TIMEOUT)
            .ok("ls")
            .out();
    let mut listed: Vec<&str> = ls.lines().collect();
    listed.sort();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(listed, want);

    for o in osds.iter_mut() {
        let status = o.terminate();
        assert!(status.success(), "{} exit {status}\n{}", o.name, o.logs());
    }
    let status = mon.terminate();
    assert!(status.success(), "mon exit {status}\n{}", mon.logs());
}
