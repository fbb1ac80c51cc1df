//! Protocol V2 command decoding: bytes from the socket into typed [`Command`]s, with nsqd's exact
//! checks, in nsqd's order, and its exact error texts.
//!
//! Pure: no IO. The connection feeds its read buffer and gets back a command, a request for more
//! bytes, or the error frame nsqd would send. No length prefix is trusted before it is checked, so
//! a bogus size never reserves memory.

use bytes::{Buf, Bytes, BytesMut};

use super::errors::*;
use super::names::{go_quote, is_valid_name};

/// nsqd's bufio reader size: a command line must fit in it, or the connection is dropped.
pub const MAX_LINE_LEN: usize = 16 * 1024;

/// The size limits that decoding enforces, taken from the broker's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--max-msg-size`: PUB/DPUB bodies and each MPUB message.
    pub max_msg_size: i64,
    /// `--max-body-size`: IDENTIFY/AUTH bodies and the MPUB body.
    pub max_body_size: i64,
    /// `--max-rdy-count`.
    pub max_rdy_count: i64,
    /// `--max-req-timeout` in milliseconds: DPUB rejects above it, REQ clamps to it.
    pub max_req_timeout_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_msg_size: 1_048_576,
            max_body_size: 5_242_880,
            max_rdy_count: 2500,
            max_req_timeout_ms: 3_600_000,
        }
    }
}

/// The client state machine of protocol V2 (values as nsqd's `/stats` `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Connected, not subscribed: IDENTIFY, AUTH, SUB allowed.
    Init = 0,
    /// After SUB: RDY, FIN, REQ, TOUCH, CLS allowed.
    Subscribed = 3,
    /// After CLS: FIN, REQ, TOUCH allowed, RDY ignored.
    Closing = 4,
}

/// What the decoder needs to know about the connection to apply nsqd's checks in order.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext {
    /// The connection's state.
    pub state: ClientState,
    /// Whether this client disabled heartbeats (SUB is then refused).
    pub heartbeats_disabled: bool,
    /// Size limits.
    pub limits: Limits,
    /// `--tls-required` and this connection has not upgraded: only IDENTIFY is allowed.
    pub tls_required: bool,
}

impl DecodeContext {
    /// A fresh connection's context: nsqd's default limits, heartbeats on, no TLS requirement.
    pub fn new(state: ClientState) -> Self {
        DecodeContext {
            state,
            heartbeats_disabled: false,
            limits: Limits::default(),
            tls_required: false,
        }
    }
}

/// A 16-byte message ID as the client sent it (FIN/REQ/TOUCH accept any 16 bytes).
pub type MessageIdBytes = [u8; 16];

/// A parsed, validated command. `B` is the body type: [`Bytes`] slices of the read buffer for
/// callers, byte ranges while decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<B = Bytes> {
    /// IDENTIFY with its JSON body.
    Identify(B),
    /// AUTH with its secret.
    Auth(B),
    /// SUB topic channel.
    Sub { topic: String, channel: String },
    /// PUB topic + body.
    Pub { topic: String, body: B },
    /// MPUB topic + bodies (at least one).
    Mpub { topic: String, bodies: Vec<B> },
    /// DPUB topic defer_ms + body.
    Dpub {
        topic: String,
        defer_ms: u64,
        body: B,
    },
    /// RDY count.
    Rdy(u64),
    /// FIN id.
    Fin(MessageIdBytes),
    /// REQ id timeout (already clamped to `0..=max_req_timeout`), plus the timeout as sent
    /// when it was clamped.
    Req {
        id: MessageIdBytes,
        timeout_ms: u64,
        clamped_from: Option<u64>,
    },
    /// TOUCH id.
    Touch(MessageIdBytes),
    /// CLS.
    Cls,
    /// NOP.
    Nop,
}

/// Why decoding stopped without a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Send this error frame (and close if fatal). For a fatal error the rest of the buffer is
    /// never looked at again; for a non-fatal one the command's bytes were consumed.
    Protocol(ProtocolError),
    /// The line exceeded nsqd's 16 KiB read buffer: drop the connection without a frame.
    LineTooLong,
    /// An MPUB with a valid topic name and a bad or cut-off body. nsqd authorizes the MPUB
    /// and creates its topic before it reads the body, so the connection does the same before
    /// sending this fatal error (or the authorization's instead).
    MpubBody {
        /// The MPUB's topic.
        topic: String,
        /// The body's error.
        error: ProtocolError,
    },
}

impl From<ProtocolError> for DecodeError {
    fn from(e: ProtocolError) -> Self {
        DecodeError::Protocol(e)
    }
}

/// Outcome of one decode attempt.
pub type DecodeResult = Result<Option<Command>, DecodeError>;

/// A body's place in the bytes after the command line.
type Span = std::ops::Range<usize>;

/// Outcome while decoding, before bodies become `Bytes`.
type SpanResult = Result<Option<Command<Span>>, DecodeError>;

