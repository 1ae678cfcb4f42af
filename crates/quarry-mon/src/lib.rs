//! The monitor: the cluster's agreed state, kept in a Raft group, served to clients and OSDs.
//!
//! # What it owns
//! - The cluster map (`quarry_wire::ClusterMap`): pools with their acting sets (computed once
//!   with `quarry_placement::place` over the OSDs that are `in`, when the pool is created),
//!   OSDs (address, host, up/in, reweight, incarnation `up_from`), monitors, `auth_floor`,
//!   blocklist; pools carry Ceph's flags (`nodelete`, `full_quota`, ...) and quotas.
//! - The central config (`ceph config set`), and who added each blocklist entry.
//! - The auth database: entity -> (key, caps).
//! - The rotating service keys (`quarry_auth::ServiceKeyRing`: current + previous) that
//!   tickets are sealed under and OSDs open them with.
//! - Counters: next global id (reserved in batches of 1024), next pool id (never reused).
//!
//! All of it is [`state::MonState`], the state machine of an openraft group (group id 0)
//! whose log is in a `quarry_raftlog::Wal` under `DATA_DIR/wal`.
//!
//! # Configuration
//! [`MonConfig`] (module `config`): [`MonConfig::from_conf`] reads the monitor's options from
//! ceph.conf for `mon.ID` (`[mon.ID]` > `[mon]` > `[global]`): `mon_host` (listening address,
//! unless `--addr`), `osd_pool_default_size`, `osd_pool_default_pg_num`,
//! `auth_service_ticket_ttl`, and for `--mkfs` ([`Mkfs`]) `fsid` and `keyring`; the command
//! line's values come in as [`MonOverrides`] and win. A value that does not parse or is out
//! of range is [`MonError::Conf`], naming the option, the value and the line. Warnings about
//! unknown keys are the caller's to log (`quarry_conf::validate`), once per process.
//!
//! # Replicated log operations ([`log_op::Op`])
//! Bootstrap (once, as the first command of a new group), SetMonAddr, PoolCreate, PoolRm,
//! PoolApplicationEnable, SnapCreate/SnapRemove (self-managed ids: per-pool `snap_seq`,
//! `removed_snaps`), PoolSnapCreate/PoolSnapRemove (named pool snapshots with a stamp, from the
//! same `snap_seq`; a pool uses one kind or the other, never both: EINVAL as Ceph),
//! OsdBoot (registers an unknown id only if `osd.N` has a key; sets addr/host/up and bumps
//! `up_from` to the new epoch), OsdDown, AuthGetOrCreate/AuthCaps/AuthDel/AuthImport (caps
//! validated with `quarry_auth::Caps::parse`; caps changes and deletions set
//! `auth_floor[entity]` to the second after the proposer's clock, so tickets issued in the
//! same second as the change are revoked too, and tickets issued after it are stamped no
//! earlier than the floor), BlocklistAdd, RotateServiceKey,
//! AllocGlobalIds; since version 3: BlocklistAddBy (records the adder, bounds per adder),
//! PoolSet (`osd pool set`, `set-quota`), PoolRename, PoolQuotaFull (the leader's quota
//! check, `tasks::quota_full`), OsdMark (`osd out|in|down|reweight`), ConfigSet (the central
//! config, `MonState::config`; its rules in `config_db`); since version 4: PgRemapped (a PG's
//! primary committed its move to the up set: acting = up; `Request::PgRemapped`), OsdAutoOut
//! (`tasks::down_out`, after `mon_osd_down_out_interval`); since version 5: PgMerged (the
//! target PG's primary applied a merge the map marks: `pg_num` drops by one;
//! `Request::PgMerged`). A `pg_num` decrease records Ceph's `pg_num_target` and the
//! monitor steps it one PG at a time (`MonState`'s merge steps, run with every map change):
//! the last PG's up set becomes its split parent's, and once both act on the same OSDs, all
//! up, the merge is marked (`pg_num_pending = pg_num - 1`, PG state `premerge`); neither
//! PG changes members until the report (the OSD side: `quarry_osd`'s `pg::merge`). Pool size changes, OSDs out, in,
//! booted for the first time or marked out recompute the pools' up sets (`MonState::remap`);
//! an OSD marked down hands the primary role of its PGs to a member that is up. Every change to the map bumps its epoch; subscribers get the newest map
//! (a subscriber that has not read the previous one yet gets only the newest when it does:
//! maps are coalesced, so a reader that never reads holds at most one map in the monitor).
//!
//! # Blocklist
//! Entries carry an expiry (`osd blocklist add ADDR [EXPIRE]`, default 3600 s as Ceph's);
//! an expired entry fences nothing, and the leader removes expired entries from the map
//! every [`BLOCKLIST_EXPIRE_PERIOD`] (`BlocklistRm`, at most 64 a round). A new entry is
//! refused with ENOSPC once the live entries *the adding entity* added (recorded in
//! `MonState::blocklist_adders`) reach `mon_blocklist_max` (default 1000) for an entity
//! without `auth` rights on the monitor, 65536 for an admin (`BlocklistAddBy`); `ceph
//! health` warns from half of `mon_blocklist_max`, with the map's size.
//! The admin commands clients send (`MonCommand`) are checked and turned into these ops in
//! `admin.rs`.
//!
//! # Determinism rule
//! Apply reads no clock and draws no random number: the proposer puts its clock
//! (`Proposal::now_unix`) and every new secret (entity keys, service keys) in the command.
//! Validation that depends on the state happens in apply, so a refused command is refused
//! identically on every monitor and changes nothing. Ticket session keys are never in the
//! state: a ticket is issued by whichever monitor the client talks to.
//!
//! # Persisted formats
//! `DATA_DIR/snapshot`: magic `QMONSNAP`, version, length, crc32c, then bincode of the
//! openraft snapshot meta (last applied log id, membership) and the whole `MonState`. Written
//! with `quarry_persist::write_atomic` (`snapshot.partial`, fsync, rename, directory fsync).
//! On restart the monitor loads it and openraft replays the log entries after it. openraft
//! builds one every 1000 entries and then purges the log behind it. Log entries carry
//! `PROPOSAL_VERSION ++ bincode(Proposal)` ([`log_op`]). Both encodings are pinned by
//! golden-byte tests (`tests/golden/mon_v1.hex` .. `mon_v3.hex`); a change needs a new version and a decoder
//! for the old one (rule in `quarry_persist`); a newer snapshot than this build reads is
//! [`MonError::FormatTooNew`], not corruption.
//!
//! # Liveness
//! An OSD is up from its `OsdBoot` until the leader has seen no beacon from that incarnation
//! for `osd_grace`; then the leader proposes `OsdDown{id, up_from}` (ignored if the OSD has
//! booted again meanwhile). Beacons and their usage figures stay in the leader's memory (not
//! in Raft): a new leader starts every grace period afresh. A beacon from an incarnation that
//! is not up is answered `Failed{ENOENT}`: the OSD must boot again. Usage figures are filled
//! into the maps and status reports served (same epoch; they are advisory).
//!
//! # Tickets
//! `GetTicket` returns a ticket (entity, global id, caps, issue time, expiry = now +
//! `ticket_ttl` cut to the current service key's expiry, fresh session key) sealed under the
//! current service key, and the session key sealed under the connection's session key. The
//! leader rotates the service key when it is half-way through its life (`ticket_ttl`), so
//! OSDs should re-fetch `GetServiceKeys` at least every `ticket_ttl / 2`.
//!
//! # Why openraft
//! The OSDs already run every PG as an openraft group over the shared WAL; the monitor uses
//! the same library and the same log, so one implementation of consensus, storage and
//! recovery serves both, and going from one monitor to three is a membership change, not a
//! new design. Only one monitor exists for now: the peer network reports peers unreachable.
//!
//! # New clusters
//! [`spec::ClusterSpec`] decides a new cluster's fsid, keys, entities and caps and builds the
//! [`Bootstrap`]; `quarry up`, `quarry cluster-init` and the test kit all start from it.
//!
//! # Dependencies
//! openraft (consensus, see above), quarry-raftlog (its log store), quarry-wire (the
//! protocol), quarry-auth (keys, caps, tickets), quarry-conf (ceph.conf options, for
//! `from_conf`), quarry-placement (acting sets), tokio, quarry-persist (version bytes, atomic
//! snapshot write), bincode + crc32c (snapshot file), serde, rand (fsids in `spec`; keys via
//! quarry-auth),
//! thiserror, tracing.

