//! Property tests of the pure parts a hostile or unlucky peer reaches first: the V2 decoder
//! (round trips, arbitrary bytes, arbitrary split points, MPUB bodies), IDENTIFY JSON, and the
//! channel's delivery accounting checked step by step against a simple model.
//!
//! The fuzz targets in `fuzz/` drive the same entry points with coverage guidance; these run in
//! every `cargo test` with proptest's default 256 cases per property.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use nsqd_uring::broker::channel::{Channel, ConsumerId, ConsumerInfo, InFlightError};
use nsqd_uring::broker::message::{Message, hex_id};
use nsqd_uring::protocol::codec::{
    ClientState, Command, DecodeContext, DecodeError, Limits, MAX_LINE_LEN, decode,
};
use nsqd_uring::protocol::errors::{E_BAD_BODY, E_BAD_MESSAGE};
use nsqd_uring::protocol::identify::{
    ClientSettings, Features, ServerLimits, negotiate, parse_identify,
};

// ---------------------------------------------------------------------------------------------
// V2 codec
// ---------------------------------------------------------------------------------------------

fn ctx(state: ClientState) -> DecodeContext {
    DecodeContext::new(state)
}

/// The bytes a well-behaved client sends for `cmd` (the encoder the decoder must invert).
fn encode(cmd: &Command, crlf: bool) -> Vec<u8> {
    fn body(out: &mut Vec<u8>, b: &[u8]) {
        out.put_i32(b.len() as i32);
        out.extend_from_slice(b);
    }
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut out = Vec::new();
    let line = |out: &mut Vec<u8>, parts: &[&[u8]]| {
        out.extend_from_slice(&parts.join(&b' '));
        out.extend_from_slice(eol);
    };
    match cmd {
        Command::Identify(b) => {
            line(&mut out, &[b"IDENTIFY"]);
            body(&mut out, b);
        }
        Command::Auth(b) => {
            line(&mut out, &[b"AUTH"]);
            body(&mut out, b);
        }
        Command::Sub { topic, channel } => {
            line(&mut out, &[b"SUB", topic.as_bytes(), channel.as_bytes()])
        }
        Command::Pub { topic, body: b } => {
            line(&mut out, &[b"PUB", topic.as_bytes()]);
            body(&mut out, b);
        }
        Command::Mpub { topic, bodies } => {
            line(&mut out, &[b"MPUB", topic.as_bytes()]);
            let mut inner = Vec::new();
            inner.put_i32(bodies.len() as i32);
            for b in bodies {
                body(&mut inner, b);
            }
            body(&mut out, &inner);
        }
        Command::Dpub {
            topic,
            defer_ms,
            body: b,
        } => {
            line(
                &mut out,
                &[b"DPUB", topic.as_bytes(), defer_ms.to_string().as_bytes()],
            );
            body(&mut out, b);
        }
        Command::Rdy(n) => line(&mut out, &[b"RDY", n.to_string().as_bytes()]),
        Command::Fin(id) => line(&mut out, &[b"FIN", id]),
        Command::Touch(id) => line(&mut out, &[b"TOUCH", id]),
        Command::Req {
            id,
            timeout_ms,
            clamped_from,
        } => {
            let asked = match clamped_from {
                Some(a) => a.to_string(),
                None => timeout_ms.to_string(),
            };
            line(&mut out, &[b"REQ", id, asked.as_bytes()])
        }
        Command::Cls => line(&mut out, &[b"CLS"]),
        Command::Nop => line(&mut out, &[b"NOP"]),
    }
    out
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[.a-zA-Z0-9_-]{1,64}", "[.a-zA-Z0-9_-]{1,54}#ephemeral",]
}

fn body() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 1..48).prop_map(Bytes::from)
}

/// Any 16 bytes a line can carry as a parameter: no space, no newline, no carriage return.
fn wire_id() -> impl Strategy<Value = [u8; 16]> {
    prop::array::uniform16(any::<u8>().prop_map(|b| match b {
        b' ' | b'\n' | b'\r' => b'x',
        b => b,
    }))
}

/// A REQ as the decoder must return it for any timeout text a client can send.
fn req() -> impl Strategy<Value = Command> {
    let max = Limits::default().max_req_timeout_ms;
    let asked = prop_oneof![0..=max as u64, any::<u64>()];
    (wire_id(), asked).prop_map(move |(id, raw)| {
        // Go's time.Duration(raw) * time.Millisecond: int64 nanoseconds, wrapping.
        let nanos = (raw as i64).wrapping_mul(1_000_000);
        let (timeout_ms, clamped_from) = if nanos < 0 {
            (0, Some(raw))
        } else if nanos > max * 1_000_000 {
            (max as u64, Some(raw))
        } else {
            ((nanos / 1_000_000) as u64, None)
        };
        Command::Req {
            id,
            timeout_ms,
            clamped_from,
        }
    })
}

