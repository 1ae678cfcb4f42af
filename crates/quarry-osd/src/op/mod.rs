//! Serving requests: object op vectors, PG listings and Raft messages from peer OSDs.
//!
//! An op vector goes: epoch catch-up (wait briefly if the client saw a newer map) → session
//! still honoured → pool and primary check at the current epoch (`Retry` otherwise) → caps
//! (`EPERM`, nothing changes) → validation → the name must hash to the PG named (`EINVAL`)
//! → mutations through `raft.client_write` (the reply
//! is the `OpReply` of apply), pure reads from the store behind the PG's read barrier.

pub(crate) mod check;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};

use quarry_store::StoreError;
use quarry_types::{EntityType, ErrorCode, ObjectOp, PgId};
use quarry_wire::{ClusterMap, OsdOp, PoolInfo, Reply};

use crate::osd::Osd;
use crate::pg::state_machine::blocking;
use crate::pg::{network, ClientCommand, PgCommand, PgGroup};
use crate::session::{now_unix, Session};
use check::{access_of, caps_allow, placed, session_honoured, validate};

/// How long an op from a client with a newer map waits for ours to catch up.
const EPOCH_CATCH_UP: Duration = Duration::from_secs(2);
/// Most names one listing returns.
pub(crate) const LIST_MAX: u32 = 1024;
/// A write not applied within this long is answered ETIMEDOUT (it may still apply).
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// The map to serve `epoch` with: ours, after waiting briefly if the client's is newer.
async fn map_for(osd: &Osd, epoch: u64) -> Arc<ClusterMap> {
    let map = osd.router.map();
    if epoch <= map.epoch {
        return map;
    }
    osd.request_map_refresh();
    osd.router.wait_epoch(epoch, EPOCH_CATCH_UP).await
}

fn retry(map: &ClusterMap) -> Reply {
    Reply::Retry { epoch: map.epoch }
}

/// The pool of `pg` if this OSD is its primary at `map`'s epoch.
fn route<'m>(osd: &Osd, map: &'m ClusterMap, pg: PgId, epoch: u64) -> Result<&'m PoolInfo, Reply> {
    let Some(pool) = map.pools.get(&pg.pool) else {
        if epoch > map.epoch {
            return Err(retry(map));
        }
        let message = format!("pool {} does not exist", pg.pool);
        return Err(Reply::Failed { code: ErrorCode::ENOENT, message });
    };
    if pg.seed >= pool.pg_num {
        let message = format!("pg {pg} does not exist (pg_num {})", pool.pg_num);
        return Err(Reply::Failed { code: ErrorCode::EINVAL, message });
    }
    if map.acting(pg).first() != Some(&osd.router.me()) {
        tracing::debug!(%pg, epoch = map.epoch, "not the primary: retry");
        return Err(retry(map));
    }
    Ok(pool)
}

/// Everything before execution; returns the group to run on.
async fn admit(
    osd: &Osd,
    session: &Session,
    pg: PgId,
    epoch: u64,
    access: quarry_auth::OsdAccess,
) -> Result<(Arc<ClusterMap>, Arc<PgGroup>), Reply> {
    let map = map_for(osd, epoch).await;
    session_honoured(session, &map, now_unix())?;
    let pool = route(osd, &map, pg, epoch)?;
    caps_allow(session, &pool.name, access)?;
    let group = osd.router.group(pg).ok_or_else(|| retry(&map))?;
    Ok((map, group))
}

/// Serves `Request::Op`.
pub(crate) async fn handle_op(osd: &Osd, session: &Session, op: OsdOp) -> Reply {
    let (map, group) = match admit(osd, session, op.pg, op.epoch, access_of(&op.ops)).await {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    if let Err(reply) = validate(&op) {
        return reply;
    }
    let pg_num = map.pools.get(&op.pg.pool).map_or(0, |pool| pool.pg_num);
    if let Err(reply) = placed(&op, pg_num) {
        return reply;
    }
    if op.ops.iter().any(ObjectOp::is_mutation) {
        write(osd, &group, &map, op).await
    } else {
        read(osd, &group, &map, op).await
    }
}

fn mtime_now() -> (u64, u32) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (now.as_secs(), now.subsec_nanos())
}

