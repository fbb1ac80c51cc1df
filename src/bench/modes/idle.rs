//! Idle connections: open `--connections` V2 connections, send only the magic, and hold them
//! through the run, so the broker's resident memory per idle connection can be read from /proc.

use crate::bench::client::Conn;
use crate::bench::run::{POLL, Shared};

/// Opens this executor's share of idle connections; they close when the returned value drops.
pub async fn open(shared: &Shared, count: usize) -> Vec<Conn> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        match Conn::connect(shared.args.nsqd_tcp_address).await {
            Ok(c) => held.push(c),
            Err(e) => {
                shared.error(format!("idle connect #{}: {e}", held.len()));
                break;
            }
        }
    }
    held
}

/// Holds the connections until the run stops.
pub async fn hold(shared: &Shared, held: Vec<Conn>) {
    while !shared.stopped() {
        glommio::timer::sleep(POLL * 10).await;
    }
    drop(held);
}
