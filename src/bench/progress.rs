//! The once-a-second progress line a long run prints on stderr: phase, the rate that counts for
//! the mode, and both sides' rates so a lagging consumer is visible while it happens.

use std::time::{Duration, Instant};

use super::run::{Shared, counts_sent};

/// The once-a-second progress line on stderr (long runs only).
pub struct Progress {
    enabled: bool,
    started: Instant,
    last: std::cell::Cell<(Instant, u64, u64)>,
}

impl Progress {
    /// Starts counting from the current totals.
    pub fn new(shared: &Shared) -> Progress {
        let a = &shared.args;
        let (s, r) = shared.totals();
        Progress {
            enabled: !a.quiet && a.warmup + a.duration >= Duration::from_secs(3),
            started: Instant::now(),
            last: std::cell::Cell::new((Instant::now(), s, r)),
        }
    }

    /// Prints a line if a second has passed since the last one.
    pub fn tick(&self, shared: &Shared) {
        let (at, s0, r0) = self.last.get();
        if !self.enabled || at.elapsed() < Duration::from_secs(1) {
            return;
        }
        let (s, r) = shared.totals();
        let secs = at.elapsed().as_secs_f64();
        let size = shared.args.size as f64;
        let (sent_rate, recv_rate) = ((s - s0) as f64 / secs, (r - r0) as f64 / secs);
        let main_rate = if counts_sent(shared) {
            sent_rate
        } else {
            recv_rate
        };
        eprintln!(
            "[{:>5.1}s] {:<7} {:>8} {:>12.0} msg/s {:>9.1} MB/s  (sent {:.0}/s, received {:.0}/s)",
            self.started.elapsed().as_secs_f64(),
            shared.mode.name(),
            format!("{:?}", shared.phase()).to_lowercase(),
            main_rate,
            main_rate * size / 1e6,
            sent_rate,
            recv_rate,
        );
        self.last.set((Instant::now(), s, r));
    }
}
