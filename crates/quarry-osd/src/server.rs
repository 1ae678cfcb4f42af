//! The listener: accepts TCP connections (bounded), authenticates each with its monitor
//! ticket, then serves its requests through [`OsdService`]. A connection that sends garbage,
//! a truncated or unsigned frame is closed by the wire layer; other connections carry on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use quarry_types::ErrorCode;
use quarry_wire::{ConnContext, Handler, Reply, Request};

use crate::op;
use crate::osd::Osd;
use crate::session::{OsdAuthenticator, Session};
use crate::watch;

/// Connections served at once; more are closed at accept.
pub(crate) const CONNECTIONS_MAX: usize = 4096;
/// How long a peer has to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
            Request::Op(op) => op::handle_op(&self.osd, session, ctx.peer, op, permit).await,
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
            other => {
                tracing::debug!(entity = %session.entity, request = ?other, "not an osd request");
                let message = "not a request an OSD serves".to_string();
                Reply::Failed { code: ErrorCode::EOPNOTSUPP, message }
            }
        }
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
pub(crate) async fn accept_loop(osd: Arc<Osd>, listener: TcpListener) {
    let service = Arc::new(OsdService { osd: osd.clone() });
    let auth = Arc::new(OsdAuthenticator { keys: osd.keys.clone() });
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut stop = osd.stop.subscribe();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = crate::osd::stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "too many connections: closing a new one");
                        continue;
                    };
                    let (auth, service) = (auth.clone(), service.clone());
                    connections.spawn(serve_connection(stream, peer, auth, service, permit));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
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
    _permit: OwnedSemaphorePermit,
) {
    let accepted = match quarry_wire::accept(stream, auth.as_ref(), HANDSHAKE_TIMEOUT).await {
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
