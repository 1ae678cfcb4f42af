//! Full-disk thresholds, as Ceph names them: `mon_osd_nearfull_ratio` (0.85),
//! `mon_osd_full_ratio` (0.95) and `osd_failsafe_full_ratio` (0.97), the state an OSD is in
//! given its disk figures, which op vectors a full OSD still accepts, and the health texts
//! (`OSD_NEARFULL`, `OSD_FULL`) the monitor reports.
//!
//! The ratio is Ceph's `used / total` with `total = used + available` (what `df` shows as
//! `Use%`: blocks reserved for root count as neither), so 0.95 means 5 % of the space an OSD
//! may use is left.

use serde::{Deserialize, Serialize};

use crate::ObjectOp;

/// The three thresholds (fractions of the disk, each in `0.0..=1.0`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FullRatios {
    /// `mon_osd_nearfull_ratio`: above it the OSD is `nearfull` (HEALTH_WARN, writes go on).
    pub nearfull: f64,
    /// `mon_osd_full_ratio`: above it the OSD is `full` (HEALTH_ERR, writes refused).
    pub full: f64,
    /// `osd_failsafe_full_ratio`: the OSD's own last line, checked without the monitor.
    pub failsafe: f64,
}

impl Default for FullRatios {
    fn default() -> Self {
        FullRatios { nearfull: 0.85, full: 0.95, failsafe: 0.97 }
    }
}

impl FullRatios {
    /// `Err` with a reason unless `0 < nearfull <= full <= failsafe <= 1` (Ceph's
    /// `OSD_OUT_OF_ORDER_FULL` condition, refused here instead of warned about).
    pub fn validate(&self) -> Result<(), String> {
        let FullRatios { nearfull, full, failsafe } = *self;
        let in_range = |r: f64| r > 0.0 && r <= 1.0;
        if !(in_range(nearfull) && in_range(full) && in_range(failsafe)) {
            return Err(format!(
                "full ratios must be in (0, 1]: nearfull {nearfull}, full {full}, failsafe {failsafe}"
            ));
        }
        if !(nearfull <= full && full <= failsafe) {
            return Err(format!(
                "full ratios out of order (need nearfull <= full <= failsafe): nearfull \
                 {nearfull}, full {full}, failsafe {failsafe}"
            ));
        }
        Ok(())
    }

    /// The state of a disk with `used` bytes used and `avail` bytes available.
    pub fn state(&self, used: u64, avail: u64) -> FullState {
        let Some(ratio) = usage_ratio(used, avail) else { return FullState::None };
        if ratio >= self.failsafe {
            FullState::Failsafe
        } else if ratio >= self.full {
            FullState::Full
        } else if ratio >= self.nearfull {
            FullState::NearFull
        } else {
            FullState::None
        }
    }
}

/// `used / (used + avail)`, or `None` when nothing is known (both 0: an OSD that has not
/// reported yet is not full).
pub fn usage_ratio(used: u64, avail: u64) -> Option<f64> {
    let total = used.saturating_add(avail);
    (total > 0).then(|| used as f64 / total as f64)
}

/// How full an OSD's disk is, least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FullState {
    /// Below the nearfull ratio.
    None,
    /// At or above `mon_osd_nearfull_ratio`: a warning only.
    NearFull,
    /// At or above `mon_osd_full_ratio`: writes that need space are refused.
    Full,
    /// At or above `osd_failsafe_full_ratio`.
    Failsafe,
}

impl FullState {
    /// True if writes that need space must be refused.
    pub fn refuses_writes(self) -> bool {
        self >= FullState::Full
    }
}

impl ObjectOp {
    /// True if the vector may need more space: anything but reads, guards and the ops that
    /// only give space back (remove, truncate, zero, xattr and omap removal). A full OSD
    /// refuses such vectors with ENOSPC and still takes the others, as Ceph lets deletes
    /// through at full so an operator can make room.
    pub fn vector_needs_space(ops: &[ObjectOp]) -> bool {
        ops.iter().any(|op| {
            op.is_call()
                || (op.is_mutation()
                    && !matches!(
                        op,
                        ObjectOp::Remove
                            | ObjectOp::Truncate { .. }
                            | ObjectOp::Zero { .. }
                            | ObjectOp::RmXattr { .. }
                            | ObjectOp::OmapRmKeys { .. }
                            | ObjectOp::OmapClear
                            | ObjectOp::SnapTrimRetired { .. }
                    ))
        })
    }
}

