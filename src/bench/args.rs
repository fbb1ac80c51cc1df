//! nsq-bench's command line: one subcommand per mode, the load options they share, and the
//! checks that keep a run bounded and on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The longest run accepted: a load generator must stop by itself.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most connections one run may open.
pub const MAX_CONNECTIONS: usize = 20_000;
/// Largest message body (nsqd's default `--max-msg-size`).
pub const MAX_SIZE: usize = 1 << 20;
/// Most messages in one MPUB.
pub const MAX_BATCH: usize = 10_000;
/// Bytes of the body that carry the send time in `pubsub` and `latency`.
pub const TIMESTAMP_BYTES: usize = 8;

/// nsq-bench: load generator for nsqd-compatible brokers.
#[derive(Debug, Parser)]
#[command(name = "nsq-bench", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// A benchmark mode, or plotting a results CSV.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish as fast as acknowledged: PUB, or MPUB with --batch N.
    Pub(LoadArgs),
    /// Preload --count messages, then consume them (RDY --rdy, FIN each).
    Sub(LoadArgs),
    /// Publish and consume at once, end to end (bounded backlog).
    Pubsub(LoadArgs),
    /// Open loop at a fixed --rate: latency from each message's intended send time.
    Latency(LoadArgs),
    /// Framed loopback echo between two glommio sockets: the machine's ceiling, no broker (with
    /// --rate, open loop: the latency floor).
    Raw(LoadArgs),
    /// Hold --connections idle connections; with --broker-pid, the broker's RSS per connection.
    Idle(LoadArgs),
    /// Serve the raw baseline on --nsqd-tcp-address (port 0 picks one) in its own process, in
    /// place of a broker, for --duration or until killed.
    RawServer(LoadArgs),
    /// Draw SVG charts from a results CSV written by scripts/bench.sh.
    Plot(PlotArgs),
    /// Print a topic name that nsqd-uring with --cores N places on core --core, so a run can
    /// choose where its topic lives instead of leaving it to the name's hash.
    TopicOnCore(TopicOnCoreArgs),
    /// Print the CPU time process --pid has used so far, in nanoseconds, so scripts can time a
    /// broker under another load tool as precisely as nsq-bench times it (`/proc/<pid>/stat`
    /// counts 10 ms ticks).
    CpuTime(CpuTimeArgs),
}

/// What the raw echo server sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RawReply {
    /// Every frame comes back (the ceiling for pubsub: bytes cross the socket twice).
    Echo,
    /// One small frame per batch (the ceiling for pub: bytes cross once, like PUB/OK).
    Ack,
}

