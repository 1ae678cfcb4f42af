//! Serving requests: object op vectors, PG listings and Raft messages from peer OSDs.
//!
//! An op vector goes: epoch catch-up (wait briefly if the client saw a newer map) → ticket
//! still honoured → pool and primary check at the current epoch (`Retry` otherwise) → the PG
//! must have at least the pool's `min_size` OSDs in its acting set (`ENXIO` otherwise: the
//! PG is inactive, as Ceph's below min_size; `ceph health detail` names the pool) → caps
//! (`EPERM`, nothing changes) → validation → the name must hash to the PG named (`EINVAL`)
//! → mutations proposed through `raft.client_write_ff` in their object's arrival order
//! ([`order`]; the reply is the `OpReply` of apply, or the recorded one of an earlier copy of
//! the same request from the PG's duplicate table), pure reads from the store behind the PG's
//! read barrier. Right before an op takes effect (its proposal, after its turn in the queue;
//! a store read; a watch or notify) the client is checked against the blocklist of the newest
//! map (ESHUTDOWN).
//! Method calls (`ObjectOp::Call`) are looked up first (`check::shape_of`: unknown is
//! EOPNOTSUPP, a writing method needs the `x` cap and takes the log path, a read-only one the
//! read path) and stamped with the authenticated caller (`check::stamp_origin`).
//!
//! A mutation's log entry carries its request id qualified by the authenticated entity
//! (`EntityReqId`), so one entity can neither collide with nor replay another's ids.

pub(crate) mod check;
pub(crate) mod order;
pub(crate) mod stream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::ClientWriteError;

use tokio::sync::SemaphorePermit;

use quarry_store::StoreError;
use quarry_types::{EntityReqId, EntityType, ErrorCode, ObjectOp, PgId};
use quarry_wire::{ClusterMap, OsdOp, PoolInfo, Reply};

use crate::osd::Osd;
use crate::pg::state_machine::blocking;
use crate::pg::{network, split, ClientCommand, PgCommand, PgGroup};
use crate::session::{now_unix, Session};
use check::{caps_allow, fenced, placed, shape_of, stamp_origin, ticket_honoured, validate};
use order::Slot;

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

pub(crate) fn retry(map: &ClusterMap) -> Reply {
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
    check::pg_exists(pg, pool.pg_num, epoch, map.epoch)?;
    let acting = map.acting(pg);
    if acting.first() != Some(&osd.router.me()) {
        tracing::debug!(%pg, epoch = map.epoch, "not the primary: retry");
        return Err(retry(map));
    }
    let backfilling = map.is_remapped(pg) && map.up_set(pg).len() >= pool.min_size as usize;
    if acting.len() < pool.min_size as usize && !backfilling {
        // Inactive: fewer copies than the pool promises and no move under way that would
        // give it more: refused at once (health says why). A PG being moved to enough OSDs
        // (a pool whose size grew) keeps serving with the voters it has, as before the
        // change, until its new replicas are promoted.
        let message = format!(
            "pg {pg} is inactive: {} OSDs in its acting set, below the pool's min_size {}",
            acting.len(),
            pool.min_size
        );
        tracing::debug!(%pg, "{message}");
        return Err(Reply::Failed { code: ErrorCode::ENXIO, message });
    }
    Ok(pool)
}

/// Everything before execution; returns the group to run on. Caps are checked for the
/// namespace of `object`'s key ("" for a listing: the default namespace). The blocklist is
/// not checked here but right before the op takes effect ([`check::fenced`]).
pub(crate) async fn admit(
    osd: &Osd,
    session: &Session,
    pg: PgId,
    epoch: u64,
    access: quarry_auth::OsdAccess,
    object: &str,
) -> Result<(Arc<ClusterMap>, Arc<PgGroup>), Reply> {
    let map = map_for(osd, epoch).await;
    ticket_honoured(session, &map, now_unix())?;
    let pool = route(osd, &map, pg, epoch)?;
    caps_allow(session, &pool.name, quarry_types::split_namespace(object).0, access)?;
    let group = osd.router.group(pg).ok_or_else(|| retry(&map))?;
    Ok((map, group))
}

