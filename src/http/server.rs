//! One core's HTTP (or HTTPS) server: accepts on the core's `SO_REUSEPORT` listener and serves
//! each connection with hyper's HTTP/1 state machine as a task of this core. Header reads are
//! bounded in time and size so slow or oversized headers cannot hold a connection or memory.
//! The HTTPS listener runs the same handlers behind a rustls handshake; under
//! `--tls-required=true` the plain listener answers every request with nsqd's 403.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsAcceptor;
use glommio::net::{TcpListener, TcpStream};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use rustls::ServerConfig;

use super::HttpShared;
use super::handlers;
use super::response;
use super::rt::{GlommioIo, GlommioTimer};
use crate::options::TlsRequired;
use crate::shard::Shard;

/// A client must send a request's complete header within this time (slowloris). hyper starts
/// this clock when it waits for a request head, so it is also how long an idle keep-alive
/// connection stays open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// hyper's read buffer limit, which bounds a request's header block (larger: 431).
pub const MAX_HEADER_BUFFER: usize = 64 * 1024;
/// A socket read or write that makes no progress for this long ends the connection (idle
/// keep-alive connections, stalled bodies, clients that stop reading).
pub const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// What a request handler can reach: its core's shard and the process-wide HTTP state.
pub struct HttpContext {
    /// The core serving the request.
    pub shard: Rc<Shard>,
    /// Options, ports, start time.
    pub shared: Arc<HttpShared>,
}

/// Serves HTTP on `listener` until the task is dropped (shutdown); with `tls`, HTTPS.
pub async fn serve(
    shard: Rc<Shard>,
    shared: Arc<HttpShared>,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
) {
    let ctx = Rc::new(HttpContext { shard, shared });
    let tls = tls.map(TlsAcceptor::from);
    let mut builder = http1::Builder::new();
    builder
        .timer(GlommioTimer)
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BUFFER)
        .title_case_headers(true);
    let builder = Rc::new(builder);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let conn = connection(ctx.clone(), builder.clone(), stream, tls.clone());
                glommio::spawn_local(conn).detach();
            }
            Err(e) => {
                // EMFILE and friends: log, back off briefly, keep serving the others.
                tracing::error!("HTTP: accept error - {e}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts an open HTTP connection on its shard for as long as it lives.
struct Open(Rc<HttpContext>);

impl Open {
    fn new(ctx: Rc<HttpContext>) -> Self {
        let c = &ctx.shard.http_connections;
        c.set(c.get() + 1);
        Open(ctx)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let c = &self.0.shard.http_connections;
        c.set(c.get().saturating_sub(1));
    }
}

async fn connection(
    ctx: Rc<HttpContext>,
    builder: Rc<http1::Builder>,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
) {
    let Ok(remote) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    crate::tcp_options::apply_go_defaults(&stream);
    // nsqd's plain listener refuses everything when TLS is required everywhere.
    let refuse_plain = tls.is_none() && ctx.shared.options().tls_required == TlsRequired::All;
    let open = Open::new(ctx);
    let service = service_fn(|req| {
        let ctx = open.0.clone();
        async move {
            if refuse_plain {
                return Ok::<_, Infallible>(response::tls_required(ctx.shared.https_port()));
            }
            Ok::<_, Infallible>(handlers::handle(&ctx, req, remote).await)
        }
    });
    let served = match tls {
        None => builder.serve_connection(GlommioIo(stream), service).await,
        Some(acceptor) => {
            let handshake = async { Some(acceptor.accept(stream).await) };
            let deadline = async {
                glommio::timer::sleep(HEADER_READ_TIMEOUT).await;
                None
            };
            match futures_lite::future::or(handshake, deadline).await {
                Some(Ok(stream)) => builder.serve_connection(GlommioIo(stream), service).await,
                Some(Err(e)) => {
                    tracing::debug!("HTTPS: TLS handshake with {remote} failed - {e}");
                    return;
                }
                None => {
                    tracing::debug!("HTTPS: TLS handshake with {remote} timed out");
                    return;
                }
            }
        }
    };
    if let Err(e) = served {
        tracing::debug!("HTTP: connection from {remote} ended - {e}");
    }
}
