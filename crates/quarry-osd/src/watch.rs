//! Watch / notify: which clients watch which objects of the PGs this OSD is primary of, and
//! the notifies in flight. Held in memory only (as in Ceph, watches are not in the PG log):
//! a restart, a primary change or a lost connection ends a watch, and the watcher re-watches.
//!
//! - `Watch` (read caps, the object must exist: ENOENT) registers `(global_id, cookie)` on the
//!   object with the connection's event sink and a timeout (the client's, or
//!   [`WATCH_TIMEOUT_DEFAULT`], Ceph's `osd_client_watch_timeout`). `WatchPing` keeps it
//!   alive; ENOTCONN when the OSD no longer holds it.
//! - The reaper ([`run_reaper`], every [`REAP_INTERVAL`]) drops watches not pinged within
//!   their timeout (ETIMEDOUT), whose client the newest map blocklists (ESHUTDOWN), and whose
//!   object's PG this OSD is no longer primary of (ENOTCONN). The watcher is sent
//!   `Event::WatchError` when its connection is still open.
//! - Watches are kept by object (pool and name), not by PG: when a split or a merge moves an
//!   object to another PG whose primary is this OSD too, its watches stay, and the pings,
//!   notifies and unwatches that name the object's new PG find them (before, they were kept
//!   under the old PG: a ping naming the new one was refused, the watcher re-watched, and a
//!   notify meanwhile waited for the broken watch until it timed out).
//! - A watch whose connection closed is *disconnected*, as in Ceph: it stays listed until its
//!   timeout (a crashed client's watch shows in `list_watchers`, `rbd status`, for that long),
//!   its pings are refused (ENOTCONN: the client watches again, and unwatches the old cookie
//!   over its new connection), and notifies count it as missed at once.
//! - `Notify` pushes `Event::Notify` to every watcher of the object and waits until each acked
//!   (`NotifyAck`, with a reply payload) or the timeout passed. A watcher whose watch goes away
//!   meanwhile, or whose event queue is full, counts as missed. The reply lists acks and missed
//!   watchers; the client reports missed ones as ETIMEDOUT (rados_notify2).
//! - `ListWatchers` shows each watch as `(IP:0/GLOBAL_ID, entity, cookie)`.
//!
//! Bounds: [`WATCHES_MAX`] watches and [`NOTIFIES_MAX`] notifies in flight per OSD (EAGAIN
//! beyond), notify timeouts at most [`NOTIFY_TIMEOUT_MAX`], watch timeouts at most
//! [`WATCH_TIMEOUT_MAX_SECS`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use quarry_auth::OsdAccess;
use quarry_types::{
    ErrorCode, ObjectOp, OpReply, OsdId, PgId, PoolId, OBJECT_NAME_LEN_MAX, SNAP_HEAD,
};
use quarry_wire::blocklist::{fencing_entry, EntityAddr};
use quarry_wire::{
    ClusterMap, ConnContext, Event, EventSink, NotifyAckInfo, NotifyOutcome, Reply, Request,
    WatcherInfo,
};

use crate::op::check::{caps_allow, fenced, ticket_honoured};
use crate::op::{admit, retry, store_failure};
use crate::osd::Osd;
use crate::pg::state_machine::blocking;
use crate::session::{now_unix, Session};

/// A watch not pinged for this long is dropped, unless the client asked for another timeout
/// (Ceph's `osd_client_watch_timeout`).
pub(crate) const WATCH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Longest watch timeout a client may ask for.
pub(crate) const WATCH_TIMEOUT_MAX_SECS: u32 = 3600;
/// A notify without a timeout waits this long for acks.
pub(crate) const NOTIFY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Longest notify timeout.
pub(crate) const NOTIFY_TIMEOUT_MAX: Duration = Duration::from_secs(600);
/// How often the reaper looks for watches to drop.
pub(crate) const REAP_INTERVAL: Duration = Duration::from_millis(250);
/// Watches one OSD holds at most.
pub(crate) const WATCHES_MAX: usize = 100_000;
/// Notifies in flight on one OSD at most.
pub(crate) const NOTIFIES_MAX: usize = 10_000;

/// A watch's identity: the watcher's global id and its cookie.
type WatchKey = (u64, u64);
/// An object: its pool and name (its PG changes when the pool splits or merges).
type ObjectKey = (PoolId, String);

struct Watcher {
    entity: String,
    instance: String,
    addr: EntityAddr,
    sink: EventSink,
    timeout: Duration,
    last_ping: Instant,
}

struct PendingNotify {
    object: ObjectKey,
    waiting: BTreeSet<WatchKey>,
    acks: Vec<NotifyAckInfo>,
    missed: Vec<WatchKey>,
    done: Option<oneshot::Sender<()>>,
}

