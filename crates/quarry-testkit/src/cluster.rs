//! The in-process cluster: one monitor and N OSDs in this process, on 127.0.0.1, with data in
//! a temporary directory laid out as `quarry up` lays it out (`DIR/mon`, `DIR/osd.N`).
//!
//! It is bootstrapped the way production bootstraps: a `quarry_mon::ClusterSpec` (fresh fsid,
//! `client.admin` and `osd.N` keys, their caps) turned into the monitor's `Bootstrap` by
//! `ClusterSpec::bootstrap`, the code `quarry up` and `quarry cluster-init` use. Tests add
//! extra users ([`Builder::user`]) and choose pools; each OSD is on its own host (`host{id}`)
//! so replicated pools can place replicas, where `quarry up` puts all on this machine.
//!
//! Hooks: stop, start and restart an OSD or the monitor on the same data directory (the
//! monitor on the same address, so everyone finds it again); take an OSD's handle to drive it
//! directly; proxies on the OSD-to-monitor links ([`Builder::mon_links`]), in front of each
//! OSD ([`Builder::osd_fronts`]: every client and peer connection to it) and for clients to
//! the monitor ([`Cluster::proxy_to_mon`]); disk damage to a stopped daemon ([`Cluster::damage_osd`]).
//! Every cluster carries a [`LogGuard`], checked by [`Cluster::shutdown`] after the daemons
//! stopped (or on drop).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quarry_auth::CryptoKey;
use quarry_client::{ClientConfig, Rados};
use quarry_mon::{ClusterSpec, MonConfig, MonHandle};
use quarry_osd::{OsdConfig, OsdHandle};
use quarry_types::{EntityName, OsdId};

use crate::fault::DiskFault;
use crate::logs::{log_guard, LogGuard};
use crate::proxy::Proxy;

/// How long [`Cluster::wait_osds_up`] waits.
const UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of a test cluster; [`Builder::start`] starts it.
pub struct Builder {
    osds: u32,
    pools: Vec<(String, u32, u32)>,
    users: Vec<(String, BTreeMap<String, String>)>,
    start_osds: bool,
    mon_links: bool,
    osd_fronts: bool,
    osd_grace: Duration,
    ticket_ttl: Duration,
    pool_default_pg_num: u32,
    pool_default_size: u32,
    raft_heartbeat: Duration,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            osds: 3,
            pools: vec![("rbd".into(), 16, 1)],
            users: Vec::new(),
            start_osds: true,
            mon_links: false,
            osd_fronts: false,
            osd_grace: Duration::from_secs(2),
            ticket_ttl: Duration::from_secs(300),
            pool_default_pg_num: 8,
            pool_default_size: 1,
            raft_heartbeat: quarry_osd::DEFAULT_RAFT_HEARTBEAT,
        }
    }
}

impl Builder {
    /// Number of OSDs, ids `0..n` (default 3).
    pub fn osds(mut self, n: u32) -> Builder {
        self.osds = n;
        self
    }

    /// The bootstrap pools: (name, pg_num, size), application `rbd` enabled (default: `rbd`,
    /// 16 PGs, size 1).
    pub fn pools(mut self, pools: Vec<(&str, u32, u32)>) -> Builder {
        self.pools = pools.into_iter().map(|(n, p, s)| (n.to_string(), p, s)).collect();
        self
    }

    /// An extra entity `client.NAME` with caps given as (service, cap) pairs; its key is
    /// [`Cluster::user_key`].
    pub fn user(mut self, name: &str, caps: &[(&str, &str)]) -> Builder {
        let caps = caps.iter().map(|(s, c)| (s.to_string(), c.to_string())).collect();
        self.users.push((name.to_string(), caps));
        self
    }

    /// Start the monitor only; OSDs are registered (keys, hosts) and started by the test with
    /// [`Cluster::start_osd`].
    pub fn monitor_only(mut self) -> Builder {
        self.start_osds = false;
        self
    }