fn publish() -> impl Strategy<Value = Command> {
    let max_defer = Limits::default().max_req_timeout_ms as u64;
    prop_oneof![
        (name(), body()).prop_map(|(topic, body)| Command::Pub { topic, body }),
        (name(), prop::collection::vec(body(), 1..12))
            .prop_map(|(topic, bodies)| Command::Mpub { topic, bodies }),
        (name(), 0..=max_defer, body()).prop_map(|(topic, defer_ms, body)| Command::Dpub {
            topic,
            defer_ms,
            body
        }),
    ]
}

/// A command valid in the `Init` state.
fn init_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        body().prop_map(Command::Identify),
        body().prop_map(Command::Auth),
        (name(), name()).prop_map(|(topic, channel)| Command::Sub { topic, channel }),
        publish(),
        Just(Command::Nop),
    ]
}

/// A command valid in the `Subscribed` state.
fn subscribed_command() -> impl Strategy<Value = Command> {
    let max_rdy = Limits::default().max_rdy_count as u64;
    prop_oneof![
        (0..=max_rdy).prop_map(Command::Rdy),
        wire_id().prop_map(Command::Fin),
        wire_id().prop_map(Command::Touch),
        req(),
        Just(Command::Cls),
        publish(),
        Just(Command::Nop),
    ]
}

/// A state and a list of commands valid in it.
fn command_stream() -> impl Strategy<Value = (ClientState, Vec<(Command, bool)>)> {
    prop_oneof![
        prop::collection::vec((init_command(), any::<bool>()), 1..8)
            .prop_map(|v| (ClientState::Init, v)),
        prop::collection::vec((subscribed_command(), any::<bool>()), 1..8)
            .prop_map(|v| (ClientState::Subscribed, v)),
    ]
}

/// Feeds `bytes` in chunks of the given sizes (cycled), decoding everything available after
/// each chunk, and returns the commands in order. Panics on any decode error.
fn decode_in_chunks(bytes: &[u8], chunks: &[usize], c: &DecodeContext) -> Vec<Command> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let n = chunks[i % chunks.len()].clamp(1, bytes.len() - pos);
        i += 1;
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        loop {
            let before = buf.len();
            match decode(&mut buf, c, false) {
                Ok(Some(cmd)) => {
                    assert!(buf.len() < before, "a command consumed nothing");
                    out.push(cmd);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "waiting must not consume");
                    break;
                }
                Err(e) => panic!("valid stream refused: {e:?}"),
            }
        }
    }
    assert!(buf.is_empty(), "bytes left over: {:?}", &buf[..]);
    out
}

/// Fragments that steer random input towards the decoder's interesting paths.
fn hostile_fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            &b"PUB "[..],
            b"MPUB ",
            b"DPUB ",
            b"SUB ",
            b"RDY ",
            b"FIN ",
            b"REQ ",
            b"TOUCH ",
            b"IDENTIFY",
            b"AUTH",
            b"CLS",
            b"NOP",
            b"t",
            b"c#ephemeral",
            b" ",
            b"\n",
            b"\r\n",
            b"0123456789abcdef",
            b"99999999999999999999",
            b"-1",
        ])
        .prop_map(|s| s.to_vec()),
        prop::sample::select(vec![0i32, 1, 4, 5, -1, i32::MIN, i32::MAX, 16, 1 << 20])
            .prop_map(|n| n.to_be_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ]
}

fn any_state() -> impl Strategy<Value = ClientState> {
    prop::sample::select(vec![
        ClientState::Init,
        ClientState::Subscribed,
        ClientState::Closing,
    ])
}

fn small_limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (1i64..64, 5i64..256, 0i64..10, 0i64..5000).prop_map(|(msg, body, rdy, req)| Limits {
            max_msg_size: msg,
            max_body_size: body,
            max_rdy_count: rdy,
            max_req_timeout_ms: req,
        }),
    ]
}

