//! The CLI without a cluster: bad command lines fail before connecting, with Ceph's exit
//! codes; an unreachable monitor fails within `client_mount_timeout` with Ceph's wording (no
//! hang); a missing conf is reported; `cluster-init` writes a usable cluster directory;
//! `install-libs` refuses libraries that are not Quarry's (changing nothing), `which-libs`
//! reads a process's mappings.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Weak messages (issue 13): a known command with missing arguments says what it needs, a
/// typo gets the closest command, and a mistyped option is never answered with a
/// confirmation flag (`--all` used to get "a similar argument exists:
/// '--yes-i-really-mean-it'").
#[test]
fn mistakes_get_messages_that_help() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("ceph.conf");
    std::fs::write(&conf, "[global]\nmon_host = 127.0.0.1:1\n").unwrap();
    let run = |tool: &str, args: &[&str]| {
        run_bounded(tool_cmd(tool, Some(&conf), args), None, COMMAND_TIMEOUT)
    };
    let r = run("rados", &["-p", "rbd", "get", "o2"]);
    assert_eq!(r.code(), 1);
    assert!(r.stderr.contains("usage: rados [-p POOL] get OBJECT OUTFILE"), "{}", r.stderr);
    let r = run("rados", &["lss"]);
    assert!(r.stderr.contains("unknown command 'lss' (did you mean 'ls'?)"), "{}", r.stderr);
    let r = run("rbd", &["lss"]);
    assert_eq!(r.code(), 22);
    assert!(r.stderr.contains("(did you mean 'ls'?)"), "{}", r.stderr);
    let r = run("ceph", &["staus"]);
    assert_eq!(r.code(), 22);
    assert!(r.stderr.contains("(did you mean 'status'?)"), "{}", r.stderr);
    let r = run("ceph", &["osd", "pool", "gett", "rbd", "size"]);
    assert!(r.stderr.contains("(did you mean 'osd pool get'?)"), "{}", r.stderr);
    for (tool, args) in
        [("ceph", &["osd", "pool", "ls", "--all"][..]), ("rados", &["--yes-i-mean", "ls"])]
    {
        let r = run(tool, args);
        assert_eq!(r.code(), 2, "{}", r.stderr);
        assert!(r.stderr.contains("unexpected argument"), "{}", r.stderr);
        assert!(!r.stderr.contains("yes-i-really"), "{tool} {args:?}: {}", r.stderr);
    }
}

#[test]
fn bad_command_lines_fail_before_connecting() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("ceph.conf");
    // A monitor nobody listens on: if the tools tried to connect, these would time out.
    std::fs::write(&conf, "[global]\nmon_host = 127.0.0.1:1\nclient_mount_timeout = 30\n").unwrap();
    let t0 = Instant::now();
    let r =
        run_bounded(tool_cmd("ceph", Some(&conf), &["osd", "frobnicate"]), None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 22, "{}", r.stderr);
    assert!(r.stderr.contains("Error EINVAL: invalid command"), "{}", r.stderr);
    let r =
        run_bounded(tool_cmd("ceph", Some(&conf), &["auth", "get", "qemu"]), None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 22, "{}", r.stderr);
    let r = run_bounded(tool_cmd("rados", Some(&conf), &["ls"]), None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("either pool name or pg id needs to be specified"), "{}", r.stderr);
    let r = run_bounded(
        tool_cmd("rados", Some(&conf), &["-p", "rbd", "bench", "5", "fly"]),
        None,
        COMMAND_TIMEOUT,
    );
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let r = run_bounded(tool_cmd("ceph", Some(&conf), &["--bogus-flag"]), None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(t0.elapsed() < Duration::from_secs(20), "took {:?}", t0.elapsed());
    let v = run_bounded(tool_cmd("ceph", None, &["--version"]), None, COMMAND_TIMEOUT)
        .ok("ceph --version");
    assert!(v.out().starts_with("ceph version "), "{}", v.out());
}

