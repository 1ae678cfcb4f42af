//! `quarry up DIR [--osds N] [--port P]`: the embedded one-machine cluster — one monitor and
//! N OSDs in this process, each on its own 127.0.0.1 port, data under DIR (`DIR/mon`,
//! `DIR/osd.N`).
//!
//! First start generates the fsid and keys, chooses the monitor port (kept in `ceph.conf`
//! across restarts), bootstraps pool `rbd` (32 PGs, size 1, application rbd) and writes
//! `DIR/ceph.conf`, `DIR/ceph.client.admin.keyring`, `DIR/osd.N/keyring`, `DIR/env` and
//! `DIR/bin/{ceph,rados,rbd,quarry}` (links to this binary); `DIR/env` also puts `lib/`
//! beside the binary (Quarry's librados.so.2 and librbd.so.1, scripts/build-capi.sh) on
//! LD_LIBRARY_PATH. Later starts read those files and never bootstrap again. A `flock` on `DIR/quarry.lock` keeps a second `quarry up` off
//! the directory (exit 16). `ready` is printed once every PG of every pool answers (PGs with
//! fewer OSDs than their pool's `min_size` never do, and are not waited for); SIGINT or
//! SIGTERM stops the OSDs, then the monitor, prints `quarry up: stopped: SIGTERM received`
//! and exits 0; a failed start of the daemons ends with `quarry up: stopped: start-up failed:
//! ERROR` on stderr, exit 1.
//!
//! Logs go to `DIR/log/quarry-up.log` (or `--log-file`, or ceph.conf's `log_file`), with
//! stderr keeping warnings and errors: see `logging` for the options read.
//!
//! The daemons read their settings from `DIR/ceph.conf` as separate daemons do
//! (`MonConfig::from_conf`, `OsdConfig::from_conf`; each OSD's key from `DIR/osd.N/keyring`),
//! with Ceph's generic `--NAME VALUE` options of the command line over it (as `ceph-osd`
//! takes them: `quarry up DIR --mon_osd_nearfull_ratio 0.9`; for this run only);
//! problems in the file are logged as warnings at start, bad values stop the start.
//! The daemons share the process's file descriptors: each keeps its own connection budget
//! (`ms_max_connections`, ...), and their connections are counted together against the
//! open-files limit less every daemon's reserve for its own files (`quarry_wire::limits`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context as _};

use quarry_client::{ClientConfig, Rados};
use quarry_conf::{CommonArgs, Conf};
use quarry_mon::{MonConfig, MonHandle, MonOverrides};
use quarry_osd::{OsdConfig, OsdHandle, OsdOverrides};
use quarry_types::{EntityName, EntityType, PgId};

use crate::cluster::{self, ClusterSpec, SpecFiles as _, CONF_FILE};
use crate::daemon::{self, announce_ready, Signals};
use crate::error::CliError;
use crate::logging::LogSetup;

/// The pool every new `quarry up` cluster starts with: name, PGs, replicas.
const BOOTSTRAP_POOL: (&str, u32, u32) = ("rbd", 32, 1);
/// How long the cluster may take to serve every PG after the daemons started.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between two readiness checks.
const READY_POLL: Duration = Duration::from_millis(200);

/// `quarry up` arguments.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Cluster directory (created if missing).
    pub dir: PathBuf,
    /// Number of OSDs on first start, default 1 (later starts use the OSDs the directory has).
    #[arg(long)]
    pub osds: Option<u32>,
    /// Monitor port on 127.0.0.1 for the first start (default: a free port; kept afterwards).
    #[arg(long)]
    pub port: Option<u16>,
    /// Stay in the foreground (the default and only mode).
    #[arg(long)]
    pub foreground: bool,
    /// Log file (default: DIR/ceph.conf's log_file, else DIR/log/quarry-up.log).
    #[arg(long = "log-file", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Config options given as `--NAME VALUE` / `--NAME=VALUE` (Ceph's generic form, as its
    /// daemons take them: `--mon_osd_nearfull_ratio 0.9`), taken out of the arguments before
    /// parsing (main's `config_args`): they override `DIR/ceph.conf` for this run only.
    #[arg(skip)]
    pub config_overrides: Vec<(String, String)>,
}

