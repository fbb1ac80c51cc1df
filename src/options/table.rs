//! The option table: each option is defined exactly once here (field, type,
//! default, flag name, config key, help text). The `Options` struct, its
//! defaults, flag parsing, config-file keys, `/config` rendering and the usage
//! text are all generated from these rows, so they cannot drift apart.

use std::time::Duration;

use super::goflags::Arity;
use super::host::{default_node_id, os_hostname};
use super::values::{LogLevel, OptValue, TlsMinVersion, TlsRequired};

/// How the generic code reaches one option; one per table row.
pub(super) struct OptionDef {
    /// Flag name without dashes (`mem-queue-size`).
    pub flag: &'static str,
    /// Config-file and `/config/:opt` key; `None` for command-line-only flags.
    pub key: Option<&'static str>,
    /// Help text (Go's, for nsqd's own flags).
    pub help: &'static str,
    /// Switch or value flag.
    pub arity: Arity,
    /// Go usage type word.
    pub type_name: &'static str,
    /// Applies one command-line occurrence (`first` = first on this command line).
    pub set_flag: fn(&mut Options, bool, &str) -> Result<(), String>,
    /// Checks a config-file value without applying it.
    pub check_toml: fn(&toml::Value) -> Result<(), String>,
    /// Applies a config-file value.
    pub set_toml: fn(&mut Options, &toml::Value) -> Result<(), String>,
    /// Renders the current value as `/config` JSON.
    pub to_json: fn(&Options) -> String,
    /// Go usage's `(default …)` text for the current value.
    pub usage_default: fn(&Options) -> Option<String>,
}

