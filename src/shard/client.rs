//! A connection as its shard sees it: the output buffer that replies, errors, heartbeats and
//! message frames are appended to, the heartbeat schedule, and what `/stats` shows of it.
//!
//! The connection's reader task owns the protocol state; its writer task drains this buffer to
//! the socket. Everything here is touched only on the connection's own core.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::broker::message::Message;
use crate::protocol::errors::ProtocolError;
use crate::protocol::frame;
use crate::protocol::transport::Transport;
use crate::wakeup::Wakeup;

use super::client_meta::ClientMeta;
use super::output::Output;

/// Output above this many bytes pauses reading commands until the writer catches up.
pub const OUTPUT_HIGH_WATER: usize = 1 << 20;

/// `--output-coalesce`'s default: the longest a message frame waits for later ones to share
/// its write, when the client's `output_buffer_timeout` allows that long. nsqd holds frames for
/// the whole timeout (250 ms by default); holding them only while the connection is busy, and
/// for at most this long, keeps most of the saving in syscalls for a fraction of the latency.
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(1);

/// Shared between a connection's reader, its writer, and the shard that delivers to it.
#[derive(Debug)]
pub struct ClientHandle {
    /// Process-wide connection ID.
    pub id: u64,
    /// The peer.
    pub remote: SocketAddr,
    /// Unix seconds at accept.
    pub connect_ts: i64,
    out: RefCell<Output>,
    /// Wakes the writer when output appears or the connection closes.
    pub writer_wakeup: Wakeup,
    /// Wakes the reader when output drained below the high-water mark.
    pub reader_wakeup: Wakeup,
    closing: Cell<bool>,
    heartbeat: Cell<Option<Duration>>,
    next_heartbeat: Cell<Instant>,
    /// TLS and compression negotiated by IDENTIFY (plain until then).
    pub transport: Transport,
    /// Close with a reset instead of an orderly shutdown (nsqd's overlong-line case).
    reset: Cell<bool>,
    writing: Cell<bool>,
    detaching: Cell<bool>,
    /// How long message frames may wait for company (zero: write at once).
    coalesce: Cell<Duration>,
    /// Pending output at which frames are written at once (`output_buffer_size`).
    flush_at: Cell<usize>,
    /// Something pending must be written without waiting (a response, an error, a delivery
    /// that used up the consumer's RDY, a full buffer).
    flush_now: Cell<bool>,
    /// Whether the pending output holds a message frame.
    messages_pending: Cell<bool>,
    /// When the writer last took output with a message frame in it.
    last_message_write: Cell<Option<Instant>>,
    /// Identity, state and publish counts for `/stats`.
    pub meta: ClientMeta,
}

impl ClientHandle {
    /// A fresh connection with nsqd's default heartbeat.
    pub fn new(id: u64, remote: SocketAddr, heartbeat: Option<Duration>) -> Self {
        let now = Instant::now();
        ClientHandle {
            id,
            remote,
            connect_ts: unix_seconds(),
            out: RefCell::new(Output::default()),
            writer_wakeup: Wakeup::default(),
            reader_wakeup: Wakeup::default(),
            closing: Cell::new(false),
            heartbeat: Cell::new(heartbeat),
            next_heartbeat: Cell::new(now + heartbeat.unwrap_or_default()),
            transport: Transport::default(),
            reset: Cell::new(false),
            writing: Cell::new(false),
            detaching: Cell::new(false),
            coalesce: Cell::new(Duration::ZERO),
            flush_at: Cell::new(0),
            flush_now: Cell::new(false),
            messages_pending: Cell::new(false),
            last_message_write: Cell::new(None),
            meta: ClientMeta::new(remote),
        }
    }

    /// Sets the output buffering IDENTIFY negotiated (`size` 1 or a zero `timeout`: unbuffered).
    /// Message frames may then wait up to `min(timeout, cap)` for later frames while the
    /// connection is busy, and never once `size` bytes are pending.
    pub fn set_output_buffer(&self, size: i64, timeout: Duration, cap: Duration) {
        let unbuffered = size <= 1 || timeout.is_zero();
        self.coalesce.set(if unbuffered {
            Duration::ZERO
        } else {
            timeout.min(cap)
        });
        self.flush_at.set(usize::try_from(size).unwrap_or(0));
    }