proptest! {
    /// Every valid command, encoded as a client would, decodes back to itself and consumes
    /// exactly its bytes.
    #[test]
    fn codec_round_trip((state, cmds) in command_stream()) {
        for (cmd, crlf) in cmds {
            let bytes = encode(&cmd, crlf);
            let mut buf = BytesMut::from(&bytes[..]);
            prop_assert_eq!(decode(&mut buf, &ctx(state), false), Ok(Some(cmd)));
            prop_assert!(buf.is_empty());
        }
    }

    /// The same bytes split at arbitrary points give the same commands in the same order.
    #[test]
    fn codec_split_points_do_not_matter(
        (state, cmds) in command_stream(),
        chunks in prop::collection::vec(1usize..40, 1..16),
    ) {
        let mut bytes = Vec::new();
        for (cmd, crlf) in &cmds {
            bytes.extend_from_slice(&encode(cmd, *crlf));
        }
        let expected: Vec<Command> = cmds.into_iter().map(|(c, _)| c).collect();
        prop_assert_eq!(decode_in_chunks(&bytes, &chunks, &ctx(state)), expected.clone());
        prop_assert_eq!(decode_in_chunks(&bytes, &[1], &ctx(state)), expected);
    }

    /// A strict prefix of a command waits for more bytes and consumes nothing.
    #[test]
    fn codec_prefix_waits((state, cmds) in command_stream(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&cmds[0].0, cmds[0].1);
        let n = cut.index(bytes.len());
        let mut buf = BytesMut::from(&bytes[..n]);
        prop_assert_eq!(decode(&mut buf, &ctx(state), false), Ok(None));
        prop_assert_eq!(buf.len(), n);
        // At end of stream a prefix is never taken for a command.
        let r = decode(&mut buf, &ctx(state), true);
        prop_assert!(!matches!(r, Ok(Some(_))), "prefix decoded at EOF: {:?}", r);
    }

    /// Arbitrary bytes in any state never panic and never consume more than the buffer holds;
    /// decoding stops at the first error as the connection does.
    #[test]
    fn codec_survives_arbitrary_bytes(
        parts in prop::collection::vec(hostile_fragment(), 0..24),
        state in any_state(),
        limits in small_limits(),
        heartbeats_disabled in any::<bool>(),
        tls_required in prop::bool::weighted(0.1),
        eof in any::<bool>(),
    ) {
        let bytes = parts.concat();
        let c = DecodeContext { state, heartbeats_disabled, limits, tls_required };
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..=bytes.len() {
            let before = buf.len();
            match decode(&mut buf, &c, eof) {
                Ok(Some(_)) => prop_assert!(buf.len() < before),
                Ok(None) => {
                    prop_assert_eq!(buf.len(), before);
                    break;
                }
                Err(DecodeError::LineTooLong) => {
                    prop_assert!(before >= MAX_LINE_LEN);
                    break;
                }
                Err(DecodeError::Protocol(e)) | Err(DecodeError::MpubBody { error: e, .. }) => {
                    prop_assert!(e.fatal, "decode errors are all fatal: {}", e);
                    break;
                }
            }
        }
    }

    /// MPUB bodies with corrupted counts and sizes either decode to messages whose framing
    /// accounts for exactly the bytes consumed, or fail with E_BAD_BODY / E_BAD_MESSAGE.
    #[test]
    fn mpub_bodies_are_checked(
        bodies in prop::collection::vec(body(), 1..12),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        limits in small_limits(),
        eof in any::<bool>(),
    ) {
        let cmd = Command::Mpub { topic: "t".into(), bodies };
        let mut bytes = encode(&cmd, false);
        let line = b"MPUB t\n".len();
        for (at, byte) in edits {
            let i = line + at.index(bytes.len() - line);
            bytes[i] = byte;
        }
        let c = DecodeContext {
            state: ClientState::Init,
            heartbeats_disabled: false,
            limits,
            tls_required: false,
        };
        let mut buf = BytesMut::from(&bytes[..]);
        match decode(&mut buf, &c, eof) {
            Ok(Some(Command::Mpub { bodies, .. })) => {
                let framed: usize = line + 4 + 4 + bodies.iter().map(|b| 4 + b.len()).sum::<usize>();
                prop_assert_eq!(bytes.len() - buf.len(), framed);
                prop_assert!(bodies.iter().all(|b| !b.is_empty() && b.len() as i64 <= limits.max_msg_size));
            }
            Ok(Some(other)) => prop_assert!(false, "MPUB decoded as {:?}", other),
            Ok(None) => prop_assert!(!eof, "EOF must end a short MPUB with an error"),
            Err(DecodeError::MpubBody { topic, error: e }) => {
                prop_assert_eq!(topic, "t");
                prop_assert!(e.code == E_BAD_BODY || e.code == E_BAD_MESSAGE, "{}", e);
            }
            Err(DecodeError::Protocol(e)) => prop_assert!(false, "body errors name the topic: {}", e),
            Err(DecodeError::LineTooLong) => prop_assert!(false, "line is short"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// IDENTIFY
// ---------------------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(identify_key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// IDENTIFY's own keys (in any case) and a few others.
fn identify_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "client_id",
            "hostname",
            "user_agent",
            "feature_negotiation",
            "heartbeat_interval",
            "output_buffer_size",
            "output_buffer_timeout",
            "tls_v1",
            "snappy",
            "deflate",
            "deflate_level",
            "sample_rate",
            "msg_timeout",
            "topology_region",
            "topology_zone",
            "MSG_TIMEOUT",
            "Sample_Rate",
        ])
        .prop_map(String::from),
        "[a-z_]{0,8}",
    ]
}

fn server_limits() -> ServerLimits {
    // A region that needs JSON escaping, so the reply's quoting is exercised.
    ServerLimits {
        topology_region: "eu \"west\"".into(),
        ..ServerLimits::default()
    }
}

