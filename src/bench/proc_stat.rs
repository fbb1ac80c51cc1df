//! What the kernel says a process has used: CPU time (utime + stime from `/proc/<pid>/stat`) and
//! resident memory (`VmRSS` from `/proc/<pid>/status`). The broker's cost per message comes
//! from here, so it is measured the same way for any broker binary.

use std::time::Duration;

/// CPU time of a process so far, or `None` if it cannot be read (gone, not Linux).
pub fn cpu_time(pid: i32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&text)?;
    Some(ticks_to_duration(ticks, clock_ticks_per_second()))
}

/// This process's own CPU time (the load generator's share of the cores).
pub fn own_cpu_time() -> Option<Duration> {
    cpu_time(std::process::id() as i32)
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
    fn own_process_is_readable() {
        assert!(own_cpu_time().is_some());
        assert!(rss_kib(std::process::id() as i32).unwrap_or(0) > 0);
    }
}