#[test]
fn unreachable_monitor_fails_within_mount_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("ceph.conf");
    let keyring = tmp.path().join("ceph.client.admin.keyring");
    std::fs::write(&keyring, "[client.admin]\n\tkey = AQBvaBFZAAAAABAA9VHgwCg3rWn8fMaX8KL01A==\n")
        .unwrap();
    // Port 1 on loopback: connection refused at once, over and over, until the timeout.
    std::fs::write(
        &conf,
        format!(
            "[global]\nmon_host = 127.0.0.1:1\nkeyring = {}\nclient_mount_timeout = 2\n",
            keyring.display()
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let r = run_bounded(tool_cmd("ceph", Some(&conf), &["-s"]), None, Duration::from_secs(30));
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("[errno 110] RADOS timed out (error connecting to the cluster)"),
        "{}",
        r.stderr
    );
    let r =
        run_bounded(tool_cmd("rados", Some(&conf), &["lspools"]), None, Duration::from_secs(30));
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("couldn't connect to cluster: (110) Connection timed out"),
        "{}",
        r.stderr
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "took {:?}", t0.elapsed());

    // A stopped cluster (nothing listens) with the default 30 s mount timeout: the tool says
    // where it connects after a second and gives up once every monitor refused for 3 s.
    let default_timeout = tmp.path().join("default-timeout.conf");
    let text = std::fs::read_to_string(&conf).unwrap().replace("client_mount_timeout = 2\n", "");
    std::fs::write(&default_timeout, text).unwrap();
    let t0 = Instant::now();
    let r = run_bounded(
        tool_cmd("rados", Some(&default_timeout), &["lspools"]),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}: {}", t0.elapsed(), r.stderr);
    assert!(r.stderr.contains("connecting to monitors at 127.0.0.1:1"), "{}", r.stderr);

    // No keyring for the user: refused before any connection.
    let r = run_bounded(
        tool_cmd("ceph", Some(&conf), &["--id", "nobody", "-s"]),
        None,
        COMMAND_TIMEOUT,
    );
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("RADOS object not found (error connecting to the cluster)"),
        "{}",
        r.stderr
    );
    // A conf named explicitly must exist.
    let r = run_bounded(
        tool_cmd("ceph", None, &["-c", "/nonexistent/ceph.conf", "-s"]),
        None,
        COMMAND_TIMEOUT,
    );
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("/nonexistent/ceph.conf"), "{}", r.stderr);
    assert!(r.stderr.contains("Error initializing cluster client"), "{}", r.stderr);
}

#[test]
fn cluster_init_writes_conf_and_keyrings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut cmd = Command::new(quarry());
    cmd.args(["cluster-init"]).arg(&dir).args(["--osds", "2", "--port", "16789"]);
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT).ok("cluster-init");
    assert!(r.out().contains("--addr 127.0.0.1:16789 --mkfs"), "{}", r.out());
    let conf = std::fs::read_to_string(dir.join("ceph.conf")).unwrap();
    assert!(conf.contains("mon_host = 127.0.0.1:16789"), "{conf}");
    let mon = std::fs::read_to_string(dir.join("mon.keyring")).unwrap();
    for entity in ["[client.admin]", "[osd.0]", "[osd.1]"] {
        assert!(mon.contains(entity), "{entity} missing in\n{mon}");
    }
    assert!(std::fs::read_to_string(dir.join("osd.1/keyring")).unwrap().starts_with("[osd.1]"));
    // A second init on the same directory is refused and changes nothing.
    let mut again = Command::new(quarry());
    again.args(["cluster-init"]).arg(&dir);
    let r = run_bounded(again, None, COMMAND_TIMEOUT);
    assert_ne!(r.code(), 0);
    assert_eq!(std::fs::read_to_string(dir.join("ceph.conf")).unwrap(), conf);
}

/// `quarry install-libs` checks its source before anything else: a library without Quarry's
/// marker, or a missing one, is refused and the system is unchanged. `--status` and
/// `which-libs` need no privileges. (The install itself: crates/quarry-capi/tests/libvirt.rs.)
#[test]
fn install_libs_refuses_other_libraries_and_which_libs_reads_maps() {
    let conf_entry = std::path::Path::new("/etc/ld.so.conf.d/00-quarry.conf");
    let before = conf_entry.exists();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("librados.so.2"), b"\x7fELF not quarry's").unwrap();
    std::fs::write(tmp.path().join("librbd.so.1"), b"\x7fELF not quarry's").unwrap();
    let mut cmd = Command::new(quarry());
    cmd.args(["install-libs", "--from"]).arg(tmp.path());
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("librados.so.2 is not Quarry's librados.so.2"), "{}", r.stderr);
    let mut cmd = Command::new(quarry());
    cmd.args(["install-libs", "--from"]).arg(tmp.path().join("nowhere"));
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("nowhere/librados.so.2: No such file or directory"), "{}", r.stderr);
    assert_eq!(conf_entry.exists(), before, "a refused install changed the system");

    let mut cmd = Command::new(quarry());
    cmd.args(["install-libs", "--status"]);
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT).ok("install-libs --status");
    assert!(r.out().starts_with("install: "), "{}", r.out());
    assert!(r.out().contains("librados.so.2 => "), "{}", r.out());

    // A process without the libraries, and one that is gone.
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let mut cmd = Command::new(quarry());
    cmd.arg("which-libs").arg(child.id().to_string());
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT).ok("which-libs");
    assert_eq!(r.out(), format!("{}: no librados/librbd mapped\n", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    let mut cmd = Command::new(quarry());
    cmd.args(["which-libs", "4194305"]); // above the kernel's pid_max limit: never a process
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot read /proc/4194305/maps"), "{}", r.stderr);
}
