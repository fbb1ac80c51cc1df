//! The HTTP request nsqd makes to an auth server: the endpoint from an `--auth-http-address`
//! entry, the four parameters (query string for GET, a JSON-encoded `url.Values` body for POST,
//! as nsqd's `http_api` client sends them), and hyper's HTTP/1 client over a glommio socket
//! (through rustls for `https://`), bounded by `--http-client-connect-timeout` and
//! `--http-client-request-timeout`, so a slow auth server only delays the connection that asked.
//! Like nsqd, a `403` naming an `https_port` to a plain-HTTP endpoint is retried over HTTPS.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

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

/// Where Go looks for the system's CA bundle on Linux, in its order.
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The TLS client configuration for `https://` auth servers, as nsqd builds it: trusting the
/// CAs of `--tls-root-ca-file`, else the system's bundle.
pub fn tls_config(root_ca_file: &str) -> Result<Arc<ClientConfig>, String> {
    let file = match root_ca_file {
        "" => SYSTEM_CA_FILES
            .iter()
            .find(|f| std::path::Path::new(f).exists())
            .copied(),
        f => Some(f),
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(file) = file {
        let certs = CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("failed to load CA file {file}: {e}"))?
            .filter_map(Result::ok);
        roots.add_parsable_certificates(certs);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An `http://` or `https://` URL split into what the request needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// Through TLS.
    https: bool,
    /// The host alone (TLS server name).
    host: String,
    /// `host[:port]` for the `Host` header.
    authority: String,
    /// `host:port` to connect to (port 80 or 443 when absent).
    connect: String,
    /// Path and query for the request line.
    path: String,
}

fn target(url: &str) -> Result<Target, String> {
    let (https, rest) = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported scheme {scheme:?} in auth address {url}"
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
    let (host, has_port) = match authority.rfind(']') {
        Some(end) => (
            authority[..end].trim_start_matches('['),
            authority[end..].contains(':'),
        ),
        None => match authority.rsplit_once(':') {
            Some((host, _)) => (host, true),
            None => (authority, false),
        },
    };
    let connect = match (has_port, https) {
        (true, _) => authority.to_string(),
        (false, false) => format!("{authority}:80"),
        (false, true) => format!("{authority}:443"),
    };
    Ok(Target {
        https,
        host: host.to_string(),
        authority: authority.to_string(),
        connect,
        path,
    })
}

/// Resolves `host:port` to its addresses; a name (not an IP literal) is looked up on glommio's
/// blocking pool so the executor keeps serving.
async fn resolve(connect: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = connect.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let name = connect.to_string();
    glommio::executor()
        .spawn_blocking(move || {
            let addrs: Vec<SocketAddr> = name
                .to_socket_addrs()
                .map_err(|e| format!("resolve {name}: {e}"))?
                .collect();
            match addrs.is_empty() {
                true => Err(format!("resolve {name}: no address")),
                false => Ok(addrs),
            }
        })
        .await
}

/// Connects to the first of `addrs` that accepts (as Go's dialer falls back from one address
/// of a name to the next), each attempt bounded by `timeout` (0: unbounded).
async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for &addr in addrs {
        let attempt = if timeout.is_zero() {
            TcpStream::connect(addr).await
        } else {
            TcpStream::connect_timeout(addr, timeout).await
        };
        match attempt {
            Ok(stream) => {
                crate::tcp_options::apply_go_defaults(&stream);
                return Ok(stream);
            }
            Err(e) => last = format!("connect {addr}: {e}"),
        }
    }
    Err(last)
}

/// A plain `GET` of `url` (nsqd's `Accept` header), within the timeouts; used for
/// nsqlookupd's `/channels` query. `https://` is refused (nsqlookupd serves plain HTTP).
pub async fn get(url: &str, timeouts: Timeouts) -> Result<(StatusCode, Bytes), String> {
    let work = async {
        let target = target(url)?;
        if target.https {
            return Err(format!("{url}: https is not used for nsqlookupd"));
        }
        let addrs = resolve(&target.connect).await?;
        let stream = connect(&addrs, timeouts.connect).await?;
        let mut req = Request::builder()
            .method("GET")
            .uri(&target.path)
            .header(ACCEPT, "application/vnd.nsq; version=1.0");
        if let Ok(host) = HeaderValue::from_str(&target.authority) {
            req = req.header(HOST, host);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("{url}: {e}"))?;
        send(stream, req, url).await
    };
    within(url, timeouts.request, work).await
}

