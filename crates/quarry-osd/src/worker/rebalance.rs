//! The rebalance worker: every second, starts a move (`pg::membership::move_pg`, bounded by
//! `osd_max_backfills` in the router) for each PG this OSD is the acting primary of whose up
//! set differs, and keeps each group's leadership on the map's primary
//! (`pg::membership::tend_leadership`); proposes PG splits and starts split children
//! (`pg::split::tend`), at once when a split was applied; every few scans, deletes the PG
//! copies this OSD kept until a member confirmed that it left their voters
//! (`Router::sweep_kept_copies`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::osd::{stopped, Osd};

/// How often PGs to move and leadership are looked at.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// Every how many scans kept copies are asked about again.
const SWEEP_EVERY_SCANS: u32 = 5;

/// Runs until the OSD stops.
pub(crate) async fn run(osd: Arc<Osd>) {
    let mut stop = osd.stop.subscribe();
    let mut leaderless = HashMap::new();
    // Moves run here, so that stopping the worker (the OSD's shutdown) ends them.
    let mut moves = tokio::task::JoinSet::new();
    let mut scans = 0u32;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(SCAN_EVERY) => {}
            _ = osd.router.split_applied() => {}
        }
        crate::pg::split::tend(&osd.router).await;
        crate::pg::merge::tend(&osd.router).await;
        while moves.try_join_next().is_some() {}
        for pg in osd.router.pgs_to_move() {
            let osd = osd.clone();
            moves.spawn(async move { osd.router.move_pg(pg).await });
        }
        crate::pg::membership::tend_leadership(&osd.router, &mut leaderless).await;
        scans = scans.wrapping_add(1);
        if scans.is_multiple_of(SWEEP_EVERY_SCANS) {
            osd.router.sweep_kept_copies().await;
        }
    }
}
