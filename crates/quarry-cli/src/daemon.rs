//! The daemons as separate processes: `quarry mon` and `quarry osd`. This module parses their
//! command lines, loads ceph.conf, sets up logging from it (`crate::logging`: the log file
//! under the data directory is opened once the configuration is good) and logs what
//! `quarry_conf::validate` finds; the daemons
//! read their options themselves (`MonConfig::from_conf`, `OsdConfig::from_conf`, given the
//! command-line values as overrides). Each prints `ready` on stdout once it serves, runs in
//! the foreground, and exits 0 after a clean shutdown on SIGTERM or SIGINT. Also the signal
//! handling `quarry up` shares.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::signal::unix::{signal, Signal, SignalKind};

use quarry_conf::{CommonArgs, Conf};
use quarry_mon::{Mkfs, MonConfig, MonOverrides};
use quarry_osd::{OsdConfig, OsdOverrides};
use quarry_types::{EntityName, EntityType, OsdId};

use crate::error::CliError;
use crate::logging::{LogFile, LogSetup};

/// How long a clean shutdown of one daemon may take before we stop waiting.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// SIGTERM and SIGINT, registered before the daemon reports ready so none is missed.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Registers the handlers.
    pub fn new() -> Result<Signals, CliError> {
        let err = |e| CliError::Daemon(anyhow!("cannot install signal handlers: {e}"));
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(err)?,
            int: signal(SignalKind::interrupt()).map_err(err)?,
        })
    }

    /// Waits for the next signal and names it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Prints `ready` on stdout (tests and scripts wait for this line).
pub fn announce_ready() {
    crate::outln!("ready");
}

/// Gives a daemon's `shutdown` [`SHUTDOWN_TIMEOUT`] to finish; the error names the daemon
/// (`what`: `the monitor`, `osd.3`).
pub async fn stop(what: &str, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::time::timeout(SHUTDOWN_TIMEOUT, shutdown)
        .await
        .map_err(|_| anyhow!("{what} did not stop within {SHUTDOWN_TIMEOUT:?}"))
}

/// Reports ready, waits for SIGTERM or SIGINT, then stops the daemon (`what` names it).
async fn serve_until_signal(
    mut signals: Signals,
    what: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    announce_ready();
    let sig = signals.recv().await;
    tracing::info!("{sig}: stopping {what}");
    stop(what, shutdown).await?;
    tracing::info!("{what} stopped ({sig} received)");
    Ok(())
}

