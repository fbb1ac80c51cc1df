//! nsqd-uring: a drop-in replacement for NSQ's `nsqd`, thread-per-core on io_uring.
//!
//! Module map (a PUB's path: `protocol::codec` parses it, `protocol::connection` routes it through
//! `shard`, which applies it on the topic's owner core directly or via `mesh`, where
//! `broker::topic` fans it out and `broker::channel` delivers it):

/// AUTH: the auth server client, its cached reply and permission checks.
pub mod auth;
/// nsq-bench, the load generator: modes, client side of V2, histograms, plots.
pub mod bench;
/// The message model: messages and IDs, topics, channels (no IO).
pub mod broker;
/// JSON decoded with Go's leniency (bad UTF-8 and lone surrogates become U+FFFD).
pub mod go_json;
/// nsqd's HTTP API and Prometheus `/metrics`, served by hyper on every core.
pub mod http;
/// nsqd-shaped log lines through tracing.
pub mod logging;
/// nsqlookupd registration (protocol V1 client).
pub mod lookupd;
/// The messages that cross cores and their batching.
pub mod mesh;
/// Command line, config file and validation.
pub mod options;
/// Protocol V2: wire format and the per-connection IO loop.
pub mod protocol;
/// Executors per core, limits, signals, start-up and shutdown.
pub mod runtime;
/// Resolved runtime settings shared by all cores.
pub mod settings;
/// One core's world: owned topics, its connections, routing.
pub mod shard;
/// The stats snapshot `/stats`, `/metrics` and statsd render.
pub mod stats;
/// statsd push: nsqd's metric lines over UDP every `--statsd-interval`.
pub mod statsd;
/// On-disk formats (go-diskqueue, nsqd.dat), the data-path lock, and disk queue IO.
pub mod storage;
/// The TCP socket options Go (so nsqd) sets on every connection.
pub mod tcp_options;
/// TLS configuration from the --tls-* flags.
pub mod tls;
/// Single-waiter wake-ups between tasks on one core.
pub mod wakeup;
