//! Shared test harness: spawns the built `nsqd` on free loopback ports (port 0, read back from
//! its log) and drives it with a small blocking V2 client that asserts on exact bytes.

#![allow(dead_code)]

pub mod certs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default per-read timeout for test clients: long enough for a loaded 2-core CI machine.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A running broker process, killed on drop.
pub struct Broker {
    child: Option<Child>,
    /// Its TCP listener.
    pub tcp: SocketAddr,
    /// Its HTTP listener, if it serves HTTP.
    pub http: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    /// The `--data-path` this helper created (removed on drop), if the test gave none.
    pub temp_data: Option<TempDir>,
}

/// Path of the broker binary under test.
pub fn nsqd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nsqd")
}

fn has_flag(args: &[&str], name: &str) -> bool {
    args.iter()
        .any(|a| a.trim_start_matches('-').starts_with(name))
}

impl Broker {
    /// Starts `nsqd` with `args`, adding loopback port-0 addresses unless given.
    pub fn start(args: &[&str]) -> Broker {
        Self::try_start(args).unwrap_or_else(|e| panic!("nsqd did not start: {e}"))
    }

    /// Like [`Broker::start`] with `--cores N`.
    pub fn with_cores(cores: usize, extra: &[&str]) -> Broker {
        let cores = format!("--cores={cores}");
        let mut args = vec![cores.as_str()];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// Starts `nsqd`; `Err` carries its log if it exited or never listened.
    pub fn try_start(args: &[&str]) -> Result<Broker, String> {
        Self::try_start_wrapped(&[], args)
    }

    /// Like [`Broker::try_start`], with `nsqd` run by `wrapper` (a program and its arguments,
    /// the last of which is followed by the broker's path and arguments; see
    /// `tests/disk.rs`, which runs it in a private mount namespace). The wrapper must end by
    /// exec'ing the broker, so that [`Broker::pid`] is the broker's.
    pub fn try_start_wrapped(wrapper: &[String], args: &[&str]) -> Result<Broker, String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !has_flag(args, "tcp-address") {
            all.push("--tcp-address=127.0.0.1:0".into());
        }
        if !has_flag(args, "http-address") && http_supported() {
            all.push("--http-address=127.0.0.1:0".into());
        }
        // With a TLS certificate nsqd also serves HTTPS, by default on 0.0.0.0:4152: tests
        // listen on loopback only, and parallel brokers must not meet on one port.
        if !has_flag(args, "https-address") {
            all.push("--https-address=127.0.0.1:0".into());
        }
        // nsqd's default data path is the working directory, which parallel tests share.
        // Removed when dropped: with the broker, or here if it does not start.
        let temp_data = (!has_flag(args, "data-path")).then(temp_dir);
        if let Some(dir) = &temp_data {
            all.push(format!("--data-path={}", dir.display()));
        }
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(nsqd_bin());
                c
            }
            None => Command::new(nsqd_bin()),
        };
        let mut child = command
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = log.lock().unwrap().clone();
            let tcp = find_addr(&text, "TCP: listening on ");
            let http = find_addr(&text, "HTTP: listening on ");
            let http_ready = !http_supported() || http.is_some() || has_flag(args, "http-address");
            if let (Some(tcp), true) = (tcp, http_ready)
                && text.contains("serving on")
            {
                return Ok(Broker {
                    child: Some(child),
                    tcp,
                    http,
                    log,
                    temp_data,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "exited with {status}; log:\n{}",
                    log.lock().unwrap()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "no listening line in 60 s; log:\n{}",
                    log.lock().unwrap()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the broker logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The broker's process ID, for /proc figures (VmRSS) and signals.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker running").id()
    }

    /// Opens a V2 client (magic sent).
    pub fn client(&self) -> Client {
        Client::connect(self.tcp)
    }

    /// A consumer: SUB topic/channel (OK checked), then RDY `rdy`.
    pub fn consumer(&self, topic: &str, channel: &str, rdy: u64) -> Client {
        let mut c = self.client();
        c.sub(topic, channel);
        c.line(&format!("RDY {rdy}"));
        c
    }

    /// SIGKILL (a crash): nothing is flushed. Waits for the exit.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The broker is gone: its data directory goes with `temp_data`.
        self.temp_data.take();
    }
}