/// The monitor's health checks for full disks: `(code, summary, details)` per failing check,
/// most severe first, with Ceph's texts: `OSD_FULL` "N full osd(s)" / "osd.N is full" (a
/// HEALTH_ERR) and `OSD_NEARFULL` "N nearfull osd(s)" / "osd.N is near full" (a HEALTH_WARN).
/// `osds` gives each OSD's state; a failsafe-full OSD counts as full.
pub fn full_health(osds: &[(u64, FullState)]) -> Vec<(&'static str, String, Vec<String>)> {
    let list = |pick: fn(FullState) -> bool, text: &str| -> Vec<String> {
        osds.iter().filter(|(_, s)| pick(*s)).map(|(id, _)| format!("osd.{id} is {text}")).collect()
    };
    let full = list(|s| s.refuses_writes(), "full");
    let near = list(|s| s == FullState::NearFull, "near full");
    let mut checks = Vec::new();
    if !full.is_empty() {
        checks.push(("OSD_FULL", format!("{} full osd(s)", full.len()), full));
    }
    if !near.is_empty() {
        checks.push(("OSD_NEARFULL", format!("{} nearfull osd(s)", near.len()), near));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    const MIB: u64 = 1 << 20;

    #[test]
    fn states_follow_cephs_ratios() {
        let r = FullRatios::default();
        // 100 MiB disk: used / (used + avail).
        let at = |used: u64| r.state(used * MIB, (100 - used) * MIB);
        assert_eq!(at(0), FullState::None);
        assert_eq!(at(84), FullState::None);
        assert_eq!(at(85), FullState::NearFull);
        assert_eq!(at(94), FullState::NearFull);
        assert_eq!(at(95), FullState::Full);
        assert_eq!(at(96), FullState::Full);
        assert_eq!(at(97), FullState::Failsafe);
        assert_eq!(at(100), FullState::Failsafe);
        // Nothing reported yet is not full.
        assert_eq!(r.state(0, 0), FullState::None);
        // Huge figures do not overflow.
        assert_eq!(r.state(u64::MAX / 2, u64::MAX / 2), FullState::None);
        assert_eq!(r.state(u64::MAX, 0), FullState::Failsafe);
        assert!(!FullState::NearFull.refuses_writes());
        assert!(FullState::Full.refuses_writes() && FullState::Failsafe.refuses_writes());
    }

    #[test]
    fn ratios_are_validated() {
        assert!(FullRatios::default().validate().is_ok());
        let bad = FullRatios { nearfull: 0.96, full: 0.95, failsafe: 0.97 };
        assert!(bad.validate().unwrap_err().contains("out of order"));
        let bad = FullRatios { nearfull: 0.0, full: 0.95, failsafe: 1.5 };
        assert!(bad.validate().unwrap_err().contains("(0, 1]"));
    }

    #[test]
    fn health_texts_are_cephs() {
        assert!(full_health(&[(0, FullState::None)]).is_empty());
        let checks = full_health(&[
            (0, FullState::Full),
            (1, FullState::NearFull),
            (2, FullState::Failsafe),
            (3, FullState::None),
        ]);
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].0, "OSD_FULL");
        assert_eq!(checks[0].1, "2 full osd(s)");
        assert_eq!(checks[0].2, vec!["osd.0 is full".to_string(), "osd.2 is full".to_string()]);
        assert_eq!(checks[1].0, "OSD_NEARFULL");
        assert_eq!(checks[1].1, "1 nearfull osd(s)");
        assert_eq!(checks[1].2, vec!["osd.1 is near full".to_string()]);
    }

    #[test]
    fn deletes_and_shrinks_need_no_space() {
        let write = ObjectOp::Write { off: 0, data: Payload::new(vec![1; 8]) };
        assert!(ObjectOp::vector_needs_space(&[write]));
        assert!(ObjectOp::vector_needs_space(&[ObjectOp::Create { exclusive: false }]));
        assert!(!ObjectOp::vector_needs_space(&[ObjectOp::Remove]));
        assert!(!ObjectOp::vector_needs_space(&[ObjectOp::Truncate { size: 0 }]));
        assert!(!ObjectOp::vector_needs_space(&[ObjectOp::Zero { off: 0, len: 4096 }]));
        assert!(!ObjectOp::vector_needs_space(&[ObjectOp::Stat, ObjectOp::Remove]));
        assert!(!ObjectOp::vector_needs_space(&[ObjectOp::Stat]));
    }
}
