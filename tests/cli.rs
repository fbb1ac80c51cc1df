//! The command line as nsqd users type it: Go flag forms, `--config` TOML, refusals by name,
//! `--version`, and the locked-memory start-up check.

mod common;

use common::{Broker, nsqd_bin, unique};
use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    // A private working directory: nsqd's default data path, flocked while it runs.
    let cwd = common::temp_dir();
    let out = Command::new(nsqd_bin())
        .args(args)
        .current_dir(&cwd)
        .output()
        .expect("run nsqd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_prints_nsqd_form() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("nsqd v1.3.0 (built w/nsqd-uring "), "{out}");
    let (code, out, _) = run(&["-version"]);
    assert_eq!((code, out.starts_with("nsqd v1.3.0")), (0, true));
}

#[test]
fn unknown_flags_and_bad_values_exit_1_with_a_message() {
    let (code, _, err) = run(&["--no-such-flag"]);
    assert_eq!(code, 1);
    assert!(err.contains("no-such-flag"), "{err}");
    let (code, _, err) = run(&["--msg-timeout=forever"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("msg-timeout") && err.contains("forever"),
        "{err}"
    );
    let (code, _, err) = run(&["--node-id=5000"]);
    assert_eq!(code, 1);
    assert!(err.contains("--node-id must be [0,1024)"), "{err}");
}

#[test]
fn every_nsqd_flag_is_accepted_and_bad_values_are_named() {
    assert!(
        nsqd_uring::options::UNBUILT_FLAGS.is_empty(),
        "flags still refused: {:?}",
        nsqd_uring::options::UNBUILT_FLAGS
    );
    // The last flags to be built start a serving broker.
    let b = Broker::start(&[
        "--cores=1",
        "--queue-scan-worker-pool-max=2",
        "--queue-scan-selection-count=10",
        "--enable-experiment=topology-aware-consumption",
        "--topology-zone=z",
        "--topology-region=r",
        "--spin-before-park=50us",
    ]);
    let mut c = b.client();
    c.publish(&unique("flags"), b"x");
    let (code, _, err) = run(&["--tcp-address=127.0.0.1:0", "--enable-experiment=warp"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid experiment \"warp\""), "{err}");
    let (code, _, err) = run(&["--tcp-address=127.0.0.1:0", "--mem-queue-size=-1"]);
    assert_eq!(code, 1);
    assert!(err.contains("--mem-queue-size=-1"), "{err}");
}

#[test]
fn too_many_cores_is_refused() {
    let (code, _, err) = run(&["--tcp-address=127.0.0.1:0", "--cores=4096"]);
    assert_eq!(code, 1);
    assert!(err.contains("--cores=4096"), "{err}");
}

#[test]
fn taken_port_fails_with_nsqds_listen_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let flag = format!("--tcp-address={addr}");
    let (code, _, err) = run(&[&flag, "--cores=1"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("listen ({addr}) failed")), "{err}");
}

/// Our listeners set SO_REUSEPORT, so without a check a second broker would bind a running
/// one's ports and the kernel would split clients between them. nsqd refuses to start.
#[test]
fn a_second_broker_on_a_running_brokers_ports_fails_to_start() {
    let first = Broker::with_cores(2, &[]);
    let http = first.http.expect("HTTP listener");
    let cases = [
        (
            first.tcp,
            format!("--tcp-address={}", first.tcp),
            "--http-address=127.0.0.1:0",
        ),
        (
            http,
            format!("--http-address={http}"),
            "--tcp-address=127.0.0.1:0",
        ),
    ];
    for (taken, flag, other) in cases {
        // Started as a broker, so that one which does start (the bug) is stopped again.
        match Broker::try_start(&[&flag, other, "--cores=2"]) {
            Ok(_) => panic!("a second broker started with {flag}"),
            Err(err) => assert!(err.contains(&format!("listen ({taken}) failed")), "{err}"),
        }
    }
    let mut p = first.client();
    p.publish(&unique("still"), b"x");
}

/// A supervisor restarting a broker killed with kill -9 does so at once, on the same ports.
/// The kernel tears a dead process's io_uring rings down after it is reaped, and its listeners
/// with them, so for a few tens of milliseconds the ports are still listened on: the check
/// that refuses a second broker must not refuse this one (nsqd restarts fine).
#[test]
fn a_broker_killed_with_kill_9_restarts_at_once_on_the_same_ports() {
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let tcp = format!("--tcp-address={}", free_port());
    let http = format!("--http-address={}", free_port());
    let args = [tcp.as_str(), http.as_str(), "--cores=2"];
    for round in 0..3 {
        let mut b = Broker::try_start(&args)
            .unwrap_or_else(|e| panic!("start {round} after a kill -9: {e}"));
        // Traffic, so the broker has accepted connections and a consumer in its rings.
        let topic = unique("k9");
        let mut p = b.client();
        p.publish(&topic, b"x");
        let _consumer = b.consumer(&topic, "c", 10);
        b.kill9();
    }
}

#[test]
fn go_flag_forms_and_config_file_apply() {
    let dir = std::env::temp_dir().join(unique("nsqd-cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("nsqd.toml");
    std::fs::write(&config, "max_rdy_count = 10\nmsg_timeout = \"2s\"\n").unwrap();
    let config_flag = format!("-config={}", config.display());
    // Single-dash and space-separated forms; the config sets max_rdy_count.
    let b = Broker::start(&[&config_flag, "-cores", "1", "-max-msg-size", "100"]);
    let mut c = b.client();
    c.with_body("PUB t", &[b'x'; 101]);
    c.expect_error("E_BAD_MESSAGE PUB message too big 101 > 100");
    let mut s = b.client();
    s.sub("t", "c");
    s.line("RDY 11");
    s.expect_error("E_INVALID RDY count 11 out of range 0-10");
    // A flag beats the config file.
    let b2 = Broker::start(&[&config_flag, "--max-rdy-count=20", "--cores=1"]);
    let mut s2 = b2.client();
    s2.sub("t", "c");
    s2.line("RDY 21");
    s2.expect_error("E_INVALID RDY count 21 out of range 0-20");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn low_locked_memory_limit_is_raised_or_explained() {
    let cwd = common::temp_dir();
    let out = Command::new("prlimit")
        .current_dir(&cwd)
        .args([
            "--memlock=65536:65536",
            "timeout",
            "-s",
            "TERM",
            "3",
            nsqd_bin(),
        ])
        .args(["--tcp-address=127.0.0.1:0", "--cores=2"])
        .output();
    let Ok(out) = out else {
        eprintln!("prlimit unavailable; skipped");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("serving on") {
        // The limit was raised: the broker served until `timeout` sent SIGTERM, then exited 0.
        assert_eq!(out.status.code(), Some(0), "{err}");
    } else {
        // It could not be raised: exit 1 with a message that says what to do.
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("RLIMIT_MEMLOCK") && err.contains("ulimit -l"),
            "{err}"
        );
    }
}

#[test]
fn default_addresses_match_nsqd() {
    // Go's flag package prints the usage on stderr, as nsqd does.
    let (code, stdout, out) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.is_empty(), "{stdout}");
    for needle in [
        "tcp-address",
        "0.0.0.0:4150",
        "http-address",
        "0.0.0.0:4151",
        "mem-queue-size",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}:\n{out}");
    }
}

/// A port left with TIME_WAIT connections by another program, such as the nsqd this broker
/// replaces (its listener sets SO_REUSEADDR, not SO_REUSEPORT), can be listened on at once,
/// as Go's listeners allow.
#[test]
fn starts_on_ports_where_another_programs_connections_linger_in_time_wait() {
    use std::io::Read;
    let lingering = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (served, _) = listener.accept().unwrap();
        // The serving side closes first: its end stays in TIME_WAIT on `addr`.
        drop(served);
        let _ = client.read(&mut [0u8; 1]);
        addr
    };
    let (tcp, http) = (lingering(), lingering());
    let tcp_flag = format!("--tcp-address={tcp}");
    let http_flag = format!("--http-address={http}");
    let broker = Broker::try_start(&["--cores=2", &tcp_flag, &http_flag])
        .unwrap_or_else(|e| panic!("could not listen on {tcp} / {http}: {e}"));
    let mut p = broker.client();
    p.publish(&unique("lingering"), b"x");
}

/// Every listener (one per core for TCP and for HTTP, all on the same ports) has the kernel's
/// `net.core.somaxconn` as its accept backlog, as Go's listeners do: a burst of connections
/// after a restart waits in the queue instead of in SYN retries.
#[test]
fn listeners_queue_as_many_connections_as_the_kernel_allows() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read somaxconn")
        .trim()
        .parse()
        .expect("somaxconn is a number");
    let broker = Broker::with_cores(2, &[]);
    for addr in [broker.tcp, broker.http.expect("http")] {
        // `ss` shows a listener's backlog in its Send-Q column.
        let out = Command::new("ss")
            .args(["-ltnH", &format!("sport = :{}", addr.port())])
            .output()
            .expect("run ss (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout);
        let backlogs: Vec<u32> = text
            .lines()
            .filter_map(|line| line.split_whitespace().nth(2)?.parse().ok())
            .collect();
        assert_eq!(backlogs, vec![somaxconn; 2], "{addr}: ss says\n{text}");
    }
}
