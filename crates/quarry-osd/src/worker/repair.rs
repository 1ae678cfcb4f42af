//! The repair worker: rebuilds the PGs whose state machines reported damaged data
//! (`pg::repair`), one task per PG, each until it is done (aborted at shutdown; the damage
//! mark on disk makes the next start repair again).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use quarry_types::PgId;

use crate::osd::Osd;

/// Runs until the OSD stops (the task is aborted, and its repairs with it).
pub(crate) async fn run(osd: Arc<Osd>, mut requests: mpsc::UnboundedReceiver<PgId>) {
    let mut repairs = JoinSet::new();
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(pg) = request else { return };
                if osd.router.begin_repair(pg) {
                    let osd = osd.clone();
                    repairs.spawn(async move { osd.router.repair(pg).await });
                }
            }
            Some(_) = repairs.join_next(), if !repairs.is_empty() => {}
        }
    }
}
