//! Moving a PG's replicas (rebalancing): the PG's acting primary turns the map's up set into
//! the PG's Raft voters, and keeps leadership where the map says the primary is.
//!
//! A move ([`move_pg`], driven by `worker::rebalance` on the acting primary, at most
//! `osd_max_backfills` at once on this OSD):
//! 1. every OSD of the up set that is not a voter is added as a Raft learner (its OSD started
//!    the group uninitialised when the map put it in the up set: `router`);
//! 2. the primary waits until each learner has caught up: its replicated log reaches the
//!    primary's last log index at the start of the wait (openraft sends the learner a
//!    snapshot, an export of the PG, when the log it needs was purged, then the log);
//! 3. `change_membership` to the up set (openraft's joint consensus: committed by majorities
//!    of the old and the new voters), which also removes the voters that leave;
//! 4. the primary queues a `PgRemapped` report (sent by the monitor session); the monitor then
//!    makes acting = up in a new epoch. OSDs that are in neither set of that map stop the
//!    group and delete the PG's data (`Router::apply_map`): never before the new voters have
//!    committed.
//!
//! A primary that leaves its PG (it is out, or the pool shrank) is removed by step 3: openraft
//! steps it down once the new membership is committed, and the new map pins the new primary,
//! which campaigns.
//!
//! Leadership ([`tend_leadership`], every second): only the map's primary campaigns by
//! itself (its election timer). A leader that is not the map's primary (it won while the
//! primary was down) stops sending heartbeats, so the voters' leader lease runs out and the
//! primary, whose election timer fires, takes over. In a PG that has had no leader for
//! [`LEADERLESS_CAMPAIGN`], the primary campaigns again (its first campaign may have met
//! peers that were not reachable yet: its timer alone would wait up to twice the election
//! timeout), unless a voter refused it by log since the PG last had a leader: then the
//! primary's log is behind that voter's (an entry the old leader appended but could not
//! replicate before the primary's campaign deposed it), only that voter can win, and the
//! primary's campaigns would take the term the other voter is about to take, so the two
//! would refuse each other forever (seen: a merge stalled 180 s, both OSDs campaigning every
//! 4 s, two seconds apart). The primary's timer then waits longer too (openraft's
//! `smaller_log_timeout`). A primary whose campaign met a voter that did not run the group
//! yet (a PG just created, or starting after a restart: `PeerError::NotHosted`) campaigns
//! again at the next pass, a second later at most, rather than after [`LEADERLESS_CAMPAIGN`]
//! or its election timer (an op waits for the PG meanwhile). A voter that is not the
//! primary campaigns after [`LEADERLESS_CAMPAIGN`] plus a random part of it, which lets the
//! voter with the longer log win. The wait restarts when this OSD's role changes.
//!
//! A PG is led only by a live leader that is a voter, or that the map still places in the PG
//! (its acting or up set). openraft names as leader the node its committed vote is for, and
//! keeps doing so after a membership change removed that leader (step 3 of a move whose
//! primary leaves): it stepped down to a learner and replicates nothing. If the new primary
//! missed the last entries (slow, or unreachable during the move), the other voters refuse
//! it by log; were they to count the old primary as their leader once the map no longer
//! places it, no one would campaign and the PG would serve nothing for good (seen in CI
//! after a pool split, tested by `voters_do_not_wait_for_a_leader_the_membership_removed`).
//! The map's placement keeps the rule from deposing a working leader: a voter whose
//! membership lags the leader's (it missed the entries of a move, and may need a snapshot)
//! or one holding the new membership before the move is reported (acting still names the
//! old primary) would otherwise campaign, and a campaign that loses still raises the term
//! and makes the leader step down (openraft 0.9 has no pre-vote).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use openraft::BasicNode;

use quarry_types::{OsdId, PgId};

use crate::router::Router;

/// How long a learner may take to catch up before the move is given up (and retried).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);
/// A voter (not the primary) of a PG without a leader this long, plus a random part of it
/// (two such voters do not campaign in step), campaigns by itself.
pub(crate) const LEADERLESS_CAMPAIGN: Duration = Duration::from_secs(4);

/// Why a move stopped before its end (it is retried by the worker).
#[derive(Debug, thiserror::Error)]
pub(crate) enum MoveError {
    /// The PG's group does not run here.
    #[error("pg {0} has no running group here")]
    NoGroup(PgId),
    /// This OSD does not lead the PG (yet).
    #[error("not the leader of pg {0}")]
    NotLeader(PgId),
    /// The map changed under the move.
    #[error("the map changed during the move of pg {0}")]
    MapChanged(PgId),
    /// A learner did not catch up in time.
    #[error("osd.{osd} did not catch up with pg {pg} in {secs} s")]
    CatchUp {
        /// The PG.
        pg: PgId,
        /// The learner.
        osd: OsdId,
        /// How long it was given.
        secs: u64,
    },
    /// openraft refused a membership change.
    #[error("pg {pg}: {detail}")]
    Raft {
        /// The PG.
        pg: PgId,
        /// openraft's error.
        detail: String,
    },
}

