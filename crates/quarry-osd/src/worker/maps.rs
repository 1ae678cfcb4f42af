//! The map worker: applies maps the monitor pushes, newest first, one at a time, so a slow
//! group creation never stalls the monitor session (beacons keep flowing meanwhile).

use std::sync::Arc;
use std::time::Duration;

use crate::osd::Osd;

/// Pause before retrying a map that failed to apply (disk trouble, logged).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Runs until the OSD stops (the task is aborted).
pub(crate) async fn run(osd: Arc<Osd>) {
    let mut incoming = osd.incoming_map.subscribe();
    loop {
        if incoming.changed().await.is_err() {
            return;
        }
        let Some(map) = incoming.borrow_and_update().clone() else {
            continue;
        };
        let epoch = map.epoch;
        if let Err(e) = osd.router.apply_map(map).await {
            tracing::error!(epoch, error = %e, "applying the map failed; will retry");
            tokio::time::sleep(RETRY_PAUSE).await;
            incoming.mark_changed();
        }
    }
}