/// Options shared by the load modes.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Broker address (loopback only).
    #[arg(long, default_value = "127.0.0.1:4150", value_parser = parse_loopback)]
    pub nsqd_tcp_address: SocketAddr,
    /// Topic name; with --topics N > 1, `<topic>_<i>` for i in 0..N.
    #[arg(long, default_value = "nsq_bench")]
    pub topic: String,
    /// Channel name.
    #[arg(long, default_value = "nsq_bench")]
    pub channel: String,
    /// Topics to spread connections over (so load reaches every broker shard).
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Messages per publish: 1 = PUB, more = MPUB.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Publishing connections (and as many consuming ones in pubsub/latency).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Executors (one per core) to spread connections over.
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// CPUs to pin the executors to (comma list); default: the first --cores allowed CPUs.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// raw: run the echo server in this process on these CPUs; without it, raw connects to
    /// --nsqd-tcp-address where `nsq-bench raw-server` listens.
    #[arg(long, value_delimiter = ',')]
    pub server_cpus: Vec<usize>,
    /// Measured time, e.g. `10s`, `500ms`, `1m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring (not counted).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// latency, raw echo: offered messages per second (all connections together, open loop);
    /// pub: a cap (0 = none).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// RDY per consuming connection.
    #[arg(long, default_value_t = 2500)]
    pub rdy: u64,
    /// Stop after this many messages (0 = by time only); sub: how many to preload.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// pub: commands in flight per connection before waiting for a response.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// pubsub/raw: most messages published and not yet received, over all connections.
    #[arg(long, default_value_t = 20_000)]
    pub window: u64,
    /// Consumers IDENTIFY with this output_buffer_timeout (ms, -1 = none); unset: no IDENTIFY.
    #[arg(long, allow_negative_numbers = true)]
    pub output_buffer_timeout: Option<i64>,
    /// raw: echo every frame, or one ack per batch.
    #[arg(long, value_enum, default_value_t = RawReply::Echo)]
    pub raw_reply: RawReply,
    /// Executors spin this many microseconds before parking (0 = park at once): glommio's park
    /// costs a membarrier and ring re-arming, which a busy-ish generator may not want to pay.
    #[arg(long, default_value_t = 0)]
    pub spin_before_park_us: u64,
    /// Broker process to sample CPU time and RSS from (/proc).
    #[arg(long)]
    pub broker_pid: Option<i32>,
    /// Free text copied into the report (which broker, which run).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Free text naming the run's place in a matrix (copied into the report).
    #[arg(long, default_value = "")]
    pub tag: String,
    /// Append the result as a row to this CSV file (header written when new).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of the `plot` subcommand.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// The results CSV.
    #[arg(long)]
    pub csv: PathBuf,
    /// Where to write the SVG files and summary.md (default: next to the CSV).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The label of the broker under test (others are compared with it).
    #[arg(long, default_value = "nsqd-uring")]
    pub ours: String,
}

/// Options of the `topic-on-core` subcommand.
#[derive(Debug, Clone, Args)]
pub struct TopicOnCoreArgs {
    /// The name starts with this.
    #[arg(long)]
    pub prefix: String,
    /// The name ends with this (for example `#ephemeral`).
    #[arg(long, default_value = "")]
    pub suffix: String,
    /// The core that must own the topic (0-based).
    #[arg(long)]
    pub core: usize,
    /// The broker's --cores.
    #[arg(long)]
    pub cores: usize,
}

/// Options of the `cpu-time` subcommand.
#[derive(Debug, Clone, Args)]
pub struct CpuTimeArgs {
    /// The process to read.
    #[arg(long)]
    pub pid: i32,
}

/// Which load mode is running (for checks that differ by mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// See [`Command::Pub`].
    Pub,
    /// See [`Command::Sub`].
    Sub,
    /// See [`Command::Pubsub`].
    Pubsub,
    /// See [`Command::Latency`].
    Latency,
    /// See [`Command::Raw`].
    Raw,
    /// See [`Command::Idle`].
    Idle,
    /// See [`Command::RawServer`].
    RawServer,
}

impl Mode {
    /// The name used in reports and the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pub => "pub",
            Mode::Sub => "sub",
            Mode::Pubsub => "pubsub",
            Mode::Latency => "latency",
            Mode::Raw => "raw",
            Mode::Idle => "idle",
            Mode::RawServer => "raw-server",
        }
    }
}

