//! The daemons as separate processes: `quarry mon` and `quarry osd`. Each prints `ready` on
//! stdout once it serves, runs in the foreground, and exits 0 after a clean shutdown on
//! SIGTERM or SIGINT. Also the signal handling `quarry up` shares.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::signal::unix::{signal, Signal, SignalKind};

use quarry_auth::Keyring;
use quarry_conf::{CommonArgs, Conf};
use quarry_mon::{Bootstrap, MonConfig};
use quarry_osd::OsdConfig;
use quarry_types::{EntityName, OsdId};

use crate::cluster;
use crate::error::CliError;

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
    Ok(stop(what, shutdown).await?)
}

/// The file in an OSD's data directory that keeps its listening address across restarts.
const ADDR_FILE: &str = "addr";

/// Where an OSD listens: the address it had last time (peers and clients that still hold it
/// reconnect at once after a restart), if that port is free; else 127.0.0.1 and a new port.
pub fn stable_addr(data: &std::path::Path) -> SocketAddr {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let Some(previous) = std::fs::read_to_string(data.join(ADDR_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<SocketAddr>().ok())
    else {
        return any;
    };
    match std::net::TcpListener::bind(previous) {
        Ok(_) => previous,
        Err(e) => {
            tracing::warn!(%previous, error = %e, "previous address unavailable; listening on a new port");
            any
        }
    }
}

/// Records the address an OSD listens on for its next start (best effort).
pub fn remember_addr(data: &std::path::Path, addr: SocketAddr) {
    if let Err(e) =
        cluster::write_atomic(&data.join(ADDR_FILE), format!("{addr}\n").as_bytes(), 0o644)
    {
        tracing::warn!(error = %e, "cannot record the OSD address");
    }
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
    /// Address to listen on (default: the conf's mon_host, else 127.0.0.1:6789).
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<SocketAddr>,
    /// Create a new cluster in an empty data directory (needs --fsid or a conf with fsid,
    /// and --keyring with client.admin and the OSD keys).
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
    /// Replicas of new pools (default 3, Ceph's default).
    #[arg(long)]
    pub size: Option<u32>,
    /// PGs of new pools (default 32).
    #[arg(long = "pg-num")]
    pub pg_num: Option<u32>,
    /// Seconds without a beacon after which an OSD is marked down (default 6).
    #[arg(long = "osd-grace", value_name = "SECONDS")]
    pub osd_grace: Option<f64>,
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
    /// Address to listen on (default: the address of the previous start, kept in
    /// `DATA/addr`; on first start 127.0.0.1 and a free port).
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<SocketAddr>,
    /// Host name reported for placement (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
}

/// The configuration named by `-c` or `CEPH_CONF` (None when neither names one: daemons
/// take everything from their arguments then).
fn load_conf(common: &CommonArgs) -> anyhow::Result<Option<Conf>> {
    if common.conf.is_none() && std::env::var_os("CEPH_CONF").is_none() {
        return Ok(None);
    }
    let (conf, _) = common.load_conf().context("loading the configuration")?;
    Ok(Some(conf))
}

/// Runs a monitor until SIGTERM/SIGINT.
pub async fn run_mon(args: MonArgs) -> Result<(), CliError> {
    let name = args.common.id.clone().unwrap_or_else(|| "a".to_string());
    let entity = EntityName { kind: quarry_types::EntityType::Mon, id: name.clone() };
    let conf = load_conf(&args.common)?;
    let conf_get = |key: &str| conf.as_ref().and_then(|c| c.get(&entity, key));
    let addr = match args.addr {
        Some(a) => a,
        None => match conf_get("mon_host") {
            Some(text) => *quarry_conf::parse_mon_host(&text)
                .context("mon_host")?
                .first()
                .ok_or_else(|| anyhow!("mon_host names no monitor"))?,
            None => SocketAddr::from((Ipv4Addr::LOCALHOST, 6789)),
        },
    };
    let mut cfg = MonConfig::new(&name, args.data.clone(), addr);
    if let Some(size) =
        args.size.or_else(|| conf_get("osd_pool_default_size").and_then(|s| s.parse().ok()))
    {
        cfg.pool_default_size = size;
    }
    if let Some(pg_num) =
        args.pg_num.or_else(|| conf_get("osd_pool_default_pg_num").and_then(|s| s.parse().ok()))
    {
        cfg.pool_default_pg_num = pg_num;
    }
    if let Some(grace) = args.osd_grace {
        cfg.osd_grace =
            Duration::try_from_secs_f64(grace).map_err(|_| anyhow!("bad --osd-grace {grace}"))?;
    }
    if args.mkfs {
        let fsid = args
            .fsid
            .clone()
            .or_else(|| conf_get("fsid"))
            .ok_or_else(|| anyhow!("--mkfs needs --fsid (or a conf with fsid)"))?;
        let keyring_path = PathBuf::from(
            args.common.keyring.clone().ok_or_else(|| anyhow!("--mkfs needs --keyring FILE"))?,
        );
        let ring = Keyring::from_file(&keyring_path)
            .with_context(|| format!("reading keyring {}", keyring_path.display()))?;
        let entities: Vec<_> =
            ring.entries.iter().map(|(n, e)| (n.clone(), e.key.clone(), e.caps.clone())).collect();
        if !ring.entries.contains_key(&EntityName::client("admin")) {
            return Err(anyhow!("keyring {} has no client.admin", keyring_path.display()).into());
        }
        let osds: Vec<OsdId> = if args.osds.is_empty() {
            ring.entries
                .keys()
                .filter(|n| n.kind == quarry_types::EntityType::Osd)
                .filter_map(|n| n.id.parse().ok())
                .collect()
        } else {
            args.osds.clone()
        };
        let host = cluster::hostname();
        let pools = args
            .pools
            .iter()
            .map(|p| (p.clone(), cfg.pool_default_pg_num, cfg.pool_default_size))
            .collect();
        if cluster::has_entries(&args.data) {
            tracing::info!(data = %args.data.display(), "monitor data exists: --mkfs has nothing to do");
        } else {
            cfg.bootstrap = Some(Bootstrap {
                fsid,
                entities,
                osds: osds.into_iter().map(|id| (id, host.clone())).collect(),
                pools,
            });
        }
    } else if !cluster::has_entries(&args.data) {
        return Err(anyhow!(
            "no monitor data in {}: create a cluster with --mkfs",
            args.data.display()
        )
        .into());
    }
    let signals = Signals::new()?;
    let mon = quarry_mon::start(cfg).await.context("starting the monitor")?;
    tracing::info!(addr = %mon.addr(), "monitor {name} serving");
    serve_until_signal(signals, "the monitor", mon.shutdown()).await
}

/// Runs an OSD until SIGTERM/SIGINT.
pub async fn run_osd(args: OsdArgs) -> Result<(), CliError> {
    let entity = quarry_conf::resolve_entity_as(&args.common, quarry_types::EntityType::Osd)
        .context("quarry osd needs --id N")?;
    let id: OsdId = entity
        .id
        .parse()
        .map_err(|_| anyhow!("the OSD id must be a number, not '{}'", entity.id))?;
    let conf = load_conf(&args.common)?;
    let mon_host = args
        .common
        .mon_host
        .clone()
        .or_else(|| conf.as_ref().and_then(|c| c.get(&entity, "mon_host")))
        .ok_or_else(|| anyhow!("no monitor address: pass -c CONF (with mon_host) or -m IP:PORT"))?;
    let mon_addrs = quarry_conf::parse_mon_host(&mon_host).context("mon_host")?;
    // -k wins; else the conf's keyring list, then DATA/keyring: the first holding osd.N.
    let mut candidates: Vec<PathBuf> = match (&args.common.keyring, conf.as_ref()) {
        (Some(list), _) => {
            list.split([',', ';', ' ']).filter(|p| !p.is_empty()).map(PathBuf::from).collect()
        }
        (None, Some(conf)) => {
            quarry_conf::keyring_search_paths(conf, &entity, &args.common.cluster)
        }
        (None, None) => Vec::new(),
    };
    candidates.retain(|p| p.is_file());
    candidates.push(args.data.join("keyring"));
    let mut key = Err(anyhow!("no keyring given (-k FILE)"));
    for path in &candidates {
        key = cluster::key_from(path, &entity);
        if key.is_ok() {
            break;
        }
    }
    let key = key?;
    let cfg = OsdConfig {
        id,
        data_dir: args.data.clone(),
        listen: args.addr.unwrap_or_else(|| stable_addr(&args.data)),
        mon_addrs,
        key,
        host: args.host.clone().unwrap_or_else(cluster::hostname),
    };
    let signals = Signals::new()?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let osd = quarry_osd::start(cfg).await.with_context(|| format!("starting osd.{id}"))?;
    remember_addr(&args.data, osd.addr());
    tracing::info!(addr = %osd.addr(), "osd.{id} serving");
    serve_until_signal(signals, &format!("osd.{id}"), osd.shutdown()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osd_address_is_kept_unless_taken() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stable_addr(dir.path()).port(), 0, "first start: any port");
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        remember_addr(dir.path(), addr);
        // Taken by someone else: a new port.
        assert_eq!(stable_addr(dir.path()).port(), 0);
        drop(free);
        assert_eq!(stable_addr(dir.path()), addr);
    }
}
