//! Watch / notify on the client side (librados' `rados_watch2`, `rados_notify2`,
//! `rados_notify_ack`, `rados_watch_check`, `rados_list_watchers`).
//!
//! A watch is registered on the object's primary OSD over one connection and lives as long
//! as that connection and its pings: a task pings it every third of its timeout on the same
//! connection. Notifies and watch errors arrive as [`WatchEvent`]s on the [`Watch`]'s
//! channel (async [`Watch::next`], or [`Watch::blocking_next`] from a thread that is not a
//! runtime thread, as the C ABI's callbacks will). The watch is broken, and the channel gets
//! one [`WatchEvent::Error`], when its connection closes (OSD restart, network: ENOTCONN), the
//! OSD says it no longer holds it (a ping answered ENOTCONN: timed out, or the PG moved to
//! another primary), or the OSD drops it and says why (`Event::WatchError`: ETIMEDOUT,
//! ENOTCONN, ESHUTDOWN when blocklisted). [`Rados::watch_check`] reports the same error, or
//! the time since the OSD last confirmed the watch. Nothing re-watches on its own: the owner
//! of a broken watch watches again (and re-reads what it watched), as librbd does.
//!
//! A notify is delivered to every watcher of the object; each acks with a payload
//! ([`Rados::notify_ack`]). [`Rados::notify`] returns the acks and the watchers that missed
//! it (`missed` non-empty is rados_notify2's ETIMEDOUT, with the same reply buffer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use quarry_types::{ErrorCode, PoolId};
use quarry_wire::{Event, NotifyOutcome, Reply, Request, RpcClient, WatcherInfo};

use crate::rados::Via;
use crate::session::reply_kind;
use crate::shared::Shared;
use crate::{ClientError, Rados};

/// Shortest interval between two pings of one watch.
const PING_INTERVAL_MIN: Duration = Duration::from_millis(200);
/// A ping without an answer for this long breaks the watch (ETIMEDOUT).
const PING_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a watch's channel carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A notify: handle `payload`, then [`Rados::notify_ack`] with `notify_id` and the
    /// watch's cookie (the notifier waits for it).
    Notify {
        /// The notify to acknowledge.
        notify_id: u64,
        /// The notifier's global id.
        notifier_id: u64,
        /// The notifier's payload.
        payload: Vec<u8>,
    },
    /// The watch is broken (ENOTCONN: connection lost or the OSD no longer holds it;
    /// ETIMEDOUT: not pinged in time; ESHUTDOWN: this client is blocklisted). No more events
    /// follow; watch again to resume.
    Error(ErrorCode),
}

/// A registered watch: its cookie and its events. Dropping it (or [`Rados::unwatch`])
/// ends the watch.
pub struct Watch {
    cookie: u64,
    events: mpsc::UnboundedReceiver<WatchEvent>,
    rados: Rados,
    timeout: Duration,
    /// The runtime the watch was made on (drop sends the unwatch there).
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("cookie", &self.cookie).finish()
    }
}

impl Watch {
    /// The watch's cookie (`rados_watch2`'s handle).
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// The timeout the OSD applies to this watch.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The next event; None once the watch ended (unwatched, or after its error).
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }

    /// [`Watch::next`] for threads outside the runtime (panics on a runtime thread).
    pub fn blocking_next(&mut self) -> Option<WatchEvent> {
        self.events.blocking_recv()
    }

    /// An event if one is waiting.
    pub fn try_next(&mut self) -> Option<WatchEvent> {
        self.events.try_recv().ok()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let registry = &self.rados.shared_arc().osds.watches;
        if lock(&registry.slots).contains_key(&self.cookie)
            && !self.rados.shared_arc().is_shut_down()
        {
            // Best effort: tell the OSD now rather than letting the watch time out.
            let (rados, cookie) = (self.rados.clone(), self.cookie);
            self.handle.spawn(async move { rados.unwatch(cookie).await });
        }
    }
}