    /// Appends a message frame (attempts already incremented by the channel). `flush`: the
    /// consumer can take no more until it answers, so the frame must not wait for company.
    pub fn push_message(&self, msg: &Message, flush: bool, now_ns: impl FnOnce() -> i64) {
        if self.closing.get() {
            return;
        }
        let mut out = self.out.borrow_mut();
        let was_empty = out.is_empty();
        out.push_message(msg, now_ns);
        self.messages_pending.set(true);
        if flush || out.len() >= self.flush_at.get() {
            self.flush_now.set(true);
        } else if !was_empty {
            // The writer is already awake or holding for company: nothing new for it.
            return;
        }
        drop(out);
        self.writer_wakeup.wake();
    }

    /// Appends a response frame (written without waiting, with anything before it).
    pub fn push_response(&self, data: &[u8]) {
        if self.closing.get() {
            return;
        }
        frame::put_response(self.out.borrow_mut().tail(), data);
        self.flush_now.set(true);
        self.writer_wakeup.wake();
    }

    /// Appends an error frame; a fatal error also closes the connection once it is written.
    pub fn push_error(&self, err: &ProtocolError) {
        if self.closing.get() {
            return;
        }
        frame::put_error(self.out.borrow_mut().tail(), &err.frame_data());
        self.flush_now.set(true);
        if err.fatal {
            self.closing.set(true);
        }
        self.writer_wakeup.wake();
    }

    /// Closes after what is already buffered has been written.
    pub fn close(&self) {
        self.closing.set(true);
        self.writer_wakeup.wake();
        self.reader_wakeup.wake();
    }

    /// Closes with a TCP reset, as nsqd's connection does when a command line overflows its
    /// read buffer.
    pub fn reset(&self) {
        self.reset.set(true);
        self.close();
    }

    /// Stops the writer without closing the socket: the connection moves to another core.
    pub fn detach(&self) {
        self.detaching.set(true);
        self.writer_wakeup.wake();
    }

    /// Whether the writer should stop for a move to another core.
    pub fn is_detaching(&self) -> bool {
        self.detaching.get()
    }

    /// Whether the connection should end with a reset.
    pub fn wants_reset(&self) -> bool {
        self.reset.get()
    }

    /// Whether the connection is closing (no more frames are accepted).
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Marks a socket write in progress (so an upgrade waits for it to finish).
    pub fn set_writing(&self, writing: bool) {
        self.writing.set(writing);
    }

    /// Whether everything pushed so far has left for the socket (buffer empty, no write in
    /// progress): the point where IDENTIFY may switch TLS or compression on.
    pub fn is_drained(&self) -> bool {
        self.out.borrow().is_empty() && !self.writing.get()
    }

    /// Bytes waiting to be written.
    pub fn pending_output(&self) -> usize {
        self.out.borrow().len()
    }

    /// Swaps the pending output into `spare` (which must be empty) for the writer.
    pub fn take_output(&self, spare: &mut Output) {
        std::mem::swap(&mut *self.out.borrow_mut(), spare);
        self.flush_now.set(false);
        if self.messages_pending.replace(false) {
            self.last_message_write.set(Some(Instant::now()));
        }
    }

    /// Until when the writer should hold pending message frames for company: `None` to write
    /// now. Frames wait only when the previous message was written less than the coalescing
    /// window ago (the consumer is busy), so a lone message on a quiet connection leaves at once.
    pub fn hold_until(&self) -> Option<Instant> {
        let window = self.coalesce.get();
        if window.is_zero() || self.must_write_now() {
            return None;
        }
        let until = self.last_message_write.get()? + window;
        (Instant::now() < until).then_some(until)
    }

    /// Whether pending output must go without waiting any longer.
    pub fn must_write_now(&self) -> bool {
        self.flush_now.get()
            || self.closing.get()
            || self.detaching.get()
            || self.transport.tls_wants_write()
    }

    /// The heartbeat interval (also the write deadline), `None` when disabled.
    pub fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat.get()
    }

    /// Changes the heartbeat interval (IDENTIFY); `None` disables heartbeats.
    pub fn set_heartbeat(&self, interval: Option<Duration>) {
        self.heartbeat.set(interval);
        self.next_heartbeat
            .set(Instant::now() + interval.unwrap_or_default());
    }

    /// Sends `_heartbeat_` if it is due; called by the shard's housekeeping tick.
    pub fn heartbeat_if_due(&self, now: Instant) {
        let Some(interval) = self.heartbeat.get() else {
            return;
        };
        if now >= self.next_heartbeat.get() {
            self.next_heartbeat.set(now + interval);
            self.push_response(frame::HEARTBEAT);
        }
    }
}

/// Current Unix time in seconds.
pub fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Current Unix time in nanoseconds (message timestamps).
pub fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