/// What becomes of an op's queue slot given the reply it got before proposing: an answer the
/// client resends fences (dropping the slot), a final one releases it.
fn settle(slot: Option<Slot>, reply: Reply) -> Reply {
    if let Some(slot) = slot {
        match &reply {
            Reply::Retry { .. } => slot.retry(),
            Reply::Failed { code, .. }
                if *code == ErrorCode::EAGAIN || *code == ErrorCode::EDQUOT =>
            {
                slot.retry()
            }
            _ => slot.proposed(),
        }
    }
    reply
}

/// Serves `Request::Op` from `peer`. `permit` (the OSD's bound on requests being handled) is
/// held until the op waits for its turn in its object's queue: an op waiting behind others
/// holds none, so the ops it waits for can always get one.
pub(crate) async fn handle_op(
    osd: &Osd,
    session: &Session,
    peer: SocketAddr,
    mut op: OsdOp,
    permit: SemaphorePermit<'_>,
) -> Reply {
    // The slot taken when the op arrived (module `order`); an op with an id whose slot is not
    // parked (the same id twice on one connection) queues now.
    let slot = match op.reqid {
        Some(reqid) if ObjectOp::vector_may_write(&op.ops) => {
            Some(session.parked.take(reqid).unwrap_or_else(|| {
                osd.order.enqueue(op.pg, &op.name, (session.entity.clone(), reqid))
            }))
        }
        _ => None,
    };
    let shape = match shape_of(&op.ops, op.snap, &quarry_cls::Classes) {
        Ok(shape) => shape,
        Err(reply) => return settle(slot, reply),
    };
    // A vector of read-only method calls takes the read path: it holds no place in the queue.
    let slot = match slot {
        Some(slot) if !shape.writes => {
            slot.proposed();
            None
        }
        other => other,
    };
    let (map, group) = match admit(osd, session, op.pg, op.epoch, shape.access, &op.name).await {
        Ok(found) => found,
        Err(reply) => return settle(slot, reply),
    };
    stamp_origin(&mut op.ops, session, peer.ip());
    if let Err(reply) = validate(&op) {
        return settle(slot, reply);
    }
    let pg_num = map.pools.get(&op.pg.pool).map_or(0, |pool| pool.pg_num);
    if let Err(reply) = placed(&op, pg_num, map.epoch) {
        return settle(slot, reply);
    }
    // A write waits until the PG recorded its pg_num (the primary's first entry as leader,
    // `pg::split::tend`, woken here): a PG that records nothing stays empty, so recording
    // the map's pg_num later, whatever it grew to meanwhile, strands no object.
    let mut recorded = group.pg_num();
    if recorded == 0 && shape.writes {
        recorded = wait_recorded(osd, &group).await;
        if recorded == 0 {
            tracing::debug!(pg = %op.pg, "write to a pg whose pg_num is not recorded yet: retry");
            return settle(slot, retry(&map));
        }
    }
    // The PG split and the object went to a child (this OSD's map may be older than the
    // split its PG applied): the client resends (`pg::split`).
    if split::moved_out(op.pg, recorded, &op.name) {
        tracing::debug!(pg = %op.pg, object = op.name, recorded, "op for a split pg: retry");
        return settle(slot, retry(&map));
    }
    // Sealed for a merge (`pg::merge`): its objects go to the target; the client resends.
    if group.sealed().is_some() {
        tracing::debug!(pg = %op.pg, object = op.name, "op for a sealed pg: retry");
        return settle(slot, retry(&map));
    }
    if shape.writes {
        write(osd, &group, &map, (session, peer.ip()), op, slot, permit).await
    } else {
        read(osd, &group, &map, (session, peer.ip()), op).await
    }
}

fn mtime_now() -> (u64, u32) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (now.as_secs(), now.subsec_nanos())
}

