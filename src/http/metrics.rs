//! `/metrics`: the stats snapshot in Prometheus text exposition format 0.0.4 — per topic and
//! channel queue figures, per core connection and mesh figures nsqd cannot have, and process
//! figures. Rendered directly (the format is a few lines per family).

use std::fmt::Write;

use super::HttpShared;
use crate::options::go_float_v;
use crate::settings::NSQD_VERSION;
use crate::stats::{
    ChannelStats, LatencyStats, NodeStats, ProcessFigures, ShardFigures, TopicStats,
};

/// One metric family being written: `# HELP`, `# TYPE`, then samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(self.name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label value escaping: backslash, double quote, newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

type TopicFigure = fn(&TopicStats) -> u64;
type ChannelFigure = fn(&ChannelStats) -> u64;
type ShardFigure = fn(&ShardFigures) -> u64;

const TOPIC_FAMILIES: &[(&str, &str, &str, TopicFigure)] = &[
    (
        "nsqd_topic_depth",
        "gauge",
        "Messages waiting in the topic itself (memory and disk).",
        |t| t.depth.max(0) as u64,
    ),
    (
        "nsqd_topic_backend_depth",
        "gauge",
        "Messages waiting in the topic's disk queue.",
        |t| t.backend_depth.max(0) as u64,
    ),
    (
        "nsqd_topic_messages_total",
        "counter",
        "Messages published to the topic.",
        |t| t.message_count,
    ),
    (
        "nsqd_topic_message_bytes_total",
        "counter",
        "Bytes of message bodies published to the topic.",
        |t| t.message_bytes,
    ),
    (
        "nsqd_topic_channels",
        "gauge",
        "Channels of the topic.",
        |t| t.channels.len() as u64,
    ),
    (
        "nsqd_topic_paused",
        "gauge",
        "1 if the topic is paused.",
        |t| u64::from(t.paused),
    ),
];

const CHANNEL_FAMILIES: &[(&str, &str, &str, ChannelFigure)] = &[
    (
        "nsqd_channel_depth",
        "gauge",
        "Messages waiting in the channel (memory and disk; not in flight or deferred).",
        |c| c.depth.max(0) as u64,
    ),
    (
        "nsqd_channel_backend_depth",
        "gauge",
        "Messages waiting in the channel's disk queue.",
        |c| c.backend_depth.max(0) as u64,
    ),
    (
        "nsqd_channel_in_flight",
        "gauge",
        "Messages delivered and not yet finished, requeued or timed out.",
        |c| c.in_flight_count,
    ),
    (
        "nsqd_channel_deferred",
        "gauge",
        "Messages waiting for a DPUB deferral or REQ delay.",
        |c| c.deferred_count,
    ),
    (
        "nsqd_channel_messages_total",
        "counter",
        "Messages put into the channel.",
        |c| c.message_count,
    ),
    (
        "nsqd_channel_requeued_total",
        "counter",
        "Messages requeued by consumers (REQ).",
        |c| c.requeue_count,
    ),
    (
        "nsqd_channel_timed_out_total",
        "counter",
        "In-flight messages that timed out.",
        |c| c.timeout_count,
    ),
    (
        "nsqd_channel_clients",
        "gauge",
        "Consumers subscribed to the channel.",
        |c| c.client_count,
    ),
    (
        "nsqd_channel_paused",
        "gauge",
        "1 if the channel is paused.",
        |c| u64::from(c.paused),
    ),
];

const SHARD_FAMILIES: &[(&str, &str, &str, ShardFigure)] = &[
    (
        "nsqd_shard_tcp_connections",
        "gauge",
        "V2 (TCP) connections served by the core.",
        |s| s.tcp_connections,
    ),
    (
        "nsqd_shard_producers",
        "gauge",
        "Of those, connections that have published.",
        |s| s.producers,
    ),
    (
        "nsqd_shard_http_connections",
        "gauge",
        "HTTP connections served by the core.",
        |s| s.http_connections,
    ),
    (
        "nsqd_shard_topics",
        "gauge",
        "Topics owned by the core.",
        |s| s.topics,
    ),
    (
        "nsqd_shard_channels",
        "gauge",
        "Channels of the topics owned by the core.",
        |s| s.channels,
    ),
    (
        "nsqd_mesh_messages_sent_total",
        "counter",
        "Messages the core sent to other cores.",
        |s| s.mesh_messages_out,
    ),
    (
        "nsqd_mesh_messages_received_total",
        "counter",
        "Messages the core received from other cores.",
        |s| s.mesh_messages_in,
    ),
    (
        "nsqd_mesh_batches_sent_total",
        "counter",
        "Mesh items (batches of messages) the core sent.",
        |s| s.mesh_batches_out,
    ),
    (
        "nsqd_mesh_outbox_depth",
        "gauge",
        "Messages waiting in the core's outboxes to other cores.",
        |s| s.mesh_outbox_depth,
    ),
];