/// `DIR/ceph.conf` with the command line's config options applied over it.
fn load_conf(path: &Path, overrides: &[(String, String)]) -> anyhow::Result<Conf> {
    let mut conf = Conf::from_file(path).with_context(|| format!("loading {}", path.display()))?;
    for (key, value) in overrides {
        conf.set_override(key, value).with_context(|| format!("option --{key} {value}"))?;
    }
    Ok(conf)
}

/// Writes `DIR/env` and the `DIR/bin` links, each only if it is missing or differs (so a
/// restart on a full disk writes nothing; the env file atomically). A failure is returned;
/// the caller decides whether it matters (see [`run`]).
fn write_env(dir: &Path) -> anyhow::Result<()> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    if let Ok(exe) = std::env::current_exe() {
        for tool in ["ceph", "rados", "rbd", "quarry"] {
            let link = bin.join(tool);
            if std::fs::read_link(&link).is_ok_and(|target| target == exe) {
                continue;
            }
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&exe, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    // Quarry's librados.so.2 / librbd.so.1 live in `lib/` beside the binary
    // (scripts/build-capi.sh), so stock qemu-img, fio and python3-rbd use this cluster.
    let lib = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|p| p.join("lib")))
        .map(|lib| {
            format!(
                "export LD_LIBRARY_PATH={}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\n",
                lib.display()
            )
        })
        .unwrap_or_default();
    let text = format!(
        "# Source this file (. {d}/env) to point Ceph's tools at this cluster.\n\
         export CEPH_CONF={d}/{CONF_FILE}\n\
         export PATH={d}/bin:$PATH\n\
         {lib}",
        d = dir.display()
    );
    let path = dir.join("env");
    if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    cluster::write_atomic(&path, text.as_bytes(), 0o644)
}

