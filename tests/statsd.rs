//! statsd push and E2E processing latency, end to end: a UDP socket in the test receives the
//! broker's statsd lines after real traffic, and FINished messages show up as quantiles in
//! `/stats`, `/metrics` and statsd.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{Broker, unique};

/// Every datagram received within `wait`, until `done` says the lines so far suffice.
fn receive_until(
    socket: &UdpSocket,
    wait: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> (Vec<Vec<u8>>, Vec<String>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let (mut packets, mut lines) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline && !done(&lines) {
        if let Ok(n) = socket.recv(&mut buf) {
            let packet = buf[..n].to_vec();
            lines.extend(String::from_utf8_lossy(&packet).lines().map(str::to_string));
            packets.push(packet);
        }
    }
    (packets, lines)
}

/// The values sent for `stat` (after the prefix), in order.
fn values(lines: &[String], prefix: &str, stat: &str, kind: &str) -> Vec<i64> {
    let head = format!("{prefix}{stat}:");
    let tail = format!("|{kind}");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&head)?.strip_suffix(&tail)?.parse().ok())
        .collect()
}

/// Whether the last line received ends a push (`mem.gc_runs` is nsqd's last line).
fn push_complete(lines: &[String]) -> bool {
    lines.last().is_some_and(|l| l.contains("mem.gc_runs:"))
}

fn get(broker: &Broker, path: &str) -> String {
    let url = format!("http://{}{path}", broker.http.expect("HTTP"));
    ureq::get(&url).call().unwrap().into_string().unwrap()
}

#[test]
fn statsd_lines_carry_deltas_and_gauges_from_every_core() {
    let daemon = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = format!("--statsd-address={}", daemon.local_addr().unwrap());
    let broker = Broker::with_cores(
        2,
        &[
            &address,
            "--statsd-interval=1s",
            "--statsd-prefix=test.%s",
            "--broadcast-address=127.0.0.1",
            "--statsd-udp-packet-size=200",
            "--e2e-processing-latency-percentile=0.99",
        ],
    );
    let port = broker.http.expect("HTTP").port();
    let prefix = format!("test.127_0_0_1_{port}.");
    assert_eq!(get(&broker, "/config/statsd_prefix"), prefix);

    // Two topics, so with two cores both shards' parts are in the snapshot.
    let (t1, t2) = (unique("statsd_a"), unique("statsd_b"));
    let mut consumer = broker.client();
    consumer.sub(&t1, "c");
    let mut producer = broker.client();
    for i in 0..5u8 {
        producer.publish(&t1, &[b'x', i]);
    }
    producer.publish(&t2, b"y");

    let count = format!("topic.{t1}.message_count");
    let depth = format!("topic.{t1}.channel.c.depth");
    let (packets, lines) = receive_until(&daemon, Duration::from_secs(15), |lines| {
        values(lines, &prefix, &count, "c").iter().sum::<i64>() == 5
            && values(lines, &prefix, &depth, "g").last() == Some(&5)
            && push_complete(lines)
    });
    assert_eq!(
        values(&lines, &prefix, &count, "c").iter().sum::<i64>(),
        5,
        "{lines:#?}"
    );
    assert_eq!(values(&lines, &prefix, &depth, "g").last(), Some(&5));
    assert_eq!(
        values(&lines, &prefix, &format!("topic.{t2}.message_count"), "c")
            .iter()
            .sum::<i64>(),
        1
    );
    assert_eq!(
        values(&lines, &prefix, &format!("topic.{t2}.depth"), "g").last(),
        Some(&1),
        "a topic without channels keeps its messages"
    );
    assert_eq!(
        values(&lines, &prefix, &format!("topic.{t1}.message_bytes"), "c")
            .iter()
            .sum::<i64>(),
        10
    );
    assert_eq!(
        values(
            &lines,
            &prefix,
            &format!("topic.{t1}.channel.c.clients"),
            "g"
        )
        .last(),
        Some(&1)
    );
    assert!(
        values(&lines, &prefix, "mem.heap_in_use_bytes", "g")
            .last()
            .is_some_and(|&rss| rss > 0)
    );
    assert!(
        !values(
            &lines,
            &prefix,
            &format!("topic.{t1}.channel.c.e2e_processing_latency_99"),
            "g"
        )
        .is_empty()
    );
    for p in &packets {
        assert!(p.len() <= 200, "packet of {} bytes", p.len());
        assert!(p.ends_with(b"\n"), "a line never spans packets");
    }
    for l in &lines {
        assert!(l.starts_with(&prefix), "{l}");
        assert!(l.ends_with("|c") || l.ends_with("|g"), "{l}");
    }

    // More traffic: the counters of later pushes carry only the new messages.
    for _ in 0..3 {
        producer.publish(&t1, b"z");
    }
    let (_, later) = receive_until(&daemon, Duration::from_secs(15), |lines| {
        values(lines, &prefix, &count, "c").iter().sum::<i64>() == 3 && push_complete(lines)
    });
    let deltas = values(&later, &prefix, &count, "c");
    assert_eq!(deltas.iter().sum::<i64>(), 3, "{deltas:?}");
    assert!(deltas.iter().all(|&d| d <= 3), "{deltas:?}");
    assert_eq!(values(&later, &prefix, &depth, "g").last(), Some(&8));
}