struct Slot {
    cookie: u64,
    pool: PoolId,
    name: String,
    pg: quarry_types::PgId,
    /// The connection the watch was made over (0 until the OSD answered).
    conn_id: u64,
    client: Option<RpcClient>,
    tx: mpsc::UnboundedSender<WatchEvent>,
    last_confirmed: Instant,
    error: Option<ErrorCode>,
}

impl Slot {
    fn break_with(&mut self, code: ErrorCode) {
        if self.error.is_none() {
            tracing::debug!(cookie = self.cookie, pool = self.pool, object = self.name, %code, "watch broken");
            self.error = Some(code);
            let _ = self.tx.send(WatchEvent::Error(code));
        }
    }
}

/// The watches of one client, by cookie.
#[derive(Default)]
pub(crate) struct WatchRegistry {
    slots: Mutex<HashMap<u64, Slot>>,
    next_cookie: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WatchRegistry {
    fn take(&self, cookie: u64) -> Option<Slot> {
        lock(&self.slots).remove(&cookie)
    }

    /// Routes the events of OSD connection `conn_id` until it closes, then breaks the
    /// watches made over it.
    pub(crate) async fn dispatch(self: Arc<Self>, conn_id: u64, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            let mut slots = lock(&self.slots);
            let (cookie, event) = match event {
                Event::Notify { cookie, notify_id, notifier, payload } => {
                    (cookie, WatchEvent::Notify { notify_id, notifier_id: notifier, payload })
                }
                Event::WatchError { cookie, code } => (cookie, WatchEvent::Error(code)),
                Event::Map(_) | Event::Config(_) => continue,
            };
            // Events of a watch still being set up (conn_id 0) come from the connection
            // its request went over: the reply and the first notify may race here.
            let Some(slot) = slots
                .get_mut(&cookie)
                .filter(|s| (s.conn_id == conn_id || s.conn_id == 0) && s.error.is_none())
            else {
                continue;
            };
            match event {
                WatchEvent::Error(code) => slot.break_with(code),
                notify => {
                    let _ = slot.tx.send(notify);
                }
            }
        }
        for slot in lock(&self.slots).values_mut().filter(|s| s.conn_id == conn_id) {
            slot.break_with(ErrorCode::ENOTCONN);
        }
    }
}

/// Pings the watch `cookie` until it is gone or broken. Each ping names the object's PG in
/// the newest map (a split or merge moves the object; the OSD keeps the watch, by pool and
/// name, while it is the primary of the object's PG).
async fn pinger(shared: Arc<Shared>, registry: Arc<WatchRegistry>, cookie: u64, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if shared.is_shut_down() {
            return;
        }
        let (client, request) = {
            let slots = lock(&registry.slots);
            let Some(slot) = slots.get(&cookie).filter(|s| s.error.is_none()) else {
                return;
            };
            let Some(client) = slot.client.clone() else { return };
            let map = shared.map();
            let pg = crate::routing::pg_for(&map, slot.pool, &slot.name).unwrap_or(slot.pg);
            let name = slot.name.clone();
            (client, Request::WatchPing { pg, epoch: map.epoch, name, cookie })
        };
        let answer = tokio::time::timeout(PING_REPLY_TIMEOUT, client.call(request)).await;
        let mut slots = lock(&registry.slots);
        let Some(slot) = slots.get_mut(&cookie) else { return };
        match answer {
            Ok(Ok(Reply::Ack)) => slot.last_confirmed = Instant::now(),
            Ok(Ok(Reply::Failed { code, .. })) => slot.break_with(code),
            // (From an OSD that routes pings like ops.) Not the primary any more.
            Ok(Ok(Reply::Retry { .. })) => slot.break_with(ErrorCode::ENOTCONN),
            Ok(Ok(other)) => {
                tracing::warn!(reply = reply_kind(&other), "odd reply to a watch ping");
                slot.break_with(ErrorCode::EPROTO);
            }
            Ok(Err(_)) => slot.break_with(ErrorCode::ENOTCONN),
            Err(_) => slot.break_with(ErrorCode::ETIMEDOUT),
        }
        if slot.error.is_some() {
            return;
        }
    }
}

