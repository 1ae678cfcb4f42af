//! State shared by every clone of a client and its background task: the newest map, the
//! current monitor session, the current ticket, the OSD connections, and the shutdown flag;
//! plus the waits built on them (for a newer map, a new session, a fresh ticket).
//!
//! Each piece of state lives in a `tokio::sync::watch` channel: readers take the newest value
//! without blocking writers, and waiters wake when it changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use quarry_types::ErrorCode;
use quarry_wire::blocklist::{fencing_entry, EntityAddr};
use quarry_wire::{ClusterMap, Event, Reply, Request};

use crate::osdc::OsdConns;
use crate::session::{reply_kind, unix_now, FreshTicket, MonSession, Opened, TicketState};
use crate::{ClientConfig, ClientError};

/// How long to wait for a pushed map before asking the monitor for it.
const MAP_PUSH_GRACE: Duration = Duration::from_millis(300);
/// How often a wait for a renewed ticket looks whether the monitor refused it.
const REFUSAL_POLL: Duration = Duration::from_millis(100);
/// Bound on one map request to the monitor.
const MAP_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait notices kept for a slow listener (older ones are dropped: they are advice).
const WAIT_NOTICES_QUEUED: usize = 64;

pub(crate) struct Shared {
    pub cfg: ClientConfig,
    /// The central config fetched at connect (`Rados::central_config`).
    pub central: std::collections::BTreeMap<String, String>,
    map: watch::Sender<Arc<ClusterMap>>,
    session: watch::Sender<Option<MonSession>>,
    ticket: watch::Sender<Arc<TicketState>>,
    /// Wakes the background task to renew the ticket now (an OSD refused it).
    pub renew_now: Notify,
    shutdown: watch::Sender<bool>,
    pub osds: OsdConns,
    global_id: AtomicU64,
    /// Every global id this client has had (one per monitor session): the blocklist names
    /// instances `entity@global_id`, and a reconnect changes the id.
    instances: Mutex<Vec<u64>>,
    /// Set once the map showed one of our instances blocklisted: the client is fenced for
    /// good (its OSD ops fail with ESHUTDOWN, Ceph's EBLOCKLISTED).
    fenced: Mutex<Option<String>>,
    generation: AtomicU64,
    /// The last refusal the background task met while hunting or renewing (cleared by a new
    /// session): reported to callers instead of letting them wait for nothing.
    refusal: Mutex<Option<(ErrorCode, String)>>,
    /// Counters for [`crate::Rados::stats`].
    pub counters: Counters,
    /// Why ops wait on a PG (see [`crate::WaitNotice`]), for whoever listens.
    pub waits: tokio::sync::broadcast::Sender<crate::WaitNotice>,
}

/// Event counters of one client (monotonic).
#[derive(Default)]
pub(crate) struct Counters {
    pub mon_sessions: AtomicU64,
    pub tickets: AtomicU64,
    pub tickets_on_demand: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// State for a client whose first session is `opened`; returns the session's events.
    pub fn new(
        cfg: ClientConfig,
        opened: Opened,
        central: std::collections::BTreeMap<String, String>,
    ) -> (Arc<Shared>, mpsc::Receiver<Event>) {
        let placeholder = FreshTicket::empty().into_state(0);
        let shared = Arc::new(Shared {
            cfg,
            central,
            map: watch::Sender::new(Arc::new(ClusterMap::default())),
            session: watch::Sender::new(None),
            ticket: watch::Sender::new(Arc::new(placeholder)),
            renew_now: Notify::new(),
            shutdown: watch::Sender::new(false),
            osds: OsdConns::default(),
            global_id: AtomicU64::new(0),
            instances: Mutex::new(Vec::new()),
            fenced: Mutex::new(None),
            generation: AtomicU64::new(0),
            refusal: Mutex::new(None),
            counters: Counters::default(),
            waits: tokio::sync::broadcast::Sender::new(WAIT_NOTICES_QUEUED),
        });
        let events = shared.install_opened(opened);
        (shared, events)
    }

