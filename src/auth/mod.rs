//! nsqd's AUTH: a V2 client sends a secret, nsqd asks an auth server (`--auth-http-address`)
//! what that secret may do, caches the reply for its TTL on the connection, and checks every
//! SUB/PUB/MPUB/DPUB against it, asking again once the TTL has run out.
//!
//! Modules: `client` (the HTTP request), `permissions` (the reply and its regexes, pure).
//! This file holds the per-connection state and nsqd's error texts.

pub mod client;
pub mod permissions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::protocol::errors::{E_AUTH_FAILED, E_AUTH_FIRST, E_UNAUTHORIZED, ProtocolError};
use crate::protocol::names::go_quote;
use client::{Method, Params, Timeouts};
use permissions::AuthState;

/// Where and how to ask (`--auth-http-address`, `--auth-http-request-method`,
/// `--http-client-*-timeout`). Auth is on when any address is configured.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// The auth servers, as given (see [`client::endpoint`]).
    pub addresses: Vec<String>,
    /// GET or POST.
    pub method: Method,
    /// `--http-client-connect-timeout`.
    pub connect_timeout: Duration,
    /// `--http-client-request-timeout`.
    pub request_timeout: Duration,
    /// TLS for `https://` auth servers (see [`client::tls_config`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl AuthSettings {
    /// Whether clients must AUTH (nsqd's `IsAuthEnabled`; IDENTIFY's `auth_required`).
    pub fn enabled(&self) -> bool {
        !self.addresses.is_empty()
    }

    /// Asks the servers in random rotation until one gives a valid reply; the error is the last
    /// server's (each failure is logged).
    pub async fn query_any(&self, params: &Params) -> Result<AuthState, String> {
        let n = self.addresses.len();
        let start = rand::thread_rng().gen_range(0..n.max(1));
        let timeouts = Timeouts {
            connect: self.connect_timeout,
            request: self.request_timeout,
        };
        let mut last = "no auth server configured".to_string();
        for i in 0..n {
            let addr = &self.addresses[(start + i) % n];
            let url = client::endpoint(addr);
            let reply =
                client::request(&url, self.method, params, timeouts, self.tls.as_ref()).await;
            match reply.and_then(|body| permissions::parse_reply(&body, Instant::now())) {
                Ok(state) => return Ok(state),
                Err(e) => {
                    tracing::error!("failed auth against {addr} {e}");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// What the auth server needs to know about a connection besides its secret.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The client's IP address.
    pub remote_ip: String,
    /// Whether it upgraded to TLS.
    pub tls: bool,
    /// Its certificate's common name, if it presented one.
    pub common_name: String,
}

/// One connection's AUTH state: the secret it sent and the reply cached for its TTL.
#[derive(Debug, Default)]
pub struct ConnectionAuth {
    secret: String,
    state: Option<AuthState>,
}

impl ConnectionAuth {
    /// nsqd's `HasAuthorizations`: a reply with at least one authorization is cached (a second
    /// AUTH is then `E_INVALID AUTH already set`).
    pub fn has_authorizations(&self) -> bool {
        self.state
            .as_ref()
            .is_some_and(|s| s.permission_count() > 0)
    }

    /// The cached reply, if the server ever gave one.
    pub fn state(&self) -> Option<&AuthState> {
        self.state.as_ref()
    }

    /// AUTH with `secret`: asks the server and caches its reply. `Err` is the fatal error to
    /// send (`E_AUTH_FAILED` hides why the server failed; `E_UNAUTHORIZED` when it granted
    /// nothing).
    pub async fn authenticate(
        &mut self,
        settings: &AuthSettings,
        secret: String,
        peer: &Peer,
    ) -> Result<&AuthState, ProtocolError> {
        self.secret = secret;
        self.query(settings, peer).await?;
        match &self.state {
            Some(s) if s.permission_count() > 0 => Ok(s),
            _ => Err(ProtocolError::fatal(
                E_UNAUTHORIZED,
                "AUTH no authorizations found",
            )),
        }
    }

    async fn query(&mut self, settings: &AuthSettings, peer: &Peer) -> Result<(), ProtocolError> {
        let params = Params {
            remote_ip: peer.remote_ip.clone(),
            tls: peer.tls,
            secret: self.secret.clone(),
            common_name: peer.common_name.clone(),
        };
        // Boxed: the HTTP exchange's future is ~9 KiB, and inline it would be part of every
        // connection's task (idle ones included), not only of those that query.
        match Box::pin(settings.query_any(&params)).await {
            Ok(state) => {
                self.state = Some(state);
                Ok(())
            }
            Err(e) => {
                // Why the server failed is not the client's business, as in nsqd.
                tracing::warn!("PROTOCOL(V2): [{}] AUTH failed {e}", peer.remote_ip);
                Err(ProtocolError::fatal(E_AUTH_FAILED, "AUTH failed"))
            }
        }
    }

    /// nsqd's `CheckAuth` for `cmd` (SUB/PUB/MPUB/DPUB) on `topic` and `channel` (`""` for a
    /// publish), re-asking the server first when the cached reply has expired. Call only when
    /// auth is enabled. `Ok(true)` when the server was asked again (the identity may have
    /// changed).
    pub async fn check(
        &mut self,
        settings: &AuthSettings,
        cmd: &str,
        topic: &str,
        channel: &str,
        peer: &Peer,
    ) -> Result<bool, ProtocolError> {
        if !self.has_authorizations() {
            return Err(ProtocolError::fatal(
                E_AUTH_FIRST,
                format!("AUTH required before {cmd}"),
            ));
        }
        let expired = self
            .state
            .as_ref()
            .is_some_and(|s| s.is_expired(Instant::now()));
        if expired {
            self.query(settings, peer).await?;
        }
        match &self.state {
            Some(s) if s.is_allowed(topic, channel) => Ok(expired),
            _ => Err(unauthorized(cmd, topic, channel)),
        }
    }
}

/// `E_UNAUTHORIZED AUTH failed for <CMD> on "<topic>" "<channel>"` (Go `%q`).
fn unauthorized(cmd: &str, topic: &str, channel: &str) -> ProtocolError {
    ProtocolError::fatal(
        E_UNAUTHORIZED,
        format!(
            "AUTH failed for {cmd} on {} {}",
            go_quote(topic.as_bytes()),
            go_quote(channel.as_bytes())
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_text_quotes_like_go() {
        assert_eq!(
            unauthorized("PUB", "t\"x", "").to_string(),
            r#"E_UNAUTHORIZED AUTH failed for PUB on "t\"x" """#
        );
    }

    #[test]
    fn commands_before_auth_are_refused_first() {
        let mut auth = ConnectionAuth::default();
        let settings = AuthSettings {
            addresses: vec!["127.0.0.1:1".into()],
            ..AuthSettings::default()
        };
        let peer = Peer::default();
        let check = auth.check(&settings, "SUB", "t", "c", &peer);
        let err = futures_lite::future::block_on(check).unwrap_err();
        assert_eq!(err.to_string(), "E_AUTH_FIRST AUTH required before SUB");
    }
}
