//! One V2 connection on its core: the magic, the command loop (reader task) and the socket
//! writer (writer task), both on io_uring. The reader decodes commands and routes them through
//! the shard; replies, errors, heartbeats and message frames all go through the connection's
//! output buffer, which the writer drains in whatever batches have accumulated. Both tasks use
//! the same socket (one descriptor per connection) through [`SharedStream`].

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::codec::{self, ClientState, Command, DecodeContext, DecodeError};
use super::errors::*;
use super::frame;
use super::handoff::{self, MovingConnection};
use super::identify::{self, ClientSettings, Features};
use super::transport::{Compression, Inbound, TransportError};
use crate::auth::{ConnectionAuth, Peer};
use crate::broker::channel::{ConsumerId, ConsumerInfo, Locality};
use crate::mesh::{AdminOp, ChannelOp, MeshMsg, PublishCmd};
use crate::settings::NSQD_VERSION;
use crate::shard::Shard;
use crate::shard::client::{ClientHandle, OUTPUT_HIGH_WATER};
use crate::shard::client_meta;
use crate::shard::output::{KEEP_CAPACITY, Output};

/// Bytes requested from the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// The shortest wait [`Connection::ack_read_delay`] bothers with (RDY 100).
const MIN_ACK_READ_DELAY: Duration = Duration::from_micros(50);
/// A read that returns sooner than this found its data waiting: the peer is busy.
const BUSY_READ: Duration = Duration::from_micros(20);
/// The longest wait [`Connection::ack_read_delay`] makes (RDY 600 and up): NSQ's
/// bench_reader was slower with 1 ms than with 300 µs, as its socket ran dry in between.
const MAX_ACK_READ_DELAY: Duration = Duration::from_micros(300);
/// Most chunks one vectored write sends (a large message is two: header and body).
const MAX_WRITE_SLICES: usize = 512;
/// A new connection's read buffer starts small so idle connections stay cheap.
const INITIAL_READ_BUFFER: usize = 1024;
/// A connection waits for another core to apply this many of its channel actions before
/// reading more (one barrier round trip per this many FIN/RDY/REQ/TOUCH).
const MAX_REMOTE_OPS: u32 = 4096;
/// At most this many FIN/REQ/TOUCH wait in [`Connection::local_ops`] to be applied together.
const MAX_LOCAL_OPS: usize = 64;
/// At most this many consecutive publishes travel as one batch.
const MAX_PUBLISH_BATCH: usize = 256;
/// The protocol magic for V2.
const MAGIC_V2: &[u8; 4] = b"  V2";

/// Serves one accepted connection until it closes.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, conn_id: u64) {
    let Ok(remote) = stream.peer_addr() else {
        return;
    };
    tracing::info!("TCP: new client({remote})");
    let defaults = shard.settings.client_defaults.clone();
    let _ = stream.set_read_timeout(defaults.heartbeat_interval.map(|h| h * 2));
    crate::tcp_options::apply_go_defaults(&stream);
    let mut stream = stream;
    let buf = BytesMut::with_capacity(INITIAL_READ_BUFFER);
    let mut magic = [0u8; 4];
    if stream.read_exact(&mut magic).await.is_err() {
        tracing::info!("TCP: client({remote}) closed before sending its protocol magic");
        return;
    }
    if &magic != MAGIC_V2 {
        tracing::error!(
            "client({remote}) bad protocol magic '{}'",
            String::from_utf8_lossy(&magic)
        );
        let mut out = BytesMut::new();
        frame::put_error(&mut out, E_BAD_PROTOCOL.as_bytes());
        let _ = stream.write_all(&out).await;
        return;
    }
    let client = Rc::new(ClientHandle::new(
        conn_id,
        remote,
        defaults.heartbeat_interval,
    ));
    let conn = Connection::new(shard, client, defaults);
    run(conn, SharedStream::new(stream), buf, None).await;
}

/// Carries on serving a connection that another core handed over (see [`handoff`]), from
/// the command that made it move.
pub async fn adopt(shard: Rc<Shard>, moving: Box<MovingConnection>) {
    let m = *moving;
    // SAFETY: `m.fd` is an open socket descriptor owned by nothing else (the handing core
    // closed its own copy); the stream takes over its ownership.
    let stream = unsafe { TcpStream::from_raw_fd(m.fd.into_raw_fd()) };
    if shard.shutdown.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let _ = stream.set_read_timeout(m.settings.heartbeat_interval.map(|h| h * 2));
    let mut handle = ClientHandle::new(m.conn_id, m.remote, m.settings.heartbeat_interval);
    handle.connect_ts = m.connect_ts;
    handle.meta.identified(
        &m.client_id,
        &m.hostname,
        &m.user_agent,
        m.settings.sample_rate,
    );
    let mut conn = Connection::new(shard, Rc::new(handle), m.settings);
    conn.state = m.state;
    conn.client_id = m.client_id;
    conn.hostname = m.hostname;
    conn.user_agent = m.user_agent;
    conn.read_hint = m.read_hint;
    tracing::debug!(
        "client({}) moved to core {} for its topic",
        m.remote,
        conn.shard.id
    );
    let buf = BytesMut::from(&m.unread[..]);
    run(conn, SharedStream::new(stream), buf, Some(m.command)).await;
}

