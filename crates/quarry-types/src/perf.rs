//! Latency counters for `perf dump` ([`TimeAvg`]): Ceph's "time average" counters, a count
//! and a sum of durations, kept with two relaxed atomic adds per event so the data path can
//! afford them. Readers see a count and a sum that may be one event apart; `perf dump` needs
//! no more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A count of events and the sum of their durations (Ceph's `avgcount` and `sum`).
#[derive(Debug, Default)]
pub struct TimeAvg {
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl TimeAvg {
    /// A counter at zero (usable in statics).
    pub const fn new() -> TimeAvg {
        TimeAvg { count: AtomicU64::new(0), sum_ns: AtomicU64::new(0) }
    }

    /// Counts one event that took `took`.
    pub fn record(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one event that began at `since` and ends now.
    pub fn record_since(&self, since: Instant) {
        self.record(since.elapsed());
    }

    /// `(events, total nanoseconds)` so far.
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Ordering::Relaxed), self.sum_ns.load(Ordering::Relaxed))
    }

    /// Ceph's three numbers for a time average: `(avgcount, sum, avgtime)`, the times in
    /// seconds (`perf dump` prints them as `{"avgcount", "sum", "avgtime"}`).
    pub fn ceph(&self) -> (u64, f64, f64) {
        let (count, sum_ns) = self.get();
        ceph_time_avg(count, sum_ns)
    }
}

/// `(avgcount, sum, avgtime)` in seconds of `count` events that took `sum_ns` in all; the
/// average whole nanoseconds, as Ceph prints it (`0.000379748`).
pub fn ceph_time_avg(count: u64, sum_ns: u64) -> (u64, f64, f64) {
    let sum = sum_ns as f64 / 1e9;
    let avg = sum_ns.checked_div(count).map_or(0.0, |ns| ns as f64 / 1e9);
    (count, sum, avg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_what_was_recorded() {
        let counter = TimeAvg::new();
        assert_eq!(counter.ceph(), (0, 0.0, 0.0), "an empty counter must not divide by 0");
        counter.record(Duration::from_micros(100));
        counter.record(Duration::from_micros(300));
        assert_eq!(counter.get(), (2, 400_000));
        let (count, sum, avg) = counter.ceph();
        assert_eq!(count, 2);
        assert!((sum - 0.0004).abs() < 1e-12, "{sum}");
        assert!((avg - 0.0002).abs() < 1e-12, "{avg}");
        // Whole nanoseconds, as Ceph prints averages: 1 ns + 2 ns over two events is 1 ns.
        let odd = TimeAvg::new();
        odd.record(Duration::from_nanos(1));
        odd.record(Duration::from_nanos(2));
        assert_eq!(odd.ceph(), (2, 3e-9, 1e-9));
    }
}