/// Moves `pg` to its up set (see the module docs); returns when the change is committed and
/// its report queued, or at once if there is nothing to do.
pub(crate) async fn move_pg(router: &Router, pg: PgId) -> Result<(), MoveError> {
    let me = router.me();
    let map = router.map();
    let acting = map.acting(pg).to_vec();
    let up = map.up_set(pg).to_vec();
    if acting.first() != Some(&me) || !map.is_remapped(pg) || up.is_empty() {
        return Ok(());
    }
    let group = router.group(pg).ok_or(MoveError::NoGroup(pg))?;
    if !group.wait_leader(me).await {
        return Err(MoveError::NotLeader(pg));
    }
    let raft = &group.raft;
    let raft_err = |e: &dyn std::fmt::Display| MoveError::Raft { pg, detail: e.to_string() };
    let target: BTreeSet<OsdId> = up.iter().copied().collect();
    let voters: BTreeSet<OsdId> = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().voter_ids().collect()
    };
    if voters != target {
        let learners: Vec<OsdId> = up.iter().copied().filter(|o| !voters.contains(o)).collect();
        tracing::info!(%pg, ?acting, ?up, ?learners, "pg moving: adding learners");
        for &osd in &learners {
            let addr = map.osds.get(&osd).and_then(|o| o.addr);
            let node = BasicNode::new(addr.map(|a| a.to_string()).unwrap_or_default());
            raft.add_learner(osd, node, false).await.map_err(|e| raft_err(&e))?;
        }
        wait_caught_up(router, &group.raft, pg, &learners, &up).await?;
        if router.map().up_set(pg) != up.as_slice() {
            return Err(MoveError::MapChanged(pg));
        }
        tracing::info!(%pg, ?up, "pg learners caught up: changing the voters");
        raft.change_membership(target.clone(), false).await.map_err(|e| raft_err(&e))?;
        tracing::info!(%pg, ?acting, ?up, "pg voters changed");
    }
    router.queue_remap_report(pg, acting, up);
    Ok(())
}

/// Waits until every learner's matched log index reaches this leader's last log index as of
/// now, or fails (timeout, lost leadership, changed map).
async fn wait_caught_up(
    router: &Router,
    raft: &crate::pg::PgRaft,
    pg: PgId,
    learners: &[OsdId],
    up: &[OsdId],
) -> Result<(), MoveError> {
    let me = router.me();
    let goal = raft.metrics().borrow().last_log_index;
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let behind: Option<OsdId> = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            if m.current_leader != Some(me) {
                return Err(MoveError::NotLeader(pg));
            }
            let Some(replication) = m.replication.as_ref() else {
                return Err(MoveError::NotLeader(pg));
            };
            learners.iter().copied().find(|osd| {
                let matched = replication.get(osd).cloned().flatten().map(|l| l.index);
                matched < goal
            })
        };
        let Some(osd) = behind else {
            return Ok(());
        };
        if router.map().up_set(pg) != up {
            return Err(MoveError::MapChanged(pg));
        }
        if Instant::now() >= deadline {
            let secs = CATCH_UP_TIMEOUT.as_secs();
            return Err(MoveError::CatchUp { pg, osd, secs });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When this OSD campaigns for a PG that still has no leader then, and in which role the
/// time was chosen ([`leaderless_wait`] depends on it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Campaign {
    at: Instant,
    as_primary: bool,
}

impl Campaign {
    fn after_wait(now: Instant, is_primary: bool) -> Campaign {
        Campaign { at: now + leaderless_wait(is_primary), as_primary: is_primary }
    }

    /// `current` kept while this OSD's role is the one it was chosen in, else a new wait
    /// from now in the new role (a PG first seen before the map that makes this OSD its
    /// primary reached the router would otherwise keep a voter's longer wait).
    fn for_role(current: Option<Campaign>, now: Instant, is_primary: bool) -> Campaign {
        match current {
            Some(c) if c.as_primary == is_primary => c,
            _ => Campaign::after_wait(now, is_primary),
        }
    }
}

