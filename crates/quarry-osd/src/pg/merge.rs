//! PG merge, the OSD side: what applying [`PgCommand::Seal`] and [`PgCommand::Merge`]
//! entries does (the apply itself is in `state_machine`, beside the split's), and the rules
//! the primaries driving them follow.
//!
//! The monitor marks a merge in the map (`PoolInfo::merging`: the pool's last PG `s` into
//! `t = split_parent(s, s)`) only once both PGs act on the same OSDs, all up, and it changes
//! neither PG's members until the merge is reported. Then:
//! 1. `s`'s primary proposes `Seal` in `s`'s log. Applied (same index on every replica), it
//!    records the seal's log id in `s`'s [`PgState`]; from then on every client command is
//!    answered [`super::split::misplaced`] (the op path turns it into "retry"), snapshot trims
//!    and splits change nothing: `s`'s data is final at the seal and identical on every
//!    replica.
//! 2. `t`'s primary asks every voter of `t` for its copy of `s`'s seal and proposes
//!    `Merge { source: s, sealed }` only when all answer the same `sealed` log id. Applied on
//!    each replica of `t`, it checks that replica's copy of `s` is sealed at exactly that id
//!    (anything else stops the PG as damaged data does, and the repair path rebuilds it from
//!    a healthy replica: it never merges other data), then
//!    [`quarry_store::Store::merge_pg`] moves `s`'s objects into `t` in one transaction with
//!    `t`'s new state (`pg_num` = `s`), which also deletes `s`'s state.
//!    `t` may record more than `s + 1`: only a merge into a PG lowers what it records, and
//!    the merges of the seeds in between went to other PGs, so it holds what it held then.
//! 3. Every replica of `t` snapshots it and purges its log through the merge
//!    (`purge_through_merge`): an OSD added to `t` later (a move, once the merge is counted)
//!    must get it by snapshot, never replay `Merge` without the source (it would stop the PG
//!    as damaged). Then `t`'s primary reports `PgMerged`; the monitor lowers `pg_num` and
//!    marks the next step.
//!    Meanwhile `t` refuses ops for `s`'s objects while it records more than `s`
//!    ([`super::split::moved_out`]), and clients at the smaller `pg_num` send them to `t`.
//!
//! The source's seal is made durable (a store checkpoint) when it is applied, before the
//! group answers it: a replica of `t` that restarts replays `Merge` from its WAL and must
//! find `s` sealed in its store, not rolled back to its last checkpoint. After the merge,
//! the source's group on each OSD is stopped and what is left of it (a state its group may
//! have written since, its log) deleted ([`tend`]); a source copy found at start is not
//! started once its merge is applied here ([`merged_here`]).

use std::time::Duration;

use openraft::LogId;

use quarry_types::{OsdId, PgId};
use quarry_wire::ClusterMap;

use super::network::{RaftRpc, RaftRpcReply};
use super::{group_id, PgCommand};
use crate::pg::state_machine::blocking;
use crate::router::Router;
use crate::OsdError;

/// How long a voter has to answer whether it has the source sealed.
const SEALED_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a seal or merge proposal waits to be applied.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// True if merge source `pg` was merged into its target on this OSD: the map marks it as the
/// source (or no longer has it) and either this OSD's group of its target records the smaller
/// `pg_num` or the store holds no state of `pg` (the merge moved it all; while the merge is
/// marked, every member of the source has its state).
pub(crate) async fn merged_here(
    router: &Router,
    pg: PgId,
    map: &ClusterMap,
) -> Result<bool, OsdError> {
    let Some(pool) = map.pools.get(&pg.pool) else { return Ok(false) };
    let marked = pool.merging().is_some_and(|(source, _)| source == pg.seed);
    if (!marked && pg.seed < pool.pg_num) || pg.seed == 0 {
        return Ok(false);
    }
    let target = PgId { pool: pg.pool, seed: quarry_placement::split_parent(pg.seed, pg.seed) };
    if let Some(group) = router.group(target) {
        let recorded = group.pg_num();
        if recorded != 0 && recorded <= pg.seed {
            return Ok(true);
        }
    }
    let store = router.store().clone();
    Ok(blocking(move || store.pg_state(pg)).await?.is_none())
}

