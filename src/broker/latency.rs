//! E2E processing latency (`--e2e-processing-latency-percentile`): how long messages took from
//! publish to FIN, as quantiles over a sliding window, per channel.
//!
//! nsqd keeps two perks (targeted quantile) streams of window/2 each: inserts go to the current
//! one; once it is window/2 old the other becomes current and is reset, and queries merge both.
//! nsqd-uring keeps the same rotating pair, but of `hdrhistogram` histograms (2 significant
//! figures, so a value is within 1% of the sample it stands for; perks bounds the rank error
//! instead). Queries take `&self`: a rotation that is due is applied logically (the stream it
//! would reset is left out), so `/stats` needs no mutable access to the channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats::LatencyStats;

/// Significant figures kept by each histogram (1% value resolution).
const SIGNIFICANT_FIGURES: u8 = 2;

/// What to track, shared by every channel of the process.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyConfig {
    /// Quantiles in (0, 1], in the order `/stats` and statsd list them.
    pub percentiles: Vec<f64>,
    /// `--e2e-processing-latency-window-time`: samples older than this are forgotten.
    pub window: Duration,
}

/// One channel's rotating pair of histograms.
#[derive(Debug)]
pub struct LatencyWindow {
    config: Arc<LatencyConfig>,
    /// window/2 (at least 1 ns so rotation always advances).
    half: Duration,
    streams: [Histogram<u64>; 2],
    current: usize,
    last_move: Instant,
}

fn histogram() -> Histogram<u64> {
    // 2 significant figures is within hdrhistogram's 0..=5 range: this cannot fail.
    Histogram::new(SIGNIFICANT_FIGURES).expect("valid significant figures")
}

impl LatencyWindow {
    /// An empty window starting at `now`.
    pub fn new(config: Arc<LatencyConfig>, now: Instant) -> Self {
        let half = (config.window / 2).max(Duration::from_nanos(1));
        LatencyWindow {
            config,
            half,
            streams: [histogram(), histogram()],
            current: 0,
            last_move: now,
        }
    }

    /// How many window/2 moves are due at `now` (nsqd moves while `now` is after the last move
    /// plus window/2).
    fn moves_due(&self, now: Instant) -> u128 {
        let since = now.saturating_duration_since(self.last_move);
        if since <= self.half {
            return 0;
        }
        // Exactly on a boundary nsqd does not move ("after"), hence the ceiling minus one.
        since.as_nanos().div_ceil(self.half.as_nanos()) - 1
    }

    /// Records a message published at `timestamp_ns` (Unix ns) and finished at `now_ns`.
    /// A timestamp in the future (clock skew between publishers' hosts is impossible here,
    /// but a clock step is not) counts as 0.
    pub fn record(&mut self, timestamp_ns: i64, now_ns: i64, now: Instant) {
        let moves = self.moves_due(now);
        if moves > 0 {
            // nsqd moves one half at a time: each move makes the other stream current and
            // resets it; two or more leave both empty.
            if moves >= 2 {
                self.streams[0].reset();
                self.streams[1].reset();
            }
            if moves % 2 == 1 {
                self.current ^= 1;
            }
            self.streams[self.current].reset();
            // The last move advances by whole half-windows, keeping the phase.
            let step = self.half.as_nanos().saturating_mul(moves);
            let step = Duration::from_nanos(u64::try_from(step).unwrap_or(u64::MAX));
            self.last_move = self.last_move.checked_add(step).unwrap_or(now);
        }
        let latency = now_ns.saturating_sub(timestamp_ns).max(0) as u64;
        let stream = &mut self.streams[self.current];
        // `record` grows the auto-resizing histogram; a value beyond what it can ever hold
        // (centuries of ns) is clamped instead.
        if stream.record(latency).is_err() {
            stream.saturating_record(latency);
        }
    }

    /// Adds the samples still inside the window at `now` to `into`.
    pub fn merge_into(&self, into: &mut Histogram<u64>, now: Instant) {
        let live: &[usize] = match self.moves_due(now) {
            0 => &[0, 1],
            1 => std::slice::from_ref(&self.current),
            _ => &[],
        };
        for &i in live {
            // Both are auto-resizing u64 histograms: adding cannot fail.
            let _ = into.add(&self.streams[i]);
        }
    }

    /// The channel's quantiles at `now`.
    pub fn stats(&self, now: Instant) -> LatencyStats {
        let mut merged = histogram();
        self.merge_into(&mut merged, now);
        summarize(&merged, &self.config.percentiles)
    }

    /// The configuration this window tracks.
    pub fn config(&self) -> &Arc<LatencyConfig> {
        &self.config
    }
}

/// Quantiles of several windows merged (a topic's figure merges its channels').
pub fn merged_stats<'a>(
    windows: impl IntoIterator<Item = &'a LatencyWindow>,
    now: Instant,
) -> Option<LatencyStats> {
    let mut windows = windows.into_iter().peekable();
    let percentiles = windows.peek()?.config.percentiles.clone();
    let mut merged = histogram();
    for w in windows {
        w.merge_into(&mut merged, now);
    }
    Some(summarize(&merged, &percentiles))
}