/// Keeps each group's leadership where the map's primary is (module docs). `leaderless`
/// remembers, for each PG without a leader, when this OSD campaigns if it still has none.
pub(crate) async fn tend_leadership(router: &Router, leaderless: &mut HashMap<PgId, Campaign>) {
    let me = router.me();
    let map = router.map();
    let now = Instant::now();
    let alive = |osd: &OsdId| map.osds.get(osd).is_some_and(|o| o.up);
    let mut seen = BTreeSet::new();
    for group in router.groups() {
        let pg = group.pg;
        seen.insert(pg);
        if group.is_stopped() {
            continue;
        }
        let primary = map.acting(pg).first().copied();
        let (leader, is_voter, primary_votes, leader_votes) = {
            let metrics = group.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<OsdId> = membership.voter_ids().collect();
            let votes = |osd: &OsdId| voters.contains(osd);
            (
                m.current_leader,
                votes(&me),
                primary.is_some_and(|p| votes(&p)),
                m.current_leader.is_some_and(|l| votes(&l)),
            )
        };
        // Led only by a live leader that votes or that the map still places (module docs).
        let placed = |l: &OsdId| map.acting(pg).contains(l) || map.up_set(pg).contains(l);
        let led = leader.is_some_and(|l| alive(&l) && (leader_votes || placed(&l)));
        if led {
            group.votes.clear();
        }
        if leader == Some(me) {
            // A leader that is not the map's primary lets the primary take over.
            let yield_to_primary =
                primary != Some(me) && primary.as_ref().is_some_and(alive) && primary_votes;
            group.raft.runtime_config().heartbeat(!yield_to_primary);
            leaderless.remove(&pg);
            continue;
        }
        group.raft.runtime_config().heartbeat(true);
        let is_primary = primary == Some(me);
        if !campaigns_when_leaderless(led, is_voter, is_primary, group.votes.refused_by_log()) {
            leaderless.remove(&pg);
            continue;
        }
        let campaign = Campaign::for_role(leaderless.get(&pg).copied(), now, is_primary);
        leaderless.insert(pg, campaign);
        // A campaign met a voter not running the group yet (kept until then: this pass may
        // run before the map that makes this OSD the primary is the router's).
        if is_primary && group.votes.take_peer_not_ready() {
            tracing::info!(%pg, "a voter did not run the pg yet: campaigning again");
            let _ = group.raft.trigger().elect().await;
            leaderless.insert(pg, Campaign::after_wait(now, is_primary));
        } else if now >= campaign.at {
            tracing::info!(%pg, "no leader for a while: campaigning");
            let _ = group.raft.trigger().elect().await;
            leaderless.insert(pg, Campaign::after_wait(now, is_primary));
        }
    }
    leaderless.retain(|pg, _| seen.contains(pg));
}

/// True if this OSD campaigns by itself for a PG it does not lead once the PG has been
/// leaderless a while: only a voter, only while no live OSD leads, and the map's primary only
/// while no voter has refused it by log (module docs: its campaigns would then keep the voter
/// with the longer log from winning).
fn campaigns_when_leaderless(
    led: bool,
    is_voter: bool,
    is_primary: bool,
    refused_by_log: bool,
) -> bool {
    !led && is_voter && !(is_primary && refused_by_log)
}

/// How long a voter waits without a leader before it campaigns: [`LEADERLESS_CAMPAIGN`], and
/// for one that is not the primary up to as much again at random (two voters do not campaign
/// in step, and the primary goes first).
fn leaderless_wait(is_primary: bool) -> Duration {
    use rand::Rng as _;
    let base = LEADERLESS_CAMPAIGN.as_millis() as u64;
    let spread = if is_primary { 0 } else { rand::thread_rng().gen_range(0..=base) };
    Duration::from_millis(base + spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The primary campaigns on the leaderless path until a voter refuses it by log (a
    /// primary with a shorter log would otherwise take every term the voter that can win is
    /// about to take); any other voter of a PG without a live leader does, learners and led
    /// PGs never.
    #[test]
    fn who_campaigns_when_leaderless() {
        assert!(campaigns_when_leaderless(false, true, false, false));
        assert!(campaigns_when_leaderless(false, true, false, true));
        assert!(campaigns_when_leaderless(false, true, true, false));
        assert!(!campaigns_when_leaderless(false, true, true, true), "refused primary campaigned");
        assert!(!campaigns_when_leaderless(true, true, false, false));
        assert!(!campaigns_when_leaderless(true, true, true, false));
        assert!(!campaigns_when_leaderless(false, false, false, false));
    }

    /// A campaign time is kept while the role it was chosen in holds; a voter that becomes
    /// the primary waits the primary's time from then on, not its older, longer wait.
    #[test]
    fn a_campaign_time_follows_the_role() {
        let t0 = Instant::now();
        let voter = Campaign::for_role(None, t0, false);
        assert!(voter.at >= t0 + LEADERLESS_CAMPAIGN && !voter.as_primary);
        let later = t0 + Duration::from_secs(1);
        let kept = Campaign::for_role(Some(voter), later, false);
        assert_eq!(kept.at, voter.at, "a voter's wait restarted");
        let primary = Campaign::for_role(Some(voter), later, true);
        assert_eq!(primary.at, later + LEADERLESS_CAMPAIGN);
        assert!(primary.as_primary);
        let kept = Campaign::for_role(Some(primary), later + Duration::from_secs(2), true);
        assert_eq!(kept.at, primary.at, "the primary's wait restarted");
        let demoted = Campaign::for_role(Some(primary), later, false);
        assert!(demoted.at >= later + LEADERLESS_CAMPAIGN && !demoted.as_primary);
    }

    /// Two voters do not wait the same time: the wait is spread over [4 s, 8 s].
    #[test]
    fn leaderless_waits_are_spread() {
        assert_eq!(leaderless_wait(true), LEADERLESS_CAMPAIGN);
        let waits: BTreeSet<Duration> = (0..64).map(|_| leaderless_wait(false)).collect();
        assert!(waits.iter().all(|w| *w >= LEADERLESS_CAMPAIGN && *w <= 2 * LEADERLESS_CAMPAIGN));
        assert!(waits.len() > 32, "{waits:?}");
    }
}