/// Runs the whole IDENTIFY path on `body`; whatever is accepted must leave settings in range
/// and produce a reply that is valid JSON.
fn identify_checks(body: &[u8]) -> Result<(), TestCaseError> {
    let Ok(req) = parse_identify(body) else {
        return Ok(());
    };
    let lim = server_limits();
    let mut s = ClientSettings::defaults(
        Duration::from_secs(30),
        Duration::from_millis(250),
        Duration::from_secs(60),
    );
    if s.apply(&req, &lim).is_err() {
        return Ok(());
    }
    if let Some(h) = s.heartbeat_interval {
        prop_assert!(h >= Duration::from_secs(1) && h <= lim.max_heartbeat_interval);
    }
    prop_assert!(
        s.output_buffer_size == 1
            || (64..=lim.max_output_buffer_size).contains(&s.output_buffer_size)
    );
    prop_assert!(s.output_buffer_timeout <= lim.max_output_buffer_timeout);
    prop_assert!((0..=99).contains(&s.sample_rate));
    prop_assert!(s.msg_timeout >= Duration::from_secs(1) && s.msg_timeout <= lim.max_msg_timeout);
    let features = Features {
        tls: true,
        snappy: true,
        deflate: true,
    };
    if let Ok(n) = negotiate(&req, &s, &lim, features, false, "1.3.0") {
        let v: serde_json::Value = serde_json::from_str(&n.json)
            .map_err(|e| TestCaseError::fail(format!("reply is not JSON: {e}: {}", n.json)))?;
        prop_assert_eq!(
            &v["msg_timeout"],
            &serde_json::Value::from(s.msg_timeout.as_millis() as u64)
        );
        prop_assert!(n.deflate_level <= lim.max_deflate_level);
        prop_assert!(!(n.snappy && n.deflate));
    }
    Ok(())
}

