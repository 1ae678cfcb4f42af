//! The storage daemon (OSD): hosts placement groups (PGs), each a Raft group over the local
//! object store, and serves clients' object operations.
//!
//! # How a write travels
//! 1. A client frame arrives on a connection authenticated with a monitor ticket (opened with
//!    the service keys this OSD fetched from the monitor; the ticket's session key is the
//!    handshake secret; every later frame is signed).
//! 2. `op`: the OSD waits briefly if the client routed with a newer map, checks the session is
//!    still honoured (ticket not expired, `auth_floor`), that it is the primary of
//!    the PG at its current epoch (`Reply::Retry` otherwise), the caps on the pool for *every*
//!    op (`EPERM`, nothing changes), and validates the vector (name length, payload crc32c:
//!    large whole-chunk payloads are left to the store's apply, which checks them in the pass
//!    that computes their chunk crcs; no mutation of a snapshot).
//!    Right before the op takes effect (proposal of a mutation, store read, watch, notify),
//!    with the newest map, the client must not be blocklisted: its instance
//!    (`entity@global_id`), its address `IP:0/GLOBAL_ID` or its whole IP `IP:0/0`
//!    (`quarry_wire::blocklist`). Otherwise ESHUTDOWN (108), and nothing applies: an op that
//!    waited inside the OSD while the entry arrived is refused too.
//!    The snap context proposed is the pool's own in pool-snapshot mode (whatever the client
//!    sent), else the client's without the snapshots the map lists as removed.
//! 3. A mutation waits for its turn in its object's queue (`op::order`: mutations to one object
//!    are proposed in the order they arrived, a client's later op is answered `Retry` while
//!    an earlier one it must resend has not come back), then
//!    `raft.client_write_ff(PgCommand::Client)` with the request id qualified by the
//!    authenticated entity; the next op of the object may propose at once. The leader stamps
//!    the mtime from its clock, openraft
//!    appends the entry to the PG's log in the OSD's single WAL (`quarry_raftlog`), whose
//!    writer thread fsyncs once for everything queued by all PGs (group commit), then commits
//!    it (size 1: at once; size > 1: on a majority).
//! 4. Apply (`pg::state_machine`): committed entries of the PG go, with the PG's `pg_state`
//!    (last applied log id + membership), to the apply batcher (`pg::apply`), whose thread
//!    applies the batches of every PG queued meanwhile in one redb transaction
//!    (`Store::apply_many`, each PG's commands and `pg_state` together), committed without
//!    fsync; the WAL is the durability point. A redb commit costs ~100 µs whatever it carries,
//!    so sharing it among PGs is what lets small writes scale.
//! 5. The reply is the `OpReply` of apply, sent once the entry is applied: every
//!    acknowledged write is in the leader's store. A command whose request id is in the PG's
//!    duplicate table (`quarry_store`'s `dups`, replicated and kept across restarts) is not
//!    applied again: its reply is the recorded one (a resend after a lost reply).
//!
//! Snapshot trimming is the OSDs' job: the trimmer (`worker::snap_trim`) proposes
//! `PgCommand::TrimSnap` entries for the removed snapshots of the PGs this OSD leads,
//! throttled, until each PG has purged them (`Store::apply_trim`, driven by the store's
//! snapshot index). No client op trims.
//!
//! PG split (`pg::split`): when the map's `pg_num` of a pool grows above the one a PG
//! recorded, the PG's primary proposes `PgCommand::Split { pg_num }`. Every replica applies
//! it at the same log index: in one store transaction (`Store::split_pg`) the objects that
//! `pg_of(name, pg_num)` now places in a child PG move to it (rows re-keyed; data stays), the
//! dup table and purged snapshots are copied to each child, the PG records `pg_num`, and each
//! child gets a Raft state as if restored from a snapshot at log index 0 with the parent's
//! membership (openraft starts it with its log purged to 0, so a replica without the child's
//! data is only ever brought up by snapshot). The router then starts the children. An op for
//! an object that moved is answered "retry" (at admission, and at apply on every replica for
//! one ordered after the split); the client resends to the child.
//!
//! Pure reads go to `Store::read` on the leader, behind a per-leadership read barrier
//! (`ensure_linearizable` once per term, so entries re-applied from the WAL after a restart
//! are visible first). With size 1 the leader's applied state includes every acknowledged
//! write. **With size > 1 this is not enough**: a deposed leader could serve stale reads;
//! reads then need a leader lease or a read-index per read (not implemented yet).
//!
//! # PG lifecycle
//! Every PG whose acting or up set (`ClusterMap::pgs_hosted_by`) names this OSD gets a Raft group
//! (`router`) with group id `(pool << 32) | seed`. The primary (`acting[0]`) initialises a
//! group that never started, with the acting set as voters (openraft persists that it was
//! initialised, so a restart never re-initialises); an OSD only in the up set starts it
//! uninitialised, as a learner its primary adds when it moves the PG (`pg::membership`).
//! PGs of deleted pools, and PGs this OSD is in neither set of, are dropped:
//! group shut down, `Store::remove_pg`, `Wal::remove_group`. At start, the PGs the store and
//! the WAL still hold are compared with the first map, so pools deleted while the OSD was
//! down are dropped too.
//!
//! Leadership is pinned to the primary: only `acting[0]` campaigns (`pin_leadership`), since
//! clients send every op there and a leader elsewhere could serve nobody. When the primary
//! is marked down the monitor makes another member the primary (same voters), which is
//! re-pinned and campaigns; a leader that is not the map's primary stops its heartbeats so
//! the primary takes over (`pg::membership::tend_leadership`).
//! A replica that is not the primary answers client ops with `Retry`.
//!
//! Snapshots: openraft builds one every `SNAPSHOT_LOGS` applied entries, and the checkpoint
//! worker every second for PGs with new entries. Building a snapshot is a store
//! checkpoint (one fsync, coalesced across PGs by `pg::durability`); openraft then purges
//! the log behind it, so WAL segments are freed. A follower behind the purged log receives an
//! export of the PG (`Store::export_pg` into a temp file; `import_pg` on the other side).
//! A failed checkpoint (the store's fsync or durable commit) is fail-stop, like a failed WAL
//! write: the OSD logs the error and aborts the process (`pg::durability`), never retries,
//! since after a failed fsync the page cache's state is unknown; restart recovers from the
//! last good checkpoint plus the WAL.
//!
//! # Recovery after a crash
//! The store shows its last checkpoint (redb drops unsynced commits), including each PG's
//! `pg_state`. At start the store is checkpointed (so what it shows is durable), each group
//! reads its applied log id back (`applied_state`), the WAL replays its segments, and openraft
//! re-applies the committed entries after the applied id (a single-voter group restores its
//! leadership at once and commits its whole log). Apply is deterministic (mtime is in the
//! entry), so the store reaches the same state it had.
//!
//! # Damaged replicas
//! A replica of a PG with more than one voter that meets damaged data (a crc mismatch,
//! `StoreError::Corrupt`) while applying a committed entry must not apply a different result
//! than its peers: it applies nothing of the batch, marks the PG damaged (`DATA/damaged/<pg>`),
//! logs an error, and its Raft group stops (`pg::state_machine`). The repair worker
//! (`worker::repair`) then rebuilds the replica from another one's export, as Raft's
//! install-snapshot would, keeping its vote and the log entries Log Matching allows, and
//! starts the group again (`pg::repair` has the Raft safety argument). A damaged primary stops
//! too: the PG is unavailable (clients retry) until it is rebuilt from a follower. A read that
//! meets damaged data on the primary of a replicated PG starts the same rebuild and waits for
//! it (then the client reads again; EIO after 30 s). OSDs report
//! their damaged PGs with their beacons (`Request::OsdDamaged`); `ceph -s` shows
//! `Possible data damage: N pgs inconsistent`. With one voter the command alone fails with
//! EIO and the object stays damaged.
//!
//! # Bounds
//! Client requests in flight: `osd_client_message_cap` (256) per connection (wire) and
//! `OPS_INFLIGHT_MAX` overall (Raft traffic is not counted: client writes wait on it); the
//! connection and memory budget of `OsdConfig::limits` (`quarry_wire::limits`: connections in
//! total and per client entity, request bytes of clients and of peer OSDs apart, queued reply
//! bytes, idle and handshake timeouts, descriptors reserved for the WAL and store); ops per vector: 1024; names per listing: 1024; a client with a newer map
//! waits at most 2 s for ours; a write not applied in 120 s is answered ETIMEDOUT.
//! Data per op vector: at most `quarry_types::OP_DATA_BYTES_MAX` (60 MiB; `check::validate`),
//! and the encoded command must fit one WAL record (`LOG_ENTRY_BYTES_MAX`, 64 MiB, equal to
//! `quarry_raftlog`'s record limit by a compile-time assert) with room for the entry's
//! wrapping; else EMSGSIZE (90) before the proposal (Ceph's `OSD_WRITETOOBIG`). The log
//! refusing an entry stops the PG in openraft, so no client input may reach it.
//!
//! # Full disks and what a client is told
//! `space` measures the data directory's file system (minus the pages redb will reuse) for
//! beacons and refuses a vector that needs space with ENOSPC right before its proposal at
//! `mon_osd_full_ratio` of its own figures, at `osd_failsafe_full_ratio` of the raw disk with
//! the writes in flight counted, or when the map shows a replica of the PG full; removes,
//! truncates, zeroing and reads pass. A definite error is only ever given for an op that was
//! not proposed; a write whose PG stopped on a log or store error after (or, for a resend,
//! possibly after) its proposal is answered ETIMEDOUT, outcome unknown (the rule in
//! `docs/dev/contracts.md`). The WAL's segments are 1/128 of the disk (1 to 64 MiB).
//! `QUARRY_TEST_DISABLE_FULL_CHECK` (tests only) turns the refusal off, to show the
//! full-disk tests fail without it.
//!
//! # Invariants asserted
//! - Entries are applied in strictly increasing log order; one reply per entry.
//! - The store returns one reply per command; the durable checkpoint sequence never goes back.
//! - A Raft group id always fits `(pool << 32) | seed` (pools below 2^32).
//!
//! # Configuration and data directory
//! [`OsdConfig::from_conf`] reads the OSD's options from ceph.conf for `osd.N` (`[osd.N]` >
//! `[osd]` > `[global]`): `mon_host`, and `key` > `keyfile` > `keyring` for osd.N's key
//! (`DATA/keyring` is tried last), the three full ratios; the command line's values come in as [`OsdOverrides`]
//! and win. A value that does not parse is [`OsdError::Conf`], naming the option, the value
//! and the line. [`DataDir`] owns the directory's layout: `wal/`, `store.redb`, `snapshots/`,
//! `keyring`, and `addr`, the address of the previous start, which [`start`] rewrites after
//! binding and `from_conf` reuses when no `--addr` is given (if the port is free).
//!
//! # Modules
//! `pg/` (group state, state machine, apply batcher, durability, Raft network, repair of
//! damaged replicas), `op/` (serving
//! requests and the pure checks), `router` (map + group table), `server` (listener),
//! `session` (tickets, service keys), `watch` (watch/notify state, in memory, and its
//! reaper), `worker/` (monitor session, maps, checkpoints, snapshot trims, repairs), `space`
//! (disk figures and the full-disk write check), `osd`
//! (the state every task shares), `daemon` (boot script and shutdown), `config`
//! ([`OsdConfig`] from ceph.conf), `data_dir` ([`DataDir`]).
//!
//! # Dependencies
//! openraft 0.9 (Raft per PG, storage-v2 traits); quarry-raftlog (one WAL per daemon with
//! group commit); quarry-store (redb object engine); quarry-wire/quarry-auth (protocol,
//! tickets, caps); quarry-conf (ceph.conf options, for `from_conf`); quarry-persist (the
//! version byte in front of `PgCommand` and `pg_state`, atomic writes); tokio; bincode (Raft
//! message bodies); tempfile (snapshot data in unlinked files: PG exports never sit in
//! memory); rustix (safe `statvfs` for the disk figures in beacons).

