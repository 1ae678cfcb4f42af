//! Enforcing a daemon's [`ServerLimits`]: the [`Budget`] its accept loop and sessions draw
//! from, and the process's file-descriptor limit.
//!
//! - **Connections**: [`Budget::try_connection`] at accept (total, and what the open-files
//!   limit leaves: see below), then, once a peer proved who it is, one slot per client entity
//!   ([`ConnectionSlot::admit`]). A refused connection gets a `Refused` frame (EAGAIN) and is
//!   closed; refusals are logged at most once per [`REFUSAL_LOG_INTERVAL`] per daemon.
//! - **Request bytes**: a frame's body is read off the socket only once its size fits the
//!   budget of the peer's class (clients; peer daemons apart), and one client entity holds at
//!   most `1 / ServerLimits::ENTITY_SHARE` of it. Waiting here is back-pressure: the session
//!   stops reading its socket, nothing is buffered. The charge is held until the request's
//!   handler is done.
//! - **Reply bytes** (clients only): room for a request's reply (the handler's estimate,
//!   corrected once the reply exists) is reserved before the request runs and held until the
//!   reply is written to the socket; pushed events reserve theirs too. A connection whose peer
//!   does not read stops being served at its share, an entity at its share of the daemon's.
//! - A charge larger than a share is admitted when its holder has nothing else charged, so
//!   one request or reply of any allowed size always goes through alone.
//!
//! File descriptors: [`raise_nofile`] lifts the soft `RLIMIT_NOFILE` to the hard limit once
//! per process. Each budget reserves descriptors for its daemon's own files (WAL segments,
//! store, outgoing links: [`FD_RESERVE_OSD`], [`FD_RESERVE_MON`]); connections of every
//! budget of the process (`quarry up` runs a monitor and OSDs in one) are counted together
//! and a new one is refused while the count plus the reserves would reach the limit. So
//! clients can never take the descriptors the WAL needs, and the process never aborts for
//! lack of one. The reserves take at most half of the limit (a low hard limit must still
//! leave room for the daemons' own links, e.g. every OSD's session with the monitor).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use quarry_types::{EntityName, EntityType, ErrorCode, ServerLimits};

use crate::codec::FRAME_PAYLOAD_MAX;

/// Descriptors an OSD keeps for its own files and links (WAL segments, `store.redb`, the
/// data directory, its monitor and peer connections, the runtime's own).
pub const FD_RESERVE_OSD: usize = 256;
/// Descriptors a monitor keeps for its own files (Raft log segments, snapshots).
pub const FD_RESERVE_MON: usize = 128;
/// Descriptors of the process itself (stdio, the runtime, the log), counted once.
const FD_BASE: usize = 64;
/// At most one log line per daemon per this interval about refused connections.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Connections open in this process, over every budget that counts descriptors.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Descriptors reserved by the daemons of this process.
static RESERVED_FDS: AtomicUsize = AtomicUsize::new(0);
/// The soft open-files limit after [`raise_nofile`].
static NOFILE: OnceLock<u64> = OnceLock::new();

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (once per process) and returns the
/// soft limit in force. A failure leaves the limit as it was (and is logged).
pub fn raise_nofile() -> u64 {
    *NOFILE.get_or_init(|| {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-files limit");
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the
            // hard one needs no privilege.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                tracing::info!(from = lim.rlim_cur, to = lim.rlim_max, "open-files limit raised");
                lim.rlim_cur = lim.rlim_max;
            } else {
                let error = std::io::Error::last_os_error();
                tracing::warn!(%error, soft = lim.rlim_cur, "cannot raise the open-files limit");
            }
        }
        lim.rlim_cur
    })
}

/// Connections of this process that count against its descriptors (tests and reports).
pub fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(Ordering::Relaxed)
}

/// Why a connection was refused: what its peer is told (with EAGAIN) and the log says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The errno sent to the peer.
    pub code: ErrorCode,
    /// One line for the peer and the log.
    pub reason: String,
}

#[derive(Default)]
struct EntityUse {
    connections: usize,
    request_bytes: u64,
    reply_bytes: u64,
}

