//! The revive worker: finds PG groups whose Raft core stopped on an error that is not damage
//! (openraft stops a group for good on a log or store error, e.g. a WAL write refused with
//! `ENOSPC`) and starts them again ([`crate::router::Router::revive`]), each with its own
//! back-off: a disk that stays full keeps refusing the group's next write, and the group is
//! retried less and less often (up to [`BACKOFF_MAX`]) instead of spinning.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use quarry_types::PgId;

use crate::osd::{stopped, Osd};

/// How often stopped groups are looked for.
const SCAN_EVERY: Duration = Duration::from_millis(500);
/// The first pause before a group that stopped again is restarted again.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest pause between two restarts of the same group.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A group that ran this long since its last restart starts again from [`BACKOFF_MIN`].
const FORGET_AFTER: Duration = Duration::from_secs(120);

/// Runs until the OSD stops.
pub(crate) async fn run(osd: Arc<Osd>) {
    let mut stop = osd.stop.subscribe();
    // Per PG: when it may be restarted next, and the pause after that.
    let mut backoff: HashMap<PgId, (Instant, Duration)> = HashMap::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(SCAN_EVERY) => {}
        }
        let now = Instant::now();
        backoff.retain(|_, (next, pause)| now < *next + FORGET_AFTER.max(*pause * 2));
        for pg in osd.router.stopped_pgs() {
            let (next, pause) = backoff.get(&pg).copied().unwrap_or((now, BACKOFF_MIN));
            if now < next {
                continue;
            }
            backoff.insert(pg, (now + pause, (pause * 2).min(BACKOFF_MAX)));
            if let Err(error) = osd.router.revive(pg).await {
                tracing::error!(%pg, %error, retry_in = ?pause, "restarting the pg failed");
            }
        }
    }
}
