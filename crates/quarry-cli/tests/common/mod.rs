//! Helpers for the CLI tests: run the built `quarry` binary (under the names `ceph`, `rados`
//! through argv[0]), start `quarry up` or separate daemons in temporary directories on free
//! loopback ports, wait for their `ready` line, and stop only the processes started here.
//! The child-process machinery is `quarry_testkit::process` (bounded waits; the daemons'
//! WARN/ERROR lines reach the test's log guard).

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

// Each test binary uses a different part of this module.
#[allow(unused_imports)]
pub use quarry_testkit::process::{run_bounded, Daemon, Run, COMMAND_TIMEOUT};

/// The binary under test.
pub fn quarry() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quarry"))
}

/// `quarry` invoked as `tool` (argv[0]), with `conf` as CEPH_CONF and no CEPH_ARGS.
pub fn tool_cmd(tool: &str, conf: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(quarry());
    cmd.arg0(tool).args(args).env_remove("CEPH_ARGS").env_remove("RUST_LOG");
    match conf {
        Some(c) => cmd.env("CEPH_CONF", c),
        None => cmd.env_remove("CEPH_CONF"),
    };
    cmd
}

/// `quarry up DIR --osds N`, started and ready.
pub fn up(dir: &Path, osds: u32) -> Daemon {
    quarry_testkit::process::up(&quarry(), dir, osds)
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
