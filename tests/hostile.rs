//! Hostile clients, load and a failing consumer against the real binary with `--cores 2`, on
//! 127.0.0.1 only, each bounded in count and time. After every scenario a normal client still
//! publishes and consumes, and the broker's RSS (VmRSS from /proc) is back within a bound.
//!
//! Figures are printed as `FIGURE ...` lines (see them with `--nocapture`); RELIABILITY.md
//! records them. The long versions (10,000 idle connections, bigger load) are in
//! `scripts/soak.sh`, which sets the `NSQD_SOAK_*` variables read here. SIGTERM under load
//! with a restart is here; disk faults (full disk, read-only data directory, segments
//! corrupt at start-up or damaged while serving) and kill -9 with `--durable-ack` are in
//! `tests/disk.rs`.

mod common;

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use common::{Broker, Client, Frame, unique};

/// RSS the broker may keep above its idle baseline once a scenario is over (allocator caches,
/// topics and channels the scenario created).
const SETTLED_RSS_SLACK_KIB: u64 = 48 * 1024;

/// A count from the environment (the soak script scales the scenarios up), else `default`.
fn scaled(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The broker's resident set in KiB.
fn rss_kib(b: &Broker) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Open file descriptors of the broker.
fn fd_count(b: &Broker) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", b.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The broker's fd count once closed connections are gone (stable for 300 ms).
fn settled_fds(b: &Broker) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = fd_count(b);
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(300));
        let now = fd_count(b);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

fn start() -> Broker {
    Broker::with_cores(2, &[])
}

/// A normal producer and consumer still work: publish, subscribe, receive, FIN.
fn assert_healthy(b: &Broker) {
    let topic = unique("healthy");
    let mut p = b.client();
    p.publish(&topic, b"still here");
    let mut c = b.client();
    c.sub(&topic, "c");
    c.line("RDY 1");
    let m = c.expect_message();
    assert_eq!(m.body, b"still here");
    c.line(&format!("FIN {}", m.id));
    c.line("NOP");
    c.expect_silence(Duration::from_millis(50));
}

/// Baseline RSS after a first round trip (so lazily created state is counted).
fn baseline(b: &Broker) -> u64 {
    assert_healthy(b);
    rss_kib(b)
}

