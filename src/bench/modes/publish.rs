//! Closed-loop publishing: each connection keeps up to `--pipeline` PUB/MPUB commands
//! outstanding and sends the next as responses come back, as NSQ's bench_writer does with one.
//! Used by `pub`, by the publishing half of `pubsub` (with a bounded backlog), and to preload
//! `sub`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;

use super::stamp;
use crate::bench::client::{self, Conn};
use crate::bench::run::Shared;

/// How long a publisher waits when the consumers are a whole window behind.
const WINDOW_WAIT: Duration = Duration::from_micros(100);
/// Preload commands outstanding per connection.
const PRELOAD_PIPELINE: u64 = 4;

/// What one publishing connection sends.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// Topic.
    pub topic: String,
    /// Body size.
    pub size: usize,
    /// Messages per command (1 = PUB).
    pub batch: usize,
    /// Commands outstanding.
    pub pipeline: usize,
    /// Put the send time in each body (for end-to-end latency).
    pub stamp: bool,
    /// Hold back while `--window` messages are published and not yet received.
    pub windowed: bool,
}

/// Appends one PUB (batch 1) or MPUB of `batch` bodies of `size` bytes, each stamped with
/// `t_ns` when given.
pub fn put_publish(out: &mut BytesMut, topic: &str, size: usize, batch: usize, t_ns: Option<u64>) {
    if batch <= 1 {
        client::put_pub(out, topic, &[]);
        // PUB's length field and body are written in place to avoid a temporary body.
        let len_at = out.len() - 4;
        out[len_at..].copy_from_slice(&(size as u32).to_be_bytes());
        out.resize(out.len() + size, 0);
        if let Some(t) = t_ns {
            let body_at = out.len() - size;
            stamp(&mut out[body_at..], t);
        }
    } else {
        client::put_mpub(out, topic, batch, size, |_, body| {
            if let Some(t) = t_ns {
                stamp(body, t);
            }
        });
    }
}

/// Reads until at least one response is complete; returns how many (heartbeats are answered).
pub async fn read_responses(conn: &mut Conn) -> std::io::Result<usize> {
    loop {
        let n = conn.take_responses()?;
        if !conn.wbuf.is_empty() {
            conn.flush().await?;
        }
        if n > 0 {
            return Ok(n);
        }
        if conn.fill().await? == 0 {
            return Err(client::closed());
        }
    }
}

fn may_send(shared: &Shared, p: &Publisher) -> bool {
    if !shared.sending() {
        return false;
    }
    let args = &shared.args;
    if !p.windowed && args.count == 0 {
        return true;
    }
    let (sent, received) = shared.totals();
    if p.windowed {
        // pubsub ends on --count received (the clock's job); here only the backlog matters.
        return sent.saturating_sub(received) < args.window;
    }
    sent < args.count
}

/// Publishes until the run stops sending, counting acknowledged messages on `core`.
pub async fn publish_loop(
    shared: &Shared,
    core: usize,
    conn: &mut Conn,
    p: &Publisher,
) -> std::io::Result<()> {
    let counters = shared.core(core);
    let mut outstanding = 0usize;
    loop {
        while outstanding < p.pipeline && may_send(shared, p) {
            let t = p.stamp.then(|| shared.now_ns());
            put_publish(&mut conn.wbuf, &p.topic, p.size, p.batch, t);
            outstanding += 1;
        }
        if outstanding == 0 {
            if !shared.sending() {
                return Ok(());
            }
            glommio::timer::sleep(WINDOW_WAIT).await;
            continue;
        }
        conn.flush().await?;
        let n = read_responses(conn).await?.min(outstanding);
        outstanding -= n;
        counters
            .sent
            .fetch_add((n * p.batch) as u64, Ordering::Relaxed);
    }
}

/// Publishes exactly `count` messages (MPUB of `batch`), uncounted: the backlog `sub` drains.
pub async fn preload(
    conn: &mut Conn,
    topic: &str,
    size: usize,
    batch: usize,
    count: u64,
) -> std::io::Result<()> {
    let batch = batch.max(1) as u64;
    let (mut queued, mut outstanding) = (0u64, 0u64);
    while queued < count || outstanding > 0 {
        while queued < count && outstanding < PRELOAD_PIPELINE {
            let n = (count - queued).min(batch) as usize;
            // MPUB even for one message, so a preload batch of 1 still works.
            client::put_mpub(&mut conn.wbuf, topic, n, size, |_, _| {});
            queued += n as u64;
            outstanding += 1;
        }
        conn.flush().await?;
        outstanding -= (read_responses(conn).await? as u64).min(outstanding);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pub_body_is_written_in_place_and_stamped() {
        let mut b = BytesMut::new();
        put_publish(&mut b, "t", 10, 1, Some(7));
        let mut want = b"PUB t\n\0\0\0\x0a".to_vec();
        want.extend_from_slice(&7u64.to_be_bytes());
        want.extend_from_slice(&[0, 0]);
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn mpub_stamps_every_body() {
        let mut b = BytesMut::new();
        put_publish(&mut b, "t", 8, 3, Some(9));
        let bodies = &b[b"MPUB t\n".len() + 8..];
        for i in 0..3 {
            let body = &bodies[i * 12 + 4..i * 12 + 12];
            assert_eq!(body, &9u64.to_be_bytes());
        }
        let mut plain = BytesMut::new();
        put_publish(&mut plain, "t", 8, 1, None);
        assert!(plain.ends_with(&[0; 8]));
    }
}