#![warn(missing_docs)]

mod admin;
mod config;
mod config_db;
pub mod error;
#[cfg(test)]
mod golden_tests;
pub mod log_op;
mod mon;
pub mod raft;
mod server;
pub mod snapshot;
mod snapshot_v1;
mod snapshot_v2;
mod snapshot_v3;
mod snapshot_v4;
pub mod spec;
pub mod state;
pub mod status;
mod tasks;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use quarry_auth::ServiceKey;
use quarry_raftlog::{Wal, WalError, WalOptions};
use quarry_types::OsdId;
use quarry_wire::ClusterMap;

pub use config::{Bootstrap, Mkfs, MonConfig, MonOverrides};
pub use error::MonError;
pub use spec::ClusterSpec;

use crate::log_op::{EntityRecord, Op, StoredKey};
use crate::mon::{unix_now, Mon};
use crate::raft::{Network, StateMachine, TypeConfig, MON_GROUP};

/// How long `start` waits for the group to elect a leader and catch up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `start` waits for a previous instance to release the WAL lock.
const WAL_LOCK_WAIT: Duration = Duration::from_secs(10);
/// How often the leader removes expired blocklist entries from the map.
pub const BLOCKLIST_EXPIRE_PERIOD: Duration = Duration::from_secs(2);
/// How often the leader compares the pools' usage with their quotas (`tasks::quota_full`).
pub const QUOTA_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// A running monitor.
pub struct MonHandle {
    addr: SocketAddr,
    mon: Arc<Mon>,
    wal: Arc<Wal>,
    shutdown_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl MonHandle {
    /// The address the monitor listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current cluster map.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.mon.core.map()
    }