/// `quarry mon`.
#[derive(clap::Args, Debug)]
pub struct MonArgs {
    /// Conf (`-c`), monitor name (`-i/--id`, default `a`), bootstrap keyring (`-k/--keyring`).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Data directory (WAL and snapshots).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Address to listen on (default: the first address of mon_host (or -m), else
    /// 127.0.0.1:6789).
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<SocketAddr>,
    /// Create a new cluster in an empty data directory (needs --fsid or a conf with fsid,
    /// and a keyring (--keyring or the conf's keyring option) with client.admin and the OSD
    /// keys).
    #[arg(long)]
    pub mkfs: bool,
    /// Cluster id for --mkfs.
    #[arg(long)]
    pub fsid: Option<String>,
    /// OSD ids registered by --mkfs (e.g. `0,1,2`; default: every osd.N in the keyring).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub osds: Vec<OsdId>,
    /// Pools created by --mkfs (with application rbd enabled).
    #[arg(long = "pool", value_name = "NAME")]
    pub pools: Vec<String>,
    /// Replicas of new pools (default: osd_pool_default_size, else 3).
    #[arg(long)]
    pub size: Option<u32>,
    /// PGs of new pools (default: osd_pool_default_pg_num, else 32).
    #[arg(long = "pg-num")]
    pub pg_num: Option<u32>,
    /// Seconds without a beacon after which an OSD is marked down (default 6).
    #[arg(long = "osd-grace", value_name = "SECONDS")]
    pub osd_grace: Option<f64>,
    /// Log file (default: the conf's log_file, else DATA/log/quarry-mon.ID.log).
    #[arg(long = "log-file", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// `quarry osd`.
#[derive(clap::Args, Debug)]
pub struct OsdArgs {
    /// OSD id (`--id N`), conf (`-c`), keyring with osd.N's key (`-k/--keyring`), `-m`.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Data directory (WAL and object store).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Address to listen on (default: the address of the previous start, kept in the data
    /// directory; on first start 127.0.0.1 and a free port).
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<SocketAddr>,
    /// Host name reported for placement (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Log file (default: the conf's log_file, else DATA/log/quarry-osd.N.log).
    #[arg(long = "log-file", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// The configuration named by `-c` or `CEPH_CONF` (empty when neither names one: daemons
/// take everything from their arguments then), the daemon's name (`mon.a`, `osd.3`), and the
/// logging set up from both ([`LogSetup::daemon`]; the caller opens the log file once the
/// daemon's configuration is good); then the conf's problems are logged
/// ([`log_conf_problems`]).
fn load_conf_and_log(
    common: &CommonArgs,
    kind: EntityType,
    data: &Path,
    log_file: Option<&Path>,
) -> anyhow::Result<(Conf, LogFile)> {
    let conf = if common.conf.is_none() && std::env::var_os("CEPH_CONF").is_none() {
        Conf::default()
    } else {
        common.load_conf().context("loading the configuration")?.0
    };
    let name = match quarry_conf::resolve_entity_as(common, kind) {
        Ok(name) => name,
        Err(_) if kind == EntityType::Mon => {
            // The monitor's default name (MonConfig::from_conf).
            EntityName { kind, id: "a".to_string() }
        }
        Err(e) => return Err(e).context("naming the daemon"),
    };
    let log_file = LogSetup::daemon(&conf, &name, data, log_file).init();
    log_conf_problems(&conf);
    Ok((conf, log_file))
}

/// Logs one WARN line per problem [`quarry_conf::validate`] finds in `conf`: unknown
/// sections, unknown (misspelt) keys with the option they resemble, values of the wrong
/// type. Daemons and `quarry up` call it once at start.
pub fn log_conf_problems(conf: &Conf) {
    let file = conf.path().map(|p| format!("{}: ", p.display())).unwrap_or_default();
    for warning in quarry_conf::validate(conf) {
        tracing::warn!("{file}{warning}");
    }
}

/// Runs a monitor until SIGTERM/SIGINT.
pub async fn run_mon(args: MonArgs) -> Result<(), CliError> {
    let (conf, log_file) =
        load_conf_and_log(&args.common, EntityType::Mon, &args.data, args.log_file.as_deref())?;
    let osd_grace = match args.osd_grace {
        Some(grace) => Some(
            Duration::try_from_secs_f64(grace).map_err(|_| anyhow!("bad --osd-grace {grace}"))?,
        ),
        None => None,
    };
    let mkfs = args.mkfs.then(|| Mkfs {
        fsid: args.fsid.clone(),
        osds: args.osds.clone(),
        pools: args.pools.clone(),
    });
    let overrides = MonOverrides {
        addr: args.addr,
        pool_default_size: args.size,
        pool_default_pg_num: args.pg_num,
        osd_grace,
        mkfs,
    };
    let cfg = MonConfig::from_conf(&conf, &args.common, args.data.clone(), &overrides)
        .context("configuring the monitor")?;
    if !args.mkfs && !cfg.has_data() {
        return Err(anyhow!(
            "no monitor data in {}: create a cluster with --mkfs",
            args.data.display()
        )
        .into());
    }
    log_file.open();
    let name = cfg.name.clone();
    let signals = Signals::new()?;
    let mon = quarry_mon::start(cfg).await.context("starting the monitor")?;
    tracing::info!(addr = %mon.addr(), "monitor {name} serving");
    serve_until_signal(signals, "the monitor", mon.shutdown()).await
}

/// The OSD's configuration with the monitor's central config layered under ceph.conf (as
/// Ceph's daemons fetch theirs before they start): `cfg` is built again from `conf` with the
/// central values where the file and command line set nothing. `--no-mon-config` skips the
/// fetch; a monitor that cannot be asked is Ceph's `failed to fetch mon config
/// (--no-mon-config to skip)`.
pub async fn with_central_config(
    mut conf: Conf,
    cfg: OsdConfig,
    common: &CommonArgs,
    data: &Path,
    overrides: &OsdOverrides,
) -> anyhow::Result<(Conf, OsdConfig)> {
    if no_mon_config() {
        return Ok((conf, cfg));
    }
    let central = quarry_osd::fetch_central_config(&cfg)
        .await
        .map_err(|e| anyhow!("failed to fetch mon config (--no-mon-config to skip): {e}"))?;
    if central.is_empty() {
        return Ok((conf, cfg));
    }
    tracing::info!(options = central.len(), "central config fetched");
    let mut central = central;
    // A central value the OSD cannot start with is left out, with a warning (as Ceph's
    // daemons skip a mon value that does not parse); each round drops the one named.
    for _ in 0..=central.len() {
        conf.set_central(central.clone());
        match OsdConfig::from_conf(&conf, common, data.to_path_buf(), overrides) {
            Ok(cfg) => return Ok((conf, cfg)),
            Err(quarry_osd::OsdError::Conf(quarry_conf::ConfError::BadValue {
                option, ..
            })) if central.contains_key(&option)
                && conf.source(&cfg_name(&cfg), &option) == "mon" =>
            {
                tracing::warn!(%option, "central config value ignored at start: the OSD cannot start with it");
                central.remove(&option);
            }
            Err(e) => return Err(e).context("configuring the OSD with the central config"),
        }
    }
    conf.set_central(Default::default());
    Ok((conf, cfg))
}

fn cfg_name(cfg: &OsdConfig) -> EntityName {
    EntityName::osd(cfg.id)
}

/// Whether the command line or `CEPH_ARGS` has Ceph's `--no-mon-config` (the generic
/// flags are taken out before the daemon's own parser sees them).
fn no_mon_config() -> bool {
    let env = quarry_conf::ceph_args_env();
    std::env::args()
        .chain(env)
        .take_while(|a| a != "--")
        .any(|a| a == "--no-mon-config" || a == "--no_mon_config")
}

/// Runs an OSD until SIGTERM/SIGINT.
pub async fn run_osd(args: OsdArgs) -> Result<(), CliError> {
    let (conf, log_file) =
        load_conf_and_log(&args.common, EntityType::Osd, &args.data, args.log_file.as_deref())?;
    let overrides = OsdOverrides { addr: args.addr, host: args.host.clone() };
    let cfg = OsdConfig::from_conf(&conf, &args.common, args.data.clone(), &overrides)
        .context("configuring the OSD")?;
    log_file.open();
    let (conf, cfg) = with_central_config(conf, cfg, &args.common, &args.data, &overrides).await?;
    let id = cfg.id;
    crate::logging::register_osd_knobs(&conf, &EntityName::osd(id));
    let signals = Signals::new()?;
    let osd = quarry_osd::start(cfg).await.with_context(|| format!("starting osd.{id}"))?;
    tracing::info!(addr = %osd.addr(), "osd.{id} serving");
    serve_until_signal(signals, &format!("osd.{id}"), osd.shutdown()).await
}