impl PendingNotify {
    fn maybe_complete(&mut self) {
        if self.waiting.is_empty() {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }

    /// The watch `key` will not ack: count it as missed.
    fn lost(&mut self, key: WatchKey) {
        if self.waiting.remove(&key) {
            self.missed.push(key);
            self.maybe_complete();
        }
    }
}

#[derive(Default)]
struct State {
    objects: HashMap<ObjectKey, BTreeMap<WatchKey, Watcher>>,
    notifies: HashMap<u64, PendingNotify>,
    count: usize,
}

impl State {
    /// Removes one watch; its pending notifies count it as missed.
    fn remove(&mut self, object: &ObjectKey, key: WatchKey) -> Option<Watcher> {
        let watchers = self.objects.get_mut(object)?;
        let removed = watchers.remove(&key)?;
        if watchers.is_empty() {
            self.objects.remove(object);
        }
        self.count -= 1;
        for pending in self.notifies.values_mut() {
            if &pending.object == object {
                pending.lost(key);
            }
        }
        Some(removed)
    }
}

/// The watches and notifies of one OSD.
#[derive(Default)]
pub(crate) struct Watches {
    state: Mutex<State>,
    next_notify: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why the reaper drops a watch.
#[derive(Debug, PartialEq, Eq)]
enum Why {
    TimedOut,
    Blocklisted,
    NotPrimary,
}

impl Watches {
    /// Registers (or refreshes) a watch; returns its timeout in seconds.
    fn watch(&self, object: ObjectKey, key: WatchKey, watcher: Watcher) -> Result<u32, ErrorCode> {
        let secs = watcher.timeout.as_secs() as u32;
        let mut state = lock(&self.state);
        let present = state.objects.get(&object).is_some_and(|w| w.contains_key(&key));
        if !present && state.count >= WATCHES_MAX {
            return Err(ErrorCode::EAGAIN);
        }
        if !present {
            state.count += 1;
        }
        state.objects.entry(object).or_default().insert(key, watcher);
        Ok(secs)
    }

    /// Marks a watch alive; false if this OSD holds no such watch or its connection closed
    /// (a disconnected watch is left to time out).
    fn ping(&self, object: &ObjectKey, key: WatchKey) -> bool {
        let mut state = lock(&self.state);
        let Some(watcher) = state.objects.get_mut(object).and_then(|w| w.get_mut(&key)) else {
            return false;
        };
        if watcher.sink.is_closed() {
            return false;
        }
        watcher.last_ping = Instant::now();
        true
    }

    fn unwatch(&self, object: &ObjectKey, key: WatchKey) {
        lock(&self.state).remove(object, key);
    }

    fn list(&self, object: &ObjectKey) -> Vec<WatcherInfo> {
        let state = lock(&self.state);
        let Some(watchers) = state.objects.get(object) else {
            return Vec::new();
        };
        watchers
            .iter()
            .map(|(&(global_id, cookie), w)| WatcherInfo {
                addr: w.addr.to_string(),
                entity: w.entity.clone(),
                global_id,
                cookie,
                timeout_secs: w.timeout.as_secs() as u32,
            })
            .collect()
    }

    /// Sends a notify to every watcher of `object`; returns its id and a receiver that fires
    /// once every watcher acked or was lost.
    fn start_notify(
        &self,
        object: ObjectKey,
        notifier: u64,
        payload: Vec<u8>,
    ) -> Result<(u64, oneshot::Receiver<()>), ErrorCode> {
        let mut state = lock(&self.state);
        if state.notifies.len() >= NOTIFIES_MAX {
            return Err(ErrorCode::EAGAIN);
        }
        let notify_id = self.next_notify.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, rx) = oneshot::channel();
        let mut pending = PendingNotify {
            object: object.clone(),
            waiting: BTreeSet::new(),
            acks: Vec::new(),
            missed: Vec::new(),
            done: Some(done),
        };
        if let Some(watchers) = state.objects.get(&object) {
            for (&key, watcher) in watchers {
                let event =
                    Event::Notify { cookie: key.1, notify_id, notifier, payload: payload.clone() };
                if watcher.sink.try_send(event) {
                    pending.waiting.insert(key);
                } else {
                    pending.missed.push(key);
                }
            }
        }
        pending.maybe_complete();
        state.notifies.insert(notify_id, pending);
        Ok((notify_id, rx))
    }

    /// Records an ack; ignored if the notify is over or the watch was not asked.
    fn ack(&self, notify_id: u64, key: WatchKey, payload: Vec<u8>) {
        let mut state = lock(&self.state);
        let Some(pending) = state.notifies.get_mut(&notify_id) else {
            return;
        };
        if pending.waiting.remove(&key) {
            pending.acks.push(NotifyAckInfo { global_id: key.0, cookie: key.1, payload });
            pending.maybe_complete();
        }
    }