/// The primaries' job, every scan and after each applied split or merge: for the merge the
/// map marks, the source's primary proposes `Seal` until its group has one; the target's
/// primary, once every voter of the target answers the same durable seal of the source,
/// proposes `Merge`, and once applied queues the `PgMerged` report. On every OSD, a source
/// group whose target here applied the merge is stopped and removed.
pub(crate) async fn tend(router: &Router) {
    let map = router.map();
    let me = router.me();
    for group in router.groups() {
        let pg = group.pg;
        let Some(pool) = map.pools.get(&pg.pool) else { continue };
        // A merged source (the map merges it or no longer has it, and its target here
        // records the smaller pg_num): nothing left to serve.
        let leaving = pool.merging().is_some_and(|(s, _)| s == pg.seed) || pg.seed >= pool.pg_num;
        if leaving && pg.seed > 0 {
            let seed = quarry_placement::split_parent(pg.seed, pg.seed);
            let target = PgId { pool: pg.pool, seed };
            let merged =
                router.group(target).is_some_and(|t| t.pg_num() != 0 && t.pg_num() <= pg.seed);
            if merged {
                match router.remove_merged(pg).await {
                    Ok(()) => tracing::info!(%pg, %target, "merged pg's group stopped and removed"),
                    Err(e) => tracing::warn!(%pg, error = %e, "merged pg not removed"),
                }
                continue;
            }
        }
        let Some((source, target)) = pool.merging() else {
            router.merge_purged(pg);
            continue;
        };
        // Every replica of a target that applied the merge purges its log through it: a
        // member added later (a move) must get the target by snapshot, never replay `Merge`
        // without the source (it would stop the PG as damaged). The leader reports only
        // once its own log is purged so (the monitor lets the target move only then).
        // (The mark of an earlier merge into this PG is dropped: each merge purges anew.)
        let applied = pg.seed == target && group.pg_num() == source;
        if !applied {
            router.merge_purged(pg);
        }
        let purged = applied && purge_through_merge(router, &group).await;
        if group.leader_term(me).is_none() {
            continue;
        }
        if pg.seed == source && group.sealed().is_none() {
            propose(&group.raft, pg, PgCommand::Seal);
        } else if pg.seed == target && group.pg_num() > source {
            // The target records `source + 1` or more: a PG records the count it last
            // split or merged at, and the merges of the seeds between went to other PGs
            // (had one come here, it would record that seed), so what it holds is what it
            // holds at `source + 1`.
            let source_pg = PgId { pool: pg.pool, seed: source };
            if let Some(sealed) = sealed_everywhere(router, &map, source_pg, target).await {
                propose(&group.raft, pg, PgCommand::Merge { source, sealed });
            }
        } else if pg.seed == target && group.pg_num() == source && purged {
            crash_point("merge");
            router.queue_merge_report(pg, source);
        }
    }
}

/// Makes merge target `group`'s log purged through the merge it applied: records the
/// applied index the first time (at or past the `Merge` entry), then triggers a snapshot
/// until one covers it and a purge through it. True once the purge is done.
async fn purge_through_merge(router: &Router, group: &super::PgGroup) -> bool {
    let (applied, snapshot, purged) = {
        let metrics = group.raft.metrics();
        let m = metrics.borrow();
        let index = |l: Option<LogId<OsdId>>| l.map_or(0, |l| l.index);
        (index(m.last_applied), index(m.snapshot), index(m.purged))
    };
    let mark = router.merge_purge_mark(group.pg, applied);
    if purged >= mark {
        return true;
    }
    let triggered = if snapshot < mark {
        group.raft.trigger().snapshot().await
    } else {
        group.raft.trigger().purge_log(mark).await
    };
    if let Err(e) = triggered {
        tracing::debug!(pg = %group.pg, error = %e, "purge after a merge not triggered");
    }
    false
}

/// Tests only: with `QUARRY_TEST_MERGE_CRASH=DIR` set, the OSD aborts at a merge step once
/// the test arms it by creating `DIR/STEP`: `seal` on the first replica of the source that
/// applied the seal (made durable: after the checkpoint), `merge` on the target's leader once its group applied the merge and
/// before the report is queued (so the monitor has not counted it). The file is removed
/// first: one OSD aborts, once, like a SIGKILL (no shutdown, no checkpoint).
pub(crate) fn crash_point(step: &str) {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| std::env::var_os("QUARRY_TEST_MERGE_CRASH").map(Into::into));
    if let Some(dir) = dir {
        if std::fs::remove_file(dir.join(step)).is_ok() {
            eprintln!("QUARRY_TEST_MERGE_CRASH: aborting after the {step} step");
            std::process::abort();
        }
    }
}

/// The seal of `source` if every voter of the target (its acting set in `map`, the same
/// OSDs as the source's) answers the same durable one.
async fn sealed_everywhere(
    router: &Router,
    map: &ClusterMap,
    source: PgId,
    target: u32,
) -> Option<LogId<OsdId>> {
    let target_pg = PgId { pool: source.pool, seed: target };
    let mut agreed: Option<LogId<OsdId>> = None;
    for &osd in map.acting(target_pg) {
        let theirs = if osd == router.me() {
            router.group(source)?.sealed()
        } else {
            let asked = router
                .peers()
                .call(osd, None, group_id(source), &RaftRpc::Sealed, SEALED_ASK_TIMEOUT)
                .await;
            match asked {
                Ok(RaftRpcReply::Sealed(theirs)) => theirs,
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(pg = %source, osd, error = %e, "cannot ask a voter for the seal");
                    None
                }
            }
        };
        let theirs = theirs?;
        if agreed.is_some_and(|a| a != theirs) {
            tracing::warn!(pg = %source, ?agreed, ?theirs, osd, "voters report different seals");
            return None;
        }
        agreed = Some(theirs);
    }
    agreed
}

/// Proposes `command` in the background (a slow apply must not hold up the other PGs).
fn propose(raft: &super::PgRaft, pg: PgId, command: PgCommand) {
    let raft = raft.clone();
    tokio::spawn(async move {
        let what = format!("{command:?}");
        let responder = match raft.client_write_ff(command).await {
            Ok(responder) => responder,
            Err(e) => {
                tracing::debug!(%pg, error = %e, what, "not proposed");
                return;
            }
        };
        match tokio::time::timeout(PROPOSE_TIMEOUT, responder).await {
            Ok(Ok(Ok(_))) => tracing::info!(%pg, what, "merge step applied"),
            Ok(Ok(Err(e))) => tracing::debug!(%pg, error = %e, what, "not applied"),
            Ok(Err(_)) => tracing::debug!(%pg, what, "proposal dropped (raft stopped)"),
            Err(_) => tracing::debug!(%pg, what, "proposal not applied in time"),
        }
    });
}

#[cfg(doc)]
use super::PgState;
