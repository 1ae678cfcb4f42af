//! Serving clients and OSDs: the TCP listener, the handshake's [`Authenticator`] (an
//! entity's key from the auth database), and the [`Handler`] for every monitor request
//! (maps, subscriptions, tickets, OSD boot/beacon/service keys; commands are in
//! `commands`). Capabilities are re-read from the auth database on every request, so
//! `auth caps` and `auth del` take effect on open sessions at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use quarry_auth::{Caps, MonAccess};
use quarry_types::{EntityName, EntityType, ErrorCode, OsdId, PgId};
use quarry_wire::limits::{Budget, ConnectionSlot};
use quarry_wire::{
    ConnContext, Event, EventSink, Handler, Hello, Refused, Reply, Request, Service,
};

use crate::log_op::{Op, OpError, Outcome};
use crate::mon::{unix_now, Beacon, Mon};
use crate::raft::CentralConfig;

/// How often an idle subscription checks whether its connection is gone.
const SUBSCRIBER_POLL: Duration = Duration::from_secs(5);
/// How often a subscription with a map held back (its peer has not read the last one)
/// looks again.
const SUBSCRIBER_SLOW_POLL: Duration = Duration::from_millis(100);

/// What the monitor remembers about an authenticated connection.
pub struct Session {
    /// The authenticated entity.
    pub entity: EntityName,
    /// The global id announced in the handshake.
    pub global_id: u64,
    /// Map updates are pushed to this connection.
    subscribed: AtomicBool,
    /// Central config changes are pushed to this connection.
    config_subscribed: AtomicBool,
}

/// The handshake's view of the auth database, for one connection (its global id is
/// reserved before the handshake starts, because `accepted` cannot wait for Raft).
struct ConnAuth {
    mon: Arc<Mon>,
    global_id: u64,
}

fn refused(reason: String) -> Refused {
    Refused { code: ErrorCode::EPERM, reason }
}

impl quarry_wire::Authenticator for ConnAuth {
    type Session = Session;

    fn secret_for(&self, hello: &Hello) -> Result<(Vec<u8>, Session), Refused> {
        if hello.service != Service::Mon {
            return Err(refused("this is a monitor: it accepts only monitor sessions".into()));
        }
        let state = self.mon.core.read();
        let Some(auth) = state.auth.get(&hello.entity) else {
            // EACCES: the peer is told what a wrong key gets; the name is only logged.
            let reason = format!("unknown entity {}", hello.entity);
            return Err(Refused { code: ErrorCode::EACCES, reason });
        };
        let session = Session {
            entity: hello.entity.clone(),
            global_id: self.global_id,
            subscribed: AtomicBool::new(false),
            config_subscribed: AtomicBool::new(false),
        };
        Ok((auth.key.0.secret().to_vec(), session))
    }

    fn accepted(&self, session: &Session) -> u64 {
        session.global_id
    }

    fn rejected(&self, hello: &Hello, peer: SocketAddr, why: &str) {
        tracing::warn!(entity = %hello.entity, %peer, reason = why, "monitor refused authentication");
    }
}

/// Accepts connections until `shutdown` turns true, within the monitor's `budget`
/// (`quarry_wire::limits`: a connection beyond a limit is told why, EAGAIN, and closed;
/// refusals and failed accepts are logged at most once per 10 s); each connection runs in its
/// own task, and a bad one (garbage, truncated frames, failed handshake) only ends itself.
pub async fn accept_loop(
    mon: Arc<Mon>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    budget: Arc<Budget>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match budget.try_connection() {
                    Ok(slot) => {
                        connections.spawn(connection(mon.clone(), stream, slot));
                    }
                    Err(refusal) => {
                        connections.spawn(quarry_wire::refuse(stream, refusal.code, refusal.reason));
                    }
                },
                Err(e) => {
                    budget.log_accept_error(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    connections.abort_all();
}

async fn connection(mon: Arc<Mon>, stream: TcpStream, slot: ConnectionSlot) {
    let peer = stream.peer_addr().ok();
    let global_id = match mon.reserve_global_id().await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(?peer, error = %e.message, "no global id for a new connection");
            return;
        }
    };
    let auth = ConnAuth { mon: mon.clone(), global_id };
    let accepted = match quarry_wire::accept_limited(stream, &auth, slot).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::debug!(?peer, error = %e, "handshake failed");
            return;
        }
    };
    let entity = accepted.session.entity.clone();
    tracing::debug!(%entity, ?peer, global_id, "session opened");
    if let Err(e) = quarry_wire::serve(accepted, Arc::new(MonHandler(mon))).await {
        tracing::debug!(%entity, ?peer, error = %e, "session ended with an error");
    }
}

