//! Running a measurement: one pinned glommio executor per core generating load, and the main
//! thread as the clock that moves every executor through the same phases (set-up, warm-up,
//! measure, drain, stop), snapshots the counters at the phase edges and prints progress.
//!
//! Executors only touch their own cache-padded counters on the hot path; the main thread sums
//! them. Latency histograms stay per executor and are merged once at the end.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use super::args::{LoadArgs, Mode, RawReply};
use super::histogram::Latencies;
use super::progress::Progress;

/// io_uring registered memory per executor: sockets only, so little is needed.
const IO_MEMORY: usize = 1 << 20;
/// How long set-up (connecting, subscribing, preloading) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long consumers may take to receive what was sent before the measurement ended.
const MAX_DRAIN: Duration = Duration::from_secs(5);
/// How often the clock looks at the counters.
const TICK: Duration = Duration::from_millis(2);
/// How often executors poll a phase change they wait for.
pub const POLL: Duration = Duration::from_millis(1);

/// Where the run is; every executor follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Connecting, subscribing, preloading.
    Setup = 0,
    /// Load applied, not counted.
    Warmup = 1,
    /// Load applied and counted.
    Measure = 2,
    /// No new messages; consumers collect what is still on its way.
    Drain = 3,
    /// Everything stops.
    Stop = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Setup,
            1 => Phase::Warmup,
            2 => Phase::Measure,
            3 => Phase::Drain,
            _ => Phase::Stop,
        }
    }
}

/// One executor's counters, on their own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CoreCounters {
    /// Messages the broker acknowledged (PUB/MPUB OK), or raw frames sent.
    pub sent: AtomicU64,
    /// Messages delivered to consumers, or raw frames echoed.
    pub received: AtomicU64,
}

/// State every executor and the clock share.
#[derive(Debug)]
pub struct Shared {
    /// The run's options.
    pub args: LoadArgs,
    /// The mode.
    pub mode: Mode,
    /// Time zero for send times carried in message bodies.
    pub base: Instant,
    counters: Box<[CoreCounters]>,
    phase: AtomicU8,
    measure_from_ns: AtomicU64,
    measure_to_ns: AtomicU64,
    /// Executors that finished their first set-up step (consumers subscribed).
    pub subscribed: AtomicUsize,
    /// Executors ready for load.
    pub ready: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    /// Shared state for `cores` executors.
    pub fn new(args: LoadArgs, mode: Mode, cores: usize) -> Arc<Shared> {
        Arc::new(Shared {
            args,
            mode,
            base: Instant::now(),
            counters: (0..cores).map(|_| CoreCounters::default()).collect(),
            phase: AtomicU8::new(Phase::Setup as u8),
            measure_from_ns: AtomicU64::new(u64::MAX),
            measure_to_ns: AtomicU64::new(u64::MAX),
            subscribed: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            errors: Mutex::new(Vec::new()),
        })
    }

    /// Number of executors.
    pub fn cores(&self) -> usize {
        self.counters.len()
    }

    /// Executor `i`'s counters.
    pub fn core(&self, i: usize) -> &CoreCounters {
        &self.counters[i]
    }

    /// Sums over executors: (sent, received).
    pub fn totals(&self) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(s, r), c| {
            (
                s + c.sent.load(Ordering::Relaxed),
                r + c.received.load(Ordering::Relaxed),
            )
        })
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    /// Ends the run: every executor stops.
    pub fn stop(&self) {
        self.set_phase(Phase::Stop);
    }

    /// Whether new messages may be sent.
    pub fn sending(&self) -> bool {
        matches!(self.phase(), Phase::Warmup | Phase::Measure)
    }

    /// Whether the run is over.
    pub fn stopped(&self) -> bool {
        self.phase() == Phase::Stop
    }

    /// Nanoseconds since [`Shared::base`].
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Whether a message sent (or due) at `t_ns` belongs to the measurement.
    pub fn in_window(&self, t_ns: u64) -> bool {
        t_ns >= self.measure_from_ns.load(Ordering::Relaxed)
            && t_ns < self.measure_to_ns.load(Ordering::Relaxed)
    }

    /// When the measurement ends (ns since base), once known; `u64::MAX` before.
    pub fn measure_to_ns(&self) -> u64 {
        self.measure_to_ns.load(Ordering::Relaxed)
    }

    /// Records a connection failure for the report (the run goes on with the rest).
    pub fn error(&self, e: impl std::fmt::Display) {
        if let Ok(mut errors) = self.errors.lock()
            && errors.len() < 100
        {
            errors.push(e.to_string());
        }
    }

    /// The failures recorded so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// Waits (on an executor) until `cond` holds; false if the run stopped first.