    /// The newest map.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.map.borrow().clone()
    }

    /// The global id of the current monitor session.
    pub fn global_id(&self) -> u64 {
        self.global_id.load(Ordering::Acquire)
    }

    /// Keeps `map` if it is newer than the one we have.
    pub fn install_map(&self, map: ClusterMap) {
        self.map.send_if_modified(|current| {
            if map.epoch > current.epoch {
                tracing::debug!(epoch = map.epoch, "new cluster map");
                *current = Arc::new(map);
                true
            } else {
                false
            }
        });
    }

    /// Installs a new monitor session with its map and ticket; returns its events.
    pub fn install_opened(&self, opened: Opened) -> mpsc::Receiver<Event> {
        let Opened { client, addr, session_key, events, map, ticket, global_id } = opened;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::debug!(mon = %addr, global_id, "monitor session installed");
        self.counters.mon_sessions.fetch_add(1, Ordering::Relaxed);
        // Recorded before the map and the ticket: whoever sees the ticket of this session
        // (its global id) also sees its map and knows the instance (`check_not_blocklisted`).
        lock(&self.instances).push(global_id);
        self.global_id.store(global_id, Ordering::Release);
        self.install_map(map);
        self.install_ticket(ticket);
        *lock(&self.refusal) = None;
        self.session.send_replace(Some(MonSession { client, session_key, generation }));
        events
    }

    /// Installs a new ticket: OSD connections made with the previous one are replaced on
    /// their next use.
    pub fn install_ticket(&self, ticket: FreshTicket) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.counters.tickets.fetch_add(1, Ordering::Relaxed);
        self.ticket.send_replace(Arc::new(ticket.into_state(generation)));
    }

    /// The monitor session is gone.
    pub fn clear_session(&self) {
        self.session.send_replace(None);
    }

    /// The current monitor session, if any and still open.
    pub fn current_session(&self) -> Option<MonSession> {
        self.session.borrow().clone().filter(|s| !s.client.is_closed())
    }

    /// Asks the current monitor for the map and installs it if newer. Best effort: a failure
    /// only means the caller waits for the next push or the next try.
    pub async fn refresh_map(&self) {
        let Some(session) = self.current_session() else {
            return;
        };
        match tokio::time::timeout(MAP_REQUEST_TIMEOUT, session.client.call(Request::GetMap)).await
        {
            Ok(Ok(Reply::Map(map))) => self.install_map(*map),
            Ok(Ok(other)) => tracing::debug!(reply = ?reply_kind(&other), "odd reply to GetMap"),
            Ok(Err(e)) => tracing::debug!(error = %e, "GetMap failed"),
            Err(_) => tracing::debug!("GetMap timed out"),
        }
    }

    /// Remembers why the monitor refused us.
    pub fn set_refusal(&self, error: &ClientError) {
        let message = match error {
            ClientError::Auth { message, .. } => message.clone(),
            other => other.to_string(),
        };
        *lock(&self.refusal) = Some((error.errno(), message));
    }

    fn refusal(&self) -> Option<ClientError> {
        lock(&self.refusal)
            .as_ref()
            .map(|(code, message)| ClientError::Auth { code: *code, message: message.clone() })
    }

    /// Asks every task and wait to stop.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.session.send_replace(None);
        self.osds.clear();
    }

    pub fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn shutdown_receiver(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// `Err(Shutdown)` once shutdown began.
    pub fn check_running(&self) -> Result<(), ClientError> {
        if self.is_shut_down() {
            Err(ClientError::Shutdown)
        } else {
            Ok(())
        }
    }

    /// Refuses OSD work once any instance of this client (any global id it has had) is
    /// blocklisted in the newest map: the client is then fenced for good, as librados is.
    /// Without this, a client fenced while partitioned would write again after its next
    /// monitor session (which has a new global id, not in the blocklist). Call it after
    /// taking the ticket an op will use: the map installed with that ticket's session is then
    /// visible, so a new session's ticket is never used before its map was checked.
    pub fn check_not_blocklisted(&self) -> Result<(), ClientError> {
        let fenced = |message: &str| ClientError::Auth {
            code: ErrorCode::ESHUTDOWN,
            message: message.to_string(),
        };
        let mut state = lock(&self.fenced);
        if let Some(message) = state.as_deref() {
            return Err(fenced(message));
        }
        let map = self.map();
        if map.blocklist.is_empty() {
            return Ok(());
        }
        let now = unix_now();
        let ips: Vec<std::net::IpAddr> = lock(&self.osds.local_ips).iter().copied().collect();
        for id in lock(&self.instances).iter() {
            let instance = format!("{}@{id}", self.cfg.entity);
            // Our instance, or our address (`IP:0/GLOBAL_ID`, or the whole IP) as OSDs see it.
            let mut addrs = ips.iter().map(|&ip| Some(EntityAddr::client(ip, *id)));
            let entry = std::iter::once(None)
                .chain(&mut addrs)
                .find_map(|addr| fencing_entry(&map.blocklist, &instance, addr, now));
            if let Some(entry) = entry {
                let message = format!("client instance {instance} is blocklisted ({entry})");
                tracing::error!(%instance, entry, epoch = map.epoch, "blocklisted: refusing every op");
                let error = fenced(&message);
                *state = Some(message);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Sleeps for `pause`, or less if shutdown begins (then `Err(Shutdown)`).
    pub async fn sleep_or_shutdown(&self, pause: Duration) -> Result<(), ClientError> {
        let mut shutdown = self.shutdown_receiver();
        tokio::select! {
            _ = stopped(&mut shutdown) => Err(ClientError::Shutdown),
            _ = tokio::time::sleep(pause) => Ok(()),
        }
    }

    /// Waits until the map is at least at `epoch`, asking the monitor for it when the push
    /// is late. Unbounded: callers bound it with their op timeout.
    pub async fn wait_for_epoch(&self, epoch: u64) -> Result<(), ClientError> {
        let mut maps = self.map.subscribe();
        let mut shutdown = self.shutdown_receiver();
        let mut grace = MAP_PUSH_GRACE;
        loop {
            if maps.borrow_and_update().epoch >= epoch {
                return Ok(());
            }
            tokio::select! {
                _ = stopped(&mut shutdown) => return Err(ClientError::Shutdown),
                _ = maps.changed() => {}
                _ = tokio::time::sleep(grace) => {
                    self.refresh_map().await;
                    grace = (grace * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Waits until the map moves past `epoch` or `pause` passes, whichever comes first.
    pub async fn wait_map_change(&self, epoch: u64, pause: Duration) -> Result<(), ClientError> {
        let mut maps = self.map.subscribe();
        let mut shutdown = self.shutdown_receiver();
        let deadline = Instant::now() + pause;
        loop {
            if maps.borrow_and_update().epoch > epoch {
                return Ok(());
            }
            tokio::select! {
                _ = stopped(&mut shutdown) => return Err(ClientError::Shutdown),
                _ = maps.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
            }
        }
    }

    /// A ticket that has not expired, waiting (and asking for a renewal) if ours has.
    pub async fn valid_ticket(&self) -> Result<Arc<TicketState>, ClientError> {
        let mut tickets = self.ticket.subscribe();
        let mut shutdown = self.shutdown_receiver();
        loop {
            let ticket = tickets.borrow_and_update().clone();
            if !ticket.expired() {
                return Ok(ticket);
            }
            self.renew_now.notify_one();
            tokio::select! {
                _ = stopped(&mut shutdown) => return Err(ClientError::Shutdown),
                _ = tickets.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The current ticket (possibly expired).
    pub fn ticket(&self) -> Arc<TicketState> {
        self.ticket.borrow().clone()
    }

    /// Asks for a ticket newer than generation `older`, and waits for it up to
    /// `connect_timeout`. Reports the monitor's refusal if it refuses.
    pub async fn renew_ticket_and_wait(&self, older: u64) -> Result<(), ClientError> {
        let mut tickets = self.ticket.subscribe();
        let mut shutdown = self.shutdown_receiver();
        let deadline = Instant::now() + self.cfg.connect_timeout;
        // A refusal recorded before this renewal was asked for is not its answer.
        *lock(&self.refusal) = None;
        self.renew_now.notify_one();
        loop {
            if tickets.borrow_and_update().generation > older {
                return Ok(());
            }
            // The monitor refused the renewal (entity deleted): that is the answer, now.
            if let Some(refused) = self.refusal() {
                return Err(refused);
            }
            tokio::select! {
                _ = stopped(&mut shutdown) => return Err(ClientError::Shutdown),
                _ = tickets.changed() => {}
                // The refusal is recorded without a ticket change: look again now and then.
                _ = tokio::time::sleep(REFUSAL_POLL) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(self.refusal().unwrap_or(ClientError::Timeout));
                }
            }
        }
    }

    /// An open monitor session (newer than generation `after`, if given), waiting up to
    /// `connect_timeout` for the background task to find one.
    pub async fn session(&self, after: Option<u64>) -> Result<MonSession, ClientError> {
        let mut sessions = self.session.subscribe();
        let mut shutdown = self.shutdown_receiver();
        let deadline = Instant::now() + self.cfg.connect_timeout;
        loop {
            self.check_running()?;
            let current = sessions.borrow_and_update().clone();
            if let Some(s) = current {
                if !s.client.is_closed() && after.is_none_or(|g| s.generation > g) {
                    return Ok(s);
                }
            }
            if let Some(refused) = self.refusal() {
                return Err(refused);
            }
            tokio::select! {
                _ = stopped(&mut shutdown) => return Err(ClientError::Shutdown),
                _ = sessions.changed() => {}
                // The refusal is recorded without a session change: look again now and then.
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = tokio::time::sleep_until(deadline) => return Err(ClientError::Timeout),
            }
        }
    }
}

/// Resolves once shutdown begins (or the flag's sender is gone). A separate function so the
/// `watch::Ref` it sees is dropped before any await point (it is not `Send`).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(drop);
}
