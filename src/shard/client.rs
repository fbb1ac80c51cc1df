//! A connection as its shard sees it: the output buffer that replies, errors, heartbeats and
//! message frames are appended to, the heartbeat schedule, and what `/stats` shows of it.
//!
//! The connection's reader task owns the protocol state; its writer task drains this buffer to
//! the socket. Everything here is touched only on the connection's own core.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::broker::message::Message;
use crate::protocol::errors::ProtocolError;
use crate::protocol::frame;
use crate::protocol::transport::Transport;
use crate::wakeup::Wakeup;

use super::client_meta::ClientMeta;

/// Output above this many bytes pauses reading commands until the writer catches up.
pub const OUTPUT_HIGH_WATER: usize = 1 << 20;

/// Shared between a connection's reader, its writer, and the shard that delivers to it.
#[derive(Debug)]
pub struct ClientHandle {
    /// Process-wide connection ID.
    pub id: u64,
    /// The peer.
    pub remote: SocketAddr,
    /// Unix seconds at accept.
    pub connect_ts: i64,
    out: RefCell<BytesMut>,
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
            out: RefCell::new(BytesMut::new()),
            writer_wakeup: Wakeup::default(),
            reader_wakeup: Wakeup::default(),
            closing: Cell::new(false),
            heartbeat: Cell::new(heartbeat),
            next_heartbeat: Cell::new(now + heartbeat.unwrap_or_default()),
            transport: Transport::default(),
            reset: Cell::new(false),
            writing: Cell::new(false),
            detaching: Cell::new(false),
            meta: ClientMeta::new(remote),
        }
    }

    /// Appends a message frame (attempts already incremented by the channel).
    pub fn push_message(&self, msg: &Message) {
        if self.closing.get() {
            return;
        }
        frame::put_message(
            &mut self.out.borrow_mut(),
            msg.timestamp,
            msg.attempts,
            &msg.id,
            &msg.body,
        );
        self.writer_wakeup.wake();
    }

    /// Appends a response frame.
    pub fn push_response(&self, data: &[u8]) {
        if self.closing.get() {
            return;
        }
        frame::put_response(&mut self.out.borrow_mut(), data);
        self.writer_wakeup.wake();
    }

    /// Appends an error frame; a fatal error also closes the connection once it is written.
    pub fn push_error(&self, err: &ProtocolError) {
        if self.closing.get() {
            return;
        }
        frame::put_error(&mut self.out.borrow_mut(), &err.frame_data());
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
    pub fn take_output(&self, spare: &mut BytesMut) {
        std::mem::swap(&mut *self.out.borrow_mut(), spare);
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
