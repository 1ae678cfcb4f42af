//! Quarry's test kit: what integration tests of the monitor, the OSD, the client and the CLI
//! share, so that they test clusters built the way users get them and fail loudly on what
//! they did not expect.
//!
//! - [`Cluster`] ([`cluster`]): one monitor and N OSDs in this process, bootstrapped from a
//!   `quarry_mon::ClusterSpec` exactly as `quarry up` and `quarry cluster-init` bootstrap
//!   (same entities, keys, caps), on loopback ports, data in a temporary directory; with
//!   stop/start/restart of an OSD or the monitor on its data directory.
//! - [`fixtures`]: `ClusterMap`, OSD and pool entries for unit tests without daemons.
//! - [`proxy`]: a loopback TCP proxy with cut / stall / delay / resume controls, placed on the
//!   OSD-to-monitor links and client-to-monitor links.
//! - [`fault`]: disk damage (flipped byte, truncation, removal) to a stopped daemon's files.
//! - [`child`]: an OSD config carried to a child process, for SIGKILL tests.
//! - [`process`]: the production binary's daemons and commands as child processes (bounded
//!   waits, signals to their own children only), their WARN/ERROR lines fed to the log guard.
//! - [`logs`]: the log guard. Every [`Cluster`] carries one ([`Cluster::logs`]); tests
//!   without a cluster call [`log_guard`]. A WARN or ERROR event nobody declared with
//!   `.expect(pattern)` / `.allow(pattern)` fails the test.
//!
//! ```no_run
//! # async fn example() {
//! let cluster = quarry_testkit::Cluster::builder().osds(2).start().await;
//! cluster.logs().allow("connection reset");
//! let rados = cluster.admin().await;
//! // ... the test ...
//! rados.shutdown().await;
//! cluster.shutdown().await; // stops the daemons, then fails on undeclared WARN/ERROR lines
//! # }
//! ```
//!
//! The kit is a dev-dependency only; it never ships. It depends on the daemons' and the
//! client's crates (the clusters it builds) and on: tokio (the daemons' runtime; the proxy),
//! tempfile (data directories that vanish with the test), tracing + tracing-subscriber (the
//! log guard is a subscriber layer; the same crates the daemons log with), rustix (signals
//! to child daemons, safely; already the workspace's syscall crate).

#![warn(missing_docs)]

pub mod child;
pub mod cluster;
pub mod docs;
pub mod fault;
pub mod fixtures;
pub mod logs;
pub mod process;
pub mod proxy;

pub use child::{osd_child_env, osd_config_from_env};
pub use cluster::{Builder, Cluster};
pub use fault::DiskFault;
pub use fixtures::MapBuilder;
pub use logs::{log_guard, LogGuard};
pub use proxy::{LinkState, Proxy};

/// Full-disk thresholds for test clusters whose data sits on the host's shared disk: the
/// OSDs report that file system's figures once it passes the nearfull ratio, and a build
/// machine's disk is routinely past Ceph's 85 % default (seen in CI: every test expecting
/// HEALTH_OK failed on `4 nearfull osd(s)`). How full the build disk is is not what those
/// tests test; the tests of full disks (a small tmpfs of their own) keep the defaults.
pub const HOST_DISK_RATIOS: quarry_types::FullRatios =
    quarry_types::FullRatios { nearfull: 0.97, full: 0.98, failsafe: 0.99 };

/// The options and values of [`HOST_DISK_RATIOS`], by Ceph's option names.
fn host_disk_options() -> [(&'static str, f64); 3] {
    let r = HOST_DISK_RATIOS;
    [
        ("mon_osd_nearfull_ratio", r.nearfull),
        ("mon_osd_full_ratio", r.full),
        ("osd_failsafe_full_ratio", r.failsafe),
    ]
}

/// [`HOST_DISK_RATIOS`] as config options, for command lines (`quarry up DIR ...`).
pub fn host_disk_args() -> Vec<String> {
    host_disk_options().iter().flat_map(|(k, v)| [format!("--{k}"), v.to_string()]).collect()
}

/// [`HOST_DISK_RATIOS`] as ceph.conf lines (a `[global]` section).
pub fn host_disk_conf() -> String {
    let lines: String = host_disk_options().iter().map(|(k, v)| format!("\t{k} = {v}\n")).collect();
    format!("\n[global]\n{lines}")
}
