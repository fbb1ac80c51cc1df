//! The one stats snapshot: what each shard reports of the topics it owns and the connections it
//! serves, merged into one node-wide view. `/stats` (JSON and text), `/metrics` and (later)
//! statsd all render this snapshot; none of them reads live broker state.
//!
//! A shard's part ([`ShardStats`]) is plain data so it can cross cores in one mesh message.
//! Consumers are reported by the topic's owner (RDY, in-flight and the other delivery counters
//! live in the channel); identity, state and publish counts by the connection's own shard. The
//! merge ([`NodeStats::merge`]) joins the two by connection ID, as nsqd's single process sees
//! them.

use std::collections::BTreeMap;
use std::time::Duration;

use rustc_hash::FxHashMap;

/// nsqd's client `state` after SUB.
pub const STATE_SUBSCRIBED: i32 = 3;

/// What a `/stats` request asks for (nsqd's `topic`, `channel` and `include_clients`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsFilter {
    /// Only this topic (nsqd treats an empty value as no filter).
    pub topic: Option<String>,
    /// Only this channel of each topic; topics without it are left out.
    pub channel: Option<String>,
    /// Whether to list consumers and producers.
    pub include_clients: bool,
    /// Whether to list topics at all (`/ping` only needs health).
    pub include_topics: bool,
}

impl Default for StatsFilter {
    fn default() -> Self {
        StatsFilter {
            topic: None,
            channel: None,
            include_clients: true,
            include_topics: true,
        }
    }
}

impl StatsFilter {
    /// Whether topic `name` passes the topic filter.
    pub fn wants_topic(&self, name: &str) -> bool {
        self.topic.as_deref().is_none_or(|t| t == name)
    }
}

/// One topic as its owner sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicStats {
    /// Topic name.
    pub name: String,
    /// Messages waiting in the topic itself (memory and disk).
    pub depth: i64,
    /// Of which on disk.
    pub backend_depth: i64,
    /// Messages accepted.
    pub message_count: u64,
    /// Bytes of bodies accepted.
    pub message_bytes: u64,
    /// Paused topics fan out to no channel.
    pub paused: bool,
    /// Channels passing the filter, by name.
    pub channels: Vec<ChannelStats>,
    /// Its channels' E2E latency merged; `None` (nsqd's `null` percentiles) when not tracked
    /// or when the topic has no channel.
    pub e2e_processing_latency: Option<LatencyStats>,
}

/// E2E processing latency over the window (`--e2e-processing-latency-percentile`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyStats {
    /// Samples in the window.
    pub count: u64,
    /// `(quantile, nanoseconds)` in the configured order.
    pub percentiles: Vec<(f64, f64)>,
}

/// One channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelStats {
    /// Channel name.
    pub name: String,
    /// Messages waiting (memory and disk; not in-flight, not deferred).
    pub depth: i64,
    /// Of which on disk.
    pub backend_depth: i64,
    /// Delivered, not yet finished.
    pub in_flight_count: u64,
    /// Waiting for a DPUB deferral or REQ delay.
    pub deferred_count: u64,
    /// Messages put into the channel.
    pub message_count: u64,
    /// REQs.
    pub requeue_count: u64,
    /// In-flight timeouts.
    pub timeout_count: u64,
    /// Subscribed connections (counted even without `include_clients`).
    pub client_count: u64,
    /// Paused channels deliver to no client.
    pub paused: bool,
    /// The subscribed connections (empty without `include_clients`).
    pub consumers: Vec<ConsumerStats>,
    /// E2E latency over the window; `None` when not tracked.
    pub e2e_processing_latency: Option<LatencyStats>,
}

/// Who a connection is: what IDENTIFY said and where it connected from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// IDENTIFY `client_id` (the remote host before IDENTIFY).
    pub client_id: String,
    /// IDENTIFY `hostname` (the remote host before IDENTIFY).
    pub hostname: String,
    /// IDENTIFY `user_agent`.
    pub user_agent: String,
    /// `ip:port` of the peer.
    pub remote_address: String,
    /// Unix seconds at connect.
    pub connect_ts: i64,
    /// IDENTIFY `sample_rate`.
    pub sample_rate: i32,
    /// Who the auth server says it is, once it sent AUTH.
    pub auth: Option<AuthIdentity>,
}