#![warn(missing_docs)]
// `StoreError` (redb's error inline), openraft's `ConfigError` and `AuthError` are 128-160
// bytes; they only travel on failure paths, so their size costs nothing where it matters.
#![allow(clippy::result_large_err)]

mod config;
mod daemon;
mod data_dir;
mod error;
mod op;
mod optracker;
mod osd;
mod pg;
mod router;
mod server;
mod session;
mod space;
pub mod tell;
mod watch;
mod worker;

use std::net::SocketAddr;

use quarry_types::{OsdId, PgId};

pub use config::{OsdConfig, OsdOverrides};

/// `osd_raft_heartbeat_interval`'s default: a PG leader's heartbeat every second, elections
/// after 2.5 to 5 s of silence.
pub const DEFAULT_RAFT_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// `osd_write_once_min_bytes`' default: write ops of at least 64 KiB (whole 4 KiB chunks at a
/// chunk boundary) of one-replica PGs are written once, into the store (`pg::placer`).
pub const DEFAULT_WRITE_ONCE_MIN_BYTES: u64 = 64 << 10;
pub use data_dir::DataDir;
pub use error::OsdError;
pub use pg::{group_id, pg_of_group, PgCommand, PgRaftConfig};

/// One PG as this OSD sees it (for status output and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgStatus {
    /// The PG.
    pub pg: PgId,
    /// The leader of its Raft group, if known.
    pub leader: Option<OsdId>,
    /// Index of the last entry applied to the store.
    pub applied: Option<u64>,
    /// Index the last snapshot (store checkpoint) covers.
    pub snapshot: Option<u64>,
    /// Index up to which the log was purged from the WAL.
    pub purged: Option<u64>,
}

