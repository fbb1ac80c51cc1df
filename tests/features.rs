//! IDENTIFY feature negotiation over real sockets: TLS (with client-certificate policies and
//! `--tls-required`), snappy and deflate, alone and layered over TLS, in nsqd's upgrade order
//! (JSON reply in plain text, then the handshake, then `OK` through the new layers).

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use common::certs::TestCerts;
use common::{Broker, READ_TIMEOUT, mpub_body, unique};
use rustls::pki_types::ServerName;

/// Anything a layer can sit on.
trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}

/// One stream shared by a layer's reading and writing halves.
#[derive(Clone)]
struct Shared(Rc<RefCell<Box<dyn Duplex>>>);

impl Read for Shared {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(b)
    }
}

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// A V2 client whose stream can be upgraded in place.
struct FeatureClient {
    reader: Box<dyn Read>,
    writer: Box<dyn Write>,
    base: Shared,
}

/// `--tls-cert`, `--tls-key` and `--tls-root-ca-file` for the test certificates.
fn tls_flags(certs: &TestCerts) -> Vec<String> {
    let mut flags = certs.server_flags();
    flags.push(certs.root_ca_flag());
    flags
}

fn start(extra: &[String]) -> Broker {
    let mut args: Vec<&str> = vec!["--cores=2"];
    args.extend(extra.iter().map(|s| s.as_str()));
    Broker::start(&args)
}

