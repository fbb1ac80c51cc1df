//! The HTTP request nsqd makes to an auth server: the endpoint from an `--auth-http-address`
//! entry, the four parameters (query string for GET, a JSON-encoded `url.Values` body for POST,
//! as nsqd's `http_api` client sends them), and hyper's HTTP/1 client over a glommio socket,
//! bounded by `--http-client-connect-timeout` and `--http-client-request-timeout`, so a slow
//! auth server only delays the connection that asked.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use glommio::net::TcpStream;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue};

use crate::http::GlommioIo;

/// A reply body larger than this is refused (an auth reply is a few hundred bytes).
const MAX_REPLY: usize = 1 << 20;

/// `--auth-http-request-method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Parameters in the query string (nsqd's default).
    #[default]
    Get,
    /// Parameters as a JSON-encoded `url.Values` body.
    Post,
}

/// What nsqd tells the auth server about the connection asking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// The client's IP address.
    pub remote_ip: String,
    /// Whether the connection upgraded to TLS.
    pub tls: bool,
    /// The AUTH body.
    pub secret: String,
    /// The client certificate's common name ("" without one).
    pub common_name: String,
}

impl Params {
    /// The parameters in Go's `url.Values` order (sorted by key).
    fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            ("common_name", &self.common_name),
            ("remote_ip", &self.remote_ip),
            ("secret", &self.secret),
            ("tls", if self.tls { "true" } else { "false" }),
        ]
    }

    /// Go's `url.Values.Encode()`.
    pub fn query_string(&self) -> String {
        self.pairs()
            .iter()
            .map(|(k, v)| format!("{k}={}", query_escape(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Go's `json.Marshal(url.Values)`: every value is a one-element list.
    pub fn json_body(&self) -> Vec<u8> {
        let map: std::collections::BTreeMap<&str, [&str; 1]> =
            self.pairs().iter().map(|&(k, v)| (k, [v])).collect();
        crate::http::json::to_vec(&map)
    }
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// nsqd's rule: an entry with a scheme is used as given, otherwise it is `http://<entry>/auth`.
pub fn endpoint(entry: &str) -> String {
    if entry.contains("://") {
        entry.to_string()
    } else {
        format!("http://{entry}/auth")
    }
}

/// An `http://` URL split into what the request needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host[:port]` for the `Host` header.
    authority: String,
    /// `host:port` to connect to (port 80 when absent).
    connect: String,
    /// Path and query for the request line.
    path: String,
}

fn target(url: &str) -> Result<Target, String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported scheme {scheme:?} in auth address {url} (only http)"
            ));
        }
        None => return Err(format!("invalid auth address {url}")),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path
    };
    if authority.is_empty() {
        return Err(format!("invalid auth address {url}: no host"));
    }
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    let connect = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        authority: authority.to_string(),
        connect,
        path,
    })
}

/// Resolves `host:port`; a name (not an IP literal) is looked up on glommio's blocking pool so
/// the executor keeps serving.
async fn resolve(connect: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = connect.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let name = connect.to_string();
    glommio::executor()
        .spawn_blocking(move || {
            name.to_socket_addrs()
                .map_err(|e| format!("resolve {name}: {e}"))?
                .next()
                .ok_or_else(|| format!("resolve {name}: no address"))
        })
        .await
}

/// The HTTP timeouts nsqd applies to auth requests.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `--http-client-connect-timeout`.
    pub connect: Duration,
    /// `--http-client-request-timeout`: the whole exchange, as Go's `http.Client.Timeout`.
    pub request: Duration,
}

/// Sends one auth request to `url` and returns the body of its 200 reply.
pub async fn request(
    url: &str,
    method: Method,
    params: &Params,
    timeouts: Timeouts,
) -> Result<Vec<u8>, String> {
    let exchange = exchange(url, method, params, timeouts.connect);
    if timeouts.request.is_zero() {
        return exchange.await;
    }
    let deadline = async {
        glommio::timer::sleep(timeouts.request).await;
        Err(format!(
            "request to {url} timed out after {:?}",
            timeouts.request
        ))
    };
    futures_lite::future::or(exchange, deadline).await
}

async fn exchange(
    url: &str,
    method: Method,
    params: &Params,
    connect_timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut target = target(url)?;
    let addr = resolve(&target.connect).await?;
    let stream = if connect_timeout.is_zero() {
        TcpStream::connect(addr).await
    } else {
        TcpStream::connect_timeout(addr, connect_timeout).await
    }
    .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(GlommioIo(stream))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    // Drives the connection; dropped (cancelled) when this exchange ends.
    let _driver = glommio::spawn_local(async move {
        let _ = conn.await;
    });
    let (verb, body) = match method {
        Method::Get => {
            // As nsqd: `<endpoint>?<query>`, even when the endpoint has a query already.
            target.path = format!("{}?{}", target.path, params.query_string());
            ("GET", Bytes::new())
        }
        Method::Post => ("POST", Bytes::from(params.json_body())),
    };
    let mut req = Request::builder()
        .method(verb)
        .uri(&target.path)
        .header(ACCEPT, "application/vnd.nsq; version=1.0");
    if let Ok(host) = HeaderValue::from_str(&target.authority) {
        req = req.header(HOST, host);
    }
    if method == Method::Post {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_REPLY)
        .collect()
        .await
        .map_err(|e| format!("{url}: reading reply: {e}"))?
        .to_bytes();
    if status != hyper::StatusCode::OK {
        return Err(format!(
            "got response {status} {:?}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_without_scheme_get_nsqds_default_path() {
        assert_eq!(endpoint("127.0.0.1:4181"), "http://127.0.0.1:4181/auth");
        assert_eq!(endpoint("https://a/b"), "https://a/b");
        let t = target("http://127.0.0.1:4181/auth").unwrap();
        assert_eq!(
            t,
            Target {
                authority: "127.0.0.1:4181".into(),
                connect: "127.0.0.1:4181".into(),
                path: "/auth".into()
            }
        );
        let t = target("http://auth.local?x=1").unwrap();
        assert_eq!(
            (t.connect.as_str(), t.path.as_str()),
            ("auth.local:80", "/?x=1")
        );
        let t = target("http://[::1]/a").unwrap();
        assert_eq!(t.connect, "[::1]:80");
        assert!(target("https://a/b").unwrap_err().contains("only http"));
    }

    #[test]
    fn parameters_encode_as_go_url_values() {
        let p = Params {
            remote_ip: "127.0.0.1".into(),
            tls: false,
            secret: "a b&c/é".into(),
            common_name: String::new(),
        };
        assert_eq!(
            p.query_string(),
            "common_name=&remote_ip=127.0.0.1&secret=a+b%26c%2F%C3%A9&tls=false"
        );
        assert_eq!(
            String::from_utf8(p.json_body()).unwrap(),
            r#"{"common_name":[""],"remote_ip":["127.0.0.1"],"secret":["a b\u0026c/é"],"tls":["false"]}"#
        );
    }
}