/// Runs a connection's reader here (its writer as a task beside it) until it closes or moves
/// to another core.
async fn run(
    mut conn: Connection,
    mut stream: SharedStream,
    mut buf: BytesMut,
    first: Option<Command>,
) {
    let shard = conn.shard.clone();
    let client = conn.client.clone();
    let conn_id = client.id;
    let remote = client.remote;
    shard.add_client(client.clone());
    let writer = glommio::spawn_local(write_loop(client.clone(), stream.clone()));
    let end = conn.read_loop(&mut stream, &mut buf, first).await;
    conn.apply_local_ops();
    if let ReadEnd::MoveTo(owner, command) = end {
        client.detach();
        writer.await;
        match conn.hand_over(owner, command, &stream, buf) {
            Ok(()) => {
                shard.remove_client(conn_id);
                return;
            }
            Err(e) => tracing::error!("client({remote}) could not move to core {owner}: {e}"),
        }
    } else {
        writer.detach();
    }
    if let Some(owner) = conn.subscription.as_ref().map(|s| s.owner) {
        shard.channel_op(owner, conn_id, ChannelOp::Leave, Instant::now());
    }
    client.close();
    shard.remove_client(conn_id);
    tracing::info!("PROTOCOL(V2): [{remote}] exiting ioloop");
}

/// How a connection's read loop ended.
enum ReadEnd {
    /// The connection is done (closed, failed, or asked to close).
    Closed,
    /// Its first publish or subscription is for a topic of core `.0`: move there and handle
    /// the command `.1` on that core.
    MoveTo(usize, Command),
}

/// One socket shared by a connection's reader task and writer task, so a connection holds one
/// descriptor (a `dup(2)` per writer would cap a 20,000-descriptor process at 10,000 clients).
///
/// glommio keeps a stream's read and write readiness (and their timeouts) apart, so the two
/// tasks can poll the same stream independently. The `RefCell` is borrowed only inside each
/// `poll_*` call, never across an await, and both tasks run on the same executor, so the borrows
/// never overlap. The socket closes when the last clone drops.
#[derive(Clone)]
struct SharedStream(Rc<RefCell<TcpStream>>);

impl SharedStream {
    fn new(stream: TcpStream) -> Self {
        SharedStream(Rc::new(RefCell::new(stream)))
    }

    /// How long a read may wait before failing (`None`: forever).
    fn set_read_timeout(&self, dur: Option<Duration>) {
        let _ = self.0.borrow().set_read_timeout(dur);
    }

    /// How long a write may wait before failing (`None`: forever).
    fn set_write_timeout(&self, dur: Option<Duration>) {
        let _ = self.0.borrow().set_write_timeout(dur);
    }

