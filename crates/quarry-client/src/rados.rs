//! [`Rados`]: the cluster handle. Connects, answers map queries, runs monitor commands, and
//! routes object op vectors to the primary OSD of their PG with the retry rules of the crate
//! documentation.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use quarry_types::{
    ErrorCode, ObjectOp, OpOutput, OpReply, OsdId, PgId, PoolId, SnapContext, SnapId,
};
use quarry_wire::{ClusterMap, MonCommand, MonReply, OsdOp, Reply, Request};

use crate::monc::{self, Backoff};
use crate::order::{SendOrder, Ticket};
use crate::osdc::ConnectError;
use crate::routing::{self, Target};
use crate::session::{reply_kind, unix_now};
use crate::shared::Shared;
use crate::{ClientConfig, ClientError};

/// First pause before resending to an OSD that could not be reached or asked us to retry.
const RESEND_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between two resends while the map does not change.
const RESEND_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Object names asked for per `List` request.
const LIST_PAGE_MAX: u32 = 1024;
/// Slack when comparing the map's `auth_floor` (monitor clock) with when we got our ticket
/// (our clock): a floor this close to the ticket's time is taken as newer than it.
const AUTH_FLOOR_SLACK_SECS: u64 = 5;
/// A ticket this close to its expiry may already be expired by the OSD's clock.
const TICKET_EXPIRY_SLACK_SECS: u64 = 2;
/// Resends without an answer after which the map is fetched from the monitor even if no
/// push arrived (a push can be dropped when the client is busy).
const RESENDS_BEFORE_MAP_FETCH: u64 = 4;
/// An op blocked this long is logged once as a warning (it keeps waiting).
const BLOCKED_WARNING: Duration = Duration::from_secs(10);
/// An op waiting this long on a PG that has no reachable primary says why, once (a warning
/// in the log and a [`WaitNotice`] to listeners such as the CLI): failovers take a few
/// seconds, so shorter waits are not news.
pub const WAIT_NOTICE_AFTER: Duration = Duration::from_secs(3);

/// Why an op is waiting on a PG, told once per op after [`WAIT_NOTICE_AFTER`]
/// ([`Rados::wait_notices`]). `Display`: `waiting for PG 2.3: no OSD up`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitNotice {
    /// The PG.
    pub pg: PgId,
    /// Why: `no OSD up`, `osd.1 does not answer`, `osd.1 is not ready for it`.
    pub reason: String,
}

impl std::fmt::Display for WaitNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "waiting for PG {}: {}", self.pg, self.reason)
    }
}

/// A connected cluster handle. Cheap to clone; every clone shares the monitor session, the
/// map, the ticket and the OSD connections, and may be used from any task or thread (it is
/// `Send + Sync`). Its background task runs on the tokio runtime that called
/// [`Rados::connect`], which must outlive the handle.
#[derive(Clone)]
pub struct Rados {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Request ids and the per-object send order of mutations.
    order: Arc<SendOrder>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a client has done so far: for diagnostics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Epoch of the newest map.
    pub map_epoch: u64,
    /// Monitor sessions opened (1 + reconnects).
    pub mon_sessions: u64,
    /// Tickets received (at connect, renewals, and with every new monitor session).
    pub tickets: u64,
    /// Renewals asked for because a ticket was found expired or refused, rather than ahead
    /// of time: stays 0 while background renewal keeps up.
    pub tickets_on_demand: u64,
    /// OSD connections opened (lazily; again after a loss or a ticket renewal).
    pub osd_connections: u64,
}

/// Size and modification time of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: u64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: u32,
}

/// How long a write to a full pool waits for a map push before it looks again (the map is
/// pushed when the flag changes; this bounds a lost push).
const POOL_FULL_RECHECK: Duration = Duration::from_secs(2);

/// The central config's values for `entity` (empty, with a debug line, when the monitor
/// does not answer: the client runs on its file's values, as before it was asked).
async fn fetch_central(
    client: &quarry_wire::RpcClient,
    entity: &quarry_types::EntityName,
) -> BTreeMap<String, String> {
    let request = quarry_wire::Request::GetConfig { subscribe: false };
    match tokio::time::timeout(std::time::Duration::from_secs(10), client.call(request)).await {
        Ok(Ok(quarry_wire::Reply::Command(MonReply::Config(sections)))) => {
            quarry_conf::central_for(&sections, entity)
        }
        other => {
            tracing::debug!(reply = ?other, "no central config");
            BTreeMap::new()
        }
    }
}

