//! nsqlookupd registration against a scripted protocol-V1 listener in the test: IDENTIFY with
//! nsqd's fields, REGISTER/UNREGISTER for topics and channels owned by either core, replay after
//! a reconnect, and PING.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Broker, unique, unique_on_core};

/// What the fake lookupd saw on one connection.
#[derive(Debug)]
enum Seen {
    Connected(serde_json::Value),
    Line(String),
    Closed,
}

fn read_line(s: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(1) if b[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into_owned()),
            Ok(1) => line.push(b[0]),
            _ => return None,
        }
    }
}

fn reply(s: &mut TcpStream, data: &[u8]) {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(data);
    let _ = s.write_all(&out);
}

/// A lookupd that answers like nsqlookupd and reports every command; `drop_after` closes the
/// first connection after that many commands to force a reconnect.
fn fake_lookupd(drop_after: usize, http_port: u16) -> (u16, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut magic = [0u8; 4];
                if s.read_exact(&mut magic).is_err() || &magic != b"  V1" {
                    return;
                }
                let mut count = 0;
                while let Some(line) = read_line(&mut s) {
                    if line == "IDENTIFY" {
                        let mut size = [0u8; 4];
                        s.read_exact(&mut size).unwrap();
                        let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
                        s.read_exact(&mut body).unwrap();
                        let _ = tx.send(Seen::Connected(serde_json::from_slice(&body).unwrap()));
                        let identity = format!(
                            r#"{{"tcp_port":4160,"http_port":{http_port},"version":"1.3.0","broadcast_address":"127.0.0.1","hostname":"fake"}}"#
                        );
                        reply(&mut s, identity.as_bytes());
                        continue;
                    }
                    let _ = tx.send(Seen::Line(line));
                    reply(&mut s, b"OK");
                    count += 1;
                    if n == 0 && count == drop_after {
                        let _ = tx.send(Seen::Closed);
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

/// Collects lines until `pred` holds for the collected set or the time runs out.
fn collect_until(
    rx: &mpsc::Receiver<Seen>,
    within: Duration,
    mut pred: impl FnMut(&[Seen]) -> bool,
) -> Vec<Seen> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while !pred(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) => seen.push(s),
            Err(_) => panic!("timed out; saw {seen:?}"),
        }
    }
    seen
}

fn has_line(seen: &[Seen], want: &str) -> bool {
    seen.iter().any(|s| matches!(s, Seen::Line(l) if l == want))
}

#[test]
fn registers_topics_and_channels_of_both_cores_and_replays_after_reconnect() {
    let (port, rx) = fake_lookupd(6, 0);
    let lookupd = format!("--lookupd-tcp-address=127.0.0.1:{port}");
    let b = Broker::start(&["--cores=2", &lookupd, "--broadcast-address=127.0.0.1"]);
    let first = collect_until(&rx, Duration::from_secs(10), |s| !s.is_empty());
    let Seen::Connected(id) = &first[0] else {
        panic!("{first:?}")
    };
    assert_eq!(id["broadcast_address"], "127.0.0.1");
    assert_eq!(id["tcp_port"], b.tcp.port());
    assert_eq!(id["version"], "1.3.0");
    for key in ["hostname", "http_port", "topology_region", "topology_zone"] {
        assert!(id.get(key).is_some(), "IDENTIFY lacks {key}: {id}");
    }
    // Topics owned by each core.
    let topics: Vec<String> = (0..2).map(|o| unique_on_core("reg", o, 2)).collect();
    let mut subs = Vec::new();
    for t in &topics {
        let mut c = b.client();
        c.sub(t, "ch");
        subs.push(c);
    }
    let seen = collect_until(&rx, Duration::from_secs(10), |s| {
        topics.iter().all(|t| {
            has_line(s, &format!("REGISTER {t}")) && has_line(s, &format!("REGISTER {t} ch"))
        })
    });
    let pos = |want: String| {
        seen.iter()
            .position(|s| matches!(s, Seen::Line(l) if *l == want))
            .unwrap()
    };
    for t in &topics {
        assert!(
            pos(format!("REGISTER {t}")) < pos(format!("REGISTER {t} ch")),
            "topic before channel"
        );
    }
    // An ephemeral channel is unregistered when its last consumer leaves.
    let mut e = b.client();
    e.sub(&topics[1], "tmp#ephemeral");
    let eph = format!("{} tmp#ephemeral", topics[1]);
    collect_until(&rx, Duration::from_secs(10), |s| {
        has_line(s, &format!("REGISTER {eph}"))
    });
    drop(e);
    let seen = collect_until(&rx, Duration::from_secs(10), |s| {
        has_line(s, &format!("UNREGISTER {eph}")) || s.iter().any(|x| matches!(x, Seen::Closed))
    });
    // The fake closes the first connection after six commands: the next change reconnects,
    // identifies again and replays every registration.
    if !seen.iter().any(|x| matches!(x, Seen::Closed)) {
        collect_until(&rx, Duration::from_secs(10), |s| {
            s.iter().any(|x| matches!(x, Seen::Closed))
        });
    }
    let mut late = b.client();
    let new_topic = unique("late");
    late.sub(&new_topic, "c");
    let replay = collect_until(&rx, Duration::from_secs(20), |s| {
        s.iter().any(|x| matches!(x, Seen::Connected(_)))
            && topics
                .iter()
                .all(|t| has_line(s, &format!("REGISTER {t} ch")))
            && has_line(s, &format!("REGISTER {new_topic} c"))
    });
    assert!(
        matches!(
            replay
                .iter()
                .find(|x| !matches!(x, Seen::Line(l) if l == "PING")),
            Some(Seen::Connected(_))
        ),
        "{replay:?}"
    );
}