fn denied() -> Reply {
    Reply::Failed { code: ErrorCode::EACCES, message: "access denied".into() }
}

/// The reply for a refused command.
pub fn failed(e: OpError) -> Reply {
    Reply::Failed { code: e.code, message: e.message }
}

impl Mon {
    /// The session's current caps (None if the entity was deleted or its caps are broken).
    pub fn caps_of(&self, entity: &EntityName) -> Option<Caps> {
        let state = self.core.read();
        let auth = state.auth.get(entity)?;
        Caps::parse(&auth.caps).ok()
    }

    /// The caps if they allow `want`, else the EACCES reply.
    pub fn require(&self, session: &Session, want: MonAccess) -> Result<Caps, Reply> {
        match self.caps_of(&session.entity) {
            Some(caps) if caps.mon.allows(want) => Ok(caps),
            _ => {
                tracing::info!(entity = %session.entity, ?want, "monitor request denied");
                Err(denied())
            }
        }
    }

    /// `ceph tell mon.* …`: only `version` (Ceph's JSON, pretty); the caller's mon caps must
    /// hold `allow *`, as Ceph's monitor asks.
    pub fn tell(&self, session: &Session, words: &[String]) -> Reply {
        if !self.caps_of(&session.entity).is_some_and(|caps| caps.mon.allows_all()) {
            tracing::info!(entity = %session.entity, "tell refused: the mon caps lack 'allow *'");
            return Reply::Failed {
                code: ErrorCode::EACCES,
                message: "problem getting command descriptions from mon".into(),
            };
        }
        match words {
            [w] if w == "version" => Reply::Told {
                output: format!(
                    "{{\n    \"version\": \"16.2.15-quarry.{}\",\n    \"release\": \"pacific\",\n    \
                     \"release_type\": \"stable\"\n}}",
                    env!("CARGO_PKG_VERSION")
                ),
                status: String::new(),
            },
            _ => Reply::Failed {
                code: ErrorCode::EINVAL,
                message: format!(
                    "invalid command: {}; the monitor answers: version (its commands go \
                     through `ceph` without tell)",
                    words.join(" ")
                ),
            },
        }
    }

    fn require_osd(&self, session: &Session, id: OsdId) -> Result<(), Reply> {
        self.require(session, MonAccess::OsdDaemon)?;
        if session.entity != EntityName::osd(id) {
            tracing::warn!(entity = %session.entity, claimed = id, "OSD request for another id");
            return Err(denied());
        }
        Ok(())
    }

    fn get_map(&self, session: &Session) -> Reply {
        if let Err(reply) = self.require(session, MonAccess::Read) {
            return reply;
        }
        Reply::Map(Box::new(self.map_with_usage()))
    }

    fn subscribe(self: &Arc<Self>, ctx: &ConnContext<Session>) -> Reply {
        if let Err(reply) = self.require(&ctx.session, MonAccess::Read) {
            return reply;
        }
        let updates = self.core.subscribe();
        let reply = Reply::Map(Box::new(self.map_with_usage()));
        if !ctx.session.subscribed.swap(true, Ordering::AcqRel) {
            tokio::spawn(push_maps(self.clone(), updates, ctx.events.clone()));
        }
        reply
    }

