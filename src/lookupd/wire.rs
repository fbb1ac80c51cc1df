//! nsqlookupd's protocol V1 as nsqd speaks it (pure): the IDENTIFY body, the commands, and
//! size-prefixed responses (no frame type in V1).

use serde::Serialize;

/// The magic a V1 client sends first.
pub const MAGIC_V1: &[u8; 4] = b"  V1";

/// What this nsqd announces about itself (nsqd sends these keys in alphabetical order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `--broadcast-address`.
    pub broadcast_address: String,
    /// OS hostname.
    pub hostname: String,
    /// `--broadcast-http-port` (or the HTTP listener's port).
    pub http_port: u16,
    /// `--broadcast-tcp-port` (or the TCP listener's port).
    pub tcp_port: u16,
    /// `--topology-region`.
    pub topology_region: String,
    /// `--topology-zone`.
    pub topology_zone: String,
    /// nsqd's version.
    pub version: String,
}

/// `IDENTIFY\n` + int32 BE length + JSON.
pub fn identify_command(identity: &Identity) -> Vec<u8> {
    let body = serde_json::to_vec(identity).expect("plain struct serializes");
    let mut out = b"IDENTIFY\n".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A registration nsqd announces: a topic, or one of its channels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Registration {
    /// Topic name.
    pub topic: String,
    /// Channel name, for a channel registration.
    pub channel: Option<String>,
}

impl Registration {
    /// A topic registration.
    pub fn topic(topic: &str) -> Self {
        Registration {
            topic: topic.to_string(),
            channel: None,
        }
    }

    /// A channel registration.
    pub fn channel(topic: &str, channel: &str) -> Self {
        Registration {
            topic: topic.to_string(),
            channel: Some(channel.to_string()),
        }
    }

    /// `REGISTER <topic>[ <channel>]\n`.
    pub fn register_line(&self) -> Vec<u8> {
        self.line("REGISTER")
    }

    /// `UNREGISTER <topic>[ <channel>]\n`.
    pub fn unregister_line(&self) -> Vec<u8> {
        self.line("UNREGISTER")
    }

    fn line(&self, verb: &str) -> Vec<u8> {
        match &self.channel {
            Some(c) => format!("{verb} {} {c}\n", self.topic).into_bytes(),
            None => format!("{verb} {}\n", self.topic).into_bytes(),
        }
    }
}

/// `PING\n`.
pub const PING: &[u8] = b"PING\n";

/// Checks a response's size prefix before anything is allocated for it.
pub fn response_size(prefix: [u8; 4], max_body_size: i64) -> Result<usize, String> {
    let size = i32::from_be_bytes(prefix);
    if size < 0 || i64::from(size) > max_body_size {
        return Err(format!("invalid response size {size}"));
    }
    Ok(size as usize)
}

/// What nsqlookupd answers to IDENTIFY (only the fields nsqd uses).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct PeerInfo {
    /// Its TCP port.
    #[serde(default)]
    pub tcp_port: u16,
    /// Its HTTP port (for `/channels` queries).
    #[serde(default)]
    pub http_port: u16,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// Its broadcast address.
    #[serde(default)]
    pub broadcast_address: String,
}

/// Parses the IDENTIFY reply; `E_INVALID` or non-JSON means the peer must be dropped.
pub fn parse_identify_reply(body: &[u8]) -> Result<PeerInfo, String> {
    if body == b"E_INVALID" {
        return Err("lookupd returned E_INVALID".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("bad IDENTIFY reply: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_body_is_alphabetical_json() {
        let id = Identity {
            broadcast_address: "h".into(),
            hostname: "host".into(),
            http_port: 4151,
            tcp_port: 4150,
            topology_region: String::new(),
            topology_zone: String::new(),
            version: "1.3.0".into(),
        };
        let cmd = identify_command(&id);
        let body = br#"{"broadcast_address":"h","hostname":"host","http_port":4151,"tcp_port":4150,"topology_region":"","topology_zone":"","version":"1.3.0"}"#;
        assert_eq!(&cmd[..9], b"IDENTIFY\n");
        assert_eq!(&cmd[9..13], &(body.len() as u32).to_be_bytes());
        assert_eq!(&cmd[13..], &body[..]);
    }

    #[test]
    fn lines_and_sizes() {
        assert_eq!(Registration::topic("t").register_line(), b"REGISTER t\n");
        assert_eq!(
            Registration::channel("t", "c").unregister_line(),
            b"UNREGISTER t c\n"
        );
        assert_eq!(response_size(2i32.to_be_bytes(), 10), Ok(2));
        assert!(response_size((-1i32).to_be_bytes(), 10).is_err());
        assert!(response_size(11i32.to_be_bytes(), 10).is_err());
        assert!(parse_identify_reply(b"E_INVALID").is_err());
        assert_eq!(parse_identify_reply(br#"{"tcp_port":4160,"http_port":4161,"version":"1.3.0","broadcast_address":"l","hostname":"x"}"#).unwrap().http_port, 4161);
    }
}