/// A fresh empty directory under the system temp dir, removed with everything in it when
/// dropped (so test runs leave nothing behind).
pub fn temp_dir() -> TempDir {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = unique(&format!("nsqd-data-{}-{nanos}-", std::process::id()));
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    TempDir(dir)
}

/// A directory [`temp_dir`] made; derefs to its path.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether this build serves HTTP (until it does, a non-default `--http-address` is refused
/// by name at startup).
pub fn http_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let out = Command::new(nsqd_bin())
            .args(["--http-address=127.0.0.1:0", "--tcp-address=not-an-address"])
            .output()
            .expect("run nsqd");
        !String::from_utf8_lossy(&out.stderr).contains("--http-address is not supported")
    })
}

fn find_addr(log: &str, marker: &str) -> Option<SocketAddr> {
    let start = log.find(marker)? + marker.len();
    log[start..].split_whitespace().next()?.parse().ok()
}

/// A frame from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Type 0.
    Response(Vec<u8>),
    /// Type 1.
    Error(String),
    /// Type 2.
    Message(Msg),
}

/// A decoded message frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub timestamp: i64,
    pub attempts: u16,
    pub id: String,
    pub body: Vec<u8>,
}

/// A blocking V2 test client.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    /// Connects and sends the V2 magic.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Self::connect_raw(addr);
        c.send(b"  V2");
        c
    }

    /// Connects without sending anything.
    pub fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Writes a command line (newline added).
    pub fn line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    /// Writes a command line followed by a size-prefixed body.
    pub fn with_body(&mut self, line: &str, body: &[u8]) {
        let mut b = format!("{line}\n").into_bytes();
        b.extend_from_slice(&(body.len() as u32).to_be_bytes());
        b.extend_from_slice(body);
        self.send(&b);
    }

    /// Reads one frame (heartbeats included).
    pub fn frame(&mut self) -> Frame {
        self.try_frame()
            .unwrap_or_else(|e| panic!("reading frame: {e}"))
    }

    /// Reads one frame or reports why not.
    pub fn try_frame(&mut self) -> std::io::Result<Frame> {
        let mut head = [0u8; 8];
        self.stream.read_exact(&mut head)?;
        let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let ty = u32::from_be_bytes(head[4..].try_into().unwrap());
        let mut data = vec![0u8; size - 4];
        self.stream.read_exact(&mut data)?;
        Ok(match ty {
            0 => Frame::Response(data),
            1 => Frame::Error(String::from_utf8_lossy(&data).into_owned()),
            2 => Frame::Message(Msg {
                timestamp: i64::from_be_bytes(data[..8].try_into().unwrap()),
                attempts: u16::from_be_bytes(data[8..10].try_into().unwrap()),
                id: String::from_utf8_lossy(&data[10..26]).into_owned(),
                body: data[26..].to_vec(),
            }),
            other => panic!("unknown frame type {other}"),
        })
    }

    /// Reads the next frame that is not a heartbeat.
    pub fn next(&mut self) -> Frame {
        loop {
            match self.frame() {
                Frame::Response(d) if d == b"_heartbeat_" => continue,
                f => return f,
            }
        }
    }

    /// Expects a response frame with exactly `data`.
    pub fn expect_response(&mut self, data: &[u8]) {
        match self.next() {
            Frame::Response(d) => {
                assert_eq!(String::from_utf8_lossy(&d), String::from_utf8_lossy(data))
            }
            other => panic!(
                "expected response {:?}, got {other:?}",
                String::from_utf8_lossy(data)
            ),
        }
    }

    /// Expects `OK`.
    pub fn expect_ok(&mut self) {
        self.expect_response(b"OK");
    }

    /// Expects an error frame with exactly `text`.
    pub fn expect_error(&mut self, text: &str) {
        match self.next() {
            Frame::Error(t) => assert_eq!(t, text),
            other => panic!("expected error {text:?}, got {other:?}"),
        }
    }

    /// Expects a message frame.
    pub fn expect_message(&mut self) -> Msg {
        match self.next() {
            Frame::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Expects the broker to close the connection (EOF or reset) within the read timeout.
    pub fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    // Only heartbeats may still arrive before the close.
                    assert!(
                        buf[..n].windows(11).any(|w| w == b"_heartbeat_"),
                        "unexpected bytes {:?}",
                        &buf[..n]
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("connection not closed: {e}"),
            }
        }
    }

    /// Asserts nothing (but heartbeats) arrives within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut head = [0u8; 8];
        let r = self.stream.read_exact(&mut head);
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        match r {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("connection failed while expecting silence: {e}"),
            Ok(()) => {
                let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
                let mut data = vec![0u8; size - 4];
                self.stream.read_exact(&mut data).unwrap();
                assert_eq!(
                    data,
                    b"_heartbeat_",
                    "expected silence, got frame type {:?} {:?}",
                    &head[4..],
                    String::from_utf8_lossy(&data)
                );
            }
        }
    }

    /// IDENTIFY with a JSON body; returns the response data.
    pub fn identify(&mut self, json: &str) -> Vec<u8> {
        self.with_body("IDENTIFY", json.as_bytes());
        match self.next() {
            Frame::Response(d) => d,
            other => panic!("IDENTIFY failed: {other:?}"),
        }
    }

    /// SUB and expect OK.
    pub fn sub(&mut self, topic: &str, channel: &str) {
        self.line(&format!("SUB {topic} {channel}"));
        self.expect_ok();
    }

    /// PUB and expect OK.
    pub fn publish(&mut self, topic: &str, body: &[u8]) {
        self.with_body(&format!("PUB {topic}"), body);
        self.expect_ok();
    }

    /// MPUB and expect OK.
    pub fn mpub(&mut self, topic: &str, bodies: &[&[u8]]) {
        self.with_body(&format!("MPUB {topic}"), &mpub_body(bodies));
        self.expect_ok();
    }
}

