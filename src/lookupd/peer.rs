//! One nsqlookupd connection: connect lazily, IDENTIFY, replay every registration, then send
//! commands one at a time, each with nsqd's 1 s deadlines; any error drops the connection and
//! the next command reconnects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::ToSocketAddrs;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::wire::{self, Identity, PeerInfo};

/// nsqd's dial, read and write deadline for lookupd.
const DEADLINE: Duration = Duration::from_secs(1);

/// Every topic and channel this nsqd announces.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    topics: BTreeMap<String, BTreeSet<String>>,
}

impl Registry {
    /// Records a registration.
    pub fn add(&mut self, r: &wire::Registration) {
        let channels = self.topics.entry(r.topic.clone()).or_default();
        if let Some(c) = &r.channel {
            channels.insert(c.clone());
        }
    }

    /// Forgets a registration (a topic takes its channels with it).
    pub fn remove(&mut self, r: &wire::Registration) {
        match &r.channel {
            None => {
                self.topics.remove(&r.topic);
            }
            Some(c) => {
                if let Some(channels) = self.topics.get_mut(&r.topic) {
                    channels.remove(c);
                }
            }
        }
    }

    /// The REGISTER lines nsqd replays on connect: a topic alone when it has no channels,
    /// otherwise one line per channel.
    pub fn replay_lines(&self) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for (topic, channels) in &self.topics {
            if channels.is_empty() {
                lines.push(wire::Registration::topic(topic).register_line());
            }
            for c in channels {
                lines.push(wire::Registration::channel(topic, c).register_line());
            }
        }
        lines
    }
}

/// A lookupd peer.
pub struct Peer {
    /// `host:port` as configured.
    pub addr: String,
    conn: Option<TcpStream>,
    /// What the peer said about itself at the last IDENTIFY.
    pub info: Option<PeerInfo>,
}

impl Peer {
    /// A disconnected peer.
    pub fn new(addr: String) -> Self {
        Peer {
            addr,
            conn: None,
            info: None,
        }
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Sends one command (connecting and replaying first if needed) and reads its response.
    pub async fn command(
        &mut self,
        line: &[u8],
        identity: &Identity,
        registry: &Registry,
        max_body_size: i64,
    ) -> Result<Vec<u8>, String> {
        if self.conn.is_none() {
            self.connect(identity, registry, max_body_size).await?;
        }
        let result = match self.conn.as_mut() {
            Some(conn) => exchange(conn, line, max_body_size).await,
            None => Err("not connected".into()),
        };
        if let Err(e) = &result {
            tracing::error!("LOOKUPD({}): {e}; will reconnect", self.addr);
            self.conn = None;
        }
        result
    }

    /// Connects, identifies, and replays every registration.
    pub async fn connect(
        &mut self,
        identity: &Identity,
        registry: &Registry,
        max_body_size: i64,
    ) -> Result<(), String> {
        let addr = self
            .addr
            .to_socket_addrs()
            .map_err(|e| format!("resolve {}: {e}", self.addr))?
            .next()
            .ok_or_else(|| format!("resolve {}: no address", self.addr))?;
        tracing::info!("LOOKUP({}): adding peer", self.addr);
        let mut conn = TcpStream::connect_timeout(addr, DEADLINE)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = conn.set_read_timeout(Some(DEADLINE));
        let _ = conn.set_write_timeout(Some(DEADLINE));
        crate::tcp_options::apply_go_defaults(&conn);
        conn.write_all(wire::MAGIC_V1)
            .await
            .map_err(|e| e.to_string())?;
        let reply = exchange(&mut conn, &wire::identify_command(identity), max_body_size).await?;
        let info = wire::parse_identify_reply(&reply)?;
        tracing::info!("LOOKUPD({}): peer info {info:?}", self.addr);
        for line in registry.replay_lines() {
            exchange(&mut conn, &line, max_body_size).await?;
        }
        self.info = Some(info);
        self.conn = Some(conn);
        Ok(())
    }
}

/// Writes a command and reads one size-prefixed response.
async fn exchange(
    conn: &mut TcpStream,
    line: &[u8],
    max_body_size: i64,
) -> Result<Vec<u8>, String> {
    conn.write_all(line)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut prefix = [0u8; 4];
    conn.read_exact(&mut prefix)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let size = wire::response_size(prefix, max_body_size)?;
    let mut body = vec![0u8; size];
    conn.read_exact(&mut body)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookupd::wire::Registration;

    #[test]
    fn replay_registers_topics_alone_only_without_channels() {
        let mut r = Registry::default();
        r.add(&Registration::topic("a"));
        r.add(&Registration::topic("b"));
        r.add(&Registration::channel("b", "c1"));
        r.add(&Registration::channel("b", "c2"));
        assert_eq!(
            r.replay_lines(),
            vec![
                b"REGISTER a\n".to_vec(),
                b"REGISTER b c1\n".to_vec(),
                b"REGISTER b c2\n".to_vec()
            ]
        );
        r.remove(&Registration::channel("b", "c1"));
        r.remove(&Registration::topic("a"));
        assert_eq!(r.replay_lines(), vec![b"REGISTER b c2\n".to_vec()]);
    }
}
