//! The HTTP API against a running broker (one and two cores), through a real HTTP client:
//! every endpoint and nsqd's errors, publish over HTTP and consume over TCP (and the reverse),
//! pause/unpause/empty/delete with live consumers, `/stats` text and JSON, `/config`, and
//! `/metrics` parsed as Prometheus text and checked against the traffic sent.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Broker, Client, Frame, mpub_body, unique};
use serde_json::Value;

const CORES: [usize; 2] = [1, 2];

/// A response, whatever its status.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// nsqd's V1 error: status, JSON `message`, both headers.
    fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.body,
            format!("{{\"message\":\"{message}\"}}"),
            "{self:?}"
        );
        assert_eq!(self.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
        assert_eq!(
            self.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
    }

    /// nsqd's V1 `OK`.
    fn assert_ok_text(&self) {
        assert_eq!((self.status, self.body.as_str()), (200, "OK"), "{self:?}");
        assert_eq!(self.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
    }

    /// nsqd's V1 empty 200.
    fn assert_empty(&self) {
        assert_eq!((self.status, self.body.as_str()), (200, ""), "{self:?}");
        assert_eq!(self.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
        assert_eq!(self.header("Content-Type"), None);
    }
}

/// A blocking HTTP client for one broker (no redirects followed).
struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn new(broker: &Broker) -> Http {
        let addr = broker.http.expect("broker serves HTTP");
        Http {
            // A fresh connection per request: after an error the server may close the one it
            // answered on, and a pooled connection reused in that instant would read EOF.
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(15))
                .max_idle_connections(0)
                .build(),
            base: format!("http://{addr}"),
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let mut body = String::new();
        resp.into_reader()
            .read_to_string(&mut body)
            .expect("read body");
        Reply {
            status,
            body,
            headers,
        }
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    fn post(&self, path: &str, body: &[u8]) -> Reply {
        self.request("POST", path, Some(body))
    }

    fn stats(&self, query: &str) -> Value {
        let r = self.get(&format!("/stats?format=json{query}"));
        assert_eq!(r.status, 200, "{r:?}");
        r.json()
    }

    /// The JSON of one topic in `/stats`, if listed.
    fn topic(&self, topic: &str) -> Option<Value> {
        let stats = self.stats(&format!("&topic={topic}"));
        stats["topics"].as_array()?.first().cloned()
    }

    /// The JSON of one channel in `/stats`, if listed.
    fn channel(&self, topic: &str, channel: &str) -> Option<Value> {
        let t = self.topic(topic)?;
        t["channels"]
            .as_array()?
            .iter()
            .find(|c| c["channel_name"] == channel)
            .cloned()
    }

    /// Polls until `check` holds for the channel's stats (delivery crosses cores).
    fn wait_channel(&self, topic: &str, channel: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.channel(topic, channel)
                && check(&c)
            {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "channel {topic}/{channel} never matched"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn broker(cores: usize, extra: &[&str]) -> Broker {
    Broker::with_cores(cores, extra)
}

/// A subscribed consumer with RDY `rdy`.
fn consumer(broker: &Broker, topic: &str, channel: &str, rdy: u32) -> Client {
    let mut c = broker.client();
    c.sub(topic, channel);
    c.line(&format!("RDY {rdy}"));
    c
}

/// Topics that the hash puts on each of two cores, so both routing paths are exercised.
fn topics_on_both_cores(prefix: &str) -> Vec<String> {
    let mut found: [Option<String>; 2] = [None, None];
    let mut i = 0;
    while found.iter().any(Option::is_none) {
        let t = unique(prefix);
        let owner = nsqd_uring::mesh::owner_of(&t, 2);
        if found[owner].is_none() {
            found[owner] = Some(t);
        }
        i += 1;
        assert!(i < 1000);
    }
    found.into_iter().flatten().collect()
}

#[test]
fn ping_info_and_router_behave_like_nsqd() {
    for cores in CORES {
        let b = broker(cores, &[]);
        let http = Http::new(&b);
        let ping = http.get("/ping");
        assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
        assert_eq!(
            ping.header("X-NSQ-Content-Type"),
            None,
            "plain-text handler"
        );
        assert_eq!(
            ping.header("Content-Type"),
            Some("text/plain; charset=utf-8")
        );

        let info = http.get("/info").json();
        assert_eq!(info["version"], "1.3.0");
        assert_eq!(info["tcp_port"], b.tcp.port());
        assert_eq!(info["http_port"], b.http.unwrap().port());
        assert_eq!(info["max_heartbeat_interval"], 60_000_000_000u64);
        assert_eq!(info["max_output_buffer_timeout"], 30_000_000_000u64);
        let keys: Vec<&str> = info
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 10, "{keys:?}");

        http.get("/nope").assert_error(404, "NOT_FOUND");
        http.request("OPTIONS", "/nope", None)
            .assert_error(404, "NOT_FOUND");
        let r = http.post("/ping", b"");
        r.assert_error(405, "METHOD_NOT_ALLOWED");
        assert_eq!(r.header("Allow"), Some("GET, OPTIONS"));
        let r = http.request("DELETE", "/config/log_level", None);
        assert_eq!(r.header("Allow"), Some("GET, OPTIONS, PUT"));
        let r = http.request("OPTIONS", "/pub", None);
        assert_eq!((r.status, r.body.as_str()), (200, ""));
        assert_eq!(r.header("Allow"), Some("OPTIONS, POST"));

        let r = http.get("/stats/");
        assert_eq!(r.status, 301);
        assert_eq!(r.header("Location"), Some("/stats"));
        assert_eq!(r.body, "<a href=\"/stats\">Moved Permanently</a>.\n\n");
        let r = http.get("/PING");
        assert_eq!((r.status, r.header("Location")), (301, Some("/ping")));
        let r = http.post("/Topic/create?topic=x", b"");
        assert_eq!((r.status, r.body.as_str()), (307, ""));
        assert_eq!(r.header("Location"), Some("/topic/create?topic=x"));
        http.get("/pub/").assert_error(404, "NOT_FOUND");
        let r = http.get("/debug/pprof");
        assert_eq!(r.header("Location"), Some("/debug/pprof/"));
        assert_eq!(
            http.get("/p%69ng").body,
            "OK",
            "the path is percent-decoded"
        );

        let r = http.request("PUT", "/debug/setblockrate?rate=x", Some(b""));
        assert_eq!(r.status, 400);
        assert_eq!(
            r.body,
            "invalid block rate : strconv.Atoi: parsing \"x\": invalid syntax"
        );
        http.request("PUT", "/debug/setblockrate?rate=1", Some(b""))
            .assert_error(500, "INTERNAL_ERROR");
        http.post("/debug/freememory", b"")
            .assert_error(500, "INTERNAL_ERROR");
    }
}

#[test]
fn publish_errors_match_nsqd() {
    for cores in CORES {
        let b = broker(
            cores,
            &[
                "--max-msg-size=16",
                "--max-body-size=64",
                "--max-req-timeout=10s",
            ],
        );
        let http = Http::new(&b);
        http.post("/pub?topic=t", b"")
            .assert_error(400, "MSG_EMPTY");
        http.post("/pub?topic=bad!", b"")
            .assert_error(400, "MSG_EMPTY");
        http.post("/pub", b"x")
            .assert_error(400, "MISSING_ARG_TOPIC");
        http.post("/pub?topic=bad!", b"x")
            .assert_error(400, "INVALID_TOPIC");
        http.post("/pub?topic=a%zz", b"x")
            .assert_error(400, "INVALID_REQUEST");
        http.post("/pub?topic=a;b", b"x")
            .assert_error(400, "INVALID_REQUEST");
        http.post("/pub?topic=&topic=t", b"x")
            .assert_error(400, "INVALID_TOPIC");
        http.post("/pub?topic=t", &[b'x'; 17])
            .assert_error(413, "MSG_TOO_BIG");
        http.post("/pub?topic=t", &[b'x'; 16]).assert_ok_text();
        let deferred = unique("deferred");
        // 9223372036855 ms overflows Go's nanosecond product to a negative duration.
        for bad in ["abc", "-1", "10001", "9223372036855"] {
            http.post(&format!("/pub?topic={deferred}&defer={bad}"), b"x")
                .assert_error(400, "INVALID_DEFER");
        }
        assert!(
            http.topic(&deferred).is_some(),
            "nsqd creates the topic before it checks defer"
        );
        http.post(&format!("/pub?topic={deferred}&defer=10000"), b"x")
            .assert_ok_text();
        // ... and this one wraps into range, so nsqd takes it (deferred by under a millisecond).
        http.post(&format!("/pub?topic={deferred}&defer=18446744073710"), b"x")
            .assert_ok_text();

        http.post("/mpub", b"x")
            .assert_error(400, "MISSING_ARG_TOPIC");
        http.post("/mpub?topic=bad!", b"x")
            .assert_error(400, "INVALID_TOPIC");
        http.post("/mpub?topic=m", &[b'x'; 65])
            .assert_error(413, "BODY_TOO_BIG");
        let long_line = [&b"ok\n"[..], &[b'y'; 17]].concat();
        http.post("/mpub?topic=m", &long_line)
            .assert_error(413, "MSG_TOO_BIG");
        http.post("/mpub?topic=m&binary=true", b"x")
            .assert_error(413, "BAD_BODY");
        http.post("/mpub?topic=m&binary=1", &0u32.to_be_bytes())
            .assert_error(413, "BAD_BODY");
        let too_big = mpub_body(&[&[b'z'; 17]]);
        http.post("/mpub?topic=m&binary=yes", &too_big)
            .assert_error(413, "BAD_MESSAGE");
        let mut short = mpub_body(&[b"abc"]);
        short.pop();
        http.post("/mpub?topic=m&binary=true", &short)
            .assert_error(413, "BAD_MESSAGE");
        let empty = unique("empty");
        http.post(&format!("/mpub?topic={empty}"), b"")
            .assert_ok_text();
        let t = http.topic(&empty).expect("created by an empty /mpub");
        assert_eq!(t["message_count"], 0);
        // Nothing above was published to `m`: validation comes before queueing.
        assert_eq!(http.topic("m").unwrap()["message_count"], 0);
        http.get("/pub").assert_error(405, "METHOD_NOT_ALLOWED");
    }
}

#[test]
fn http_publishes_are_consumed_over_tcp() {
    for cores in CORES {
        let b = broker(cores, &[]);
        let http = Http::new(&b);
        for topic in topics_on_both_cores("hpub") {
            let mut c = consumer(&b, &topic, "ch", 100);
            http.post(&format!("/pub?topic={topic}"), b"one")
                .assert_ok_text();
            http.post(&format!("/mpub?topic={topic}"), b"two\nthree\r\n\nfour")
                .assert_ok_text();
            let binary = mpub_body(&[b"five", b"six"]);
            http.post(&format!("/mpub?topic={topic}&binary=true"), &binary)
                .assert_ok_text();
            let mut got: Vec<Vec<u8>> = (0..6).map(|_| c.expect_message().body).collect();
            got.sort();
            let mut want: Vec<Vec<u8>> = ["one", "two", "three\r", "four", "five", "six"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect();
            want.sort();
            assert_eq!(got, want);
            http.post(&format!("/pub?topic={topic}&defer=1500"), b"later")
                .assert_ok_text();
            let ch = http.channel(&topic, "ch").unwrap();
            assert_eq!(ch["deferred_count"], 1);
            let start = Instant::now();
            assert_eq!(c.expect_message().body, b"later");
            assert!(start.elapsed() >= Duration::from_millis(700));
            let t = http.topic(&topic).unwrap();
            assert_eq!(t["message_count"], 7);
            assert_eq!(t["message_bytes"], 28);
        }
    }
}

#[test]
fn tcp_traffic_shows_in_stats() {
    for cores in CORES {
        let b = broker(cores, &[]);
        let http = Http::new(&b);
        for topic in topics_on_both_cores("tstats") {
            let mut producer = b.client();
            producer.identify(r#"{"client_id":"pubber","hostname":"h1","user_agent":"ua/1"}"#);
            producer.publish(&topic, b"hello");
            producer.mpub(&topic, &[b"a", b"b", b"c"]);
            let mut c = b.client();
            c.identify(r#"{"client_id":"cons","hostname":"h2","user_agent":"ua/2"}"#);
            c.sub(&topic, "ch");
            c.line("RDY 3");
            let first = c.expect_message();
            c.line(&format!("FIN {}", first.id));
            let second = c.expect_message();
            c.line(&format!("REQ {} 0", second.id));
            let _third = c.expect_message();
            let ch = http.wait_channel(&topic, "ch", |ch| {
                ch["requeue_count"] == 1 && ch["clients"][0]["finish_count"] == 1
            });
            assert_eq!(ch["message_count"], 4);
            assert_eq!(ch["client_count"], 1);
            let client = &ch["clients"][0];
            assert_eq!(client["client_id"], "cons");
            assert_eq!(client["hostname"], "h2");
            assert_eq!(client["user_agent"], "ua/2");
            assert_eq!(client["state"], 3);
            assert_eq!(client["ready_count"], 3);
            assert_eq!(client["version"], "V2");
            assert!(client.get("pub_counts").is_none(), "omitted when empty");
            let in_flight = client["in_flight_count"].as_u64().unwrap();
            assert_eq!(ch["in_flight_count"], in_flight);
            assert_eq!(ch["depth"].as_u64().unwrap() + in_flight, 3);

            let stats = http.stats(&format!("&topic={topic}"));
            let producers = stats["producers"].as_array().unwrap();
            let p = producers
                .iter()
                .find(|p| p["client_id"] == "pubber")
                .expect("publisher listed");
            assert_eq!(
                p["pub_counts"],
                serde_json::json!([{"topic": topic, "count": 4}])
            );
            assert_eq!(p["state"], 0);
            assert_eq!(stats["topics"][0]["message_count"], 4);
            assert_eq!(stats["topics"][0]["message_bytes"], 8);

            let text = http.get("/stats").body;
            assert!(text.contains(&format!("[{topic:<15}] depth: ")), "{text}");
            assert!(
                text.contains("[ch                       ] depth: "),
                "{text}"
            );
            assert!(text.contains("[V2 h2:"), "{text}");
            assert!(
                text.contains(&format!("topics: {topic}=4 connected: ")),
                "{text}"
            );

            let none = http.stats(&format!(
                "&topic={topic}&include_clients=false&include_mem=0"
            ));
            assert!(none["producers"].is_null());
            assert!(none["topics"][0]["channels"][0]["clients"].is_null());
            assert_eq!(none["topics"][0]["channels"][0]["client_count"], 1);
            assert!(none.get("memory").is_none());
            let filtered = http.stats(&format!("&topic={topic}&channel=other"));
            assert_eq!(filtered["topics"], serde_json::json!([]));
        }
        let stats = http.stats("&topic=no-such-topic");
        assert!(stats["topics"].is_null());
        assert!(stats["memory"]["heap_in_use_bytes"].as_u64().unwrap() > 0);
        let names: Vec<String> = http.stats("")["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["topic_name"].as_str().unwrap().to_string())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "topics are sorted by name");
    }
}

/// nsqd creates an MPUB's topic before it reads the body, so a refused MPUB body leaves the
/// topic behind (a bad PUB body does not: nsqd reads it first).
#[test]
fn a_refused_mpub_body_still_creates_its_topic() {
    for cores in CORES {
        let b = broker(cores, &[]);
        let http = Http::new(&b);
        for topic in topics_on_both_cores("badmpub") {
            let mut c = b.client();
            c.with_body(&format!("MPUB {topic}"), &[0, 0, 0, 0]);
            c.expect_error("E_BAD_BODY MPUB invalid message count 0");
            c.expect_closed();
            let listed = http.topic(&topic).expect("the topic exists");
            assert_eq!(listed["message_count"], 0);

            // Cut off by the end of the stream, after the count.
            let cut_off = format!("{topic}-eof");
            let mut c = b.client();
            c.send(format!("MPUB {cut_off}\n").as_bytes());
            c.send(&[0, 0, 0, 20, 0, 0, 0, 2]);
            c.stream.shutdown(std::net::Shutdown::Write).unwrap();
            c.expect_error("E_BAD_MESSAGE MPUB failed to read message(0) body size");
            assert!(http.topic(&cut_off).is_some(), "{cut_off} exists");

            let not_made = format!("{topic}-pub");
            let mut c = b.client();
            c.with_body(&format!("PUB {not_made}"), b"");
            c.expect_error("E_BAD_MESSAGE PUB invalid message body size 0");
            c.expect_closed();
            assert!(http.topic(&not_made).is_none(), "a bad PUB creates nothing");
        }
    }
}

/// Go's JSON decoder turns bytes that are not UTF-8, and unpaired surrogate escapes, into
/// U+FFFD: nsqd accepts such an IDENTIFY, and `/stats` shows the repaired strings.
#[test]
fn identify_strings_that_are_not_utf8_are_repaired_as_go_does() {
    let b = broker(1, &[]);
    let http = Http::new(&b);
    let mut c = b.client();
    c.with_body(
        "IDENTIFY",
        b"{\"client_id\":\"bad\xffid\",\"user_agent\":\"ua\\ud83d/1\"}",
    );
    c.expect_ok();
    let topic = unique("utf8");
    c.sub(&topic, "ch");
    let ch = http.wait_channel(&topic, "ch", |ch| ch["client_count"] == 1);
    assert_eq!(ch["clients"][0]["client_id"], "bad\u{fffd}id");
    assert_eq!(ch["clients"][0]["user_agent"], "ua\u{fffd}/1");
}

/// nsqd keeps a connection's delivery figures on the connection, so a producer that also
/// consumes shows them in `producers` whatever the topic or channel filter.
#[test]
fn a_consuming_producer_keeps_its_figures_under_any_filter() {
    for cores in CORES {
        let b = broker(cores, &[]);
        let http = Http::new(&b);
        for topic in topics_on_both_cores("both") {
            let mut c = b.client();
            c.identify(r#"{"client_id":"both"}"#);
            c.sub(&topic, "ch");
            c.publish(&topic, b"to myself");
            c.line("RDY 3");
            let _held = c.expect_message();
            let other = format!("{topic}-other");
            assert_eq!(
                http.post(&format!("/topic/create?topic={other}"), b"")
                    .status,
                200
            );
            for filter in [
                format!("&topic={other}"),
                format!("&topic={topic}&channel=nope"),
                format!("&topic={topic}"),
                String::new(),
            ] {
                let stats = http.stats(&filter);
                let p = stats["producers"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["client_id"] == "both"))
                    .unwrap_or_else(|| panic!("{filter}: producer listed: {stats}"))
                    .clone();
                assert_eq!(
                    (
                        &p["ready_count"],
                        &p["in_flight_count"],
                        &p["message_count"]
                    ),
                    (&3.into(), &1.into(), &1.into()),
                    "{filter}: {p}"
                );
                assert_eq!(p["state"], 3, "{filter}");
            }
        }
    }
}

#[test]
fn pause_unpause_and_empty_with_live_consumers() {
    for cores in CORES {
        let b = broker(cores, &[]);
        let http = Http::new(&b);
        for topic in topics_on_both_cores("pause") {
            let q = format!("topic={topic}&channel=ch");
            http.post(&format!("/topic/create?topic={topic}"), b"")
                .assert_empty();
            http.post(&format!("/channel/create?{q}"), b"")
                .assert_empty();
            let mut c = consumer(&b, &topic, "ch", 10);
            http.post(&format!("/pub?topic={topic}"), b"m1")
                .assert_ok_text();
            let m1 = c.expect_message();

            // A paused channel delivers nothing, but in-flight messages can still be finished.
            http.post(&format!("/channel/pause?{q}"), b"")
                .assert_empty();
            http.post(&format!("/pub?topic={topic}"), b"m2")
                .assert_ok_text();
            c.line(&format!("FIN {}", m1.id));
            c.expect_silence(Duration::from_millis(300));
            let ch = http.wait_channel(&topic, "ch", |ch| ch["in_flight_count"] == 0);
            assert_eq!(
                (ch["paused"].as_bool(), ch["depth"].as_u64()),
                (Some(true), Some(1))
            );
            http.post(&format!("/channel/unpause?{q}"), b"")
                .assert_empty();
            assert_eq!(c.expect_message().body, b"m2");

            // A paused topic keeps new messages in its own queue.
            http.post(&format!("/topic/pause?topic={topic}"), b"")
                .assert_empty();
            http.post(&format!("/pub?topic={topic}"), b"m3")
                .assert_ok_text();
            c.expect_silence(Duration::from_millis(300));
            let t = http.topic(&topic).unwrap();
            assert_eq!(
                (t["paused"].as_bool(), t["depth"].as_u64()),
                (Some(true), Some(1))
            );
            http.post(&format!("/topic/unpause?topic={topic}"), b"")
                .assert_empty();
            let m3 = c.expect_message();
            assert_eq!(m3.body, b"m3");

            // Empty drops the in-flight message: its FIN then fails.
            http.post(&format!("/channel/empty?{q}"), b"")
                .assert_empty();
            let ch = http.channel(&topic, "ch").unwrap();
            assert_eq!(
                (ch["depth"].as_u64(), ch["in_flight_count"].as_u64()),
                (Some(0), Some(0))
            );
            assert_eq!(ch["clients"][0]["in_flight_count"], 0);
            c.line(&format!("FIN {}", m3.id));
            c.expect_error(&format!(
                "E_FIN_FAILED FIN {} failed ID not in flight",
                m3.id
            ));

            http.post(&format!("/topic/pause?topic={topic}"), b"")
                .assert_empty();
            http.post(&format!("/pub?topic={topic}"), b"m4")
                .assert_ok_text();
            http.post(&format!("/topic/empty?topic={topic}"), b"")
                .assert_empty();
            http.post(&format!("/topic/unpause?topic={topic}"), b"")
                .assert_empty();
            c.expect_silence(Duration::from_millis(300));
            assert_eq!(http.topic(&topic).unwrap()["depth"], 0);
        }
        http.post("/topic/pause?topic=missing", b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        http.post("/topic/empty?topic=missing", b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        http.post("/topic/empty?topic=bad!", b"")
            .assert_error(400, "INVALID_TOPIC");
        http.post("/topic/unpause?topic=bad!", b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        http.post("/topic/pause", b"")
            .assert_error(400, "MISSING_ARG_TOPIC");
        http.post("/channel/pause?topic=missing&channel=c", b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        http.post("/topic/create?topic=present", b"").assert_empty();
        http.post("/channel/pause?topic=present&channel=c", b"")
            .assert_error(404, "CHANNEL_NOT_FOUND");
        http.post("/channel/empty?topic=present&channel=c", b"")
            .assert_error(404, "CHANNEL_NOT_FOUND");
        http.post("/channel/create?topic=present", b"")
            .assert_error(400, "MISSING_ARG_CHANNEL");
        http.post("/channel/create?topic=bad!&channel=c", b"")
            .assert_error(400, "INVALID_ARG_TOPIC");
        http.post("/channel/create?topic=present&channel=bad!", b"")
            .assert_error(400, "INVALID_ARG_CHANNEL");
        http.post("/channel/create?channel=c", b"")
            .assert_error(400, "MISSING_ARG_TOPIC");
        http.post("/topic/create?topic=bad!", b"")
            .assert_error(400, "INVALID_TOPIC");
    }
}

#[test]
fn delete_disconnects_consumers_without_an_error_frame() {
    for cores in CORES {
        let b = broker(cores, &[]);
        let http = Http::new(&b);
        for topic in topics_on_both_cores("delete") {
            let mut keep = consumer(&b, &topic, "keep", 10);
            let mut gone = consumer(&b, &topic, "gone", 10);
            http.post(&format!("/channel/delete?topic={topic}&channel=gone"), b"")
                .assert_empty();
            gone.expect_closed();
            assert!(http.channel(&topic, "gone").is_none());
            http.post(&format!("/channel/delete?topic={topic}&channel=gone"), b"")
                .assert_error(404, "CHANNEL_NOT_FOUND");
            http.post(&format!("/pub?topic={topic}"), b"still")
                .assert_ok_text();
            assert_eq!(keep.expect_message().body, b"still");

            http.post(&format!("/topic/delete?topic={topic}"), b"")
                .assert_empty();
            keep.expect_closed();
            assert!(http.topic(&topic).is_none());
            http.post(&format!("/topic/delete?topic={topic}"), b"")
                .assert_error(404, "TOPIC_NOT_FOUND");
            http.post(&format!("/channel/create?topic={topic}&channel=c"), b"")
                .assert_error(404, "TOPIC_NOT_FOUND");
        }
        // Deleting the last channel of an ephemeral topic deletes the topic.
        let eph = format!("{}#ephemeral", unique("eph"));
        let q = format!("topic={}", eph.replace('#', "%23"));
        http.post(&format!("/topic/create?{q}"), b"").assert_empty();
        http.post(&format!("/channel/create?{q}&channel=c"), b"")
            .assert_empty();
        http.post(&format!("/channel/delete?{q}&channel=c"), b"")
            .assert_empty();
        http.post(&format!("/topic/delete?{q}"), b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
        http.post("/topic/delete", b"")
            .assert_error(400, "MISSING_ARG_TOPIC");
        http.post("/topic/delete?topic=bad!", b"")
            .assert_error(404, "TOPIC_NOT_FOUND");
    }
}

#[test]
fn config_reads_options_and_changes_the_log_level_live() {
    for cores in CORES {
        let b = broker(cores, &["--mem-queue-size=123"]);
        let http = Http::new(&b);
        let r = http.get("/config/mem_queue_size");
        assert_eq!((r.status, r.body.as_str()), (200, "123"));
        assert_eq!(
            r.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(http.get("/config/msg_timeout").body, "60000000000");
        assert_eq!(
            http.get("/config/log_prefix").body,
            "[nsqd] ",
            "strings are raw text"
        );
        let port = b.http.unwrap().port();
        let prefix = http.get("/config/statsd_prefix").body;
        assert!(
            prefix.starts_with("nsq.") && prefix.ends_with(&format!("_{port}.")),
            "{prefix}"
        );
        assert_eq!(
            http.get("/config/broadcast_http_port").body,
            port.to_string()
        );
        http.get("/config/node_id")
            .assert_error(400, "INVALID_OPTION");
        assert_eq!(http.get("/config/log_level").body, "2");

        let put =
            |opt: &str, body: &[u8]| http.request("PUT", &format!("/config/{opt}"), Some(body));
        put("log_level", b"").assert_error(413, "INVALID_VALUE");
        put("log_level", b"loud").assert_error(400, "INVALID_VALUE");
        put("log_level", b"info\n").assert_error(400, "INVALID_VALUE");
        put("mem_queue_size", b"5").assert_error(400, "INVALID_OPTION");
        put("nsqlookupd_tcp_addresses", b"[1]").assert_error(400, "INVALID_VALUE");
        let r = put("nsqlookupd_tcp_addresses", b"[]");
        assert_eq!((r.status, r.body.as_str()), (200, "[]"));
        let r = put("nsqlookupd_tcp_addresses", br#"["127.0.0.1:9"]"#);
        assert_eq!((r.status, r.body.as_str()), (200, r#"["127.0.0.1:9"]"#));
        assert_eq!(
            http.get("/config/nsqlookupd_tcp_addresses").body,
            r#"["127.0.0.1:9"]"#
        );
        put("nsqlookupd_tcp_addresses", b"[]");

        // At ERROR, the INFO request log line disappears; back at INFO it returns.
        assert_eq!(put("log_level", b"ERROR").body, "4");
        http.get("/ping?quiet-marker");
        http.get("/info?quiet-marker");
        assert_eq!(put("log_level", b"info").body, "2");
        http.get("/info?loud-marker");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !b.log().contains("loud-marker") {
            assert!(
                Instant::now() < deadline,
                "no request log at INFO:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!b.log().contains("quiet-marker"), "{}", b.log());
        assert!(b.log().contains("200 GET /info?loud-marker (127.0.0.1:"));
    }
}

/// `name{labels}` → value, from a scrape.
fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find_map(|s| {
        let matches = s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
        match (&s.value, matches) {
            (prometheus_parse::Value::Counter(v), true)
            | (prometheus_parse::Value::Gauge(v), true)
            | (prometheus_parse::Value::Untyped(v), true) => Some(*v),
            _ => None,
        }
    })
}

fn scrape(http: &Http) -> prometheus_parse::Scrape {
    let r = http.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_string())))
        .expect("valid exposition")
}

#[test]
fn metrics_match_the_traffic_sent() {
    for cores in CORES {
        let b = broker(cores, &[]);
        let http = Http::new(&b);
        let topics = topics_on_both_cores("metrics");
        let mut consumers = Vec::new();
        for topic in &topics {
            let mut c = consumer(&b, topic, "ch", 10);
            http.post(&format!("/mpub?topic={topic}"), b"1\n2\n3\n4\n5")
                .assert_ok_text();
            let a = c.expect_message();
            let r = c.expect_message();
            c.line(&format!("FIN {}", a.id));
            c.line(&format!("REQ {} 60000", r.id));
            http.wait_channel(topic, "ch", |ch| ch["requeue_count"] == 1);
            consumers.push(c);
        }
        let s = scrape(&http);
        for topic in &topics {
            let t = [("topic", topic.as_str())];
            let tc = [("topic", topic.as_str()), ("channel", "ch")];
            assert_eq!(metric(&s, "nsqd_topic_messages_total", &t), Some(5.0));
            assert_eq!(metric(&s, "nsqd_topic_message_bytes_total", &t), Some(5.0));
            assert_eq!(metric(&s, "nsqd_topic_depth", &t), Some(0.0));
            assert_eq!(metric(&s, "nsqd_topic_channels", &t), Some(1.0));
            assert_eq!(metric(&s, "nsqd_channel_messages_total", &tc), Some(5.0));
            assert_eq!(metric(&s, "nsqd_channel_requeued_total", &tc), Some(1.0));
            assert_eq!(metric(&s, "nsqd_channel_deferred", &tc), Some(1.0));
            assert_eq!(metric(&s, "nsqd_channel_clients", &tc), Some(1.0));
            assert_eq!(metric(&s, "nsqd_channel_timed_out_total", &tc), Some(0.0));
            let in_flight = metric(&s, "nsqd_channel_in_flight", &tc).unwrap();
            let depth = metric(&s, "nsqd_channel_depth", &tc).unwrap();
            assert_eq!(in_flight + depth, 3.0, "5 sent, 1 finished, 1 deferred");
            assert_eq!(metric(&s, "nsqd_channel_paused", &tc), Some(0.0));
        }
        let per_shard = |name| -> Vec<f64> {
            (0..cores)
                .map(|i| metric(&s, name, &[("shard", &i.to_string())]).unwrap())
                .collect()
        };
        let tcp: f64 = per_shard("nsqd_shard_tcp_connections").iter().sum();
        assert_eq!(tcp, 2.0, "the two consumers");
        assert!(per_shard("nsqd_shard_http_connections").iter().sum::<f64>() >= 1.0);
        assert_eq!(per_shard("nsqd_shard_topics").iter().sum::<f64>(), 2.0);
        if cores == 2 {
            let sent: f64 = per_shard("nsqd_mesh_messages_sent_total").iter().sum();
            let received: f64 = per_shard("nsqd_mesh_messages_received_total").iter().sum();
            assert!(sent > 0.0, "one topic is always owned by the other core");
            assert!(received > 0.0);
            let batches: f64 = per_shard("nsqd_mesh_batches_sent_total").iter().sum();
            assert!(batches > 0.0 && batches <= sent);
        }
        let histogram = s
            .samples
            .iter()
            .find(|x| x.metric == "nsqd_mesh_batch_size" && x.labels.get("shard") == Some("0"))
            .expect("batch size histogram");
        assert!(matches!(
            histogram.value,
            prometheus_parse::Value::Histogram(_)
        ));
        assert!(metric(&s, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
        assert!(metric(&s, "process_open_fds", &[]).unwrap() >= 3.0);
        assert!(metric(&s, "nsqd_uptime_seconds", &[]).unwrap() >= 0.0);
        assert_eq!(metric(&s, "nsqd_info", &[("version", "1.3.0")]), Some(1.0));
        drop(consumers);
    }
}

#[test]
fn empty_http_address_turns_http_off() {
    let b = Broker::start(&["--http-address="]);
    assert!(b.http.is_none());
    assert!(!b.log().contains("HTTP: listening"), "{}", b.log());
    let mut c = b.client();
    c.publish("t", b"x");
    // As nsqd: without --tls-cert/--tls-key, --https-address listens on nothing.
    let no_cert = Broker::start(&["--https-address=127.0.0.1:0"]);
    assert!(
        !no_cert.log().contains("HTTPS: listening"),
        "{}",
        no_cert.log()
    );
}

/// Sends raw bytes to the HTTP port and reads what comes back until close or timeout.
fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn slow_and_oversized_requests_do_not_stop_the_server() {
    for cores in CORES {
        let b = broker(cores, &[]);
        let http = Http::new(&b);
        let addr = b.http.unwrap();
        // Slow clients holding half-sent headers do not block anyone else.
        let slow: Vec<TcpStream> = (0..8)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .unwrap();
                s
            })
            .collect();
        assert_eq!(http.get("/ping").body, "OK");
        // Headers beyond the buffer limit are refused (431) instead of buffered.
        let huge = format!(
            "GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(200 * 1024)
        );
        let reply = raw_exchange(addr, huge.as_bytes(), Duration::from_secs(10));
        assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");
        // Garbage is answered with 400, not a crash.
        let reply = raw_exchange(addr, b"NOT HTTP AT ALL\r\n\r\n", Duration::from_secs(10));
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
        let reply = raw_exchange(
            addr,
            b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(10),
        );
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
        let reply = raw_exchange(
            addr,
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(10),
        );
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
        assert_eq!(http.get("/ping").body, "OK");
        drop(slow);
        assert_eq!(http.get("/ping").body, "OK");
    }
}

#[test]
fn a_consumer_on_one_core_and_its_topic_on_the_other_are_joined_in_stats() {
    // With two cores, connections land on either core and topics on their owner: whichever
    // way they fall, /stats shows the consumer with its identity and delivery counters.
    let b = broker(2, &[]);
    let http = Http::new(&b);
    for topic in topics_on_both_cores("join") {
        let mut clients: Vec<Client> = (0..4)
            .map(|i| {
                let mut c = b.client();
                c.identify(&format!(
                    r#"{{"client_id":"c{i}","hostname":"h","user_agent":"ua"}}"#
                ));
                c.sub(&topic, "ch");
                c
            })
            .collect();
        let ch = http.wait_channel(&topic, "ch", |ch| ch["client_count"] == 4);
        let mut ids: Vec<&str> = ch["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["client_id"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, ["c0", "c1", "c2", "c3"]);
        assert!(
            ch["clients"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["state"] == 3)
        );
        clients[0].line("CLS");
        match clients[0].next() {
            Frame::Response(d) => assert_eq!(d, b"CLOSE_WAIT"),
            other => panic!("{other:?}"),
        }
        let ch = http.wait_channel(&topic, "ch", |ch| {
            ch["clients"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["state"] == 4)
        });
        assert_eq!(ch["client_count"], 4);
    }
}

/// Sets the broker's file-size limit (a full disk, for storage writes) with prlimit(1).
fn prlimit_fsize(broker: &Broker, limit: &str) -> bool {
    std::process::Command::new("prlimit")
        .args([
            "--pid",
            &broker.pid().to_string(),
            &format!("--fsize={limit}"),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn ping_and_stats_report_failing_storage_until_it_recovers() {
    let b = broker(1, &["--mem-queue-size=0"]);
    let http = Http::new(&b);
    let topic = unique("health");
    assert_eq!(http.get("/ping").body, "OK");
    if !prlimit_fsize(&b, "20000:unlimited") {
        eprintln!("prlimit unavailable; skipped");
        return;
    }
    let body = vec![b'x'; 1000];
    let mut refused = None;
    for _ in 0..200 {
        let r = http.post(&format!("/pub?topic={topic}"), &body);
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    // nsqd answers any failed put with 503 EXITING.
    refused
        .expect("a publish is refused once the disk is full")
        .assert_error(503, "EXITING");
    let ping = http.get("/ping");
    assert_eq!(ping.status, 500, "{ping:?}");
    assert!(ping.body.starts_with("NOK - "), "{ping:?}");
    assert_eq!(ping.header("X-NSQ-Content-Type"), None);
    let health = http.stats("")["health"].as_str().unwrap().to_string();
    assert_eq!(health, ping.body);
    assert!(
        http.get("/stats")
            .body
            .contains(&format!("Health: {health}"))
    );
    assert_eq!(metric(&scrape(&http), "nsqd_healthy", &[]), Some(0.0));

    assert!(prlimit_fsize(&b, "unlimited"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get("/ping").status != 200 {
        assert!(
            Instant::now() < deadline,
            "still unhealthy after space returned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http.stats("")["health"], "OK");
    assert_eq!(metric(&scrape(&http), "nsqd_healthy", &[]), Some(1.0));
}
