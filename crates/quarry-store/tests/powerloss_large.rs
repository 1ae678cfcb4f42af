//! The power-loss harness of `powerloss.rs` with large payloads: seven in eight entries carry
//! 64 to 320 KiB (whole 4 KiB blocks), so the WAL writes their rounds with direct I/O (rounds of at least 64 KiB,
//! with the head of the block the previous round ended in rewritten from memory) and the
//! store's data file writes their blocks with direct writes. The small-payload harness never
//! reaches those paths. Same workload, checker and reproduction knobs
//! (`QUARRY_POWERLOSS_ONLY`, `QUARRY_POWERLOSS_KEEP`); `QUARRY_POWERLOSS_LARGE_POINTS`
//! overrides the count.
//!
//! Teeth, shown by hand at 240 points, each break invisible to the small-payload harness
//! (1000 points, 0 failed both times):
//! - the data file's direct write not marking the file unsynced (a checkpoint's `fdatasync`
//!   is skipped when only direct writes came since the last one): 91 points failed, "read
//!   error corrupt data … stored crc 0xe1bb5f22, data crc 0xce6aa466";
//! - a direct WAL round not marking the segment unsynced (as if `O_DIRECT` were durable): 96
//!   points failed, "group 1: acknowledged entry 18 lost (log ends at 17, store at 13)".
//!
//! The large payloads are whole 4 KiB blocks, as a VM's writes are: with a partial last
//! chunk every large write came with a small buffered one, whose sync covered the direct
//! write's too, and the first break above went unseen.

use crate::powerloss::{run_points, Payloads};

/// Crash points (each run writes ~10 MiB, so fewer than the small harness's 1000).
const POINTS: u64 = 240;

#[test]
fn power_loss_on_the_direct_io_paths_loses_no_acknowledged_write() {
    let points = std::env::var("QUARRY_POWERLOSS_LARGE_POINTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(POINTS);
    let failures = run_points(Payloads::Large, points, false);
    assert!(
        failures.is_empty(),
        "{} of {points} crash points failed; first: {:?}",
        failures.len(),
        failures.first()
    );
}
