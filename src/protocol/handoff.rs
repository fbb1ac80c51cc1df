//! Connection affinity: moving a connection to the core that owns its topic.
//!
//! The kernel spreads connections over the cores' `SO_REUSEPORT` listeners by a hash of the
//! address pair, so a producer or consumer usually lands on a core that does not own its
//! topic, and every command it sends then crosses the mesh and back. Most clients publish to,
//! or consume from, one topic; when a plain connection's first PUB/MPUB/DPUB/SUB is for
//! another core's topic, its reader hands the socket, the protocol state and the unread bytes
//! to that core, which carries on from that very command. The client sees nothing but the
//! answers it expects.
//!
//! Only connections with nothing core-bound to carry move: no TLS or compression (their
//! stream state), no AUTH (the cached authorisations), nothing published or subscribed yet,
//! and nothing left to write.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use bytes::Bytes;

use super::codec::{ClientState, Command};
use super::identify::ClientSettings;

/// Everything a core needs to carry on serving a connection another core started.
#[derive(Debug)]
pub struct MovingConnection {
    /// The socket (a duplicate: the old core closed its own descriptor).
    pub fd: OwnedFd,
    /// Process-wide connection ID (kept, so logs and stats follow the client).
    pub conn_id: u64,
    /// The peer.
    pub remote: SocketAddr,
    /// Unix seconds at accept.
    pub connect_ts: i64,
    /// Protocol state (`Init` after IDENTIFY or not).
    pub state: ClientState,
    /// IDENTIFY-negotiated settings.
    pub settings: ClientSettings,
    /// IDENTIFY `client_id` (or the remote host).
    pub client_id: String,
    /// IDENTIFY `hostname` (or the remote host).
    pub hostname: String,
    /// IDENTIFY `user_agent`.
    pub user_agent: String,
    /// Read size hint, so the new core reads as the old one did.
    pub read_hint: usize,
    /// The command that triggered the move: the new core handles it first.
    pub command: Command,
    /// Bytes read after that command and not decoded yet.
    pub unread: Bytes,
}

/// Whether a command may take its connection along to the topic's owner core, and to which
/// topic: the first publish or subscription of a connection.
pub fn topic_of(cmd: &Command) -> Option<&str> {
    match cmd {
        Command::Pub { topic, .. }
        | Command::Mpub { topic, .. }
        | Command::Dpub { topic, .. }
        | Command::Sub { topic, .. } => Some(topic),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_publishes_and_subscriptions_name_a_topic() {
        let body = Bytes::from_static(b"x");
        let pubc = Command::Pub {
            topic: "t".into(),
            body: body.clone(),
        };
        let sub = Command::Sub {
            topic: "s".into(),
            channel: "c".into(),
        };
        assert_eq!(topic_of(&pubc), Some("t"));
        assert_eq!(topic_of(&sub), Some("s"));
        assert_eq!(topic_of(&Command::Nop), None);
        assert_eq!(topic_of(&Command::Identify(body)), None);
    }
}
