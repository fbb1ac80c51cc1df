//! nsqd's `/stats` bodies rendered from the snapshot: the JSON document field for field (names,
//! order, units, `null`s) and the text report line for line, as nsqd v1.3.0 writes them.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::HttpShared;
use super::json;
use crate::broker::latency::nanos_to_human;
use crate::options::{format_go_duration, version_line};
use crate::settings::NSQD_VERSION;
use crate::shard::client::unix_seconds;
use crate::stats::{
    ChannelStats, ClientView, GoMemStats, LatencyStats, NodeStats, ProcessFigures, PubCount,
    TopicStats,
};

#[derive(Serialize)]
struct StatsDoc<'a> {
    version: &'static str,
    health: String,
    start_time: i64,
    topics: Option<Vec<TopicDoc<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<GoMemStats>,
    producers: Option<Vec<ClientDoc>>,
}

#[derive(Serialize)]
struct TopicDoc<'a> {
    topic_name: &'a str,
    channels: Vec<ChannelDoc<'a>>,
    depth: i64,
    backend_depth: i64,
    message_count: u64,
    message_bytes: u64,
    paused: bool,
    e2e_processing_latency: LatencyDoc,
}

#[derive(Serialize)]
struct ChannelDoc<'a> {
    channel_name: &'a str,
    depth: i64,
    backend_depth: i64,
    in_flight_count: u64,
    deferred_count: u64,
    message_count: u64,
    requeue_count: u64,
    timeout_count: u64,
    client_count: u64,
    clients: Option<Vec<ClientDoc>>,
    paused: bool,
    e2e_processing_latency: LatencyDoc,
}

/// nsqd's quantile `Result`: `{"count":0,"percentiles":null}` when not tracked; each
/// percentile a Go map, so its keys are in alphabetical order.
#[derive(Serialize)]
struct LatencyDoc {
    count: u64,
    percentiles: Option<Vec<PercentileDoc>>,
}

#[derive(Serialize)]
struct PercentileDoc {
    quantile: f64,
    value: f64,
}

fn latency_doc(l: Option<&LatencyStats>) -> LatencyDoc {
    LatencyDoc {
        count: l.map_or(0, |l| l.count),
        percentiles: l.map(|l| {
            l.percentiles
                .iter()
                .map(|&(quantile, value)| PercentileDoc { quantile, value })
                .collect()
        }),
    }
}

/// nsqd's `Result.String()`: each value in human units, joined by `, ` (empty when untracked).
fn latency_text(l: Option<&LatencyStats>) -> String {
    l.map(|l| {
        l.percentiles
            .iter()
            .map(|&(_, v)| nanos_to_human(v))
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_default()
}

#[derive(Serialize)]
struct ClientDoc {
    client_id: String,
    hostname: String,
    version: &'static str,
    remote_address: String,
    state: i32,
    ready_count: u64,
    in_flight_count: u64,
    message_count: u64,
    finish_count: u64,
    requeue_count: u64,
    connect_ts: i64,
    sample_rate: i32,
    deflate: bool,
    snappy: bool,
    user_agent: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    authed: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    auth_identity: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    auth_identity_url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub_counts: Vec<PubCountDoc>,
    tls: bool,
    tls_cipher_suite: String,
    tls_version: String,
    tls_negotiated_protocol: &'static str,
    tls_negotiated_protocol_is_mutual: bool,
}

#[derive(Serialize)]
struct PubCountDoc {
    topic: String,
    count: u64,
}

fn client_doc(c: ClientView) -> ClientDoc {
    let (tls_version, tls_cipher_suite) = c.features.tls.clone().unwrap_or_default();
    let (id, n) = (c.identity, c.counts);
    let authed = id.auth.is_some();
    let auth = id.auth.clone().unwrap_or_default();
    ClientDoc {
        client_id: id.client_id,
        hostname: id.hostname,
        version: "V2",
        remote_address: id.remote_address,
        state: c.state,
        ready_count: n.ready_count,
        in_flight_count: n.in_flight_count,
        message_count: n.message_count,
        finish_count: n.finish_count,
        requeue_count: n.requeue_count,
        connect_ts: id.connect_ts,
        sample_rate: id.sample_rate,
        deflate: c.features.deflate,
        snappy: c.features.snappy,
        user_agent: id.user_agent,
        authed,
        auth_identity: auth.identity,
        auth_identity_url: auth.identity_url,
        pub_counts: c
            .pub_counts
            .into_iter()
            .map(|PubCount { topic, count }| PubCountDoc { topic, count })
            .collect(),
        tls: c.features.tls.is_some(),
        tls_cipher_suite,
        tls_version,
        tls_negotiated_protocol: "",
        // Go reports this as always true for a TLS connection.
        tls_negotiated_protocol_is_mutual: c.features.tls.is_some(),
    }
}

fn channel_doc<'a>(node: &NodeStats, c: &'a ChannelStats) -> ChannelDoc<'a> {
    ChannelDoc {
        channel_name: &c.name,
        depth: c.depth,
        backend_depth: c.backend_depth,
        in_flight_count: c.in_flight_count,
        deferred_count: c.deferred_count,
        message_count: c.message_count,
        requeue_count: c.requeue_count,
        timeout_count: c.timeout_count,
        client_count: c.client_count,
        clients: node.include_clients.then(|| {
            c.consumers
                .iter()
                .map(|k| client_doc(node.consumer_view(k)))
                .collect()
        }),
        paused: c.paused,
        e2e_processing_latency: latency_doc(c.e2e_processing_latency.as_ref()),
    }
}

