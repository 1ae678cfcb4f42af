//! The listener: accepts TCP connections within the OSD's budget (`quarry_wire::limits`:
//! connections in total and per client entity, request and reply bytes, idle timeouts, the
//! open-files limit), authenticates each with its monitor ticket, then serves its requests
//! through [`OsdService`]. A connection that sends garbage, a truncated or unsigned frame is
//! closed by the wire layer; other connections carry on. A connection beyond a limit is told
//! why (EAGAIN) and closed; refusals and failed accepts are logged at most once per 10 s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use quarry_types::ErrorCode;
use quarry_wire::limits::{Budget, ConnectionSlot};
use quarry_wire::{ConnContext, Handler, Reply, Request};

use crate::op;
use crate::osd::Osd;
use crate::session::{OsdAuthenticator, Session};
use crate::watch;

/// Pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves the requests of authenticated connections.
pub(crate) struct OsdService {
    osd: Arc<Osd>,
}

impl Handler<Session> for OsdService {
    async fn handle(&self, ctx: Arc<ConnContext<Session>>, request: Request) -> Reply {
        let session = &ctx.session;
        // Raft traffic is not counted against client ops: a PG's writes wait on it, so
        // gating it behind the same bound could deadlock two OSDs full of client writes.
        if let Request::Raft { group, body } = request {
            return op::handle_raft(&self.osd, session, group, &body).await;
        }
        let Ok(permit) = self.osd.ops.acquire().await else {
            return Reply::Failed { code: ErrorCode::EAGAIN, message: "osd shutting down".into() };
        };
        match request {
            Request::Op(op) => {
                let mut tracked = self.osd.tracker.start(&op, &session.entity, ctx.peer);
                let reply = op::handle_op(&self.osd, session, ctx.peer, op, permit).await;
                if let Reply::Op(answer) = &reply {
                    tracked.answered(answer);
                }
                reply
            }
            Request::List { pg, epoch, start_after, max } => {
                let peer = ctx.peer.ip();
                op::handle_list(&self.osd, session, peer, pg, epoch, start_after, max).await
            }
            request @ (Request::Watch { .. }
            | Request::WatchPing { .. }
            | Request::Unwatch { .. }
            | Request::Notify { .. }
            | Request::NotifyAck { .. }
            | Request::ListWatchers { .. }) => watch::handle(&self.osd, &ctx, request).await,
            Request::Tell { words } => crate::tell::handle(&self.osd, session, words).await,
            other => {
                tracing::debug!(entity = %session.entity, request = ?other, "not an osd request");
                let message = "not a request an OSD serves".to_string();
                Reply::Failed { code: ErrorCode::EOPNOTSUPP, message }
            }
        }
    }

    /// Reads reserve reply room for the bytes they ask for (a read to the end of the object
    /// for an image object's 4 MiB; corrected once the reply exists).
    fn reply_estimate(&self, request: &Request) -> u64 {
        const SMALL: u64 = 4 << 10;
        const READ_TO_END: u64 = 4 << 20;
        match request {
            Request::Op(op) => op
                .ops
                .iter()
                .map(|o| match o {
                    quarry_types::ObjectOp::Read { len: 0, .. } => READ_TO_END,
                    quarry_types::ObjectOp::Read { len, .. } => {
                        (*len).min(quarry_types::OBJECT_SIZE_MAX) + SMALL
                    }
                    _ => SMALL,
                })
                .fold(0u64, u64::saturating_add),
            _ => SMALL,
        }
    }

    /// A large write's payload to a PG whose log places it (write-once: one voter, this
    /// OSD) is written to its place while it arrives (`pg::preplace`), if the session may
    /// write there and the OSD takes writes (the op's own checks follow as for any op; this
    /// only keeps a refused client from making the OSD write its data anyway).
    fn bulk_sink(
        &self,
        ctx: &Arc<ConnContext<Session>>,
        head: &[u8],
        len: usize,
    ) -> Option<Arc<dyn quarry_wire::BulkSink>> {
        let min = usize::try_from(self.osd.router.write_once_min()).unwrap_or(usize::MAX);
        if min == 0 || len < min || len > crate::pg::placer::PLACE_MAX {
            return None;
        }
        let (pg, name) = quarry_wire::codec::osd_op_head(head)?;
        let map = self.osd.router.map();
        let pool = &map.pools.get(&pg.pool)?.name;
        let (namespace, _) = quarry_types::split_namespace(&name);
        let write = quarry_auth::OsdAccess::WRITE;
        if !ctx.session.caps.osd.allows(pool, namespace, write) || self.osd.space.refuses_writes() {
            return None;
        }
        let group = self.osd.router.group(pg)?;
        if !group.is_solo() {
            return None;
        }
        self.osd.router.preplaced().sink(len)
    }

    /// The request's placement, if its payload was placed while it arrived, is held until
    /// the request is done: what its entry did not take is given back then.
    async fn handle_bulk(
        &self,
        ctx: Arc<ConnContext<Session>>,
        request: Request,
        bulk: Option<quarry_wire::BulkDone>,
    ) -> Reply {
        let reply = self.handle(ctx, request).await;
        drop(bulk);
        reply
    }

    /// A mutation (or method call) with a request id takes its place in its object's queue
    /// here, in arrival order (`op::order`).
    fn arrived(&self, ctx: &Arc<ConnContext<Session>>, request: &Request) {
        if let Request::Op(op) = request {
            if let Some(reqid) = op.reqid {
                if quarry_types::ObjectOp::vector_may_write(&op.ops) {
                    let who = (ctx.session.entity.clone(), reqid);
                    let slot = self.osd.order.enqueue(op.pg, &op.name, who);
                    ctx.session.parked.park(reqid, slot);
                }
            }
        }
    }
}

/// Accepts connections until the OSD stops; aborting this task closes every connection.
pub(crate) async fn accept_loop(osd: Arc<Osd>, listener: TcpListener, budget: Arc<Budget>) {
    let service = Arc::new(OsdService { osd: osd.clone() });
    let auth = Arc::new(OsdAuthenticator { keys: osd.keys.clone() });
    let mut stop = osd.stop.subscribe();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = crate::osd::stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match budget.try_connection() {
                    Ok(slot) => {
                        let (auth, service) = (auth.clone(), service.clone());
                        connections.spawn(serve_connection(stream, peer, auth, service, slot));
                    }
                    Err(refusal) => {
                        connections.spawn(quarry_wire::refuse(stream, refusal.code, refusal.reason));
                    }
                },
                Err(e) => {
                    budget.log_accept_error(&e);
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    auth: Arc<OsdAuthenticator>,
    service: Arc<OsdService>,
    slot: ConnectionSlot,
) {
    let accepted = match quarry_wire::accept_limited(stream, auth.as_ref(), slot).await {
        Ok(accepted) => accepted,
        Err(e) => {
            // Refusals were logged by the authenticator; this is the rest (garbage, timeouts).
            tracing::info!(%peer, error = %e, "handshake failed: connection closed");
            return;
        }
    };
    let entity = accepted.session.entity.clone();
    match quarry_wire::serve(accepted, service).await {
        Ok(()) => tracing::debug!(%peer, %entity, "connection closed by peer"),
        Err(e) => tracing::info!(%peer, %entity, error = %e, "connection closed on a bad frame"),
    }
}