/// What the auth server called a connection (nsqd's `auth_identity` and `auth_identity_url`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthIdentity {
    /// The reply's `identity`.
    pub identity: String,
    /// The reply's `identity_url`.
    pub identity_url: String,
}

/// A consumer's delivery figures, kept by its channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Current RDY.
    pub ready_count: u64,
    /// Its messages in flight.
    pub in_flight_count: u64,
    /// Messages delivered to it.
    pub message_count: u64,
    /// Its FINs.
    pub finish_count: u64,
    /// Its REQs.
    pub requeue_count: u64,
}

/// A subscribed connection as its channel sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Core serving the connection.
    pub shard: usize,
    /// Process-wide connection ID.
    pub conn: u64,
    /// Identity as of SUB.
    pub identity: ClientIdentity,
    /// Delivery figures.
    pub counts: DeliveryCounts,
}

/// How many messages a connection published to one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PubCount {
    /// Topic name.
    pub topic: String,
    /// Messages published (an MPUB counts each message).
    pub count: u64,
}

/// A connection as its own shard sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Process-wide connection ID.
    pub conn: u64,
    /// Identity as of now.
    pub identity: ClientIdentity,
    /// nsqd's state number: 0 init, 3 subscribed, 4 closing.
    pub state: i32,
    /// Messages published, per topic (sorted by topic).
    pub pub_counts: Vec<PubCount>,
    /// Negotiated connection features.
    pub features: ClientFeatures,
}

/// What IDENTIFY negotiated for a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFeatures {
    /// Snappy compression is on.
    pub snappy: bool,
    /// Deflate compression is on.
    pub deflate: bool,
    /// TLS `(version, cipher suite)` when the connection upgraded.
    pub tls: Option<(String, String)>,
}

/// Per-core figures nsqd cannot have: connections and mesh traffic of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardFigures {
    /// Core index.
    pub shard: usize,
    /// V2 (TCP) connections served by this core.
    pub tcp_connections: u64,
    /// Of which have published at least once.
    pub producers: u64,
    /// HTTP connections served by this core.
    pub http_connections: u64,
    /// Topics owned by this core.
    pub topics: u64,
    /// Channels of those topics.
    pub channels: u64,
    /// Messages sent to other cores.
    pub mesh_messages_out: u64,
    /// Mesh items (batches) sent to other cores.
    pub mesh_batches_out: u64,
    /// Messages received from other cores.
    pub mesh_messages_in: u64,
    /// Messages waiting in this core's outboxes right now.
    pub mesh_outbox_depth: u64,
    /// Sent batches by size: (upper bound, batches of at most that size), cumulative.
    pub mesh_batch_sizes: Vec<(u64, u64)>,
}

/// One shard's part of a snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStats {
    /// Owned topics passing the filter, by name.
    pub topics: Vec<TopicStats>,
    /// Whether the filter's topic exists here (always false without a topic filter).
    pub topic_found: bool,
    /// Why this shard's storage is failing, if it is.
    pub health_error: Option<String>,
    /// Connections served by this shard (empty without `include_clients`).
    pub clients: Vec<ClientStats>,
    /// Delivery figures of consumers in channels the filter left out, by connection ID:
    /// nsqd shows them on a producer that also consumes, whatever the filter.
    pub unlisted_counts: Vec<(u64, DeliveryCounts)>,
    /// Connection and mesh figures.
    pub figures: ShardFigures,
}

/// A connection as `/stats` lists it, channel-side and home-side figures joined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientView {
    /// Who it is.
    pub identity: ClientIdentity,
    /// nsqd's state number.
    pub state: i32,
    /// Delivery figures (zero for a connection that is not subscribed).
    pub counts: DeliveryCounts,
    /// nsqd lists at most one entry: the filtered topic's, else the first.
    pub pub_counts: Vec<PubCount>,
    /// Negotiated connection features.
    pub features: ClientFeatures,
}