/// E2E processing latency (only with `--e2e-processing-latency-percentile`): one gauge per
/// quantile in seconds, and the samples the window holds. Gauges rather than a summary, since
/// the window forgets samples and a summary's `_count` must only grow.
fn render_latency(out: &mut String, topics: &[TopicStats]) {
    if !topics.iter().any(|t| {
        t.channels
            .iter()
            .any(|c| c.e2e_processing_latency.is_some())
    }) {
        return;
    }
    let quantiles = |l: &LatencyStats| -> Vec<(String, f64)> {
        l.percentiles
            .iter()
            .map(|&(q, ns)| (go_float_v(q), ns / 1e9))
            .collect()
    };
    let mut f = Family::new(
        out,
        "nsqd_topic_e2e_processing_latency_seconds",
        "gauge",
        "Publish-to-FIN latency quantiles over the window, all channels of the topic merged.",
    );
    for t in topics {
        for (q, v) in t.e2e_processing_latency.iter().flat_map(quantiles) {
            f.sample("", &[("topic", &t.name), ("quantile", &q)], v);
        }
    }
    let mut f = Family::new(
        out,
        "nsqd_topic_e2e_processing_latency_samples",
        "gauge",
        "FINs in the E2E latency window, all channels of the topic.",
    );
    for t in topics {
        if let Some(l) = &t.e2e_processing_latency {
            f.sample("", &[("topic", &t.name)], l.count);
        }
    }
    let mut f = Family::new(
        out,
        "nsqd_channel_e2e_processing_latency_seconds",
        "gauge",
        "Publish-to-FIN latency quantiles of the channel over the window.",
    );
    for t in topics {
        for c in &t.channels {
            for (q, v) in c.e2e_processing_latency.iter().flat_map(quantiles) {
                let labels = [
                    ("topic", t.name.as_str()),
                    ("channel", &c.name),
                    ("quantile", &q),
                ];
                f.sample("", &labels, v);
            }
        }
    }
    let mut f = Family::new(
        out,
        "nsqd_channel_e2e_processing_latency_samples",
        "gauge",
        "FINs in the channel's E2E latency window.",
    );
    for t in topics {
        for c in &t.channels {
            if let Some(l) = &c.e2e_processing_latency {
                f.sample("", &[("topic", &t.name), ("channel", &c.name)], l.count);
            }
        }
    }
}

