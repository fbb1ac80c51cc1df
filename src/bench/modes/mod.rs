//! The load modes, and what they share: which connections an executor owns, body stamping,
//! subscribing, and running a connection until the run stops.
//!
//! `publish` (closed-loop PUB/MPUB, also the preload of `sub` and the publishing half of
//! `pubsub`), `consume` (SUB, RDY, FIN each), `latency` (the open-loop sender), `raw` (the echo
//! server and its client) and `idle` (held connections) each own one kind of connection loop;
//! `start` wires them into executors for each mode.

pub mod consume;
pub mod idle;
pub mod latency;
pub mod publish;
pub mod raw;
pub mod start;

use std::future::Future;
use std::ops::Range;

use super::client::{self, Conn, Frame};
use super::run::{POLL, Shared};

/// Which of `total` connections executor `core` of `cores` owns (contiguous, sizes differ by at
/// most one).
pub fn connections_of(core: usize, cores: usize, total: usize) -> Range<usize> {
    let cores = cores.max(1);
    let base = total / cores;
    let extra = total % cores;
    let start = core * base + core.min(extra);
    let len = base + usize::from(core < extra);
    start..(start + len).min(total)
}

/// Writes the send time (ns on the run's clock) into the first 8 bytes of a body.
pub fn stamp(body: &mut [u8], t_ns: u64) {
    if let Some(head) = body.get_mut(..8) {
        head.copy_from_slice(&t_ns.to_be_bytes());
    }
}

/// The send time a body carries, if it is long enough to carry one.
pub fn stamp_of(body: &[u8]) -> Option<u64> {
    let head: [u8; 8] = body.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

/// Connects, optionally IDENTIFYs (output buffering), and SUBscribes; returns once SUB is OK.
pub async fn subscribe(
    shared: &Shared,
    topic: &str,
    output_buffer_timeout: Option<i64>,
) -> std::io::Result<Conn> {
    let mut conn = Conn::connect(shared.args.nsqd_tcp_address).await?;
    if let Some(ms) = output_buffer_timeout {
        // -1 also turns off size-based buffering, which is what a latency client wants.
        let json = if ms < 0 {
            r#"{"output_buffer_timeout":-1,"output_buffer_size":-1}"#.to_string()
        } else {
            format!(r#"{{"output_buffer_timeout":{ms}}}"#)
        };
        client::put_identify(&mut conn.wbuf, &json);
        conn.flush().await?;
        conn.expect_ok().await?;
    }
    client::put_sub(&mut conn.wbuf, topic, &shared.args.channel);
    conn.flush().await?;
    conn.expect_ok().await?;
    Ok(conn)
}

/// Runs `work` until it ends or the run stops (dropping it cancels its pending IO), and records
/// its error unless the run was already ending.
pub async fn until_stopped<F>(shared: &Shared, work: F)
where
    F: Future<Output = std::io::Result<()>>,
{
    let stopped = async {
        while !shared.stopped() {
            glommio::timer::sleep(POLL * 10).await;
        }
        Ok(())
    };
    if let Err(e) = futures_lite::future::or(work, stopped).await
        && shared.sending()
    {
        shared.error(e);
    }
}

/// Whether a response frame is a heartbeat (answered with NOP, never counted).
pub fn is_heartbeat(frame: &Frame<'_>) -> bool {
    matches!(frame, Frame::Response(b"_heartbeat_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_split_evenly_and_completely() {
        for cores in 1..5 {
            for total in 0..20 {
                let mut seen = Vec::new();
                for c in 0..cores {
                    let r = connections_of(c, cores, total);
                    assert!(r.len() <= total / cores + 1);
                    seen.extend(r);
                }
                assert_eq!(seen, (0..total).collect::<Vec<_>>(), "{cores} {total}");
            }
        }
    }

    #[test]
    fn stamps_round_trip_and_short_bodies_carry_none() {
        let mut body = [0u8; 12];
        stamp(&mut body, 0x0102_0304_0506_0708);
        assert_eq!(stamp_of(&body), Some(0x0102_0304_0506_0708));
        let mut short = [0u8; 4];
        stamp(&mut short, 5);
        assert_eq!(short, [0; 4]);
        assert_eq!(stamp_of(&short), None);
    }
}