/// The node-wide snapshot every renderer reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStats {
    /// Topics by name; `None` when a topic filter names no existing topic (nsqd's `null`).
    pub topics: Option<Vec<TopicStats>>,
    /// Whether consumers and producers were asked for.
    pub include_clients: bool,
    /// The topic filter (it also narrows `pub_counts`).
    pub topic_filter: Option<String>,
    /// Home-side connection records by ID.
    pub clients: BTreeMap<u64, ClientStats>,
    /// Delivery figures of consumers the filter left out, by connection ID.
    pub unlisted_counts: BTreeMap<u64, DeliveryCounts>,
    /// Per-core figures, by core index.
    pub shards: Vec<ShardFigures>,
    /// The first storage failure a shard reported (nsqd's unhealthy state).
    pub health_error: Option<String>,
}

impl NodeStats {
    /// Joins the parts of every shard (in any order) into one snapshot.
    pub fn merge(filter: &StatsFilter, parts: Vec<ShardStats>) -> NodeStats {
        let mut topics = Vec::new();
        let mut found = false;
        let mut clients = BTreeMap::new();
        let mut unlisted_counts = BTreeMap::new();
        let mut shards = Vec::with_capacity(parts.len());
        let mut health_error = None;
        for part in parts {
            found |= part.topic_found;
            health_error = health_error.or(part.health_error);
            topics.extend(part.topics);
            for c in part.clients {
                clients.insert(c.conn, c);
            }
            unlisted_counts.extend(part.unlisted_counts);
            shards.push(part.figures);
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        shards.sort_by_key(|s| s.shard);
        NodeStats {
            topics: (filter.topic.is_none() || found).then_some(topics),
            include_clients: filter.include_clients,
            topic_filter: filter.topic.clone(),
            clients,
            unlisted_counts,
            shards,
            health_error,
        }
    }

    /// nsqd's health text: `OK`, or `NOK - <error>` while storage is failing.
    pub fn health(&self) -> String {
        match &self.health_error {
            None => "OK".to_string(),
            Some(e) => format!("NOK - {e}"),
        }
    }

    /// The topics, empty when `None`.
    pub fn topic_list(&self) -> &[TopicStats] {
        self.topics.as_deref().unwrap_or_default()
    }

    /// A channel's consumer as nsqd lists it: delivery counters from the channel, identity,
    /// state and publish counts from the connection's shard.
    pub fn consumer_view(&self, c: &ConsumerStats) -> ClientView {
        match self.clients.get(&c.conn) {
            Some(home) => ClientView {
                counts: c.counts,
                ..self.home_view(home)
            },
            None => ClientView {
                identity: c.identity.clone(),
                state: STATE_SUBSCRIBED,
                counts: c.counts,
                ..ClientView::default()
            },
        }
    }

    /// A connection as its own shard reports it (no delivery figures).
    fn home_view(&self, c: &ClientStats) -> ClientView {
        ClientView {
            identity: c.identity.clone(),
            state: c.state,
            counts: DeliveryCounts::default(),
            pub_counts: self.listed_pub_counts(c),
            features: c.features.clone(),
        }
    }

    /// nsqd's `producers`: every connection that has published, by connection ID; `None`
    /// (nsqd's `null`) without `include_clients` or when there is none.
    pub fn producers(&self) -> Option<Vec<ClientView>> {
        if !self.include_clients {
            return None;
        }
        let consumers: FxHashMap<u64, &ConsumerStats> = self
            .topic_list()
            .iter()
            .flat_map(|t| &t.channels)
            .flat_map(|c| &c.consumers)
            .map(|c| (c.conn, c))
            .collect();
        let list: Vec<ClientView> = self
            .clients
            .values()
            .filter(|c| !c.pub_counts.is_empty())
            .map(|c| match consumers.get(&c.conn) {
                Some(consumer) => self.consumer_view(consumer),
                None => ClientView {
                    counts: self
                        .unlisted_counts
                        .get(&c.conn)
                        .copied()
                        .unwrap_or_default(),
                    ..self.home_view(c)
                },
            })
            .collect();
        (!list.is_empty()).then_some(list)
    }

    /// nsqd stops after one `pub_counts` entry: the filtered topic's, else the first.
    fn listed_pub_counts(&self, c: &ClientStats) -> Vec<PubCount> {
        c.pub_counts
            .iter()
            .find(|p| self.topic_filter.as_deref().is_none_or(|t| t == p.topic))
            .cloned()
            .into_iter()
            .collect()
    }
}

/// nsqd's Go memory figures (`/stats` `memory`, statsd `mem.*`) from what a Rust process has:
/// the resident set size stands in for the heap in use; the Go-only figures (heap objects,
/// idle and released heap, GC pauses and runs, next GC) have no counterpart and are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GoMemStats {
    /// Go: live heap objects (0).
    pub heap_objects: u64,
    /// Go: idle heap spans (0).
    pub heap_idle_bytes: u64,
    /// The resident set size.
    pub heap_in_use_bytes: u64,
    /// Go: heap returned to the OS (0).
    pub heap_released_bytes: u64,
    /// Go: longest GC pause (0).
    pub gc_pause_usec_100: u64,
    /// Go: 99th percentile GC pause (0).
    pub gc_pause_usec_99: u64,
    /// Go: 95th percentile GC pause (0).
    pub gc_pause_usec_95: u64,
    /// Go: heap size of the next GC (0).
    pub next_gc_bytes: u64,
    /// Go: GC runs (0).
    pub gc_total_runs: u32,
}

