//! The daemon's boot script: open the data directory (WAL and store), bind the listener and
//! record its address, reach the monitor (boot, map, service keys), start the workers; and
//! the reverse on shutdown (stop accepting, stop the PG groups, checkpoint, release the WAL
//! and store locks). The state the tasks share is [`crate::osd::Osd`].

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio::task::JoinSet;

use quarry_raftlog::{Wal, WalOptions};
use quarry_store::{PlacementsAtOpen, Store, StoreOptions};
use quarry_wire::ClusterMap;

use crate::osd::Osd;
use crate::pg::apply::ApplyBatcher;
use crate::pg::durability::Durability;
use crate::pg::network::Peers;
use crate::pg::repair::{Damage, DamageMarks, Exports};
use crate::router::{GroupDeps, Router};
use crate::session::ServiceKeys;
use crate::{server, worker, DataDir, OsdConfig, OsdError};

/// How long `start` waits for the first monitor session (boot, map, keys).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests being handled at once, over all connections (each connection is also bounded).
pub(crate) const OPS_INFLIGHT_MAX: usize = 4096;
/// How long shutdown waits for the last references to the WAL and the store to go.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The running daemon, as `OsdHandle` holds it.
pub(crate) struct Running {
    pub(crate) osd: Arc<Osd>,
    tasks: JoinSet<()>,
    wal: Weak<Wal>,
    store: Weak<Store>,
}

/// Opens the WAL and the store; the store is checkpointed at once so the applied state it
/// reports (and Raft trusts as its snapshot) is durable, and compacted when the disk is
/// nearly full and the store holds much free space (`space::compact_at_open`).
/// Their caches are sized from the OSD's memory target (`osd_memory_target`).
async fn open_storage(
    data: &DataDir,
    ratios: quarry_types::FullRatios,
    limits: &quarry_types::ServerLimits,
) -> Result<(Arc<Wal>, Arc<Store>), OsdError> {
    data.create()?;
    let wal_dir = data.wal();
    let options = WalOptions {
        cache_bytes: limits.wal_cache_bytes(),
        ..wal_options(crate::space::fs_total(data.root()))
    };
    let cache_bytes = usize::try_from(limits.store_cache_bytes()).unwrap_or(usize::MAX);
    let meta_cache_bytes = usize::try_from(limits.meta_cache_bytes()).unwrap_or(usize::MAX);
    let wal = tokio::task::spawn_blocking(move || Wal::open(&wal_dir, options)).await??;
    let store_path = data.store();
    let root = data.root().to_path_buf();
    let wal_for_store = wal.clone();
    let store = tokio::task::spawn_blocking(move || -> Result<Store, OsdError> {
        // The placed writes of the entries not applied yet stay reserved (write-once).
        let log = wal_for_store.clone();
        let placements = move |states: &_| crate::pg::placer::placements_in_log(&log, states);
        let options = StoreOptions {
            methods: Some(Arc::new(quarry_cls::Classes::new())),
            cache_bytes,
            meta_cache_bytes,
            placements_at_open: Some(PlacementsAtOpen(Arc::new(placements))),
            ..StoreOptions::default()
        };
        let store = Store::open_with(&store_path, &options)?;
        store.checkpoint()?;
        let reopen = || Store::open_with(&store_path, &options);
        Ok(crate::space::compact_at_open(store, &store_path, &root, &ratios, reopen)?)
    })
    .await??;
    let store = Arc::new(store);
    // A round of the WAL holding entries is written only once the data they place is durable.
    let weak = Arc::downgrade(&store);
    wal.set_sync_hook(Some(Arc::new(move || weak.upgrade().map_or(Ok(()), |s| s.sync_placed()))));
    Ok((wal, store))
}

/// The WAL's options for a disk of `total` bytes: segments of 1/128 of the disk, between 1 and
/// 64 MiB. The active segment is deleted only after the next one starts, so its size is
/// space a small disk would never get back after deletes.
fn wal_options(total: u64) -> WalOptions {
    let segment_bytes = (total / 128).clamp(1 << 20, WalOptions::default().segment_bytes);
    WalOptions { segment_bytes, ..WalOptions::default() }
}