#[test]
fn finished_messages_show_e2e_latency_quantiles() {
    let broker = Broker::with_cores(2, &["--e2e-processing-latency-percentile=1,0.99,0.5"]);
    let topic = unique("e2e");
    let mut consumer = broker.client();
    consumer.sub(&topic, "done");
    let mut idle = broker.client();
    idle.sub(&topic, "idle");
    let mut producer = broker.client();
    for i in 0..5u8 {
        producer.publish(&topic, &[i]);
    }
    consumer.line("RDY 5");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(consumer.expect_message().id);
    }
    // Each message waits at least 20 ms between publish and FIN.
    std::thread::sleep(Duration::from_millis(20));
    for id in &ids {
        consumer.line(&format!("FIN {id}"));
    }
    consumer.line("NOP");

    let stats = |query: &str| -> (String, serde_json::Value) {
        let body = get(&broker, &format!("/stats?format=json&topic={topic}{query}"));
        let doc = serde_json::from_str(&body).unwrap();
        (body, doc)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (body, doc) = loop {
        let (body, doc) = stats("");
        let count = &doc["topics"][0]["channels"][0]["e2e_processing_latency"]["count"];
        if count == 5 || Instant::now() > deadline {
            break (body, doc);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let channels = &doc["topics"][0]["channels"];
    assert_eq!(channels[0]["channel_name"], "done");
    let done = &channels[0]["e2e_processing_latency"];
    assert_eq!(done["count"], 5, "{body}");
    let quantiles: Vec<f64> = done["percentiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["quantile"].as_f64().unwrap())
        .collect();
    assert_eq!(quantiles, [1.0, 0.99, 0.5]);
    for p in done["percentiles"].as_array().unwrap() {
        let ns = p["value"].as_f64().unwrap();
        assert!(
            (19e6..10e9).contains(&ns),
            "implausible latency {ns} ns: {body}"
        );
    }
    assert!(
        body.contains(r#"{"quantile":1,"value":"#),
        "Go float formatting: {body}"
    );
    // A channel with no FIN yet: tracked, so zero values rather than null.
    let idle_latency = &channels[1]["e2e_processing_latency"];
    assert_eq!(channels[1]["channel_name"], "idle");
    assert_eq!(idle_latency["count"], 0);
    assert_eq!(idle_latency["percentiles"][2]["value"], 0);
    // The topic merges its channels.
    let topic_latency = &doc["topics"][0]["e2e_processing_latency"];
    assert_eq!(topic_latency["count"], 5);
    assert!(topic_latency["percentiles"][0]["value"].as_f64().unwrap() >= 19e6);

    let text = get(&broker, &format!("/stats?topic={topic}"));
    let line = text
        .lines()
        .find(|l| l.contains("[done"))
        .expect("channel line");
    let e2e = line.split("e2e%: ").nth(1).unwrap_or_default();
    assert_eq!(e2e.split(", ").count(), 3, "{line}");
    assert!(e2e.split(", ").all(|v| v.ends_with("ms")), "{line}");

    let metrics = get(&broker, "/metrics");
    let sample = format!(
        "nsqd_channel_e2e_processing_latency_samples{{topic=\"{topic}\",channel=\"done\"}} 5"
    );
    assert!(metrics.contains(&sample), "{metrics}");
    assert!(metrics.contains(&format!(
        "nsqd_topic_e2e_processing_latency_seconds{{topic=\"{topic}\",quantile=\"0.5\"}} "
    )));
}

#[test]
fn without_percentiles_latency_is_null() {
    let broker = Broker::start(&[]);
    let topic = unique("e2e_off");
    broker.client().sub(&topic, "c");
    let body = get(&broker, &format!("/stats?format=json&topic={topic}"));
    assert!(
        body.contains(r#""e2e_processing_latency":{"count":0,"percentiles":null}"#),
        "{body}"
    );
}
