//! Latency recording: an HDR histogram of nanoseconds per executor, merged at the end, and the
//! percentile summary the report prints.
//!
//! Values are recorded by the caller from the message's *intended* send time, so a stall in the
//! broker shows up in every message scheduled during it (no coordinated omission); this module
//! only has to keep the distribution exact to three significant digits.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency kept exactly: a minute. Longer ones are clamped (and still counted).
const MAX_TRACKABLE_NS: u64 = 60_000_000_000;
/// Three significant digits: 0.1% relative error at every magnitude.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The percentiles every report shows, as fractions.
pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// Latencies in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram covering 1 ns to a minute.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, SIGNIFICANT_DIGITS)
            .unwrap_or_else(|_| Histogram::new(SIGNIFICANT_DIGITS).expect("3 digits is valid"));
        Latencies { hist }
    }

    /// Records one latency; zero or negative (clock granularity) counts as 1 ns, beyond a
    /// minute as a minute.
    pub fn record_ns(&mut self, ns: i64) {
        let v = (ns.max(1) as u64).min(MAX_TRACKABLE_NS);
        self.hist.saturating_record(v);
    }

    /// Adds another executor's recordings.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail; a failure would only lose samples.
        let _ = self.hist.add(&other.hist);
    }

    /// Number of recordings.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0..=1) in nanoseconds, 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            return 0;
        }
        self.hist.value_at_quantile(q.clamp(0.0, 1.0))
    }

    /// The report's view: percentiles and max in microseconds.
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        let p: Vec<f64> = PERCENTILES
            .iter()
            .map(|&(_, q)| us(self.quantile_ns(q)))
            .collect();
        LatencySummary {
            count: self.count(),
            p50_us: p[0],
            p90_us: p[1],
            p99_us: p[2],
            p999_us: p[3],
            p9999_us: p[4],
            max_us: if self.hist.is_empty() {
                0.0
            } else {
                us(self.hist.max())
            },
            mean_us: if self.hist.is_empty() {
                0.0
            } else {
                self.hist.mean() / 1000.0
            },
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples behind the figures.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// 99.99th percentile.
    pub p9999_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_of_a_uniform_ramp() {
        let mut h = Latencies::new();
        for us in 1..=10_000i64 {
            h.record_ns(us * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert!(close(s.p50_us, 5000.0), "{s:?}");
        assert!(close(s.p90_us, 9000.0), "{s:?}");
        assert!(close(s.p99_us, 9900.0), "{s:?}");
        assert!(close(s.p999_us, 9990.0), "{s:?}");
        assert!(close(s.max_us, 10_000.0), "{s:?}");
        assert!(close(s.mean_us, 5000.5), "{s:?}");
    }

    #[test]
    fn one_stall_dominates_the_tail_not_the_median() {
        // 9,990 fast messages and 10 caught behind a 50 ms stall: p99.9 must see the stall.
        let mut h = Latencies::new();
        for _ in 0..9_990 {
            h.record_ns(100_000);
        }
        for _ in 0..10 {
            h.record_ns(50_000_000);
        }
        let s = h.summary();
        assert!(close(s.p50_us, 100.0) && close(s.p99_us, 100.0), "{s:?}");
        assert!(close(s.p9999_us, 50_000.0), "{s:?}");
        assert!(close(s.max_us, 50_000.0), "{s:?}");
    }

    #[test]
    fn merging_equals_recording_in_one() {
        let (mut a, mut b, mut all) = (Latencies::new(), Latencies::new(), Latencies::new());
        for i in 0..1000i64 {
            let v = (i * 7919) % 100_000 + 1;
            if i % 2 == 0 { &mut a } else { &mut b }.record_ns(v);
            all.record_ns(v);
        }
        a.merge(&b);
        assert_eq!(a.summary(), all.summary());
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = Latencies::new();
        h.record_ns(-5);
        h.record_ns(0);
        h.record_ns(i64::MAX);
        assert_eq!(h.count(), 3);
        assert!(h.quantile_ns(0.1) >= 1);
        assert!(close(h.summary().max_us, MAX_TRACKABLE_NS as f64 / 1000.0));
        assert_eq!(Latencies::new().summary(), LatencySummary::default());
    }
}