/// Who sent an op: its session and the IP its connection comes from (for the blocklist).
pub(crate) type Client<'a> = (&'a Session, IpAddr);

/// Proposes a mutation through the PG's log once its turn in the object's queue comes;
/// answers once it is applied.
async fn write(
    osd: &Osd,
    group: &PgGroup,
    map: &ClusterMap,
    client: Client<'_>,
    op: OsdOp,
    slot: Option<Slot>,
    permit: SemaphorePermit<'_>,
) -> Reply {
    if !group.wait_leader(osd.router.me()).await {
        return settle(slot, retry(map));
    }
    drop(permit);
    if let Some(queued) = &slot {
        if queued.turn().await.is_err() {
            tracing::debug!(pg = %group.pg, object = op.name, "an earlier op must be resent first");
            return settle(slot, retry(map));
        }
    }
    // Last check before the op can take effect, with the newest map: nothing is awaited
    // between it and the proposal. A blocklisted client gets a final answer (no fence).
    let current = osd.router.map();
    if let Err(reply) = fenced(client.0, client.1, &current, now_unix()) {
        return settle(slot, reply);
    }
    // Pool-snapshot mode: the pool's snap context, whatever the client sent; otherwise the
    // client's without snapshots the map says were removed (Ceph's filter_snapc). From the
    // newest map too: a snapshot taken while the op waited for its turn is honoured.
    // A full disk refuses what needs space before it reaches the log (`crate::space`): a
    // final answer, nothing happened. `_admitted` counts the write as coming until answered.
    let _admitted = match osd.space.admit(&current, group.pg, &op.ops) {
        Ok(admitted) => admitted,
        Err(reply) => return settle(slot, reply),
    };
    // A pool the monitor marked full (a quota reached) takes no write that needs space
    // (removals, truncates and reads go on): EDQUOT, which the client answers by waiting for
    // a map where the pool is not full, as Ceph's Objecter pauses such writes.
    if let Some(pool) = current.pools.get(&group.pg.pool).filter(|p| p.is_full()) {
        if ObjectOp::vector_needs_space(&op.ops) {
            let message = format!("pool '{}' is full (quota reached)", pool.name);
            return settle(slot, Reply::Failed { code: ErrorCode::EDQUOT, message });
        }
    }
    let snapc = match current.pools.get(&group.pg.pool) {
        Some(pool) => pool.write_snapc(&op.snapc),
        None => op.snapc,
    };
    let reqid = op.reqid.map(|reqid| EntityReqId { entity: client.0.entity.clone(), reqid });
    let command = PgCommand::Client(ClientCommand {
        reqid,
        name: op.name,
        snapc,
        ops: op.ops,
        mtime: mtime_now(),
    });
    // The exact guard behind `check::validate`'s data bound: an entry the WAL would refuse
    // must never be proposed (openraft stops the PG on a log error).
    if let Some(reply) = entry_too_big(&command) {
        return settle(slot, reply);
    }
    let responder = match group.raft.client_write_ff(command).await {
        Ok(responder) => responder,
        Err(e) if osd.router.is_damaged(group.pg) => {
            // The group stopped on damaged data and is being rebuilt: the client resends.
            tracing::debug!(pg = %group.pg, error = %e, "write to a pg under repair");
            return settle(slot, retry(map));
        }
        // The PG is shutting down (moved, pool removed, OSD stopping): the client resends
        // to wherever the map says (its request id keeps a resend from applying twice).
        Err(openraft::error::Fatal::Stopped) => return settle(slot, retry(map)),
        Err(e) => {
            // The PG's Raft core stopped on an error: this attempt was not proposed, but an
            // earlier attempt of the same request (a resend) may be in the log and apply when
            // the PG comes back. Only "unknown" is true for the request.
            tracing::debug!(pg = %group.pg, error = %e, "write refused: the pg is stopped");
            return settle(slot, outcome_unknown(group.pg, &e.to_string()));
        }
    };
    // In the Raft core's queue: whatever arrived behind it may be proposed now.
    if let Some(slot) = slot {
        slot.proposed();
    }
    match tokio::time::timeout(WRITE_TIMEOUT, responder).await {
        // Applied after a split that moved the object: nothing happened, the client resends
        // to the object's new PG.
        Ok(Ok(Ok(response))) if split::is_misplaced(&response.data) => retry(&osd.router.map()),
        Ok(Ok(Ok(response))) => Reply::Op(response.data),
        Ok(Ok(Err(ClientWriteError::ForwardToLeader(_)))) => retry(map),
        Ok(Ok(Err(e))) => {
            // Only a membership change can fail this way: the entry was not appended.
            tracing::error!(pg = %group.pg, error = %e, "write failed in raft");
            Reply::Failed { code: ErrorCode::EIO, message: format!("pg {}: {e}", group.pg) }
        }
        Ok(Err(_)) => {
            // The Raft core stopped after the proposal. On an error (a log or store failure)
            // the entry may be in the log and apply after a restart: the outcome is unknown.
            // Otherwise the PG is being shut down or moved: the client resends (its request id
            // makes a resend of an applied write return the recorded reply).
            let fatal = group.raft.metrics().borrow().running_state.clone().err();
            match fatal {
                // Stopped on damaged data: the entry is committed and the rebuilt replica
                // will have it; the client resends and the duplicate table answers.
                Some(_) if osd.router.is_damaged(group.pg) => {
                    tracing::debug!(pg = %group.pg, "write to a pg that stopped for repair");
                    retry(map)
                }
                // Shut down (moved away, pool removed, OSD stopping): openraft reports a
                // core it was asked to stop as `Stopped`, which is no failure of the log or
                // the store, so the client resends as below. (Answering ETIMEDOUT here made a
                // guest see an I/O error when its PG's primary moved.)
                Some(openraft::error::Fatal::Stopped) => {
                    tracing::debug!(pg = %group.pg, "raft shut down before answering a write");
                    retry(map)
                }
                Some(fatal) => outcome_unknown(group.pg, &fatal.to_string()),
                None => {
                    tracing::debug!(pg = %group.pg, "raft stopped before answering a write");
                    retry(map)
                }
            }
        }
        Err(_) => {
            tracing::warn!(pg = %group.pg, "write not applied in time");
            Reply::Failed { code: ErrorCode::ETIMEDOUT, message: "write timed out".into() }
        }
    }
}