proptest! {
    /// Any JSON value is decoded or refused with nsqd's text, never a panic; accepted values
    /// are applied within nsqd's ranges.
    #[test]
    fn identify_any_json(v in json_value()) {
        let body = serde_json::to_vec(&v).unwrap();
        if let Err(e) = parse_identify(&body) {
            prop_assert_eq!(e.code, E_BAD_BODY);
            prop_assert_eq!(e.to_string(), "E_BAD_BODY IDENTIFY failed to decode JSON body");
        }
        identify_checks(&body)?;
    }

    /// String fields round-trip whatever they contain.
    #[test]
    fn identify_strings_round_trip(client_id in ".{0,40}", hostname in ".{0,40}", ua in ".{0,40}") {
        let body = serde_json::json!({"client_id": client_id, "hostname": hostname, "user_agent": ua});
        let req = parse_identify(body.to_string().as_bytes()).unwrap();
        prop_assert_eq!(req.client_id, client_id);
        prop_assert_eq!(req.hostname, hostname);
        prop_assert_eq!(req.user_agent, ua);
    }

    /// Integer settings at any value are accepted in range or refused, never wrapped.
    #[test]
    fn identify_absurd_integers(
        key in prop::sample::select(vec![
            "heartbeat_interval", "output_buffer_size", "output_buffer_timeout",
            "sample_rate", "msg_timeout", "deflate_level",
        ]),
        value in prop_oneof![any::<i64>(), -2i64..200_000, Just(i64::MIN), Just(i64::MAX)],
    ) {
        let body = format!(r#"{{"feature_negotiation":true,"deflate":true,"{key}":{value}}}"#);
        identify_checks(body.as_bytes())?;
    }

    /// Arbitrary bytes never panic the IDENTIFY decoder.
    #[test]
    fn identify_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        identify_checks(&body)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Channel accounting model
// ---------------------------------------------------------------------------------------------

/// The in-flight cap TOUCH applies (`--max-msg-timeout`), small so the model reaches it.
const MAX_MSG_TIMEOUT_MS: u64 = 10_000;

/// One step of a random interleaving. Indices pick among messages put / consumers added so
/// far (modulo their count), so FIN/REQ/TOUCH also hit finished messages and other owners.
#[derive(Debug, Clone)]
enum Op {
    Put { defer_ms: Option<u64> },
    AddConsumer { timeout_ms: u64 },
    RemoveConsumer(usize),
    Rdy(usize, u64),
    Pump,
    Fin(usize, usize),
    Req(usize, usize, u64),
    Touch(usize, usize),
    Advance(u64),
    Timers,
    Pause(bool),
    Empty,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::option::of(0u64..3000).prop_map(|defer_ms| Op::Put { defer_ms }),
        2 => (1000u64..4000).prop_map(|timeout_ms| Op::AddConsumer { timeout_ms }),
        1 => any::<usize>().prop_map(Op::RemoveConsumer),
        3 => (any::<usize>(), 0u64..5).prop_map(|(c, n)| Op::Rdy(c, n)),
        6 => Just(Op::Pump),
        5 => (any::<usize>(), any::<usize>()).prop_map(|(m, c)| Op::Fin(m, c)),
        2 => (any::<usize>(), any::<usize>(), prop_oneof![Just(0u64), 1u64..3000])
            .prop_map(|(m, c, d)| Op::Req(m, c, d)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(m, c)| Op::Touch(m, c)),
        3 => prop_oneof![0u64..50, 500u64..5000].prop_map(Op::Advance),
        3 => Just(Op::Timers),
        1 => any::<bool>().prop_map(Op::Pause),
        1 => prop::bool::weighted(0.1).prop_map(|_| Op::Empty),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    Deferred,
    InFlight {
        owner: ConsumerId,
        deadline: u64,
        delivered: u64,
    },
    Finished,
    /// Dropped by `Channel::empty` (nsqd's channel empty: the operator's choice).
    Emptied,
}

struct ModelConsumer {
    id: ConsumerId,
    rdy: u64,
    timeout_ms: u64,
}

/// What the channel should hold, kept in the simplest possible form.
#[derive(Default)]
struct Model {
    now: u64,
    states: Vec<State>,
    attempts: Vec<u16>,
    queue: VecDeque<usize>,
    /// (due, sequence, message) for deferred messages.
    deferred: Vec<(u64, u64, usize)>,
    deferred_seq: u64,
    consumers: Vec<ModelConsumer>,
    all_consumers: Vec<ConsumerId>,
    paused: bool,
    requeues: u64,
    timeouts: u64,
}

impl Model {
    fn in_flight_of(&self, id: ConsumerId) -> u64 {
        self.states
            .iter()
            .filter(|s| matches!(s, State::InFlight { owner, .. } if *owner == id))
            .count() as u64
    }

    fn count(&self, f: impl Fn(&State) -> bool) -> usize {
        self.states.iter().filter(|s| f(s)).count()
    }

    fn defer(&mut self, m: usize, due: u64) {
        self.deferred_seq += 1;
        self.deferred.push((due, self.deferred_seq, m));
        self.states[m] = State::Deferred;
    }

    fn owned(&self, m: usize, by: ConsumerId) -> Result<(), InFlightError> {
        match self.states[m] {
            State::InFlight { owner, .. } if owner == by => Ok(()),
            State::InFlight { .. } => Err(InFlightError::NotOwner),
            _ => Err(InFlightError::NotInFlight),
        }
    }

    /// Expired in-flight messages (by deadline, then ID) and then due deferred ones (by due
    /// time, then sequence) go to the back of the queue, as the channel's heaps order them.
    fn process_timers(&mut self) -> bool {
        let now = self.now;
        let mut expired: Vec<(u64, usize)> = self
            .states
            .iter()
            .enumerate()
            .filter_map(|(m, s)| match s {
                State::InFlight { deadline, .. } if *deadline <= now => Some((*deadline, m)),
                _ => None,
            })
            .collect();
        expired.sort();
        let mut due: Vec<(u64, u64, usize)> = self
            .deferred
            .iter()
            .copied()
            .filter(|(d, _, _)| *d <= now)
            .collect();
        due.sort();
        self.deferred.retain(|(d, _, _)| *d > now);
        let moved = !expired.is_empty() || !due.is_empty();
        for (_, m) in expired {
            self.timeouts += 1;
            self.states[m] = State::Queued;
            self.queue.push_back(m);
        }
        for (_, _, m) in due {
            self.states[m] = State::Queued;
            self.queue.push_back(m);
        }
        moved
    }
}

fn consumer_info(id: ConsumerId, timeout_ms: u64) -> ConsumerInfo {
    ConsumerInfo {
        id,
        client_id: String::new(),
        hostname: String::new(),
        user_agent: String::new(),
        remote_address: String::new(),
        connect_ts: 0,
        msg_timeout: Duration::from_millis(timeout_ms),
        sample_rate: 0,
        locality: Default::default(),
    }
}

fn msg_number(msg: &Message) -> usize {
    u64::from_be_bytes(msg.body[..].try_into().expect("8-byte body")) as usize
}

struct Harness {
    ch: Channel,
    model: Model,
    base: Instant,
    next_conn: u64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            ch: Channel::new("c"),
            model: Model::default(),
            base: Instant::now(),
            next_conn: 1,
        }
    }

    fn at(&self) -> Instant {
        self.base + Duration::from_millis(self.model.now)
    }

    fn add_consumer(&mut self, timeout_ms: u64) -> ConsumerId {
        let id = ConsumerId {
            shard: (self.next_conn % 2) as usize,
            conn: self.next_conn,
        };
        self.next_conn += 1;
        assert!(self.ch.add_consumer(consumer_info(id, timeout_ms), 0));
        self.model.consumers.push(ModelConsumer {
            id,
            rdy: 0,
            timeout_ms,
        });
        self.model.all_consumers.push(id);
        id
    }

    fn set_ready(&mut self, id: ConsumerId, n: u64) {
        self.ch.set_ready(id, n);
        if let Some(c) = self.model.consumers.iter_mut().find(|c| c.id == id) {
            c.rdy = n;
        }
    }

    /// Pumps and checks every delivery against the model; returns the messages delivered.
    fn pump(&mut self) -> Result<Vec<(ConsumerId, usize)>, TestCaseError> {
        let now = self.at();
        let mut got = Vec::new();
        self.ch
            .pump(now, &mut |_| true, &mut |c, m, _| got.push((c, m.clone())));
        let model = &mut self.model;
        if model.paused || model.consumers.is_empty() {
            prop_assert!(
                got.is_empty(),
                "delivered while paused or without consumers"
            );
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (c, msg) in got {
            let m = msg_number(&msg);
            prop_assert_eq!(
                model.queue.pop_front(),
                Some(m),
                "delivery out of FIFO order"
            );
            let inflight = model.in_flight_of(c);
            let mc = model.consumers.iter().find(|x| x.id == c);
            let Some(mc) = mc else {
                return Err(TestCaseError::fail(format!("delivered to absent {c:?}")));
            };
            prop_assert!(inflight < mc.rdy, "delivered beyond RDY");
            model.attempts[m] += 1;
            prop_assert_eq!(msg.attempts, model.attempts[m]);
            prop_assert_eq!(msg.id, hex_id(m as u64));
            model.states[m] = State::InFlight {
                owner: c,
                deadline: model.now + mc.timeout_ms,
                delivered: model.now,
            };
            out.push((c, m));
        }
        // Pumping stops only when the queue is empty or nobody has room.
        if !model.queue.is_empty() {
            for c in &model.consumers {
                prop_assert!(
                    model.in_flight_of(c.id) >= c.rdy,
                    "pump left messages queued while {:?} had room",
                    c.id
                );
            }
        }
        Ok(out)
    }

    /// Picks the message and consumer of a FIN/REQ/TOUCH: mostly an in-flight message and its
    /// owner (the interesting case), sometimes anything (the error paths).
    fn target(&self, m: usize, c: usize) -> (usize, ConsumerId) {
        let model = &self.model;
        let in_flight: Vec<usize> = (0..model.states.len())
            .filter(|&i| matches!(model.states[i], State::InFlight { .. }))
            .collect();
        let m = if !in_flight.is_empty() && !m.is_multiple_of(4) {
            in_flight[(m / 4) % in_flight.len()]
        } else {
            m % model.states.len()
        };
        let c = match model.states[m] {
            State::InFlight { owner, .. } if !c.is_multiple_of(3) => owner,
            _ => model.all_consumers[c % model.all_consumers.len()],
        };
        (m, c)
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let n_msgs = self.model.states.len();
        let n_cons = self.model.all_consumers.len();
        let now = self.at();
        match op {
            Op::Put { defer_ms } => {
                let m = n_msgs;
                let body = Bytes::copy_from_slice(&(m as u64).to_be_bytes());
                let msg = Message::new(hex_id(m as u64), 0, body);
                self.model.states.push(State::Queued);
                self.model.attempts.push(0);
                match defer_ms {
                    Some(d) => {
                        self.ch
                            .put(msg, Some(now + Duration::from_millis(d)), usize::MAX);
                        let due = self.model.now + d;
                        self.model.defer(m, due);
                    }
                    None => {
                        self.ch.put(msg, None, usize::MAX);
                        self.model.queue.push_back(m);
                    }
                }
            }
            Op::AddConsumer { timeout_ms } => {
                self.add_consumer(timeout_ms);
            }
            Op::RemoveConsumer(i) => {
                if !self.model.consumers.is_empty() {
                    let i = i % self.model.consumers.len();
                    let c = self.model.consumers.remove(i);
                    self.ch.remove_consumer(c.id);
                }
            }
            Op::Rdy(i, n) => {
                if n_cons > 0 {
                    self.set_ready(self.model.all_consumers[i % n_cons], n);
                }
            }
            Op::Pump => {
                self.pump()?;
            }
            Op::Fin(m, c) | Op::Req(m, c, _) | Op::Touch(m, c) if n_msgs == 0 || n_cons == 0 => {
                let _ = (m, c);
            }
            Op::Fin(m, c) => {
                let (m, c) = self.target(m, c);
                let expected = self.model.owned(m, c);
                let got = self.ch.finish(c, &hex_id(m as u64)).map(|_| ());
                prop_assert_eq!(got, expected);
                if expected.is_ok() {
                    self.model.states[m] = State::Finished;
                }
            }
            Op::Req(m, c, delay) => {
                let (m, c) = self.target(m, c);
                let expected = self.model.owned(m, c);
                let got = self
                    .ch
                    .requeue(c, &hex_id(m as u64), Duration::from_millis(delay), now);
                prop_assert_eq!(got, expected);
                if expected.is_ok() {
                    self.model.requeues += 1;
                    if delay == 0 {
                        self.model.states[m] = State::Queued;
                        self.model.queue.push_back(m);
                    } else {
                        let due = self.model.now + delay;
                        self.model.defer(m, due);
                    }
                }
            }
            Op::Touch(m, c) => {
                let (m, c) = self.target(m, c);
                let expected = self.model.owned(m, c);
                let max = Duration::from_millis(MAX_MSG_TIMEOUT_MS);
                prop_assert_eq!(self.ch.touch(c, &hex_id(m as u64), now, max), expected);
                if let State::InFlight {
                    owner, delivered, ..
                } = self.model.states[m]
                    && expected.is_ok()
                {
                    let timeout = self
                        .model
                        .consumers
                        .iter()
                        .find(|x| x.id == c)
                        .map_or(MAX_MSG_TIMEOUT_MS, |x| x.timeout_ms);
                    let deadline = (self.model.now + timeout).min(delivered + MAX_MSG_TIMEOUT_MS);
                    self.model.states[m] = State::InFlight {
                        owner,
                        deadline,
                        delivered,
                    };
                }
            }
            Op::Advance(ms) => self.model.now += ms,
            Op::Timers => {
                let moved = self.ch.process_timers(now);
                prop_assert_eq!(moved, self.model.process_timers());
            }
            Op::Pause(p) => {
                self.ch.paused = p;
                self.model.paused = p;
            }
            Op::Empty => {
                self.ch.empty();
                for s in &mut self.model.states {
                    if !matches!(s, State::Finished) {
                        *s = State::Emptied;
                    }
                }
                self.model.queue.clear();
                self.model.deferred.clear();
            }
        }
        self.check_counts()
    }

    /// Depth, in-flight, deferred, per-consumer and counter figures all agree with the model.
    fn check_counts(&self) -> Result<(), TestCaseError> {
        let m = &self.model;
        prop_assert_eq!(self.ch.depth(), m.queue.len());
        prop_assert_eq!(self.ch.depth(), m.count(|s| *s == State::Queued));
        prop_assert_eq!(
            self.ch.in_flight_count(),
            m.count(|s| matches!(s, State::InFlight { .. }))
        );
        prop_assert_eq!(self.ch.deferred_count(), m.deferred.len());
        prop_assert_eq!(self.ch.deferred_count(), m.count(|s| *s == State::Deferred));
        prop_assert_eq!(self.ch.counters.message_count, m.states.len() as u64);
        prop_assert_eq!(self.ch.counters.requeue_count, m.requeues);
        prop_assert_eq!(self.ch.counters.timeout_count, m.timeouts);
        prop_assert_eq!(self.ch.consumers().len(), m.consumers.len());
        for c in self.ch.consumers() {
            prop_assert_eq!(
                c.in_flight_count,
                m.in_flight_of(c.info.id),
                "{:?}",
                c.info.id
            );
        }
        Ok(())
    }

    /// A fresh consumer with room for everything, and time moving on, must see every message
    /// that is not finished (or emptied) until it FINs them all.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        self.ch.paused = false;
        self.model.paused = false;
        let drainer = self.add_consumer(1000);
        for c in self.model.all_consumers.clone() {
            self.set_ready(c, 0);
        }
        self.set_ready(drainer, u64::MAX / 2);
        for _ in 0..4 {
            self.model.now += MAX_MSG_TIMEOUT_MS + 3000;
            let moved = self.ch.process_timers(self.at());
            prop_assert_eq!(moved, self.model.process_timers());
            for (c, m) in self.pump()? {
                prop_assert_eq!(c, drainer);
                prop_assert!(self.ch.finish(c, &hex_id(m as u64)).is_ok());
                self.model.states[m] = State::Finished;
            }
            self.check_counts()?;
        }
        for (m, s) in self.model.states.iter().enumerate() {
            prop_assert!(
                matches!(s, State::Finished | State::Emptied),
                "message {} left {:?}",
                m,
                s
            );
        }
        prop_assert_eq!(
            self.ch.depth() + self.ch.in_flight_count() + self.ch.deferred_count(),
            0
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For any interleaving of put, consumers joining and leaving, RDY, pump, FIN, REQ, TOUCH,
    /// pause, empty and timer scans under a fake clock, the channel's figures match the model
    /// after every step and every message put is delivered until it is finished.
    #[test]
    fn channel_accounting_matches_model(ops in prop::collection::vec(op(), 1..160)) {
        let mut h = Harness::new();
        for op in ops {
            h.apply(op)?;
        }
        h.drain()?;
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz corpus replay
// ---------------------------------------------------------------------------------------------

/// The committed fuzz corpus (`fuzz/corpus/<target>`), each file as the fuzz target reads it.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
        .iter()
        .map(|p| std::fs::read(p).expect("corpus file"))
        .collect()
}

/// Every input in the fuzz corpus (where crash reproducers go once fixed) replays through the
/// same entry points on the stable toolchain, so `cargo test` keeps them fixed without
/// cargo-fuzz.
#[test]
fn fuzz_corpus_replays() {
    for input in corpus("decode_v2") {
        let Some((head, rest)) = input.split_first_chunk::<3>() else {
            continue;
        };
        let state = [
            ClientState::Init,
            ClientState::Subscribed,
            ClientState::Closing,
        ][usize::from(head[0] % 3)];
        let mut buf = BytesMut::from(rest);
        while let Ok(Some(_)) = decode(&mut buf, &ctx(state), false) {}
    }
    for input in corpus("mpub_body") {
        let mut buf = BytesMut::from(&b"MPUB t\n"[..]);
        buf.put_i32(input.len().saturating_sub(1) as i32);
        buf.extend_from_slice(input.get(1..).unwrap_or_default());
        let _ = decode(&mut buf, &ctx(ClientState::Init), true);
    }
    for input in corpus("identify_json") {
        identify_checks(&input).unwrap();
    }
    // As fuzz/fuzz_targets/options.rs: argument lines, then optionally `===` and a config file.
    let config = std::env::temp_dir().join(format!("nsqd-corpus-{}.toml", std::process::id()));
    for input in corpus("options") {
        let text = String::from_utf8_lossy(&input).into_owned();
        let (args, file) = match text.split_once("\n===\n") {
            Some((a, f)) => (a.to_string(), Some(f.to_string())),
            None => (text, None),
        };
        let mut argv = vec!["nsqd".to_string()];
        if let Some(f) = file {
            std::fs::write(&config, f).unwrap();
            argv.push(format!("--config={}", config.display()));
        }
        argv.extend(args.split('\n').filter(|a| !a.is_empty()).map(String::from));
        let _ = nsqd_uring::options::parse_args(argv);
    }
    let _ = std::fs::remove_file(&config);
    for input in corpus("disk_formats") {
        let text = String::from_utf8_lossy(input.get(1..).unwrap_or_default()).into_owned();
        let _ = nsqd_uring::storage::diskqueue::Meta::parse(&text);
        let _ = nsqd_uring::storage::metadata::Metadata::parse(&text);
        let bytes = Bytes::copy_from_slice(input.get(1..).unwrap_or_default());
        let _ = nsqd_uring::storage::record::next_record(&bytes, 1 << 20);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP parameters and /mpub bodies (the pure parsers behind nsqd's HTTP API).

use nsqd_uring::http::mpub::{parse_binary, split_lines};
use nsqd_uring::http::query::Query;

/// A query key or value of characters that need no escaping.
fn plain_token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,12}"
}

proptest! {
    /// Any query string is parsed or refused, never a panic.
    #[test]
    fn http_query_never_panics(raw in ".{0,200}") {
        let _ = Query::parse(&raw);
    }

    /// Encoded pairs parse back, and the first value of a repeated key wins (Go's Values[k][0]).
    #[test]
    fn http_query_round_trips(pairs in proptest::collection::vec((plain_token(), plain_token()), 1..8)) {
        let raw: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let q = Query::parse(&raw.join("&")).expect("plain pairs are valid");
        for (k, _) in &pairs {
            let first = pairs.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v.as_str());
            prop_assert_eq!(q.get(k), first);
        }
    }

    /// Binary /mpub bodies: arbitrary bytes never panic, and anything accepted respects the
    /// limits and lies inside the body.
    #[test]
    fn http_mpub_binary_is_bounded(body in proptest::collection::vec(any::<u8>(), 0..512), max_msg in 1u64..64) {
        let body = Bytes::from(body);
        if let Ok(msgs) = parse_binary(&body, max_msg, 5 * 1024 * 1024) {
            prop_assert!(!msgs.is_empty());
            let total: usize = msgs.iter().map(|m| m.len() + 4).sum::<usize>() + 4;
            prop_assert!(total <= body.len());
            prop_assert!(msgs.iter().all(|m| !m.is_empty() && m.len() as u64 <= max_msg));
        }
    }

    /// Valid binary bodies round-trip; text bodies split into their non-empty lines.
    #[test]
    fn http_mpub_round_trips(msgs in proptest::collection::vec(proptest::collection::vec(1u8..=255, 1..40), 1..20)) {
        let mut body = BytesMut::new();
        body.put_i32(msgs.len() as i32);
        for m in &msgs {
            body.put_i32(m.len() as i32);
            body.put_slice(m);
        }
        let parsed = parse_binary(&body.freeze(), 64, 5 * 1024 * 1024).expect("valid body");
        prop_assert_eq!(parsed.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), msgs.clone());
        let lines: Vec<Vec<u8>> = msgs.iter().map(|m| m.iter().map(|&b| if b == b'\n' { b'x' } else { b }).collect()).collect();
        let text = Bytes::from(lines.join(&b'\n'));
        let split = split_lines(&text, 64).expect("lines fit");
        prop_assert_eq!(split.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), lines);
    }
}
