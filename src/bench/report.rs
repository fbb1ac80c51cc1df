//! A run's result in the three forms it is read in: a few human lines, one JSON object
//! (`--json`), and one row of the results CSV that `scripts/bench.sh` collects and `plot` reads.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::args::{Mode, RawReply};
use super::histogram::LatencySummary;
use super::run::{Measured, Shared, counts_sent};

/// The columns of the results CSV, in order.
pub const CSV_HEADER: &str = "label,tag,mode,size,batch,connections,cores,topics,rate,pipeline,\
raw_reply,duration_s,messages,msgs_per_s,mb_per_s,offered_per_s,p50_us,p90_us,p99_us,p999_us,\
p9999_us,max_us,broker_cpu_s,cpu_ns_per_msg,client_cpu_s,broker_rss_kib,rss_per_conn_bytes,\
unreceived,errors";

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Which broker (or other free text) the run was against.
    pub label: String,
    /// The run's place in a matrix (free text from `--tag`).
    pub tag: String,
    /// Mode name.
    pub mode: &'static str,
    /// Body size.
    pub size: usize,
    /// Messages per publish.
    pub batch: usize,
    /// Connections (per side).
    pub connections: usize,
    /// Executors.
    pub cores: usize,
    /// Topics the load was spread over.
    pub topics: usize,
    /// Offered rate (latency) or 0.
    pub rate: u64,
    /// Commands in flight per publisher.
    pub pipeline: usize,
    /// `echo` or `ack` for raw runs, empty otherwise.
    pub raw_reply: &'static str,
    /// Measured window in seconds.
    pub duration_s: f64,
    /// Messages counted in the window (acknowledged for pub, delivered otherwise).
    pub messages: u64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// Payload megabytes (10^6) per second.
    pub mb_per_s: f64,
    /// Messages per second the publishers got out (differs from delivered when consumers lag).
    pub offered_per_s: f64,
    /// Latency percentiles (latency, pubsub, raw echo).
    pub latency: Option<LatencySummary>,
    /// Broker CPU seconds in the window (user + system).
    pub broker_cpu_s: Option<f64>,
    /// Broker CPU nanoseconds per message.
    pub cpu_ns_per_msg: Option<f64>,
    /// nsq-bench's own CPU seconds in the window.
    pub client_cpu_s: Option<f64>,
    /// Broker RSS at the start of the window.
    pub broker_rss_kib: Option<u64>,
    /// idle: broker RSS growth per connection in bytes.
    pub rss_per_conn_bytes: Option<f64>,
    /// Messages sent and never received by the end of the drain.
    pub unreceived: u64,
    /// Connection failures during the run.
    pub errors: Vec<String>,
    /// The command line that produced the figures (JSON only).
    pub command: String,
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(shared: &Shared, m: &Measured) -> Report {
        let a = &shared.args;
        let secs = m.elapsed.as_secs_f64().max(1e-9);
        let messages = if counts_sent(shared) {
            m.sent
        } else {
            m.received
        };
        let msgs_per_s = messages as f64 / secs;
        let has_latency = m.latencies.count() > 0;
        let rss_per_conn = match (shared.mode, m.broker_rss_before_kib, m.broker_rss_kib) {
            (Mode::Idle, Some(before), Some(after)) => {
                Some((after as f64 - before as f64) * 1024.0 / a.connections as f64)
            }
            _ => None,
        };
        Report {
            label: a.label.clone(),
            tag: a.tag.clone(),
            mode: shared.mode.name(),
            size: a.size,
            batch: a.batch,
            connections: a.connections,
            cores: shared.cores(),
            topics: a.topics,
            rate: a.rate,
            pipeline: a.pipeline,
            raw_reply: match (shared.mode, a.raw_reply) {
                (Mode::Raw, RawReply::Echo) => "echo",
                (Mode::Raw, RawReply::Ack) => "ack",
                _ => "",
            },
            duration_s: secs,
            messages,
            msgs_per_s,
            mb_per_s: msgs_per_s * a.size as f64 / 1e6,
            offered_per_s: m.sent as f64 / secs,
            latency: has_latency.then(|| m.latencies.summary()),
            broker_cpu_s: m.broker_cpu.map(|d| d.as_secs_f64()),
            cpu_ns_per_msg: m
                .broker_cpu
                .filter(|_| messages > 0)
                .map(|d| d.as_nanos() as f64 / messages as f64),
            client_cpu_s: m.client_cpu.map(|d| d.as_secs_f64()),
            broker_rss_kib: m.broker_rss_kib,
            rss_per_conn_bytes: rss_per_conn,
            unreceived: m.unreceived,
            errors: shared.errors(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }

    /// The human-readable lines.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} {} size={} batch={} connections={} cores={}{}: {:.0} msgs/s, {:.2} MB/s over {:.2}s ({} messages)",
            self.label_prefix(),
            self.mode,
            self.size,
            self.batch,
            self.connections,
            self.cores,
            if self.rate > 0 {
                format!(" rate={}", self.rate)
            } else {
                String::new()
            },
            self.msgs_per_s,
            self.mb_per_s,
            self.duration_s,
            self.messages
        );
        if let Some(l) = &self.latency {
            out.push_str(&format!(
                "\n  latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}  ({} samples)",
                l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.p9999_us, l.max_us, l.count
            ));
        }
        if let (Some(cpu), Some(per)) = (self.broker_cpu_s, self.cpu_ns_per_msg) {
            out.push_str(&format!("\n  broker cpu: {cpu:.3}s, {per:.0} ns/msg"));
        }
        if let Some(per) = self.rss_per_conn_bytes {
            out.push_str(&format!(
                "\n  broker rss: {per:.0} bytes per idle connection"
            ));
        }
        if self.unreceived > 0 {
            out.push_str(&format!("\n  unreceived after drain: {}", self.unreceived));
        }
        if !self.errors.is_empty() {
            out.push_str(&format!(
                "\n  {} error(s), first: {}",
                self.errors.len(),
                self.errors[0]
            ));
        }
        out
    }

    fn label_prefix(&self) -> String {
        if self.label.is_empty() {
            String::new()
        } else {
            format!("[{}]", self.label)
        }
    }

    /// The CSV row matching [`CSV_HEADER`].
    pub fn csv_row(&self) -> String {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
        let l = self.latency.unwrap_or_default();
        let lat = |v: f64| {
            if self.latency.is_some() {
                format!("{v:.1}")
            } else {
                String::new()
            }
        };
        [
            csv_text(&self.label),
            csv_text(&self.tag),
            self.mode.to_string(),
            self.size.to_string(),
            self.batch.to_string(),
            self.connections.to_string(),
            self.cores.to_string(),
            self.topics.to_string(),
            self.rate.to_string(),
            self.pipeline.to_string(),
            self.raw_reply.to_string(),
            format!("{:.3}", self.duration_s),
            self.messages.to_string(),
            format!("{:.0}", self.msgs_per_s),
            format!("{:.2}", self.mb_per_s),
            format!("{:.0}", self.offered_per_s),
            lat(l.p50_us),
            lat(l.p90_us),
            lat(l.p99_us),
            lat(l.p999_us),
            lat(l.p9999_us),
            lat(l.max_us),
            opt(self.broker_cpu_s),
            opt(self.cpu_ns_per_msg),
            opt(self.client_cpu_s),
            self.broker_rss_kib
                .map(|v| v.to_string())
                .unwrap_or_default(),
            opt(self.rss_per_conn_bytes),
            self.unreceived.to_string(),
            self.errors.len().to_string(),
        ]
        .join(",")
    }

    /// Appends the CSV row to `path`, writing the header first if the file is new.
    pub fn append_csv(&self, path: &Path) -> std::io::Result<()> {
        let fresh = std::fs::metadata(path)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        if fresh {
            writeln!(f, "{CSV_HEADER}")?;
        }
        writeln!(f, "{}", self.csv_row())
    }
}