/// Waits (bounded) for the RSS to come back under `bound`, and returns it.
fn settled_rss(b: &Broker, bound: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rss = rss_kib(b);
        if rss <= bound || Instant::now() > deadline {
            return rss;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// After a scenario: a normal client works and RSS is back near the baseline.
fn assert_recovered(b: &Broker, base: u64, scenario: &str) {
    assert_recovered_within(b, base, 0, scenario);
}

/// Like [`assert_recovered`], allowing `retained_kib` more than the usual slack (what the
/// allocator keeps from a scenario's legitimate peak).
fn assert_recovered_within(b: &Broker, base: u64, retained_kib: u64, scenario: &str) {
    assert_healthy(b);
    let bound = base + retained_kib + SETTLED_RSS_SLACK_KIB;
    let rss = settled_rss(b, bound);
    eprintln!("FIGURE {scenario}: rss baseline {base} KiB, after {rss} KiB (bound {bound} KiB)");
    assert!(
        rss <= bound,
        "{scenario}: RSS {rss} KiB did not settle under {bound} KiB"
    );
}

/// Reads until the broker closes the connection; true if it did within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Pieces that steer random input into the decoder's deeper paths.
const FRAGMENTS: &[&[u8]] = &[
    b"PUB t\n",
    b"MPUB t\n",
    b"DPUB t 10\n",
    b"SUB t c\n",
    b"RDY 5\n",
    b"FIN 0123456789abcdef\n",
    b"REQ 0123456789abcdef 0\n",
    b"TOUCH 0123456789abcdef\n",
    b"IDENTIFY\n",
    b"AUTH\n",
    b"CLS\n",
    b"NOP\n",
    b"\x00\x00\x00\x05",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\n",
    b" ",
];

#[test]
fn random_bytes_after_magic_close_cleanly() {
    let b = start();
    let base = baseline(&b);
    let n = scaled("NSQD_SOAK_RANDOM_CONNS", 300);
    let mut rng = SmallRng::seed_from_u64(0x6e73_7164);
    let started = Instant::now();
    let mut still_open = 0;
    for _ in 0..n {
        let mut input = b"  V2".to_vec();
        while input.len() < rng.gen_range(8..4096) {
            if rng.gen_bool(0.3) {
                input.extend_from_slice(FRAGMENTS[rng.gen_range(0..FRAGMENTS.len())]);
            } else {
                let len = rng.gen_range(1..64);
                input.extend((0..len).map(|_| rng.r#gen::<u8>()));
            }
        }
        let mut c = Client::connect_raw(b.tcp);
        // The broker may close mid-write; that is an outcome, not a test failure.
        let _ = c.stream.write_all(&input);
        let _ = c.stream.shutdown(Shutdown::Write);
        if !closed_within(&mut c.stream, Duration::from_secs(5)) {
            still_open += 1;
        }
    }
    eprintln!(
        "FIGURE random_bytes: {n} connections in {:?}, {still_open} left open after EOF",
        started.elapsed()
    );
    assert_eq!(
        still_open, 0,
        "connections must close once the client's stream ends"
    );
    assert_recovered(&b, base, "random_bytes");
}

#[test]
fn one_mebibyte_line_is_dropped_at_16k() {
    let b = start();
    let base = baseline(&b);
    for first in [&b"PUB "[..], b"", b"IDENTIFY"] {
        let mut c = b.client();
        let mut line = first.to_vec();
        line.resize(1 << 20, b'A');
        let _ = c.stream.write_all(&line);
        assert!(
            closed_within(&mut c.stream, Duration::from_secs(10)),
            "a 1 MiB line must drop the connection"
        );
    }
    assert_recovered(&b, base, "long_line");
}

#[test]
fn length_prefixes_zero_negative_and_huge() {
    let b = start();
    let base = baseline(&b);
    let cases: &[(&str, i32, &str)] = &[
        ("PUB t", 0, "E_BAD_MESSAGE PUB invalid message body size 0"),
        (
            "PUB t",
            -1,
            "E_BAD_MESSAGE PUB invalid message body size -1",
        ),
        (
            "PUB t",
            i32::MIN,
            "E_BAD_MESSAGE PUB invalid message body size -2147483648",
        ),
        (
            "PUB t",
            i32::MAX,
            "E_BAD_MESSAGE PUB message too big 2147483647 > 1048576",
        ),
        (
            "DPUB t 1",
            i32::MAX,
            "E_BAD_MESSAGE DPUB message too big 2147483647 > 1048576",
        ),
        ("MPUB t", 0, "E_BAD_BODY MPUB invalid body size 0"),
        ("MPUB t", -1, "E_BAD_BODY MPUB invalid body size -1"),
        (
            "MPUB t",
            i32::MAX,
            "E_BAD_BODY MPUB body too big 2147483647 > 5242880",
        ),
        ("IDENTIFY", 0, "E_BAD_BODY IDENTIFY invalid body size 0"),
        ("IDENTIFY", -1, "E_BAD_BODY IDENTIFY invalid body size -1"),
        (
            "IDENTIFY",
            i32::MAX,
            "E_BAD_BODY IDENTIFY body too big 2147483647 > 5242880",
        ),
        (
            "AUTH",
            i32::MAX,
            "E_BAD_BODY AUTH body too big 2147483647 > 5242880",
        ),
    ];
    for &(line, size, error) in cases {
        let mut c = b.client();
        let mut bytes = format!("{line}\n").into_bytes();
        bytes.extend_from_slice(&size.to_be_bytes());
        c.send(&bytes);
        c.expect_error(error);
        c.expect_closed();
    }
    // Inside an MPUB body: message count and message sizes.
    let inner: &[(&[i32], &str)] = &[
        (&[0], "E_BAD_BODY MPUB invalid message count 0"),
        (&[-1], "E_BAD_BODY MPUB invalid message count -1"),
        (
            &[i32::MAX],
            "E_BAD_BODY MPUB invalid message count 2147483647",
        ),
        (&[1, 0], "E_BAD_MESSAGE MPUB invalid message(0) body size 0"),
        (
            &[1, -1],
            "E_BAD_MESSAGE MPUB invalid message(0) body size -1",
        ),
        (
            &[1, i32::MAX],
            "E_BAD_MESSAGE MPUB message too big 2147483647 > 1048576",
        ),
    ];
    for &(ints, error) in inner {
        let mut c = b.client();
        let mut bytes = b"MPUB t\n".to_vec();
        bytes.extend_from_slice(&100i32.to_be_bytes());
        for i in ints {
            bytes.extend_from_slice(&i.to_be_bytes());
        }
        c.send(&bytes);
        c.expect_error(error);
        c.expect_closed();
    }
    assert_recovered(&b, base, "length_prefixes");
}

#[test]
fn mpub_lying_about_its_size_is_refused_at_max_body_size() {
    let b = start();
    let base = baseline(&b);
    // Declares 8 bytes, then streams 1 MiB messages: nsqd would buffer all of them.
    let mut c = b.client();
    let mut head = b"MPUB t\n".to_vec();
    head.extend_from_slice(&8i32.to_be_bytes());
    head.extend_from_slice(&1000i32.to_be_bytes());
    c.send(&head);
    let mut message = 1_048_576i32.to_be_bytes().to_vec();
    message.extend_from_slice(&vec![b'x'; 1_048_576]);
    for _ in 0..6 {
        if c.stream.write_all(&message).is_err() {
            break;
        }
    }
    c.expect_error("E_BAD_BODY MPUB body too big 5242904 > 5242880");
    c.expect_closed();
    assert_recovered(&b, base, "mpub_lying_size");
}

#[test]
fn half_a_body_then_silence() {
    let b = start();
    let base = baseline(&b);
    // Many stalled publishers hold only their partial bodies and do not block anyone.
    let stalled: Vec<Client> = (0..200)
        .map(|_| {
            let mut c = b.client();
            let mut bytes = b"PUB t\n".to_vec();
            bytes.extend_from_slice(&1000i32.to_be_bytes());
            bytes.extend_from_slice(&[b'x'; 500]);
            c.send(&bytes);
            c
        })
        .collect();
    assert_healthy(&b);
    // With a 1 s heartbeat the read deadline (2 × heartbeat) drops a stalled client.
    let mut c = b.client();
    assert_eq!(c.identify(r#"{"heartbeat_interval":1000}"#), b"OK");
    let mut bytes = b"PUB t\n".to_vec();
    bytes.extend_from_slice(&1000i32.to_be_bytes());
    bytes.extend_from_slice(&[b'x'; 500]);
    c.send(&bytes);
    let t = Instant::now();
    assert!(
        closed_within(&mut c.stream, Duration::from_secs(8)),
        "a stalled client must hit the read deadline"
    );
    eprintln!(
        "FIGURE half_body: stalled client dropped after {:?} (heartbeat 1 s)",
        t.elapsed()
    );
    drop(stalled);
    assert_recovered(&b, base, "half_body");
}

/// Opens `n` connections that send nothing (half of them not even the magic) and reports the
/// broker's RSS per connection.
fn idle_connections(n: usize) {
    let b = start();
    let base = baseline(&b);
    let fds_before = settled_fds(&b);
    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::connect_raw(b.tcp);
        if i % 2 == 0 {
            c.send(b"  V2");
        }
        conns.push(c);
    }
    // Until every connection is served: one fd per connection, V2 or not (the reader and
    // writer tasks share the socket).
    let want = fds_before + n;
    let deadline = Instant::now() + Duration::from_secs(30);
    while fd_count(&b) < want && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let fds = fd_count(&b);
    let held_rss = rss_kib(&b);
    let per_conn = (held_rss.saturating_sub(base)) * 1024 / n as u64;
    eprintln!(
        "FIGURE idle_connections: {n} held in {:?}; broker fds {fds_before} -> {fds}; rss {base} -> {held_rss} KiB = {per_conn} bytes/connection",
        started.elapsed()
    );
    assert!(fds >= want, "broker holds {fds} fds, expected {want}");
    // A few descriptors of slack for whatever else the broker opens meanwhile; a second one
    // per V2 connection would be n / 2 more.
    assert!(
        fds <= want + 8,
        "broker holds {fds} fds for {n} connections, expected {want}: more than one per connection"
    );
    assert_healthy(&b);
    // They are all still open: a probe on a sample sees no EOF.
    for c in conns.iter_mut().step_by(97) {
        c.stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut byte = [0u8; 1];
        if let Ok(0) = c.stream.read(&mut byte) {
            panic!("an idle connection was closed");
        }
    }
    assert!(per_conn < 64 * 1024, "{per_conn} bytes per idle connection");
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count(&b) > fds_before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        fd_count(&b),
        fds_before,
        "fds leaked after idle connections closed"
    );
    assert_recovered(&b, base, "idle_connections");
}

#[test]
fn idle_connections_that_send_nothing() {
    idle_connections(scaled("NSQD_SOAK_IDLE_CONNS", 2000));
}

#[test]
fn connect_close_churn_leaks_nothing() {
    let b = start();
    let base = baseline(&b);
    let fds_before = settled_fds(&b);
    let n = scaled("NSQD_SOAK_CHURN", 3000);
    let started = Instant::now();
    for i in 0..n {
        let mut c = Client::connect_raw(b.tcp);
        match i % 4 {
            0 => {}
            1 => c.send(b"  V2"),
            2 => c.send(b"  V2SUB churn c\nRDY 10\n"),
            _ => c.send(b"  V2PUB churn\n\x00\x00\x00\x10abc"),
        }
        // Sometimes an abortive close (RST) instead of FIN.
        if i % 3 == 0 {
            let _ = nix::sys::socket::setsockopt(
                &c.stream,
                nix::sys::socket::sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while fd_count(&b) > fds_before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let fds = fd_count(&b);
    eprintln!(
        "FIGURE churn: {n} connect/close in {:?}; broker fds {fds_before} -> {fds}",
        started.elapsed()
    );
    assert!(fds <= fds_before, "fds leaked after connect/close churn");
    assert_recovered(&b, base, "churn");
}

#[test]
fn consumer_that_never_reads_is_bounded_and_others_keep_receiving() {
    stuck_consumer(&[], scaled("NSQD_SOAK_STUCK_MESSAGES", 8000), 0);
}

/// The same through the disk queue (`--mem-queue-size=0`). Each message read back from disk and
/// held in flight by the stuck consumer used to pin a whole 256 KiB read chunk (20,000 x 1 KiB:
/// 285 MiB; fixed in 4a9d788, bodies are now owned copies). What remains after the run is heap
/// the allocator keeps from the peak, where every body existed twice (written and read back).
#[test]
fn consumer_that_never_reads_with_disk_backlog_is_bounded() {
    let n = 20_000;
    stuck_consumer(&["--mem-queue-size=0"], n, 2 * n as u64);
}

/// A consumer with RDY 2500 that never reads, another consumer on its channel and one on
/// another channel, while `n` messages of 1 KiB are published; RSS must settle within
/// `retained_kib` more than the usual slack.
fn stuck_consumer(args: &[&str], n: usize, retained_kib: u64) {
    let b = Broker::with_cores(2, args);
    let base = baseline(&b);
    let topic = unique("stuck");
    let mut stuck = b.client();
    stuck.sub(&topic, "c");
    stuck.line("RDY 2500");
    let mut fast = b.client();
    fast.sub(&topic, "c");
    fast.line("RDY 200");
    let mut other = b.client();
    other.sub(&topic, "other");
    other.line("RDY 200");
    thread::sleep(Duration::from_millis(100));

    let body = vec![b'm'; 1024];
    let producer = {
        let addr = b.tcp;
        let topic = topic.clone();
        thread::spawn(move || {
            let mut p = Client::connect(addr);
            for _ in 0..n / 100 {
                let bodies: Vec<&[u8]> = (0..100).map(|_| &body[..]).collect();
                p.mpub(&topic, &bodies);
            }
        })
    };
    let drain = |c: &mut Client, want: usize| {
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while got < want && Instant::now() < deadline {
            if let Frame::Message(m) = c.next() {
                got += 1;
                c.line(&format!("FIN {}", m.id));
            }
        }
        got
    };
    let other_thread = thread::spawn(move || {
        let got = drain(&mut other, n);
        (other, got)
    });
    // The stuck consumer holds at most RDY (2500) in flight; everything else goes to `fast`.
    let fast_got = drain(&mut fast, n - 2500);
    producer.join().unwrap();
    let (_other, other_got) = other_thread.join().unwrap();
    let peak = rss_kib(&b);
    eprintln!(
        "FIGURE stuck_consumer: {n} x 1 KiB published; same channel fast consumer got {fast_got}, other channel got {other_got}; rss {base} -> {peak} KiB"
    );
    assert_eq!(
        fast_got,
        n - 2500,
        "the healthy consumer on the channel starves"
    );
    assert_eq!(other_got, n, "another channel's consumer starves");
    fast.expect_silence(Duration::from_millis(300));
    // Bound: the stuck consumer's 2,500 messages, in the channel and once more in its output
    // buffer, plus slack; nothing proportional to what was published.
    assert!(
        peak <= base + 2 * 2500 * 2 + 64 * 1024,
        "RSS {peak} KiB with one stuck consumer"
    );
    drop(stuck);
    assert_recovered_within(&b, base, retained_kib, "stuck_consumer");
}

/// A few messages kept for long (DPUB with a long delay, REQ with a long delay as go-nsq's
/// backoff does, TOUCHed by a consumer working on them) must not make the broker keep
/// everything published around them. A body read from a publisher is a slice of that
/// connection's read buffer, so each such message used to pin its whole buffer: here 60–100
/// MiB for each of the three kinds (nsqd keeps each message on its own).
#[test]
fn sparse_long_held_messages_do_not_pin_what_was_published_with_them() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let b = start();
    let base = baseline(&b);
    let topic = unique("sparse");
    let (n, every) = (50_000usize, 100usize);
    let mut c = b.consumer(&topic, "c", 1000);
    let seen = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (addr, topic, seen) = (b.tcp, topic.clone(), seen.clone());
        thread::spawn(move || {
            let body = vec![b's'; 2048];
            let bodies: Vec<&[u8]> = (0..100).map(|_| &body[..]).collect();
            let mut p = Client::connect(addr);
            let deadline = Instant::now() + Duration::from_secs(60);
            for sent in (0..n).step_by(100) {
                // Only a little ahead of the consumer: what the broker holds at any time stays
                // small, so its RSS afterwards shows what stayed pinned, not a queue's peak.
                while sent > seen.load(Ordering::Relaxed) + 3000 && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(1));
                }
                p.mpub(&topic, &bodies);
                p.with_body(&format!("DPUB {topic} 3600000"), &body);
                p.expect_ok();
            }
        })
    };
    let mut touched = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        let Frame::Message(m) = c.next() else {
            continue;
        };
        let count = seen.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_multiple_of(every) {
            c.line(&format!("REQ {} 3600000", m.id));
        } else if count % every == every / 2 && touched < 300 {
            c.line(&format!("TOUCH {}", m.id));
            touched += 1;
        } else {
            c.line(&format!("FIN {}", m.id));
        }
    }
    producer.join().unwrap();
    assert_eq!(
        seen.load(Ordering::Relaxed),
        n,
        "every message delivered once"
    );
    c.line("NOP");
    c.expect_silence(Duration::from_millis(200));
    // Everything is finished but 1,000 deferred and 300 touched messages (2.6 MiB of bodies).
    assert_recovered(&b, base, "sparse_long_held");
    drop(c);
}

/// A message queued for long (here in a channel nobody consumes) must not keep what was
/// published with it either. The publisher pipelines bursts of 60 PUBs of 1 KiB, one of
/// them to the unconsumed topic, and the broker reads each burst into a buffer of up to
/// 64 KiB: 1,600 queued messages used to pin 1,600 such buffers (~100 MiB, nsqd keeps 1.6
/// MiB). A periodic pass now gives a message that stays a body of its own, so only what was
/// published in the last second or so can be pinned.
#[test]
fn sparse_queued_messages_do_not_pin_what_was_published_with_them() {
    const BURSTS: usize = 1600;
    const PER_BURST: usize = 60;
    let b = start();
    let base = baseline(&b);
    let (hot, cold) = (unique("hot"), unique("cold"));
    // The cold topic's channel exists, and nobody consumes it.
    b.client().sub(&cold, "idle");
    let mut consumer = b.consumer(&hot, "c", 2500);
    let mut burst = Vec::new();
    for i in 0..PER_BURST {
        let (topic, fill) = if i == PER_BURST / 2 {
            (&cold, b'c')
        } else {
            (&hot, b'h')
        };
        burst.extend_from_slice(format!("PUB {topic}\n").as_bytes());
        burst.extend_from_slice(&1024u32.to_be_bytes());
        burst.extend_from_slice(&[fill; 1024]);
    }
    let producer = {
        let addr = b.tcp;
        thread::spawn(move || {
            let mut p = Client::connect(addr);
            let start = Instant::now();
            for k in 0..BURSTS {
                // 200 bursts a second: 8 s, long against the settle pass.
                let due = start + Duration::from_millis(5 * k as u64);
                thread::sleep(due.saturating_duration_since(Instant::now()));
                p.send(&burst);
                for _ in 0..PER_BURST {
                    p.expect_ok();
                }
            }
        })
    };
    let want = BURSTS * (PER_BURST - 1);
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < want && Instant::now() < deadline {
        if let Frame::Message(m) = consumer.next() {
            consumer.line(&format!("FIN {}", m.id));
            got += 1;
        }
    }
    producer.join().unwrap();
    assert_eq!(got, want, "every hot message delivered");
    // Two settle passes.
    thread::sleep(Duration::from_millis(1500));
    assert_recovered(&b, base, "sparse_queued");
    // What stayed is intact.
    let mut c = b.consumer(&cold, "idle", 2500);
    for _ in 0..BURSTS {
        let m = c.expect_message();
        assert_eq!(m.body, vec![b'c'; 1024]);
        c.line(&format!("FIN {}", m.id));
    }
}

/// Writes `chunk` up to `times` times, stopping when a write blocks for 3 s; returns how many
/// chunks went out.
fn write_until_blocked(
    stream: &TcpStream,
    chunk: Vec<u8>,
    times: usize,
) -> thread::JoinHandle<usize> {
    let mut s = stream.try_clone().unwrap();
    thread::spawn(move || {
        s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        (0..times)
            .take_while(|_| s.write_all(&chunk).is_ok())
            .count()
    })
}

#[test]
fn publisher_that_never_reads_its_replies_is_paused() {
    let b = start();
    let base = baseline(&b);
    let topic = unique("noread");
    // Up to 2,000,000 PUBs (to an ephemeral topic, so none is refused) with no reply read:
    // publishes wait for their owner core, and the broker stops reading once 1 MiB of OKs waits.
    let mut p = b.client();
    let mut one = format!("PUB {topic}#ephemeral\n").into_bytes();
    one.extend_from_slice(&3i32.to_be_bytes());
    one.extend_from_slice(b"abc");
    let pubs_sent = write_until_blocked(&p.stream, one.repeat(10_000), 200)
        .join()
        .unwrap()
        * 10_000;
    let peak = rss_kib(&b);
    eprintln!(
        "FIGURE non_reading_publisher: writes blocked after {pubs_sent} PUBs; rss {base} -> {peak} KiB"
    );
    assert!(
        pubs_sent < 2_000_000,
        "the broker kept reading a client that reads nothing"
    );
    assert!(peak <= base + 64 * 1024, "RSS {peak} KiB");
    for _ in 0..1000 {
        p.expect_ok();
    }
    drop(p);
    assert_recovered(&b, base, "non_reading_publisher");
}

/// FIN/REQ/TOUCH/RDY for a topic owned by another core go out over the mesh without waiting,
/// so a client that floods them (and never reads its E_FIN_FAILED frames) is never paused:
/// with 2,000,000 failing FINs the broker reached 270 MB RSS. Four subscribers, two per owner
/// core, make a cross-core pair near certain (each connection's core is the kernel's choice;
/// connection affinity is off so the subscribers stay where they landed).
#[test]
fn channel_op_flood_from_another_core_is_bounded() {
    let b = Broker::with_cores(2, &["--connection-affinity=false"]);
    let base = baseline(&b);
    let mut topics = Vec::new();
    while topics.len() < 4 {
        let t = unique("flood");
        let owner = nsqd_uring::mesh::owner_of(&t, 2);
        if topics.iter().filter(|(_, o)| *o == owner).count() < 2 {
            topics.push((t, owner));
        }
    }
    let clients: Vec<Client> = topics
        .iter()
        .map(|(t, _)| {
            let mut c = b.client();
            c.sub(t, "c");
            c
        })
        .collect();
    let fins = "FIN 0123456789abcdef\n".repeat(10_000).into_bytes();
    let writers: Vec<_> = clients
        .iter()
        .map(|c| write_until_blocked(&c.stream, fins.clone(), 200))
        .collect();
    let sent: Vec<usize> = writers
        .into_iter()
        .map(|w| w.join().unwrap() * 10_000)
        .collect();
    let peak = rss_kib(&b);
    eprintln!(
        "FIGURE channel_op_flood: writes blocked after {sent:?} FINs; rss {base} -> {peak} KiB"
    );
    assert!(
        sent.iter().all(|&n| n < 2_000_000),
        "the broker kept reading: {sent:?}"
    );
    assert!(peak <= base + 64 * 1024, "RSS {peak} KiB");
    drop(clients);
    assert_recovered(&b, base, "channel_op_flood");
}

#[test]
fn identify_with_absurd_values() {
    let b = start();
    let base = baseline(&b);
    let deep = format!(
        "{{\"client_id\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let long = format!("{{\"client_id\":\"{}\"}}", "x".repeat(4 << 20));
    let cases: Vec<(String, Option<&str>)> = vec![
        (
            r#"{"heartbeat_interval":9223372036854775807}"#.into(),
            Some("E_BAD_BODY IDENTIFY heartbeat interval (9223372036854775807) is invalid"),
        ),
        (
            r#"{"heartbeat_interval":-2}"#.into(),
            Some("E_BAD_BODY IDENTIFY heartbeat interval (-2) is invalid"),
        ),
        (
            r#"{"output_buffer_size":-9223372036854775808}"#.into(),
            Some("E_BAD_BODY IDENTIFY output buffer size (-9223372036854775808) is invalid"),
        ),
        (
            r#"{"output_buffer_timeout":9223372036854775807}"#.into(),
            Some("E_BAD_BODY IDENTIFY output buffer timeout (9223372036854775807) is invalid"),
        ),
        (
            r#"{"msg_timeout":1000000000000000000}"#.into(),
            Some("E_BAD_BODY IDENTIFY msg timeout (1000000000000000000) is invalid"),
        ),
        (
            r#"{"sample_rate":4294967296}"#.into(),
            Some("E_BAD_BODY IDENTIFY failed to decode JSON body"),
        ),
        (
            r#"{"msg_timeout":1e400}"#.into(),
            Some("E_BAD_BODY IDENTIFY failed to decode JSON body"),
        ),
        (
            r#"{"deflate_level":99999999999,"feature_negotiation":true}"#.into(),
            None,
        ),
        (deep, Some("E_BAD_BODY IDENTIFY failed to decode JSON body")),
        (long, None),
        (
            "\u{0}\u{ffff}".into(),
            Some("E_BAD_BODY IDENTIFY failed to decode JSON body"),
        ),
    ];
    for (json, error) in cases {
        let mut c = b.client();
        c.with_body("IDENTIFY", json.as_bytes());
        match error {
            Some(e) => {
                c.expect_error(e);
                c.expect_closed();
            }
            None => match c.next() {
                Frame::Response(_) => {}
                other => panic!("IDENTIFY {:.60} refused: {other:?}", json),
            },
        }
    }
    assert_recovered(&b, base, "identify_absurd");
}

/// The issue's load shape: one topic with `channels` channels, `publishers` publisher threads
/// (MPUB batches of 50, `per_publisher` messages each) and `consumers` consumer threads;
/// every message must be counted on every channel, exactly once.
///
/// NSQ allows one SUB per connection, so when there are fewer consumers than channels they
/// cannot all be on every channel at once. Consumer `k` works through channels `k`,
/// `k + consumers`, `k + 2 × consumers`, … one connection at a time: while the publishers run,
/// the first `consumers` channels are consumed live and the others (created before the first
/// publish by a SUB whose connection then closes) buffer every message, as a channel without
/// consumers does; a consumer moves on to its next channel once it has counted every message
/// on the current one. So at most `consumers` consumer connections are open at any time, and
/// every channel is drained in the end. A duplicate would need a message timeout (none
/// happens), so none is expected.
fn fan_out(
    channels: usize,
    publishers: usize,
    consumers: usize,
    per_publisher: usize,
    within: Duration,
) {
    let b = Broker::with_cores(2, &["--mem-queue-size=1000000"]);
    let base = baseline(&b);
    let topic = unique("fanout");
    let total = publishers * per_publisher;
    let consumers = consumers.min(channels);
    // Channels without a consumer yet exist before the first publish, so they get every message.
    for ch in consumers..channels {
        let mut c = b.client();
        c.sub(&topic, &format!("ch{ch}"));
    }
    let deadline = Instant::now() + within;
    let workers: Vec<_> = (0..consumers)
        .map(|k| {
            let mut first = b.client();
            first.sub(&topic, &format!("ch{k}"));
            let (addr, topic) = (b.tcp, topic.clone());
            thread::spawn(move || {
                let mut counted = vec![(k, count_channel(first, total, deadline))];
                for ch in (k + consumers..channels).step_by(consumers) {
                    let mut c = Client::connect(addr);
                    c.sub(&topic, &format!("ch{ch}"));
                    counted.push((ch, count_channel(c, total, deadline)));
                }
                counted
            })
        })
        .collect();
    let started = Instant::now();
    let pubs: Vec<_> = (0..publishers)
        .map(|p| {
            let (addr, topic) = (b.tcp, topic.clone());
            thread::spawn(move || publish_batches(addr, &topic, p, per_publisher))
        })
        .collect();
    for p in pubs {
        p.join().unwrap();
    }
    let published = started.elapsed();
    let mut per_channel: Vec<HashMap<Vec<u8>, u32>> = vec![HashMap::new(); channels];
    for w in workers {
        for (ch, counts) in w.join().unwrap() {
            per_channel[ch] = counts;
        }
    }
    let elapsed = started.elapsed();
    let lost: usize = per_channel.iter().map(|c| total - c.len()).sum();
    let duplicated: usize = per_channel
        .iter()
        .flat_map(|c| c.values())
        .map(|&n| n as usize - 1)
        .sum();
    let delivered: usize = per_channel
        .iter()
        .flat_map(|c| c.values())
        .map(|&n| n as usize)
        .sum();
    eprintln!(
        "FIGURE fan_out: {channels} channels x {total} messages from {publishers} publishers, {consumers} consumers (one channel at a time each); sent {total}, acked {total}, published in {published:?}; delivered {delivered} in {elapsed:?} ({:.0}/s); lost {lost}, duplicated {duplicated}",
        delivered as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(lost, 0, "messages lost on some channel");
    assert_eq!(
        duplicated, 0,
        "no timeout happened, so no duplicate is expected"
    );
    // The allocator keeps what the peak backlog used: up to one queued message per message
    // per channel (about 64 bytes of header; the body is shared), in a queue whose capacity
    // may have doubled, so 128 bytes each beyond the usual slack. Most channels hold their
    // whole backlog at once here (those waiting for a consumer), about 660 MiB at the soak's
    // 100 × 100,000.
    let backlog_kib = (total * channels * 128 / 1024) as u64;
    assert_recovered_within(&b, base, backlog_kib, "fan_out");
}

/// Publisher `p` of [`fan_out`]: `n` messages `"<p>-<i>"` in MPUB batches of 50.
fn publish_batches(addr: std::net::SocketAddr, topic: &str, p: usize, n: usize) {
    let mut c = Client::connect(addr);
    let mut sent = 0;
    while sent < n {
        let batch: Vec<Vec<u8>> = (sent..(sent + 50).min(n))
            .map(|i| format!("{p}-{i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = batch.iter().map(|v| &v[..]).collect();
        c.mpub(topic, &refs);
        sent += batch.len();
    }
}

/// Consumes one channel with RDY 100 until `want` distinct bodies have arrived (or the
/// connection fails, or `deadline` passes), FINing each (flushed whenever the input runs dry)
/// and answering heartbeats; returns how often each body arrived. The connection closes
/// when it returns, with nothing left in flight.
fn count_channel(c: Client, want: usize, deadline: Instant) -> HashMap<Vec<u8>, u32> {
    let stream = c.stream;
    let left = deadline.saturating_duration_since(Instant::now());
    // A read timing out mid-frame would lose the frame's start: the only timeout is the
    // deadline, after which the counts are final.
    stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut w = BufWriter::new(stream.try_clone().unwrap());
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let mut counts: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut head = [0u8; 8];
    let _ = writeln!(w, "RDY 100");
    while counts.len() < want && Instant::now() < deadline {
        if r.buffer().is_empty() {
            let _ = w.flush();
        }
        let frame = r.read_exact(&mut head).and_then(|()| {
            let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
            let mut data = vec![0u8; size - 4];
            r.read_exact(&mut data).map(|()| data)
        });
        let Ok(data) = frame else { break };
        if head[4..] == 2u32.to_be_bytes() {
            *counts.entry(data[26..].to_vec()).or_default() += 1;
            let _ = w.write_all(b"FIN ");
            let _ = w.write_all(&data[10..26]);
            let _ = w.write_all(b"\n");
        } else if data == b"_heartbeat_" {
            let _ = w.write_all(b"NOP\n");
        }
    }
    let _ = w.flush();
    counts
}

#[test]
fn fan_out_to_100_channels_counts_every_message() {
    fan_out(
        100,
        16,
        64,
        scaled("NSQD_SOAK_FANOUT_PER_PUBLISHER", 125),
        Duration::from_secs(scaled("NSQD_SOAK_FANOUT_SECS", 30) as u64),
    );
}

#[test]
fn killed_consumer_messages_are_redelivered_after_msg_timeout() {
    let b = start();
    let base = baseline(&b);
    let topic = unique("killed");
    let mut a = b.client();
    assert_eq!(a.identify(r#"{"msg_timeout":1000}"#), b"OK");
    a.sub(&topic, "c");
    a.line("RDY 100");
    let mut p = b.client();
    let first: Vec<Vec<u8>> = (0..100).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = first.iter().map(|v| &v[..]).collect();
    p.mpub(&topic, &refs);
    let mut in_flight_at_a = Vec::new();
    for _ in 0..100 {
        in_flight_at_a.push(a.expect_message().body);
    }
    let mut c = b.client();
    c.sub(&topic, "c");
    c.line("RDY 200");
    let second: Vec<Vec<u8>> = (100..150).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = second.iter().map(|v| &v[..]).collect();
    p.mpub(&topic, &refs);
    // Kill A mid-flight: an abortive close with 100 messages unacknowledged.
    let killed_at = Instant::now();
    let _ = nix::sys::socket::setsockopt(
        &a.stream,
        nix::sys::socket::sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
    drop(a);
    let mut counts: HashMap<Vec<u8>, u16> = HashMap::new();
    let mut redelivered = 0;
    let mut last = Duration::ZERO;
    while counts.len() < 150 {
        let m = c.expect_message();
        if m.attempts > 1 {
            redelivered += 1;
            last = killed_at.elapsed();
        }
        *counts.entry(m.body).or_default() += 1;
        c.line(&format!("FIN {}", m.id));
    }
    c.line("NOP");
    c.expect_silence(Duration::from_millis(1500));
    let sent = 150;
    let acked = counts.len();
    let deliveries = in_flight_at_a.len() + counts.values().map(|&n| n as usize).sum::<usize>();
    eprintln!(
        "FIGURE killed_consumer: sent {sent}, delivered to the killed consumer 100 (never acked), redelivered {redelivered} (the last {last:?} after the kill, msg_timeout 1 s), acked {acked}, lost {}, duplicate deliveries {}",
        sent - acked,
        deliveries - sent
    );
    assert_eq!(acked, sent, "a message was lost");
    assert_eq!(
        redelivered, 100,
        "the killed consumer's in-flight messages come back"
    );
    assert!(
        counts.values().all(|&n| n == 1),
        "the survivor got a message twice"
    );
    assert_eq!(
        deliveries - sent,
        100,
        "duplicates are exactly the redeliveries"
    );
    assert!(last < Duration::from_secs(5));
    assert_recovered(&b, base, "killed_consumer");
}

/// What one side of the SIGTERM scenario saw.
#[derive(Default)]
struct Seen {
    acked: Vec<Vec<u8>>,
    finished: Vec<Vec<u8>>,
    unfinished: Vec<Vec<u8>>,
}

/// Publishes one message at a time until the connection fails, recording each acknowledged body.
fn publish_until_closed(addr: std::net::SocketAddr, topic: String, p: usize) -> Vec<Vec<u8>> {
    let mut c = Client::connect(addr);
    let mut acked = Vec::new();
    for i in 0.. {
        let body = format!("p{p}-{i}").into_bytes();
        let mut cmd = format!("PUB {topic}\n").into_bytes();
        cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
        cmd.extend_from_slice(&body);
        if c.stream.write_all(&cmd).is_err() {
            break;
        }
        match c.try_frame() {
            Ok(Frame::Response(r)) if r == b"OK" => acked.push(body),
            _ => break,
        }
    }
    acked
}

/// Consumes until the connection fails, FINing everything but every 10th of the first 250
/// messages (25 left in flight, so RDY 50 keeps the consumer going).
fn consume_until_closed(mut c: Client) -> Seen {
    let mut seen = Seen::default();
    c.line("RDY 50");
    for n in 0.. {
        match c.try_frame() {
            Ok(Frame::Message(m)) => {
                if n % 10 == 9 && n < 250 {
                    seen.unfinished.push(m.body);
                } else if c
                    .stream
                    .write_all(format!("FIN {}\n", m.id).as_bytes())
                    .is_ok()
                {
                    seen.finished.push(m.body);
                } else {
                    seen.unfinished.push(m.body);
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    seen
}

#[test]
fn sigterm_under_load_then_restart_loses_no_acknowledged_message() {
    let dir = common::temp_dir();
    let data = format!("--data-path={}", dir.display());
    // A small memory queue, so the backlog at shutdown is partly in memory, partly on disk.
    let args = ["--cores=2", data.as_str(), "--mem-queue-size=200"];
    let mut b = Broker::start(&args);
    let topic = unique("sigterm");
    let mut consumer = b.client();
    consumer.sub(&topic, "c");
    let consumer = thread::spawn(move || consume_until_closed(consumer));
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let (addr, topic) = (b.tcp, topic.clone());
            thread::spawn(move || publish_until_closed(addr, topic, p))
        })
        .collect();
    thread::sleep(Duration::from_millis(
        scaled("NSQD_SOAK_SIGTERM_LOAD_MS", 1000) as u64,
    ));
    let status = b
        .terminate(Duration::from_secs(15))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status}\n{}", b.log());
    let mut before = consumer.join().unwrap();
    for p in publishers {
        before.acked.extend(p.join().unwrap());
    }
    drop(b);

    let b = Broker::start(&args);
    let mut c = b.client();
    c.sub(&topic, "c");
    c.line("RDY 500");
    c.stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut recovered: HashMap<Vec<u8>, u32> = HashMap::new();
    while let Ok(frame) = c.try_frame() {
        if let Frame::Message(m) = frame {
            c.line(&format!("FIN {}", m.id));
            *recovered.entry(m.body).or_default() += 1;
        }
    }
    let finished: std::collections::HashSet<&Vec<u8>> = before.finished.iter().collect();
    let lost = before
        .acked
        .iter()
        .filter(|m| !finished.contains(m) && !recovered.contains_key(*m))
        .count();
    let redelivered = before
        .unfinished
        .iter()
        .filter(|m| recovered.contains_key(*m))
        .count();
    let fin_raced = recovered.keys().filter(|m| finished.contains(m)).count();
    let twice = recovered.values().filter(|&&n| n > 1).count();
    eprintln!(
        "FIGURE sigterm_restart: sent+acked {}, delivered before SIGTERM {} (FIN {}, left in flight {}), recovered after restart {} (of them in flight before {redelivered}, FIN'd before but FIN raced the shutdown {fin_raced}); lost {lost}, delivered twice after restart {twice}",
        before.acked.len(),
        before.finished.len() + before.unfinished.len(),
        before.finished.len(),
        before.unfinished.len(),
        recovered.len(),
    );
    assert!(!before.acked.is_empty(), "no load before SIGTERM");
    assert_eq!(
        lost, 0,
        "acknowledged messages lost across SIGTERM + restart"
    );
    assert_eq!(
        redelivered,
        before.unfinished.len(),
        "in-flight messages must come back after the restart"
    );
    assert_eq!(twice, 0);
    drop(b);
}

/// nsqd skips invalid topic and channel names when it loads nsqd.dat; a corrupt or hand-edited
/// file must not make the broker create queue files outside `--data-path`.
#[test]
fn nsqd_dat_with_a_path_in_a_topic_name_writes_nothing_outside_the_data_path() {
    let root = common::temp_dir();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("nsqd.dat"),
        r#"{"topics":[{"name":"../escaped","paused":false,"channels":[{"name":"c","paused":false}]}],"version":"1.3.0"}"#,
    )
    .unwrap();
    let flag = format!("--data-path={}", data.display());
    let mut b = Broker::start(&["--cores=1", &flag]);
    assert_healthy(&b);
    let status = b
        .terminate(Duration::from_secs(15))
        .expect("exit after SIGTERM");
    assert!(status.success());
    let outside: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "data")
        .collect();
    assert!(
        outside.is_empty(),
        "files written outside --data-path: {outside:?}"
    );
}