    /// Stops serving, stops Raft and releases the data directory.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        if let Err(e) = self.mon.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let MonHandle { mon, wal, .. } = self;
        drop(mon);
        // Dropping the last WAL handle joins its writer thread: do it off the runtime.
        let _ = tokio::task::spawn_blocking(move || drop(wal)).await;
        tracing::info!("monitor stopped");
    }
}

fn node_id(name: &str) -> u64 {
    u64::from(crc32c::crc32c(name.as_bytes()))
}

async fn open_wal(cfg: &MonConfig) -> Result<Arc<Wal>, MonError> {
    let dir = cfg.data_dir.join("wal");
    let deadline = tokio::time::Instant::now() + WAL_LOCK_WAIT;
    loop {
        match Wal::open(&dir, WalOptions::default()) {
            Err(WalError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Starts a monitor: opens its WAL and snapshot, starts (and on first start initialises and
/// bootstraps) its Raft group, and serves on `cfg.listen`.
pub async fn start(cfg: MonConfig) -> Result<MonHandle, MonError> {
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|source| MonError::Io { path: cfg.data_dir.clone(), source })?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| MonError::Bind { addr: cfg.listen, source })?;
    let addr =
        listener.local_addr().map_err(|source| MonError::Bind { addr: cfg.listen, source })?;
    // Before the WAL opens: the open-files limit is raised and the monitor's own
    // descriptors reserved, so clients can never take them (`quarry_wire::limits`).
    let budget = quarry_wire::limits::Budget::new(
        &format!("mon.{}", cfg.name),
        cfg.limits,
        quarry_wire::limits::FD_RESERVE_MON,
    );
    let (sm, core) = StateMachine::open(cfg.data_dir.clone())?;
    let wal = open_wal(&cfg).await?;
    let id = node_id(&cfg.name);
    let config = Arc::new(raft::raft_config()?);
    let log_store = wal.log_store::<TypeConfig>(MON_GROUP);
    let raft = openraft::Raft::new(id, config, Network, log_store, sm).await.map_err(raft_err)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mon = Arc::new(Mon::new(cfg, id, raft, core, shutdown_rx));
    let handle = MonHandle { addr, mon: mon.clone(), wal, shutdown_tx, tasks: JoinSet::new() };
    match bring_up(&mon, addr).await {
        Ok(()) => Ok(spawn_tasks(handle, listener, budget)),
        Err(e) => {
            handle.shutdown().await;
            Err(e)
        }
    }
}

fn raft_err(e: impl std::fmt::Display) -> MonError {
    MonError::Raft { detail: e.to_string() }
}

fn spawn_tasks(
    mut handle: MonHandle,
    listener: TcpListener,
    budget: Arc<quarry_wire::limits::Budget>,
) -> MonHandle {
    let mon = &handle.mon;
    let shutdown = mon.shutdown.clone();
    handle.tasks.spawn(server::accept_loop(mon.clone(), listener, shutdown, budget));
    handle.tasks.spawn(tasks::liveness(mon.clone()));
    handle.tasks.spawn(tasks::down_out(mon.clone()));
    handle.tasks.spawn(tasks::rotate_service_keys(mon.clone()));
    handle.tasks.spawn(tasks::advertise(mon.clone(), handle.addr));
    handle.tasks.spawn(tasks::expire_blocklist(mon.clone(), BLOCKLIST_EXPIRE_PERIOD));
    handle.tasks.spawn(tasks::quota_full(mon.clone(), QUOTA_CHECK_PERIOD));
    tracing::info!(name = %mon.cfg.name, addr = %handle.addr, epoch = mon.core.map().epoch, "monitor serving");
    handle
}

/// Initialises the group on first start, waits for a leader and for the log to be applied,
/// then applies the bootstrap if it has not been.
async fn bring_up(mon: &Mon, addr: SocketAddr) -> Result<(), MonError> {
    if !mon.raft.is_initialized().await.map_err(raft_err)? {
        let members = BTreeMap::from([(mon.node_id, BasicNode { addr: addr.to_string() })]);
        mon.raft.initialize(members).await.map_err(raft_err)?;
        tracing::info!(name = %mon.cfg.name, node = mon.node_id, "initialised a new monitor group");
    }
    let caught_up = |m: &openraft::RaftMetrics<u64, BasicNode>| {
        m.current_leader.is_some() && m.last_applied.map(|l| l.index) >= m.last_log_index
    };
    let waiter = mon.raft.wait(Some(STARTUP_TIMEOUT));
    let wait = waiter.metrics(caught_up, "leader elected and log applied");
    wait.await.map_err(|_| MonError::Timeout { what: "a monitor leader" })?;
    if !mon.is_leader() {
        return Ok(());
    }
    if !mon.core.read().bootstrapped {
        bootstrap(mon, addr).await?;
    }
    if mon.core.read().bootstrapped && mon.core.map().mons.get(&mon.cfg.name) != Some(&addr) {
        let op = Op::SetMonAddr { name: mon.cfg.name.clone(), addr };
        mon.propose(op)
            .await
            .map_err(|e| MonError::Bootstrap { code: e.code, message: e.message })?;
    }
    Ok(())
}

async fn bootstrap(mon: &Mon, addr: SocketAddr) -> Result<(), MonError> {
    let Some(boot) = mon.cfg.bootstrap.clone() else {
        tracing::warn!("monitor has no state and no bootstrap: nobody can authenticate");
        return Ok(());
    };
    let op = bootstrap_op(&mon.cfg, boot, addr)?;
    match mon.propose(op).await {
        Ok(outcome) => {
            tracing::info!(?outcome, "bootstrap applied");
            Ok(())
        }
        Err(e) => Err(MonError::Bootstrap { code: e.code, message: e.message }),
    }
}

fn bootstrap_op(cfg: &MonConfig, boot: Bootstrap, addr: SocketAddr) -> Result<Op, MonError> {
    let mut entities = Vec::with_capacity(boot.entities.len());
    for (entity, key, caps) in boot.entities {
        state::check_caps(&caps)
            .map_err(|e| MonError::Bootstrap { code: e.code, message: e.message })?;
        entities.push(EntityRecord { entity, key: StoredKey(key), caps });
    }
    let hosts: BTreeSet<OsdId> = boot.osds.iter().map(|(id, _)| *id).collect();
    if !boot.pools.is_empty() && hosts.is_empty() {
        let message = "bootstrap pools need at least one OSD".to_string();
        return Err(MonError::Bootstrap { code: quarry_types::ErrorCode::EINVAL, message });
    }
    let ttl = cfg.ticket_ttl.as_secs();
    let now = unix_now();
    let service_key = ServiceKey { id: 1, key: quarry_auth::random_key(), expires_unix: now + ttl };
    Ok(Op::Bootstrap {
        fsid: boot.fsid,
        entities,
        osds: boot.osds,
        pools: boot.pools,
        service_key,
        service_key_ttl: ttl,
        mon: (cfg.name.clone(), addr),
    })
}