    /// The socket's descriptor (for socket options and `shutdown(2)`).
    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.borrow().as_raw_fd()
    }

    /// Reads up to `want` bytes onto the end of `buf`, into its spare capacity: no zero-fill
    /// before the read (it cost 15 % of the broker's CPU with 16 KiB messages).
    async fn read_into(&self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        buf.reserve(want);
        let n = std::future::poll_fn(|cx| {
            let spare = &mut buf.spare_capacity_mut()[..want];
            self.0.borrow_mut().poll_read_uninit(cx, spare)
        })
        .await?;
        // SAFETY: `poll_read_uninit` returned `n`, so the kernel wrote the first `n` bytes of
        // the spare capacity: they are initialised and directly follow the current contents.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Writes everything in `out`: up to [`MAX_WRITE_SLICES`] chunks per `sendmsg(2)`, large
    /// bodies straight from the stored messages. A full socket is waited for by glommio's own
    /// write (with the write timeout), which then sends the first chunk.
    async fn write_output(&mut self, out: &mut Output) -> io::Result<()> {
        use nix::errno::Errno;
        use nix::sys::socket::{MsgFlags, sendmsg};
        while !out.is_empty() {
            let sent = sendmsg::<()>(
                self.raw_fd(),
                &out.slices(MAX_WRITE_SLICES),
                &[],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            );
            let n = match sent {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => match self.write(out.first()).await? {
                    0 => return Err(io::ErrorKind::WriteZero.into()),
                    n => n,
                },
                Err(e) => return Err(e.into()),
            };
            out.advance(n);
        }
        Ok(())
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// Drains the connection's output to the socket until the connection closes.
async fn write_loop(client: Rc<ClientHandle>, mut stream: SharedStream) {
    let mut spare = Output::default();
    let mut plain = Vec::new();
    let mut wire = Vec::new();
    loop {
        client
            .writer_wakeup
            .until(|| {
                client.pending_output() > 0
                    || client.is_closing()
                    || client.is_detaching()
                    || client.transport.tls_wants_write()
            })
            .await;
        if client.is_detaching() && client.pending_output() == 0 {
            // The connection moves to another core, which writes from now on: leave the
            // socket as it is.
            return;
        }
        if let Some(until) = client.hold_until() {
            // A busy consumer: let the frames that follow share this write.
            let wait = until.saturating_duration_since(Instant::now());
            let urgent = client.writer_wakeup.until(|| client.must_write_now());
            futures_lite::future::or(glommio::timer::sleep(wait), urgent).await;
        }
        client.take_output(&mut spare);
        stream.set_write_timeout(client.heartbeat());
        client.set_writing(true);
        let written = if client.transport.is_plain() {
            stream.write_output(&mut spare).await
        } else {
            plain.clear();
            wire.clear();
            spare.drain_into(&mut plain);
            match client.transport.encode(&plain, &mut wire) {
                Ok(()) => stream.write_all(&wire).await,
                Err(e) => {
                    tracing::error!("client({}) cannot encode output: {e}", client.remote);
                    client.set_writing(false);
                    client.close();
                    break;
                }
            }
        };
        client.set_writing(false);
        if let Err(e) = written {
            tracing::info!("client({}) write failed: {e}", client.remote);
            client.close();
            break;
        }
        // Whatever was taken has been written or handed to TLS: never take it twice.
        spare.clear();
        for buf in [&mut plain, &mut wire] {
            if buf.capacity() > KEEP_CAPACITY {
                *buf = Vec::new();
            }
        }
        client.reader_wakeup.wake();
        if client.is_closing() && client.pending_output() == 0 {
            break;
        }
    }
    if client.wants_reset() {
        // Linger 0: the close (when the reader has let go of the stream too) sends RST, as Go
        // does when unread data is discarded.
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.raw_fd()) };
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Linger, &linger);
    } else {
        // Wakes the reader (EOF) if it is still waiting on the socket: it shares this stream,
        // so the descriptor itself stays open until both tasks have dropped it.
        let _ = nix::sys::socket::shutdown(stream.raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

/// Whether a command answers on success (so earlier FIN/REQ/TOUCH errors must precede it).
fn answers(cmd: &Command) -> bool {
    !matches!(
        cmd,
        Command::Nop | Command::Rdy(_) | Command::Fin(_) | Command::Req { .. } | Command::Touch(_)
    )
}

/// Which publish command a [`PublishCmd`] came from (for its error code and text).
#[derive(Debug, Clone, Copy)]
enum PublishKind {
    Pub,
    Mpub,
    Dpub,
}

impl PublishKind {
    /// Separates a publish command into its kind and payload; other commands come back as is.
    fn split(cmd: Command) -> Result<(PublishKind, PublishCmd), Command> {
        match cmd {
            Command::Pub { topic, body } => Ok((
                PublishKind::Pub,
                PublishCmd {
                    topic,
                    bodies: vec![body],
                    defer_ms: 0,
                },
            )),
            Command::Mpub { topic, bodies } => Ok((
                PublishKind::Mpub,
                PublishCmd {
                    topic,
                    bodies,
                    defer_ms: 0,
                },
            )),
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => Ok((
                PublishKind::Dpub,
                PublishCmd {
                    topic,
                    bodies: vec![body],
                    defer_ms,
                },
            )),
            other => Err(other),
        }
    }

    /// Rebuilds the command (for one read ahead that belongs to another core's batch).
    fn join(self, cmd: PublishCmd) -> Command {
        let PublishCmd {
            topic,
            mut bodies,
            defer_ms,
        } = cmd;
        match self {
            PublishKind::Pub => Command::Pub {
                topic,
                body: bodies.remove(0),
            },
            PublishKind::Mpub => Command::Mpub { topic, bodies },
            PublishKind::Dpub => Command::Dpub {
                topic,
                defer_ms,
                body: bodies.remove(0),
            },
        }
    }

    fn name(self) -> &'static str {
        match self {
            PublishKind::Pub => "PUB",
            PublishKind::Mpub => "MPUB",
            PublishKind::Dpub => "DPUB",
        }
    }

    fn code(self) -> &'static str {
        match self {
            PublishKind::Pub => E_PUB_FAILED,
            PublishKind::Mpub => E_MPUB_FAILED,
            PublishKind::Dpub => E_DPUB_FAILED,
        }
    }
}

struct Subscription {
    owner: usize,
}

/// The reader side's protocol state.
struct Connection {
    shard: Rc<Shard>,
    client: Rc<ClientHandle>,
    state: ClientState,
    settings: ClientSettings,
    client_id: String,
    hostname: String,
    user_agent: String,
    subscription: Option<Subscription>,
    /// FIN/REQ/TOUCH sent to another core whose possible error frames are not yet known.
    unsettled_ops: bool,
    /// Channel actions sent to another core since the last barrier (bounds what one client can
    /// queue on the mesh, and lets the output high-water mark see the error frames they cause).
    remote_ops: u32,
    /// FIN/REQ/TOUCH for a channel on this core, decoded but not applied yet: a read's worth
    /// is applied together (one channel lookup and one delivery pass, not one per FIN).
    local_ops: Vec<ChannelOp>,
    /// Inbound TLS/decompression state (plain until IDENTIFY negotiates otherwise).
    inbound: Inbound,
    /// Raw socket bytes when a layer sits between the socket and the decoder.
    raw: BytesMut,
    /// The AUTH secret and the auth server's cached reply.
    auth: ConnectionAuth,
    /// How many bytes the next socket read asks for (see [`read_some`]).
    read_hint: usize,
    /// The consumer's last RDY (for [`Connection::ack_read_delay`]).
    rdy: u64,
    /// When the bytes being decoded arrived: the time of channel actions (in-flight deadlines,
    /// REQ delays) taken from the buffer, read once per socket read instead of per command.
    read_at: Instant,
}

/// Whether to keep reading after a command.
enum Flow {
    Continue,
    Close,
}