/// Decodes one command from the front of `buf`, consuming its bytes on success.
///
/// `Ok(None)` means more bytes are needed (nothing consumed). With `eof` set, a partial command
/// yields the "failed to read" error nsqd sends when the stream ends mid-command.
pub fn decode(buf: &mut BytesMut, ctx: &DecodeContext, eof: bool) -> DecodeResult {
    let Some(nl) = memchr(b'\n', &buf[..buf.len().min(MAX_LINE_LEN)]) else {
        if buf.len() >= MAX_LINE_LEN {
            return Err(DecodeError::LineTooLong);
        }
        return Ok(None);
    };
    let mut line_end = nl;
    if line_end > 0 && buf[line_end - 1] == b'\r' {
        line_end -= 1;
    }
    let head = nl + 1;
    let line = &buf[..line_end];
    // No command looks past its third token, and every arity check holds with the count capped
    // at three, so the tokens live on the stack (no allocation per command).
    let mut tokens: [&[u8]; 3] = [&[]; 3];
    let mut count = 0;
    for (i, token) in line.split(|&b| b == b' ').take(3).enumerate() {
        tokens[i] = token;
        count = i + 1;
    }
    let params = &tokens[..count];
    if ctx.tls_required && params[0] != b"IDENTIFY" {
        let text = [b"cannot ", params[0], b" in current state (TLS required)"].concat();
        return Err(ProtocolError::invalid(text).into());
    }
    let mut reader = BodyReader {
        buf: &buf[head..],
        pos: 0,
        eof,
    };
    let cmd = match params[0] {
        b"NOP" => Some(Command::Nop),
        b"RDY" => rdy(ctx, params)?,
        b"FIN" => Some(Command::Fin(id_command(ctx, params, "FIN")?)),
        b"TOUCH" => Some(Command::Touch(id_command(ctx, params, "TOUCH")?)),
        b"REQ" => Some(req(ctx, params)?),
        b"CLS" => {
            if ctx.state != ClientState::Subscribed {
                return Err(ProtocolError::invalid("cannot CLS in current state").into());
            }
            Some(Command::Cls)
        }
        b"SUB" => Some(sub(ctx, params)?),
        b"PUB" => pub_cmd(ctx, params, &mut reader)?,
        b"DPUB" => dpub(ctx, params, &mut reader)?,
        b"MPUB" => mpub(ctx, params, &mut reader)?,
        b"IDENTIFY" => identify(ctx, &mut reader)?,
        b"AUTH" => auth(ctx, params, &mut reader)?,
        name => {
            return Err(ProtocolError::invalid([b"invalid command ", name].concat()).into());
        }
    };
    let Some(cmd) = cmd else {
        return Ok(None);
    };
    // RDY in the closing state is consumed and ignored: report it as NOP.
    let consumed = head + reader.pos;
    if !carries_bytes(&cmd) {
        // FIN, RDY, REQ, TOUCH...: nothing refers to the buffer, so the bytes are skipped
        // rather than split off (a shared split and its drop are two atomic operations, 5 %
        // of the broker's CPU under a consumer's FIN stream).
        buf.advance(consumed);
        return Ok(Some(attach_bodies(cmd, &Bytes::new())));
    }
    let mut frame = buf.split_to(consumed).freeze();
    frame.advance(head);
    Ok(Some(attach_bodies(cmd, &frame)))
}

/// Whether a decoded command keeps slices of its bytes (a body or a JSON document).
fn carries_bytes(cmd: &Command<Span>) -> bool {
    matches!(
        cmd,
        Command::Identify(_)
            | Command::Auth(_)
            | Command::Pub { .. }
            | Command::Dpub { .. }
            | Command::Mpub { .. }
    )
}

/// Turns body spans into zero-copy slices of the consumed command bytes.
fn attach_bodies(cmd: Command<Span>, frame: &Bytes) -> Command {
    match cmd {
        Command::Identify(b) => Command::Identify(frame.slice(b)),
        Command::Auth(b) => Command::Auth(frame.slice(b)),
        Command::Pub { topic, body } => Command::Pub {
            topic,
            body: frame.slice(body),
        },
        Command::Dpub {
            topic,
            defer_ms,
            body,
        } => Command::Dpub {
            topic,
            defer_ms,
            body: frame.slice(body),
        },
        Command::Mpub { topic, bodies } => Command::Mpub {
            topic,
            bodies: bodies.into_iter().map(|b| frame.slice(b)).collect(),
        },
        Command::Sub { topic, channel } => Command::Sub { topic, channel },
        Command::Rdy(n) => Command::Rdy(n),
        Command::Fin(id) => Command::Fin(id),
        Command::Req {
            id,
            timeout_ms,
            clamped_from,
        } => Command::Req {
            id,
            timeout_ms,
            clamped_from,
        },
        Command::Touch(id) => Command::Touch(id),
        Command::Cls => Command::Cls,
        Command::Nop => Command::Nop,
    }
}