    /// Put a [`Proxy`] on each OSD's link to the monitor ([`Cluster::mon_link`]).
    pub fn mon_links(mut self) -> Builder {
        self.mon_links = true;
        self
    }

    /// Put a [`Proxy`] in front of each OSD ([`Cluster::osd_front`]): the OSD registers the
    /// proxy's address, so every client and peer connection to it goes through the proxy (and
    /// the OSD keeps its address across restarts).
    pub fn osd_fronts(mut self) -> Builder {
        self.osd_fronts = true;
        self
    }

    /// Beacon silence after which the monitor marks an OSD down (default 2 s).
    pub fn osd_grace(mut self, grace: Duration) -> Builder {
        self.osd_grace = grace;
        self
    }

    /// Ticket lifetime (default 300 s).
    pub fn ticket_ttl(mut self, ttl: Duration) -> Builder {
        self.ticket_ttl = ttl;
        self
    }

    /// PGs of a pool created without `pg_num` (default 8).
    pub fn pool_default_pg_num(mut self, pg_num: u32) -> Builder {
        self.pool_default_pg_num = pg_num;
        self
    }

    /// Replicas of a pool created without `size` (default 1).
    pub fn pool_default_size(mut self, size: u32) -> Builder {
        self.pool_default_size = size;
        self
    }

    /// The OSDs' `osd_raft_heartbeat_interval` (default 1 s; elections start after 2.5 to 5
    /// of them without a leader).
    pub fn raft_heartbeat(mut self, interval: Duration) -> Builder {
        self.raft_heartbeat = interval;
        self
    }

    /// Starts the monitor, then (unless [`Builder::monitor_only`]) every OSD, and waits until
    /// the monitor's map shows them up.
    pub async fn start(self) -> Cluster {
        let logs = log_guard();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut spec = ClusterSpec::generate(self.osds, "127.0.0.1:0".parse().unwrap());
        let mut bootstrap = spec.bootstrap(host_of, self.pools.clone());
        let mut user_keys = BTreeMap::new();
        for (name, caps) in &self.users {
            let key = CryptoKey::generate();
            bootstrap.entities.push((EntityName::client(name), key.clone(), caps.clone()));
            user_keys.insert(name.clone(), key);
        }
        let mut mon_cfg = MonConfig::new("a", dir.path().join("mon"), spec.mon_addr);
        mon_cfg.bootstrap = Some(bootstrap);
        mon_cfg.full_ratios = crate::HOST_DISK_RATIOS;
        mon_cfg.osd_grace = self.osd_grace;
        mon_cfg.ticket_ttl = self.ticket_ttl;
        mon_cfg.pool_default_pg_num = self.pool_default_pg_num;
        mon_cfg.pool_default_size = self.pool_default_size;
        let mon = quarry_mon::start(mon_cfg.clone()).await.expect("the monitor starts");
        // Later starts (restart_mon) reuse the address everyone knows.
        spec.mon_addr = mon.addr();
        mon_cfg.listen = mon.addr();
        let mut mon_links = BTreeMap::new();
        if self.mon_links {
            for id in spec.osd_keys.keys() {
                let proxy = Proxy::start(spec.mon_addr).await.expect("proxy starts");
                mon_links.insert(*id, proxy);
            }
        }
        let mut osd_fronts = BTreeMap::new();
        if self.osd_fronts {
            for id in spec.osd_keys.keys() {
                // The target is set once the OSD listens (see `launch`).
                let proxy = Proxy::start(NO_TARGET.into()).await.expect("proxy starts");
                osd_fronts.insert(*id, proxy);
            }
        }
        let mut cluster = Cluster {
            osds: spec.osd_keys.keys().map(|id| (*id, None)).collect(),
            osd_fronts,
            dir,
            spec,
            mon_cfg,
            mon: Some(mon),
            mon_links,
            user_keys,
            raft_heartbeat: self.raft_heartbeat,
            logs,
        };
        if self.start_osds {
            let starts: Vec<_> = cluster
                .osds
                .keys()
                .map(|id| {
                    let front = cluster.osd_fronts.get(id).map(Proxy::addr);
                    tokio::spawn(launch(cluster.osd_config(*id), front))
                })
                .collect();
            let ids: Vec<OsdId> = cluster.osds.keys().copied().collect();
            for (id, started) in ids.into_iter().zip(starts) {
                let handle = started.await.expect("OSD start task").expect("the OSD starts");
                cluster.aim_front(id, &handle);
                cluster.osds.insert(id, Some(handle));
            }
            cluster.wait_osds_up().await;
        }
        cluster
    }
}