/// The answer to a write whose fate is unknown: ETIMEDOUT, as Ceph's clients report an op
/// they cannot tell the outcome of (`docs/dev/contracts.md`, "Errors that say what
/// happened"). Never EIO: a client told a write failed must be able to trust that it did
/// not happen.
fn outcome_unknown(pg: PgId, cause: &str) -> Reply {
    tracing::warn!(%pg, cause, "write answered ETIMEDOUT: its outcome is unknown (the pg stopped)");
    Reply::Failed {
        code: ErrorCode::ETIMEDOUT,
        message: format!("pg {pg} stopped ({cause}); the write may or may not have been applied"),
    }
}

pub(crate) fn store_failure(pg: PgId, e: &StoreError) -> Reply {
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

/// Reads of at most this many bytes in all may be answered on the runtime's thread.
const SMALL_READ_MAX: u64 = 32 << 10;

/// Whether a read-only vector is small enough to try on the runtime's thread: stats and
/// reads of a bounded length (a length of 0 reads to the object's end).
fn small_read(ops: &[ObjectOp]) -> bool {
    let mut bytes = 0u64;
    ops.iter().all(|op| match op {
        ObjectOp::Read { len, .. } if *len > 0 => {
            bytes += len;
            bytes <= SMALL_READ_MAX
        }
        ObjectOp::Stat => true,
        _ => false,
    })
}

/// Whether a small read that must go to the device may block this runtime worker for it:
/// alone (queue depth 1), as an inline apply does (`pg::apply`), the blocking thread's
/// wake-up and the worker's afterwards cost more than the device read (docs/benchmarks.md,
/// "Eighteenth round"). The op first gives its turn once: it may be running on its
/// connection's reader (`quarry_wire::conn::serve`), which must read the requests behind it
/// first, or a deeper queue would be served one read at a time and never overlap — and so
/// stay "alone".
async fn alone_after_a_turn(osd: &Osd) -> bool {
    if !osd.tracker.alone() {
        return false;
    }
    tokio::task::yield_now().await;
    osd.tracker.alone()
}

/// Serves a read-only vector from the store once the PG's read barrier holds.
async fn read(
    osd: &Osd,
    group: &PgGroup,
    map: &ClusterMap,
    client: Client<'_>,
    op: OsdOp,
) -> Reply {
    if !group.read_barrier(osd.router.me()).await {
        return retry(map);
    }
    if let Err(reply) = fenced(client.0, client.1, &osd.router.map(), now_unix()) {
        return reply;
    }
    let store = osd.router.store().clone();
    let pg = op.pg;
    // A small read whose data is in the page cache is answered here: the hand-off to a
    // blocking thread and back cost more than the read (docs/benchmarks.md, "Seventh round").
    let small = small_read(&op.ops);
    let cached =
        if small { store.try_read_cached(pg, &op.name, op.snap, &op.ops) } else { Ok(None) };
    // A large read alone in flight goes to the client while it is read (`stream`).
    let mut streamed = None;
    let result = match cached {
        Ok(Some(reply)) => Ok(reply),
        // Not an object the open transaction wrote: its read would commit first (the
        // writer's lock, a redb commit), which is no work for this thread.
        Ok(None)
            if small && !store.has_uncommitted(pg, &op.name) && alone_after_a_turn(osd).await =>
        {
            store.read(pg, &op.name, op.snap, &op.ops)
        }
        Ok(None) if !small && stream::streamable(&op.ops) && alone_after_a_turn(osd).await => {
            match quarry_wire::conn::PartStarter::current() {
                Some(starter) => {
                    let sink = Arc::new(stream::PartSink::new(starter));
                    let given = sink.clone();
                    let result = blocking(move || {
                        store.read_to(pg, &op.name, op.snap, &op.ops, Some(&*given))
                    })
                    .await;
                    streamed = sink.finish();
                    result
                }
                None => blocking(move || store.read(pg, &op.name, op.snap, &op.ops)).await,
            }
        }
        Ok(None) => blocking(move || store.read(pg, &op.name, op.snap, &op.ops)).await,
        Err(e) => Err(e),
    };
    match result {
        // Sealed meanwhile: the merge may have moved the object already (`pg::merge`).
        Ok(_) if group.sealed().is_some() => retry(map),
        // The data went ahead as the reply's part.
        Ok(quarry_types::OpReply::Ok(_)) if streamed.is_some() => {
            osd.tracker.streamed(streamed.unwrap_or(0));
            Reply::ReadDone
        }
        Ok(reply) => Reply::Op(reply),
        Err(e @ StoreError::Corrupt { .. }) if map.acting(pg).len() > 1 => {
            read_repair(osd, map, pg, &e).await
        }
        Err(e) => store_failure(pg, &e),
    }
}

/// How long a read that met damaged data in a replicated PG waits for this replica to be
/// rebuilt from another before answering EIO.
const READ_REPAIR_WAIT: Duration = Duration::from_secs(30);

/// A read met damaged data here while other replicas hold the PG: rebuild this replica from
/// one of them (`pg::repair`; the PG is unavailable meanwhile) and have the client read
/// again; EIO if that does not finish within [`READ_REPAIR_WAIT`] (e.g. no replica can
/// export the PG cleanly: the rebuild goes on in the background).
async fn read_repair(osd: &Osd, map: &ClusterMap, pg: PgId, e: &StoreError) -> Reply {
    tracing::error!(%pg, error = %e, "damaged data met by a read: rebuilding this replica from another");
    osd.router.report_damage(pg, format!("read: {e}")).await;
    let deadline = tokio::time::Instant::now() + READ_REPAIR_WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !osd.router.is_damaged(pg) {
            return retry(map);
        }
    }
    store_failure(pg, e)
}