/// The whole exposition.
pub fn render(node: &NodeStats, process: &ProcessFigures, shared: &HttpShared) -> String {
    let mut out = String::with_capacity(4096);
    let topics = node.topic_list();
    for &(name, kind, help, figure) in TOPIC_FAMILIES {
        let mut f = Family::new(&mut out, name, kind, help);
        for t in topics {
            f.sample("", &[("topic", &t.name)], figure(t));
        }
    }
    for &(name, kind, help, figure) in CHANNEL_FAMILIES {
        let mut f = Family::new(&mut out, name, kind, help);
        for t in topics {
            for c in &t.channels {
                f.sample("", &[("topic", &t.name), ("channel", &c.name)], figure(c));
            }
        }
    }
    render_latency(&mut out, topics);
    for &(name, kind, help, figure) in SHARD_FAMILIES {
        let mut f = Family::new(&mut out, name, kind, help);
        for s in &node.shards {
            f.sample("", &[("shard", &s.shard.to_string())], figure(s));
        }
    }
    let mut f = Family::new(
        &mut out,
        "nsqd_mesh_batch_size",
        "histogram",
        "Messages per mesh item the core sent.",
    );
    for s in &node.shards {
        let shard = s.shard.to_string();
        for &(bound, count) in &s.mesh_batch_sizes {
            let le = if bound == u64::MAX {
                "+Inf".to_string()
            } else {
                bound.to_string()
            };
            f.sample("_bucket", &[("shard", &shard), ("le", &le)], count);
        }
        f.sample("_sum", &[("shard", &shard)], s.mesh_messages_out);
        f.sample("_count", &[("shard", &shard)], s.mesh_batches_out);
    }
    let uptime = shared.started().elapsed().as_secs_f64();
    let gauges: [(&'static str, &str, &str, f64); 8] = [
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            process.resident_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            process.virtual_bytes as f64,
        ),
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            process.open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            process.max_fds as f64,
        ),
        (
            "process_threads",
            "gauge",
            "OS threads.",
            process.threads as f64,
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            process.cpu.as_secs_f64(),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            shared.start_unix() as f64,
        ),
        (
            "nsqd_uptime_seconds",
            "gauge",
            "Seconds since nsqd started.",
            uptime,
        ),
    ];
    for (name, kind, help, value) in gauges {
        Family::new(&mut out, name, kind, help).sample("", &[], value);
    }
    Family::new(
        &mut out,
        "nsqd_healthy",
        "gauge",
        "1 while every core's storage works (nsqd's /ping OK), else 0.",
    )
    .sample("", &[], u8::from(node.health_error.is_none()));
    Family::new(
        &mut out,
        "nsqd_info",
        "gauge",
        "Version nsqd-uring reports (always 1).",
    )
    .sample("", &[("version", NSQD_VERSION)], 1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;

    #[test]
    fn renders_families_with_escaped_labels() {
        let node = NodeStats {
            topics: Some(vec![TopicStats {
                name: "t\"1".into(),
                message_count: 3,
                channels: vec![ChannelStats {
                    name: "c".into(),
                    in_flight_count: 2,
                    ..ChannelStats::default()
                }],
                ..TopicStats::default()
            }]),
            shards: vec![ShardFigures {
                shard: 1,
                mesh_messages_out: 5,
                mesh_batches_out: 2,
                mesh_batch_sizes: vec![(1, 1), (4, 2), (u64::MAX, 2)],
                ..ShardFigures::default()
            }],
            ..NodeStats::default()
        };
        let shared = HttpShared::new(Options::default());
        let text = render(&node, &ProcessFigures::default(), &shared);
        assert!(text.contains("# TYPE nsqd_topic_messages_total counter\n"));
        assert!(text.contains("nsqd_topic_messages_total{topic=\"t\\\"1\"} 3\n"));
        assert!(text.contains("nsqd_channel_in_flight{topic=\"t\\\"1\",channel=\"c\"} 2\n"));
        assert!(text.contains("nsqd_mesh_batch_size_bucket{shard=\"1\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("nsqd_mesh_batch_size_sum{shard=\"1\"} 5\n"));
        assert!(text.contains("nsqd_info{version=\"1.3.0\"} 1\n"));
        assert!(!text.contains("e2e"), "no latency families unless tracked");
    }

    #[test]
    fn renders_latency_quantiles_in_seconds() {
        let latency = Some(LatencyStats {
            count: 4,
            percentiles: vec![(1.0, 2_500_000.0), (0.99, 1_000_000.0)],
        });
        let node = NodeStats {
            topics: Some(vec![TopicStats {
                name: "t".into(),
                channels: vec![ChannelStats {
                    name: "c".into(),
                    e2e_processing_latency: latency.clone(),
                    ..ChannelStats::default()
                }],
                e2e_processing_latency: latency,
                ..TopicStats::default()
            }]),
            ..NodeStats::default()
        };
        let shared = HttpShared::new(Options::default());
        let text = render(&node, &ProcessFigures::default(), &shared);
        assert!(text.contains(
            "nsqd_topic_e2e_processing_latency_seconds{topic=\"t\",quantile=\"1\"} 0.0025\n"
        ));
        assert!(text.contains(
            "nsqd_channel_e2e_processing_latency_seconds{topic=\"t\",channel=\"c\",quantile=\"0.99\"} 0.001\n"
        ));
        assert!(text.contains(
            "nsqd_channel_e2e_processing_latency_samples{topic=\"t\",channel=\"c\"} 4\n"
        ));
        assert!(text.contains("# TYPE nsqd_topic_e2e_processing_latency_samples gauge\n"));
    }
}
