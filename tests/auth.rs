//! AUTH against an auth server run by the test (a tiny HTTP/1.1 server on a std listener that
//! answers canned JSON and records every request): the success reply, every error text of
//! nsqd in order, regex permissions for SUB/PUB/MPUB/DPUB, TTL caching and re-query, GET and
//! POST, rotation past a dead server, the request timeout, and `/stats`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Broker, Client, Frame, mpub_body, unique};

/// One request the auth server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    content_type: String,
    body: String,
}

type Answer = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// The test's auth server: answers each request with `answer(request)`.
struct AuthServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl AuthServer {
    fn start(answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> AuthServer {
        Self::serve(None, answer)
    }

    /// The same over TLS with `tls`.
    fn serve(
        tls: Option<Arc<rustls::ServerConfig>>,
        answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
    ) -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (log, answer, tls) = (log.clone(), answer.clone(), tls.clone());
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                std::thread::spawn(move || match tls {
                    None => serve_one(stream, &log, &*answer),
                    Some(config) => {
                        let conn = rustls::ServerConnection::new(config).unwrap();
                        serve_one(rustls::StreamOwned::new(conn, stream), &log, &*answer)
                    }
                });
            }
        });
        AuthServer { addr, seen }
    }

    /// Grants `authorizations` (a JSON array) for `ttl` seconds to any secret.
    fn granting(ttl: u32, authorizations: &str) -> AuthServer {
        let reply = format!(
            r#"{{"ttl":{ttl},"identity":"alice","identity_url":"http://id.example/alice","authorizations":{authorizations}}}"#
        );
        AuthServer::start(move |_| (200, reply.clone()))
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn flag(&self) -> String {
        format!("--auth-http-address={}", self.addr)
    }
}