/// Runs `exchange` within `limit` (Go's whole-request client timeout); zero means no limit.
async fn within(
    url: &str,
    limit: Duration,
    exchange: impl std::future::Future<Output = Result<(StatusCode, Bytes), String>>,
) -> Result<(StatusCode, Bytes), String> {
    if limit.is_zero() {
        return exchange.await;
    }
    let deadline = async {
        glommio::timer::sleep(limit).await;
        Err(format!("request to {url} timed out after {limit:?}"))
    };
    futures_lite::future::or(exchange, deadline).await
}

/// The HTTP timeouts nsqd applies to auth requests.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `--http-client-connect-timeout`.
    pub connect: Duration,
    /// `--http-client-request-timeout`: the whole exchange, as Go's `http.Client.Timeout`.
    pub request: Duration,
}

/// Sends one auth request to `url` and returns the body of its 200 reply. `tls` is needed for
/// `https://` endpoints.
pub async fn request(
    url: &str,
    method: Method,
    params: &Params,
    timeouts: Timeouts,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Vec<u8>, String> {
    let (status, body) = bounded(url, method, params, timeouts, tls).await?;
    if status == StatusCode::FORBIDDEN && !url.starts_with("https") {
        // nsqd's client follows a `TLS_REQUIRED` answer to the server's HTTPS port.
        let https = https_endpoint(url, &body)?;
        let (status, body) = bounded(&https, method, params, timeouts, tls).await?;
        return ok_body(status, body);
    }
    ok_body(status, body)
}

fn ok_body(status: StatusCode, body: Bytes) -> Result<Vec<u8>, String> {
    if status != StatusCode::OK {
        return Err(format!(
            "got response {status} {:?}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body.to_vec())
}

/// nsqd's `httpsEndpoint`: the same URL with scheme `https` and the port from a 403 body's
/// `https_port`.
fn https_endpoint(url: &str, body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Forbidden {
        https_port: Option<u16>,
    }
    let forbidden: Forbidden =
        serde_json::from_slice(body).map_err(|e| format!("{url}: 403 reply: {e}"))?;
    let port = forbidden.https_port.unwrap_or(0);
    let t = target(url)?;
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host
    };
    Ok(format!("https://{host}:{port}{}", t.path))
}

/// One exchange within `--http-client-request-timeout` (Go's per-request client timeout).
async fn bounded(
    url: &str,
    method: Method,
    params: &Params,
    timeouts: Timeouts,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(StatusCode, Bytes), String> {
    let exchange = exchange(url, method, params, timeouts.connect, tls);
    within(url, timeouts.request, exchange).await
}

async fn exchange(
    url: &str,
    method: Method,
    params: &Params,
    connect_timeout: Duration,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(StatusCode, Bytes), String> {
    let mut target = target(url)?;
    let addrs = resolve(&target.connect).await?;
    let stream = connect(&addrs, connect_timeout).await?;
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
    if !target.https {
        return send(stream, req, url).await;
    }
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| format!("{url}: server name: {e}"))?;
    let tls = tls.ok_or_else(|| format!("{url}: no TLS client configuration"))?;
    let stream = futures_rustls::TlsConnector::from(tls.clone())
        .connect(name, stream)
        .await
        .map_err(|e| format!("{url}: TLS handshake: {e}"))?;
    send(stream, req, url).await
}

/// Sends `req` over `io` with hyper's HTTP/1 client and reads the whole (bounded) reply.
async fn send<S>(io: S, req: Request<Full<Bytes>>, url: &str) -> Result<(StatusCode, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(GlommioIo(io))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    // Drives the connection; dropped (cancelled) when this exchange ends.
    let _driver = glommio::spawn_local(async move {
        let _ = conn.await;
    });
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
    Ok((status, body))
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
                https: false,
                host: "127.0.0.1".into(),
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
        assert_eq!((t.connect.as_str(), t.host.as_str()), ("[::1]:80", "::1"));
        let t = target("https://auth.local/a").unwrap();
        assert_eq!((t.https, t.connect.as_str()), (true, "auth.local:443"));
        assert!(
            target("ftp://a/b")
                .unwrap_err()
                .contains("unsupported scheme")
        );
        assert_eq!(
            https_endpoint(
                "http://[::1]:80/auth?x=1",
                br#"{"message": "TLS_REQUIRED", "https_port": 4152}"#
            )
            .unwrap(),
            "https://[::1]:4152/auth?x=1"
        );
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
