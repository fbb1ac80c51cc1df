//! The broker's resolved runtime settings: what every shard and connection reads, derived once
//! from the command line so the hot path never re-parses options.

use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::codec::Limits;
use crate::protocol::identify::{ClientSettings, ServerLimits};

/// The version string nsqd clients and tools check (semver ≥ 1.3.0).
pub const NSQD_VERSION: &str = "1.3.0";

/// Settings shared (read-only) by all shards.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Decoder size limits.
    pub limits: Limits,
    /// IDENTIFY bounds and reported server values.
    pub server_limits: ServerLimits,
    /// A new connection's settings before IDENTIFY.
    pub client_defaults: ClientSettings,
    /// `--max-msg-timeout` (TOUCH cap).
    pub max_msg_timeout: Duration,
    /// `--mem-queue-size`.
    pub mem_queue_size: usize,
    /// `--max-channel-consumers` (0 = unlimited).
    pub max_channel_consumers: usize,
    /// `--node-id`, in every message ID.
    pub node_id: i64,
    /// How often shards scan in-flight timeouts and deferred messages.
    pub queue_scan_interval: Duration,
    /// `--enable-experiment=topology-aware-consumption`: ready consumers in this node's zone,
    /// then its region, are served first.
    pub topology_aware_consumption: bool,
    /// `--spin-before-park` (ours): how long an idle core busy-polls before sleeping in the
    /// kernel; trades a core's idle CPU for wake-up latency on busy or shared machines.
    pub spin_before_park: Duration,
    /// `--connection-affinity` (ours): a plain connection whose first publish or subscription
    /// is for a topic of another core moves to that core (no mesh hop per command after).
    pub connection_affinity: bool,
    /// `--output-coalesce` (ours): the longest a busy consumer's message frames wait for later
    /// frames to share one write (never longer than the client's `output_buffer_timeout`); it
    /// also caps how long a busy consumer's FINs gather before they are read.
    pub output_coalesce: Duration,
    /// Disk queues and nsqd.dat; `None` keeps everything in memory (unit tests, benches).
    pub disk: Option<DiskSettings>,
    /// Negotiable connection features (TLS, compression) and the TLS policy.
    pub features: FeatureSettings,
    /// nsqlookupd registration.
    pub lookupd: LookupdSettings,
    /// E2E processing latency tracking (`--e2e-processing-latency-*`); `None` when no
    /// percentile is configured, as nsqd then keeps no streams.
    pub e2e_latency: Option<std::sync::Arc<crate::broker::latency::LatencyConfig>>,
    /// AUTH (off without `--auth-http-address`).
    pub auth: crate::auth::AuthSettings,
}

/// Who to register with and what to announce (`--lookupd-tcp-address`, `--broadcast-*`).
#[derive(Debug, Clone, Default)]
pub struct LookupdSettings {
    /// `--lookupd-tcp-address` (repeatable).
    pub addresses: Vec<String>,
    /// `--broadcast-address` (default: the OS hostname).
    pub broadcast_address: String,
    /// `--broadcast-tcp-port` (0: the TCP listener's port).
    pub broadcast_tcp_port: u16,
    /// `--broadcast-http-port` (0: the HTTP listener's port).
    pub broadcast_http_port: u16,
    /// The OS hostname.
    pub hostname: String,
    /// `--topology-region`.
    pub topology_region: String,
    /// `--topology-zone`.
    pub topology_zone: String,
    /// `http://host:port` of every connected nsqlookupd (from its IDENTIFY reply), kept by the
    /// lookupd task on the first core and read by any core creating a topic.
    pub http_endpoints: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// `--http-client-connect-timeout` and `--http-client-request-timeout`.
    pub http_timeouts: (Duration, Duration),
}

/// What IDENTIFY may negotiate, from `--tls-*`, `--snappy`, `--deflate`.
#[derive(Debug, Clone, Default)]
pub struct FeatureSettings {
    /// The server TLS configuration when `--tls-cert`/`--tls-key` are set.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// `--tls-required` is `true` or `tcp-https`: TCP clients must upgrade before any command
    /// but IDENTIFY.
    pub tls_required: bool,
    /// `--snappy`.
    pub snappy: bool,
    /// `--deflate`.
    pub deflate: bool,
}

/// Where and how disk queues are written (`--data-path` and friends).
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// `--data-path` (nsqd's default, the working directory, is `.`).
    pub data_path: PathBuf,
    /// `--max-bytes-per-file`.
    pub max_bytes_per_file: i64,
    /// `--sync-every`.
    pub sync_every: u64,
    /// `--sync-timeout`.
    pub sync_timeout: Duration,
    /// `--durable-ack`: publishes are answered only once written and fsynced.
    pub durable_ack: bool,
    /// Every shard's part of nsqd.dat, set by the runtime once nsqd.dat is loaded.
    pub board: Option<std::sync::Arc<crate::storage::board::MetadataBoard>>,
    /// Segment files one shard keeps open between storage rounds before it closes those of
    /// the queues it visits (set by the runtime from the open-file limit; 0 = no bound).
    pub segment_file_budget: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let heartbeat = Duration::from_secs(30);
        Settings {
            limits: Limits::default(),
            server_limits: ServerLimits::default(),
            client_defaults: ClientSettings::defaults(
                heartbeat,
                Duration::from_millis(250),
                Duration::from_secs(60),
            ),
            max_msg_timeout: Duration::from_secs(900),
            mem_queue_size: 10_000,
            max_channel_consumers: 0,
            node_id: 0,
            queue_scan_interval: Duration::from_millis(100),
            topology_aware_consumption: false,
            spin_before_park: Duration::ZERO,
            connection_affinity: true,
            output_coalesce: crate::shard::client::DEFAULT_COALESCE,
            disk: None,
            features: FeatureSettings {
                tls: None,
                tls_required: false,
                snappy: true,
                deflate: true,
            },
            lookupd: LookupdSettings::default(),
            e2e_latency: None,
            auth: crate::auth::AuthSettings::default(),
        }
    }
}