/// Loads the cluster of `dir`, or creates it on first start.
fn load_or_create(dir: &Path, args: &UpArgs) -> anyhow::Result<(ClusterSpec, bool)> {
    if dir.join(CONF_FILE).exists() {
        let spec = ClusterSpec::load(dir)?;
        if let Some(osds) = args.osds.filter(|&n| n as usize != spec.osd_keys.len()) {
            tracing::warn!(
                "{} already has {} OSDs; --osds {osds} applies to a new cluster only",
                dir.display(),
                spec.osd_keys.len()
            );
        }
        return Ok((spec, false));
    }
    if cluster::has_entries(&dir.join("mon")) {
        return Err(anyhow!(
            "{} holds monitor data but {} is missing: restore it, or use an empty directory",
            dir.join("mon").display(),
            dir.join(CONF_FILE).display()
        ));
    }
    let osds = args.osds.unwrap_or(1);
    if osds == 0 {
        return Err(anyhow!("--osds must be at least 1"));
    }
    let port = match args.port {
        Some(p) => p,
        None => cluster::free_port()?,
    };
    let spec = ClusterSpec::generate(osds, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    spec.write_files(dir, BOOTSTRAP_POOL.2, "quarry up")?;
    Ok((spec, true))
}

/// The running daemons.
struct Daemons {
    mon: Option<MonHandle>,
    osds: Vec<(u64, OsdHandle)>,
}

impl Daemons {
    /// OSDs first (they hold client sessions and report to the monitor), then the monitor.
    /// Returns the daemons that did not stop in time (`osd.0 did not stop within 30s`).
    async fn shutdown(mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for (id, osd) in self.osds.drain(..) {
            if let Err(e) = daemon::stop(&format!("osd.{id}"), osd.shutdown()).await {
                tracing::warn!("{e}");
                problems.push(e.to_string());
            }
        }
        if let Some(mon) = self.mon.take() {
            if let Err(e) = daemon::stop("the monitor", mon.shutdown()).await {
                tracing::warn!("{e}");
                problems.push(e.to_string());
            }
        }
        problems
    }
}

async fn start_daemons(
    dir: &Path,
    spec: &ClusterSpec,
    overrides: &[(String, String)],
    daemons: &mut Daemons,
) -> anyhow::Result<()> {
    let conf_path = dir.join(CONF_FILE);
    let conf = load_conf(&conf_path, overrides)?;
    daemon::log_conf_problems(&conf);
    let host = quarry_conf::local_hostname();
    let mon_args = CommonArgs { id: Some("a".into()), ..CommonArgs::default() };
    // A one-machine cluster keeps one replica unless its ceph.conf says otherwise.
    let mon_entity = EntityName { kind: EntityType::Mon, id: "a".into() };
    let size_set = conf.get_raw(&mon_entity, "osd_pool_default_size").is_some();
    let overrides = MonOverrides {
        pool_default_size: (!size_set).then_some(BOOTSTRAP_POOL.2),
        ..MonOverrides::default()
    };
    let mut cfg = MonConfig::from_conf(&conf, &mon_args, dir.join("mon"), &overrides)
        .with_context(|| format!("configuring the monitor from {}", conf_path.display()))?;
    if !cfg.has_data() {
        let (name, pg_num, size) = BOOTSTRAP_POOL;
        cfg.bootstrap =
            Some(spec.bootstrap(|_| host.clone(), vec![(name.to_string(), pg_num, size)]));
    }
    let listen = cfg.listen;
    let mon = quarry_mon::start(cfg)
        .await
        .with_context(|| format!("starting the monitor on {listen}"))?;
    daemons.mon = Some(mon);
    for id in spec.osd_keys.keys() {
        let args = CommonArgs { id: Some(id.to_string()), ..CommonArgs::default() };
        let overrides = OsdOverrides { host: Some(host.clone()), ..OsdOverrides::default() };
        let data = dir.join(format!("osd.{id}"));
        let cfg = OsdConfig::from_conf(&conf, &args, data.clone(), &overrides)
            .with_context(|| format!("configuring osd.{id} from {}", conf_path.display()))?;
        let (osd_conf, cfg) =
            daemon::with_central_config(conf.clone(), cfg, &args, &data, &overrides).await?;
        if daemons.osds.is_empty() {
            // `ceph tell osd.N`'s options as the first OSD reads them (one process).
            crate::logging::register_osd_knobs(&osd_conf, &EntityName::osd(*id));
        }
        let osd = quarry_osd::start(cfg).await.with_context(|| format!("starting osd.{id}"))?;
        daemons.osds.push((*id, osd));
    }
    Ok(())
}

/// Waits until every OSD is up and every PG of every pool answers a listing.
async fn wait_ready(spec: &ClusterSpec) -> anyhow::Result<()> {
    let cfg = ClientConfig {
        mon_addrs: vec![spec.mon_addr],
        entity: EntityName::client("admin"),
        key: spec.admin_key.clone(),
        connect_timeout: Duration::from_secs(30),
        op_timeout: Some(Duration::from_secs(10)),
        mon_op_timeout: Some(Duration::from_secs(10)),
        fsid: None,
        local_options: Default::default(),
    };
    let rados =
        Rados::connect(cfg).await.context("connecting to the new cluster as client.admin")?;
    let result =
        tokio::time::timeout(READY_TIMEOUT, probe_until_ready(&rados, spec.osd_keys.len())).await;
    rados.shutdown().await;
    match result {
        Ok(r) => r,
        Err(_) => {
            Err(anyhow!("the cluster did not serve every placement group within {READY_TIMEOUT:?}"))
        }
    }
}

async fn probe_until_ready(rados: &Rados, osds: usize) -> anyhow::Result<()> {
    loop {
        if probe(rados, osds).await {
            return Ok(());
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

async fn probe(rados: &Rados, osds: usize) -> bool {
    let report = match rados.status_report().await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "status not available yet");
            return false;
        }
    };
    // PGs with fewer OSDs than their pool's min_size never serve (their I/O is refused until
    // an operator changes the pool): waiting for them would only time out the start.
    let below_min_size = |pool: &quarry_client::PoolInfo, seed: u32| {
        pool.acting.get(seed as usize).is_none_or(|a| a.len() < pool.min_size as usize)
    };
    let hopeless: u64 = report
        .pools
        .iter()
        .map(|p| (0..p.pg_num).filter(|&seed| below_min_size(p, seed)).count() as u64)
        .sum();
    if (report.osds.1 as usize) < osds || report.pgs.1 + hopeless < report.pgs.0 {
        tracing::debug!(osds = ?report.osds, pgs = ?report.pgs, "waiting for OSDs and PGs");
        return false;
    }
    for pool in report.pools.iter() {
        for seed in (0..pool.pg_num).filter(|&seed| !below_min_size(pool, seed)) {
            if let Err(e) = rados.list_pg(PgId { pool: pool.id, seed }, None, 1).await {
                tracing::debug!(pool = %pool.name, seed, error = %e, "PG not serving yet");
                return false;
            }
        }
    }
    true
}

fn banner(dir: &Path, spec: &ClusterSpec, fresh: bool) {
    let d = dir.display();
    let osds = spec.osd_keys.len();
    crate::outln!(
        "quarry up: cluster {} {} — 1 monitor ({}), {osds} OSD{}, data in {d}",
        spec.fsid,
        if fresh { "created" } else { "started" },
        spec.mon_addr,
        if osds == 1 { "" } else { "s" }
    );
    crate::outln!("  conf:     {d}/{CONF_FILE}");
    crate::outln!("  keyring:  {d}/{}", cluster::ADMIN_KEYRING);
    crate::outln!("  use it:   . {d}/env && ceph -s");
    crate::outln!("  stop:     Ctrl-C (the data stays; `quarry up {d}` starts it again)");
}

/// Sets up logging from `DIR/ceph.conf` (if it is there and parses; a bad file is reported
/// when the daemons read it) and `--log-file`.
fn init_logging(dir: &Path, args: &UpArgs) {
    let conf = load_conf(&dir.join(CONF_FILE), &args.config_overrides).unwrap_or_default();
    LogSetup::up(&conf, dir, args.log_file.as_deref()).init().open();
    // `ceph tell osd.N`: the options as osd.0 reads them; the levels are the process's.
    let osd = quarry_types::EntityName { kind: quarry_types::EntityType::Osd, id: "0".into() };
    crate::logging::register_osd_knobs(&conf, &osd);
}

/// Says why `quarry up` stopped (and which daemons did not stop in time): the last line of
/// its stdout, and of its log.
fn stopped(why: &str, problems: &[String]) {
    let mut line = why.to_string();
    if !problems.is_empty() {
        line = format!("{line} ({})", problems.join("; "));
    }
    tracing::info!("stopped: {line}");
    crate::outln!("quarry up: stopped: {line}");
}

/// Runs the embedded cluster until SIGINT/SIGTERM.
pub async fn run(args: UpArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.dir).map_err(|e| CliError::io(&args.dir, e))?;
    let dir = cluster::absolute(&args.dir)?;
    let _lock = cluster::lock_dir(&dir)?;
    init_logging(&dir, &args);
    let (spec, fresh) = load_or_create(&dir, &args)?;
    // The env file and links are conveniences: a start must not fail for them (a full disk
    // is when an operator needs the cluster up, to delete objects).
    if let Err(e) = write_env(&dir) {
        tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"),
            "cannot write the env file or tool links; starting anyway");
    }
    let mut signals = Signals::new()?;
    let mut daemons = Daemons { mon: None, osds: Vec::new() };
    let started = tokio::select! {
        r = async {
            start_daemons(&dir, &spec, &args.config_overrides, &mut daemons).await?;
            wait_ready(&spec).await
        } => Ok(r),
        sig = signals.recv() => {
            tracing::info!("{sig} received during start-up: stopping");
            Err(sig)
        }
    };
    match started {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            // The last line, on stderr (printed by main): `quarry up: stopped: start-up
            // failed: starting osd.0: …`.
            tracing::info!("start-up failed: {e:#}; stopping the daemons");
            daemons.shutdown().await;
            return Err(CliError::UpFailed(e));
        }
        Err(sig) => {
            let problems = daemons.shutdown().await;
            stopped(&format!("{sig} received during start-up"), &problems);
            return Ok(());
        }
    }
    banner(&dir, &spec, fresh);
    announce_ready();
    let sig = signals.recv().await;
    tracing::info!("{sig} received: stopping the OSDs, then the monitor");
    let problems = daemons.shutdown().await;
    stopped(&format!("{sig} received"), &problems);
    Ok(())
}