/// Boots an OSD: returns once it is registered with the monitor, acts on the current map
/// and accepts clients.
pub(crate) async fn start(
    cfg: OsdConfig,
    advertise: Option<SocketAddr>,
) -> Result<Running, OsdError> {
    let data = cfg.data();
    // Before the WAL and the store open: the open-files limit is raised and their
    // descriptors reserved, so clients can never take them (`quarry_wire::limits`).
    let budget = quarry_wire::limits::Budget::new(
        &format!("osd.{}", cfg.id),
        cfg.limits,
        quarry_wire::limits::FD_RESERVE_OSD,
    );
    let (wal, store) = open_storage(&data, cfg.full_ratios, &cfg.limits).await?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| OsdError::Listen { addr: cfg.listen, source })?;
    let listen_addr = listener.local_addr().map_err(|e| OsdError::io(&cfg.data_dir, e))?;
    let addr = advertise.unwrap_or(listen_addr);
    if let Err(e) = data.record_addr(listen_addr) {
        tracing::warn!(osd = cfg.id, error = %e, "cannot record the listening address");
    }
    let durability = Arc::new(Durability::new(store.clone()));
    let applier =
        Arc::new(ApplyBatcher::start(store.clone()).map_err(|e| OsdError::io(&cfg.data_dir, e))?);
    // Queue depth 1 runs its WAL round and its apply on the op's own thread (`pg::apply`'s
    // and `quarry_raftlog`'s "inline"): the gate is open while a client op is alone.
    let tracker = Arc::new(crate::optracker::OpTracker::default());
    let lone_op: crate::pg::apply::InlineGate = {
        let tracker = tracker.clone();
        Arc::new(move || tracker.alone())
    };
    applier.set_inline_gate(lone_op.clone());
    let (ticket, ticket_rx) = watch::channel(None);
    let map = watch::Sender::new(Arc::new(ClusterMap::default()));
    let (stop, _) = watch::channel(false);
    let (incoming_map, _) = watch::channel(None);
    let peers = Arc::new(Peers::new(cfg.id, map.subscribe(), ticket_rx));
    let (repair_tx, repair_rx) = mpsc::unbounded_channel();
    let damage = Arc::new(Damage::new(DamageMarks::new(data.damaged()), repair_tx));
    let write_once_min = Arc::new(std::sync::atomic::AtomicU64::new(cfg.write_once_min_bytes));
    let deps = GroupDeps {
        me: cfg.id,
        addr,
        store: store.clone(),
        applier,
        wal: wal.clone(),
        durability: durability.clone(),
        peers: peers.clone(),
        snapshot_dir: data.snapshots(),
        damage,
        exports: Exports::new(store.clone(), data.snapshots()),
        write_once_min: write_once_min.clone(),
        preplaced: crate::pg::preplace::Preplaced::new(store.clone()),
        lone_op,
    };
    let router = Router::new(deps, map, cfg.max_backfills, cfg.raft_heartbeat);
    let space =
        Arc::new(crate::space::Space::new(cfg.id, data.root(), data.store(), cfg.full_ratios));
    crate::tell::register_space(&space);
    crate::tell::register_write_once(&write_once_min);
    let osd = Arc::new(Osd {
        id: cfg.id,
        host: cfg.host,
        key: cfg.key,
        mon_addrs: cfg.mon_addrs,
        addr,
        listen_addr,
        router,
        keys: Arc::new(ServiceKeys::new()),
        durability,
        ticket,
        incoming_map,
        map_refresh: Notify::new(),
        ops: Semaphore::new(OPS_INFLIGHT_MAX),
        order: Default::default(),
        stop,
        watches: Default::default(),
        space,
        tracker,
    });
    let mut running = Running {
        osd: osd.clone(),
        tasks: JoinSet::new(),
        wal: Arc::downgrade(&wal),
        store: Arc::downgrade(&store),
    };
    drop((wal, store));
    let (ready_tx, ready_rx) = oneshot::channel();
    running.tasks.spawn(worker::monitor::run(osd.clone(), ready_tx));
    running.tasks.spawn(worker::maps::run(osd.clone()));
    running.tasks.spawn(worker::checkpoint::run(osd.clone()));
    running.tasks.spawn(crate::watch::run_reaper(osd.clone()));
    running.tasks.spawn(worker::snap_trim::run(osd.clone()));
    running.tasks.spawn(worker::repair::run(osd.clone(), repair_rx));
    running.tasks.spawn(worker::revive::run(osd.clone()));
    running.tasks.spawn(worker::rebalance::run(osd.clone()));
    running.tasks.spawn(crate::optracker::run_complaints(osd.tracker.clone()));
    match tokio::time::timeout(START_TIMEOUT, ready_rx).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => {
            let addrs = osd.mon_addrs.clone();
            running.shutdown().await;
            let last_error = "no monitor session within the start-up deadline".to_string();
            return Err(OsdError::MonUnreachable { addrs, last_error });
        }
    }
    running.tasks.spawn(server::accept_loop(osd.clone(), listener, budget));
    tracing::info!(osd = osd.id, %addr, pgs = osd.router.groups().len(), "osd up");
    Ok(running)
}

impl Running {
    /// Stops everything and releases the data directory.
    pub(crate) async fn shutdown(mut self) {
        let id = self.osd.id;
        self.osd.stop.send_replace(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.osd.router.shutdown_groups().await;
        if let Err(e) = self.osd.durability.checkpoint_now().await {
            tracing::error!(osd = id, error = %e, "final checkpoint failed (the WAL still has it)");
        }
        drop(self.osd);
        let deadline = tokio::time::Instant::now() + RELEASE_TIMEOUT;
        while self.wal.strong_count() + self.store.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(osd = id, "WAL or store still referenced after shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(osd = id, "osd stopped");
    }
}