impl GoMemStats {
    /// The figures for this process as `p` read them.
    pub fn from_process(p: &ProcessFigures) -> Self {
        GoMemStats {
            heap_in_use_bytes: p.resident_bytes,
            ..GoMemStats::default()
        }
    }

    /// Name and value of each figure, in nsqd's order (the `/stats` text report).
    pub fn rows(&self) -> [(&'static str, u64); 9] {
        [
            ("heap_objects", self.heap_objects),
            ("heap_idle_bytes", self.heap_idle_bytes),
            ("heap_in_use_bytes", self.heap_in_use_bytes),
            ("heap_released_bytes", self.heap_released_bytes),
            ("gc_pause_usec_100", self.gc_pause_usec_100),
            ("gc_pause_usec_99", self.gc_pause_usec_99),
            ("gc_pause_usec_95", self.gc_pause_usec_95),
            ("next_gc_bytes", self.next_gc_bytes),
            ("gc_total_runs", u64::from(self.gc_total_runs)),
        ]
    }
}

/// Process figures read from `/proc` and `getrusage` (nsqd's Go memory block has no Rust
/// equivalent; see [`GoMemStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    /// Resident set size in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The open-file soft limit.
    pub max_fds: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
    /// OS threads.
    pub threads: u64,
}

impl ProcessFigures {
    /// Reads this process's figures; unreadable ones are zero.
    pub fn read() -> ProcessFigures {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| status_field(&status, key).map_or(0, |v| v * 1024);
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(0, |(soft, _)| soft);
        let cpu = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .map_or(Duration::ZERO, |u| {
                timeval(u.user_time()) + timeval(u.system_time())
            });
        ProcessFigures {
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            open_fds,
            max_fds,
            cpu,
            threads: status_field(&status, "Threads:").unwrap_or(0),
        }
    }
}

fn timeval(t: nix::sys::time::TimeVal) -> Duration {
    Duration::from_secs(t.tv_sec().max(0) as u64) + Duration::from_micros(t.tv_usec().max(0) as u64)
}