fn failed(reply: Reply, request: &'static str) -> ClientError {
    match reply {
        Reply::Failed { code, message } => ClientError::Failed { code, message },
        other => {
            tracing::warn!(reply = reply_kind(&other), request, "odd reply");
            ClientError::Protocol { request }
        }
    }
}

impl Rados {
    /// Watches `object` of `pool` (it must exist: ENOENT; read caps). `timeout`: how long
    /// the OSD keeps the watch without a ping (None: the OSD's default, 30 s; whole seconds,
    /// at least 1). Returns once the OSD holds the watch.
    pub async fn watch(
        &self,
        pool: PoolId,
        object: &str,
        timeout: Option<Duration>,
    ) -> Result<Watch, ClientError> {
        let shared = self.shared_arc();
        shared.check_running()?;
        shared.check_not_blocklisted()?;
        let registry = shared.osds.watches.clone();
        let cookie = registry.next_cookie.fetch_add(1, Ordering::Relaxed) + 1;
        let pg = self.pg_of_object(pool, object).await?;
        let (tx, events) = mpsc::unbounded_channel();
        let slot = Slot {
            cookie,
            pool,
            name: object.to_string(),
            pg,
            conn_id: 0,
            client: None,
            tx,
            last_confirmed: Instant::now(),
            error: None,
        };
        lock(&registry.slots).insert(cookie, slot);
        let timeout_secs = timeout.map_or(0, |t| t.as_secs().clamp(1, u32::MAX.into()) as u32);
        let make =
            |epoch| Request::Watch { pg, epoch, name: object.to_string(), cookie, timeout_secs };
        let answer = self.pg_request_via(pg, make).await;
        let (reply, via) = match answer {
            Ok(found) => found,
            Err(e) => {
                registry.take(cookie);
                return Err(e);
            }
        };
        let Reply::Watching { timeout_secs } = reply else {
            registry.take(cookie);
            return Err(failed(reply, "Watch"));
        };
        let Via { conn_id, client } = via;
        {
            let mut slots = lock(&registry.slots);
            let Some(slot) = slots.get_mut(&cookie) else {
                return Err(ClientError::Shutdown);
            };
            slot.client = Some(client.clone());
            slot.conn_id = conn_id;
            slot.last_confirmed = Instant::now();
            if client.is_closed() {
                slot.break_with(ErrorCode::ENOTCONN);
            }
        }
        let timeout = Duration::from_secs(timeout_secs.max(1).into());
        let every = (timeout / 3).max(PING_INTERVAL_MIN);
        tokio::spawn(pinger(shared.clone(), registry.clone(), cookie, every));
        tracing::debug!(pool, object, cookie, ?timeout, "watching");
        let handle = tokio::runtime::Handle::current();
        Ok(Watch { cookie, events, rados: self.clone(), timeout, handle })
    }

    /// Cookies of this client's registered watches.
    pub(crate) fn watch_cookies(&self) -> Vec<u64> {
        lock(&self.shared_arc().osds.watches.slots).keys().copied().collect()
    }

