//! The power-loss harness of `powerloss.rs` on the write-once path of large writes
//! (`Payloads::Placed`): the data placed in the store's data file before its entry is
//! appended, made durable by the WAL's sync hook, the row inserted by the apply, the
//! placements of unapplied entries given back at open, and a conflicting suffix truncated
//! with its placement released. The cuts fall between the data write and the WAL round,
//! after the round and before the apply, and around the truncations. Same checker and
//! reproduction knobs (`QUARRY_POWERLOSS_ONLY`, `QUARRY_POWERLOSS_KEEP`);
//! `QUARRY_POWERLOSS_PLACED_POINTS` overrides the count.

use crate::powerloss::{run_points, Payloads};

/// Crash points (each run writes ~10 MiB, as the large harness).
const POINTS: u64 = 240;

#[test]
fn power_loss_on_the_write_once_path_loses_no_acknowledged_write() {
    let points = std::env::var("QUARRY_POWERLOSS_PLACED_POINTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(POINTS);
    let failures = run_points(Payloads::Placed, points, false);
    assert!(
        failures.is_empty(),
        "{} of {points} crash points failed; first: {:?}",
        failures.len(),
        failures.first()
    );
}