impl FeatureClient {
    fn connect(b: &Broker) -> FeatureClient {
        let tcp = TcpStream::connect(b.tcp).unwrap();
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let base = Shared(Rc::new(RefCell::new(Box::new(tcp))));
        let mut c = FeatureClient {
            reader: Box::new(base.clone()),
            writer: Box::new(base.clone()),
            base,
        };
        c.send(b"  V2");
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    fn command(&mut self, line: &str, body: Option<&[u8]>) {
        let mut b = format!("{line}\n").into_bytes();
        if let Some(body) = body {
            b.extend_from_slice(&(body.len() as u32).to_be_bytes());
            b.extend_from_slice(body);
        }
        self.send(&b);
    }

    /// Reads one frame that is not a heartbeat: (type, data).
    fn frame(&mut self) -> (u32, Vec<u8>) {
        loop {
            let mut head = [0u8; 8];
            self.reader.read_exact(&mut head).unwrap();
            let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
            let ty = u32::from_be_bytes(head[4..].try_into().unwrap());
            let mut data = vec![0u8; size - 4];
            self.reader.read_exact(&mut data).unwrap();
            if !(ty == 0 && data == b"_heartbeat_") {
                return (ty, data);
            }
        }
    }

    fn expect_ok(&mut self) {
        let (ty, data) = self.frame();
        assert_eq!(
            (ty, String::from_utf8_lossy(&data).into_owned()),
            (0, "OK".into())
        );
    }

    fn identify(&mut self, json: &str) -> serde_json::Value {
        self.command("IDENTIFY", Some(json.as_bytes()));
        let (ty, data) = self.frame();
        assert_eq!(ty, 0, "{}", String::from_utf8_lossy(&data));
        serde_json::from_slice(&data).unwrap()
    }

    /// Continues on the same socket through TLS.
    fn upgrade_tls(&mut self, config: Arc<rustls::ClientConfig>) {
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let inner = self.base.clone();
        let tls: Box<dyn Duplex> = Box::new(rustls::StreamOwned::new(conn, inner));
        self.base = Shared(Rc::new(RefCell::new(tls)));
        self.reader = Box::new(self.base.clone());
        self.writer = Box::new(self.base.clone());
    }

    fn upgrade_snappy(&mut self) {
        self.reader = Box::new(snap::read::FrameDecoder::new(self.base.clone()));
        self.writer = Box::new(snap::write::FrameEncoder::new(self.base.clone()));
    }

    fn upgrade_deflate(&mut self) {
        // Buffered: flate2's reader asks the socket for more input before handing out output it
        // already holds, so small reads straight from it could wait forever.
        let inflate = flate2::read::DeflateDecoder::new(self.base.clone());
        self.reader = Box::new(std::io::BufReader::with_capacity(64 * 1024, inflate));
        self.writer = Box::new(flate2::write::DeflateEncoder::new(
            self.base.clone(),
            flate2::Compression::new(3),
        ));
    }

    /// PUB, SUB, RDY and FIN of `n` messages on this (upgraded) connection.
    fn round_trip(&mut self, n: usize) {
        let topic = unique("feat");
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("message {i} {}", "x".repeat(i % 300)).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
        for chunk in refs.chunks(100) {
            self.command(&format!("MPUB {topic}"), Some(&mpub_body(chunk)));
            self.expect_ok();
        }
        self.command(&format!("SUB {topic} c"), None);
        self.expect_ok();
        self.command("RDY 200", None);
        let mut got = Vec::new();
        while got.len() < n {
            let (ty, data) = self.frame();
            assert_eq!(ty, 2, "{}", String::from_utf8_lossy(&data));
            let id = String::from_utf8(data[10..26].to_vec()).unwrap();
            got.push(data[26..].to_vec());
            self.command(&format!("FIN {id}"), None);
        }
        assert_eq!(got, bodies);
    }
}

#[test]
fn tls_upgrade_in_nsqd_order_then_pubsub() {
    let tls = TestCerts::new("client");
    let b = start(&tls_flags(&tls));
    let mut c = FeatureClient::connect(&b);
    let reply = c.identify(r#"{"feature_negotiation":true,"tls_v1":true}"#);
    assert_eq!(reply["tls_v1"], true);
    c.upgrade_tls(tls.client_config(false));
    c.expect_ok();
    c.round_trip(500);
}

#[test]
fn tls_not_requested_stays_plain() {
    let tls = TestCerts::new("client");
    let b = start(&tls_flags(&tls));
    let mut c = FeatureClient::connect(&b);
    let reply = c.identify(r#"{"feature_negotiation":true}"#);
    assert_eq!(reply["tls_v1"], false);
    c.round_trip(10);
}

#[test]
fn tls_required_refuses_commands_before_upgrade() {
    let tls = TestCerts::new("client");
    let mut flags = tls_flags(&tls);
    flags.push("--tls-required=true".into());
    let b = start(&flags);
    let mut plain = b.client();
    plain.with_body("PUB t", b"x");
    plain.expect_error("E_INVALID cannot PUB in current state (TLS required)");
    plain.expect_closed();
    let mut c = FeatureClient::connect(&b);
    c.identify(r#"{"feature_negotiation":true,"tls_v1":true}"#);
    c.upgrade_tls(tls.client_config(false));
    c.expect_ok();
    c.round_trip(20);
}

#[test]
fn client_certificate_policies() {
    let tls = TestCerts::new("client");
    for policy in ["require", "require-verify"] {
        let mut flags = tls_flags(&tls);
        flags.push(format!("--tls-client-auth-policy={policy}"));
        let b = start(&flags);
        // Without a client certificate the handshake fails.
        let mut anon = FeatureClient::connect(&b);
        anon.identify(r#"{"feature_negotiation":true,"tls_v1":true}"#);
        anon.upgrade_tls(tls.client_config(false));
        let mut head = [0u8; 8];
        let refused = match anon.reader.read_exact(&mut head) {
            Err(_) => true,
            // TLS 1.3 may finish the client side first; then the first read fails.
            Ok(()) => false,
        };
        assert!(
            refused,
            "{policy}: handshake without a client certificate succeeded"
        );
        // With one, it works.
        let mut c = FeatureClient::connect(&b);
        c.identify(r#"{"feature_negotiation":true,"tls_v1":true}"#);
        c.upgrade_tls(tls.client_config(true));
        c.expect_ok();
        c.round_trip(10);
    }
}

#[test]
fn snappy_upgrade_then_pubsub() {
    let b = start(&[]);
    let mut c = FeatureClient::connect(&b);
    let reply = c.identify(r#"{"feature_negotiation":true,"snappy":true}"#);
    assert_eq!(
        (reply["snappy"].clone(), reply["deflate"].clone()),
        (true.into(), false.into())
    );
    c.upgrade_snappy();
    c.expect_ok();
    c.round_trip(2000);
}

#[test]
fn deflate_upgrade_then_pubsub() {
    let b = start(&["--max-deflate-level=4".to_string()]);
    let mut c = FeatureClient::connect(&b);
    let reply = c.identify(r#"{"feature_negotiation":true,"deflate":true,"deflate_level":9}"#);
    assert_eq!(reply["deflate"], true);
    assert_eq!(reply["deflate_level"], 4, "capped at --max-deflate-level");
    c.upgrade_deflate();
    c.expect_ok();
    c.round_trip(2000);
}

#[test]
fn snappy_over_tls() {
    let tls = TestCerts::new("client");
    let b = start(&tls_flags(&tls));
    let mut c = FeatureClient::connect(&b);
    let reply = c.identify(r#"{"feature_negotiation":true,"tls_v1":true,"snappy":true}"#);
    assert_eq!(
        (reply["tls_v1"].clone(), reply["snappy"].clone()),
        (true.into(), true.into())
    );
    c.upgrade_tls(tls.client_config(false));
    c.expect_ok();
    c.upgrade_snappy();
    c.expect_ok();
    c.round_trip(500);
}

#[test]
fn both_compressions_and_disabled_features() {
    let b = start(&[]);
    let mut c = b.client();
    c.with_body(
        "IDENTIFY",
        br#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#,
    );
    c.expect_error("E_IDENTIFY_FAILED cannot enable both deflate and snappy compression");
    c.expect_closed();
    let off = start(&["--snappy=false".to_string(), "--deflate=false".to_string()]);
    let mut c = FeatureClient::connect(&off);
    let reply = c.identify(r#"{"feature_negotiation":true,"snappy":true,"tls_v1":true}"#);
    assert_eq!(
        (reply["snappy"].clone(), reply["tls_v1"].clone()),
        (false.into(), false.into())
    );
    c.round_trip(5);
}

#[test]
fn bad_tls_files_are_refused_at_start() {
    let dir = std::env::temp_dir().join(unique("nsqd-badtls-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("junk.pem"), "not a certificate").unwrap();
    let junk = dir.join("junk.pem");
    let r = Broker::try_start(&[
        &format!("--tls-cert={}", junk.display()),
        &format!("--tls-key={}", Path::new("/nonexistent/key.pem").display()),
    ]);
    let err = r.err().expect("must not start");
    assert!(err.contains("--tls-"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sample_rate_keeps_roughly_the_asked_share() {
    let b = start(&[]);
    let topic = unique("sample");
    let mut c = b.client();
    c.identify(r#"{"sample_rate":30}"#);
    c.sub(&topic, "c");
    c.line("RDY 2500");
    let mut full = b.client();
    full.sub(&topic, "all");
    full.line("RDY 2500");
    let n = 4000;
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| format!("{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
    let mut p = b.client();
    for chunk in refs.chunks(500) {
        p.mpub(&topic, chunk);
    }
    // The unsampled channel gets everything; the sampled client about 30 % (31/100 by nsqd's
    // `rand <= rate` rule).
    for _ in 0..n {
        let m = full.expect_message();
        full.line(&format!("FIN {}", m.id));
    }
    let mut got = 0;
    loop {
        c.stream
            .set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .unwrap();
        match c.try_frame() {
            Ok(common::Frame::Message(m)) => {
                got += 1;
                c.line(&format!("FIN {}", m.id));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let share = got as f64 / n as f64;
    assert!(
        (0.24..0.38).contains(&share),
        "sampled share {share} ({got} of {n})"
    );
}

#[test]
fn tls_carries_large_pipelined_bodies() {
    // Megabytes in one write: rustls must be drained while the read is fed to it.
    let tls = TestCerts::new("client");
    let b = start(&tls_flags(&tls));
    let mut c = FeatureClient::connect(&b);
    c.identify(r#"{"feature_negotiation":true,"tls_v1":true}"#);
    c.upgrade_tls(tls.client_config(false));
    c.expect_ok();
    let topic = unique("bigtls");
    let body = vec![b'z'; 10 * 1024];
    let bodies: Vec<&[u8]> = (0..100).map(|_| body.as_slice()).collect();
    let mpub = mpub_body(&bodies);
    let mut all = Vec::new();
    for _ in 0..4 {
        all.extend_from_slice(format!("MPUB {topic}\n").as_bytes());
        all.extend_from_slice(&(mpub.len() as u32).to_be_bytes());
        all.extend_from_slice(&mpub);
    }
    c.send(&all);
    for _ in 0..4 {
        c.expect_ok();
    }
}

/// A consumer with a deep RDY over TLS gets its backlog in one burst of hundreds of KiB, more
/// than rustls buffers at a time (64 KiB): it must arrive whole (the broker used to close the
/// connection with "cannot encode output: failed to write whole buffer").
#[test]
fn tls_consumer_gets_a_burst_larger_than_rustls_buffers() {
    let tls = TestCerts::new("client");
    let b = start(&tls_flags(&tls));
    let body = vec![b'b'; 1000];
    let bodies: Vec<&[u8]> = (0..100).map(|_| body.as_slice()).collect();
    for snappy in [false, true] {
        let topic = unique("tlsburst");
        let mut p = b.client();
        for _ in 0..3 {
            p.mpub(&topic, &bodies);
        }
        let mut c = FeatureClient::connect(&b);
        let features = if snappy { r#","snappy":true"# } else { "" };
        c.identify(&format!(
            r#"{{"feature_negotiation":true,"tls_v1":true{features}}}"#
        ));
        c.upgrade_tls(tls.client_config(false));
        c.expect_ok();
        if snappy {
            c.upgrade_snappy();
            c.expect_ok();
        }
        c.command(&format!("SUB {topic} c"), None);
        c.expect_ok();
        c.command("RDY 300", None);
        for i in 0..300 {
            let (ty, data) = c.frame();
            assert_eq!(
                (ty, &data[26..]),
                (2, &body[..]),
                "message {i}, snappy {snappy}"
            );
        }
    }
}

/// A deflate publisher's body that compresses to a few hundred bytes inflates to more than
/// the broker decompresses in one step; the rest must come out of what was already received
/// (the broker used to wait for socket bytes the client never sends).
#[test]
fn deflate_publisher_body_inflating_far_beyond_its_compressed_size() {
    let b = start(&[]);
    let mut c = FeatureClient::connect(&b);
    c.identify(r#"{"feature_negotiation":true,"deflate":true,"deflate_level":1}"#);
    c.upgrade_deflate();
    c.expect_ok();
    let topic = unique("bigdeflate");
    let body = vec![b' '; 300_000];
    for _ in 0..3 {
        c.command(&format!("PUB {topic}"), Some(&body));
        c.expect_ok();
    }
    let mut consumer = b.consumer(&topic, "c", 3);
    for _ in 0..3 {
        assert_eq!(consumer.expect_message().body, body);
    }
}

#[test]
fn topology_aware_consumption_serves_the_zone_first() {
    let b = start(&[
        "--topology-zone=z1".to_string(),
        "--topology-region=r1".to_string(),
        "--enable-experiment=topology-aware-consumption".to_string(),
    ]);
    let topic = unique("topo");
    let mut far = b.client();
    let reply =
        far.identify(r#"{"feature_negotiation":true,"topology_zone":"z9","topology_region":"r9"}"#);
    let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(
        (v["topology_zone"].clone(), v["topology_region"].clone()),
        ("z1".into(), "r1".into())
    );
    far.sub(&topic, "c");
    far.line("RDY 10");
    let mut near = b.client();
    near.identify(r#"{"topology_zone":"z1","topology_region":"r1"}"#);
    near.sub(&topic, "c");
    near.line("RDY 10");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let bodies: Vec<Vec<u8>> = (0..10).map(|i| format!("{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
    b.client().mpub(&topic, &refs);
    for _ in 0..10 {
        near.expect_message();
    }
    far.expect_silence(std::time::Duration::from_millis(300));
}
