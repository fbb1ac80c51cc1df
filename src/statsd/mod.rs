//! statsd push (`--statsd-address`): one task on the first core gathers the same stats snapshot
//! `/stats` reads every `--statsd-interval`, renders nsqd's lines (`lines`), packs them into
//! datagrams (`packets`) and sends them over UDP, spread over the interval minus one second
//! as nsqd does (all at once when the interval is 1 s or less).

pub mod lines;
pub mod packets;

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::UdpSocket;

use crate::http::HttpShared;
use crate::shard::Shard;
use crate::stats::{GoMemStats, NodeStats, ProcessFigures, StatsFilter};
pub use lines::expand_prefix;
use lines::{Previous, PushOptions};

/// nsqd leaves the last second of each interval free of sends.
const SPREAD_MARGIN: Duration = Duration::from_secs(1);

/// Longest single sleep, so a shutdown is noticed within it.
const MAX_NAP: Duration = Duration::from_millis(200);

/// Pushes to statsd until shutdown. Options are read from `shared` (the live options, whose
/// `statsd_prefix` is already expanded once the listeners are bound).
pub async fn run(shard: Rc<Shard>, shared: Arc<HttpShared>) {
    let interval = shared.options().statsd_interval;
    if interval.is_zero() {
        // Go's ticker refuses a zero period (nsqd panics); refuse it without crashing.
        tracing::error!("STATSD: --statsd-interval must be positive; not pushing");
        return;
    }
    let mut previous = Previous::default();
    let mut next = Instant::now() + interval;
    loop {
        if !sleep_until(&shard, next).await {
            return;
        }
        let now = Instant::now();
        while next <= now {
            // Like Go's ticker, ticks missed while a push was running are dropped.
            next += interval;
        }
        push(&shard, &shared, &mut previous, interval).await;
    }
}

/// Sleeps until `deadline`; false if shutdown was requested meanwhile.
async fn sleep_until(shard: &Shard, deadline: Instant) -> bool {
    loop {
        if shard.is_shutting_down() {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        glommio::timer::sleep(left.min(MAX_NAP)).await;
    }
}

/// One push: snapshot, lines, datagrams, sends.
async fn push(shard: &Shard, shared: &HttpShared, previous: &mut Previous, interval: Duration) {
    let (address, prefix, exclude_ephemeral, mem_stats, size) = {
        let o = shared.options();
        (
            o.statsd_address.clone(),
            o.statsd_prefix.clone(),
            o.statsd_exclude_ephemeral,
            o.statsd_mem_stats,
            packets::packet_size(o.statsd_udp_packet_size),
        )
    };
    // As nsqd, a round whose socket cannot be set up is skipped (and deltas carry over).
    let socket = match connect(&address).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("failed to create UDP socket to statsd({address}) - {e}");
            return;
        }
    };
    tracing::info!("STATSD: pushing stats to {address}");
    let filter = StatsFilter {
        include_clients: false,
        ..StatsFilter::default()
    };
    let node = NodeStats::merge(&filter, shard.gather_stats(&filter).await);
    let mem = mem_stats.then(|| GoMemStats::from_process(&ProcessFigures::read()));
    let options = PushOptions {
        prefix: &prefix,
        exclude_ephemeral,
        mem,
    };
    let lines = lines::build(node.topic_list(), previous, &options);
    previous.topics = node.topics.unwrap_or_default();
    if let Some(m) = mem {
        previous.gc_runs = m.gc_total_runs;
    }
    let packets = packets::pack(&lines, size);
    let gap = interval.saturating_sub(SPREAD_MARGIN) / packets.len().max(1) as u32;
    for (i, packet) in packets.iter().enumerate() {
        if i > 0 && !gap.is_zero() && !sleep_until(shard, Instant::now() + gap).await {
            // Shutting down: the rest go out at once, as nsqd skips its sleeps on exit.
            for rest in &packets[i..] {
                let _ = socket.send(rest).await;
            }
            return;
        }
        if let Err(e) = socket.send(packet).await {
            // UDP: an unreachable daemon shows up as refused sends; keep going, as nsqd.
            tracing::debug!("STATSD: send to {address} failed - {e}");
        }
    }
}

/// A UDP socket connected to `address` (`host:port`; a host name is resolved here, which
/// blocks this core briefly, as nsqd's dial does its goroutine).
async fn connect(address: &str) -> std::io::Result<UdpSocket> {
    let target: SocketAddr = match address.parse() {
        Ok(a) => a,
        Err(_) => address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address found"))?,
    };
    let local: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(target).await?;
    Ok(socket)
}
