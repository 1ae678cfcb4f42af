//! The daemons read ceph.conf themselves: a misspelt option is a WARN line at start naming it
//! and the option it resembles (`quarry mon`, `quarry up`), a bad value stops the start with
//! an error naming the option, the value and the line (`quarry mon`, `quarry osd`). Also the
//! panic hook of the binary (version and backtrace on stderr).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const MISSPELT: &str = "osd_pool_defualt_size = 2";
const WARNING: &str =
    "unknown option 'osd_pool_defualt_size' in [global] (did you mean 'osd_pool_default_size'?)";

/// `quarry cluster-init DIR --osds 1`: DIR/ceph.conf (fsid, mon_host, keyring,
/// osd_pool_default_size = 1), DIR/mon.keyring, DIR/osd.0/keyring.
fn cluster_init(dir: &Path) -> PathBuf {
    let mut init = Command::new(quarry());
    init.arg("cluster-init").arg(dir).args(["--osds", "1"]);
    run_bounded(init, None, COMMAND_TIMEOUT).ok("cluster-init");
    dir.join("ceph.conf")
}

/// Appends `line` to the conf (its last section is [global]).
fn append(conf: &Path, line: &str) {
    let mut text = std::fs::read_to_string(conf).unwrap();
    text.push_str(line);
    text.push('\n');
    std::fs::write(conf, text).unwrap();
}

/// The conf's line number of `line`.
fn line_of(conf: &Path, line: &str) -> usize {
    let text = std::fs::read_to_string(conf).unwrap();
    1 + text.lines().position(|l| l.trim() == line).expect("line in conf")
}

fn mon_cmd(dir: &Path, conf: &Path, data: &str) -> Command {
    let mut cmd = Command::new(quarry());
    cmd.arg("mon").arg("--data").arg(dir.join(data)).arg("-c").arg(conf);
    cmd.env_remove("CEPH_CONF").env_remove("CEPH_ARGS");
    cmd
}

/// The WARN lines about the configuration file.
fn conf_warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("WARN") && l.contains("ceph.conf: line ")).collect()
}

#[test]
fn a_misspelt_option_is_a_warning_at_monitor_start_and_the_options_are_read() {
    let logs = quarry_testkit::log_guard();
    logs.expect(WARNING);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let conf = cluster_init(&dir);
    append(&conf, MISSPELT);
    let line = line_of(&conf, MISSPELT);
    // fsid, listening address and pool size come from the conf; the keyring from -k.
    let mut cmd = mon_cmd(&dir, &conf, "mon");
    cmd.args(["--mkfs", "--pool", "rbd"]).arg("--keyring").arg(dir.join("mon.keyring"));
    let mut mon = Daemon::spawn("mon.a", cmd);
    mon.wait_ready();
    let size = run_bounded(
        tool_cmd("ceph", Some(&conf), &["osd", "pool", "get", "rbd", "size"]),
        None,
        COMMAND_TIMEOUT,
    )
    .ok("pool get size")
    .out();
    assert_eq!(size, "size: 1\n", "osd_pool_default_size = 1 from ceph.conf (default is 3)");
    assert!(mon.terminate().success(), "{}", mon.logs());
    let stderr = mon.stderr.lock().unwrap().clone();
    let warns = conf_warnings(&stderr);
    assert_eq!(warns.len(), 1, "one WARN line per problem:\n{stderr}");
    let want = format!("{}: line {line}: {WARNING}", conf.display());
    assert!(warns[0].contains(&want), "{}\nwants {want}", warns[0]);
}