#[derive(Default)]
struct State {
    connections: usize,
    client_request_bytes: u64,
    daemon_request_bytes: u64,
    reply_bytes: u64,
    entities: HashMap<EntityName, EntityUse>,
    /// Refusals since the last logged one, and when that was.
    refusals: (u64, Option<Instant>),
}

impl State {
    fn entity(&mut self, name: &EntityName) -> &mut EntityUse {
        self.entities.entry(name.clone()).or_default()
    }

    fn forget_if_idle(&mut self, name: &EntityName) {
        if self
            .entities
            .get(name)
            .is_some_and(|e| e.connections == 0 && e.request_bytes == 0 && e.reply_bytes == 0)
        {
            self.entities.remove(name);
        }
    }
}

/// One daemon's budget (see the module docs). Shared by its accept loop and sessions.
pub struct Budget {
    limits: ServerLimits,
    /// Descriptors reserved in [`RESERVED_FDS`] (0: this budget does not count descriptors).
    fd_reserve: usize,
    state: Mutex<State>,
    freed: Notify,
    /// Names the daemon in log lines.
    who: String,
}

impl Budget {
    /// The budget of daemon `who` (`osd.3`, `mon.a`), reserving `fd_reserve` descriptors of
    /// the process for its own files ([`FD_RESERVE_OSD`], [`FD_RESERVE_MON`]); raises the
    /// open-files limit first.
    pub fn new(who: &str, limits: ServerLimits, fd_reserve: usize) -> Arc<Budget> {
        let nofile = raise_nofile();
        RESERVED_FDS.fetch_add(fd_reserve, Ordering::SeqCst);
        let reserved = reserved_fds(nofile);
        let room = (nofile as usize).saturating_sub(reserved + FD_BASE);
        if room < limits.max_connections {
            tracing::info!(
                daemon = who,
                nofile,
                reserved,
                max_connections = limits.max_connections,
                "the open-files limit allows fewer connections than ms_max_connections: {room}"
            );
        }
        Arc::new(Budget {
            limits,
            fd_reserve,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            who: who.to_string(),
        })
    }

    /// A budget that limits nothing and counts no descriptors (tools, benchmarks, tests of
    /// other things).
    pub fn unlimited() -> Arc<Budget> {
        Arc::new(Budget {
            limits: ServerLimits::unlimited(),
            fd_reserve: 0,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            who: "unlimited".into(),
        })
    }