pub async fn wait_until(shared: &Shared, cond: impl Fn() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if shared.stopped() {
            return false;
        }
        glommio::timer::sleep(POLL).await;
    }
}

/// Waits until every executor has passed a set-up step counted by `counter`.
pub async fn barrier(shared: &Shared, counter: &AtomicUsize) -> bool {
    counter.fetch_add(1, Ordering::AcqRel);
    wait_until(shared, || counter.load(Ordering::Acquire) >= shared.cores()).await
}

/// The CPUs to pin `n` executors to: `wanted` if given, else the first `n` allowed ones.
pub fn pick_cpus(wanted: &[usize], n: usize) -> Result<Vec<usize>, String> {
    if !wanted.is_empty() {
        return Ok(wanted.iter().copied().take(n).collect());
    }
    let allowed = crate::runtime::allowed_cpus();
    if allowed.is_empty() {
        return Err("cannot read this process's CPU affinity".into());
    }
    Ok((0..n).map(|i| allowed[i % allowed.len()]).collect())
}

/// Starts one pinned executor per CPU running `core_main(index)`; each returns its latencies.
pub fn spawn_executors<F, Fut>(
    name: &str,
    cpus: &[usize],
    spin: Duration,
    core_main: F,
) -> Result<Vec<JoinHandle<Latencies>>, String>
where
    F: Fn(usize) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Latencies> + 'static,
{
    let mut handles = Vec::with_capacity(cpus.len());
    for (i, &cpu) in cpus.iter().enumerate() {
        let core_main = core_main.clone();
        let thread_name = format!("{name}-{i}");
        let handle = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                    .name(&thread_name)
                    .io_memory(IO_MEMORY);
                if !spin.is_zero() {
                    builder = builder.spin_before_park(spin);
                }
                let built = builder.make();
                match built {
                    Ok(ex) => ex.run(core_main(i)),
                    Err(e) => {
                        eprintln!("nsq-bench: cannot start an executor on cpu {cpu}: {e}");
                        Latencies::new()
                    }
                }
            })
            .map_err(|e| format!("cannot spawn executor thread: {e}"))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// What the clock measured.
#[derive(Debug, Default, Clone)]
pub struct Measured {
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Messages acknowledged in the window.
    pub sent: u64,
    /// Messages received in the window.
    pub received: u64,
    /// Sent over the whole run minus received after draining (consumer modes).
    pub unreceived: u64,
    /// The broker's CPU time in the window.
    pub broker_cpu: Option<Duration>,
    /// This process's CPU time in the window.
    pub client_cpu: Option<Duration>,
    /// The broker's RSS at the start of the window (KiB).
    pub broker_rss_kib: Option<u64>,
    /// The broker's RSS before set-up (KiB), for per-connection cost.
    pub broker_rss_before_kib: Option<u64>,
    /// Latencies of messages in the window, merged over executors.
    pub latencies: Latencies,
}

/// Runs the phases for executors already started, and collects the result.
pub fn clock(shared: &Arc<Shared>, handles: Vec<JoinHandle<Latencies>>) -> Measured {
    let args = &shared.args;
    let pid = args.broker_pid;
    let mut m = Measured {
        broker_rss_before_kib: pid.and_then(super::proc_stat::rss_kib),
        ..Measured::default()
    };
    let setup_started = Instant::now();
    while shared.ready.load(Ordering::Acquire) < shared.cores() {
        if handles.iter().any(|h| h.is_finished()) || setup_started.elapsed() > SETUP_TIMEOUT {
            shared.error("set-up did not finish (connect/subscribe/preload failed)");
            shared.set_phase(Phase::Stop);
            return finish(shared, handles, m);
        }
        std::thread::sleep(TICK);
    }
    let progress = Progress::new(shared);
    // sub measures from the first RDY: its warm-up was the preload.
    let warmup = if shared.mode == Mode::Sub {
        Duration::ZERO
    } else {
        args.warmup
    };
    shared.set_phase(Phase::Warmup);
    let go = Instant::now();
    while go.elapsed() < warmup {
        progress.tick(shared);
        std::thread::sleep(TICK);
    }
    let (s1, r1) = shared.totals();
    let cpu1 = pid.and_then(super::proc_stat::cpu_time);
    let own1 = super::proc_stat::own_cpu_time();
    m.broker_rss_kib = pid.and_then(super::proc_stat::rss_kib);
    let t1 = Instant::now();
    shared
        .measure_from_ns
        .store(shared.now_ns(), Ordering::Relaxed);
    shared.set_phase(Phase::Measure);
    while t1.elapsed() < args.duration && !count_reached(shared, s1, r1) {
        progress.tick(shared);
        std::thread::sleep(TICK);
    }
    let (s2, r2) = shared.totals();
    m.elapsed = t1.elapsed();
    // saturating: a broker that died (and a recycled pid) must not crash the report.
    m.broker_cpu = cpu1
        .zip(pid.and_then(super::proc_stat::cpu_time))
        .map(|(a, b)| b.saturating_sub(a));
    m.client_cpu = own1
        .zip(super::proc_stat::own_cpu_time())
        .map(|(a, b)| b.saturating_sub(a));
    shared
        .measure_to_ns
        .store(shared.now_ns(), Ordering::Relaxed);
    (m.sent, m.received) = (s2 - s1, r2 - r1);
    shared.set_phase(Phase::Drain);
    let drain = Instant::now();
    if consumes(shared) {
        while drain.elapsed() < MAX_DRAIN {
            let (s, r) = shared.totals();
            if r >= s {
                break;
            }
            std::thread::sleep(TICK);
        }
        let (s, r) = shared.totals();
        m.unreceived = s.saturating_sub(r);
    }
    shared.set_phase(Phase::Stop);
    finish(shared, handles, m)
}

