//! What `/stats` shows of a V2 connection beyond its socket: the identity IDENTIFY gave, the
//! protocol state, and how many messages it published per topic (nsqd lists a connection as a
//! producer once it has published). Kept on the connection's own core; read by snapshots.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use crate::mesh::PublishCmd;
use crate::stats::{AuthIdentity, ClientFeatures, ClientIdentity, ClientStats, PubCount};

/// nsqd's client state numbers, as `/stats` reports them.
pub mod state {
    /// Connected, before SUB.
    pub const INIT: i32 = 0;
    /// After SUB.
    pub const SUBSCRIBED: i32 = 3;
    /// After CLS.
    pub const CLOSING: i32 = 4;
}

#[derive(Debug, Default)]
struct Identity {
    client_id: String,
    hostname: String,
    user_agent: String,
    sample_rate: i32,
    auth: Option<AuthIdentity>,
}

/// Identity, state and publish counts of one connection.
#[derive(Debug)]
pub struct ClientMeta {
    identity: RefCell<Identity>,
    state: Cell<i32>,
    pub_counts: RefCell<FxHashMap<String, u64>>,
}

impl ClientMeta {
    /// Before IDENTIFY nsqd names a client by its remote host, as `client_id` and `hostname`.
    pub fn new(remote: SocketAddr) -> Self {
        let host = remote.ip().to_string();
        ClientMeta {
            identity: RefCell::new(Identity {
                client_id: host.clone(),
                hostname: host,
                ..Identity::default()
            }),
            state: Cell::new(state::INIT),
            pub_counts: RefCell::new(FxHashMap::default()),
        }
    }

    /// Records what IDENTIFY set (nsqd overwrites the names unconditionally).
    pub fn identified(&self, client_id: &str, hostname: &str, user_agent: &str, sample_rate: i32) {
        let mut id = self.identity.borrow_mut();
        let auth = id.auth.take();
        *id = Identity {
            client_id: client_id.to_string(),
            hostname: hostname.to_string(),
            user_agent: user_agent.to_string(),
            sample_rate,
            auth,
        };
    }

    /// Records what the auth server called this connection (after AUTH and each re-query).
    pub fn set_auth(&self, identity: &str, identity_url: &str) {
        self.identity.borrow_mut().auth = Some(AuthIdentity {
            identity: identity.to_string(),
            identity_url: identity_url.to_string(),
        });
    }

    /// Records a protocol state change (see [`state`]).
    pub fn set_state(&self, state: i32) {
        self.state.set(state);
    }

    /// Counts the messages of publishes sent for this connection (an MPUB counts each one).
    /// A refused publish closes the connection, so counting before the answer is harmless.
    pub fn count_publishes(&self, batch: &[PublishCmd]) {
        let mut counts = self.pub_counts.borrow_mut();
        for cmd in batch {
            let n = cmd.bodies.len() as u64;
            match counts.get_mut(cmd.topic.as_str()) {
                Some(c) => *c += n,
                None => {
                    counts.insert(cmd.topic.clone(), n);
                }
            }
        }
    }

    /// Whether the connection has published (nsqd's producer test).
    pub fn has_published(&self) -> bool {
        !self.pub_counts.borrow().is_empty()
    }

    /// The connection's record for a stats snapshot.
    pub fn stats(&self, conn: u64, remote: SocketAddr, connect_ts: i64) -> ClientStats {
        let id = self.identity.borrow();
        let mut pub_counts: Vec<PubCount> = self
            .pub_counts
            .borrow()
            .iter()
            .map(|(topic, &count)| PubCount {
                topic: topic.clone(),
                count,
            })
            .collect();
        pub_counts.sort_by(|a, b| a.topic.cmp(&b.topic));
        ClientStats {
            conn,
            identity: ClientIdentity {
                client_id: id.client_id.clone(),
                hostname: id.hostname.clone(),
                user_agent: id.user_agent.clone(),
                remote_address: remote.to_string(),
                connect_ts,
                sample_rate: id.sample_rate,
                auth: id.auth.clone(),
            },
            state: self.state.get(),
            pub_counts,
            features: ClientFeatures::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn cmd(topic: &str, n: usize) -> PublishCmd {
        PublishCmd {
            topic: topic.into(),
            bodies: vec![Bytes::from_static(b"x"); n],
            defer_ms: 0,
        }
    }

    #[test]
    fn counts_messages_per_topic_and_keeps_identity() {
        let remote: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let meta = ClientMeta::new(remote);
        let before = meta.stats(1, remote, 0);
        assert_eq!(
            (
                before.identity.client_id.as_str(),
                before.identity.hostname.as_str()
            ),
            ("10.1.2.3", "10.1.2.3")
        );
        assert!(!meta.has_published());
        meta.count_publishes(&[cmd("b", 3), cmd("a", 1), cmd("b", 1)]);
        meta.identified("id", "host", "ua/1", 10);
        meta.set_state(state::SUBSCRIBED);
        let s = meta.stats(1, remote, 42);
        assert!(meta.has_published());
        assert_eq!(s.identity.client_id, "id");
        assert_eq!(s.identity.sample_rate, 10);
        assert_eq!(s.state, 3);
        assert_eq!(s.identity.remote_address, "10.1.2.3:4567");
        let counts: Vec<_> = s
            .pub_counts
            .iter()
            .map(|p| (p.topic.as_str(), p.count))
            .collect();
        assert_eq!(counts, [("a", 1), ("b", 4)]);
    }
}