    /// Ends the watch `cookie` (`rados_unwatch2`); an unknown cookie is fine. The OSD is
    /// told over the current connection to the object's primary (a broken watch's own
    /// connection may be gone), so a disconnected watch does not linger until its timeout.
    pub async fn unwatch(&self, cookie: u64) -> Result<(), ClientError> {
        let Some(slot) = self.shared_arc().osds.watches.take(cookie) else {
            return Ok(());
        };
        // The object's PG now (a split or merge may have moved it and its watch).
        let pg = crate::routing::pg_for(&self.map(), slot.pool, &slot.name).unwrap_or(slot.pg);
        let make = |epoch| Request::Unwatch { pg, epoch, name: slot.name.clone(), cookie };
        let told = tokio::time::timeout(PING_REPLY_TIMEOUT, self.pg_request_via(pg, make));
        match told.await {
            Ok(Ok((Reply::Ack, _))) => Ok(()),
            Ok(Ok((other, _))) => Err(failed(other, "Unwatch")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// `rados_watch_check`: the time since the OSD last confirmed the watch `cookie`, or the
    /// error that broke it (ENOTCONN for an unknown cookie).
    pub fn watch_check(&self, cookie: u64) -> Result<Duration, ClientError> {
        let shared = self.shared_arc();
        let slots = lock(&shared.osds.watches.slots);
        let broken = |code: ErrorCode| ClientError::Failed {
            code,
            message: format!("watch {cookie}: {}", code.message()),
        };
        let slot = slots.get(&cookie).ok_or_else(|| broken(ErrorCode::ENOTCONN))?;
        match slot.error {
            Some(code) => Err(broken(code)),
            None => Ok(slot.last_confirmed.elapsed()),
        }
    }

    /// Acknowledges notify `notify_id` delivered to the watch `cookie`, with a reply payload
    /// for the notifier. Sent over the watch's connection (ENOTCONN if it is broken).
    pub async fn notify_ack(
        &self,
        cookie: u64,
        notify_id: u64,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let client = {
            let shared = self.shared_arc();
            let slots = lock(&shared.osds.watches.slots);
            slots.get(&cookie).and_then(|s| s.client.clone())
        };
        let Some(client) = client else {
            let message = format!("watch {cookie} is not connected");
            return Err(ClientError::Failed { code: ErrorCode::ENOTCONN, message });
        };
        let request = Request::NotifyAck { notify_id, cookie, payload: payload.to_vec() };
        match client.call(request).await {
            Ok(Reply::Ack) => Ok(()),
            Ok(other) => Err(failed(other, "NotifyAck")),
            Err(e) => {
                Err(ClientError::Failed { code: ErrorCode::ENOTCONN, message: e.to_string() })
            }
        }
    }

    /// Notifies every watcher of `object` with `payload` and waits for their acks, at most
    /// `timeout` (None: the OSD's 30 s). The outcome lists the acks (with reply payloads)
    /// and the watchers that missed it; a non-empty `missed` is rados_notify2's ETIMEDOUT.
    /// The object must exist (ENOENT); read caps.
    pub async fn notify(
        &self,
        pool: PoolId,
        object: &str,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<NotifyOutcome, ClientError> {
        self.shared_arc().check_running()?;
        let pg = self.pg_of_object(pool, object).await?;
        let timeout_ms = timeout.map_or(0, |t| (t.as_millis() as u64).max(1));
        let make = |epoch| Request::Notify {
            pg,
            epoch,
            name: object.to_string(),
            payload: payload.to_vec(),
            timeout_ms,
        };
        match self.pg_request_via(pg, make).await?.0 {
            Reply::Notified(outcome) => Ok(outcome),
            other => Err(failed(other, "Notify")),
        }
    }

    /// The watchers of `object` (address `IP:0/GLOBAL_ID`, entity, cookie). ENOENT if the
    /// object does not exist; read caps.
    pub async fn list_watchers(
        &self,
        pool: PoolId,
        object: &str,
    ) -> Result<Vec<WatcherInfo>, ClientError> {
        self.shared_arc().check_running()?;
        let pg = self.pg_of_object(pool, object).await?;
        let make = |epoch| Request::ListWatchers { pg, epoch, name: object.to_string() };
        match self.pg_request_via(pg, make).await?.0 {
            Reply::Watchers(list) => Ok(list),
            other => Err(failed(other, "ListWatchers")),
        }
    }
}
