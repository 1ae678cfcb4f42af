//! PG split, the OSD side: what applying a [`PgCommand::Split`] entry does to the store and
//! the PG's state, the reply a client op gets when its object left the PG, and the primary's
//! job of proposing the split when the map's `pg_num` grows ([`tend`]).
//!
//! A split entry is applied like every entry, deterministically and at the same log index on
//! every replica: from the recorded `pg_num` `n` to the entry's `N`, the children are the
//! seeds `c` in `n..N` with `stable_mod(c, n)` = this PG (`quarry_placement::split_children`);
//! [`quarry_store::Store::split_pg`] moves each object `pg_of(name, N)` places in a child,
//! copies the dup table and purged snapshots, and writes the parent's new state and each
//! child's, all in one transaction. A child's state is a Raft state *restored from a snapshot
//! at log index 0*: `applied` = log id 0, membership = the parent's at the split (its newest
//! configuration if the parent was mid-change) with log id 0, `pg_num` = `N`. openraft,
//! starting a group whose applied state is past its (empty) log, purges the log up to it
//! (`StorageHelper::get_initial_state`), so the child's log starts purged at 0: every replica
//! that split holds the same data and the same committed membership and the child needs no
//! `initialize`; a replica that has no copy of the child (it got the parent by snapshot past
//! the split, or is a new member) can only be brought up by the child's leader by snapshot,
//! never by log entries replayed onto missing data.
//!
//! After the split an op on a moved object is answered [`misplaced`] at apply time on every
//! replica alike (nothing applied, nothing recorded in the dup table): the op path turns it
//! into the "retry" reply, the client refreshes its map and resends to the child, where the
//! copied dup table answers a resend of a write applied before the split.
//!
//! The router starts no group for a PG that a running group here will create by splitting
//! ([`awaiting_split`]); once the split is applied it is told ([`Router::split_applied`]) and
//! starts the children.

use std::time::Duration;

use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};

use quarry_types::{ErrorCode, OpReply, OsdId, PgId};

use super::{PgCommand, PgState};
use crate::router::Router;

/// Index of the failed op in the [`misplaced`] reply: no real op vector is that long.
const MISPLACED_INDEX: u32 = u32::MAX;

/// The reply apply gives an op whose object is no longer in the PG (it split).
pub(crate) fn misplaced() -> OpReply {
    OpReply::Failed { index: MISPLACED_INDEX, code: ErrorCode::ESTALE }
}

/// True if `reply` is [`misplaced`].
pub(crate) fn is_misplaced(reply: &OpReply) -> bool {
    matches!(reply, OpReply::Failed { index: MISPLACED_INDEX, code } if *code == ErrorCode::ESTALE)
}

/// True if an object `name` does not belong to `pg` once it records `pg_num` (0: not
/// recorded, everything belongs).
pub(crate) fn moved_out(pg: PgId, pg_num: u32, name: &str) -> bool {
    pg_num > 0 && pg.seed < pg_num && quarry_placement::pg_of(name, pg_num) != pg.seed
}

/// The log id a child's state starts at: index 0, the id `initialize` gives its entry.
pub(crate) fn child_origin() -> LogId<OsdId> {
    LogId::new(CommittedLeaderId::new(0, 0), 0)
}

/// The children's state when `parent` (in state `parent`, with its membership) splits to
/// `pg_num`.
pub(crate) fn child_state(parent: &PgState, pg_num: u32) -> PgState {
    let membership = parent.membership.membership();
    let voters = membership.get_joint_config().last().cloned().unwrap_or_default();
    // Voters only: a learner the parent was adding (a move under way) is not the child's.
    let nodes: std::collections::BTreeMap<OsdId, openraft::BasicNode> = membership
        .nodes()
        .filter(|(id, _)| voters.contains(id))
        .map(|(id, node)| (*id, node.clone()))
        .collect();
    let origin = child_origin();
    PgState {
        applied: Some(origin),
        membership: StoredMembership::new(Some(origin), Membership::new(vec![voters], nodes)),
        pg_num,
        sealed: None,
    }
}

/// True if a running group on this OSD will create `pg` when it applies a split: a group of
/// the same pool that records `n` with `pg.seed >= n` and `stable_mod(pg.seed, n)` = its seed.
pub(crate) fn awaiting_split(router: &Router, pg: PgId) -> bool {
    router.groups().iter().any(|g| {
        let n = g.pg_num();
        g.pg.pool == pg.pool
            && n > 0
            && pg.seed >= n
            && quarry_placement::split_parent(pg.seed, n) == g.pg.seed
    })
}

/// How long a split proposal waits to be applied.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The primary's job, every scan and after each applied split: for each group this OSD leads
/// whose recorded `pg_num` differs from a larger map `pg_num` (or is not recorded), proposes
/// `Split`; then starts the children of applied splits that are not running yet.
pub(crate) async fn tend(router: &Router) {
    let map = router.map();
    let me = router.me();
    for group in router.groups() {
        let Some(pool) = map.pools.get(&group.pg.pool) else { continue };
        let recorded = group.pg_num();
        // A PG that records a pg_num splits to `pg_num_pending`, not `pg_num`: a merge target
        // that applied its merge records one PG fewer than the map until the monitor counts
        // the report (`pg::merge`); splitting it back then would strand the merged objects in
        // a PG the map is dropping. One that records nothing records the map's `pg_num` (a
        // merge target must record the count its merge starts from).
        let pg_num = if recorded == 0 { pool.pg_num } else { pool.pg_num_pending };
        if recorded >= pg_num || group.leader_term(me).is_none() {
            continue;
        }
        if group.pg.seed >= pool.pg_num {
            continue;
        }
        let raft = group.raft.clone();
        let pg = group.pg;
        // Proposed in the background: a slow apply must not hold up the other PGs.
        // `client_write_ff` and its responder, as the op path: a core stopping meanwhile (the
        // OSD shutting down) drops the responder quietly.
        tokio::spawn(async move {
            let responder = match raft.client_write_ff(PgCommand::Split { pg_num }).await {
                Ok(responder) => responder,
                Err(e) => {
                    tracing::debug!(%pg, error = %e, "split not proposed");
                    return;
                }
            };
            match tokio::time::timeout(PROPOSE_TIMEOUT, responder).await {
                Ok(Ok(Ok(_))) => tracing::info!(%pg, from = recorded, pg_num, "pg split applied"),
                Ok(Ok(Err(e))) => tracing::debug!(%pg, error = %e, "split not applied"),
                Ok(Err(_)) => tracing::debug!(%pg, "split proposal dropped (raft stopped)"),
                Err(_) => tracing::debug!(%pg, "split proposal not applied in time"),
            }
        });
    }
    router.start_split_children().await;
}
