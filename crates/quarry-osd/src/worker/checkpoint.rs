//! The checkpoint worker: every second, if anything was applied since the last
//! checkpoint, makes the store durable (one fsync for all PGs) and asks each PG with applied
//! entries past its last snapshot to record one, which lets openraft purge the WAL behind it.
//! (openraft also snapshots each PG every `SNAPSHOT_LOGS` entries on its own.)
//! A failed checkpoint is never retried: `pg::durability` logs it and aborts the process
//! (fail-stop, like the WAL), since the page cache's state after a failed fsync is unknown.

use std::sync::Arc;
use std::time::Duration;

use crate::osd::Osd;

/// How often applied state is made durable at the latest. Short, so each checkpoint writes
/// back little: under a 4 KiB write load the store dirties ~25 KB of pages per write, and a
/// 5 s interval made each checkpoint's write-back saturate the disk for a while (write IOPS
/// dips to a third, latency peaks of 0.3-1 s); at 1 s the load is even and peaks ~0.1 s.
/// It also lets redb reuse freed pages sooner (only a durable commit frees them).
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Runs until the OSD stops (the task is aborted).
pub(crate) async fn run(osd: Arc<Osd>) {
    let mut ticks = tokio::time::interval(CHECKPOINT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !osd.durability.dirty().await {
            continue;
        }
        // A failed checkpoint does not come back here: it aborts the process (fail-stop).
        if let Err(e) = osd.durability.checkpoint_now().await {
            tracing::error!(error = %e, "periodic checkpoint failed");
            return;
        }
        snapshot_behind_checkpoint(&osd).await;
    }
}

/// Lets every PG whose applied index moved past its snapshot record the checkpoint (no
/// fsync: the checkpoint above covers it).
async fn snapshot_behind_checkpoint(osd: &Osd) {
    for group in osd.router.groups() {
        let (applied, snapshot) = {
            let metrics = group.raft.metrics();
            let m = metrics.borrow();
            (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
        };
        if applied > snapshot {
            if let Err(e) = group.raft.trigger().snapshot().await {
                tracing::debug!(pg = %group.pg, error = %e, "snapshot trigger refused");
            }
        }
    }
}