/// A running OSD.
pub struct OsdHandle {
    running: daemon::Running,
}

impl OsdHandle {
    /// The address clients and peers reach this OSD at.
    pub fn addr(&self) -> SocketAddr {
        self.running.osd.addr
    }

    /// The address the OSD's listener is bound to (equal to [`OsdHandle::addr`] unless it
    /// was started with [`start_advertising`]).
    pub fn listen_addr(&self) -> SocketAddr {
        self.running.osd.listen_addr
    }

    /// Number of store checkpoints run by this process so far.
    pub fn checkpoints(&self) -> u64 {
        self.running.osd.durability.checkpoints()
    }

    /// The PGs this OSD runs, in order.
    pub fn pgs(&self) -> Vec<PgStatus> {
        let mut out: Vec<PgStatus> =
            self.running.osd.router.groups().iter().map(|group| group.status()).collect();
        out.sort_by_key(|status| status.pg);
        out
    }

    /// The PGs marked damaged on this OSD (met damaged data; rebuilt from a replica, then
    /// unmarked: see the crate docs, "Damaged replicas").
    pub fn damaged_pgs(&self) -> Vec<PgId> {
        self.running.osd.router.damaged_pgs()
    }

    /// The epoch of the map this OSD acts on (tests wait for a map change to reach it).
    pub fn map_epoch(&self) -> u64 {
        self.running.osd.router.map().epoch
    }