    /// The limits enforced.
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a connection slot for a socket just accepted, or refuses it (the caller sends
    /// the refusal and closes the socket). The refusal is logged, rate-limited.
    pub fn try_connection(self: &Arc<Self>) -> Result<ConnectionSlot, Refusal> {
        let mut state = self.lock();
        let refusal = if state.connections >= self.limits.max_connections {
            Some(format!(
                "too many connections to {} (ms_max_connections {})",
                self.who, self.limits.max_connections
            ))
        } else if self.fd_reserve > 0 && !fd_room() {
            Some(format!(
                "too many connections to this process: the open-files limit ({}) is reserved for {}'s own files",
                NOFILE.get().copied().unwrap_or(0),
                self.who
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.log_refusal(&mut state, &reason);
            return Err(Refusal { code: ErrorCode::EAGAIN, reason });
        }
        state.connections += 1;
        if self.fd_reserve > 0 {
            OPEN_CONNECTIONS.fetch_add(1, Ordering::SeqCst);
        }
        Ok(ConnectionSlot { budget: self.clone(), client: None })
    }

    /// Logs `reason` unless a refusal was logged less than [`REFUSAL_LOG_INTERVAL`] ago
    /// (then counts it; the next line says how many were not logged).
    fn log_refusal(&self, state: &mut State, reason: &str) {
        let (suppressed, last) = &mut state.refusals;
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_INTERVAL) {
            *suppressed += 1;
            return;
        }
        tracing::warn!(daemon = %self.who, not_logged_before = *suppressed, "connection refused: {reason}");
        *suppressed = 0;
        *last = Some(now);
    }

    /// Logs a failed `accept` (no descriptor left, ...) at most once per interval.
    pub fn log_accept_error(&self, error: &std::io::Error) {
        let mut state = self.lock();
        self.log_refusal(&mut state, &format!("accept failed: {error}"));
    }

    /// The largest request frame a peer of this kind may send (a larger one gets EMSGSIZE
    /// unread).
    pub fn frame_max(&self, client: bool) -> u32 {
        let class = if client {
            self.limits.client_request_bytes
        } else {
            self.limits.daemon_request_bytes
        };
        class.min(u64::from(FRAME_PAYLOAD_MAX)) as u32
    }

    async fn wait_until(&self, mut take: impl FnMut(&mut State) -> bool) {
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if take(&mut self.lock()) {
                return;
            }
            notified.await;
        }
    }

    fn release(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.freed.notify_waiters();
    }

    /// Bytes held: client requests, daemon requests, queued replies (tests and reports).
    pub fn usage(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (s.client_request_bytes, s.daemon_request_bytes, s.reply_bytes)
    }
}

/// Descriptors kept for the daemons' own files: their reserves, at most half of `nofile`.
fn reserved_fds(nofile: u64) -> usize {
    RESERVED_FDS.load(Ordering::SeqCst).min((nofile / 2) as usize)
}

/// Whether one more connection leaves the process's reserved descriptors alone.
fn fd_room() -> bool {
    let Some(&nofile) = NOFILE.get() else { return true };
    let used = OPEN_CONNECTIONS.load(Ordering::SeqCst) + reserved_fds(nofile) + FD_BASE;
    (used as u64) < nofile
}

impl Drop for Budget {
    fn drop(&mut self) {
        RESERVED_FDS.fetch_sub(self.fd_reserve, Ordering::SeqCst);
    }
}

/// A connection's place in its daemon's budget, from accept to close.
pub struct ConnectionSlot {
    budget: Arc<Budget>,
    /// The client entity counted against its per-entity cap (None: not authenticated yet, or
    /// a daemon).
    client: Option<EntityName>,
}

impl ConnectionSlot {
    /// Counts the authenticated peer `entity` (clients against their per-entity cap), or
    /// refuses it.
    pub fn admit(&mut self, entity: &EntityName) -> Result<(), Refusal> {
        if entity.kind != EntityType::Client || self.client.is_some() {
            return Ok(());
        }
        let budget = &self.budget;
        let mut state = budget.lock();
        let cap = budget.limits.max_connections_per_entity;
        let used = state.entities.get(entity).map_or(0, |e| e.connections);
        if used >= cap {
            let reason = format!(
                "too many connections from {entity} to {} (ms_max_connections_per_entity {cap})",
                budget.who
            );
            budget.log_refusal(&mut state, &reason);
            return Err(Refusal { code: ErrorCode::EAGAIN, reason });
        }
        state.entity(entity).connections += 1;
        self.client = Some(entity.clone());
        Ok(())
    }

