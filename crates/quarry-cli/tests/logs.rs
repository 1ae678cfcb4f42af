//! Logging of the real binary, without `RUST_LOG`: Ceph's `debug_<subsystem>` levels,
//! `log_file`, `log_to_stderr`, the default log file under a daemon's data directory, stderr
//! keeping warnings only and never colour escapes when piped, no openraft info lines by
//! default; the conf warning for a misspelt key from the daemons and the tools, the tools'
//! `--debug-<subsystem>`; `quarry up`'s last line saying why it stopped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `quarry cluster-init DIR --osds 1`: DIR/ceph.conf (last section [global]), DIR/mon.keyring,
/// DIR/osd.0/keyring.
fn cluster_init(dir: &Path) -> PathBuf {
    let mut init = Command::new(quarry());
    init.arg("cluster-init").arg(dir).args(["--osds", "1"]);
    run_bounded(init, None, COMMAND_TIMEOUT).ok("cluster-init");
    dir.join("ceph.conf")
}

fn append(conf: &Path, text: &str) {
    let mut all = std::fs::read_to_string(conf).unwrap();
    all.push_str(text);
    std::fs::write(conf, all).unwrap();
}

fn line_of(conf: &Path, line: &str) -> usize {
    let text = std::fs::read_to_string(conf).unwrap();
    1 + text.lines().position(|l| l.trim() == line).expect("line in conf")
}

/// Lines of `text` that are INFO lines of `target` (`… INFO openraft::core: …`).
fn info_lines<'a>(text: &'a str, target: &str) -> Vec<&'a str> {
    let prefix = format!("INFO {target}");
    text.lines()
        .filter(|l| l.split_once("Z ").is_some_and(|(_, r)| r.trim_start().starts_with(&prefix)))
        .collect()
}

fn stderr_of(d: &Daemon) -> String {
    d.stderr.lock().unwrap().clone()
}