impl Rados {
    /// Connects: hunts for a monitor (random order, rounds with backoff) until one accepts
    /// us or `connect_timeout` passes, subscribes to the map, fetches a ticket, and starts
    /// the background task. A refused authentication fails at once with
    /// [`ClientError::Auth`]; no monitor reachable in time is [`ClientError::Connect`].
    pub async fn connect(cfg: ClientConfig) -> Result<Rados, ClientError> {
        let opened = monc::hunt_initial(&cfg).await?;
        if let Some(fsid) = cfg.fsid.as_ref().filter(|f| !f.eq_ignore_ascii_case(&opened.map.fsid))
        {
            tracing::warn!(conf = %fsid, cluster = %opened.map.fsid, "fsid mismatch: refusing the cluster");
            return Err(ClientError::FsidMismatch {
                conf: fsid.clone(),
                cluster: opened.map.fsid.clone(),
            });
        }
        tracing::debug!(mon = %opened.addr, global_id = opened.global_id, "connected to monitor");
        let central = fetch_central(&opened.client, &cfg.entity).await;
        let cfg = cfg.with_central(&central);
        let renew_at = opened.ticket.renew_at();
        let (shared, events) = Shared::new(cfg, opened, central);
        let task = tokio::spawn(monc::run(shared.clone(), events, renew_at));
        let inner = Inner { shared, tasks: Mutex::new(vec![task]), order: SendOrder::new() };
        Ok(Rados { inner: Arc::new(inner) })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub(crate) fn shared_arc(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The configuration this handle was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.shared().cfg
    }

    /// The monitor's central config for this client as fetched at connect (`ceph config set
    /// client|client.NAME|global`, merged: most specific wins). Callers with a ceph.conf
    /// layer it under the file (`quarry_conf::Conf::set_central`) for the options they read
    /// themselves (the rbd cache's).
    pub fn central_config(&self) -> &BTreeMap<String, String> {
        &self.shared().central
    }

    /// The newest cluster map this client has seen.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.shared().map()
    }

    /// The id the monitor gave this client instance (`client.admin@GLOBAL_ID` in blocklists).
    /// It is the id of the current monitor session: a reconnect to the monitor may change it.
    pub fn global_id(&self) -> u64 {
        self.shared().global_id()
    }

    /// Counters of what this client has done so far.
    pub fn stats(&self) -> ClientStats {
        let shared = self.shared();
        let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        ClientStats {
            map_epoch: shared.map().epoch,
            mon_sessions: count(&shared.counters.mon_sessions),
            tickets: count(&shared.counters.tickets),
            tickets_on_demand: count(&shared.counters.tickets_on_demand),
            osd_connections: count(&shared.osds.opened),
        }
    }

    /// The id of the pool named `name` in the current map (ENOENT if absent).
    pub fn pool_id(&self, name: &str) -> Result<PoolId, ClientError> {
        self.map()
            .pool_by_name(name)
            .map(|p| p.id)
            .ok_or_else(|| ClientError::PoolNotFound { pool: name.to_string() })
    }

    /// Like [`Rados::pool_id`], but asks the monitor for the newest map before reporting
    /// ENOENT (a pool created by another client a moment ago is found).
    pub async fn lookup_pool(&self, name: &str) -> Result<PoolId, ClientError> {
        if let Ok(id) = self.pool_id(name) {
            return Ok(id);
        }
        self.shared().refresh_map().await;
        self.pool_id(name)
    }

    /// Waits until this client's map is at least at `epoch` (bounded by the op timeout).
    pub async fn wait_for_epoch(&self, epoch: u64) -> Result<(), ClientError> {
        self.bounded(self.shared().wait_for_epoch(epoch)).await
    }