    /// The budget this slot is in.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// The client entity this connection counts against (None for daemons).
    pub fn client(&self) -> Option<&EntityName> {
        self.client.as_ref()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let client = self.client.take();
        let counted = self.budget.fd_reserve > 0;
        self.budget.release(|state| {
            state.connections -= 1;
            if let Some(name) = &client {
                state.entity(name).connections -= 1;
                state.forget_if_idle(name);
            }
        });
        if counted {
            OPEN_CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// What one authenticated connection holds in its daemon's budget.
pub(crate) struct ConnAccount {
    slot: ConnectionSlot,
    /// Reply bytes queued on this connection.
    reply_bytes: Arc<AtomicU64>,
}

impl ConnAccount {
    pub(crate) fn new(slot: ConnectionSlot) -> ConnAccount {
        ConnAccount { slot, reply_bytes: Arc::new(AtomicU64::new(0)) }
    }

    pub(crate) fn budget(&self) -> &Arc<Budget> {
        &self.slot.budget
    }

    pub(crate) fn is_client(&self) -> bool {
        self.slot.client.is_some()
    }

    /// Reply bytes queued on this connection now.
    pub(crate) fn queued_replies(&self) -> u64 {
        self.reply_bytes.load(Ordering::SeqCst)
    }

    /// Waits until `bytes` of request fit (see the module docs), then holds them.
    pub(crate) async fn charge_request(&self, bytes: u64) -> Charge {
        let bytes = bytes.max(ServerLimits::REQUEST_CHARGE_MIN);
        let budget = self.budget();
        let limits = budget.limits;
        let client = self.slot.client.clone();
        budget
            .wait_until(|s| match &client {
                Some(name) => {
                    let share = limits.client_request_bytes / ServerLimits::ENTITY_SHARE;
                    let mine = s.entities.get(name).map_or(0, |e| e.request_bytes);
                    let fits_total = s.client_request_bytes == 0
                        || s.client_request_bytes + bytes <= limits.client_request_bytes;
                    if fits_total && (mine == 0 || mine + bytes <= share) {
                        s.client_request_bytes += bytes;
                        s.entity(name).request_bytes += bytes;
                        true
                    } else {
                        false
                    }
                }
                None => {
                    let fits = s.daemon_request_bytes == 0
                        || s.daemon_request_bytes + bytes <= limits.daemon_request_bytes;
                    if fits {
                        s.daemon_request_bytes += bytes;
                    }
                    fits
                }
            })
            .await;
        Charge { budget: budget.clone(), client, kind: Kind::Request, bytes, conn: None }
    }

    /// Waits until `bytes` of reply fit this connection's, its entity's and the daemon's
    /// reply room, then holds them (nothing for daemons' connections).
    pub(crate) async fn charge_reply(&self, bytes: u64) -> Option<Charge> {
        let name = self.slot.client.clone()?;
        let budget = self.budget();
        let conn = self.reply_bytes.clone();
        budget.wait_until(|s| self.take_reply(s, &name, bytes)).await;
        Some(Charge {
            budget: budget.clone(),
            client: Some(name),
            kind: Kind::Reply,
            bytes,
            conn: Some(conn),
        })
    }

    /// Like [`ConnAccount::charge_reply`] without waiting: None if it does not fit now
    /// (Some(None) for daemons' connections, which are not charged).
    pub(crate) fn try_charge_reply(&self, bytes: u64) -> Option<Option<Charge>> {
        let Some(name) = self.slot.client.clone() else { return Some(None) };
        let budget = self.budget();
        if !self.take_reply(&mut budget.lock(), &name, bytes) {
            return None;
        }
        let conn = Some(self.reply_bytes.clone());
        Some(Some(Charge {
            budget: budget.clone(),
            client: Some(name),
            kind: Kind::Reply,
            bytes,
            conn,
        }))
    }

    fn take_reply(&self, s: &mut State, name: &EntityName, bytes: u64) -> bool {
        let limits = self.budget().limits;
        let share = limits.reply_queue_bytes / ServerLimits::ENTITY_SHARE;
        let mine = s.entities.get(name).map_or(0, |e| e.reply_bytes);
        let conn = self.reply_bytes.load(Ordering::SeqCst);
        let fits = (s.reply_bytes == 0 || s.reply_bytes + bytes <= limits.reply_queue_bytes)
            && (mine == 0 || mine + bytes <= share)
            && (conn == 0 || conn + bytes <= limits.reply_queue_bytes_per_connection);
        if fits {
            s.reply_bytes += bytes;
            s.entity(name).reply_bytes += bytes;
            self.reply_bytes.fetch_add(bytes, Ordering::SeqCst);
        }
        fits
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Reply,
}

/// Bytes held in a budget until dropped.
pub(crate) struct Charge {
    budget: Arc<Budget>,
    client: Option<EntityName>,
    kind: Kind,
    bytes: u64,
    conn: Option<Arc<AtomicU64>>,
}

impl Charge {
    /// Corrects the charge to `bytes` (the reply's real size, known once it exists): more is
    /// taken without waiting (the memory is already in use), less is given back.
    pub(crate) fn resize(&mut self, bytes: u64) {
        if bytes == self.bytes {
            return;
        }
        let old = self.bytes;
        self.bytes = bytes;
        let grow = |v: &mut u64| *v = v.saturating_sub(old).saturating_add(bytes);
        self.budget.release(|s| {
            match (self.kind, &self.client) {
                (Kind::Request, Some(_)) => grow(&mut s.client_request_bytes),
                (Kind::Request, None) => grow(&mut s.daemon_request_bytes),
                (Kind::Reply, _) => grow(&mut s.reply_bytes),
            }
            if let Some(name) = &self.client {
                let e = s.entity(name);
                match self.kind {
                    Kind::Request => grow(&mut e.request_bytes),
                    Kind::Reply => grow(&mut e.reply_bytes),
                }
            }
        });
        if let Some(conn) = &self.conn {
            if bytes > old {
                conn.fetch_add(bytes - old, Ordering::SeqCst);
            } else {
                conn.fetch_sub(old - bytes, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let bytes = self.bytes;
        let (kind, client) = (self.kind, self.client.take());
        if let Some(conn) = &self.conn {
            conn.fetch_sub(bytes, Ordering::SeqCst);
        }
        self.budget.release(|s| {
            let total = match (kind, &client) {
                (Kind::Request, Some(_)) => &mut s.client_request_bytes,
                (Kind::Request, None) => &mut s.daemon_request_bytes,
                (Kind::Reply, _) => &mut s.reply_bytes,
            };
            *total = total.saturating_sub(bytes);
            if let Some(name) = &client {
                let e = s.entity(name);
                let v = match kind {
                    Kind::Request => &mut e.request_bytes,
                    Kind::Reply => &mut e.reply_bytes,
                };
                *v = v.saturating_sub(bytes);
                s.forget_if_idle(name);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ServerLimits {
        ServerLimits {
            max_connections: 3,
            max_connections_per_entity: 2,
            client_request_bytes: 8 << 10,
            reply_queue_bytes: 8 << 10,
            reply_queue_bytes_per_connection: 4 << 10,
            ..ServerLimits::defaults(quarry_types::DaemonKind::Osd)
        }
    }

    #[test]
    fn connections_are_capped_in_total_and_per_entity() {
        let budget = Budget::new("osd.test", small(), 0);
        let ro = EntityName::client("ro");
        let mut a = budget.try_connection().unwrap();
        let mut b = budget.try_connection().unwrap();
        let mut c = budget.try_connection().unwrap();
        assert_eq!(budget.try_connection().err().unwrap().code, ErrorCode::EAGAIN);
        a.admit(&ro).unwrap();
        b.admit(&ro).unwrap();
        let refused = c.admit(&ro).unwrap_err();
        assert!(refused.reason.contains("client.ro"), "{}", refused.reason);
        c.admit(&EntityName::client("other")).unwrap();
        drop(a);
        let mut d = budget.try_connection().unwrap();
        d.admit(&ro).unwrap();
        drop((b, c, d));
        assert!(budget.lock().entities.is_empty(), "idle entities are forgotten");
    }

    #[tokio::test]
    async fn request_bytes_wait_for_room_and_one_entity_gets_a_share() {
        let budget = Budget::new("osd.test", small(), 0);
        let mut slot = budget.try_connection().unwrap();
        slot.admit(&EntityName::client("big")).unwrap();
        let big = ConnAccount::new(slot);
        let mut slot = budget.try_connection().unwrap();
        slot.admit(&EntityName::client("small")).unwrap();
        let other = ConnAccount::new(slot);
        // Alone, one entity may take a charge larger than its share (2 KiB)...
        let first = big.charge_request(6 << 10).await;
        // ...but not a second one while it holds the first.
        let second = tokio::time::timeout(Duration::from_millis(50), big.charge_request(1024));
        assert!(second.await.is_err(), "the entity's share is used up");
        // Another entity still gets its share.
        let theirs = other.charge_request(2 << 10).await;
        let waiting = tokio::spawn(async move { big.charge_request(1024).await.bytes });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.unwrap(), 1024);
        drop(theirs);
    }

    #[tokio::test]
    async fn replies_are_bounded_per_connection() {
        let budget = Budget::new("osd.test", small(), 0);
        let mut slot = budget.try_connection().unwrap();
        slot.admit(&EntityName::client("slow")).unwrap();
        let conn = ConnAccount::new(slot);
        let mut a = conn.charge_reply(1024).await.unwrap();
        a.resize(3 << 10);
        assert_eq!(conn.queued_replies(), 3 << 10);
        assert!(conn.try_charge_reply(2 << 10).is_none(), "over the connection's share");
        drop(a);
        assert_eq!(conn.queued_replies(), 0);
        assert!(conn.try_charge_reply(2 << 10).is_some());
    }
}