#[test]
fn a_bad_value_stops_the_monitor_and_the_osd_with_an_error_naming_it() {
    let logs = quarry_testkit::log_guard();
    // The monitor started with --size over the bad value still says what is wrong in the conf.
    logs.expect("invalid value 'two' for 'osd_pool_default_size' in [global]");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let conf = cluster_init(&dir);
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("osd_pool_default_size = 1", "osd_pool_default_size = two"))
        .unwrap();
    let line = line_of(&conf, "osd_pool_default_size = two");
    let mut cmd = mon_cmd(&dir, &conf, "mon");
    cmd.args(["--mkfs", "--pool", "rbd"]).arg("--keyring").arg(dir.join("mon.keyring"));
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let want = format!(
        "quarry: configuring the monitor: invalid value 'two' for option 'osd_pool_default_size' ({} line {line}, [global]): expected an integer from 1 to 10",
        conf.display()
    );
    assert!(r.stderr.contains(&want), "{}\nwants {want}", r.stderr);
    assert!(!dir.join("mon").exists(), "nothing was created");

    // --size on the command line replaces the bad value: the monitor starts.
    let mut cmd = mon_cmd(&dir, &conf, "mon");
    cmd.args(["--mkfs", "--size", "1"]).arg("--keyring").arg(dir.join("mon.keyring"));
    let mut mon = Daemon::spawn("mon.a", cmd);
    mon.wait_ready();
    assert!(mon.terminate().success(), "{}", mon.logs());

    // The OSD: a monitor address that does not parse, set for osd.0 only.
    append(&conf, "[osd.0]\nmon_host = 127.0.0.1:x");
    let line = line_of(&conf, "mon_host = 127.0.0.1:x");
    let mut cmd = Command::new(quarry());
    cmd.args(["osd", "--id", "0", "--data"]).arg(dir.join("osd.0")).arg("-c").arg(&conf);
    cmd.env_remove("CEPH_CONF").env_remove("CEPH_ARGS");
    let r = run_bounded(cmd, None, COMMAND_TIMEOUT);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let want = format!(
        "quarry: configuring the OSD: invalid value '127.0.0.1:x' for option 'mon_host' ({} line {line}, [osd.0])",
        conf.display()
    );
    assert!(r.stderr.contains(&want), "{}\nwants {want}", r.stderr);
}

#[test]
fn quarry_up_warns_about_a_misspelt_option_in_its_conf() {
    let logs = quarry_testkit::log_guard();
    logs.expect(WARNING);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let conf = cluster_init(&dir);
    append(&conf, MISSPELT);
    let line = line_of(&conf, MISSPELT);
    let mut cluster = up(&dir, 1);
    assert!(cluster.terminate().success(), "{}", cluster.logs());
    let stderr = cluster.stderr.lock().unwrap().clone();
    let warns = conf_warnings(&stderr);
    let want = format!("ceph.conf: line {line}: {WARNING}");
    assert_eq!(warns.len(), 1, "logged once, not once per daemon:\n{stderr}");
    assert!(warns[0].contains(&want), "{}\nwants {want}", warns[0]);
}

#[test]
fn a_panic_prints_the_version_and_a_backtrace() {
    let mut cmd = Command::new(quarry());
    cmd.arg("--version").env("QUARRY_TEST_PANIC", "1");
    let r = run_bounded(cmd, None, Duration::from_secs(60));
    assert!(!r.status.success(), "{}", r.stderr);
    let version = format!("quarry {} panicked in thread 'main'", env!("CARGO_PKG_VERSION"));
    assert!(r.stderr.contains(&version), "{}", r.stderr);
    assert!(r.stderr.contains("panicking on purpose"), "{}", r.stderr);
    assert!(r.stderr.contains("backtrace:\n"), "{}", r.stderr);
    assert!(r.stderr.contains("quarry::main"), "the backtrace has frames:\n{}", r.stderr);

    // Without the variable: no panic.
    let mut cmd = Command::new(quarry());
    cmd.arg("--version").env_remove("QUARRY_TEST_PANIC");
    let r = run_bounded(cmd, None, Duration::from_secs(60)).ok("quarry --version");
    assert!(r.out().contains(env!("CARGO_PKG_VERSION")));
}