impl LoadArgs {
    /// Checks the combination for `mode`; the message says which option to change.
    pub fn validate(&self, mode: Mode) -> Result<(), String> {
        let check = |ok: bool, msg: &str| if ok { Ok(()) } else { Err(msg.to_string()) };
        check(
            (1..=MAX_SIZE).contains(&self.size),
            "--size must be 1..=1048576",
        )?;
        check(
            (1..=MAX_BATCH).contains(&self.batch),
            "--batch must be 1..=10000",
        )?;
        check(
            (1..=MAX_CONNECTIONS).contains(&self.connections),
            "--connections must be 1..=20000",
        )?;
        check(self.cores >= 1, "--cores must be at least 1")?;
        check(
            self.cpus.is_empty() || self.cpus.len() >= self.cores,
            "--cpus must list at least --cores CPUs",
        )?;
        check(
            self.topics >= 1 && self.topics <= self.connections.max(1),
            "--topics must be 1..=--connections",
        )?;
        check(
            !self.duration.is_zero() && self.duration <= MAX_DURATION,
            "--duration must be >0 and at most 1h",
        )?;
        check(self.warmup <= MAX_DURATION, "--warmup must be at most 1h")?;
        check(self.rdy >= 1, "--rdy must be at least 1")?;
        check(self.pipeline >= 1, "--pipeline must be at least 1")?;
        check(self.window >= 1, "--window must be at least 1")?;
        check(!self.topic.is_empty(), "--topic must not be empty")?;
        match mode {
            Mode::Latency => {
                check(self.rate > 0, "latency needs --rate (messages per second)")?;
                check(
                    self.size >= TIMESTAMP_BYTES,
                    "latency needs --size of at least 8 (the send time is in the body)",
                )
            }
            Mode::Pubsub => check(
                self.size >= TIMESTAMP_BYTES,
                "pubsub needs --size of at least 8 (the send time is in the body)",
            ),
            Mode::Sub => check(self.count > 0, "sub needs --count (messages to preload)"),
            Mode::Raw if self.rate > 0 => {
                check(
                    self.raw_reply == RawReply::Echo,
                    "raw --rate (open loop) needs --raw-reply echo",
                )?;
                check(
                    self.size >= TIMESTAMP_BYTES,
                    "raw --rate needs --size of at least 8 (the send time is in the body)",
                )
            }
            _ => Ok(()),
        }
    }

    /// Topic for connection `i`: spread round-robin over `--topics`.
    pub fn topic_for(&self, i: usize) -> String {
        if self.topics <= 1 {
            self.topic.clone()
        } else {
            topic_name(&self.topic, i % self.topics)
        }
    }
}

/// `<base>_<i>`, keeping a `#ephemeral` suffix at the end where nsqd requires it.
pub fn topic_name(base: &str, i: usize) -> String {
    match base.strip_suffix("#ephemeral") {
        Some(stem) => format!("{stem}_{i}#ephemeral"),
        None => format!("{base}_{i}"),
    }
}

/// A socket address on loopback: this tool never loads another machine.
pub fn parse_loopback(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|e| format!("{s:?} is not ip:port ({e})"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address"));
    }
    Ok(addr)
}