    /// Runs a monitor command. If the monitor session is lost the command is resent on the
    /// next one (waiting up to `connect_timeout` for it); the whole call is bounded by
    /// `rados_mon_op_timeout` ([`ClientConfig::mon_op_timeout`]). After a command that may change the map, the newest map is fetched so the
    /// caller sees its effect (a created pool is usable at once).
    ///
    /// A command resent after a lost reply may report what its first execution caused
    /// (EEXIST for a pool it created itself).
    pub async fn command(&self, cmd: MonCommand) -> Result<MonReply, ClientError> {
        let limit = self.shared().cfg.mon_op_timeout;
        self.bounded_by(limit, self.command_unbounded(cmd)).await
    }

    async fn command_unbounded(&self, cmd: MonCommand) -> Result<MonReply, ClientError> {
        let shared = self.shared();
        let mut backoff = Backoff::new(RESEND_BACKOFF_MIN, RESEND_BACKOFF_MAX);
        let mut after = None;
        loop {
            let session = shared.session(after).await?;
            match session.client.call(Request::Command(cmd.clone())).await {
                Ok(Reply::Command(reply)) => {
                    if changes_map(&cmd) {
                        shared.refresh_map().await;
                    }
                    return Ok(reply);
                }
                Ok(Reply::Failed { code, .. }) if code == ErrorCode::EAGAIN => {
                    shared.sleep_or_shutdown(backoff.next()).await?;
                }
                Ok(Reply::Failed { code, message }) => {
                    return Err(ClientError::Failed { code, message })
                }
                // The monitor cannot serve it now (no quorum yet): ask again shortly.
                Ok(Reply::Retry { .. }) => shared.sleep_or_shutdown(backoff.next()).await?,
                Ok(other) => {
                    tracing::warn!(reply = reply_kind(&other), "odd reply to a command");
                    return Err(ClientError::Protocol { request: "Command" });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "monitor session lost during a command; resending");
                    after = Some(session.generation);
                }
            }
        }
    }

    /// Runs `ops` atomically on `object` of `pool`: computes the PG, sends the vector to the
    /// PG's primary, and retries through map changes, `Retry` replies, lost connections and
    /// down primaries until it gets an answer or the op timeout passes (never, by default).
    /// `snap` is the snapshot to read (`SNAP_HEAD` for the head; mutations require it);
    /// `snapc` the writer's snapshot context.
    ///
    /// Errors: [`ClientError::Op`] when op `index` failed (nothing applied),
    /// [`ClientError::Failed`] when the OSD refused the request (EPERM outside the caps),
    /// [`ClientError::Corrupt`] when returned data fails its checksum, ENOENT for an unknown
    /// pool, EINVAL/ENAMETOOLONG/EFBIG/EROFS/EMSGSIZE for a request refused before sending,
    /// [`ClientError::Timeout`] after the op timeout.
    pub async fn exec(
        &self,
        pool: PoolId,
        object: &str,
        snapc: &SnapContext,
        snap: SnapId,
        ops: Vec<ObjectOp>,
    ) -> Result<Vec<OpOutput>, ClientError> {
        self.shared().check_running()?;
        routing::check_request(object, snapc, snap, &ops)?;
        // Taken before the first await: ops started one after the other get increasing tids.
        // Method calls may write (it depends on the method): they get an id too.
        let ticket = ObjectOp::vector_may_write(&ops).then(|| self.inner.order.begin(pool, object));
        let reqid = ticket.as_ref().map(Ticket::reqid);
        let pg = self.pg_of(pool, object).await?;
        let count = ops.len();
        let make = |epoch| {
            Request::Op(OsdOp {
                pg,
                epoch,
                name: object.to_string(),
                snapc: snapc.clone(),
                snap,
                ops: ops.clone(),
                reqid,
            })
        };
        let needs_space = ObjectOp::vector_needs_space(&ops);
        let work = async {
            loop {
                if needs_space {
                    self.wait_pool_not_full(pool, object).await?;
                }
                match self.pg_request(pg, &make, ticket.as_ref()).await? {
                    // The OSD saw the pool full (its map is newer than ours, or ours is late):
                    // wait for a newer map, then check again.
                    Reply::Failed { code, .. } if needs_space && code == ErrorCode::EDQUOT => {
                        let epoch = self.map().epoch;
                        self.shared().wait_map_change(epoch, POOL_FULL_RECHECK).await?;
                        self.shared().refresh_map().await;
                    }
                    reply => return Ok(reply),
                }
            }
        };
        // Boxed: the timeout and shutdown wrappers around it then move a pointer, not the
        // whole request future (its copies were ~6% of a `rados bench` reader's CPU).
        match self.bounded(Box::pin(work)).await? {
            Reply::Op(OpReply::Ok(outputs)) => {
                if outputs.len() != count {
                    tracing::warn!(%pg, object, "OSD returned {} outputs for {count} ops", outputs.len());
                    return Err(ClientError::Protocol { request: "Op" });
                }
                if !routing::outputs_intact(&outputs) {
                    tracing::error!(%pg, object, "data returned by the OSD fails its checksum");
                    return Err(ClientError::Corrupt { pool, object: object.to_string() });
                }
                Ok(outputs)
            }
            Reply::Op(OpReply::Failed { index, code }) => Err(ClientError::Op { index, code }),
            Reply::Failed { code, message } => Err(ClientError::Failed { code, message }),
            other => {
                tracing::warn!(%pg, reply = reply_kind(&other), "odd reply to an op");
                Err(ClientError::Protocol { request: "Op" })
            }
        }
    }

    /// Waits while the map marks `pool` full (a quota reached), as Ceph's Objecter pauses a
    /// write to a full pool until a map clears the flag (bounded by the caller's op timeout);
    /// logged once per op.
    async fn wait_pool_not_full(&self, pool: PoolId, object: &str) -> Result<(), ClientError> {
        let mut logged = false;
        loop {
            let map = self.map();
            match map.pools.get(&pool) {
                Some(info) if info.is_full() => {
                    if !logged {
                        tracing::info!(pool = %info.name, object, "pool is full (quota reached): the write waits until it is not");
                        logged = true;
                    }
                    self.shared().wait_map_change(map.epoch, POOL_FULL_RECHECK).await?;
                    if self.map().epoch == map.epoch {
                        self.shared().refresh_map().await;
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// `ceph tell osd.N WORDS…`: an admin command sent to that OSD itself (it needs `allow *`
    /// in our osd caps). Returns (output, status): Ceph's JSON answer and the lines it adds
    /// on stderr. An OSD that does not exist, or is down, is ENOENT / EAGAIN; the daemon's
    /// refusals come back as [`ClientError::Failed`].
    pub async fn tell_osd(
        &self,
        osd: OsdId,
        words: Vec<String>,
    ) -> Result<(String, String), ClientError> {
        let shared = self.shared();
        shared.check_running()?;
        let map = shared.map();
        let gone = |code: ErrorCode| ClientError::Failed {
            code,
            message: format!("problem getting command descriptions from osd.{osd}"),
        };
        let addr = match map.osds.get(&osd) {
            None => return Err(gone(ErrorCode::ENOENT)),
            Some(info) => match (info.up, info.addr) {
                (true, Some(addr)) => addr,
                _ => return Err(gone(ErrorCode::EAGAIN)),
            },
        };
        let ticket = shared.valid_ticket().await?;
        let timeout = shared.cfg.connect_timeout;
        let (client, _) =
            match shared.osds.get(osd, addr, &shared.cfg.entity, &ticket, timeout).await {
                Ok(found) => found,
                Err(ConnectError::Refused(code, message)) => {
                    return Err(ClientError::Auth { code, message })
                }
                Err(ConnectError::Unreachable) => return Err(gone(ErrorCode::ETIMEDOUT)),
            };
        let reply = self.bounded(async {
            client.call(Request::Tell { words }).await.map_err(|_| gone(ErrorCode::ENOTCONN))
        });
        told(reply.await?)
    }

    /// `ceph tell mon.* WORDS…`: an admin command to the monitor we are connected to (it
    /// needs `allow *` in our mon caps); see [`Rados::tell_osd`].
    pub async fn tell_mon(&self, words: Vec<String>) -> Result<(String, String), ClientError> {
        let shared = self.shared();
        let limit = shared.cfg.mon_op_timeout;
        let asked = async {
            let session = shared.session(None).await?;
            session.client.call(Request::Tell { words }).await.map_err(|_| ClientError::Failed {
                code: ErrorCode::ENOTCONN,
                message: "the monitor session was lost".into(),
            })
        };
        told(self.bounded_by(limit, asked).await?)
    }

    /// Notices of ops that wait on a PG without a reachable primary ([`WaitNotice`]), from
    /// now on. Dropped when nobody listens or a listener lags (they are advice).
    pub fn wait_notices(&self) -> tokio::sync::broadcast::Receiver<WaitNotice> {
        self.shared().waits.subscribe()
    }

    /// Every head object name in `pool`, PG by PG (names are sorted within a PG), each once,
    /// also while the pool's `pg_num` changes.
    ///
    /// PGs are listed in ascending order and a split only moves objects from a PG to a
    /// child with a higher number, so an object that exists during the whole listing is
    /// met at least once: if it moved out of a PG before that PG was listed, it is in a
    /// higher one, listed later. The PGs that appear while listing (a larger `pg_num` in the
    /// map, or in a fresh map asked of the monitor at the end) are listed too, and a name
    /// met twice (listed, then moved on to a child) is given once. A smaller `pg_num` (a
    /// merge moves objects down) starts the listing again from PG 0, keeping the names met.
    pub async fn list_objects(&self, pool: PoolId) -> Result<Vec<String>, ClientError> {
        let mut names = Vec::new();
        let mut met = std::collections::HashSet::new();
        let mut seed = 0;
        let mut highest = self.pg_num(pool).await?;
        let mut refreshed = false;
        // Test-only: a pause before each PG, so a test can change pg_num mid-listing.
        let pause = std::env::var("QUARRY_TEST_LIST_PAUSE_MS").ok().and_then(|v| v.parse().ok());
        loop {
            if let Some(ms) = pause {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let pg_num = self.pg_num(pool).await?;
            if pg_num < highest {
                tracing::debug!(
                    pool,
                    pg_num,
                    highest,
                    "pg_num fell while listing: again from pg 0"
                );
                (seed, highest, refreshed) = (0, pg_num, false);
            }
            highest = highest.max(pg_num);
            if seed >= pg_num {
                if refreshed {
                    return Ok(names);
                }
                // The newest map: a split the map we hold does not show yet may have moved
                // objects to PGs we would not list.
                self.shared().refresh_map().await;
                refreshed = true;
                continue;
            }
            refreshed = false;
            let pg = PgId { pool, seed };
            let mut cursor: Option<String> = None;
            loop {
                let (page, more) = match self.list_pg(pg, cursor.clone(), LIST_PAGE_MAX).await {
                    Ok(listed) => listed,
                    // The PG was merged away while we listed it: the loop above starts over.
                    Err(ClientError::Invalid { code: ErrorCode::EINVAL, .. })
                        if self.pg_num(pool).await? <= seed =>
                    {
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let last = page.last().cloned();
                for name in page {
                    if met.insert(name.clone()) {
                        names.push(name);
                    }
                }
                match (more, last) {
                    (true, Some(last)) => cursor = Some(last),
                    _ => break,
                }
            }
            seed += 1;
        }
    }

    /// One page of a PG's head objects: at most `max` names after `start_after`, and whether
    /// more follow. The building block of paged listing (librados' list cursor).
    pub async fn list_pg(
        &self,
        pg: PgId,
        start_after: Option<String>,
        max: u32,
    ) -> Result<(Vec<String>, bool), ClientError> {
        self.shared().check_running()?;
        let pg_num = self.pg_num(pg.pool).await?;
        if pg.seed >= pg_num {
            return Err(ClientError::invalid(ErrorCode::EINVAL, "PG beyond the pool's pg_num"));
        }
        let make = |epoch| Request::List { pg, epoch, start_after: start_after.clone(), max };
        match self.bounded(self.pg_request(pg, make, None)).await? {
            Reply::List { names, more } => Ok((names, more)),
            Reply::Failed { code, message } => Err(ClientError::Failed { code, message }),
            other => {
                tracing::warn!(%pg, reply = reply_kind(&other), "odd reply to a listing");
                Err(ClientError::Protocol { request: "List" })
            }
        }
    }

    /// Stops the background task, closes the monitor and OSD connections, and makes every
    /// pending and later call fail with [`ClientError::Shutdown`].
    pub async fn shutdown(&self) {
        // End this client's watches first (as rados_shutdown does), so the objects do not
        // list a watcher that is gone until its timeout: an image closed by a tool that
        // exits must not block `rbd rm` for 30 s. Bounded: a dead OSD cannot hold us here.
        let cookies = self.watch_cookies();
        if !cookies.is_empty() {
            let unwatch_all = async {
                for cookie in cookies {
                    let _ = self.unwatch(cookie).await;
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), unwatch_all).await;
        }
        self.shared().begin_shutdown();
        let tasks: Vec<_> = lock(&self.inner.tasks).drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// [`Rados::shutdown`] without waiting for the background task to end (for `Drop`).
    pub(crate) fn begin_shutdown(&self) {
        self.shared().begin_shutdown();
        for task in lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
    }

    /// Runs `work` under the op timeout, ending early with `Shutdown` on shutdown.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        self.bounded_by(self.shared().cfg.op_timeout, work).await
    }

    /// `work` under `limit` (ETIMEDOUT after it; None: no limit), ended by shutdown.
    async fn bounded_by<T>(
        &self,
        limit: Option<Duration>,
        work: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let mut shutdown = self.shared().shutdown_receiver();
        let limited = async {
            match limit {
                Some(limit) => {
                    tokio::time::timeout(limit, work).await.map_err(|_| ClientError::Timeout)?
                }
                None => work.await,
            }
        };
        tokio::select! {
            result = limited => result,
            _ = crate::shared::stopped(&mut shutdown) => Err(ClientError::Shutdown),
        }
    }

    /// The pool's PG count, refreshing the map once if the pool is unknown (ENOENT after).
    async fn pg_num(&self, pool: PoolId) -> Result<u32, ClientError> {
        if let Some(info) = self.map().pools.get(&pool) {
            return Ok(info.pg_num);
        }
        self.shared().refresh_map().await;
        self.map()
            .pools
            .get(&pool)
            .map(|info| info.pg_num)
            .ok_or(ClientError::PoolNotFound { pool: pool.to_string() })
    }

    async fn pg_of(&self, pool: PoolId, object: &str) -> Result<PgId, ClientError> {
        self.pg_num(pool).await?;
        routing::pg_for(&self.map(), pool, object)
    }

    /// The PG of `object`, with the same checks an op gets (name length, unknown pool).
    pub(crate) async fn pg_of_object(
        &self,
        pool: PoolId,
        object: &str,
    ) -> Result<PgId, ClientError> {
        routing::check_request(
            object,
            &SnapContext::default(),
            quarry_types::SNAP_HEAD,
            &[ObjectOp::Stat],
        )?;
        self.pg_of(pool, object).await
    }

    /// [`Rados::pg_request`] under the op timeout, also returning the connection the answer
    /// came over (watches are bound to it).
    pub(crate) async fn pg_request_via(
        &self,
        pg: PgId,
        make: impl Fn(u64) -> Request,
    ) -> Result<(Reply, Via), ClientError> {
        self.bounded(self.pg_request_inner(pg, make, None)).await
    }

    /// Sends the request `make(epoch)` to the primary of `pg` until an answer other than
    /// "retry" comes back. Unbounded: callers bound it with [`Rados::bounded`]. A mutation's
    /// `ticket` keeps its sends in order with the other mutations to its object.
    async fn pg_request(
        &self,
        pg: PgId,
        make: impl Fn(u64) -> Request,
        ticket: Option<&Ticket>,
    ) -> Result<Reply, ClientError> {
        self.pg_request_inner(pg, make, ticket).await.map(|(reply, _)| reply)
    }

    async fn pg_request_inner(
        &self,
        pg: PgId,
        make: impl Fn(u64) -> Request,
        ticket: Option<&Ticket>,
    ) -> Result<(Reply, Via), ClientError> {
        let shared = self.shared();
        let mut backoff = Backoff::new(RESEND_BACKOFF_MIN, RESEND_BACKOFF_MAX);
        // One fresh ticket per request when an OSD refuses ours (expired, or older than an
        // auth change); a refusal of the fresh one is final.
        let mut ticket_renewed = false;
        let started = tokio::time::Instant::now();
        let mut warned = false;
        let mut noticed = false;
        for resends in 0u64.. {
            shared.check_running()?;
            if resends > 0 && resends % RESENDS_BEFORE_MAP_FETCH == 0 {
                shared.refresh_map().await;
            }
            if !warned && started.elapsed() >= BLOCKED_WARNING {
                warned = true;
                tracing::warn!(%pg, "op blocked for {:?}, still waiting", started.elapsed());
            }
            let map = shared.map();
            let attempt = self.attempt(&map, pg, &make, ticket_renewed, ticket).await?;
            if let (Some(ticket), false) = (ticket, matches!(attempt, Attempt::Answer(..))) {
                ticket.unsent();
            }
            match attempt {
                Attempt::Answer(reply, via) => return Ok((reply, via)),
                Attempt::WaitMapChange(reason) => {
                    if !noticed && started.elapsed() >= WAIT_NOTICE_AFTER {
                        noticed = true;
                        // Told once; the generic warning below would repeat it.
                        warned = true;
                        let notice = WaitNotice { pg, reason: reason.to_string() };
                        tracing::warn!(%pg, "{notice} (op waiting for {:?})", started.elapsed());
                        let _ = shared.waits.send(notice);
                    }
                    shared.wait_map_change(map.epoch, backoff.next()).await?;
                }
                Attempt::WaitEpoch(epoch) => shared.wait_for_epoch(epoch).await?,
                Attempt::RenewTicket(generation) => {
                    ticket_renewed = true;
                    shared.renew_ticket_and_wait(generation).await?;
                }
            }
        }
        unreachable!("the resend loop ends only by returning")
    }

    /// One try of a PG request against `map`: the answer, or what to wait for before the
    /// next try.
    async fn attempt(
        &self,
        map: &ClusterMap,
        pg: PgId,
        make: &impl Fn(u64) -> Request,
        ticket_renewed: bool,
        order: Option<&Ticket>,
    ) -> Result<Attempt, ClientError> {
        let shared = self.shared();
        if !map.pools.contains_key(&pg.pool) {
            return Err(ClientError::PoolNotFound { pool: pg.pool.to_string() });
        }
        // The object's PG in this map: a pool whose pg_num grew may have split it.
        let mut request = make(map.epoch);
        let pg = routing::retarget(map, pg, &mut request);
        // A PG's own request (a listing) for a PG a merge took away while it waited: no
        // primary will ever serve it; the lister starts over (`list_objects`).
        let beyond = map.pools.get(&pg.pool).is_some_and(|p| pg.seed >= p.pg_num);
        if beyond && matches!(request, Request::List { .. }) {
            return Err(ClientError::invalid(ErrorCode::EINVAL, "PG beyond the pool's pg_num"));
        }
        let Target::Primary { osd, addr } = routing::target(map, pg) else {
            tracing::debug!(%pg, epoch = map.epoch, "no primary up; waiting for the map");
            return Ok(Attempt::WaitMapChange(WaitReason::NoPrimary));
        };
        let ticket = shared.valid_ticket().await?;
        // After taking the ticket: a fenced instance never sends, whatever its session.
        shared.check_not_blocklisted()?;
        let timeout = shared.cfg.connect_timeout;
        let osds = &shared.osds;
        let (client, conn_id) =
            match osds.get(osd, addr, &shared.cfg.entity, &ticket, timeout).await {
                Ok(found) => found,
                Err(ConnectError::Refused(code, message)) if ticket_renewed => {
                    return Err(ClientError::Auth { code, message });
                }
                Err(ConnectError::Refused(_, message)) => {
                    tracing::debug!(osd, %message, "OSD refused our ticket; renewing it");
                    return Ok(Attempt::RenewTicket(ticket.generation));
                }
                Err(ConnectError::Unreachable) => {
                    return Ok(Attempt::WaitMapChange(WaitReason::Unreachable(osd)))
                }
            };
        let reply = match order {
            None => client.call(request).await,
            Some(order) => {
                order.turn(client.id()).await;
                match client.send(request).await {
                    Ok(pending) => {
                        order.sent(client.id());
                        pending.await
                    }
                    Err(error) => Err(error),
                }
            }
        };
        Ok(match reply {
            Ok(Reply::Retry { epoch }) => {
                tracing::debug!(%pg, osd, epoch, ours = map.epoch, "OSD asks to retry");
                if epoch > map.epoch {
                    Attempt::WaitEpoch(epoch)
                } else {
                    Attempt::WaitMapChange(WaitReason::NotReady(osd))
                }
            }
            Ok(Reply::Failed { code, .. }) if code == ErrorCode::EAGAIN => {
                Attempt::WaitMapChange(WaitReason::NotReady(osd))
            }
            Ok(Reply::Failed { code, message })
                if code == ErrorCode::EPERM && !ticket_renewed && self.ticket_stale(map) =>
            {
                tracing::debug!(osd, %message, "EPERM with a stale ticket; renewing it");
                Attempt::RenewTicket(ticket.generation)
            }
            Ok(reply) => Attempt::Answer(reply, Via { conn_id, client }),
            Err(error) => {
                tracing::debug!(osd, %error, "lost the OSD connection with a request in flight");
                Attempt::WaitMapChange(WaitReason::Unreachable(osd))
            }
        })
    }

    /// True if our ticket may be why an OSD answered EPERM: it is (about to be) expired, or
    /// the map revokes tickets of our entity issued around or after ours.
    fn ticket_stale(&self, map: &ClusterMap) -> bool {
        let ticket = self.shared().ticket();
        if unix_now().saturating_add(TICKET_EXPIRY_SLACK_SECS) >= ticket.expires_unix {
            return true;
        }
        let entity = self.shared().cfg.entity.to_string();
        map.auth_floor.get(&entity).is_some_and(|&floor| {
            floor.saturating_add(AUTH_FLOOR_SLACK_SECS) >= ticket.obtained_unix
        })
    }
}

/// The OSD connection an answer came over.
pub(crate) struct Via {
    /// The connection's id (see `OsdConns`).
    pub conn_id: u64,
    /// The connection.
    pub client: quarry_wire::RpcClient,
}

/// What one try of a PG request came to.
enum Attempt {
    /// The OSD answered (success or a final error).
    Answer(Reply, Via),
    /// Resend once the map changes or after a backoff, whichever comes first.
    WaitMapChange(WaitReason),
    /// Resend once the map reaches this epoch.
    WaitEpoch(u64),
    /// Resend with a ticket newer than this generation.
    RenewTicket(u64),
}

/// The answer to a tell: (output, status), or the daemon's refusal.
fn told(reply: Reply) -> Result<(String, String), ClientError> {
    match reply {
        Reply::Told { output, status } => Ok((output, status)),
        Reply::Failed { code, message } => Err(ClientError::Failed { code, message }),
        other => {
            tracing::warn!(reply = reply_kind(&other), "odd reply to a tell");
            Err(ClientError::Protocol { request: "Tell" })
        }
    }
}

/// Why an attempt found no primary to answer.
enum WaitReason {
    /// The map has no primary up for the PG.
    NoPrimary,
    /// The primary could not be reached (or the connection broke).
    Unreachable(OsdId),
    /// The primary asked us to come back (its PG is not active yet).
    NotReady(OsdId),
}

impl std::fmt::Display for WaitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitReason::NoPrimary => write!(f, "no OSD up"),
            WaitReason::Unreachable(osd) => write!(f, "osd.{osd} does not answer"),
            WaitReason::NotReady(osd) => write!(f, "osd.{osd} is not ready for it"),
        }
    }
}

/// Commands whose effect shows in the map (pools, snapshots, auth floors, blocklist).
fn changes_map(cmd: &MonCommand) -> bool {
    !matches!(
        cmd,
        MonCommand::Status
            | MonCommand::AuthGet { .. }
            | MonCommand::AuthGetKey { .. }
            | MonCommand::AuthLs
    )
}