fn finish(_shared: &Shared, handles: Vec<JoinHandle<Latencies>>, mut m: Measured) -> Measured {
    for h in handles {
        if let Ok(l) = h.join() {
            m.latencies.merge(&l);
        }
    }
    m
}

/// Whether the run has consumers that should see every message sent.
fn consumes(shared: &Shared) -> bool {
    match shared.mode {
        Mode::Pubsub | Mode::Latency | Mode::Sub => true,
        Mode::Raw => shared.args.raw_reply == RawReply::Echo,
        Mode::Pub | Mode::Idle | Mode::RawServer => false,
    }
}

/// Whether the run's throughput is what publishers got acknowledged (no consumers).
pub fn counts_sent(shared: &Shared) -> bool {
    !consumes(shared)
}

/// Whether `--count` messages have been handled since the window opened at (s1, r1).
fn count_reached(shared: &Shared, s1: u64, r1: u64) -> bool {
    let want = shared.args.count;
    if want == 0 {
        return false;
    }
    let (s, r) = shared.totals();
    match shared.mode {
        // sub counts every message it was given, preloaded before the window.
        Mode::Sub => r >= want,
        _ if counts_sent(shared) => s - s1 >= want,
        _ => r - r1 >= want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::args::{Cli, Command};
    use clap::Parser;

    fn shared(mode: Mode, extra: &[&str]) -> Arc<Shared> {
        let mut argv = vec!["nsq-bench", "pub"];
        argv.extend_from_slice(extra);
        let Command::Pub(args) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!()
        };
        Shared::new(args, mode, 2)
    }

    #[test]
    fn window_opens_and_closes_with_the_clock() {
        let s = shared(Mode::Latency, &[]);
        assert!(!s.in_window(5), "nothing counts before the window opens");
        s.measure_from_ns.store(100, Ordering::Relaxed);
        assert!(s.in_window(100) && s.in_window(1 << 40));
        s.measure_to_ns.store(200, Ordering::Relaxed);
        assert!(!s.in_window(99) && s.in_window(199) && !s.in_window(200));
    }

    #[test]
    fn phases_gate_sending() {
        let s = shared(Mode::Pub, &[]);
        assert!(!s.sending());
        s.set_phase(Phase::Warmup);
        assert!(s.sending());
        s.set_phase(Phase::Drain);
        assert!(!s.sending() && !s.stopped());
        s.set_phase(Phase::Stop);
        assert!(s.stopped());
    }

    #[test]
    fn totals_sum_cores_and_count_bounds_runs() {
        let s = shared(Mode::Pub, &["--count", "10"]);
        s.core(0).sent.fetch_add(4, Ordering::Relaxed);
        s.core(1).sent.fetch_add(5, Ordering::Relaxed);
        s.core(1).received.fetch_add(2, Ordering::Relaxed);
        assert_eq!(s.totals(), (9, 2));
        assert!(!count_reached(&s, 0, 0));
        s.core(0).sent.fetch_add(1, Ordering::Relaxed);
        assert!(count_reached(&s, 0, 0));
        assert!(!count_reached(&s, 1, 0));
    }

    #[test]
    fn explicit_cpus_win_and_defaults_wrap() {
        assert_eq!(pick_cpus(&[3, 1, 2], 2), Ok(vec![3, 1]));
        let picked = pick_cpus(&[], 5).unwrap();
        assert_eq!(picked.len(), 5);
    }
}
