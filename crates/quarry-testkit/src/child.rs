//! An OSD in a child process, for tests that SIGKILL a daemon: the parent passes the
//! [`OsdConfig`] the kit built ([`crate::Cluster::osd_config`]) through the environment
//! ([`osd_child_env`]), re-executes its test binary on a test that calls
//! [`osd_config_from_env`], and kills the child when it likes. The data directory, key and
//! monitor are the cluster's, so the parent restarts the OSD on the same data the same way.

use std::path::PathBuf;

use quarry_auth::CryptoKey;
use quarry_osd::OsdConfig;

const ID: &str = "QUARRY_TESTKIT_OSD_ID";
const DIR: &str = "QUARRY_TESTKIT_OSD_DIR";
const LISTEN: &str = "QUARRY_TESTKIT_OSD_LISTEN";
const MONS: &str = "QUARRY_TESTKIT_OSD_MONS";
const KEY: &str = "QUARRY_TESTKIT_OSD_KEY";
const HOST: &str = "QUARRY_TESTKIT_OSD_HOST";

/// The environment that carries `cfg` to a child process.
pub fn osd_child_env(cfg: &OsdConfig) -> Vec<(&'static str, String)> {
    let mons: Vec<String> = cfg.mon_addrs.iter().map(|a| a.to_string()).collect();
    vec![
        (ID, cfg.id.to_string()),
        (DIR, cfg.data_dir.display().to_string()),
        (LISTEN, cfg.listen.to_string()),
        (MONS, mons.join(",")),
        (KEY, cfg.key.to_base64()),
        (HOST, cfg.host.clone()),
    ]
}

/// The config [`osd_child_env`] passed, or `None` when this process is not such a child.
pub fn osd_config_from_env() -> Option<OsdConfig> {
    let id = std::env::var(ID).ok()?;
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    Some(OsdConfig {
        id: id.parse().expect("OSD id"),
        data_dir: PathBuf::from(var(DIR)),
        listen: var(LISTEN).parse().expect("listen address"),
        mon_addrs: var(MONS).split(',').map(|a| a.parse().expect("monitor address")).collect(),
        key: CryptoKey::from_base64(&var(KEY)).expect("OSD key"),
        host: var(HOST),
        full_ratios: crate::HOST_DISK_RATIOS,
        limits: quarry_types::ServerLimits::defaults(quarry_types::DaemonKind::Osd),
        max_backfills: 1,
        raft_heartbeat: quarry_osd::DEFAULT_RAFT_HEARTBEAT,
        write_once_min_bytes: quarry_osd::DEFAULT_WRITE_ONCE_MIN_BYTES,
    })
}