/// Free text made safe for a CSV cell without quoting.
fn csv_text(s: &str) -> String {
    s.replace([',', '\n', '\r', '"'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            label: "ours, v1".into(),
            tag: "t".into(),
            mode: "pub",
            size: 200,
            batch: 100,
            connections: 16,
            cores: 2,
            topics: 1,
            rate: 0,
            pipeline: 1,
            raw_reply: "",
            duration_s: 2.0,
            messages: 2_000_000,
            msgs_per_s: 1e6,
            mb_per_s: 200.0,
            offered_per_s: 1e6,
            latency: None,
            broker_cpu_s: Some(1.5),
            cpu_ns_per_msg: Some(750.0),
            client_cpu_s: None,
            broker_rss_kib: Some(1000),
            rss_per_conn_bytes: None,
            unreceived: 0,
            errors: vec![],
            command: "nsq-bench pub".into(),
        }
    }

    #[test]
    fn csv_row_has_one_cell_per_header_column() {
        let r = sample();
        let row = r.csv_row();
        assert_eq!(row.split(',').count(), CSV_HEADER.split(',').count());
        assert!(row.starts_with("ours  v1,t,pub,200,100,16,2,"));
        assert!(row.contains(",1.500,750.000,"));
    }

    #[test]
    fn text_shows_throughput_and_latency_when_present() {
        let mut r = sample();
        assert!(r.text().contains("1000000 msgs/s, 200.00 MB/s"));
        assert!(!r.text().contains("latency"));
        r.latency = Some(LatencySummary {
            count: 10,
            p99_us: 12.5,
            ..LatencySummary::default()
        });
        assert!(r.text().contains("p99 12.5"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["latency"]["p99_us"], 12.5);
    }

    #[test]
    fn csv_file_gets_its_header_once() {
        let dir = std::env::temp_dir().join(format!("nsq-bench-csv-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("r.csv");
        let _ = std::fs::remove_file(&path);
        sample().append_csv(&path).unwrap();
        sample().append_csv(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert_eq!(text.lines().next(), Some(CSV_HEADER));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
