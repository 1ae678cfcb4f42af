//! `quarry nbd serve` against real NBD clients on loopback: qemu-img (info, convert of a
//! qcow2 with data and holes, compare, map), qemu-io (patterns, discard, write-zeroes), libnbd's
//! nbdinfo (the map of holes and data the object map gives) and nbdcopy (a byte-for-byte
//! round trip), fio's nbd engine with crc32c verification; a snapshot exported read-only;
//! clients breaking the protocol are dropped while the server keeps serving; flushed
//! writes survive a SIGKILL of the server.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use common::*;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn rbd(conf: &Path, args: &[&str]) -> Run {
    run_bounded(tool_cmd("rbd", Some(conf), args), None, COMMAND_TIMEOUT)
}

/// Runs an external client (bounded) and expects success; returns stdout.
fn client(program: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 0, "{program} {}: {}\n{}", args.join(" "), r.stderr, r.out());
    r.out()
}

/// Starts `quarry nbd serve --port 0 ARGS…`; returns the daemon and its port.
fn serve(conf: &Path, args: &[&str]) -> (Daemon, u16) {
    let mut cmd = Command::new(quarry());
    cmd.args(["nbd", "serve", "--port", "0"]).args(args).env("CEPH_CONF", conf);
    let mut daemon = Daemon::spawn("nbd", cmd);
    daemon.wait_ready();
    let line =
        daemon.stdout.lock().unwrap().iter().find(|l| l.starts_with("nbd: serving")).cloned();
    let line = line.expect("the serving line");
    let port = line.rsplit(':').next().unwrap().parse().expect("a port");
    (daemon, port)
}

#[test]
fn real_nbd_clients_read_write_and_map_images() {
    if !(have("qemu-img") && have("qemu-io") && have("nbdinfo") && have("nbdcopy") && have("fio")) {
        eprintln!(
            "SKIPPED: qemu-utils, libnbd-bin and fio are needed (scripts/setup.sh installs them)"
        );
        return;
    }
    let _logs = quarry_testkit::log_guard();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    let c = conf.as_path();
    rbd(c, &["create", "--size", "64M", "disk"]).ok("create");
    rbd(c, &["create", "--size", "64M", "fio"]).ok("create");
    let (mut server, port) = serve(c, &["rbd/disk", "fio"]);
    let uri = format!("nbd://127.0.0.1:{port}/rbd/disk");

    // qemu-img sees the export; a qcow2 with data and holes converts into it and compares.
    let info = client("qemu-img", &["info", "-f", "raw", &uri]);
    assert!(info.contains("virtual size: 64 MiB (67108864 bytes)"), "{info}");
    let qcow = tmp.path().join("x.qcow2");
    let qcow_s = qcow.to_str().unwrap();
    client("qemu-img", &["create", "-f", "qcow2", qcow_s, "64M"]);
    client(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xa5 40M 512k", qcow_s],
    );
    client("qemu-img", &["convert", "-n", "-f", "qcow2", "-O", "raw", qcow_s, &uri]);
    client("qemu-img", &["compare", "-f", "qcow2", "-F", "raw", qcow_s, &uri]);
    // The map: data only where the qcow2 had it (whole 4 MiB objects), holes elsewhere.
    let map = client("nbdinfo", &["--map", &uri]);
    let rows: Vec<Vec<String>> =
        map.lines().map(|l| l.split_whitespace().take(3).map(str::to_string).collect()).collect();
    let data: Vec<(u64, u64)> = rows
        .iter()
        .filter(|r| r[2] == "0")
        .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(data, [(0, 4 << 20), (40 << 20, 4 << 20)], "{map}");
    let qmap = client("qemu-img", &["map", "-f", "raw", "--output=json", &uri]);
    assert!(
        qmap.contains("\"start\": 4194304, \"length\": 37748736, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false"),
        "{qmap}"
    );

    // qemu-io: patterns, discard, write-zeroes, FUA.
    client(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x11 -f 8M 64k",
            "-c",
            "read -P 0x11 8M 64k",
            "-c",
            "discard 8M 32k",
            "-c",
            "read -P 0 8M 32k",
            "-c",
            "read -P 0x11 8421376 32k",
            "-c",
            "write -z 8M 64k",
            "-c",
            "read -P 0 8M 64k",
            &uri,
        ],
    );

    // nbdcopy out of the export equals rbd export, byte for byte.
    let copied = tmp.path().join("copied.raw");
    client("nbdcopy", &[&uri, copied.to_str().unwrap()]);
    let exported = tmp.path().join("exported.raw");
    rbd(c, &["export", "--no-progress", "disk", exported.to_str().unwrap()]).ok("export");
    assert!(
        std::fs::read(&copied).unwrap() == std::fs::read(&exported).unwrap(),
        "nbdcopy and rbd export differ"
    );

    // fio's nbd engine, random writes verified with crc32c (a second export of the server).
    let fio = client(
        "fio",
        &[
            "--name=v",
            "--ioengine=nbd",
            &format!("--uri=nbd://127.0.0.1:{port}/fio"),
            "--rw=randwrite",
            "--bs=4k",
            "--size=16M",
            "--iodepth=8",
            "--verify=crc32c",
            "--verify_state_save=0",
            "--verify_fatal=1",
            "--output-format=json",
        ],
    );
    // (fio may print notes before its JSON.)
    let json: serde_json::Value = serde_json::from_str(&fio[fio.find('{').unwrap_or(0)..]).unwrap();
    assert_eq!(json["jobs"][0]["error"], 0, "{fio}");

    // Clients that break the protocol are dropped; the server keeps serving.
    for garbage in [&b"hello, not nbd"[..], &[0u8; 4][..], &[0xffu8; 64][..]] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], b"NBDMAGIC");
        let _ = s.write_all(garbage);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // closed by the server (or an option error)
    }
    let info = client("nbdinfo", &["--size", &uri]);
    assert_eq!(info.trim(), "67108864");

    // Flushed writes survive a SIGKILL of the server.
    client("qemu-io", &["-f", "raw", "-c", "write -P 0x77 20M 1M", "-c", "flush", &uri]);
    server.kill();
    let after = tmp.path().join("after.raw");
    rbd(c, &["export", "--no-progress", "disk", after.to_str().unwrap()]).ok("export");
    let bytes = std::fs::read(&after).unwrap();
    assert!(bytes[20 << 20..21 << 20].iter().all(|&b| b == 0x77), "flushed data lost");

    // A snapshot is exported read-only: reads work, writes are refused.
    rbd(c, &["snap", "create", "disk@s1"]).ok("snap create");
    let (_snap_server, port) = serve(c, &["disk@s1"]);
    let snap_uri = format!("nbd://127.0.0.1:{port}/disk@s1");
    client("qemu-io", &["-f", "raw", "-r", "-c", "read -P 0x77 20M 1M", &snap_uri]);
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw", "-c", "write -P 1 0 4k", &snap_uri]);
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT);
    let said = format!("{}{}", r.out(), r.stderr);
    assert!(
        said.contains("Operation not permitted")
            || said.contains("Permission denied")
            || said.contains("read-only")
            || said.contains("Read-only"),
        "{said}"
    );
}