/// Waits (bounded) until `file` contains `needle`; returns its text.
fn wait_for_file(file: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const MISSPELT: &str = "mon_hots = 127.0.0.1";
const MISSPELT_WARNING: &str = "unknown option 'mon_hots' in [global] (did you mean 'mon_host'?)";

#[test]
fn daemons_log_to_their_files_at_ceph_levels_and_keep_stderr_for_warnings() {
    let logs = quarry_testkit::log_guard();
    logs.expect(MISSPELT_WARNING);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let conf = cluster_init(&dir);
    let mon_log = dir.join("mon-log").join("ceph-mon.a.log");
    // The OSD: debug_osd 0/0, everything else at its default, the default log file.
    // The monitor: its own log file ($name expanded), Raft at info, stderr gets everything.
    append(
        &conf,
        &format!(
            "{MISSPELT}\ndebug_osd = 0/0\n[mon]\nlog_file = {}/mon-log/$cluster-$name.log\n\
             debug_paxos = 1/5\nlog_to_stderr = true\n",
            dir.display()
        ),
    );
    let misspelt_line = line_of(&conf, MISSPELT);

    let mut cmd = Command::new(quarry());
    cmd.arg("mon").arg("--data").arg(dir.join("mon")).arg("-c").arg(&conf);
    cmd.args(["--mkfs", "--pool", "rbd"]).arg("--keyring").arg(dir.join("mon.keyring"));
    let mut mon = Daemon::spawn_without_rust_log("mon.a", cmd);
    mon.wait_ready();
    let mut cmd = Command::new(quarry());
    cmd.args(["osd", "--id", "0", "--data"]).arg(dir.join("osd.0")).arg("-c").arg(&conf);
    let mut osd = Daemon::spawn_without_rust_log("osd.0", cmd);
    osd.wait_ready();
    let put = tool_cmd("rados", Some(&conf), &["-p", "rbd", "put", "obj", "/dev/null"]);
    run_bounded(put, None, COMMAND_TIMEOUT).ok("rados put");
    let osd_log = dir.join("osd.0").join("log").join("quarry-osd.0.log");
    let osd_text = wait_for_file(&osd_log, "osd.0 serving");
    assert!(osd.terminate().success(), "{}", osd.logs());
    assert!(mon.terminate().success(), "{}", mon.logs());

    // The OSD's file: the binary's info lines, no OSD or Raft-library info lines.
    let osd_text = std::fs::read_to_string(&osd_log).unwrap_or(osd_text);
    assert!(osd_text.contains("osd.0 serving"), "{osd_text}");
    assert!(osd_text.contains("SIGTERM: stopping osd.0"), "{osd_text}");
    assert!(osd_text.contains("osd.0 stopped (SIGTERM received)"), "{osd_text}");
    assert!(info_lines(&osd_text, "openraft").is_empty(), "openraft is warn:\n{osd_text}");
    assert!(info_lines(&osd_text, "quarry_osd").is_empty(), "debug_osd = 0/0:\n{osd_text}");
    // Its stderr: warnings only (the conf's), no colours.
    let osd_err = stderr_of(&osd);
    let want = format!("{}: line {misspelt_line}: {MISSPELT_WARNING}", conf.display());
    let lines: Vec<&str> = osd_err.lines().collect();
    assert_eq!(lines.len(), 1, "only the conf warning on stderr:\n{osd_err}");
    assert!(lines[0].contains(" WARN ") && lines[0].contains(&want), "{osd_err}\nwants {want}");
    assert!(osd_text.contains(&want), "the warning is in the file too:\n{osd_text}");

    // The monitor: log_file from the conf (the default file is not written), Raft at info,
    // every line on stderr too, without escapes although it has colours on a terminal.
    let mon_text = std::fs::read_to_string(&mon_log).expect("the monitor's log_file");
    assert!(!dir.join("mon").join("log").exists(), "log_file replaces the default");
    assert!(!info_lines(&mon_text, "openraft").is_empty(), "debug_paxos = 1:\n{mon_text}");
    assert!(!info_lines(&mon_text, "quarry_mon").is_empty(), "{mon_text}");
    let mon_err = stderr_of(&mon);
    assert!(!info_lines(&mon_err, "openraft").is_empty(), "log_to_stderr = true:\n{mon_err}");
    assert!(mon_err.contains(&want), "{mon_err}");
    for (what, text) in [
        ("osd stderr", &osd_err),
        ("mon stderr", &mon_err),
        ("mon file", &mon_text),
        ("osd file", &osd_text),
    ] {
        assert!(!text.contains('\x1b'), "{what} has escape sequences:\n{text}");
    }
}

#[test]
fn the_tools_warn_once_about_a_misspelt_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut cluster = up(&dir, 1);
    let conf = dir.join("ceph.conf");
    append(&conf, "[client]\nrbd_cahce = false\n");
    let line = line_of(&conf, "rbd_cahce = false");
    let want = format!(
        "warning: {}: line {line}: unknown option 'rbd_cahce' in [client] (did you mean 'rbd_cache'?)",
        conf.display()
    );
    for (tool, args) in
        [("rados", &["lspools"][..]), ("ceph", &["health"][..]), ("rbd", &["ls", "rbd"][..])]
    {
        let r = run_bounded(tool_cmd(tool, Some(&conf), args), None, COMMAND_TIMEOUT).ok(tool);
        let warnings: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("warning:")).collect();
        assert_eq!(warnings, vec![want.as_str()], "{tool} {args:?}:\n{}", r.stderr);
    }
    // The command still works (the conf loads, as Ceph's does), and logs nothing more.
    let r = run_bounded(tool_cmd("rados", Some(&conf), &["lspools"]), None, COMMAND_TIMEOUT);
    assert_eq!(r.out(), "rbd\n");
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    // --debug-rados 10 (Ceph's generic option): the client library's lines, no escapes.
    let args = ["--debug-rados", "10", "lspools"];
    let r = run_bounded(tool_cmd("rados", Some(&conf), &args), None, COMMAND_TIMEOUT).ok("debug");
    assert!(
        r.stderr.contains("DEBUG quarry_client") && r.stderr.contains("connected to monitor"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains('\x1b'), "{}", r.stderr);
    assert!(cluster.terminate().success(), "{}", cluster.logs());
}

