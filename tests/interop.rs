//! Interop with real, independent NSQ clients: pynsq (PyPI), nsqjs (npm) and tokio-nsq
//! (crates.io), each publishing and consuming through a two-core broker so their traffic
//! crosses cores. The Python and Node clients are installed by `tests/interop/setup.sh`.
//! The feature tests also have each client negotiate `tls_v1`, `snappy` or `deflate` on
//! every connection (the check scripts fail if a connection comes up without them).

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{Broker, unique};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the clients once per test process; a failed install fails the tests.
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("tests/interop/setup.sh"))
            .output()
            .expect("run setup.sh");
        assert!(
            out.status.success(),
            "interop setup failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The interop venv's Python, which has pynsq.
fn python() -> PathBuf {
    repo().join("target/interop/venv/bin/python")
}

/// Runs a check script against `broker` with `flags` (e.g. `--tls`) and asserts it passed.
fn run_check(program: PathBuf, script: &str, broker: &Broker, count: usize, flags: &[&str]) {
    setup();
    let topic = unique("interop");
    let out = Command::new(program)
        .arg(repo().join("tests/interop").join(script))
        .args([
            "--tcp",
            &broker.tcp.to_string(),
            "--topic",
            &topic,
            "--count",
            &count.to_string(),
        ])
        .args(["--timeout", "90"])
        .args(flags)
        .output()
        .expect("run interop check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    assert!(stdout.contains("OK"), "{stdout}");
    let features: Vec<&str> = flags.iter().map(|f| feature_name(f)).collect();
    let want = match features.join(",") {
        j if j.is_empty() => "none".to_string(),
        j => j,
    };
    assert!(
        stdout.contains(&format!(" features={want} ")),
        "expected features={want}: {stdout}"
    );
}

/// The IDENTIFY feature a check-script flag asks for.
fn feature_name(flag: &str) -> &str {
    match flag {
        "--tls" => "tls_v1",
        other => other.trim_start_matches("--"),
    }
}

/// A self-signed certificate for 127.0.0.1 in a temp dir, removed on drop. The clients
/// skip verification, so no CA is needed.
struct TlsFiles {
    dir: PathBuf,
}

impl TlsFiles {
    fn new() -> TlsFiles {
        let dir = std::env::temp_dir().join(unique("nsqd-interop-tls-"));
        std::fs::create_dir_all(&dir).unwrap();
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let cert = rcgen::generate_simple_self_signed(names).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
        TlsFiles { dir }
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a check script with `flags` against its own two-core broker that offers `tls_v1`
/// (with a fresh certificate), `snappy` and `deflate`.
fn run_feature_check(program: PathBuf, script: &str, count: usize, flags: &[&str]) {
    let tls = TlsFiles::new();
    let cert = format!("--tls-cert={}", tls.dir.join("cert.pem").display());
    let key = format!("--tls-key={}", tls.dir.join("key.pem").display());
    let broker = Broker::with_cores(2, &[&cert, &key]);
    run_check(program, script, &broker, count, flags);
}

#[test]
fn pynsq_writer_and_two_readers_get_all_10000_messages() {
    let broker = Broker::with_cores(2, &[]);
    run_check(python(), "pynsq_check.py", &broker, 10_000, &[]);
}

#[test]
fn nsqjs_publishes_and_consumes() {
    let broker = Broker::with_cores(2, &[]);
    run_check(PathBuf::from("node"), "nsqjs_check.js", &broker, 2_000, &[]);
}

#[test]
fn pynsq_over_tls_gets_all_10000_messages() {
    run_feature_check(python(), "pynsq_check.py", 10_000, &["--tls"]);
}

#[test]
fn pynsq_with_snappy_gets_all_10000_messages() {
    run_feature_check(python(), "pynsq_check.py", 10_000, &["--snappy"]);
}

#[test]
fn pynsq_with_deflate_gets_all_10000_messages() {
    run_feature_check(python(), "pynsq_check.py", 10_000, &["--deflate"]);
}

#[test]
fn pynsq_with_snappy_over_tls_gets_all_10000_messages() {
    run_feature_check(python(), "pynsq_check.py", 10_000, &["--tls", "--snappy"]);
}

#[test]
fn nsqjs_over_tls_gets_all_10000_messages() {
    run_feature_check("node".into(), "nsqjs_check.js", 10_000, &["--tls"]);
}

#[test]
fn nsqjs_with_snappy_gets_all_10000_messages() {
    run_feature_check("node".into(), "nsqjs_check.js", 10_000, &["--snappy"]);
}

#[test]
fn nsqjs_with_deflate_gets_all_10000_messages() {
    run_feature_check("node".into(), "nsqjs_check.js", 10_000, &["--deflate"]);
}

#[test]
fn nsqjs_with_deflate_over_tls_gets_all_10000_messages() {
    run_feature_check(
        "node".into(),
        "nsqjs_check.js",
        10_000,
        &["--tls", "--deflate"],
    );
}

#[test]
fn tokio_nsq_publishes_and_consumes() {
    use tokio_nsq::{
        NSQChannel, NSQConfigShared, NSQConsumerConfig, NSQConsumerConfigSources, NSQEvent,
        NSQProducerConfig, NSQTopic,
    };
    let broker = Broker::with_cores(2, &[]);
    let addr = broker.tcp.to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let count = 1000usize;
        let fast = || NSQConfigShared::new().set_flush_interval(Duration::from_millis(5));
        let topic = NSQTopic::new(unique("tokio_nsq")).unwrap();
        let run = async {
            let mut consumer =
                NSQConsumerConfig::new(topic.clone(), NSQChannel::new("it").unwrap())
                    .set_max_in_flight(100)
                    .set_sources(NSQConsumerConfigSources::Daemons(vec![addr.clone()]))
                    .set_shared(fast())
                    .build();
            assert!(matches!(
                consumer.consume().await,
                Some(NSQEvent::Healthy())
            ));
            let mut producer = NSQProducerConfig::new(addr.clone())
                .set_shared(fast())
                .build();
            assert!(matches!(
                producer.consume().await,
                Some(NSQEvent::Healthy())
            ));
            let bodies: Vec<Vec<u8>> = (0..count)
                .map(|i| format!("m{i:06}").into_bytes())
                .collect();
            let mut commands = 0;
            for chunk in bodies.chunks(50) {
                producer.publish(&topic, chunk[0].clone()).await.unwrap();
                producer
                    .publish_multiple(&topic, chunk[1..].to_vec())
                    .await
                    .unwrap();
                commands += 2;
            }
            for _ in 0..commands {
                assert!(matches!(producer.consume().await, Some(NSQEvent::Ok())));
            }
            let want: HashSet<Vec<u8>> = bodies.into_iter().collect();
            let mut seen = HashSet::new();
            while seen.len() < count {
                let msg = consumer.consume_filtered().await.expect("consumer closed");
                assert!(want.contains(&msg.body), "unexpected body");
                seen.insert(msg.body.clone());
                msg.finish().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("tokio-nsq check timed out");
    });
}
