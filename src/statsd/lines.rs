//! nsqd's statsd lines from a stats snapshot: metric names, counters as deltas since the
//! previous push, gauges as they are, and the `--statsd-prefix` expansion. Pure text, no IO.

use std::collections::HashMap;
use std::fmt::Write;

use crate::stats::{GoMemStats, LatencyStats, TopicStats};

/// nsqd's suffix for ephemeral topics and channels.
const EPHEMERAL: &str = "#ephemeral";

/// nsqd's start-up expansion of `--statsd-prefix`: every `%s` becomes
/// `<broadcast-address>_<broadcast-http-port>` (Go's `JoinHostPort`, then `.` and `:` → `_`),
/// and a `.` is appended if missing. An empty prefix stays empty (no prefix).
pub fn expand_prefix(prefix: &str, broadcast_address: &str, http_port: i64) -> String {
    if prefix.is_empty() {
        return String::new();
    }
    let host = if broadcast_address.contains(':') {
        format!("[{broadcast_address}]:{http_port}")
    } else {
        format!("{broadcast_address}:{http_port}")
    };
    let mut out = prefix.replace("%s", &host.replace(['.', ':'], "_"));
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// What the previous push reported, for the counters' deltas.
#[derive(Debug, Clone, Default)]
pub struct Previous {
    /// Every topic of the last push (excluded ephemeral ones too, as nsqd keeps them).
    pub topics: Vec<TopicStats>,
    /// `mem.gc_runs` as last sent.
    pub gc_runs: u32,
}

/// How one push is rendered.
#[derive(Debug, Clone)]
pub struct PushOptions<'a> {
    /// The expanded prefix (see [`expand_prefix`]).
    pub prefix: &'a str,
    /// `--statsd-exclude-ephemeral`.
    pub exclude_ephemeral: bool,
    /// `--statsd-mem-stats`: the figures to send as `mem.*`.
    pub mem: Option<GoMemStats>,
}

/// Lines being written: `<prefix><stat>:<value>|c` or `|g`, each ending in `\n`.
struct Lines<'a> {
    prefix: &'a str,
    out: Vec<String>,
}

impl Lines<'_> {
    fn push(&mut self, stat: std::fmt::Arguments, value: i64, kind: &str) {
        let mut line = String::with_capacity(self.prefix.len() + 64);
        line.push_str(self.prefix);
        let _ = writeln!(line, "{stat}:{value}|{kind}");
        self.out.push(line);
    }

    /// nsqd's `Incr`: the value is a delta (Go's unsigned difference read as int64, so a
    /// recreated topic's smaller count sends a negative delta, as nsqd does).
    fn counter(&mut self, stat: std::fmt::Arguments, now: u64, before: u64) {
        self.push(stat, now.wrapping_sub(before) as i64, "c");
    }

    fn gauge(&mut self, stat: std::fmt::Arguments, value: i64) {
        self.push(stat, value, "g");
    }

    /// `<base>.e2e_processing_latency_<quantile×100 as %.0f>` gauges, in ns (truncated).
    fn latency(&mut self, base: std::fmt::Arguments, l: Option<&LatencyStats>) {
        for &(q, ns) in l.map_or(&[][..], |l| &l.percentiles) {
            let pct = q * 100.0;
            self.gauge(
                format_args!("{base}.e2e_processing_latency_{pct:.0}"),
                ns as i64,
            );
        }
    }
}