    /// Ends a notify: acks so far, and every watcher that did not ack as missed.
    fn finish_notify(&self, notify_id: u64) -> NotifyOutcome {
        let Some(mut pending) = lock(&self.state).notifies.remove(&notify_id) else {
            return NotifyOutcome { notify_id, ..NotifyOutcome::default() };
        };
        pending.missed.extend(std::mem::take(&mut pending.waiting));
        NotifyOutcome { notify_id, acks: pending.acks, missed: pending.missed }
    }

    /// Drops the watches that must go (see the module docs); returns how many.
    fn reap(&self, map: &ClusterMap, me: OsdId, now: Instant, now_unix: u64) -> usize {
        let state = &mut *lock(&self.state);
        let mut doomed = Vec::new();
        for (object, watchers) in &state.objects {
            // The object's PG in the newest map (a split or merge may have moved it).
            let pg = map.pools.get(&object.0).filter(|p| p.pg_num > 0).map(|p| PgId {
                pool: object.0,
                seed: quarry_placement::pg_of(&object.1, p.pg_num),
            });
            let primary = pg.is_some_and(|pg| map.acting(pg).first() == Some(&me));
            for (&key, w) in watchers {
                let why = if !primary {
                    Why::NotPrimary
                } else if fencing_entry(&map.blocklist, &w.instance, Some(w.addr), now_unix)
                    .is_some()
                {
                    Why::Blocklisted
                } else if now.duration_since(w.last_ping) > w.timeout {
                    Why::TimedOut
                } else {
                    continue;
                };
                doomed.push((object.clone(), key, why));
            }
        }
        let dropped = doomed.len();
        for (object, key, why) in doomed {
            let Some(watcher) = state.remove(&object, key) else {
                continue;
            };
            tracing::debug!(
                pool = object.0,
                object = object.1,
                global_id = key.0,
                cookie = key.1,
                ?why,
                "watch dropped"
            );
            if watcher.sink.is_closed() {
                continue;
            }
            let code = match why {
                Why::NotPrimary => ErrorCode::ENOTCONN,
                Why::Blocklisted => ErrorCode::ESHUTDOWN,
                Why::TimedOut => ErrorCode::ETIMEDOUT,
            };
            watcher.sink.try_send(Event::WatchError { cookie: key.1, code });
        }
        dropped
    }
}

/// Drops dead watches until the OSD stops (the task is aborted).
pub(crate) async fn run_reaper(osd: Arc<Osd>) {
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let map = osd.router.map();
        osd.watches.reap(&map, osd.router.me(), Instant::now(), now_unix());
    }
}

fn failed(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Failed { code, message: message.into() }
}

/// Admission shared by the object-naming requests: caps (read), primary, placement, name
/// length, the client not blocklisted, and the object existing (ENOENT otherwise).
async fn admit_object(
    osd: &Osd,
    session: &Session,
    peer: IpAddr,
    pg: PgId,
    epoch: u64,
    name: &str,
) -> Result<(), Reply> {
    let (map, group) = admit(osd, session, pg, epoch, OsdAccess::READ, name).await?;
    if name.len() > OBJECT_NAME_LEN_MAX {
        return Err(failed(ErrorCode::ENAMETOOLONG, "object name too long"));
    }
    let pg_num = map.pools.get(&pg.pool).map_or(0, |pool| pool.pg_num);
    if pg_num == 0 || quarry_placement::pg_of(name, pg_num) != pg.seed {
        if epoch < map.epoch && pg_num > 0 {
            // Placed with an older map: the pool split since (`pg::split`).
            return Err(retry(&map));
        }
        let message = format!("object '{name}' is not in pg {pg} (misdirected op)");
        return Err(failed(ErrorCode::EINVAL, message));
    }
    if crate::pg::split::moved_out(pg, group.pg_num(), name) {
        return Err(retry(&map));
    }
    if !group.read_barrier(osd.router.me()).await {
        return Err(retry(&map));
    }
    fenced(session, peer, &osd.router.map(), now_unix())?;
    let store = osd.router.store().clone();
    let owned = name.to_string();
    match blocking(move || store.read(pg, &owned, SNAP_HEAD, &[ObjectOp::Stat])).await {
        Ok(OpReply::Ok(_)) => Ok(()),
        Ok(OpReply::Failed { code, .. }) => {
            Err(failed(code, format!("{name}: {}", code.message())))
        }
        Err(e) => Err(store_failure(pg, &e)),
    }
}