    /// The OSD's object store, for inspection by tests and tools (snapshot index, purged
    /// snapshots, object versions, trim counters). Writing through it bypasses the PG logs:
    /// never do that on a running OSD.
    pub fn store(&self) -> std::sync::Arc<quarry_store::Store> {
        self.running.osd.router.store().clone()
    }

    /// Counters of the OSD's write-ahead log (group commits, fsyncs, segments).
    pub fn wal_stats(&self) -> quarry_raftlog::WalStats {
        self.running.osd.router.wal().stats()
    }

    /// Tests only: makes the WAL's record writes fail with `errno` (None: stop), as
    /// `quarry_raftlog::Wal::inject_write_error` does, to show what clients are told when a
    /// PG stops on a log error.
    pub fn inject_wal_write_error(&self, errno: Option<i32>) {
        self.running.osd.router.wal().inject_write_error(errno)
    }

    /// Stops accepting, shuts the PG groups down, checkpoints the store, and releases the WAL
    /// and store locks (the data directory can be opened again when this returns).
    pub async fn shutdown(self) {
        self.running.shutdown().await
    }
}

/// Starts an OSD: opens its data directory, registers with the monitor, starts its PG groups
/// and listens. Fails if the data directory cannot be opened or no monitor answers in time.
pub async fn start(cfg: OsdConfig) -> Result<OsdHandle, OsdError> {
    Ok(OsdHandle { running: daemon::start(cfg, None).await? })
}

/// The central config for the OSD of `cfg` (`ceph config set osd|osd.N|global …`, the
/// monitor's sections for it merged: most specific wins), fetched with its key before it
/// starts, as Ceph's daemons do: the caller layers it under ceph.conf
/// (`quarry_conf::Conf::set_central`) and builds the [`OsdConfig`] again, so options read at
/// start take their central values. Runtime options follow changes later through the OSD's
/// monitor session.
pub async fn fetch_central_config(
    cfg: &OsdConfig,
) -> Result<std::collections::BTreeMap<String, String>, OsdError> {
    worker::monitor::fetch_central_config(cfg).await
}

/// Starts an OSD that registers `advertise` with the monitor as the address clients and peers
/// reach it at, instead of its listener's own address: for something in front of it that
/// forwards to `OsdHandle::listen_addr` (the test kit's fault-injecting proxies).
/// `OsdHandle::addr` is then `advertise`.
pub async fn start_advertising(
    cfg: OsdConfig,
    advertise: SocketAddr,
) -> Result<OsdHandle, OsdError> {
    Ok(OsdHandle { running: daemon::start(cfg, Some(advertise)).await? })
}