impl Connection {
    /// A connection's protocol state before IDENTIFY, with nsqd's defaults.
    fn new(shard: Rc<Shard>, client: Rc<ClientHandle>, settings: ClientSettings) -> Self {
        let host = client.remote.ip().to_string();
        client.set_output_buffer(
            settings.output_buffer_size,
            settings.output_buffer_timeout,
            shard.settings.output_coalesce,
        );
        Connection {
            shard,
            client,
            state: ClientState::Init,
            settings,
            client_id: host.clone(),
            hostname: host,
            user_agent: String::new(),
            subscription: None,
            unsettled_ops: false,
            remote_ops: 0,
            local_ops: Vec::new(),
            inbound: Inbound::default(),
            raw: BytesMut::new(),
            auth: ConnectionAuth::default(),
            read_hint: INITIAL_READ_BUFFER,
            rdy: 0,
            read_at: Instant::now(),
        }
    }

    /// How long to let acknowledgements gather before reading again, when everything read
    /// last time was FIN/REQ/TOUCH/RDY/NOP (nothing waits on an answer) and it was already
    /// there when asked for (a quiet consumer's FIN is read at once). A consumer that FINs
    /// each message as it goes otherwise has its FINs read a few at a time, and both sides
    /// pay a syscall, a poll and TCP acknowledgements per read: NSQ's bench_reader ran at 0.7x
    /// nsqd's throughput that way, and level with it with a 300 µs wait at a third of the CPU.
    /// Unread FINs hold RDY slots, so the wait is sized to use at most half of the consumer's
    /// RDY at a million messages a second (RDY × 0.5 µs, at most 300 µs and never more than
    /// `--output-coalesce`, whose 0 turns this off too); a small RDY (under 100) gets none.
    fn ack_read_delay(&self) -> Option<Duration> {
        self.subscription.as_ref()?;
        ack_read_delay_for(self.rdy, self.shard.settings.output_coalesce)
    }

    /// The core this connection should move to before handling `cmd`, if any: its first
    /// publish or subscription, for a topic another core owns, with nothing core-bound to
    /// carry (see [`handoff`]).
    fn move_target(&self, cmd: &Command) -> Option<usize> {
        let topic = handoff::topic_of(cmd)?;
        let shard = &self.shard;
        if !shard.settings.connection_affinity || shard.nr_shards < 2 {
            return None;
        }
        let owner = shard.owner_of(topic);
        let movable = owner != shard.id
            && self.state == ClientState::Init
            && self.subscription.is_none()
            && !self.client.meta.has_published()
            && self.client.transport.is_plain()
            && !self.inbound.is_active()
            && !shard.settings.auth.enabled()
            && self.client.is_drained()
            && !self.client.is_closing();
        movable.then_some(owner)
    }

