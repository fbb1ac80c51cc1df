//! The open-loop send schedule of the latency mode: message `i` of a connection is *intended*
//! to leave at `start + i * interval`, whatever happened to the messages before it.
//!
//! A sender that falls behind (the broker stalled, the socket was full) sends the overdue
//! messages at once but keeps their intended times, and latency is measured from those. That is
//! what keeps coordinated omission out of the figures: a stall delays every message scheduled
//! during it, and each of them is counted.

use std::ops::Range;

/// One connection's schedule, in nanoseconds on the run's clock.
#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: u64,
    interval_ns: f64,
    next: u64,
}

impl Schedule {
    /// `rate` messages per second (must be > 0) starting at `start_ns`.
    pub fn new(start_ns: u64, rate: f64) -> Schedule {
        Schedule {
            start_ns,
            interval_ns: 1e9 / rate.max(1e-9),
            next: 0,
        }
    }

    /// The rate each of `connections` senders gets so that together they offer `total` per
    /// second, and the start offset of sender `k` so their sends interleave evenly.
    pub fn share(total: u64, connections: usize, k: usize) -> (f64, f64) {
        let n = connections.max(1) as f64;
        let per_conn = total as f64 / n;
        let offset_ns = if per_conn > 0.0 {
            (1e9 / per_conn) * (k as f64 / n)
        } else {
            0.0
        };
        (per_conn, offset_ns)
    }

    /// When message `i` is intended to leave.
    pub fn intended_ns(&self, i: u64) -> u64 {
        self.start_ns
            .saturating_add((i as f64 * self.interval_ns) as u64)
    }

    /// When the next unsent message is due.
    pub fn next_due_ns(&self) -> u64 {
        self.intended_ns(self.next)
    }

    /// Takes the messages due by `now_ns` and before `until_ns`, at most `max` of them.
    pub fn take_due(&mut self, now_ns: u64, until_ns: u64, max: u64) -> Range<u64> {
        let first = self.next;
        while self.next - first < max {
            let t = self.intended_ns(self.next);
            if t > now_ns || t >= until_ns {
                break;
            }
            self.next += 1;
        }
        first..self.next
    }

    /// Whether every message intended before `until_ns` has been taken.
    pub fn done(&self, until_ns: u64) -> bool {
        self.next_due_ns() >= until_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_follow_the_rate_not_the_sender() {
        let mut s = Schedule::new(1_000, 1000.0); // one per ms
        assert_eq!(s.intended_ns(0), 1_000);
        assert_eq!(s.intended_ns(3), 3_001_000);
        // Nothing is due before the start.
        assert_eq!(s.take_due(999, u64::MAX, 100), 0..0);
        // The sender wakes 10 ms late: 11 messages are overdue and go at once...
        assert_eq!(s.take_due(10_001_000, u64::MAX, 100), 0..11);
        // ...and keep their own intended times, so their latency includes the delay.
        assert_eq!(s.intended_ns(10), 10_001_000);
        assert_eq!(s.next_due_ns(), 11_001_000);
    }

    #[test]
    fn batches_are_capped_and_the_end_is_respected() {
        let mut s = Schedule::new(0, 1e6); // one per us
        assert_eq!(s.take_due(1_000_000, u64::MAX, 64), 0..64);
        assert_eq!(s.take_due(1_000_000, 100_000, 1000), 64..100);
        assert!(s.done(100_000));
        assert!(!s.done(200_000));
    }

    #[test]
    fn shares_split_the_rate_and_interleave() {
        let (rate, off0) = Schedule::share(1000, 4, 0);
        assert_eq!(rate, 250.0);
        assert_eq!(off0, 0.0);
        let (_, off2) = Schedule::share(1000, 4, 2);
        assert_eq!(off2, 2e6); // half of the 4 ms per-connection interval
        assert_eq!(Schedule::share(0, 4, 1), (0.0, 0.0));
    }
}