/// Sequential reads of the bytes after the command line.
struct BodyReader<'a> {
    buf: &'a [u8],
    pos: usize,
    eof: bool,
}

/// A read that could not complete: more bytes needed, or the stream ended.
enum Short {
    NeedMore,
    Eof,
}

impl BodyReader<'_> {
    fn read_i32(&mut self) -> Result<i32, Short> {
        if self.buf.len() - self.pos < 4 {
            return Err(self.short());
        }
        let v = i32::from_be_bytes(self.buf[self.pos..self.pos + 4].try_into().expect("4"));
        self.pos += 4;
        Ok(v)
    }

    /// Skips `len` bytes, returning where they are.
    fn read_body(&mut self, len: usize) -> Result<Span, Short> {
        if self.buf.len() - self.pos < len {
            return Err(self.short());
        }
        let span = self.pos..self.pos + len;
        self.pos += len;
        Ok(span)
    }

    fn short(&self) -> Short {
        if self.eof {
            Short::Eof
        } else {
            Short::NeedMore
        }
    }
}

/// Turns a short read into "need more bytes" or nsqd's read-failure error.
macro_rules! read_or {
    ($expr:expr, $err:expr) => {
        match $expr {
            Ok(v) => v,
            Err(Short::NeedMore) => return Ok(None),
            Err(Short::Eof) => return Err($err.into()),
        }
    };
}

/// `time.Duration(ms) * time.Millisecond` as Go computes it: nanoseconds, wrapping on overflow.
/// nsqd range-checks DPUB, REQ and HTTP `defer` timeouts after this product, so a huge value
/// can wrap into range (and is then used as wrapped).
pub fn go_millis_to_nanos(ms: i64) -> i64 {
    ms.wrapping_mul(1_000_000)
}