/// Serves `Request::List`.
pub(crate) async fn handle_list(
    osd: &Osd,
    session: &Session,
    peer: IpAddr,
    pg: PgId,
    epoch: u64,
    start_after: Option<String>,
    max: u32,
) -> Reply {
    let (map, group) = match admit(osd, session, pg, epoch, quarry_auth::OsdAccess::READ, "").await
    {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    if !group.read_barrier(osd.router.me()).await {
        return retry(&map);
    }
    if let Err(reply) = fenced(session, peer, &osd.router.map(), now_unix()) {
        return reply;
    }
    let store = osd.router.store().clone();
    let max = max.clamp(1, LIST_MAX) as usize;
    let result = blocking(move || store.list(pg, start_after.as_deref(), max)).await;
    match result {
        // A sealed PG's objects go to its merge target (`pg::merge`): list at the new map.
        Ok(_) if group.sealed().is_some() => retry(&map),
        Ok((names, more)) => Reply::List { names, more },
        Err(e) => store_failure(pg, &e),
    }
}

/// How long a write waits for its PG to record its pg_num before the client is told to retry.
const RECORD_WAIT: Duration = Duration::from_secs(5);

/// Wakes the split worker and waits (bounded by [`RECORD_WAIT`]) until `group` recorded its
/// pg_num; 0 if it did not in time.
async fn wait_recorded(osd: &Osd, group: &PgGroup) -> u32 {
    let deadline = tokio::time::Instant::now() + RECORD_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        let recorded = group.pg_num();
        if recorded != 0 || tokio::time::Instant::now() >= deadline {
            return recorded;
        }
        osd.router.wake_split_worker();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
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
    let Some(pg) = osd.router.group_by_id(group).filter(|g| !g.is_stopped()) else {
        let message = format!("raft group {group:#x} is not hosted here (yet)");
        return Reply::Failed { code: ErrorCode::EAGAIN, message };
    };
    let sender: Option<quarry_types::OsdId> = session.entity.id.parse().ok();
    let map = osd.router.map();
    let member = sender.is_some_and(|id| map.acting(pg.pg).contains(&id));
    match network::serve_rpc(&pg, osd.router.exports(), member, body).await {
        Ok(bytes) => Reply::Raft(bytes),
        Err(e) => {
            tracing::warn!(entity = %session.entity, error = %e, "malformed raft message");
            Reply::Failed { code: ErrorCode::EPROTO, message: "malformed raft message".into() }
        }
    }
}

/// Room kept in a log entry for what wraps the command (log id, entry kind, codec version).
const ENTRY_WRAPPING_BYTES: u64 = 1 << 20;

// The documented entry bound is what one WAL record holds.
const _: () =
    assert!(quarry_raftlog::format::RECORD_PAYLOAD_MAX as u64 == quarry_types::LOG_ENTRY_BYTES_MAX);

/// EMSGSIZE if `command`, encoded, would not fit one WAL record with its wrapping.
fn entry_too_big(command: &PgCommand) -> Option<Reply> {
    let size = bincode::serialized_size(command).unwrap_or(u64::MAX);
    if size.saturating_add(ENTRY_WRAPPING_BYTES) <= quarry_types::LOG_ENTRY_BYTES_MAX {
        return None;
    }
    tracing::warn!(bytes = size, "op would not fit one log entry: refused");
    let message = format!(
        "op vector encodes to {size} bytes, more than one log entry holds ({} bytes)",
        quarry_types::LOG_ENTRY_BYTES_MAX - ENTRY_WRAPPING_BYTES
    );
    Some(Reply::Failed { code: ErrorCode::EMSGSIZE, message })
}
