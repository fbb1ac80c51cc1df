//! The socket options Go puts on every TCP connection, so nsqd's: clients, nsqlookupd and the
//! auth server see the same TCP behaviour from nsqd-uring as from the broker it replaces.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{setsockopt, sockopt};

/// Go's keep-alive period (`net.ListenConfig` and `net.Dialer` default): idle time before the
/// first probe and time between probes, in seconds.
pub const KEEPALIVE_SECS: u32 = 15;

/// Sets `TCP_NODELAY` and 15 s keep-alive on `socket`, as Go's listener and dialer do.
///
/// Without `TCP_NODELAY`, Nagle's algorithm holds a small frame written while the previous one
/// is unacknowledged until the peer's delayed ACK (~40 ms). Without keep-alive, a peer whose
/// host vanished keeps its connection (and, for a consumer, its in-flight messages' owner)
/// until the heartbeat notices, and forever with heartbeats off. Failures are ignored, as Go
/// ignores them: the connection works either way.
pub fn apply_go_defaults(socket: &impl AsRawFd) {
    // SAFETY: the descriptor belongs to `socket`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) };
    let _ = setsockopt(&fd, sockopt::TcpNoDelay, &true);
    let _ = setsockopt(&fd, sockopt::KeepAlive, &true);
    let _ = setsockopt(&fd, sockopt::TcpKeepIdle, &KEEPALIVE_SECS);
    let _ = setsockopt(&fd, sockopt::TcpKeepInterval, &KEEPALIVE_SECS);
}