/// nsqd's `ByteToBase10`: ASCII digits only (empty = 0), wrapping on overflow.
pub fn byte_to_base10(b: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for &d in b {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
    }
    Some(n)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check_topic(cmd: &str, name: &[u8], code_in_text: bool) -> Result<String, ProtocolError> {
    if !is_valid_name(name) {
        let prefix = if code_in_text { "E_BAD_TOPIC " } else { "" };
        return Err(ProtocolError::fatal(
            E_BAD_TOPIC,
            format!("{prefix}{cmd} topic name {} is not valid", go_quote(name)),
        ));
    }
    Ok(lossy(name))
}

fn rdy(ctx: &DecodeContext, params: &[&[u8]]) -> SpanResult {
    match ctx.state {
        ClientState::Closing => return Ok(Some(Command::Nop)),
        ClientState::Init => {
            return Err(ProtocolError::invalid("cannot RDY in current state").into());
        }
        ClientState::Subscribed => {}
    }
    let mut count: u64 = 1;
    if params.len() > 1 {
        count = byte_to_base10(params[1]).ok_or_else(|| {
            ProtocolError::invalid([b"RDY could not parse count ", params[1]].concat())
        })?;
    }
    let signed = count as i64;
    if signed < 0 || signed > ctx.limits.max_rdy_count {
        return Err(ProtocolError::invalid(format!(
            "RDY count {signed} out of range 0-{}",
            ctx.limits.max_rdy_count
        ))
        .into());
    }
    Ok(Some(Command::Rdy(count)))
}

fn in_flight_state(ctx: &DecodeContext, cmd: &str) -> Result<(), ProtocolError> {
    if ctx.state == ClientState::Init {
        return Err(ProtocolError::invalid(format!(
            "cannot {cmd} in current state"
        )));
    }
    Ok(())
}

fn message_id(raw: &[u8]) -> Result<MessageIdBytes, ProtocolError> {
    raw.try_into()
        .map_err(|_| ProtocolError::invalid("invalid message ID"))
}

fn id_command(
    ctx: &DecodeContext,
    params: &[&[u8]],
    cmd: &str,
) -> Result<MessageIdBytes, DecodeError> {
    in_flight_state(ctx, cmd)?;
    if params.len() < 2 {
        return Err(ProtocolError::invalid(format!("{cmd} insufficient number of params")).into());
    }
    Ok(message_id(params[1])?)
}

fn req(ctx: &DecodeContext, params: &[&[u8]]) -> Result<Command<Span>, DecodeError> {
    in_flight_state(ctx, "REQ")?;
    if params.len() < 3 {
        return Err(ProtocolError::invalid("REQ insufficient number of params").into());
    }
    let id = message_id(params[1])?;
    let raw = byte_to_base10(params[2]).ok_or_else(|| {
        ProtocolError::invalid([b"REQ could not parse timeout ", params[2]].concat())
    })?;
    let asked = go_millis_to_nanos(raw as i64);
    let max = ctx.limits.max_req_timeout_ms;
    let (timeout_ms, clamped_from) = if asked < 0 {
        (0, Some(raw))
    } else if asked > go_millis_to_nanos(max) {
        (max as u64, Some(raw))
    } else {
        ((asked / 1_000_000) as u64, None)
    };
    Ok(Command::Req {
        id,
        timeout_ms,
        clamped_from,
    })
}

fn sub(ctx: &DecodeContext, params: &[&[u8]]) -> Result<Command<Span>, DecodeError> {
    if ctx.state != ClientState::Init {
        return Err(ProtocolError::invalid("cannot SUB in current state").into());
    }
    if ctx.heartbeats_disabled {
        return Err(ProtocolError::invalid("cannot SUB with heartbeats disabled").into());
    }
    if params.len() < 3 {
        return Err(ProtocolError::invalid("SUB insufficient number of parameters").into());
    }
    let topic = check_topic("SUB", params[1], false)?;
    if !is_valid_name(params[2]) {
        return Err(ProtocolError::fatal(
            E_BAD_CHANNEL,
            format!("SUB channel name {} is not valid", go_quote(params[2])),
        )
        .into());
    }
    Ok(Command::Sub {
        topic,
        channel: lossy(params[2]),
    })
}

/// Reads a PUB/DPUB message body with nsqd's checks (`E_BAD_MESSAGE`, ≤0 before too big).
fn message_body(
    ctx: &DecodeContext,
    cmd: &str,
    reader: &mut BodyReader,
) -> Result<Option<Span>, DecodeError> {
    let size = read_or!(
        reader.read_i32(),
        ProtocolError::fatal(
            E_BAD_MESSAGE,
            format!("{cmd} failed to read message body size")
        )
    );
    if size <= 0 {
        return Err(ProtocolError::fatal(
            E_BAD_MESSAGE,
            format!("{cmd} invalid message body size {size}"),
        )
        .into());
    }
    if i64::from(size) > ctx.limits.max_msg_size {
        return Err(ProtocolError::fatal(
            E_BAD_MESSAGE,
            format!("{cmd} message too big {size} > {}", ctx.limits.max_msg_size),
        )
        .into());
    }
    let body = read_or!(
        reader.read_body(size as usize),
        ProtocolError::fatal(E_BAD_MESSAGE, format!("{cmd} failed to read message body"))
    );
    Ok(Some(body))
}

fn pub_cmd(ctx: &DecodeContext, params: &[&[u8]], reader: &mut BodyReader) -> SpanResult {
    if params.len() < 2 {
        return Err(ProtocolError::invalid("PUB insufficient number of parameters").into());
    }
    let topic = check_topic("PUB", params[1], false)?;
    Ok(message_body(ctx, "PUB", reader)?.map(|body| Command::Pub { topic, body }))
}

fn dpub(ctx: &DecodeContext, params: &[&[u8]], reader: &mut BodyReader) -> SpanResult {
    if params.len() < 3 {
        return Err(ProtocolError::invalid("DPUB insufficient number of parameters").into());
    }
    let topic = check_topic("DPUB", params[1], false)?;
    let raw = byte_to_base10(params[2]).ok_or_else(|| {
        ProtocolError::invalid([b"DPUB could not parse timeout ", params[2]].concat())
    })?;
    let nanos = go_millis_to_nanos(raw as i64);
    if nanos < 0 || nanos > go_millis_to_nanos(ctx.limits.max_req_timeout_ms) {
        return Err(ProtocolError::invalid(format!(
            "DPUB timeout {raw} out of range 0-{}",
            ctx.limits.max_req_timeout_ms
        ))
        .into());
    }
    Ok(
        message_body(ctx, "DPUB", reader)?.map(|body| Command::Dpub {
            topic,
            defer_ms: (nanos / 1_000_000) as u64,
            body,
        }),
    )
}

fn mpub(ctx: &DecodeContext, params: &[&[u8]], reader: &mut BodyReader) -> SpanResult {
    if params.len() < 2 {
        return Err(ProtocolError::invalid("MPUB insufficient number of parameters").into());
    }
    let topic = check_topic("MPUB", params[1], true)?;
    match mpub_bodies(ctx, reader) {
        Ok(Some(bodies)) => Ok(Some(Command::Mpub { topic, bodies })),
        Ok(None) => Ok(None),
        Err(DecodeError::Protocol(error)) => Err(DecodeError::MpubBody { topic, error }),
        Err(other) => Err(other),
    }
}

/// An MPUB's body: outer size, count, then each message's size and bytes.
fn mpub_bodies(
    ctx: &DecodeContext,
    reader: &mut BodyReader,
) -> Result<Option<Vec<Span>>, DecodeError> {
    let bad_body = |t: String| DecodeError::from(ProtocolError::fatal(E_BAD_BODY, t));
    let bad_msg = |t: String| DecodeError::from(ProtocolError::fatal(E_BAD_MESSAGE, t));
    let size = read_or!(
        reader.read_i32(),
        bad_body("MPUB failed to read body size".into())
    );
    if size <= 0 {
        return Err(bad_body(format!("MPUB invalid body size {size}")));
    }
    let max_body = ctx.limits.max_body_size;
    if i64::from(size) > max_body {
        return Err(bad_body(format!("MPUB body too big {size} > {max_body}")));
    }
    let count = read_or!(
        reader.read_i32(),
        bad_body("MPUB failed to read message count".into())
    );
    let max_count = (max_body - 4) / 5;
    if count <= 0 || i64::from(count) > max_count {
        return Err(bad_body(format!("MPUB invalid message count {count}")));
    }
    // The count is bounded by max-body-size, but reserve only what bytes already justify.
    let mut bodies = Vec::with_capacity((count as usize).min(reader.buf.len() / 5 + 1));
    // nsqd reads the messages from the stream without holding them to the declared size, so
    // one MPUB could make it buffer up to count × max-msg-size bytes (about 1 TiB with the
    // defaults). Here the count and messages must fit in max-body-size, as the declared size
    // must: a lying client is refused before its buffer grows past that.
    let counted_from = reader.pos - 4;
    for i in 0..count {
        let msg_size = read_or!(
            reader.read_i32(),
            bad_msg(format!("MPUB failed to read message({i}) body size"))
        );
        if msg_size <= 0 {
            return Err(bad_msg(format!(
                "MPUB invalid message({i}) body size {msg_size}"
            )));
        }
        if i64::from(msg_size) > ctx.limits.max_msg_size {
            return Err(bad_msg(format!(
                "MPUB message too big {msg_size} > {}",
                ctx.limits.max_msg_size
            )));
        }
        let total = (reader.pos - counted_from) as i64 + i64::from(msg_size);
        if total > max_body {
            return Err(bad_body(format!("MPUB body too big {total} > {max_body}")));
        }
        let body = read_or!(
            reader.read_body(msg_size as usize),
            bad_msg("MPUB failed to read message body".into())
        );
        bodies.push(body);
    }
    Ok(Some(bodies))
}

/// Reads an IDENTIFY/AUTH body (`E_BAD_BODY`, too big checked before ≤0).
fn checked_body(
    ctx: &DecodeContext,
    cmd: &str,
    reader: &mut BodyReader,
) -> Result<Option<Span>, DecodeError> {
    let err = |t: String| DecodeError::from(ProtocolError::fatal(E_BAD_BODY, t));
    let size = read_or!(
        reader.read_i32(),
        err(format!("{cmd} failed to read body size"))
    );
    if i64::from(size) > ctx.limits.max_body_size {
        return Err(err(format!(
            "{cmd} body too big {size} > {}",
            ctx.limits.max_body_size
        )));
    }
    if size <= 0 {
        return Err(err(format!("{cmd} invalid body size {size}")));
    }
    let body = read_or!(
        reader.read_body(size as usize),
        err(format!("{cmd} failed to read body"))
    );
    Ok(Some(body))
}

fn identify(ctx: &DecodeContext, reader: &mut BodyReader) -> SpanResult {
    if ctx.state != ClientState::Init {
        return Err(ProtocolError::invalid("cannot IDENTIFY in current state").into());
    }
    Ok(checked_body(ctx, "IDENTIFY", reader)?.map(Command::Identify))
}

fn auth(ctx: &DecodeContext, params: &[&[u8]], reader: &mut BodyReader) -> SpanResult {
    if ctx.state != ClientState::Init {
        return Err(ProtocolError::invalid("cannot AUTH in current state").into());
    }
    if params.len() != 1 {
        return Err(ProtocolError::invalid("AUTH invalid number of parameters").into());
    }
    Ok(checked_body(ctx, "AUTH", reader)?.map(Command::Auth))
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn ctx(state: ClientState) -> DecodeContext {
        DecodeContext::new(state)
    }

    fn decode_all(input: &[u8], state: ClientState) -> DecodeResult {
        let mut b = BytesMut::from(input);
        decode(&mut b, &ctx(state), false)
    }

    fn err_text(r: DecodeResult) -> String {
        match r {
            Err(DecodeError::Protocol(e)) => String::from_utf8_lossy(&e.frame_data()).into_owned(),
            Err(DecodeError::MpubBody { topic, error }) => {
                assert_eq!(topic, "t", "the MPUB's topic comes with its body error");
                String::from_utf8_lossy(&error.frame_data()).into_owned()
            }
            other => panic!("expected error, got {other:?}"),
        }
    }

    fn with_body(line: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = line.to_vec();
        v.put_i32(body.len() as i32);
        v.extend_from_slice(body);
        v
    }

    fn mpub_body(msgs: &[&[u8]]) -> Vec<u8> {
        let mut inner = Vec::new();
        inner.put_i32(msgs.len() as i32);
        for m in msgs {
            inner.put_i32(m.len() as i32);
            inner.extend_from_slice(m);
        }
        with_body(b"MPUB t\n", &inner)
    }

    #[test]
    fn decodes_pub_and_consumes_exactly() {
        let mut input = with_body(b"PUB orders\n", b"hello");
        input.extend_from_slice(b"NOP\n");
        let mut b = BytesMut::from(&input[..]);
        let c = decode(&mut b, &ctx(ClientState::Init), false)
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            Command::Pub {
                topic: "orders".into(),
                body: Bytes::from_static(b"hello")
            }
        );
        assert_eq!(&b[..], b"NOP\n");
    }

    #[test]
    fn waits_for_partial_body_without_consuming() {
        let input = with_body(b"PUB t\n", b"hello");
        let mut b = BytesMut::from(&input[..input.len() - 1]);
        assert_eq!(decode(&mut b, &ctx(ClientState::Init), false), Ok(None));
        assert_eq!(b.len(), input.len() - 1);
        assert_eq!(
            err_text(decode(&mut b, &ctx(ClientState::Init), true)),
            "E_BAD_MESSAGE PUB failed to read message body"
        );
    }

    #[test]
    fn strips_one_carriage_return() {
        assert_eq!(
            decode_all(b"NOP\r\n", ClientState::Init),
            Ok(Some(Command::Nop))
        );
    }

    #[test]
    fn unknown_and_empty_commands() {
        assert_eq!(
            err_text(decode_all(b"FOO bar\n", ClientState::Init)),
            "E_INVALID invalid command FOO"
        );
        assert_eq!(
            err_text(decode_all(b"\n", ClientState::Init)),
            "E_INVALID invalid command "
        );
        assert_eq!(
            err_text(decode_all(b"nop\n", ClientState::Init)),
            "E_INVALID invalid command nop"
        );
    }

    #[test]
    fn long_line_is_dropped_without_frame() {
        let line = vec![b'A'; MAX_LINE_LEN];
        assert_eq!(
            decode_all(&line, ClientState::Init),
            Err(DecodeError::LineTooLong)
        );
        let short = vec![b'A'; MAX_LINE_LEN - 1];
        assert_eq!(decode_all(&short, ClientState::Init), Ok(None));
    }

    #[test]
    fn pub_errors_in_nsqd_order() {
        let s = ClientState::Init;
        assert_eq!(
            err_text(decode_all(b"PUB\n", s)),
            "E_INVALID PUB insufficient number of parameters"
        );
        assert_eq!(
            err_text(decode_all(b"PUB a!\n", s)),
            "E_BAD_TOPIC PUB topic name \"a!\" is not valid"
        );
        assert_eq!(
            err_text(decode_all(&with_body(b"PUB t\n", b""), s)),
            "E_BAD_MESSAGE PUB invalid message body size 0"
        );
        let mut neg = b"PUB t\n".to_vec();
        neg.put_i32(-1);
        assert_eq!(
            err_text(decode_all(&neg, s)),
            "E_BAD_MESSAGE PUB invalid message body size -1"
        );
        let mut huge = b"PUB t\n".to_vec();
        huge.put_u32(0x7fff_ffff);
        assert_eq!(
            err_text(decode_all(&huge, s)),
            "E_BAD_MESSAGE PUB message too big 2147483647 > 1048576"
        );
        let mut b = BytesMut::from(&b"PUB t\n"[..]);
        assert_eq!(
            err_text(decode(&mut b, &ctx(s), true)),
            "E_BAD_MESSAGE PUB failed to read message body size"
        );
    }

    #[test]
    fn extra_pub_params_are_ignored() {
        let c = decode_all(&with_body(b"PUB t extra\n", b"x"), ClientState::Init)
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            Command::Pub {
                topic: "t".into(),
                body: Bytes::from_static(b"x")
            }
        );
    }

    #[test]
    fn mpub_parses_and_validates() {
        let c = decode_all(&mpub_body(&[b"a", b"bc"]), ClientState::Init)
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            Command::Mpub {
                topic: "t".into(),
                bodies: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")]
            }
        );
        assert_eq!(
            err_text(decode_all(b"MPUB a!\n", ClientState::Init)),
            "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"a!\" is not valid"
        );
        assert_eq!(
            err_text(decode_all(&mpub_body(&[b"a", b""]), ClientState::Init)),
            "E_BAD_MESSAGE MPUB invalid message(1) body size 0"
        );
        let mut zero = b"MPUB t\n".to_vec();
        zero.put_i32(4);
        zero.put_i32(0);
        assert_eq!(
            err_text(decode_all(&zero, ClientState::Init)),
            "E_BAD_BODY MPUB invalid message count 0"
        );
        let mut big = b"MPUB t\n".to_vec();
        big.put_i32(5_242_881);
        assert_eq!(
            err_text(decode_all(&big, ClientState::Init)),
            "E_BAD_BODY MPUB body too big 5242881 > 5242880"
        );
        let mut many = b"MPUB t\n".to_vec();
        many.put_i32(100);
        many.put_i32(1_048_576);
        assert_eq!(
            err_text(decode_all(&many, ClientState::Init)),
            "E_BAD_BODY MPUB invalid message count 1048576"
        );
    }

    #[test]
    fn mpub_messages_must_fit_in_max_body_size() {
        // Declares 8 bytes, then sends 1 MiB messages: refused at the one that crosses 5 MiB,
        // before its body is awaited.
        let mut lying = b"MPUB t\n".to_vec();
        lying.put_i32(8);
        lying.put_i32(6);
        for _ in 0..4 {
            lying.put_i32(1_048_576);
            lying.extend_from_slice(&vec![b'x'; 1_048_576]);
        }
        lying.put_i32(1_048_576);
        assert_eq!(
            err_text(decode_all(&lying, ClientState::Init)),
            "E_BAD_BODY MPUB body too big 5242904 > 5242880"
        );
        // Exactly max-body-size still fits.
        let limits = Limits {
            max_body_size: 4 + 4 + 3,
            ..Limits::default()
        };
        let c = DecodeContext {
            limits,
            ..ctx(ClientState::Init)
        };
        let mut fits = BytesMut::from(&mpub_body(&[b"abc"])[..]);
        assert!(decode(&mut fits, &c, false).unwrap().is_some());
        let mut over = BytesMut::from(&mpub_body(&[b"abcd"])[..]);
        assert_eq!(
            err_text(decode(&mut over, &c, false)),
            "E_BAD_BODY MPUB body too big 12 > 11"
        );
    }

    #[test]
    fn dpub_checks_timeout() {
        let s = ClientState::Init;
        let c = decode_all(&with_body(b"DPUB t 1500\n", b"x"), s)
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            Command::Dpub {
                topic: "t".into(),
                defer_ms: 1500,
                body: Bytes::from_static(b"x")
            }
        );
        assert_eq!(
            err_text(decode_all(b"DPUB t\n", s)),
            "E_INVALID DPUB insufficient number of parameters"
        );
        assert_eq!(
            err_text(decode_all(b"DPUB t -1\n", s)),
            "E_INVALID DPUB could not parse timeout -1"
        );
        assert_eq!(
            err_text(decode_all(b"DPUB t 3600001\n", s)),
            "E_INVALID DPUB timeout 3600001 out of range 0-3600000"
        );
        // Go multiplies by a millisecond before the range check: the value is printed as sent,
        // and one that wraps into range is taken (as wrapped: well under a millisecond here).
        assert_eq!(
            err_text(decode_all(b"DPUB t 18446744073709551615\n", s)),
            "E_INVALID DPUB timeout 18446744073709551615 out of range 0-3600000"
        );
        for wraps in [
            &b"DPUB t 18446744073710\n"[..],
            b"DPUB t 9223372036854775808\n",
        ] {
            let line = [wraps, &[0, 0, 0, 1, b'x']].concat();
            match decode_all(&line, s) {
                Ok(Some(Command::Dpub { defer_ms, .. })) => assert_eq!(defer_ms, 0),
                other => panic!("{other:?}"),
            }
        }
        // REQ clamps instead: a product that wraps negative is a zero timeout.
        let id = "0123456789abcdef";
        match decode_all(
            format!("REQ {id} 9223372036855\n").as_bytes(),
            ClientState::Subscribed,
        ) {
            Ok(Some(Command::Req { timeout_ms, .. })) => assert_eq!(timeout_ms, 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rdy_rules() {
        assert_eq!(
            decode_all(b"RDY\n", ClientState::Subscribed),
            Ok(Some(Command::Rdy(1)))
        );
        assert_eq!(
            decode_all(b"RDY \n", ClientState::Subscribed),
            Ok(Some(Command::Rdy(0)))
        );
        assert_eq!(
            decode_all(b"RDY 5\n", ClientState::Closing),
            Ok(Some(Command::Nop))
        );
        assert_eq!(
            err_text(decode_all(b"RDY 5\n", ClientState::Init)),
            "E_INVALID cannot RDY in current state"
        );
        assert_eq!(
            err_text(decode_all(b"RDY 2501\n", ClientState::Subscribed)),
            "E_INVALID RDY count 2501 out of range 0-2500"
        );
        assert_eq!(
            err_text(decode_all(b"RDY x\n", ClientState::Subscribed)),
            "E_INVALID RDY could not parse count x"
        );
    }

    #[test]
    fn fin_req_touch_rules() {
        let s = ClientState::Subscribed;
        assert_eq!(
            decode_all(b"FIN 0123456789abcdef\n", s),
            Ok(Some(Command::Fin(*b"0123456789abcdef")))
        );
        assert_eq!(
            err_text(decode_all(b"FIN\n", s)),
            "E_INVALID FIN insufficient number of params"
        );
        assert_eq!(
            err_text(decode_all(b"FIN abc\n", s)),
            "E_INVALID invalid message ID"
        );
        assert_eq!(
            err_text(decode_all(b"FIN 0123456789abcdef\n", ClientState::Init)),
            "E_INVALID cannot FIN in current state"
        );
        assert_eq!(
            err_text(decode_all(b"REQ 0123456789abcdef\n", s)),
            "E_INVALID REQ insufficient number of params"
        );
        assert_eq!(
            err_text(decode_all(b"REQ 0123456789abcdef x\n", s)),
            "E_INVALID REQ could not parse timeout x"
        );
        assert_eq!(
            decode_all(b"REQ 0123456789abcdef 99999999\n", s),
            Ok(Some(Command::Req {
                id: *b"0123456789abcdef",
                timeout_ms: 3_600_000,
                clamped_from: Some(99_999_999)
            }))
        );
        assert_eq!(
            err_text(decode_all(b"TOUCH\n", s)),
            "E_INVALID TOUCH insufficient number of params"
        );
        assert_eq!(
            decode_all(b"FIN 0123456789abcdef\n", ClientState::Closing),
            Ok(Some(Command::Fin(*b"0123456789abcdef")))
        );
    }

    #[test]
    fn sub_rules() {
        let s = ClientState::Init;
        assert_eq!(
            decode_all(b"SUB t c\n", s),
            Ok(Some(Command::Sub {
                topic: "t".into(),
                channel: "c".into()
            }))
        );
        assert_eq!(
            err_text(decode_all(b"SUB t\n", s)),
            "E_INVALID SUB insufficient number of parameters"
        );
        assert_eq!(
            err_text(decode_all(b"SUB t c!\n", s)),
            "E_BAD_CHANNEL SUB channel name \"c!\" is not valid"
        );
        assert_eq!(
            err_text(decode_all(b"SUB t c\n", ClientState::Subscribed)),
            "E_INVALID cannot SUB in current state"
        );
        let mut c = ctx(s);
        c.heartbeats_disabled = true;
        let mut b = BytesMut::from(&b"SUB t c\n"[..]);
        assert_eq!(
            err_text(decode(&mut b, &c, false)),
            "E_INVALID cannot SUB with heartbeats disabled"
        );
    }

    #[test]
    fn identify_and_auth_bodies() {
        let s = ClientState::Init;
        let c = decode_all(&with_body(b"IDENTIFY\n", b"{}"), s)
            .unwrap()
            .unwrap();
        assert_eq!(c, Command::Identify(Bytes::from_static(b"{}")));
        assert_eq!(
            err_text(decode_all(&with_body(b"IDENTIFY\n", b""), s)),
            "E_BAD_BODY IDENTIFY invalid body size 0"
        );
        let mut big = b"IDENTIFY\n".to_vec();
        big.put_i32(-5);
        assert_eq!(
            err_text(decode_all(&big, s)),
            "E_BAD_BODY IDENTIFY invalid body size -5"
        );
        assert_eq!(
            err_text(decode_all(b"AUTH x\n", s)),
            "E_INVALID AUTH invalid number of parameters"
        );
        assert_eq!(
            err_text(decode_all(b"IDENTIFY\n", ClientState::Subscribed)),
            "E_INVALID cannot IDENTIFY in current state"
        );
    }

    #[test]
    fn tls_required_allows_only_identify() {
        let mut c = ctx(ClientState::Init);
        c.tls_required = true;
        let mut b = BytesMut::from(&b"PUB t\n"[..]);
        assert_eq!(
            err_text(decode(&mut b, &c, false)),
            "E_INVALID cannot PUB in current state (TLS required)"
        );
        let mut b = BytesMut::from(&b"FOO\n"[..]);
        assert_eq!(
            err_text(decode(&mut b, &c, false)),
            "E_INVALID cannot FOO in current state (TLS required)"
        );
        let mut b = BytesMut::from(&b"IDENTIFY\n\x00\x00\x00\x02{}"[..]);
        assert!(decode(&mut b, &c, false).unwrap().is_some());
    }

    #[test]
    fn client_bytes_are_echoed_verbatim() {
        let mut b = BytesMut::from(&b"F\xffO\n"[..]);
        match decode(&mut b, &ctx(ClientState::Init), false) {
            Err(DecodeError::Protocol(e)) => {
                assert_eq!(e.frame_data(), b"E_INVALID invalid command F\xffO")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cls_needs_subscription() {
        assert_eq!(
            decode_all(b"CLS\n", ClientState::Subscribed),
            Ok(Some(Command::Cls))
        );
        assert_eq!(
            err_text(decode_all(b"CLS\n", ClientState::Init)),
            "E_INVALID cannot CLS in current state"
        );
    }

    #[test]
    fn base10_matches_nsqd() {
        assert_eq!(byte_to_base10(b""), Some(0));
        assert_eq!(byte_to_base10(b"123"), Some(123));
        assert_eq!(byte_to_base10(b"+1"), None);
        assert_eq!(byte_to_base10(b"18446744073709551616"), Some(0));
    }
}
