//! What the kernel says a process has used: CPU time and resident memory (`VmRSS` from
//! `/proc/<pid>/status`). The broker's cost per message comes from here, so it is measured the
//! same way for any broker binary.
//!
//! CPU time comes from the process's CPU-time clock (`clock_getcpuclockid(3)`), in nanoseconds:
//! `/proc/<pid>/stat` counts 10 ms ticks, too coarse for a run that drains its backlog in 30 ms.
//! The ticks remain the fallback where the clock cannot be read.

use std::time::Duration;

use nix::time::{ClockId, clock_getcpuclockid, clock_gettime};
use nix::unistd::Pid;

/// CPU time of a process so far (every thread, live or exited), or `None` if it cannot be
/// read (gone, not Linux).
pub fn cpu_time(pid: i32) -> Option<Duration> {
    clock_getcpuclockid(Pid::from_raw(pid))
        .ok()
        .and_then(read_clock)
        .or_else(|| cpu_time_in_ticks(pid))
}

/// This process's own CPU time (the load generator's share of the cores).
pub fn own_cpu_time() -> Option<Duration> {
    read_clock(ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .or_else(|| cpu_time_in_ticks(std::process::id() as i32))
}

fn read_clock(clock: ClockId) -> Option<Duration> {
    clock_gettime(clock).ok().map(Duration::from)
}

/// utime + stime from `/proc/<pid>/stat`, in whole ticks.
fn cpu_time_in_ticks(pid: i32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&text)?;
    Some(ticks_to_duration(ticks, clock_ticks_per_second()))
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&text)
}

/// utime + stime in clock ticks from the text of `/proc/<pid>/stat`. The command name may hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: state(3) ppid(4) ... utime is field 14, stime 15 (1-based, whole line).
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The `VmRSS:` line of `/proc/<pid>/status`, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks to time.
pub fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000 / per_second))
}

/// /proc reports times in USER_HZ, which Linux fixes at 100 on every architecture it exports
/// it to (whatever the kernel's own tick rate).
fn clock_ticks_per_second() -> u64 {
    100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_even_with_odd_names() {
        let line = "1234 (nsqd (core) 1) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    250 75 0 0 20 0 3 0 100 1000000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(line), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tnsqd\nVmPeak:\t  9999 kB\nVmRSS:\t   4321 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(4321));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn ticks_convert_at_the_kernel_rate() {
        assert_eq!(ticks_to_duration(150, 100), Duration::from_millis(1500));
        assert_eq!(ticks_to_duration(1, 0), Duration::from_secs(1));
    }

    #[test]
    fn another_process_cpu_time_is_read_in_nanoseconds_and_agrees_with_its_ticks() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn a busy shell");
        std::thread::sleep(Duration::from_millis(300));
        let pid = child.id() as i32;
        let clock = clock_getcpuclockid(Pid::from_raw(pid))
            .ok()
            .and_then(read_clock);
        let ticks = cpu_time_in_ticks(pid);
        let _ = child.kill();
        let _ = child.wait();
        let (clock, ticks) = (clock.expect("CPU-time clock"), ticks.expect("/proc ticks"));
        assert!(
            clock > Duration::from_millis(20),
            "busy for 300 ms: {clock:?}"
        );
        // Read one after the other: the ticks may run ahead by the time between the reads, and
        // lag by up to a tick for each of utime and stime, which are truncated separately.
        let diff = ticks.as_secs_f64() - clock.as_secs_f64();
        assert!(
            (-0.021..0.05).contains(&diff),
            "clock {clock:?}, ticks {ticks:?}"
        );
    }

    #[test]
    fn own_cpu_time_is_finer_than_a_tick() {
        // Spin until the clock itself says 3 ms were spent (on a loaded machine 3 ms of wall
        // time can be well under 1 ms of CPU), bounded by a wall deadline.
        let before = own_cpu_time().expect("own CPU time");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut spent = Duration::ZERO;
        while spent < Duration::from_millis(3) && std::time::Instant::now() < deadline {
            std::hint::black_box(0u64);
            spent = own_cpu_time().expect("own CPU time") - before;
        }
        // Other tests' threads count too, so no upper bound; a clock in whole 10 ms ticks
        // would only ever show a multiple of 10 ms.
        assert!(spent >= Duration::from_millis(3), "{spent:?}");
        assert_ne!(spent.as_nanos() % 10_000_000, 0, "{spent:?}");
    }

    #[test]
    fn own_process_is_readable() {
        assert!(own_cpu_time().is_some());
        assert!(rss_kib(std::process::id() as i32).unwrap_or(0) > 0);
    }
}