/// A duration: `250ms`, `10s`, `1.5s`, `2m`, `500us`, or bare seconds (`3`, `0.2`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 10s or 500ms)"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use us, ms, s or m)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("{s:?} is longer than an hour"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("nsq-bench").chain(args.iter().copied()))
    }

    fn load(args: &[&str]) -> LoadArgs {
        match parse(args).expect("parses").command {
            Command::Pub(a)
            | Command::Sub(a)
            | Command::Pubsub(a)
            | Command::Latency(a)
            | Command::Raw(a)
            | Command::Idle(a)
            | Command::RawServer(a) => a,
            Command::Plot(_) | Command::TopicOnCore(_) | Command::CpuTime(_) => {
                panic!("not a load run")
            }
        }
    }

    #[test]
    fn defaults_are_a_sane_pub_run() {
        let a = load(&["pub"]);
        assert_eq!(a.nsqd_tcp_address, "127.0.0.1:4150".parse().unwrap());
        assert_eq!((a.size, a.batch, a.connections, a.cores), (200, 1, 16, 1));
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert!(!a.json);
        assert!(a.validate(Mode::Pub).is_ok());
    }

    #[test]
    fn every_documented_flag_parses() {
        let a = load(&[
            "latency",
            "--nsqd-tcp-address",
            "127.0.0.1:4999",
            "--topic",
            "t#ephemeral",
            "--channel",
            "c",
            "--size",
            "64",
            "--batch",
            "100",
            "--connections",
            "4",
            "--cores",
            "2",
            "--cpus",
            "0,1",
            "--duration",
            "1.5s",
            "--warmup",
            "250ms",
            "--rate",
            "5000",
            "--rdy",
            "10",
            "--output-buffer-timeout",
            "-1",
            "--broker-pid",
            "42",
            "--json",
        ]);
        assert_eq!(a.nsqd_tcp_address.port(), 4999);
        assert_eq!((a.size, a.batch, a.connections, a.cores), (64, 100, 4, 2));
        assert_eq!(a.cpus, vec![0, 1]);
        assert_eq!(a.duration, Duration::from_millis(1500));
        assert_eq!(a.warmup, Duration::from_millis(250));
        assert_eq!((a.rate, a.rdy), (5000, 10));
        assert_eq!(a.output_buffer_timeout, Some(-1));
        assert_eq!(a.broker_pid, Some(42));
        assert!(a.json);
        assert!(a.validate(Mode::Latency).is_ok());
    }

    #[test]
    fn refuses_non_loopback_and_garbage() {
        assert!(parse(&["pub", "--nsqd-tcp-address", "10.0.0.1:4150"]).is_err());
        assert!(parse(&["pub", "--nsqd-tcp-address", "localhost"]).is_err());
        assert!(parse(&["pub", "--size", "-3"]).is_err());
        assert!(parse(&["pub", "--duration", "forever"]).is_err());
        assert!(parse(&["pub", "--bogus"]).is_err());
        assert!(parse(&["nope"]).is_err());
        assert!(parse(&["pub", "--nsqd-tcp-address", "[::1]:4150"]).is_ok());
    }

    #[test]
    fn mode_checks_keep_runs_bounded_and_meaningful() {
        let a = load(&["latency"]);
        assert!(a.validate(Mode::Latency).unwrap_err().contains("--rate"));
        let a = load(&["latency", "--rate", "10", "--size", "4"]);
        assert!(a.validate(Mode::Latency).unwrap_err().contains("--size"));
        assert!(load(&["sub"]).validate(Mode::Sub).is_err());
        assert!(load(&["sub", "--count", "10"]).validate(Mode::Sub).is_ok());
        let open_ack = load(&["raw", "--rate", "10", "--raw-reply", "ack"]);
        assert!(open_ack.validate(Mode::Raw).unwrap_err().contains("echo"));
        let short = load(&["raw", "--rate", "10", "--size", "4"]);
        assert!(short.validate(Mode::Raw).unwrap_err().contains("--size"));
        assert!(load(&["raw", "--rate", "10"]).validate(Mode::Raw).is_ok());
        assert!(load(&["raw", "--size", "4"]).validate(Mode::Raw).is_ok());
        assert!(load(&["pub", "--size", "0"]).validate(Mode::Pub).is_err());
        assert!(load(&["pub", "--batch", "0"]).validate(Mode::Pub).is_err());
        assert!(
            load(&["pub", "--connections", "20001"])
                .validate(Mode::Pub)
                .is_err()
        );
        assert!(
            load(&["pub", "--duration", "0s"])
                .validate(Mode::Pub)
                .is_err()
        );
        assert!(parse(&["pub", "--duration", "2h"]).is_err());
        assert!(
            load(&["pub", "--cores", "2", "--cpus", "0"])
                .validate(Mode::Pub)
                .is_err()
        );
        assert!(
            load(&["pub", "--topics", "17"])
                .validate(Mode::Pub)
                .is_err()
        );
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("1e9").is_err());
    }

    #[test]
    fn topics_spread_and_keep_ephemeral_suffix() {
        let a = load(&["pub", "--topic", "b#ephemeral", "--topics", "3"]);
        assert_eq!(a.topic_for(4), "b_1#ephemeral");
        let a = load(&["pub", "--topic", "b"]);
        assert_eq!(a.topic_for(4), "b");
        assert_eq!(topic_name("x", 2), "x_2");
    }

    #[test]
    fn plot_takes_a_csv() {
        match parse(&["plot", "--csv", "r.csv"]).unwrap().command {
            Command::Plot(p) => {
                assert_eq!(p.csv, PathBuf::from("r.csv"));
                assert!(p.out.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cpu_time_needs_a_pid() {
        match parse(&["cpu-time", "--pid", "42"]).unwrap().command {
            Command::CpuTime(c) => assert_eq!(c.pid, 42),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["cpu-time"]).is_err());
        assert!(parse(&["cpu-time", "--pid", "x"]).is_err());
    }
}