#[test]
fn quarry_up_logs_to_its_file_and_says_why_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let log = tmp.path().join("elsewhere").join("up.log");
    let mut cmd = Command::new(quarry());
    cmd.arg("up").arg(&dir).args(["--osds", "1", "--log-file"]).arg(&log);
    let mut cluster = Daemon::spawn_without_rust_log("quarry up", cmd);
    cluster.wait_ready();
    assert!(cluster.terminate().success(), "{}", cluster.logs());
    let stdout = wait_for_stdout_line(&cluster, "quarry up: stopped: SIGTERM received");
    assert_eq!(
        stdout.last().map(String::as_str),
        Some("quarry up: stopped: SIGTERM received"),
        "{}",
        cluster.logs()
    );
    // 32 PGs started: nothing on stderr (no warnings), the info lines in the file only.
    assert_eq!(stderr_of(&cluster), "", "{}", cluster.logs());
    let text = std::fs::read_to_string(&log).expect("--log-file");
    assert!(text.contains("stopped: SIGTERM received"), "{text}");
    assert!(info_lines(&text, "openraft").is_empty(), "{text}");
    assert!(!text.contains('\x1b'), "{text}");
    assert!(!dir.join("log").exists(), "--log-file replaces DIR/log/quarry-up.log");

    // Without --log-file: DIR/log/quarry-up.log; SIGINT named. RUST_LOG wins over the
    // defaults, for the file and stderr alike.
    let mut cmd = Command::new("env");
    cmd.arg("RUST_LOG=warn,openraft=info").arg(quarry()).arg("up").arg(&dir);
    let mut cluster = Daemon::spawn_without_rust_log("quarry up", cmd);
    cluster.wait_ready();
    cluster.signal(quarry_testkit::process::Signal::INT);
    assert!(cluster.wait_exit(Duration::from_secs(60)).is_some_and(|s| s.success()));
    let stdout = wait_for_stdout_line(&cluster, "quarry up: stopped: SIGINT received");
    assert_eq!(stdout.last().map(String::as_str), Some("quarry up: stopped: SIGINT received"));
    let text = std::fs::read_to_string(dir.join("log").join("quarry-up.log")).unwrap();
    assert!(!info_lines(&text, "openraft").is_empty(), "{text}");
    assert!(!info_lines(&stderr_of(&cluster), "openraft").is_empty(), "{}", cluster.logs());
    assert!(!text.contains("stopped: SIGINT received"), "RUST_LOG hides the binary's info");
}

/// The daemon's stdout once it holds `line` (bounded wait: the reader thread may lag).
fn wait_for_stdout_line(d: &Daemon, line: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = d.stdout.lock().unwrap().clone();
        if lines.iter().any(|l| l == line) || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn quarry_up_says_when_its_start_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    // The monitor's port is taken: the monitor cannot start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut cmd = Command::new(quarry());
    cmd.arg("up").arg(&dir).args(["--port", &port]).env_remove("RUST_LOG");
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let want =
        format!("quarry up: stopped: start-up failed: starting the monitor on 127.0.0.1:{port}: ");
    assert!(
        r.stderr.lines().last().is_some_and(|l| l.starts_with(&want)),
        "the last line says why:\n{}\nwants {want}",
        r.stderr
    );
    assert!(!r.out().contains("ready"), "{}", r.out());
    let log = std::fs::read_to_string(dir.join("log").join("quarry-up.log")).unwrap();
    assert!(log.contains("start-up failed: starting the monitor"), "{log}");
}

/// Ceph's generic `--NAME VALUE` options on `quarry up`'s command line are checked like
/// ceph.conf's: a bad value stops the start, saying which option and why.
#[test]
fn quarry_up_refuses_a_bad_option_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let mut cmd = Command::new(quarry());
    cmd.arg("up").arg(&dir).args(["--mon_osd_full_ratio", "2"]).env_remove("RUST_LOG");
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let last = r.stderr.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("quarry up: stopped: start-up failed: ")
            && last.ends_with(
                "invalid value '2' for option 'mon_osd_full_ratio' (override): \
                 expected a number in (0, 1]"
            )
            && last.matches("invalid value").count() == 1,
        "{}",
        r.stderr
    );
    assert!(!r.out().contains("ready"), "{}", r.out());
}