fn topic_doc<'a>(node: &NodeStats, t: &'a TopicStats) -> TopicDoc<'a> {
    TopicDoc {
        topic_name: &t.name,
        channels: t.channels.iter().map(|c| channel_doc(node, c)).collect(),
        depth: t.depth,
        backend_depth: t.backend_depth,
        message_count: t.message_count,
        message_bytes: t.message_bytes,
        paused: t.paused,
        e2e_processing_latency: latency_doc(t.e2e_processing_latency.as_ref()),
    }
}

/// The `format=json` body; `process` is `None` without `include_mem`.
pub fn json(node: &NodeStats, shared: &HttpShared, process: Option<&ProcessFigures>) -> Vec<u8> {
    let doc = StatsDoc {
        version: NSQD_VERSION,
        health: node.health(),
        start_time: shared.start_unix(),
        topics: node
            .topics
            .as_ref()
            .map(|ts| ts.iter().map(|t| topic_doc(node, t)).collect()),
        memory: process.map(GoMemStats::from_process),
        producers: node
            .producers()
            .map(|ps| ps.into_iter().map(client_doc).collect()),
    };
    json::to_vec(&doc)
}

/// The default text report.
pub fn text(node: &NodeStats, shared: &HttpShared, process: Option<&ProcessFigures>) -> String {
    let mut w = String::with_capacity(1024);
    let start = time::OffsetDateTime::from_unix_timestamp(shared.start_unix())
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let _ = writeln!(w, "{}", version_line());
    let _ = writeln!(w, "start_time {start}");
    let _ = writeln!(
        w,
        "uptime {}",
        format_go_duration(shared.started().elapsed())
    );
    let _ = writeln!(w, "\nHealth: {}", node.health());
    if let Some(p) = process {
        w.push_str("\nMemory:\n");
        for (name, value) in GoMemStats::from_process(p).rows() {
            let _ = writeln!(w, "   {name:<25}\t{value}");
        }
    }
    let topics = node.topic_list();
    if topics.is_empty() {
        w.push_str("\nTopics: None\n");
    } else {
        w.push_str("\nTopics:");
    }
    let now = unix_seconds();
    for t in topics {
        let paused = if t.paused { "*P " } else { "   " };
        let _ = writeln!(
            w,
            "\n{paused}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: {}",
            t.name,
            t.depth,
            t.backend_depth,
            t.message_count,
            latency_text(t.e2e_processing_latency.as_ref())
        );
        for c in &t.channels {
            let paused = if c.paused { "   *P " } else { "      " };
            let _ = writeln!(
                w,
                "{paused}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} \
                 re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: {}",
                c.name,
                c.depth,
                c.backend_depth,
                c.in_flight_count,
                c.deferred_count,
                c.requeue_count,
                c.timeout_count,
                c.message_count,
                latency_text(c.e2e_processing_latency.as_ref())
            );
            if node.include_clients {
                for k in &c.consumers {
                    let _ = writeln!(w, "        {}", client_line(&node.consumer_view(k), now));
                }
            }
        }
    }
    match node.producers() {
        None => w.push_str("\nProducers: None\n"),
        Some(ps) => {
            w.push_str("\nProducers:\n");
            for p in ps {
                let _ = writeln!(w, "   {}", client_line(&p, now));
            }
        }
    }
    w
}