    /// `Request::GetConfig`: the central config sections that apply to the caller (see
    /// [`config_for`]); every authenticated entity may read its own (the central config
    /// holds no secrets: `config_db` refuses the option `key`).
    fn get_config(self: &Arc<Self>, ctx: &ConnContext<Session>, subscribe: bool) -> Reply {
        let updates = self.core.subscribe_config();
        let sections = config_for(&updates.borrow(), &ctx.session.entity);
        if subscribe && !ctx.session.config_subscribed.swap(true, Ordering::AcqRel) {
            let entity = ctx.session.entity.clone();
            let sent = sections.clone();
            tokio::spawn(push_config(self.clone(), updates, ctx.events.clone(), entity, sent));
        }
        Reply::Command(quarry_wire::MonReply::Config(sections))
    }

    fn get_ticket(&self, ctx: &ConnContext<Session>) -> Reply {
        let state = self.core.read();
        let Some(auth) = state.auth.get(&ctx.session.entity) else {
            // Deleted since the session opened: final (the client fails its ops with EPERM).
            tracing::info!(entity = %ctx.session.entity, "no ticket for a deleted entity");
            return Reply::Failed {
                code: ErrorCode::EPERM,
                message: "credentials revoked: the entity no longer exists".into(),
            };
        };
        let Some(ring) = state.service_keys.as_ref() else {
            return Reply::Failed {
                code: ErrorCode::EAGAIN,
                message: "no service key yet: try again".into(),
            };
        };
        let ttl = self.cfg.ticket_ttl.as_secs().max(1);
        // Not before the entity's auth_floor: a revocation earlier in this second must not
        // make the ticket just issued with the new caps invalid.
        let issued = state.ticket_issue_time(&ctx.session.entity, unix_now());
        let (ticket, sealed) = ring.issue(
            ctx.session.entity.clone(),
            ctx.session.global_id,
            auth.caps.clone(),
            issued,
            ttl,
        );
        Reply::Ticket {
            ticket: sealed.to_bytes(),
            session_key: quarry_auth::seal(&ctx.session_key, &ticket.session_key),
            expires_unix: ticket.expires_unix,
        }
    }

    fn service_keys(&self, session: &Session, session_key: &[u8; 32]) -> Reply {
        if let Err(reply) = self.require(session, MonAccess::OsdDaemon) {
            return reply;
        }
        if session.entity.kind != EntityType::Osd {
            return denied();
        }
        let state = self.core.read();
        let Some(ring) = state.service_keys.as_ref() else {
            return Reply::Failed {
                code: ErrorCode::EAGAIN,
                message: "no service keys yet".into(),
            };
        };
        Reply::ServiceKeys(quarry_auth::seal_service_keys(session_key, &ring.keys()))
    }

    async fn osd_boot(
        &self,
        session: &Session,
        id: OsdId,
        addr: SocketAddr,
        host: String,
    ) -> Reply {
        if let Err(reply) = self.require_osd(session, id) {
            return reply;
        }
        match self.propose(Op::OsdBoot { id, addr, host }).await {
            Ok(Outcome::Booted { epoch, up_from }) => {
                let beacon = Beacon {
                    up_from,
                    seen: Instant::now(),
                    usage: Default::default(),
                    disk_used: 0,
                    disk_avail: 0,
                    data_used: 0,
                    pgs: None,
                };
                self.record_beacon(id, beacon);
                tracing::info!(osd = id, %addr, epoch, "osd booted");
                Reply::Booted { epoch, up_from }
            }
            Ok(other) => {
                failed(OpError::new(ErrorCode::EIO, format!("unexpected boot outcome {other:?}")))
            }
            Err(e) => failed(e),
        }
    }

    /// `Request::OsdDamaged`: recorded like a beacon, from the current incarnation only.
    fn osd_damaged(&self, session: &Session, id: OsdId, up_from: u64, pgs: Vec<PgId>) -> Reply {
        if let Err(reply) = self.require_osd(session, id) {
            return reply;
        }
        let map = self.core.map();
        if !map.osds.get(&id).is_some_and(|o| o.up && o.up_from == up_from) {
            let message = format!("osd.{id} incarnation {up_from} is not up: boot again");
            return Reply::Failed { code: ErrorCode::ENOENT, message };
        }
        self.record_damage(id, up_from, pgs);
        Reply::Ack
    }

