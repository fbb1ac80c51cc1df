//! Consuming: a subscribed connection sets its RDY once and FINs every message as soon as it is
//! read, counting deliveries and, where bodies carry a send time, recording latency on receipt.

use std::sync::atomic::Ordering;

use super::{is_heartbeat, stamp_of};
use crate::bench::client::{self, Conn, Frame};
use crate::bench::histogram::Latencies;
use crate::bench::run::Shared;

/// Reads, FINs and counts until the connection or the run ends. With `latencies`, a message
/// whose stamped send time falls in the measured window is recorded from that time to now.
pub async fn consume_loop(
    shared: &Shared,
    core: usize,
    conn: &mut Conn,
    mut latencies: Option<&mut Latencies>,
) -> std::io::Result<()> {
    let counters = shared.core(core);
    client::put_rdy(&mut conn.wbuf, shared.args.rdy);
    conn.flush().await?;
    loop {
        if conn.fill().await? == 0 {
            return Err(client::closed());
        }
        let now_ns = shared.now_ns();
        let mut delivered = 0u64;
        while let Some((frame, used)) = client::parse_frame(&conn.rbuf).map_err(client::invalid)? {
            match frame {
                Frame::Message { id, body, .. } => {
                    client::put_fin(&mut conn.wbuf, id);
                    delivered += 1;
                    if let (Some(lat), Some(sent)) = (latencies.as_deref_mut(), stamp_of(body))
                        && shared.in_window(sent)
                    {
                        lat.record_ns(now_ns as i64 - sent as i64);
                    }
                }
                f if is_heartbeat(&f) => client::put_nop(&mut conn.wbuf),
                Frame::Response(_) => {}
                // FIN/REQ failures are non-fatal: note them and go on.
                Frame::Error(text) => shared.error(client::broker_error(text)),
            }
            conn.rbuf.advance(used);
        }
        if delivered > 0 {
            counters.received.fetch_add(delivered, Ordering::Relaxed);
        }
        conn.flush().await?;
    }
}