/// nsqd's `ClientV2Stats.String()`: the producer form once a client has published.
fn client_line(c: &ClientView, now: i64) -> String {
    let (id, n) = (&c.identity, &c.counts);
    let port = id
        .remote_address
        .rsplit_once(':')
        .map_or("", |(_, port)| port);
    let name = format!("{}:{port} {}", id.hostname, id.user_agent);
    let connected = format_go_duration(Duration::from_secs(
        now.saturating_sub(id.connect_ts).max(0) as u64,
    ));
    if !c.pub_counts.is_empty() {
        let total: u64 = c.pub_counts.iter().map(|p| p.count).sum();
        let topics: Vec<String> = c
            .pub_counts
            .iter()
            .map(|p| format!("{}={}", p.topic, p.count))
            .collect();
        return format!(
            "[V2 {name:<21}] msgs: {total:<8} topics: {} connected: {connected}",
            topics.join(",")
        );
    }
    format!(
        "[V2 {name:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} \
         connected: {connected}",
        c.state, n.in_flight_count, n.ready_count, n.finish_count, n.requeue_count, n.message_count
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;
    use crate::stats::{
        ClientIdentity, ClientStats, ConsumerStats, DeliveryCounts, ShardStats, StatsFilter,
    };

    fn snapshot() -> NodeStats {
        let identity = |client_id: &str, hostname: &str, ua: &str, port: u16| ClientIdentity {
            client_id: client_id.into(),
            hostname: hostname.into(),
            user_agent: ua.into(),
            remote_address: format!("127.0.0.1:{port}"),
            ..ClientIdentity::default()
        };
        let consumer = ConsumerStats {
            conn: 2,
            identity: identity("cons", "h2", "ua/2", 51756),
            counts: DeliveryCounts {
                ready_count: 1,
                in_flight_count: 1,
                message_count: 1,
                ..DeliveryCounts::default()
            },
            ..ConsumerStats::default()
        };
        let part = ShardStats {
            topics: vec![
                TopicStats {
                    name: "t1".into(),
                    message_count: 2,
                    message_bytes: 11,
                    channels: vec![ChannelStats {
                        name: "ch1".into(),
                        depth: 1,
                        in_flight_count: 1,
                        message_count: 2,
                        client_count: 1,
                        consumers: vec![consumer],
                        ..ChannelStats::default()
                    }],
                    ..TopicStats::default()
                },
                TopicStats {
                    name: "t2".into(),
                    depth: 1,
                    message_count: 1,
                    message_bytes: 1,
                    paused: true,
                    ..TopicStats::default()
                },
            ],
            clients: vec![
                ClientStats {
                    conn: 1,
                    identity: identity("pubber", "h1", "ua/1", 51744),
                    pub_counts: vec![PubCount {
                        topic: "t1".into(),
                        count: 2,
                    }],
                    ..ClientStats::default()
                },
                ClientStats {
                    conn: 2,
                    identity: identity("cons", "h2", "ua/2", 51756),
                    state: 3,
                    ..ClientStats::default()
                },
            ],
            ..ShardStats::default()
        };
        NodeStats::merge(&StatsFilter::default(), vec![part])
    }

    #[test]
    fn json_matches_nsqd_field_for_field() {
        let shared = HttpShared::new(Options::default());
        let body = String::from_utf8(json(&snapshot(), &shared, None)).unwrap();
        let want = format!(
            concat!(
                r#"{{"version":"1.3.0","health":"OK","start_time":{},"topics":[{{"topic_name":"t1","#,
                r#""channels":[{{"channel_name":"ch1","depth":1,"backend_depth":0,"in_flight_count":1,"#,
                r#""deferred_count":0,"message_count":2,"requeue_count":0,"timeout_count":0,"#,
                r#""client_count":1,"clients":[{{"client_id":"cons","hostname":"h2","version":"V2","#,
                r#""remote_address":"127.0.0.1:51756","state":3,"ready_count":1,"in_flight_count":1,"#,
                r#""message_count":1,"finish_count":0,"requeue_count":0,"connect_ts":0,"sample_rate":0,"#,
                r#""deflate":false,"snappy":false,"user_agent":"ua/2","tls":false,"tls_cipher_suite":"","#,
                r#""tls_version":"","tls_negotiated_protocol":"","tls_negotiated_protocol_is_mutual":false}}],"#,
                r#""paused":false,"e2e_processing_latency":{{"count":0,"percentiles":null}}}}],"depth":0,"#,
                r#""backend_depth":0,"message_count":2,"message_bytes":11,"paused":false,"#,
                r#""e2e_processing_latency":{{"count":0,"percentiles":null}}}},{{"topic_name":"t2","#,
                r#""channels":[],"depth":1,"backend_depth":0,"message_count":1,"message_bytes":1,"#,
                r#""paused":true,"e2e_processing_latency":{{"count":0,"percentiles":null}}}}],"#,
                r#""producers":[{{"client_id":"pubber","hostname":"h1","version":"V2","#,
                r#""remote_address":"127.0.0.1:51744","state":0,"ready_count":0,"in_flight_count":0,"#,
                r#""message_count":0,"finish_count":0,"requeue_count":0,"connect_ts":0,"sample_rate":0,"#,
                r#""deflate":false,"snappy":false,"user_agent":"ua/1","pub_counts":[{{"topic":"t1","count":2}}],"#,
                r#""tls":false,"tls_cipher_suite":"","tls_version":"","tls_negotiated_protocol":"","#,
                r#""tls_negotiated_protocol_is_mutual":false}}]}}"#
            ),
            shared.start_unix()
        );
        assert_eq!(body, want);
    }

    #[test]
    fn text_matches_nsqd_layout() {
        let shared = HttpShared::new(Options::default());
        let body = text(&snapshot(), &shared, Some(&ProcessFigures::default()));
        let lines: Vec<&str> = body.lines().collect();
        assert!(lines[0].starts_with("nsqd v1.3.0 (built w/"));
        assert!(lines[1].starts_with("start_time "));
        assert!(lines[2].starts_with("uptime "));
        assert_eq!(lines[4], "Health: OK");
        assert_eq!(lines[6], "Memory:");
        assert_eq!(lines[7], "   heap_objects             \t0");
        let rest = &body[body.find("\nTopics:").unwrap()..];
        let now_connected = |s: &str| s.replace(&format!("connected: {}", "0s"), "connected: X");
        let got = rest
            .lines()
            .map(|l| match l.find("connected: ") {
                Some(i) => format!("{}connected: X", &l[..i]),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let want = "
Topics:
   [t1             ] depth: 0     be-depth: 0     msgs: 2        e2e%: 
      [ch1                      ] depth: 1     be-depth: 0     inflt: 1    def: 0    re-q: 0     timeout: 0     msgs: 2        e2e%: 
        [V2 h2:51756 ua/2        ] state: 3 inflt: 1    rdy: 1    fin: 0        re-q: 0        msgs: 1        connected: X

*P [t2             ] depth: 1     be-depth: 0     msgs: 1        e2e%: 

Producers:
   [V2 h1:51744 ua/1        ] msgs: 2        topics: t1=2 connected: X";
        assert_eq!(now_connected(&got), want);
    }
}

#[cfg(test)]
mod latency_tests {
    use super::*;
    use crate::options::Options;

    fn tracked(count: u64, values: [f64; 2]) -> Option<LatencyStats> {
        Some(LatencyStats {
            count,
            percentiles: vec![(1.0, values[0]), (0.99, values[1])],
        })
    }

    fn node() -> NodeStats {
        NodeStats {
            topics: Some(vec![TopicStats {
                name: "t".into(),
                channels: vec![ChannelStats {
                    name: "c".into(),
                    e2e_processing_latency: tracked(2, [1_200_000.0, 900_000.0]),
                    ..ChannelStats::default()
                }],
                e2e_processing_latency: tracked(0, [0.0, 0.0]),
                ..TopicStats::default()
            }]),
            ..NodeStats::default()
        }
    }

    #[test]
    fn json_lists_quantiles_with_go_floats() {
        let shared = HttpShared::new(Options::default());
        let body = String::from_utf8(json(&node(), &shared, None)).unwrap();
        assert!(
            body.contains(
                r#""e2e_processing_latency":{"count":2,"percentiles":[{"quantile":1,"value":1200000},{"quantile":0.99,"value":900000}]}"#
            ),
            "{body}"
        );
        assert!(
            body.contains(
                r#""e2e_processing_latency":{"count":0,"percentiles":[{"quantile":1,"value":0},{"quantile":0.99,"value":0}]}"#
            ),
            "{body}"
        );
    }

    #[test]
    fn text_shows_human_units() {
        let shared = HttpShared::new(Options::default());
        let body = text(&node(), &shared, None);
        assert!(
            body.contains("msgs: 0        e2e%: 1.2ms, 900.0us\n"),
            "{body}"
        );
        assert!(
            body.contains("msgs: 0        e2e%: 0.0ns, 0.0ns\n"),
            "{body}"
        );
    }
}