/// The number after `key` in a `/proc/<pid>/status` text.
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(conn: u64) -> ConsumerStats {
        ConsumerStats {
            conn,
            identity: ClientIdentity {
                client_id: "sub-time".into(),
                ..ClientIdentity::default()
            },
            counts: DeliveryCounts {
                ready_count: 5,
                in_flight_count: 2,
                ..DeliveryCounts::default()
            },
            ..ConsumerStats::default()
        }
    }

    fn topic(name: &str, consumers: Vec<ConsumerStats>) -> TopicStats {
        TopicStats {
            name: name.into(),
            channels: vec![ChannelStats {
                name: "c".into(),
                client_count: consumers.len() as u64,
                consumers,
                ..ChannelStats::default()
            }],
            ..TopicStats::default()
        }
    }

    fn client(conn: u64, pubs: &[(&str, u64)]) -> ClientStats {
        ClientStats {
            conn,
            identity: ClientIdentity {
                client_id: format!("home-{conn}"),
                ..ClientIdentity::default()
            },
            state: 3,
            pub_counts: pubs
                .iter()
                .map(|(t, n)| PubCount {
                    topic: t.to_string(),
                    count: *n,
                })
                .collect(),
            ..ClientStats::default()
        }
    }

    #[test]
    fn merge_sorts_topics_and_joins_clients_across_shards() {
        let filter = StatsFilter::default();
        let a = ShardStats {
            topics: vec![topic("zeta", vec![consumer(7)])],
            clients: vec![client(9, &[("alpha", 2), ("zeta", 1)])],
            figures: ShardFigures {
                shard: 1,
                ..ShardFigures::default()
            },
            ..ShardStats::default()
        };
        let b = ShardStats {
            topics: vec![topic("alpha", vec![])],
            clients: vec![client(7, &[])],
            ..ShardStats::default()
        };
        let node = NodeStats::merge(&filter, vec![a, b]);
        let names: Vec<_> = node.topic_list().iter().map(|t| &t.name).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(node.shards[0].shard, 0);
        let view = node.consumer_view(&node.topic_list()[1].channels[0].consumers[0]);
        assert_eq!(
            view.identity.client_id, "home-7",
            "identity comes from the home shard"
        );
        assert_eq!(
            (view.counts.ready_count, view.counts.in_flight_count),
            (5, 2)
        );
        let producers = node.producers().unwrap();
        assert_eq!(producers.len(), 1);
        assert_eq!(producers[0].pub_counts.len(), 1, "nsqd lists one entry");
        assert_eq!(producers[0].pub_counts[0].topic, "alpha");
    }

    #[test]
    fn missing_filtered_topic_is_null_and_clients_can_be_left_out() {
        let filter = StatsFilter {
            topic: Some("nope".into()),
            include_clients: false,
            ..StatsFilter::default()
        };
        let node = NodeStats::merge(&filter, vec![ShardStats::default()]);
        assert_eq!(node.topics, None);
        assert_eq!(node.producers(), None);
        let filter = StatsFilter {
            topic: Some("t".into()),
            ..StatsFilter::default()
        };
        let found = ShardStats {
            topic_found: true,
            clients: vec![client(1, &[("other", 1), ("t", 4)])],
            ..ShardStats::default()
        };
        let node = NodeStats::merge(&filter, vec![found]);
        assert_eq!(
            node.topics,
            Some(vec![]),
            "found but filtered out by channel"
        );
        assert_eq!(node.producers().unwrap()[0].pub_counts[0].count, 4);
    }

    #[test]
    fn health_is_the_first_failing_shard() {
        let failing = ShardStats {
            health_error: Some("disk full".into()),
            ..ShardStats::default()
        };
        let filter = StatsFilter::default();
        let ok = NodeStats::merge(&filter, vec![ShardStats::default()]);
        assert_eq!(ok.health(), "OK");
        let node = NodeStats::merge(&filter, vec![ShardStats::default(), failing]);
        assert_eq!(node.health(), "NOK - disk full");
    }

    #[test]
    fn process_figures_are_read() {
        let p = ProcessFigures::read();
        assert!(p.resident_bytes > 0);
        assert!(p.open_fds > 0);
        assert!(p.threads >= 1);
    }
}