/// Count and one value per quantile (0 for each when there is no sample, as nsqd).
fn summarize(h: &Histogram<u64>, percentiles: &[f64]) -> LatencyStats {
    LatencyStats {
        count: h.len(),
        percentiles: percentiles
            .iter()
            .map(|&q| {
                let value = if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(q)
                };
                (q, value as f64)
            })
            .collect(),
    }
}

/// nsqd's `NanoSecondToHuman`: `%0.1f` with `ns`, `us`, `ms` or `s` (the `/stats` text report).
pub fn nanos_to_human(v: f64) -> String {
    let (v, suffix) = if v > 1e9 {
        (v / 1e9, "s")
    } else if v > 1e6 {
        (v / 1e6, "ms")
    } else if v > 1e3 {
        (v / 1e3, "us")
    } else {
        (v, "ns")
    };
    format!("{v:.1}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window_secs: u64) -> Arc<LatencyConfig> {
        Arc::new(LatencyConfig {
            percentiles: vec![1.0, 0.99, 0.5],
            window: Duration::from_secs(window_secs),
        })
    }

    const MS: i64 = 1_000_000;

    #[test]
    fn quantiles_of_recorded_latencies() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::new(config(600), t0);
        for i in 1..=100 {
            w.record(0, i * MS, t0);
        }
        let s = w.stats(t0);
        assert_eq!(s.count, 100);
        let q: Vec<f64> = s.percentiles.iter().map(|p| p.0).collect();
        assert_eq!(q, [1.0, 0.99, 0.5], "flag order kept");
        let near = |got: f64, want: i64| (got - want as f64).abs() <= want as f64 * 0.01;
        assert!(near(s.percentiles[0].1, 100 * MS), "{:?}", s);
        assert!(near(s.percentiles[1].1, 99 * MS), "{:?}", s);
        assert!(near(s.percentiles[2].1, 50 * MS), "{:?}", s);
    }

    #[test]
    fn no_samples_reports_zero_values() {
        let w = LatencyWindow::new(config(600), Instant::now());
        let s = w.stats(Instant::now());
        assert_eq!(s.count, 0);
        assert_eq!(s.percentiles, [(1.0, 0.0), (0.99, 0.0), (0.5, 0.0)]);
    }

    #[test]
    fn window_forgets_old_samples_half_a_window_at_a_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = LatencyWindow::new(config(10), t0);
        w.record(0, 7 * MS, t0 + s(1));
        // 6 s later one move is due: the first half is still the live "previous" stream.
        assert_eq!(w.stats(t0 + s(6)).count, 1);
        w.record(0, 9 * MS, t0 + s(6));
        assert_eq!(w.stats(t0 + s(9)).count, 2);
        // At 11 s the stream holding the 1 s sample is due for reset.
        let later = w.stats(t0 + s(11));
        assert_eq!(later.count, 1);
        assert!((later.percentiles[0].1 - 9e6).abs() < 9e4, "{later:?}");
        // Long silence: everything is gone, and recording starts afresh.
        assert_eq!(w.stats(t0 + s(60)).count, 0);
        w.record(0, 3 * MS, t0 + s(60));
        assert_eq!(w.stats(t0 + s(60)).count, 1);
        assert_eq!(w.stats(t0 + s(61)).count, 1);
    }

    #[test]
    fn rotation_alternates_streams() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = LatencyWindow::new(config(2), t0);
        // One sample per half-window: at most two halves are ever live.
        for k in 0..6u64 {
            w.record(0, MS, t0 + s(k) + Duration::from_millis(500));
            assert!(w.stats(t0 + s(k) + Duration::from_millis(600)).count <= 2);
        }
        assert_eq!(
            w.stats(t0 + s(5) + Duration::from_millis(600)).count,
            2,
            "this half and the previous one"
        );
    }

    #[test]
    fn future_timestamps_count_as_zero() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::new(config(600), t0);
        w.record(10 * MS, 0, t0);
        assert_eq!(w.stats(t0).percentiles[0].1, 0.0);
    }

    #[test]
    fn topic_merges_its_channels() {
        let t0 = Instant::now();
        let mut a = LatencyWindow::new(config(600), t0);
        let mut b = LatencyWindow::new(config(600), t0);
        a.record(0, MS, t0);
        b.record(0, 100 * MS, t0);
        let s = merged_stats([&a, &b], t0).unwrap();
        assert_eq!(s.count, 2);
        assert!(s.percentiles[0].1 >= 99e6);
        assert_eq!(merged_stats([], t0), None);
    }

    #[test]
    fn human_units_follow_nsqd() {
        assert_eq!(nanos_to_human(1_200_000.0), "1.2ms");
        assert_eq!(nanos_to_human(900_000.0), "900.0us");
        assert_eq!(nanos_to_human(1000.0), "1000.0ns");
        assert_eq!(nanos_to_human(2.5e9), "2.5s");
        assert_eq!(nanos_to_human(0.0), "0.0ns");
    }
}