/// Proposes a mutation through the PG's log; answers once it is applied.
async fn write(osd: &Osd, group: &PgGroup, map: &ClusterMap, op: OsdOp) -> Reply {
    if !group.wait_leader(osd.router.me()).await {
        return retry(map);
    }
    // Pool-snapshot mode: the pool's snap context, whatever the client sent; otherwise the
    // client's without snapshots the map says were removed (Ceph's filter_snapc).
    let snapc = match map.pools.get(&group.pg.pool) {
        Some(pool) => pool.write_snapc(&op.snapc),
        None => op.snapc,
    };
    let command =
        PgCommand::Client(ClientCommand { name: op.name, snapc, ops: op.ops, mtime: mtime_now() });
    let proposal = group.raft.client_write(command);
    match tokio::time::timeout(WRITE_TIMEOUT, proposal).await {
        Ok(Ok(response)) => Reply::Op(response.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => retry(map),
        Ok(Err(e)) => {
            tracing::error!(pg = %group.pg, error = %e, "write failed in raft");
            Reply::Failed { code: ErrorCode::EIO, message: format!("pg {}: {e}", group.pg) }
        }
        Err(_) => {
            tracing::warn!(pg = %group.pg, "write not applied in time");
            Reply::Failed { code: ErrorCode::ETIMEDOUT, message: "write timed out".into() }
        }
    }
}

fn store_failure(pg: PgId, e: &StoreError) -> Reply {
    match e {
        StoreError::Corrupt { .. } => {
            // Logged by the store where detected; the client gets EIO, never bad bytes.
            Reply::Failed { code: ErrorCode::EIO, message: format!("pg {pg}: {e}") }
        }
        other => {
            tracing::error!(%pg, error = %other, "store read failed");
            Reply::Failed { code: ErrorCode::EIO, message: format!("pg {pg}: store error") }
        }
    }
}

/// Serves a read-only vector from the store once the PG's read barrier holds.
async fn read(osd: &Osd, group: &PgGroup, map: &ClusterMap, op: OsdOp) -> Reply {
    if !group.read_barrier(osd.router.me()).await {
        return retry(map);
    }
    let store = osd.router.store().clone();
    let pg = op.pg;
    let result = blocking(move || store.read(pg, &op.name, op.snap, &op.ops)).await;
    match result {
        Ok(reply) => Reply::Op(reply),
        Err(e) => store_failure(pg, &e),
    }
}

/// Serves `Request::List`.
pub(crate) async fn handle_list(
    osd: &Osd,
    session: &Session,
    pg: PgId,
    epoch: u64,
    start_after: Option<String>,
    max: u32,
) -> Reply {
    let (map, group) = match admit(osd, session, pg, epoch, quarry_auth::OsdAccess::READ).await {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    if !group.read_barrier(osd.router.me()).await {
        return retry(&map);
    }
    let store = osd.router.store().clone();
    let max = max.clamp(1, LIST_MAX) as usize;
    let result = blocking(move || store.list(pg, start_after.as_deref(), max)).await;
    match result {
        Ok((names, more)) => Reply::List { names, more },
        Err(e) => store_failure(pg, &e),
    }
}

/// Serves `Request::Raft` from a peer OSD.
pub(crate) async fn handle_raft(osd: &Osd, session: &Session, group: u64, body: &[u8]) -> Reply {
    if session.entity.kind != EntityType::Osd {
        tracing::warn!(entity = %session.entity, "raft message from a non-osd refused");
        return check::not_permitted();
    }
    // Expiry and auth_floor, not the blocklist: it fences client instances, and anyone with
    // `profile rbd` may add entries.
    if let Err(reply) = check::ticket_honoured(session, &osd.router.map(), now_unix()) {
        return reply;
    }
    let Some(pg) = osd.router.group_by_id(group) else {
        let message = format!("raft group {group:#x} is not hosted here (yet)");
        return Reply::Failed { code: ErrorCode::EAGAIN, message };
    };
    match network::serve_rpc(&pg.raft, body).await {
        Ok(bytes) => Reply::Raft(bytes),
        Err(e) => {
            tracing::warn!(entity = %session.entity, error = %e, "malformed raft message");
            Reply::Failed { code: ErrorCode::EPROTO, message: "malformed raft message".into() }
        }
    }
}
