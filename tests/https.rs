//! The HTTPS listener (`--https-address`, only with `--tls-cert`/`--tls-key`): the same handlers
//! over rustls on every core, and `--tls-required`'s effect on plain HTTP (`true`: nsqd's 403
//! `TLS_REQUIRED` body; `tcp-https`: plain HTTP untouched).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::Broker;
use common::certs::TestCerts as Certs;
use rustls::pki_types::ServerName;

fn start(certs: &Certs, extra: &[&str]) -> (Broker, SocketAddr) {
    let mut args: Vec<String> = vec!["--cores=2".into()];
    args.extend(certs.server_flags());
    args.push("--https-address=127.0.0.1:0".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let b = Broker::start(&refs);
    let log = b.log();
    let marker = "HTTPS: listening on ";
    let at = log.find(marker).expect("HTTPS listening line") + marker.len();
    let https = log[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (b, https)
}

/// One HTTP/1.1 request, `Connection: close`; the whole response as text.
fn request(stream: &mut dyn ReadWrite, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn plain_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    request(&mut s, path)
}

fn https_get(certs: &Certs, addr: SocketAddr, path: &str) -> String {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(certs.client_config(false), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    request(&mut tls, path)
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[test]
fn https_serves_the_same_handlers_on_every_core() {
    let certs = Certs::new("client");
    let (b, https) = start(&certs, &[]);
    for _ in 0..6 {
        let ping = https_get(&certs, https, "/ping");
        assert!(ping.starts_with("HTTP/1.1 200 OK\r\n"), "{ping}");
        assert_eq!(body(&ping), "OK");
    }
    let info = https_get(&certs, https, "/info");
    let info: serde_json::Value = serde_json::from_str(body(&info)).unwrap();
    assert_eq!(info["version"], "1.3.0");
    let stats = https_get(&certs, https, "/stats?format=json");
    assert!(body(&stats).contains("\"topics\""), "{stats}");
    // Plain HTTP still serves without --tls-required.
    let plain = plain_get(b.http.unwrap(), "/ping");
    assert!(plain.starts_with("HTTP/1.1 200 OK\r\n"), "{plain}");
    // A plain-text client on the HTTPS port gets no HTTP answer.
    let garbage = plain_get(https, "/ping");
    assert!(!garbage.contains("200 OK"), "{garbage}");
}

#[test]
fn tls_required_answers_plain_http_with_403() {
    let certs = Certs::new("client");
    let (b, https) = start(&certs, &["--tls-required=true"]);
    for path in ["/ping", "/stats", "/nowhere"] {
        let resp = plain_get(b.http.unwrap(), path);
        assert!(resp.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{resp}");
        assert_eq!(
            body(&resp),
            format!(
                r#"{{"message": "TLS_REQUIRED", "https_port": {}}}"#,
                https.port()
            )
        );
        let head = resp.to_ascii_lowercase();
        assert!(
            head.contains("x-nsq-content-type: nsq; version=1.0\r\n"),
            "{resp}"
        );
        assert!(
            head.contains("content-type: application/json; charset=utf-8\r\n"),
            "{resp}"
        );
    }
    let ping = https_get(&certs, https, "/ping");
    assert!(ping.starts_with("HTTP/1.1 200 OK\r\n"), "{ping}");
}

#[test]
fn tcp_https_leaves_plain_http_alone() {
    let certs = Certs::new("client");
    let (b, https) = start(&certs, &["--tls-required=tcp-https"]);
    let plain = plain_get(b.http.unwrap(), "/ping");
    assert!(plain.starts_with("HTTP/1.1 200 OK\r\n"), "{plain}");
    let ping = https_get(&certs, https, "/ping");
    assert!(ping.starts_with("HTTP/1.1 200 OK\r\n"), "{ping}");
}