fn serve_one(mut stream: impl Read + Write, log: &Mutex<Vec<Seen>>, answer: &Answer) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while data.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    let mut first = head.lines().next().unwrap_or_default().split(' ');
    let seen = Seen {
        method: first.next().unwrap_or_default().to_string(),
        target: first.next().unwrap_or_default().to_string(),
        content_type: header("content-type"),
        body: String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned(),
    };
    log.lock().unwrap().push(seen.clone());
    let (status, body) = answer(&seen);
    if status == 0 {
        // Never answer (the broker's request timeout must fire).
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

fn broker(extra: &[&str]) -> Broker {
    let mut args = vec!["--cores=2"];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

/// `/stats?format=json` as a JSON value.
fn stats_json(b: &Broker) -> serde_json::Value {
    let http = b.http.unwrap();
    let stats = ureq::get(&format!("http://{http}/stats?format=json"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    serde_json::from_str(&stats).unwrap()
}

fn auth(c: &mut Client, secret: &str) {
    c.with_body("AUTH", secret.as_bytes());
}

fn expect_auth_ok(c: &mut Client, secret: &str) {
    auth(c, secret);
    c.expect_response(
        br#"{"identity":"alice","identity_url":"http://id.example/alice","permission_count":2}"#,
    );
}

/// Publish to topics matching `^pub` (channel `.*`), subscribe to `^sub` on channel `^ch$`.
const GRANTS: &str = r#"[{"topic":"^pub","channels":[".*"],"permissions":["publish"]},{"topic":"^sub","channels":["^ch$"],"permissions":["subscribe"]}]"#;

#[test]
fn auth_success_reply_identify_and_stats() {
    let server = AuthServer::granting(60, GRANTS);
    let b = broker(&[&server.flag()]);
    let mut c = b.client();
    let negotiated = c.identify(r#"{"feature_negotiation":true}"#);
    let json: serde_json::Value = serde_json::from_slice(&negotiated).unwrap();
    assert_eq!(json["auth_required"], true);
    expect_auth_ok(&mut c, "s3cret &x");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].target,
        "/auth?common_name=&remote_ip=127.0.0.1&secret=s3cret+%26x&tls=false"
    );
    let topic = unique("pub");
    c.publish(&topic, b"m");
    let stats = stats_json(&b);
    let producer = stats["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pub_counts"][0]["topic"] == topic.as_str())
        .expect("the publisher is listed");
    assert_eq!(producer["authed"], true);
    assert_eq!(producer["auth_identity"], "alice");
    assert_eq!(producer["auth_identity_url"], "http://id.example/alice");

    // Without auth configured, IDENTIFY says so and the fields are omitted.
    let plain = broker(&[]);
    let mut c = plain.client();
    let negotiated = c.identify(r#"{"feature_negotiation":true}"#);
    let json: serde_json::Value = serde_json::from_slice(&negotiated).unwrap();
    assert_eq!(json["auth_required"], false);
    c.publish(&topic, b"m");
    let stats = stats_json(&plain).to_string();
    assert!(!stats.contains("authed"), "{stats}");
    assert!(!stats.contains("auth_identity"), "{stats}");
}

#[test]
fn auth_error_texts() {
    // Disabled.
    let plain = broker(&[]);
    let mut c = plain.client();
    auth(&mut c, "x");
    c.expect_error("E_AUTH_DISABLED AUTH disabled");
    c.expect_closed();

    let server = AuthServer::start(|s| {
        if s.target.contains("secret=down") {
            (500, "{}".into())
        } else if s.target.contains("secret=badttl") {
            (200, r#"{"ttl":0,"authorizations":[]}"#.into())
        } else if s.target.contains("secret=badperm") {
            let a = r#"[{"topic":".*","channels":[".*"],"permissions":["admin"]}]"#;
            (200, format!(r#"{{"ttl":5,"authorizations":{a}}}"#))
        } else if s.target.contains("secret=nothing") {
            (
                200,
                r#"{"ttl":5,"identity":"n","authorizations":[]}"#.into(),
            )
        } else {
            (
                200,
                format!(
                    r#"{{"ttl":5,"identity":"alice","identity_url":"http://id.example/alice","authorizations":{GRANTS}}}"#
                ),
            )
        }
    });
    let b = broker(&[&server.flag()]);
    for (secret, error) in [
        ("down", "E_AUTH_FAILED AUTH failed"),
        ("badttl", "E_AUTH_FAILED AUTH failed"),
        ("badperm", "E_AUTH_FAILED AUTH failed"),
        ("nothing", "E_UNAUTHORIZED AUTH no authorizations found"),
    ] {
        let mut c = b.client();
        auth(&mut c, secret);
        c.expect_error(error);
        c.expect_closed();
    }
    // AUTH twice.
    let mut c = b.client();
    expect_auth_ok(&mut c, "good");
    auth(&mut c, "good");
    c.expect_error("E_INVALID AUTH already set");
    c.expect_closed();
    // The decoder's checks still come first.
    let mut c = b.client();
    c.line("AUTH a b");
    c.expect_error("E_INVALID AUTH invalid number of parameters");
    // Commands before AUTH.
    let first = |send: &dyn Fn(&mut Client), cmd: &str| {
        let mut c = b.client();
        send(&mut c);
        c.expect_error(&format!("E_AUTH_FIRST AUTH required before {cmd}"));
        c.expect_closed();
    };
    first(&|c| c.with_body("PUB pubt", b"m"), "PUB");
    first(&|c| c.with_body("MPUB pubt", &mpub_body(&[b"a"])), "MPUB");
    first(&|c| c.with_body("DPUB pubt 10", b"m"), "DPUB");
    first(&|c| c.line("SUB subt ch"), "SUB");
    // nsqd authorizes an MPUB before reading its body, and a PUB after: with a bad body too,
    // the MPUB gets the AUTH error and the PUB the body's.
    first(&|c| c.with_body("MPUB pubt", &[0, 0, 0, 0]), "MPUB");
    let mut c = b.client();
    c.with_body("PUB pubt", b"");
    c.expect_error("E_BAD_MESSAGE PUB invalid message body size 0");
    // After SUB's own checks (a bad name is reported before auth).
    let mut c = b.client();
    c.line("SUB bad! ch");
    c.expect_error(r#"E_BAD_TOPIC SUB topic name "bad!" is not valid"#);
}

#[test]
fn permissions_allow_and_deny_by_unanchored_regex() {
    let server = AuthServer::granting(60, GRANTS);
    let b = broker(&[&server.flag()]);
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    c.publish("pub-a", b"1");
    c.mpub("pubmany", &[b"1", b"2"]);
    c.with_body("DPUB pub-d 10", b"d");
    c.expect_ok();
    c.with_body("PUB xpub", b"1");
    c.expect_error(r#"E_UNAUTHORIZED AUTH failed for PUB on "xpub" """#);
    c.expect_closed();

    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    c.with_body("MPUB other", &mpub_body(&[b"a"]));
    c.expect_error(r#"E_UNAUTHORIZED AUTH failed for MPUB on "other" """#);
    // A bad body does not hide the refusal (nsqd asks before reading it).
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    c.with_body("MPUB other", &[0, 0, 0, 0]);
    c.expect_error(r#"E_UNAUTHORIZED AUTH failed for MPUB on "other" """#);
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    c.with_body("MPUB pubmany", &[0, 0, 0, 0]);
    c.expect_error("E_BAD_BODY MPUB invalid message count 0");
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    c.with_body("DPUB other 5", b"m");
    c.expect_error(r#"E_UNAUTHORIZED AUTH failed for DPUB on "other" """#);

    // Subscribe: topic `^sub` and channel exactly `ch`; publish permission does not count.
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    c.sub("subject", "ch");
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    c.line("SUB subject chan");
    c.expect_error(r#"E_UNAUTHORIZED AUTH failed for SUB on "subject" "chan""#);
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    c.line("SUB pub-a ch");
    c.expect_error(r#"E_UNAUTHORIZED AUTH failed for SUB on "pub-a" "ch""#);

    // A publish grant without a channel pattern matching "" permits no publish.
    let server = AuthServer::granting(
        60,
        r#"[{"topic":".*","channels":["^c$"],"permissions":["publish","subscribe"]},{"topic":"zzz","channels":[".*"],"permissions":["subscribe"]}]"#,
    );
    let b2 = broker(&[&server.flag()]);
    let mut c = b2.client();
    expect_auth_ok(&mut c, "s");
    c.with_body("PUB t", b"m");
    c.expect_error(r#"E_UNAUTHORIZED AUTH failed for PUB on "t" """#);
}

#[test]
fn a_pipelined_batch_stops_at_the_first_refused_publish() {
    let server = AuthServer::granting(60, GRANTS);
    let b = broker(&[&server.flag()]);
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    let (t1, t2) = (unique("pub1"), unique("pub2"));
    let mut wire = Vec::new();
    for (topic, body) in [
        (t1.as_str(), &b"a"[..]),
        (t1.as_str(), b"b"),
        ("nope", b"c"),
        (t2.as_str(), b"d"),
    ] {
        wire.extend_from_slice(format!("PUB {topic}\n").as_bytes());
        wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
        wire.extend_from_slice(body);
    }
    c.send(&wire);
    c.expect_ok();
    c.expect_ok();
    c.expect_error(r#"E_UNAUTHORIZED AUTH failed for PUB on "nope" """#);
    c.expect_closed();
    let stats = stats_json(&b);
    let names: Vec<&str> = stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic_name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&t1.as_str()), "{names:?}");
    assert!(!names.contains(&"nope"), "{names:?}");
    assert!(!names.contains(&t2.as_str()), "{names:?}");
}

#[test]
fn reply_is_cached_for_its_ttl_then_asked_again() {
    let allow = Arc::new(Mutex::new(true));
    let gate = allow.clone();
    let server = AuthServer::start(move |_| {
        let topic = if *gate.lock().unwrap() {
            "^pub"
        } else {
            "^never"
        };
        let reply = format!(
            r#"{{"ttl":1,"identity":"alice","identity_url":"http://id.example/alice","authorizations":[{{"topic":"{topic}","channels":[".*"],"permissions":["publish"]}},{{"topic":"x","channels":["x"],"permissions":["subscribe"]}}]}}"#
        );
        (200, reply)
    });
    let b = broker(&[&server.flag()]);
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    let started = Instant::now();
    for _ in 0..5 {
        c.publish("pub-ttl", b"m");
    }
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            server.count(),
            1,
            "publishes within the TTL use the cached reply"
        );
    }
    std::thread::sleep(Duration::from_millis(1600));
    c.publish("pub-ttl", b"m");
    assert_eq!(
        server.count(),
        2,
        "the first publish after expiry asks again"
    );
    // The next re-query takes permissions away.
    *allow.lock().unwrap() = false;
    std::thread::sleep(Duration::from_millis(1600));
    c.with_body("PUB pub-ttl", b"m");
    c.expect_error(r#"E_UNAUTHORIZED AUTH failed for PUB on "pub-ttl" """#);
    assert_eq!(server.count(), 3);
}

#[test]
fn failed_requery_is_auth_failed() {
    let calls = Arc::new(Mutex::new(0));
    let n = calls.clone();
    let server = AuthServer::start(move |_| {
        let mut n = n.lock().unwrap();
        *n += 1;
        if *n == 1 {
            (
                200,
                format!(
                    r#"{{"ttl":1,"identity":"alice","identity_url":"http://id.example/alice","authorizations":{GRANTS}}}"#
                ),
            )
        } else {
            (503, "{}".into())
        }
    });
    let b = broker(&[&server.flag()]);
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    std::thread::sleep(Duration::from_millis(1600));
    c.line("SUB subject ch");
    c.expect_error("E_AUTH_FAILED AUTH failed");
    c.expect_closed();
}

#[test]
fn post_sends_a_json_encoded_form() {
    let server = AuthServer::granting(60, GRANTS);
    // A host name: resolved off the core, and every address tried (localhost may be ::1 first).
    let by_name = format!("--auth-http-address=localhost:{}", server.addr.port());
    let b = broker(&[&by_name, "--auth-http-request-method=post"]);
    let mut c = b.client();
    expect_auth_ok(&mut c, "p<w>");
    let seen = server.requests();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/auth");
    assert_eq!(seen[0].content_type, "application/json");
    assert_eq!(
        seen[0].body,
        r#"{"common_name":[""],"remote_ip":["127.0.0.1"],"secret":["p\u003cw\u003e"],"tls":["false"]}"#
    );
}

#[test]
fn rotation_skips_a_dead_server_and_full_urls_are_used_as_given() {
    let server = AuthServer::granting(60, GRANTS);
    // A port nothing listens on.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = broker(&[
        &format!("--auth-http-address={dead}"),
        &format!("--auth-http-address=http://{}/custom/path?k=v", server.addr),
    ]);
    for _ in 0..6 {
        let mut c = b.client();
        expect_auth_ok(&mut c, "s");
    }
    let seen = server.requests();
    assert_eq!(seen.len(), 6);
    assert!(
        seen[0].target.starts_with("/custom/path?k=v?common_name="),
        "nsqd appends its query as given: {}",
        seen[0].target
    );
}

#[test]
fn request_timeout_fails_auth_without_stalling_the_core() {
    let server = AuthServer::start(|_| (0, String::new()));
    let b = broker(&[&server.flag(), "--http-client-request-timeout=300ms"]);
    let started = Instant::now();
    let mut c = b.client();
    auth(&mut c, "s");
    // Meanwhile the other connections on every core are served.
    for _ in 0..4 {
        let mut other = b.client();
        other.line("NOP");
        other.with_body("AUTH a b", b"");
        match other.next() {
            Frame::Error(e) => assert_eq!(e, "E_INVALID AUTH invalid number of parameters"),
            f => panic!("{f:?}"),
        }
    }
    c.expect_error("E_AUTH_FAILED AUTH failed");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Reads one V2 frame: (type, data).
fn read_frame(r: &mut impl Read) -> (u32, Vec<u8>) {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).unwrap();
    let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
    let ty = u32::from_be_bytes(head[4..].try_into().unwrap());
    let mut data = vec![0u8; size - 4];
    r.read_exact(&mut data).unwrap();
    (ty, data)
}

#[test]
fn tls_clients_send_tls_true_and_their_certificate_common_name() {
    use rustls::pki_types::ServerName;
    let certs = common::certs::TestCerts::new("worker-7");
    let auth_server = AuthServer::granting(60, GRANTS);
    let tls_flags = certs.server_flags();
    let b = broker(&[
        &auth_server.flag(),
        &tls_flags[0],
        &tls_flags[1],
        "--tls-client-auth-policy=require",
    ]);
    let mut tcp = TcpStream::connect(b.tcp).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let identify = br#"{"tls_v1":true,"feature_negotiation":true}"#;
    let mut wire = b"  V2IDENTIFY\n".to_vec();
    wire.extend_from_slice(&(identify.len() as u32).to_be_bytes());
    wire.extend_from_slice(identify);
    tcp.write_all(&wire).unwrap();
    let (_, json) = read_frame(&mut tcp);
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        (json["tls_v1"].clone(), json["auth_required"].clone()),
        (true.into(), true.into())
    );
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(certs.client_config(true), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    assert_eq!(read_frame(&mut tls), (0, b"OK".to_vec()));
    let mut wire = b"AUTH\n".to_vec();
    wire.extend_from_slice(&6u32.to_be_bytes());
    wire.extend_from_slice(b"secret");
    tls.write_all(&wire).unwrap();
    let (ty, reply) = read_frame(&mut tls);
    assert_eq!(ty, 0, "{}", String::from_utf8_lossy(&reply));
    assert_eq!(
        auth_server.requests()[0].target,
        "/auth?common_name=worker-7&remote_ip=127.0.0.1&secret=secret&tls=true"
    );
}

#[test]
fn https_auth_servers_and_nsqds_tls_required_redirect() {
    let certs = common::certs::TestCerts::new("client");
    let reply = format!(
        r#"{{"ttl":60,"identity":"alice","identity_url":"http://id.example/alice","authorizations":{GRANTS}}}"#
    );
    let https = AuthServer::serve(Some(certs.server_config()), move |_| (200, reply.clone()));
    // A plain auth server that requires TLS, as nsqd's own HTTP API does.
    let port = https.addr.port();
    let plain = AuthServer::start(move |_| {
        let body = format!(r#"{{"message": "TLS_REQUIRED", "https_port": {port}}}"#);
        (403, body)
    });
    let b = broker(&[
        &format!("--auth-http-address=https://127.0.0.1:{port}/auth"),
        &certs.root_ca_flag(),
    ]);
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    assert_eq!(https.count(), 1);
    let b = broker(&[&plain.flag(), &certs.root_ca_flag()]);
    let mut c = b.client();
    expect_auth_ok(&mut c, "s");
    assert_eq!(plain.count(), 1);
    let seen = https.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].target.starts_with("/auth?common_name="),
        "{}",
        seen[1].target
    );
    // Without the CA the certificate is not trusted: the auth server is unreachable.
    let b = broker(&[&format!(
        "--auth-http-address=https://127.0.0.1:{port}/auth"
    )]);
    let mut c = b.client();
    auth(&mut c, "s");
    c.expect_error("E_AUTH_FAILED AUTH failed");
}