/// Where a front proxy points before its OSD listens (nothing answers on port 1).
const NO_TARGET: ([u8; 4], u16) = ([127, 0, 0, 1], 1);

/// Starts an OSD, registering `front` as its address if it has a front proxy.
async fn launch(
    cfg: OsdConfig,
    front: Option<SocketAddr>,
) -> Result<OsdHandle, quarry_osd::OsdError> {
    match front {
        Some(addr) => quarry_osd::start_advertising(cfg, addr).await,
        None => quarry_osd::start(cfg).await,
    }
}

/// The host the kit puts OSD `id` on.
pub fn host_of(id: OsdId) -> String {
    format!("host{id}")
}

/// A running test cluster (see the module doc).
pub struct Cluster {
    dir: tempfile::TempDir,
    spec: ClusterSpec,
    mon_cfg: MonConfig,
    mon: Option<MonHandle>,
    osds: BTreeMap<OsdId, Option<OsdHandle>>,
    osd_fronts: BTreeMap<OsdId, Proxy>,
    mon_links: BTreeMap<OsdId, Proxy>,
    user_keys: BTreeMap<String, CryptoKey>,
    raft_heartbeat: Duration,
    logs: LogGuard,
}

impl Cluster {
    /// Options, starting from the defaults (3 OSDs, pool `rbd` of 16 PGs, size 1).
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A cluster with the defaults.
    pub async fn start() -> Cluster {
        Builder::default().start().await
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The monitor's data directory.
    pub fn mon_dir(&self) -> PathBuf {
        self.mon_cfg.data_dir.clone()
    }

    /// OSD `id`'s data directory.
    pub fn osd_dir(&self, id: OsdId) -> PathBuf {
        self.dir.path().join(format!("osd.{id}"))
    }

    /// The cluster's identity (fsid, monitor address, keys), as production keeps it.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The monitor's address (stable across [`Cluster::restart_mon`]).
    pub fn mon_addr(&self) -> SocketAddr {
        self.spec.mon_addr
    }

    /// `client.admin`'s key.
    pub fn admin_key(&self) -> &CryptoKey {
        &self.spec.admin_key
    }

    /// `osd.id`'s key.
    pub fn osd_key(&self, id: OsdId) -> &CryptoKey {
        &self.spec.osd_keys[&id]
    }

    /// The key of `client.NAME` added with [`Builder::user`].
    pub fn user_key(&self, name: &str) -> &CryptoKey {
        &self.user_keys[name]
    }

    /// The OSD ids of the cluster.
    pub fn osd_ids(&self) -> Vec<OsdId> {
        self.osds.keys().copied().collect()
    }

    /// The running monitor (panics if stopped).
    pub fn mon(&self) -> &MonHandle {
        self.mon.as_ref().expect("the monitor is running")
    }

    /// Running OSD `id` (panics if stopped).
    pub fn osd(&self, id: OsdId) -> &OsdHandle {
        self.osds[&id].as_ref().unwrap_or_else(|| panic!("osd.{id} is not running"))
    }

    /// Whether OSD `id` runs in the cluster.
    pub fn osd_running(&self, id: OsdId) -> bool {
        self.osds.get(&id).is_some_and(Option::is_some)
    }

    /// The log guard: declare expected WARN/ERROR lines with `.expect` / `.allow`.
    pub fn logs(&self) -> &LogGuard {
        &self.logs
    }

    /// The proxy on OSD `id`'s link to the monitor (needs [`Builder::mon_links`]).
    pub fn mon_link(&self, id: OsdId) -> &Proxy {
        self.mon_links.get(&id).expect("mon_link: build the cluster with .mon_links()")
    }

    /// The proxy in front of OSD `id` (needs [`Builder::osd_fronts`]): cutting it cuts every
    /// client and peer connection to that OSD (its own connections out stay).
    pub fn osd_front(&self, id: OsdId) -> &Proxy {
        self.osd_fronts.get(&id).expect("osd_front: build the cluster with .osd_fronts()")
    }

    /// Points OSD `id`'s front proxy (if any) at the OSD's listener.
    fn aim_front(&self, id: OsdId, handle: &OsdHandle) {
        if let Some(front) = self.osd_fronts.get(&id) {
            front.set_target(handle.listen_addr());
        }
    }

    /// A new proxy to the monitor, for a client: use `config_via(&proxy, ...)`.
    pub async fn proxy_to_mon(&self) -> Proxy {
        Proxy::start(self.mon_addr()).await.expect("proxy starts")
    }

    /// What OSD `id` is started with: its data directory, key and host, any free port, and
    /// the monitor (through its link proxy if there is one).
    pub fn osd_config(&self, id: OsdId) -> OsdConfig {
        let mon = self.mon_links.get(&id).map_or(self.mon_addr(), Proxy::addr);
        OsdConfig {
            id,
            data_dir: self.osd_dir(id),
            listen: "127.0.0.1:0".parse().unwrap(),
            mon_addrs: vec![mon],
            key: self.osd_key(id).clone(),
            host: host_of(id),
            full_ratios: crate::HOST_DISK_RATIOS,
            limits: quarry_types::ServerLimits::defaults(quarry_types::DaemonKind::Osd),
            max_backfills: 1,
            raft_heartbeat: self.raft_heartbeat,
            write_once_min_bytes: quarry_osd::DEFAULT_WRITE_ONCE_MIN_BYTES,
        }
    }

    /// Starts OSD `id` on its data directory; errors are the OSD's.
    pub async fn try_start_osd(&mut self, id: OsdId) -> Result<(), quarry_osd::OsdError> {
        assert!(!self.osd_running(id), "osd.{id} is already running");
        let front = self.osd_fronts.get(&id).map(Proxy::addr);
        let handle = launch(self.osd_config(id), front).await?;
        self.aim_front(id, &handle);
        self.osds.insert(id, Some(handle));
        Ok(())
    }

    /// Starts OSD `id` on its data directory (panics if it fails).
    pub async fn start_osd(&mut self, id: OsdId) -> &OsdHandle {
        if let Err(e) = self.try_start_osd(id).await {
            panic!("osd.{id} failed to start: {e}");
        }
        self.osd(id)
    }

    /// Starts OSD `id` on its data directory and hands its handle to the test, which stops
    /// it (the cluster does not track it: [`Cluster::osd_running`] stays false).
    pub async fn start_osd_detached(&self, id: OsdId) -> OsdHandle {
        assert!(!self.osd_running(id), "osd.{id} is already running in the cluster");
        let front = self.osd_fronts.get(&id).map(Proxy::addr);
        let handle = launch(self.osd_config(id), front)
            .await
            .unwrap_or_else(|e| panic!("osd.{id} failed to start: {e}"));
        self.aim_front(id, &handle);
        handle
    }

    /// Stops OSD `id` cleanly; its data directory stays.
    pub async fn stop_osd(&mut self, id: OsdId) {
        self.take_osd(id).shutdown().await;
    }

    /// Stops OSD `id` and starts it again on the same data directory (a new port; the same
    /// registered address behind a front proxy).
    pub async fn restart_osd(&mut self, id: OsdId) -> &OsdHandle {
        self.stop_osd(id).await;
        self.start_osd(id).await
    }

    /// Takes OSD `id`'s handle out of the cluster (the test stops it; the cluster counts it
    /// as stopped).
    pub fn take_osd(&mut self, id: OsdId) -> OsdHandle {
        let slot = self.osds.get_mut(&id).unwrap_or_else(|| panic!("no osd.{id}"));
        slot.take().unwrap_or_else(|| panic!("osd.{id} is not running"))
    }

    /// Stops the monitor cleanly; its data directory and address stay.
    pub async fn stop_mon(&mut self) {
        self.mon.take().expect("the monitor is running").shutdown().await;
    }

    /// Starts the monitor on its data directory and address (its bootstrap is not applied
    /// again: the monitor applies it only to a new group).
    pub async fn start_mon(&mut self) -> &MonHandle {
        assert!(self.mon.is_none(), "the monitor is already running");
        let mon = quarry_mon::start(self.mon_cfg.clone()).await.expect("the monitor restarts");
        self.mon.insert(mon)
    }

    /// Stops the monitor and starts it again.
    pub async fn restart_mon(&mut self) -> &MonHandle {
        self.stop_mon().await;
        self.start_mon().await
    }

    /// Damages stopped OSD `id`'s data directory (see [`crate::fault`]).
    pub fn damage_osd(&self, id: OsdId, fault: &DiskFault) {
        assert!(!self.osd_running(id), "damage_osd: stop osd.{id} first");
        fault.apply(&self.osd_dir(id)).expect("disk fault applies");
    }

    /// Damages the stopped monitor's data directory.
    pub fn damage_mon(&self, fault: &DiskFault) {
        assert!(self.mon.is_none(), "damage_mon: stop the monitor first");
        fault.apply(&self.mon_dir()).expect("disk fault applies");
    }

    /// Waits until every running OSD is up (at its current incarnation) in the monitor's map.
    pub async fn wait_osds_up(&self) {
        let deadline = tokio::time::Instant::now() + UP_TIMEOUT;
        loop {
            let map = self.mon().map();
            let all_up =
                self.osds.iter().filter_map(|(id, h)| Some((id, h.as_ref()?))).all(|(id, h)| {
                    map.osds.get(id).is_some_and(|o| o.up && o.addr == Some(h.addr()))
                });
            if all_up {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "OSDs not up in time: {:?}", map.osds);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Client settings for `entity` with `key`, reaching the monitor directly.
    pub fn config(&self, entity: EntityName, key: CryptoKey) -> ClientConfig {
        ClientConfig {
            mon_addrs: vec![self.mon_addr()],
            entity,
            key,
            connect_timeout: Duration::from_secs(10),
            op_timeout: Some(Duration::from_secs(60)),
            mon_op_timeout: Some(Duration::from_secs(60)),
            fsid: None,
            local_options: Default::default(),
        }
    }

    /// Client settings for `client.admin`.
    pub fn admin_config(&self) -> ClientConfig {
        self.config(EntityName::client("admin"), self.admin_key().clone())
    }

    /// Client settings for `client.NAME` added with [`Builder::user`].
    pub fn user_config(&self, name: &str) -> ClientConfig {
        self.config(EntityName::client(name), self.user_key(name).clone())
    }

    /// A connected `client.admin`.
    pub async fn admin(&self) -> Rados {
        Rados::connect(self.admin_config()).await.expect("client.admin connects")
    }

    /// Stops the OSDs, then the monitor (as `quarry up` stops), then checks the log guard.
    pub async fn shutdown(mut self) {
        for handle in self.osds.values_mut().filter_map(Option::take) {
            handle.shutdown().await;
        }
        if let Some(mon) = self.mon.take() {
            mon.shutdown().await;
        }
        self.mon_links.clear();
        self.osd_fronts.clear();
        self.logs.check();
    }
}