/// Generates `Options`, `Default for Options` and `OPTIONS` from the rows.
macro_rules! define_options {
    ($(
        $field:ident : $ty:ty = $default:expr,
            flag $flag:literal, key $key:expr, help $help:literal;
    )*) => {
        /// Every nsqd v1.3 setting plus nsqd-uring's own, merged from the
        /// command line, the `--config` file and defaults (see `parse_args`).
        /// Each field's doc is its `--help` text.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Options {
            $( #[doc = $help] pub $field: $ty, )*
        }

        impl Default for Options {
            /// nsqd's built-in defaults (node id and broadcast address come
            /// from the OS hostname).
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        /// All options, in nsqd's flag-definition order.
        pub(super) static OPTIONS: &[OptionDef] = &[ $(
            OptionDef {
                flag: $flag,
                key: $key,
                help: $help,
                arity: <$ty as OptValue>::ARITY,
                type_name: <$ty as OptValue>::TYPE_NAME,
                set_flag: |o, first, s| o.$field.set_flag(first, s),
                check_toml: |v| <$ty as OptValue>::from_toml(v).map(drop),
                set_toml: |o, v| {
                    o.$field = <$ty as OptValue>::from_toml(v)?;
                    Ok(())
                },
                to_json: |o| o.$field.to_json(),
                usage_default: |o| o.$field.usage_default(),
            },
        )* ];
    };
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

define_options! {
    // basic options
    version: bool = false,
        flag "version", key None,
        help "print version string";
    config: String = String::new(),
        flag "config", key None,
        help "path to config file";
    log_level: LogLevel = LogLevel::Info,
        flag "log-level", key Some("log_level"),
        help "set log verbosity: debug, info, warn, error, or fatal";
    log_prefix: String = "[nsqd] ".to_string(),
        flag "log-prefix", key Some("log_prefix"),
        help "log message prefix";
    verbose: bool = false,
        flag "verbose", key None,
        help "[deprecated] has no effect, use --log-level";
    node_id: i64 = default_node_id(&os_hostname()),
        flag "node-id", key Some("id"),
        help "unique part for message IDs, (int) in range [0,1024) (default is hash of hostname)";
    worker_id: bool = false,
        flag "worker-id", key None,
        help "[deprecated] use --node-id";

    https_address: String = "0.0.0.0:4152".to_string(),
        flag "https-address", key Some("https_address"),
        help "<addr>:<port> to listen on for HTTPS clients";
    http_address: String = "0.0.0.0:4151".to_string(),
        flag "http-address", key Some("http_address"),
        help "address to listen on for HTTP clients (<addr>:<port> for TCP/IP or <path> for unix socket)";
    tcp_address: String = "0.0.0.0:4150".to_string(),
        flag "tcp-address", key Some("tcp_address"),
        help "address to listen on for TCP clients (<addr>:<port> for TCP/IP or <path> for unix socket)";

    auth_http_addresses: Vec<String> = Vec::new(),
        flag "auth-http-address", key Some("auth_http_addresses"),
        help "<addr>:<port> or a full url to query auth server (may be given multiple times)";
    auth_http_request_method: String = "get".to_string(),
        flag "auth-http-request-method", key Some("auth_http_request_method"),
        help "HTTP method to use for auth server requests";
    broadcast_address: String = os_hostname(),
        flag "broadcast-address", key Some("broadcast_address"),
        help "address that will be registered with lookupd (defaults to the OS hostname)";
    broadcast_tcp_port: i64 = 0,
        flag "broadcast-tcp-port", key Some("broadcast_tcp_port"),
        help "TCP port that will be registered with lookupd (defaults to the TCP port that this nsqd is listening on)";
    broadcast_http_port: i64 = 0,
        flag "broadcast-http-port", key Some("broadcast_http_port"),
        help "HTTP port that will be registered with lookupd (defaults to the HTTP port that this nsqd is listening on)";
    lookupd_tcp_addresses: Vec<String> = Vec::new(),
        flag "lookupd-tcp-address", key Some("nsqlookupd_tcp_addresses"),
        help "lookupd TCP address (may be given multiple times)";
    http_client_connect_timeout: Duration = secs(2),
        flag "http-client-connect-timeout", key Some("http_client_connect_timeout"),
        help "timeout for HTTP connect";
    http_client_request_timeout: Duration = secs(5),
        flag "http-client-request-timeout", key Some("http_client_request_timeout"),
        help "timeout for HTTP request";
    topology_region: String = String::new(),
        flag "topology-region", key Some("topology_region"),
        help "A region represents a larger domain, made up of one or more zones for preferring closer consumer";
    topology_zone: String = String::new(),
        flag "topology-zone", key Some("topology_zone"),
        help "A zone represents a logical failure domain for preferring closer consumer";

    // diskqueue options
    data_path: String = String::new(),
        flag "data-path", key Some("data_path"),
        help "path to store disk-backed messages";
    mem_queue_size: i64 = 10_000,
        flag "mem-queue-size", key Some("mem_queue_size"),
        help "number of messages to keep in memory (per topic/channel)";
    max_bytes_per_file: i64 = 100 * 1024 * 1024,
        flag "max-bytes-per-file", key Some("max_bytes_per_file"),
        help "number of bytes per diskqueue file before rolling";
    sync_every: i64 = 2500,
        flag "sync-every", key Some("sync_every"),
        help "number of messages per diskqueue fsync";
    sync_timeout: Duration = secs(2),
        flag "sync-timeout", key Some("sync_timeout"),
        help "duration of time per diskqueue fsync";

    queue_scan_worker_pool_max: i64 = 4,
        flag "queue-scan-worker-pool-max", key Some("queue_scan_worker_pool_max"),
        help "max concurrency for checking in-flight and deferred message timeouts";
    queue_scan_selection_count: i64 = 20,
        flag "queue-scan-selection-count", key Some("queue_scan_selection_count"),
        help "number of channels to check per cycle (every 100ms) for in-flight and deferred timeouts";

    // msg and command options
    msg_timeout: Duration = secs(60),
        flag "msg-timeout", key Some("msg_timeout"),
        help "default duration to wait before auto-requeing a message";
    max_msg_timeout: Duration = secs(15 * 60),
        flag "max-msg-timeout", key Some("max_msg_timeout"),
        help "maximum duration before a message will timeout";
    max_msg_size: i64 = 1024 * 1024,
        flag "max-msg-size", key Some("max_msg_size"),
        help "maximum size of a single message in bytes";
    max_req_timeout: Duration = secs(3600),
        flag "max-req-timeout", key Some("max_req_timeout"),
        help "maximum requeuing timeout for a message";
    max_body_size: i64 = 5 * 1024 * 1024,
        flag "max-body-size", key Some("max_body_size"),
        help "maximum size of a single command body";

    // client overridable configuration options
    max_heartbeat_interval: Duration = secs(60),
        flag "max-heartbeat-interval", key Some("max_heartbeat_interval"),
        help "maximum client configurable duration of time between client heartbeats";
    max_rdy_count: i64 = 2500,
        flag "max-rdy-count", key Some("max_rdy_count"),
        help "maximum RDY count for a client";
    max_output_buffer_size: i64 = 64 * 1024,
        flag "max-output-buffer-size", key Some("max_output_buffer_size"),
        help "maximum client configurable size (in bytes) for a client output buffer";
    max_output_buffer_timeout: Duration = secs(30),
        flag "max-output-buffer-timeout", key Some("max_output_buffer_timeout"),
        help "maximum client configurable duration of time between flushing to a client";
    min_output_buffer_timeout: Duration = Duration::from_millis(25),
        flag "min-output-buffer-timeout", key Some("min_output_buffer_timeout"),
        help "minimum client configurable duration of time between flushing to a client";
    output_buffer_timeout: Duration = Duration::from_millis(250),
        flag "output-buffer-timeout", key Some("output_buffer_timeout"),
        help "default duration of time between flushing data to clients";
    max_channel_consumers: i64 = 0,
        flag "max-channel-consumers", key Some("max_channel_consumers"),
        help "maximum channel consumer connection count per nsqd instance (default 0, i.e., unlimited)";

    // statsd integration options
    statsd_address: String = String::new(),
        flag "statsd-address", key Some("statsd_address"),
        help "UDP <addr>:<port> of a statsd daemon for pushing stats";
    statsd_interval: Duration = secs(60),
        flag "statsd-interval", key Some("statsd_interval"),
        help "duration between pushing to statsd";
    statsd_mem_stats: bool = true,
        flag "statsd-mem-stats", key Some("statsd_mem_stats"),
        help "toggle sending memory and GC stats to statsd";
    statsd_prefix: String = "nsq.%s".to_string(),
        flag "statsd-prefix", key Some("statsd_prefix"),
        help "prefix used for keys sent to statsd (%s for host replacement)";
    statsd_udp_packet_size: i64 = 508,
        flag "statsd-udp-packet-size", key Some("statsd_udp_packet_size"),
        help "the size in bytes of statsd UDP packets";
    statsd_exclude_ephemeral: bool = false,
        flag "statsd-exclude-ephemeral", key Some("statsd_exclude_ephemeral"),
        help "Skip ephemeral topics and channels when sending stats to statsd";

    // end to end percentile options
    e2e_processing_latency_percentiles: Vec<f64> = Vec::new(),
        flag "e2e-processing-latency-percentile", key Some("e2e_processing_latency_percentiles"),
        help "message processing time percentiles (as float (0, 1.0]) to track (can be specified multiple times or comma separated '1.0,0.99,0.95', default none)";
    e2e_processing_latency_window_time: Duration = secs(10 * 60),
        flag "e2e-processing-latency-window-time", key Some("e2e_processing_latency_window_time"),
        help "calculate end to end latency quantiles for this duration of time (ie: 60s would only show quantile calculations from the past 60 seconds)";

    // TLS config
    tls_cert: String = String::new(),
        flag "tls-cert", key Some("tls_cert"),
        help "path to certificate file";
    tls_key: String = String::new(),
        flag "tls-key", key Some("tls_key"),
        help "path to key file";
    tls_client_auth_policy: String = String::new(),
        flag "tls-client-auth-policy", key Some("tls_client_auth_policy"),
        help "client certificate auth policy ('require' or 'require-verify')";
    tls_root_ca_file: String = String::new(),
        flag "tls-root-ca-file", key Some("tls_root_ca_file"),
        help "path to certificate authority file";
    tls_required: TlsRequired = TlsRequired::None,
        flag "tls-required", key Some("tls_required"),
        help "require TLS for client connections (true, false, tcp-https)";
    tls_min_version: TlsMinVersion = TlsMinVersion::Tls10,
        flag "tls-min-version", key Some("tls_min_version"),
        help "minimum SSL/TLS version acceptable ('ssl3.0', 'tls1.0', 'tls1.1', 'tls1.2' or 'tls1.3')";

    // compression
    deflate: bool = true,
        flag "deflate", key Some("deflate"),
        help "enable deflate feature negotiation (client compression)";
    max_deflate_level: i64 = 6,
        flag "max-deflate-level", key Some("max_deflate_level"),
        help "max deflate compression level a client can negotiate (> values == > nsqd CPU usage)";
    snappy: bool = true,
        flag "snappy", key Some("snappy"),
        help "enable snappy feature negotiation (client compression)";

    enable_experiment: Vec<String> = Vec::new(),
        flag "enable-experiment", key Some("enable_experiment"),
        help "enable experimental feature (may be given multiple times) (valid options: \"topology-aware-consumption\")";

    // nsqd-uring's own options
    cores: usize = 0,
        flag "cores", key Some("cores"),
        help "number of CPU cores to run on (0 = every core the process may run on)";
    durable_ack: bool = false,
        flag "durable-ack", key Some("durable_ack"),
        help "acknowledge a publish only after it is durably written to disk";
    spin_before_park: Duration = Duration::ZERO,
        flag "spin-before-park", key Some("spin_before_park"),
        help "how long an idle core busy-polls before sleeping (lower wake-up latency for a whole core's CPU; default 0)";
    connection_affinity: bool = true,
        flag "connection-affinity", key Some("connection_affinity"),
        help "move a plain connection to the core that owns the topic of its first PUB/MPUB/DPUB/SUB";
    output_coalesce: Duration = crate::shard::client::DEFAULT_COALESCE,
        flag "output-coalesce", key Some("output_coalesce"),
        help "longest a busy consumer's message frames wait to share one write, within its output_buffer_timeout, and cap on how long its FINs gather before they are read (0 = neither)";
}

/// The row for a command-line flag name (without dashes).
pub(super) fn by_flag(name: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|d| d.flag == name)
}

/// The row for a config-file / `/config/:opt` key.
pub(super) fn by_key(key: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|d| d.key == Some(key))
}

/// Go `flag.PrintDefaults`-style usage text, flags sorted by name.
pub(super) fn usage() -> String {
    let defaults = Options::default();
    let mut defs: Vec<&OptionDef> = OPTIONS.iter().collect();
    defs.sort_by_key(|d| d.flag);
    let mut out = String::from("Usage of nsqd:");
    for d in defs {
        let mut line = format!("  -{}", d.flag);
        if !d.type_name.is_empty() {
            line.push(' ');
            line.push_str(d.type_name);
        }
        line.push_str(if line.len() <= 4 { "\t" } else { "\n    \t" });
        line.push_str(d.help);
        if let Some(default) = (d.usage_default)(&defaults) {
            line.push_str(&format!(" (default {default})"));
        }
        out.push('\n');
        out.push_str(&line);
    }
    out
}

impl Options {
    /// The JSON body nsqd's `GET /config/<key>` returns for a config key
    /// (durations in ns, enums as numbers); `None` means `INVALID_OPTION`.
    pub fn config_value_json(&self, key: &str) -> Option<String> {
        by_key(key).map(|d| (d.to_json)(self))
    }
}