/// Every line of one push, in nsqd's order: per topic its own figures then each channel's,
/// then `mem.*`.
pub fn build(topics: &[TopicStats], previous: &Previous, push: &PushOptions) -> Vec<String> {
    let mut w = Lines {
        prefix: push.prefix,
        out: Vec::new(),
    };
    let last: HashMap<&str, &TopicStats> = previous
        .topics
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let empty = TopicStats::default();
    for t in topics {
        if push.exclude_ephemeral && t.name.ends_with(EPHEMERAL) {
            continue;
        }
        let lt = last.get(t.name.as_str()).copied().unwrap_or(&empty);
        let n = &t.name;
        w.counter(
            format_args!("topic.{n}.message_count"),
            t.message_count,
            lt.message_count,
        );
        w.counter(
            format_args!("topic.{n}.message_bytes"),
            t.message_bytes,
            lt.message_bytes,
        );
        w.gauge(format_args!("topic.{n}.depth"), t.depth);
        w.gauge(format_args!("topic.{n}.backend_depth"), t.backend_depth);
        w.latency(format_args!("topic.{n}"), t.e2e_processing_latency.as_ref());
        for c in &t.channels {
            if push.exclude_ephemeral && c.name.ends_with(EPHEMERAL) {
                continue;
            }
            let lc = lt.channels.iter().find(|l| l.name == c.name);
            let before = |f: fn(&crate::stats::ChannelStats) -> u64| lc.map_or(0, f);
            let base = format!("topic.{n}.channel.{}", c.name);
            w.counter(
                format_args!("{base}.message_count"),
                c.message_count,
                before(|l| l.message_count),
            );
            w.gauge(format_args!("{base}.depth"), c.depth);
            w.gauge(format_args!("{base}.backend_depth"), c.backend_depth);
            w.gauge(
                format_args!("{base}.in_flight_count"),
                c.in_flight_count as i64,
            );
            w.gauge(
                format_args!("{base}.deferred_count"),
                c.deferred_count as i64,
            );
            w.counter(
                format_args!("{base}.requeue_count"),
                c.requeue_count,
                before(|l| l.requeue_count),
            );
            w.counter(
                format_args!("{base}.timeout_count"),
                c.timeout_count,
                before(|l| l.timeout_count),
            );
            w.gauge(format_args!("{base}.clients"), c.client_count as i64);
            w.latency(format_args!("{base}"), c.e2e_processing_latency.as_ref());
        }
    }
    if let Some(m) = &push.mem {
        // nsqd's memory rows as gauges, except the GC run count, sent as a counter.
        for (name, value) in m.rows().into_iter().filter(|(n, _)| *n != "gc_total_runs") {
            w.gauge(format_args!("mem.{name}"), value as i64);
        }
        w.counter(
            format_args!("mem.gc_runs"),
            u64::from(m.gc_total_runs),
            u64::from(previous.gc_runs),
        );
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ChannelStats;

    fn topic(name: &str, count: u64, channels: Vec<ChannelStats>) -> TopicStats {
        TopicStats {
            name: name.into(),
            message_count: count,
            message_bytes: count * 10,
            depth: 3,
            channels,
            ..TopicStats::default()
        }
    }

    fn channel(name: &str, count: u64) -> ChannelStats {
        ChannelStats {
            name: name.into(),
            message_count: count,
            depth: 2,
            in_flight_count: 1,
            requeue_count: count / 2,
            client_count: 1,
            ..ChannelStats::default()
        }
    }

    fn opts(prefix: &str) -> PushOptions<'_> {
        PushOptions {
            prefix,
            exclude_ephemeral: false,
            mem: None,
        }
    }

    #[test]
    fn prefix_expands_host_and_port_like_nsqd() {
        assert_eq!(
            expand_prefix("nsq.%s", "ip-10-0-0-1.ec2", 4151),
            "nsq.ip-10-0-0-1_ec2_4151."
        );
        assert_eq!(expand_prefix("a.%s.b.", "h", 1), "a.h_1.b.");
        assert_eq!(expand_prefix("plain", "h", 1), "plain.");
        assert_eq!(expand_prefix("", "h", 1), "");
        assert_eq!(expand_prefix("%s", "::1", 4151), "[__1]_4151.");
    }

    #[test]
    fn first_push_sends_totals_in_nsqds_order() {
        let topics = vec![topic("t", 4, vec![channel("c", 4)])];
        let lines = build(&topics, &Previous::default(), &opts("p."));
        assert_eq!(
            lines.concat(),
            "p.topic.t.message_count:4|c\n\
             p.topic.t.message_bytes:40|c\n\
             p.topic.t.depth:3|g\n\
             p.topic.t.backend_depth:0|g\n\
             p.topic.t.channel.c.message_count:4|c\n\
             p.topic.t.channel.c.depth:2|g\n\
             p.topic.t.channel.c.backend_depth:0|g\n\
             p.topic.t.channel.c.in_flight_count:1|g\n\
             p.topic.t.channel.c.deferred_count:0|g\n\
             p.topic.t.channel.c.requeue_count:2|c\n\
             p.topic.t.channel.c.timeout_count:0|c\n\
             p.topic.t.channel.c.clients:1|g\n"
        );
    }

    #[test]
    fn counters_are_deltas_since_the_previous_push() {
        let previous = Previous {
            topics: vec![topic("t", 4, vec![channel("c", 4)])],
            gc_runs: 0,
        };
        let now = vec![
            topic("t", 10, vec![channel("c", 7), channel("new", 1)]),
            topic("u", 2, vec![]),
        ];
        let text = build(&now, &previous, &opts("")).concat();
        assert!(text.contains("topic.t.message_count:6|c\n"), "{text}");
        assert!(text.contains("topic.t.message_bytes:60|c\n"));
        assert!(text.contains("topic.t.channel.c.message_count:3|c\n"));
        assert!(text.contains("topic.t.channel.c.requeue_count:1|c\n"));
        assert!(text.contains("topic.t.channel.new.message_count:1|c\n"));
        assert!(text.contains("topic.u.message_count:2|c\n"));
        assert!(
            text.contains("topic.t.depth:3|g\n"),
            "gauges are not deltas"
        );
        // A recreated topic with a smaller count: Go's uint64 difference as int64.
        let again = build(&[topic("t", 1, vec![])], &previous, &opts("")).concat();
        assert!(again.contains("topic.t.message_count:-3|c\n"), "{again}");
    }

    #[test]
    fn latency_gauges_are_named_by_percent() {
        let latency = Some(LatencyStats {
            count: 3,
            percentiles: vec![(1.0, 2_000_000.9), (0.99, 1_500.0), (0.5, 0.0)],
        });
        let mut c = channel("c", 1);
        c.e2e_processing_latency = latency.clone();
        let mut t = topic("t", 1, vec![c]);
        t.e2e_processing_latency = latency;
        let text = build(&[t], &Previous::default(), &opts("")).concat();
        assert!(text.contains("topic.t.e2e_processing_latency_100:2000000|g\n"));
        assert!(text.contains("topic.t.e2e_processing_latency_99:1500|g\n"));
        assert!(text.contains("topic.t.channel.c.e2e_processing_latency_50:0|g\n"));
    }

    #[test]
    fn ephemeral_topics_and_channels_can_be_left_out() {
        let topics = vec![
            topic("a#ephemeral", 1, vec![]),
            topic("b", 1, vec![channel("c#ephemeral", 1), channel("d", 1)]),
        ];
        let mut o = opts("");
        let all = build(&topics, &Previous::default(), &o).concat();
        assert!(
            all.contains("topic.a#ephemeral.depth:3|g\n"),
            "names are raw"
        );
        o.exclude_ephemeral = true;
        let text = build(&topics, &Previous::default(), &o).concat();
        assert!(!text.contains("ephemeral"), "{text}");
        assert!(text.contains("topic.b.channel.d.depth:2|g\n"));
    }

    #[test]
    fn mem_stats_use_nsqds_names() {
        let mut o = opts("x.");
        o.mem = Some(GoMemStats {
            heap_in_use_bytes: 4096,
            gc_total_runs: 5,
            ..GoMemStats::default()
        });
        let previous = Previous {
            topics: Vec::new(),
            gc_runs: 2,
        };
        let lines = build(&[], &previous, &o);
        assert_eq!(lines.len(), 9);
        assert_eq!(lines[0], "x.mem.heap_objects:0|g\n");
        assert_eq!(lines[2], "x.mem.heap_in_use_bytes:4096|g\n");
        assert_eq!(lines[8], "x.mem.gc_runs:3|c\n");
    }
}