    /// `Request::PgRemapped`: from the PG's acting primary, current incarnation only.
    async fn pg_remapped(
        &self,
        session: &Session,
        id: OsdId,
        up_from: u64,
        pg: PgId,
        from: Vec<OsdId>,
        to: Vec<OsdId>,
    ) -> Reply {
        self.pg_report(session, id, up_from, pg, Op::PgRemapped { pg, from, to }, "remap").await
    }

    /// `Request::PgMerged`: from the target PG's acting primary, current incarnation only.
    async fn pg_merged(
        &self,
        session: &Session,
        id: OsdId,
        up_from: u64,
        target: PgId,
        source: u32,
    ) -> Reply {
        let op = Op::PgMerged { target, source };
        self.pg_report(session, id, up_from, target, op, "merge").await
    }

    /// Proposes `op`, a report about `pg` that only its acting primary's current incarnation
    /// (osd `id` booted at `up_from`) may make; the outcome's text is logged.
    async fn pg_report(
        &self,
        session: &Session,
        id: OsdId,
        up_from: u64,
        pg: PgId,
        op: Op,
        what: &str,
    ) -> Reply {
        if let Err(reply) = self.require_osd(session, id) {
            return reply;
        }
        let map = self.core.map();
        if !map.osds.get(&id).is_some_and(|o| o.up && o.up_from == up_from) {
            let message = format!("osd.{id} incarnation {up_from} is not up: boot again");
            return Reply::Failed { code: ErrorCode::ENOENT, message };
        }
        if map.acting(pg).first() != Some(&id) {
            let message = format!("osd.{id} is not the primary of pg {pg}");
            return Reply::Failed { code: ErrorCode::ESTALE, message };
        }
        match self.propose(op).await {
            Ok(Outcome::Done(text)) => {
                if !text.is_empty() {
                    tracing::info!(osd = id, "{text}");
                }
                Reply::Ack
            }
            Ok(other) => {
                failed(OpError::new(ErrorCode::EIO, format!("unexpected {what} outcome {other:?}")))
            }
            Err(e) => failed(e),
        }
    }

    fn osd_beacon(&self, session: &Session, id: OsdId, up_from: u64, beacon: Beacon) -> Reply {
        if let Err(reply) = self.require_osd(session, id) {
            return reply;
        }
        let map = self.core.map();
        let current = map.osds.get(&id).is_some_and(|o| o.up && o.up_from == up_from);
        if !current {
            let message = format!(
                "osd.{id} incarnation {up_from} is not up in epoch {}: boot again",
                map.epoch
            );
            return Reply::Failed { code: ErrorCode::ENOENT, message };
        }
        let mut beacon = beacon;
        beacon.usage.retain(|pool, _| map.pools.contains_key(pool));
        self.record_beacon(id, beacon);
        Reply::Ack
    }
}

