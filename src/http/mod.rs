//! nsqd's HTTP API (`/ping`, `/info`, `/stats`, `/pub`, `/mpub`, topic and channel
//! administration, `/config/:opt`) and a Prometheus `/metrics`, served on every core.
//!
//! Each core accepts on its own `SO_REUSEPORT` listener and runs hyper's HTTP/1 server on its
//! glommio executor (`rt` adapts hyper's IO and timer traits). A request that touches a topic is
//! served by the topic's owner core, in place or one mesh round trip away; `/stats` and
//! `/metrics` gather one snapshot from every core in one mesh round.
//!
//! Modules, one job each: `server` (accept loop, hyper setup), `rt` (hyper on glommio),
//! `router` (httprouter's behaviour), `query` (Go's URL decoding), `response` (nsqd's response
//! conventions), `json` (Go's JSON escaping), `handlers` (one file per endpoint family),
//! `stats` (`/stats` JSON and text), `metrics` (Prometheus text).

mod handlers;
pub(crate) mod json;
mod metrics;
pub mod mpub;
pub mod query;
mod response;
mod router;
mod rt;
mod server;
mod stats;

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::options::Options;

pub use rt::GlommioIo;
pub use server::serve;

/// What every core's HTTP API shares: the live options (`PUT /config` changes them), the
/// listening ports and the start time.
#[derive(Debug)]
pub struct HttpShared {
    options: RwLock<Options>,
    start_unix: i64,
    started: Instant,
    tcp_port: AtomicI32,
    http_port: AtomicI32,
    https_port: AtomicI32,
}

impl HttpShared {
    /// State for a process started now with `options`.
    pub fn new(options: Options) -> Self {
        let start_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        HttpShared {
            options: RwLock::new(options),
            start_unix,
            started: Instant::now(),
            tcp_port: AtomicI32::new(-1),
            http_port: AtomicI32::new(-1),
            https_port: AtomicI32::new(-1),
        }
    }

    /// Records the bound ports and fills in what nsqd derives from them at start-up: the
    /// broadcast ports when left at 0, and `%s` in `--statsd-prefix`.
    pub fn listening(&self, tcp_port: u16, http_port: Option<u16>) {
        self.tcp_port.store(i32::from(tcp_port), Ordering::Relaxed);
        if let Some(p) = http_port {
            self.http_port.store(i32::from(p), Ordering::Relaxed);
        }
        let mut o = self.options_mut();
        if o.broadcast_tcp_port == 0 {
            o.broadcast_tcp_port = i64::from(tcp_port);
        }
        if let (0, Some(p)) = (o.broadcast_http_port, http_port) {
            o.broadcast_http_port = i64::from(p);
        }
        let expanded = crate::statsd::expand_prefix(
            &o.statsd_prefix,
            &o.broadcast_address,
            o.broadcast_http_port,
        );
        o.statsd_prefix = expanded;
    }

    /// The options as they are now.
    pub fn options(&self) -> RwLockReadGuard<'_, Options> {
        self.options.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn options_mut(&self) -> RwLockWriteGuard<'_, Options> {
        self.options.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the live options (`PUT /config/:opt`).
    pub fn set_option(&self, change: impl FnOnce(&mut Options)) {
        change(&mut self.options_mut());
    }

    /// Unix seconds at start-up.
    pub fn start_unix(&self) -> i64 {
        self.start_unix
    }

    /// When the process started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The TCP listener's port (-1 before it is bound).
    pub fn tcp_port(&self) -> i32 {
        self.tcp_port.load(Ordering::Relaxed)
    }

    /// The HTTP listener's port (-1 before it is bound).
    pub fn http_port(&self) -> i32 {
        self.http_port.load(Ordering::Relaxed)
    }

    /// Records the HTTPS listener's port (the plain listener's `TLS_REQUIRED` answer names it).
    pub fn set_https_port(&self, port: u16) {
        self.https_port.store(i32::from(port), Ordering::Relaxed);
    }

    /// The HTTPS listener's port (-1 when there is none).
    pub fn https_port(&self) -> i32 {
        self.https_port.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_fills_broadcast_ports_and_statsd_prefix() {
        let opts = Options {
            broadcast_address: "ip-10-0-0-1.ec2".into(),
            ..Options::default()
        };
        let shared = HttpShared::new(opts);
        shared.listening(4150, Some(4151));
        let o = shared.options();
        assert_eq!((o.broadcast_tcp_port, o.broadcast_http_port), (4150, 4151));
        assert_eq!(o.statsd_prefix, "nsq.ip-10-0-0-1_ec2_4151.");
        drop(o);
        assert_eq!((shared.tcp_port(), shared.http_port()), (4150, 4151));
    }
}
