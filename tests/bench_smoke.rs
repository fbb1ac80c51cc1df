//! `scripts/bench.sh --quick` end to end with tiny durations, so the benchmark script, the
//! nsq-bench modes it drives and the plot step cannot rot. Uses the test build's binaries; no
//! other broker is involved (NSQD is cleared).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous on a loaded 2-core machine; the quick matrix itself takes about ten seconds.
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn quick_bench_writes_csv_summary_and_plots() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("nsq-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new("bash")
        .arg(root.join("scripts/bench.sh"))
        .args(["--quick", "--no-build", "--out"])
        .arg(&out)
        .env("NSQD_URING_BIN", env!("CARGO_BIN_EXE_nsqd"))
        .env("NSQ_BENCH_BIN", env!("CARGO_BIN_EXE_nsq-bench"))
        .env("BENCH_DURATION", "0.2s")
        .env("BENCH_WARMUP", "0.1s")
        .env_remove("NSQD")
        .env_remove("NSQ_TOOLS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/bench.sh");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("bench.sh --quick ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("output");
    let log = std::fs::read_to_string(out.join("bench.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "bench.sh failed: {}\n{}\n{log}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv written");
    let mut lines = csv.lines();
    assert!(lines.next().unwrap_or("").starts_with("label,tag,mode,"));
    let rows: Vec<&str> = lines.collect();
    for mode in [",raw,", ",pub,", ",sub,", ",pubsub,", ",latency,"] {
        assert!(
            rows.iter().any(|r| r.contains(mode)),
            "no {mode} row in:\n{csv}\n{log}"
        );
    }
    assert!(out.join("summary.md").exists(), "{log}");
    assert!(out.join("throughput_pub.svg").exists(), "{log}");
    let _ = std::fs::remove_dir_all(&out);
}