/// The MPUB body: count, then size-prefixed messages.
pub fn mpub_body(bodies: &[&[u8]]) -> Vec<u8> {
    let mut b = (bodies.len() as u32).to_be_bytes().to_vec();
    for m in bodies {
        b.extend_from_slice(&(m.len() as u32).to_be_bytes());
        b.extend_from_slice(m);
    }
    b
}

/// A unique topic name that the hash puts on core `owner` of `cores`.
pub fn unique_on_core(prefix: &str, owner: usize, cores: usize) -> String {
    loop {
        let t = unique(prefix);
        if nsqd_uring::mesh::owner_of(&t, cores) == owner {
            return t;
        }
    }
}

/// A topic name unique to this test process and call site.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{prefix}{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The broker-side socket of the loopback connection `client` has to `server`, as
/// `/proc/net/tcp` shows it: whether its keep-alive timer is armed, and in how many clock ticks
/// it fires. `None` if the socket is not listed (not accepted yet).
pub fn server_keepalive_timer(server: SocketAddr, client: &TcpStream) -> Option<(bool, u64)> {
    let client_port = client.local_addr().ok()?.port();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port_of = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, timer) = (fields.get(1)?, fields.get(2)?, fields.get(5)?);
        if port_of(local)? != server.port() || port_of(remote)? != client_port {
            return None;
        }
        let (kind, when) = timer.split_once(':')?;
        // Timer kind 2 is the socket timer, which on an established socket is keep-alive.
        Some((kind == "02", u64::from_str_radix(when, 16).ok()?))
    })
}