    /// Sends the connection to core `owner`: a duplicate of the socket, the protocol state,
    /// `command` and the bytes not decoded yet. The writer has stopped and the client is no
    /// longer listed here; this core's descriptor closes when `stream` drops.
    fn hand_over(
        &mut self,
        owner: usize,
        command: Command,
        stream: &SharedStream,
        mut buf: BytesMut,
    ) -> nix::Result<()> {
        let fd = nix::unistd::dup(stream.raw_fd())?;
        // SAFETY: `fd` was just created by dup(2) and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let moving = MovingConnection {
            fd,
            conn_id: self.client.id,
            remote: self.client.remote,
            connect_ts: self.client.connect_ts,
            state: self.state,
            settings: self.settings.clone(),
            client_id: std::mem::take(&mut self.client_id),
            hostname: std::mem::take(&mut self.hostname),
            user_agent: std::mem::take(&mut self.user_agent),
            read_hint: self.read_hint,
            command,
            unread: buf.split().freeze(),
        };
        tracing::debug!(
            "client({}) moving from core {} to core {owner}",
            self.client.remote,
            self.shard.id
        );
        self.shard
            .outboxes
            .push(owner, MeshMsg::Adopt(Box::new(moving)));
        Ok(())
    }

    fn decode_context(&self) -> DecodeContext {
        DecodeContext {
            state: self.state,
            heartbeats_disabled: self.settings.heartbeat_interval.is_none(),
            limits: self.shard.settings.limits,
            tls_required: self.shard.settings.features.tls_required
                && !self.client.transport.has_tls(),
        }
    }

    /// Decodes and handles commands until the connection ends or moves to another core;
    /// `first` (a command another core decoded) is handled before anything in `buf`.
    async fn read_loop(
        &mut self,
        stream: &mut SharedStream,
        buf: &mut BytesMut,
        first: Option<Command>,
    ) -> ReadEnd {
        let mut eof = false;
        // A command decoded ahead while gathering publishes (or handed over), handled next.
        let mut held = first.map(|cmd| Ok(Some(cmd)));
        // Whether everything read last time was an acknowledgement (nothing to answer), and
        // whether it was there without waiting (the peer keeps the socket busy).
        let (mut only_acks, mut busy) = (false, false);
        // When the command now in `buf` began to arrive, while it is incomplete.
        let mut partial_since: Option<Instant> = None;
        loop {
            loop {
                if self.client.is_closing() {
                    self.apply_local_ops();
                    return ReadEnd::Closed;
                }
                let decoded = match held.take() {
                    Some(d) => d,
                    None => codec::decode(buf, &self.decode_context(), eof),
                };
                match decoded {
                    Ok(Some(cmd)) => {
                        partial_since = None;
                        let gathered = matches!(
                            cmd,
                            Command::Fin(_) | Command::Req { .. } | Command::Touch(_)
                        );
                        if !gathered {
                            self.apply_local_ops();
                        }
                        if let Some(owner) = self.move_target(&cmd) {
                            return ReadEnd::MoveTo(owner, cmd);
                        }
                        let answered = answers(&cmd);
                        only_acks &= !answered;
                        if answered {
                            self.settle_channel_ops().await;
                        }
                        let flow = match PublishKind::split(cmd) {
                            Ok((kind, first)) => {
                                let (flow, next) = self.publish_run(kind, first, buf, eof).await;
                                held = next;
                                flow
                            }
                            Err(cmd) => self.handle(cmd, stream, buf).await,
                        };
                        if let Flow::Close = flow {
                            return ReadEnd::Closed;
                        }
                        if self.remote_ops >= MAX_REMOTE_OPS {
                            self.settle_channel_ops().await;
                        }
                    }
                    Ok(None) => {
                        self.apply_local_ops();
                        break;
                    }
                    Err(DecodeError::LineTooLong) => {
                        self.apply_local_ops();
                        tracing::error!(
                            "client({}) command line too long; closing",
                            self.client.remote
                        );
                        self.client.reset();
                        return ReadEnd::Closed;
                    }
                    Err(DecodeError::Protocol(e)) => {
                        self.apply_local_ops();
                        self.settle_channel_ops().await;
                        tracing::error!("client({}) {e}", self.client.remote);
                        self.client.push_error(&e);
                        return ReadEnd::Closed;
                    }
                    Err(DecodeError::MpubBody { topic, error }) => {
                        self.apply_local_ops();
                        self.settle_channel_ops().await;
                        let e = self.refuse_mpub_body(&topic, error).await;
                        tracing::error!("client({}) {e}", self.client.remote);
                        self.client.push_error(&e);
                        return ReadEnd::Closed;
                    }
                }
            }
            if eof {
                return ReadEnd::Closed;
            }
            if self.client.pending_output() > OUTPUT_HIGH_WATER {
                let c = &self.client;
                c.reader_wakeup
                    .until(|| c.pending_output() <= OUTPUT_HIGH_WATER || c.is_closing())
                    .await;
            }
            if let Some(delay) = self.ack_read_delay().filter(|_| only_acks && busy) {
                glommio::timer::sleep(delay).await;
            }
            self.bound_partial_command(stream, buf, &mut partial_since);
            let asked = Instant::now();
            match self.fill(stream, buf).await {
                Ok(0) => eof = true,
                Ok(_) => {
                    self.read_at = Instant::now();
                    only_acks = true;
                    busy = self.read_at - asked < BUSY_READ;
                }
                Err(e) => {
                    tracing::info!("client({}) read failed: {e}", self.client.remote);
                    if e.kind() != std::io::ErrorKind::TimedOut {
                        return ReadEnd::Closed;
                    }
                    // nsqd's deadline passed: a command cut short gets the error its body
                    // read would have failed with (decoded as at end of stream), then the close.
                    eof = true;
                }
            }
        }
    }

    /// nsqd sets its read deadline (twice the heartbeat interval) once per command, so a
    /// command must arrive whole within it however slowly its bytes trickle in: while `buf`
    /// holds part of one, the next read may wait only for what is left of that deadline.
    fn bound_partial_command(
        &self,
        stream: &SharedStream,
        buf: &BytesMut,
        partial_since: &mut Option<Instant>,
    ) {
        let Some(limit) = self.settings.heartbeat_interval.map(|h| h * 2) else {
            return;
        };
        if buf.is_empty() {
            if partial_since.take().is_some() {
                stream.set_read_timeout(Some(limit));
            }
            return;
        }
        let since = *partial_since.get_or_insert(self.read_at);
        let left = limit.saturating_sub(since.elapsed());
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
    }

    /// Gets more plaintext into `buf`: from compressed input already received, else from the
    /// socket (through TLS/decompression when negotiated). `Ok(0)` means the peer closed.
    async fn fill(
        &mut self,
        stream: &mut SharedStream,
        buf: &mut BytesMut,
    ) -> std::io::Result<usize> {
        let layer_err =
            |e: TransportError| std::io::Error::new(std::io::ErrorKind::InvalidData, e.0);
        if self.inbound.has_pending() {
            let before = buf.len();
            self.inbound.step(buf).map_err(layer_err)?;
            if buf.len() > before {
                return Ok(buf.len() - before);
            }
        }
        if !self.client.transport.has_tls() && !self.inbound.is_active() {
            return read_some(stream, buf, &mut self.read_hint).await;
        }
        self.raw.clear();
        let n = read_some(stream, &mut self.raw, &mut self.read_hint).await?;
        if n > 0 {
            self.inbound
                .feed(&self.client.transport, &self.raw, buf)
                .map_err(layer_err)?;
            if self.client.transport.tls_wants_write() {
                self.client.writer_wakeup.wake();
            }
        }
        Ok(n)
    }

    /// Waits until everything answered so far has been written (before switching layers).
    async fn drained(&self) {
        let c = &self.client;
        c.reader_wakeup
            .until(|| c.is_drained() || c.is_closing())
            .await;
    }

    fn consumer_info(&self) -> ConsumerInfo {
        ConsumerInfo {
            id: ConsumerId {
                shard: self.shard.id,
                conn: self.client.id,
            },
            client_id: self.client_id.clone(),
            hostname: self.hostname.clone(),
            user_agent: self.user_agent.clone(),
            remote_address: self.client.remote.to_string(),
            connect_ts: self.client.connect_ts,
            msg_timeout: self.settings.msg_timeout,
            sample_rate: self.settings.sample_rate,
            locality: self.locality(),
        }
    }

    /// Where this client sits relative to this node, when topology-aware consumption is on.
    fn locality(&self) -> Locality {
        let s = &self.shard.settings;
        if !s.topology_aware_consumption {
            return Locality::Global;
        }
        let (zone, region) = (
            &s.server_limits.topology_zone,
            &s.server_limits.topology_region,
        );
        Locality::of(
            zone,
            region,
            &self.settings.topology_zone,
            &self.settings.topology_region,
        )
    }

    fn fatal(&self, err: ProtocolError) -> Flow {
        tracing::error!("client({}) {err}", self.client.remote);
        self.client.push_error(&err);
        Flow::Close
    }

    async fn handle(&mut self, cmd: Command, stream: &SharedStream, buf: &mut BytesMut) -> Flow {
        match cmd {
            Command::Nop => Flow::Continue,
            Command::Identify(body) => self.identify(&body, stream, buf).await,
            Command::Auth(secret) => self.authenticate(&secret).await,
            Command::Sub { topic, channel } => {
                if let Err(e) = self.check_auth("SUB", &topic, &channel).await {
                    return self.fatal(e);
                }
                let info = self.consumer_info();
                match self.shard.subscribe(&topic, &channel, info).await {
                    Ok(()) => {
                        self.state = ClientState::Subscribed;
                        self.client.meta.set_state(client_meta::state::SUBSCRIBED);
                        self.subscription = Some(Subscription {
                            owner: self.shard.owner_of(&topic),
                        });
                        self.client.push_response(frame::OK);
                        Flow::Continue
                    }
                    Err(e) => self.fatal(ProtocolError::fatal(
                        E_SUB_FAILED,
                        format!("SUB failed {e}"),
                    )),
                }
            }
            // Publishes never get here: the read loop batches them (publish_run).
            Command::Pub { .. } | Command::Mpub { .. } | Command::Dpub { .. } => Flow::Continue,
            Command::Rdy(n) => {
                self.rdy = n;
                self.channel_op(ChannelOp::Ready(n))
            }
            Command::Fin(id) => self.channel_op(ChannelOp::Finish(id)),
            Command::Touch(id) => self.channel_op(ChannelOp::Touch(id)),
            Command::Req {
                id,
                timeout_ms,
                clamped_from,
            } => {
                if let Some(asked) = clamped_from {
                    tracing::info!(
                        "PROTOCOL(V2): [{}] REQ timeout {asked}ms clamped to {timeout_ms}ms",
                        self.client.remote
                    );
                }
                self.channel_op(ChannelOp::Requeue(id, timeout_ms))
            }
            Command::Cls => {
                self.state = ClientState::Closing;
                self.client.meta.set_state(client_meta::state::CLOSING);
                self.channel_op(ChannelOp::Ready(0));
                self.client.push_response(frame::CLOSE_WAIT);
                Flow::Continue
            }
        }
    }

    fn channel_op(&mut self, op: ChannelOp) -> Flow {
        let Some(owner) = self.subscription.as_ref().map(|s| s.owner) else {
            return Flow::Continue;
        };
        let may_fail = op.may_fail();
        if owner == self.shard.id && may_fail {
            self.local_ops.push(op);
            if self.local_ops.len() >= MAX_LOCAL_OPS {
                self.apply_local_ops();
            }
            return Flow::Continue;
        }
        self.apply_local_ops();
        if owner != self.shard.id {
            self.unsettled_ops |= may_fail;
            self.remote_ops += 1;
        }
        self.shard
            .channel_op(owner, self.client.id, op, self.read_at);
        Flow::Continue
    }

    /// Applies the FIN/REQ/TOUCH gathered in [`Connection::local_ops`]; called before any
    /// other command is handled and before the connection waits or ends, so actions keep
    /// their order and their failures answer before anything that follows them.
    fn apply_local_ops(&mut self) {
        self.shard
            .local_channel_ops(self.client.id, &mut self.local_ops, self.read_at);
    }

    /// nsqd answers FIN/REQ/TOUCH failures before anything that follows them. When those went to
    /// another core, wait for that core to have applied them before the next response.
    async fn settle_channel_ops(&mut self) {
        if !self.unsettled_ops && self.remote_ops < MAX_REMOTE_OPS {
            return;
        }
        self.unsettled_ops = false;
        self.remote_ops = 0;
        if let Some(owner) = self.subscription.as_ref().map(|s| s.owner) {
            self.shard.barrier(owner).await;
        }
    }

    /// Applies a publish and every publish to the same owner core that directly follows it in
    /// the read buffer, as one batch (one mesh round trip for a pipelining client). Answers
    /// each in order; the first refusal is fatal, as in nsqd. Returns the first command that
    /// did not join the batch.
    async fn publish_run(
        &mut self,
        kind: PublishKind,
        first: PublishCmd,
        buf: &mut BytesMut,
        eof: bool,
    ) -> (Flow, Option<codec::DecodeResult>) {
        let owner = self.shard.owner_of(&first.topic);
        let mut kinds = vec![kind];
        let mut batch = vec![first];
        let mut next = None;
        while batch.len() < MAX_PUBLISH_BATCH {
            let decoded = codec::decode(buf, &self.decode_context(), eof);
            match decoded {
                Ok(Some(cmd)) => match PublishKind::split(cmd) {
                    Ok((kind, cmd)) if self.shard.owner_of(&cmd.topic) == owner => {
                        kinds.push(kind);
                        batch.push(cmd);
                    }
                    Ok((kind, cmd)) => {
                        next = Some(Ok(Some(kind.join(cmd))));
                        break;
                    }
                    Err(cmd) => {
                        next = Some(Ok(Some(cmd)));
                        break;
                    }
                },
                other => {
                    next = Some(other);
                    break;
                }
            }
        }
        // Every command of the batch is authorized before any is applied; a refusal cuts the
        // batch there: the commands before it are applied and answered, then the error. (nsqd
        // checks an MPUB before reading its body; the decoder has read it by now, so a malformed
        // body is reported first: a documented difference.)
        let mut refused = None;
        if self.shard.settings.auth.enabled() {
            for (i, (kind, cmd)) in kinds.iter().zip(&batch).enumerate() {
                if let Err(e) = self.check_auth(kind.name(), &cmd.topic, "").await {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        if let Some((i, _)) = &refused {
            batch.truncate(*i);
            next = None;
        }
        let outcome = if batch.is_empty() {
            crate::mesh::PublishOutcome {
                accepted: 0,
                error: None,
            }
        } else {
            self.client.meta.count_publishes(&batch);
            self.shard.publish(owner, batch).await
        };
        for _ in 0..outcome.accepted {
            self.client.push_response(frame::OK);
        }
        match (outcome.error, refused) {
            (Some(e), _) => {
                let kind = kinds[outcome.accepted];
                let text = format!("{} failed {e}", kind.name());
                (self.fatal(ProtocolError::fatal(kind.code(), text)), None)
            }
            (None, Some((_, e))) => (self.fatal(e), None),
            (None, None) => (Flow::Continue, next),
        }
    }

    /// What the auth server is told about this connection.
    fn auth_peer(&self) -> Peer {
        Peer {
            remote_ip: self.client.remote.ip().to_string(),
            tls: self.client.transport.has_tls(),
            common_name: self.client.transport.peer_common_name(),
        }
    }

    /// nsqd's AUTH, after the decoder's state, arity and body checks.
    async fn authenticate(&mut self, secret: &[u8]) -> Flow {
        if self.auth.has_authorizations() {
            return self.fatal(ProtocolError::invalid("AUTH already set"));
        }
        let settings = self.shard.settings.clone();
        if !settings.auth.enabled() {
            return self.fatal(ProtocolError::fatal(E_AUTH_DISABLED, "AUTH disabled"));
        }
        let peer = self.auth_peer();
        let secret = String::from_utf8_lossy(secret).into_owned();
        let outcome = self
            .auth
            .authenticate(&settings.auth, secret, &peer)
            .await
            .map(|state| state.reply_json());
        self.show_auth_identity();
        match outcome {
            Ok(reply) => {
                self.client.push_response(&reply);
                Flow::Continue
            }
            Err(e) => self.fatal(e),
        }
    }

    /// nsqd's `CheckAuth` before SUB and each publish: nothing to do with auth disabled.
    /// The error for an MPUB whose body is bad, after what nsqd does before reading a body:
    /// the authorization (whose error wins) and creating the topic.
    async fn refuse_mpub_body(&mut self, topic: &str, error: ProtocolError) -> ProtocolError {
        if let Err(denied) = self.check_auth("MPUB", topic, "").await {
            return denied;
        }
        let create = AdminOp::CreateTopic {
            topic: topic.to_string(),
        };
        if self.shard.admin(create).await.is_err() {
            tracing::debug!(
                "client({}) MPUB topic {topic} not created",
                self.client.remote
            );
        }
        error
    }

    async fn check_auth(
        &mut self,
        cmd: &str,
        topic: &str,
        channel: &str,
    ) -> Result<(), ProtocolError> {
        let settings = self.shard.settings.clone();
        if !settings.auth.enabled() {
            return Ok(());
        }
        let peer = self.auth_peer();
        let requeried = self
            .auth
            .check(&settings.auth, cmd, topic, channel, &peer)
            .await;
        if let Ok(true) = requeried {
            self.show_auth_identity();
        }
        requeried.map(drop)
    }

    /// Copies the auth identity into what `/stats` shows.
    fn show_auth_identity(&self) {
        if let Some(s) = self.auth.state() {
            self.client.meta.set_auth(&s.identity, &s.identity_url);
        }
    }

    async fn identify(&mut self, body: &[u8], stream: &SharedStream, buf: &mut BytesMut) -> Flow {
        let req = match identify::parse_identify(body) {
            Ok(r) => r,
            Err(e) => return self.fatal(e),
        };
        self.client_id = req.client_id.clone();
        self.hostname = req.hostname.clone();
        self.user_agent = req.user_agent.clone();
        let settings = self.shard.settings.clone();
        let lim = &settings.server_limits;
        let applied = self.settings.apply(&req, lim);
        let (id, s) = (&self.client.meta, &self.settings);
        id.identified(
            &req.client_id,
            &req.hostname,
            &req.user_agent,
            s.sample_rate,
        );
        self.client.set_heartbeat(self.settings.heartbeat_interval);
        self.client.set_output_buffer(
            self.settings.output_buffer_size,
            self.settings.output_buffer_timeout,
            settings.output_coalesce,
        );
        stream.set_read_timeout(self.settings.heartbeat_interval.map(|h| h * 2));
        if let Err(e) = applied {
            return self.fatal(e);
        }
        if !req.feature_negotiation {
            self.client.push_response(frame::OK);
            return Flow::Continue;
        }
        let f = &settings.features;
        let features = Features {
            tls: f.tls.is_some(),
            snappy: f.snappy,
            deflate: f.deflate,
        };
        let auth_required = settings.auth.enabled();
        let n = match identify::negotiate(
            &req,
            &self.settings,
            lim,
            features,
            auth_required,
            NSQD_VERSION,
        ) {
            Ok(n) => n,
            Err(e) => return self.fatal(e),
        };
        self.client.push_response(n.json.as_bytes());
        if n.tls_v1 {
            let Some(config) = f.tls.clone() else {
                return Flow::Continue;
            };
            // The JSON goes out in plain text; everything after it is TLS.
            self.drained().await;
            match rustls::ServerConnection::new(config) {
                Ok(tls) => self.client.transport.start_tls(tls),
                Err(e) => {
                    let err =
                        ProtocolError::fatal(E_IDENTIFY_FAILED, format!("IDENTIFY failed {e}"));
                    return self.fatal(err);
                }
            }
            // Bytes already read past IDENTIFY are the start of the TLS handshake.
            let early = buf.split();
            if let Err(e) = self.inbound.feed(&self.client.transport, &early, buf) {
                tracing::error!(
                    "client({}) TLS handshake failed: {}",
                    self.client.remote,
                    e.0
                );
                return Flow::Close;
            }
            self.client.writer_wakeup.wake();
            self.client.push_response(frame::OK);
        }
        let compression = if n.snappy {
            Some(Compression::Snappy)
        } else if n.deflate {
            Some(Compression::Deflate(n.deflate_level.clamp(1, 9) as u32))
        } else {
            None
        };
        if let Some(kind) = compression {
            // The previous answer leaves uncompressed; the next `OK` is the first compressed frame.
            self.drained().await;
            let buffer = usize::try_from(self.settings.output_buffer_size).unwrap_or(0);
            self.client.transport.start_compression(kind, buffer);
            let early = buf.split();
            self.inbound.start_decompression(kind);
            if let Err(e) = self.inbound.push_decrypted(&early, buf) {
                tracing::error!("client({}) {}", self.client.remote, e.0);
                return Flow::Close;
            }
            self.client.push_response(frame::OK);
        }
        Flow::Continue
    }
}

/// Reads what is available onto the end of `buf`, asking for `hint` bytes. The hint adapts, so
/// the buffer a connection holds fits its traffic: twice what the last read returned, small for
/// a request/response client (and an idle one), growing to [`READ_CHUNK`] for a streaming one.
/// (Reserving a large MPUB's exact size up front measured slower: fresh megabyte allocations
/// fault their pages in, where the growing buffer reuses warm ones.)
async fn read_some(
    stream: &mut SharedStream,
    buf: &mut BytesMut,
    hint: &mut usize,
) -> std::io::Result<usize> {
    let want = (*hint).clamp(INITIAL_READ_BUFFER, READ_CHUNK);
    let result = stream.read_into(buf, want).await;
    let n = *result.as_ref().unwrap_or(&0);
    *hint = (n * 2).clamp(INITIAL_READ_BUFFER, READ_CHUNK);
    result
}

/// [`Connection::ack_read_delay`] for a consumer with RDY `rdy` under `--output-coalesce`
/// `coalesce`.
fn ack_read_delay_for(rdy: u64, coalesce: Duration) -> Option<Duration> {
    let cap = MAX_ACK_READ_DELAY.min(coalesce);
    let delay = Duration::from_nanos(rdy.saturating_mul(500)).min(cap);
    (delay >= MIN_ACK_READ_DELAY).then_some(delay)
}

/// How long [`serve`] waits for writers when shutting down.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_read_delay_fits_the_rdy_window() {
        let ms = Duration::from_millis(1);
        assert_eq!(
            ack_read_delay_for(1, ms),
            None,
            "RDY 1: every FIN read at once"
        );
        assert_eq!(ack_read_delay_for(99, ms), None);
        assert_eq!(ack_read_delay_for(100, ms), Some(Duration::from_micros(50)));
        assert_eq!(
            ack_read_delay_for(400, ms),
            Some(Duration::from_micros(200))
        );
        assert_eq!(ack_read_delay_for(2500, ms), Some(MAX_ACK_READ_DELAY));
        assert_eq!(ack_read_delay_for(u64::MAX, ms), Some(MAX_ACK_READ_DELAY));
        assert_eq!(
            ack_read_delay_for(2500, Duration::ZERO),
            None,
            "--output-coalesce=0"
        );
    }
}