#[test]
fn pings_every_15_seconds() {
    let (port, rx) = fake_lookupd(usize::MAX, 0);
    let lookupd = format!("--lookupd-tcp-address=127.0.0.1:{port}");
    let _b = Broker::start(&["--cores=1", &lookupd]);
    let start = Instant::now();
    collect_until(&rx, Duration::from_secs(25), |s| has_line(s, "PING"));
    let waited = start.elapsed();
    assert!(
        waited > Duration::from_secs(10) && waited < Duration::from_secs(22),
        "{waited:?}"
    );
}

#[test]
fn put_config_nsqlookupd_tcp_addresses_connects_and_registers() {
    let (port, rx) = fake_lookupd(usize::MAX, 0);
    let b = Broker::start(&["--cores=2"]);
    let topic = unique("put");
    let mut c = b.client();
    c.sub(&topic, "ch");
    let http = b.http.expect("HTTP listener");
    let url = format!("http://{http}/config/nsqlookupd_tcp_addresses");
    let body = format!(r#"["127.0.0.1:{port}"]"#);
    let resp = ureq::put(&url).send_string(&body).expect("PUT");
    assert_eq!(resp.into_string().unwrap(), body);
    // The new peer is connected, identified, and told about what already exists.
    let seen = collect_until(&rx, Duration::from_secs(10), |s| {
        has_line(s, &format!("REGISTER {topic} ch"))
    });
    assert!(matches!(seen[0], Seen::Connected(_)), "{seen:?}");
}

/// An nsqlookupd HTTP side answering `/channels?topic=` with `channels`; reports each path.
fn fake_lookupd_http(channels: &'static str) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).map(|n| n == 1).unwrap_or(false) {
                req.push(b[0]);
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let _ = tx.send(line);
            let body = format!(r#"{{"channels":{channels}}}"#);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    (port, rx)
}

#[test]
fn a_new_topic_gets_the_channels_nsqlookupd_knows_before_delivering() {
    let (http_port, paths) = fake_lookupd_http(r#"["pre1","pre2","tmp#ephemeral"]"#);
    let (port, rx) = fake_lookupd(usize::MAX, http_port);
    let lookupd = format!("--lookupd-tcp-address=127.0.0.1:{port}");
    let b = Broker::start(&["--cores=2", &lookupd]);
    collect_until(&rx, Duration::from_secs(10), |s| !s.is_empty());
    // Messages published to a brand-new topic before anyone subscribes: nsqd creates the
    // channels nsqlookupd knows first, so both get every message.
    let topic = unique("pre");
    b.client().mpub(&topic, &[b"a", b"b", b"c"]);
    let asked = paths
        .recv_timeout(Duration::from_secs(10))
        .expect("asked lookupd");
    assert_eq!(asked, format!("GET /channels?topic={topic} HTTP/1.1"));
    for channel in ["pre1", "pre2"] {
        let mut c = b.client();
        c.sub(&topic, channel);
        c.line("RDY 10");
        let got: Vec<Vec<u8>> = (0..3).map(|_| c.expect_message().body).collect();
        assert_eq!(
            got,
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
            "{channel}"
        );
    }
}

/// nsqd asks nsqlookupd for a new topic's channels before the topic delivers anything, and
/// its held messages go to the channels that exist then. Here the query starts as the topic is
/// created, so a channel created a moment after the first one gets none of them (it used to
/// wait for the next 100 ms tick, and every channel created meanwhile got a copy).
#[test]
fn a_new_topics_held_messages_go_to_its_first_channel_only() {
    let (http_port, _paths) = fake_lookupd_http("[]");
    let (port, rx) = fake_lookupd(usize::MAX, http_port);
    let lookupd = format!("--lookupd-tcp-address=127.0.0.1:{port}");
    let b = Broker::start(&["--cores=2", &lookupd]);
    collect_until(&rx, Duration::from_secs(10), |s| !s.is_empty());
    let topic = unique("held");
    b.client().mpub(&topic, &[b"a", b"b", b"c"]);
    std::thread::sleep(Duration::from_millis(50));
    let mut first = b.client();
    first.sub(&topic, "c1");
    let mut second = b.client();
    second.sub(&topic, "c2");
    second.line("RDY 10");
    first.line("RDY 10");
    let got: Vec<Vec<u8>> = (0..3).map(|_| first.expect_message().body).collect();
    assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    b.client().publish(&topic, b"after");
    let next = second.expect_message();
    assert_eq!(next.body, b"after", "c2 got none of the held messages");
}