/// Pushes the newest map to one subscriber until its connection or the monitor goes away.
/// Maps are coalesced: while anything is still queued for the peer (it has not read what it
/// was sent), a new map is held back and only the newest is sent once the queue is empty. A
/// subscriber that never reads thus holds at most the map being written and one queued,
/// whatever the number of map changes (a non-reading peer's socket and reply queue are the
/// connection layer's to bound).
async fn push_maps(
    mon: Arc<Mon>,
    mut updates: watch::Receiver<Arc<quarry_wire::ClusterMap>>,
    sink: EventSink,
) {
    let mut shutdown = mon.shutdown.clone();
    updates.mark_unchanged();
    let mut full_changes = mon.full_changes.subscribe();
    full_changes.mark_unchanged();
    let mut pending = false;
    loop {
        if pending && sink.queued() == 0 {
            let map = Box::new(mon.map_with_usage());
            if sink.try_send(Event::Map(map)) {
                pending = false;
            } else if sink.is_closed() {
                return;
            }
        }
        let poll = if pending { SUBSCRIBER_SLOW_POLL } else { SUBSCRIBER_POLL };
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                pending = true;
            }
            // An OSD became (or stopped being) nearfull or full: the same epoch again, with
            // the figures that say so.
            changed = full_changes.changed() => {
                if changed.is_err() {
                    return;
                }
                pending = true;
            }
            _ = tokio::time::sleep(poll) => {
                if sink.is_closed() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// The sections of the central config that apply to `entity`: `global`, its type, itself.
pub fn config_for(config: &CentralConfig, entity: &EntityName) -> CentralConfig {
    let kind = quarry_conf::type_name(entity.kind);
    let full = entity.to_string();
    config
        .iter()
        .filter(|(section, _)| {
            section.as_str() == "global" || section.as_str() == kind || **section == full
        })
        .map(|(section, options)| (section.clone(), options.clone()))
        .collect()
}

/// Pushes `entity`'s central config to one subscriber on every change that concerns it
/// (`sent`: what it has), until its connection or the monitor goes away. Like maps, a
/// change is held back while the peer has not read what it was sent; only the newest goes.
async fn push_config(
    mon: Arc<Mon>,
    mut updates: watch::Receiver<Arc<CentralConfig>>,
    sink: EventSink,
    entity: EntityName,
    mut sent: CentralConfig,
) {
    let mut shutdown = mon.shutdown.clone();
    updates.mark_unchanged();
    let mut pending = false;
    loop {
        if pending && sink.queued() == 0 {
            let now = config_for(&updates.borrow(), &entity);
            if now == sent {
                pending = false;
            } else if sink.try_send(Event::Config(now.clone())) {
                sent = now;
                pending = false;
            } else if sink.is_closed() {
                return;
            }
        }
        let poll = if pending { SUBSCRIBER_SLOW_POLL } else { SUBSCRIBER_POLL };
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                pending = true;
            }
            _ = tokio::time::sleep(poll) => {
                if sink.is_closed() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// The request handler of every session (a handle on the shared monitor).
pub struct MonHandler(pub Arc<Mon>);

impl Handler<Session> for MonHandler {
    async fn handle(&self, ctx: Arc<ConnContext<Session>>, request: Request) -> Reply {
        let mon = &self.0;
        let session = &ctx.session;
        match request {
            Request::GetMap => mon.get_map(session),
            Request::Subscribe => mon.subscribe(&ctx),
            Request::GetTicket => mon.get_ticket(&ctx),
            Request::GetConfig { subscribe } => mon.get_config(&ctx, subscribe),
            Request::Command(cmd) => mon.command(session, cmd).await,
            Request::OsdBoot { id, addr, host } => mon.osd_boot(session, id, addr, host).await,
            Request::OsdBeacon { id, up_from, usage, disk_used, disk_avail, data_used, pgs } => {
                let seen = Instant::now();
                let beacon = Beacon { up_from, seen, usage, disk_used, disk_avail, data_used, pgs };
                mon.osd_beacon(session, id, up_from, beacon)
            }
            Request::GetServiceKeys => mon.service_keys(session, &ctx.session_key),
            Request::OsdDamaged { id, up_from, pgs } => mon.osd_damaged(session, id, up_from, pgs),
            Request::PgRemapped { id, up_from, pg, from, to } => {
                mon.pg_remapped(session, id, up_from, pg, from, to).await
            }
            Request::PgMerged { id, up_from, target, source } => {
                mon.pg_merged(session, id, up_from, target, source).await
            }
            Request::Tell { words } => mon.tell(session, &words),
            Request::Op(_)
            | Request::List { .. }
            | Request::Raft { .. }
            | Request::Watch { .. }
            | Request::WatchPing { .. }
            | Request::Unwatch { .. }
            | Request::Notify { .. }
            | Request::NotifyAck { .. }
            | Request::ListWatchers { .. } => Reply::Failed {
                code: ErrorCode::EOPNOTSUPP,
                message: "not a monitor request (send it to an OSD)".into(),
            },
        }
    }
}
