//! The snapshot trimmer: the OSD's background job of trimming the data of removed snapshots
//! from the PGs it leads. The map carries each pool's removed snapshots; each PG's store
//! records which of them it has purged. For a PG this OSD leads that has a removed snapshot
//! not purged yet, the trimmer proposes `PgCommand::TrimSnap { snap, max_objects }` log
//! entries (each visits at most `TRIM_OBJECTS_MAX` objects, found through the store's
//! snapshot index, never a scan of the PG), pausing `TRIM_PAUSE` between entries, one PG at
//! a time, until the step that finds nothing left records the snapshot as purged. The purge
//! is part of the replicated state (applied from the log by every replica).
//!
//! Throttling is deliberately simple: one entry in flight for the whole OSD, a fixed pause
//! between entries. Client writes interleave freely between entries.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};

use quarry_types::{PgId, SnapId};

use crate::osd::Osd;
use crate::pg::state_machine::blocking;
use crate::pg::{PgCommand, PgGroup};

/// Most objects one `TrimSnap` entry visits.
pub(crate) const TRIM_OBJECTS_MAX: u32 = 64;
/// Pause between two `TrimSnap` entries (the throttle).
pub(crate) const TRIM_PAUSE: Duration = Duration::from_millis(20);
/// How often the trimmer looks for work when there is none.
const IDLE_INTERVAL: Duration = Duration::from_millis(500);
/// How long one entry may take to commit and apply.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs until the OSD stops (the task is aborted).
pub(crate) async fn run(osd: Arc<Osd>) {
    loop {
        match next_work(&osd).await {
            Some((group, snap)) => {
                step(&group, snap).await;
                tokio::time::sleep(TRIM_PAUSE).await;
            }
            None => tokio::time::sleep(IDLE_INTERVAL).await,
        }
    }
}

/// The first PG this OSD leads with a removed snapshot it has not purged, and that snapshot.
async fn next_work(osd: &Osd) -> Option<(Arc<PgGroup>, SnapId)> {
    let map = osd.router.map();
    let me = osd.router.me();
    for group in osd.router.groups() {
        let Some(pool) = map.pools.get(&group.pg.pool) else { continue };
        if pool.removed_snaps.is_empty() || group.leader_term(me).is_none() {
            continue;
        }
        let store = osd.router.store().clone();
        let pg: PgId = group.pg;
        let purged = match blocking(move || store.purged_snaps(pg)).await {
            Ok(purged) => purged,
            Err(e) => {
                tracing::error!(%pg, error = %e, "reading purged snapshots failed");
                continue;
            }
        };
        if let Some(&snap) = pool.removed_snaps.iter().find(|s| purged.binary_search(s).is_err()) {
            return Some((group, snap));
        }
    }
    None
}

/// Proposes one trim entry and waits for it to apply.
async fn step(group: &PgGroup, snap: SnapId) {
    let command = PgCommand::TrimSnap { snap, max_objects: TRIM_OBJECTS_MAX };
    match tokio::time::timeout(STEP_TIMEOUT, group.raft.client_write(command)).await {
        Ok(Ok(_)) => {}
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {}
        Ok(Err(e)) => tracing::debug!(pg = %group.pg, snap, error = %e, "trim entry refused"),
        Err(_) => tracing::debug!(pg = %group.pg, snap, "trim entry not applied in time"),
    }
}
