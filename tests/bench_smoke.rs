//! `scripts/bench.sh --quick` end to end with tiny durations, so the benchmark script, the
//! nsq-bench modes it drives and the plot step cannot rot. Uses the test build's binaries; no
//! other broker is involved (NSQD is cleared).

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Broker;

/// Generous on a loaded 2-core machine; the quick matrix itself takes about ten seconds.
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn quick_bench_writes_csv_summary_and_plots() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("nsq-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let child = Command::new("bash")
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
    let output = output_within(child, LIMIT, "bench.sh --quick");
    let log = std::fs::read_to_string(out.join("bench.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "bench.sh failed: {}\n{}\n{log}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).expect("results.csv written");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    assert_eq!(header[..3], ["label", "tag", "mode"]);
    let rows: Vec<&str> = lines.collect();
    // The latency level's raw echo floor: same rate, every message back, percentiles measured.
    let floor: Vec<&str> = rows
        .iter()
        .find(|r| r.starts_with("raw,lat50,raw,"))
        .unwrap_or_else(|| panic!("no raw latency floor row in:\n{csv}\n{log}"))
        .split(',')
        .collect();
    let col = |name: &str| floor[header.iter().position(|h| *h == name).expect(name)];
    assert!(col("p50_us").parse::<f64>().is_ok_and(|p| p > 0.0), "{csv}");
    assert!(col("messages").parse::<u64>().is_ok_and(|n| n > 0), "{csv}");
    assert_eq!(col("unreceived"), "0", "{csv}");
    for mode in [",raw,", ",pub,", ",sub,", ",pubsub,", ",latency,"] {
        assert!(
            rows.iter().any(|r| r.contains(mode)),
            "no {mode} row in:\n{csv}\n{log}"
        );
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap_or_default();
    assert!(summary.contains("raw p99 |"), "{summary}\n{log}");
    assert!(out.join("throughput_pub.svg").exists(), "{log}");
    let _ = std::fs::remove_dir_all(&out);
}

/// The open-loop sender sleeps on short timers between sends while its connections' answers
/// wake the executor early, the pattern that once lost a timer in the patched glommio (a
/// timer kept across a park had fired during the park's own flushes, so the executor slept
/// with none armed): the sender stopped and the run never ended. Short runs at a low rate,
/// each bounded; every one must end and get back what it sent.
#[test]
fn low_rate_latency_runs_end_and_receive_what_they_send() {
    let broker = Broker::with_cores(1, &[]);
    let addr = broker.tcp.to_string();
    for run in 0..10 {
        let child = Command::new(env!("CARGO_BIN_EXE_nsq-bench"))
            .args(["latency", "--nsqd-tcp-address", &addr, "--topic"])
            .arg(format!("lowrate{run}"))
            .args(["--rate", "2000", "--connections", "4", "--size", "100"])
            .args([
                "--duration",
                "0.3s",
                "--warmup",
                "0.1s",
                "--json",
                "--quiet",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nsq-bench");
        let what = format!("nsq-bench latency run {run}");
        let output = output_within(child, Duration::from_secs(20), &what);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "run {run}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON result");
        assert!(
            result["messages"].as_u64().unwrap_or(0) > 0,
            "run {run}: {stdout}"
        );
        assert_eq!(result["unreceived"], 0, "run {run}: {stdout}");
    }
}

/// Waits for `child` at most `limit` (killing it and failing the test past that), then returns
/// its output.
fn output_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}