/// Serves the watch requests (`Watch`, `WatchPing`, `Unwatch`, `Notify`, `NotifyAck`,
/// `ListWatchers`).
pub(crate) async fn handle(osd: &Osd, ctx: &ConnContext<Session>, request: Request) -> Reply {
    let session = &ctx.session;
    let peer = ctx.peer.ip();
    let gid = session.global_id;
    match request {
        Request::Watch { pg, epoch, name, cookie, timeout_secs } => {
            if let Err(reply) = admit_object(osd, session, peer, pg, epoch, &name).await {
                return reply;
            }
            let timeout = match timeout_secs {
                0 => WATCH_TIMEOUT_DEFAULT,
                secs => Duration::from_secs(secs.min(WATCH_TIMEOUT_MAX_SECS).into()),
            };
            let watcher = Watcher {
                entity: session.name().to_string(),
                instance: session.instance().to_string(),
                addr: EntityAddr::client(peer, gid),
                sink: ctx.events.clone(),
                timeout,
                last_ping: Instant::now(),
            };
            tracing::debug!(%pg, object = name, global_id = gid, cookie, ?timeout, "watch");
            match osd.watches.watch((pg.pool, name), (gid, cookie), watcher) {
                Ok(timeout_secs) => Reply::Watching { timeout_secs },
                Err(code) => failed(code, "too many watches on this OSD"),
            }
        }
        Request::WatchPing { pg, epoch, name, cookie } => {
            // Not routed like an op: a watch held here is valid (the reaper drops it once
            // this OSD is not the primary of the object's PG in the newest map), and a PG
            // in the middle of a split or merge (sealed, or not created yet) would answer
            // "retry" to a watch that is fine. Caps and fencing still apply.
            let _ = epoch;
            let map = osd.router.map();
            if let Err(reply) = ticket_honoured(session, &map, now_unix()) {
                return reply;
            }
            let Some(pool) = map.pools.get(&pg.pool) else {
                return failed(ErrorCode::ENOTCONN, format!("no watch {cookie} here"));
            };
            let namespace = quarry_types::split_namespace(&name).0;
            if let Err(reply) = caps_allow(session, &pool.name, namespace, OsdAccess::READ) {
                return reply;
            }
            if let Err(reply) = fenced(session, peer, &map, now_unix()) {
                return reply;
            }
            if osd.watches.ping(&(pg.pool, name), (gid, cookie)) {
                Reply::Ack
            } else {
                failed(ErrorCode::ENOTCONN, format!("no watch {cookie} here"))
            }
        }
        Request::Unwatch { pg, epoch, name, cookie } => {
            // No admission beyond the session: removing one's own watch is always fine, and
            // a watch on a PG that moved is gone anyway.
            let _ = epoch;
            osd.watches.unwatch(&(pg.pool, name), (gid, cookie));
            Reply::Ack
        }
        Request::Notify { pg, epoch, name, payload, timeout_ms } => {
            if let Err(reply) = admit_object(osd, session, peer, pg, epoch, &name).await {
                return reply;
            }
            let timeout = match timeout_ms {
                0 => NOTIFY_TIMEOUT_DEFAULT,
                ms => Duration::from_millis(ms).min(NOTIFY_TIMEOUT_MAX),
            };
            let (notify_id, done) = match osd.watches.start_notify((pg.pool, name), gid, payload) {
                Ok(started) => started,
                Err(code) => return failed(code, "too many notifies in flight on this OSD"),
            };
            // Finish the notify even if this handler is cancelled (connection closed).
            let guard = FinishOnDrop { watches: &osd.watches, notify_id: Some(notify_id) };
            let _ = tokio::time::timeout(timeout, done).await;
            Reply::Notified(guard.finish())
        }
        Request::NotifyAck { notify_id, cookie, payload } => {
            if let Err(reply) = ticket_honoured(session, &osd.router.map(), now_unix()) {
                return reply;
            }
            osd.watches.ack(notify_id, (gid, cookie), payload);
            Reply::Ack
        }
        Request::ListWatchers { pg, epoch, name } => {
            if let Err(reply) = admit_object(osd, session, peer, pg, epoch, &name).await {
                return reply;
            }
            Reply::Watchers(osd.watches.list(&(pg.pool, name)))
        }
        _ => failed(ErrorCode::EOPNOTSUPP, "not a watch request"),
    }
}

/// Removes a notify's state when its handler ends, however it ends.
struct FinishOnDrop<'a> {
    watches: &'a Watches,
    notify_id: Option<u64>,
}

impl FinishOnDrop<'_> {
    fn finish(mut self) -> NotifyOutcome {
        let id = self.notify_id.take().unwrap_or_default();
        self.watches.finish_notify(id)
    }
}

impl std::ops::Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.notify_id.take() {
            self.watches.finish_notify(id);
        }
    }
}
