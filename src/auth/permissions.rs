//! The auth server's reply and what it permits (nsqd's `internal/auth`): parsing and
//! validating the JSON, and matching a topic and channel against the granted regexes. Pure: no
//! IO and no clock reads, so every rule is unit-testable.

use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;

/// One entry of the reply's `authorizations`, with its patterns compiled.
#[derive(Debug, Clone)]
pub struct Authorization {
    topic: Regex,
    channels: Vec<Regex>,
    subscribe: bool,
    publish: bool,
}

impl Authorization {
    /// nsqd's rule: an empty channel means a publish (needs `publish`), any other a
    /// subscription (needs `subscribe`); the topic regex must match, and so must one of the
    /// channel regexes — for a publish the channel is `""`, so a pattern matching the empty
    /// string (such as `.*`) must be granted. Matching is unanchored, as Go's `MatchString`.
    fn allows(&self, topic: &str, channel: &str) -> bool {
        let permitted = if channel.is_empty() {
            self.publish
        } else {
            self.subscribe
        };
        permitted && self.topic.is_match(topic) && self.channels.iter().any(|c| c.is_match(channel))
    }
}

/// A validated auth reply, as cached on the connection until it expires.
#[derive(Debug, Clone)]
pub struct AuthState {
    /// `identity`, shown in `/stats` and echoed to the client.
    pub identity: String,
    /// `identity_url`, shown in `/stats` and echoed to the client.
    pub identity_url: String,
    authorizations: Vec<Authorization>,
    expires: Instant,
}

impl AuthState {
    /// How many authorizations were granted (the AUTH reply's `permission_count`).
    pub fn permission_count(&self) -> usize {
        self.authorizations.len()
    }

    /// Whether any authorization allows this topic and channel (`""` for publishes).
    pub fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        self.authorizations.iter().any(|a| a.allows(topic, channel))
    }

    /// Whether the reply's TTL has run out at `now` (then nsqd queries the server again).
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires < now
    }

    /// The AUTH command's success body, compact JSON in nsqd's key order.
    pub fn reply_json(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Reply<'a> {
            identity: &'a str,
            identity_url: &'a str,
            permission_count: usize,
        }
        crate::http::json::to_vec(&Reply {
            identity: &self.identity,
            identity_url: &self.identity_url,
            permission_count: self.permission_count(),
        })
    }
}

/// The reply as the server sends it. Go's decoder leaves `null` fields at their zero value,
/// hence the options.
#[derive(Deserialize)]
struct Reply {
    ttl: Option<i64>,
    authorizations: Option<Vec<ReplyAuthorization>>,
    identity: Option<String>,
    identity_url: Option<String>,
}

#[derive(Deserialize)]
struct ReplyAuthorization {
    topic: Option<String>,
    channels: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
}

/// Parses and validates an auth server's reply body received at `now`. The error says why
/// the reply is unusable (logged only: clients just see `E_AUTH_FAILED`).
pub fn parse_reply(body: &[u8], now: Instant) -> Result<AuthState, String> {
    let invalid = |e: serde_json::Error| format!("invalid auth reply: {e}");
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(invalid)?;
    fold_keys(&mut value);
    let reply: Reply = serde_json::from_value(value).map_err(invalid)?;
    let mut authorizations = Vec::new();
    for a in reply.authorizations.unwrap_or_default() {
        let (mut subscribe, mut publish) = (false, false);
        for p in a.permissions.unwrap_or_default() {
            match p.as_str() {
                "subscribe" => subscribe = true,
                "publish" => publish = true,
                other => return Err(format!("unknown permission {other}")),
            }
        }
        let topic = a.topic.unwrap_or_default();
        let topic =
            Regex::new(&topic).map_err(|e| format!("unable to compile topic {topic:?} {e}"))?;
        let channels = a
            .channels
            .unwrap_or_default()
            .iter()
            .map(|c| Regex::new(c).map_err(|e| format!("unable to compile channel {c:?} {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        authorizations.push(Authorization {
            topic,
            channels,
            subscribe,
            publish,
        });
    }
    let ttl = reply.ttl.unwrap_or(0);
    if ttl <= 0 {
        return Err(format!("invalid TTL {ttl} (must be >0)"));
    }
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(u64::MAX));
    Ok(AuthState {
        identity: reply.identity.unwrap_or_default(),
        identity_url: reply.identity_url.unwrap_or_default(),
        authorizations,
        expires: now
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(1 << 40)),
    })
}

/// Go's decoder matches object keys to fields case-insensitively (the last match wins): lower
/// the keys of the reply's objects so serde's exact matching does the same.
fn fold_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut v) in entries {
                fold_keys(&mut v);
                map.insert(key.to_lowercase(), v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fold_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(json: &str) -> AuthState {
        parse_reply(json.as_bytes(), Instant::now()).unwrap()
    }

    #[test]
    fn publish_needs_a_channel_pattern_matching_the_empty_channel() {
        let s = state(
            r#"{"ttl":60,"authorizations":[{"topic":"^orders","channels":["^web$"],"permissions":["publish","subscribe"]}]}"#,
        );
        assert!(s.is_allowed("orders", "web"));
        assert!(!s.is_allowed("orders", ""));
        let s = state(
            r#"{"ttl":60,"authorizations":[{"topic":"orders","channels":[".*"],"permissions":["publish"]}]}"#,
        );
        assert!(s.is_allowed("orders", ""));
        // Unanchored: "orders" matches inside "old-orders-2".
        assert!(s.is_allowed("old-orders-2", ""));
        // publish does not grant subscribe.
        assert!(!s.is_allowed("orders", "web"));
    }

    #[test]
    fn invalid_replies_are_refused() {
        let now = Instant::now();
        let bad = |j: &str| parse_reply(j.as_bytes(), now).unwrap_err();
        assert_eq!(bad(r#"{"ttl":0}"#), "invalid TTL 0 (must be >0)");
        assert_eq!(bad(r#"{"identity":"x"}"#), "invalid TTL 0 (must be >0)");
        assert_eq!(
            bad(
                r#"{"ttl":1,"authorizations":[{"topic":"t","channels":[],"permissions":["admin"]}]}"#
            ),
            "unknown permission admin"
        );
        assert!(
            bad(r#"{"ttl":1,"authorizations":[{"topic":"(","permissions":[]}]}"#)
                .starts_with("unable to compile topic \"(\"")
        );
        assert!(bad("not json").starts_with("invalid auth reply"));
    }

    #[test]
    fn reply_json_and_expiry() {
        let now = Instant::now();
        let s = parse_reply(
            br#"{"ttl":2,"identity":"bob","identity_url":"http://x/bob","authorizations":[{"topic":".*","channels":null,"permissions":null}]}"#,
            now,
        )
        .unwrap();
        assert_eq!(
            s.reply_json(),
            br#"{"identity":"bob","identity_url":"http://x/bob","permission_count":1}"#
        );
        assert!(!s.is_allowed("t", "c"));
        assert!(!s.is_expired(now + Duration::from_secs(2)));
        assert!(s.is_expired(now + Duration::from_secs(3)));
        // Keys in any letter case, as Go's decoder accepts them.
        let s = parse_reply(
            br#"{"TTL":5,"Identity":"x","Authorizations":[{"Topic":"t","CHANNELS":[".*"],"Permissions":["publish"]}]}"#,
            now,
        )
        .unwrap();
        assert_eq!((s.identity.as_str(), s.permission_count()), ("x", 1));
        assert!(s.is_allowed("t", ""));
    }
}
