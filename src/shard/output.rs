//! A connection's pending output. Small frames are copied into one buffer; a large message body
//! stays a reference to the stored message and goes out by scatter-gather `sendmsg(2)`, so a
//! consumer's backlog of 16 KiB messages is neither copied nor grown into a buffer of tens of
//! megabytes (which, allocated fresh and unmapped again, cost more than the copy itself).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use crate::broker::message::Message;
use crate::protocol::frame;

/// Message bodies at least this long are sent by reference instead of copied...
pub const BODY_BY_REFERENCE: usize = 1024;

/// ...unless they are shorter than this, were published within [`FRESH_NS`] and little output
/// is waiting (under [`KEEP_CAPACITY`]): a body that just arrived is still in cache, and
/// copying it is cheaper than a reference count and two output chunks (pubsub of 1 KiB: −13 %
/// CPU per message). A backlog's bodies are cold, and copying them would miss in cache before
/// the kernel copies them again (sub of 1 KiB: +4–8 %).
pub const FRESH_BODY_COPY: usize = 4096;

/// How recently a body must have been published (Unix ns) to count as still in cache.
pub const FRESH_NS: i64 = 5_000_000;

/// A writer's buffer that grew beyond this during a burst is given back once written, so a
/// connection does not keep a burst's worth of memory while it idles.
pub const KEEP_CAPACITY: usize = 256 * 1024;

/// Frames waiting for the writer, in order: sealed `chunks`, then the open `tail`.
#[derive(Debug, Default)]
pub struct Output {
    chunks: VecDeque<Bytes>,
    chunks_len: usize,
    tail: BytesMut,
}

impl Output {
    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.chunks_len + self.tail.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open buffer that small frames are appended to.
    pub fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Appends a message frame, its body by reference when it is large and not fresh;
    /// `now_ns` (Unix ns) is asked only for bodies whose freshness decides.
    pub fn push_message(&mut self, msg: &Message, now_ns: impl FnOnce() -> i64) {
        let len = msg.body.len();
        // A fresh body is copied only while little is waiting: a consumer that is not reading
        // would otherwise gather up to RDY × 4 KiB of copies (by reference, it holds headers).
        let copy = len < BODY_BY_REFERENCE
            || (len < FRESH_BODY_COPY
                && self.len() < KEEP_CAPACITY
                && now_ns().saturating_sub(msg.timestamp) < FRESH_NS);
        if copy {
            frame::put_message(
                &mut self.tail,
                msg.timestamp,
                msg.attempts,
                &msg.id,
                &msg.body,
            );
            return;
        }
        frame::put_message_header(&mut self.tail, msg.timestamp, msg.attempts, &msg.id, len);
        self.seal();
        self.chunks_len += len;
        self.chunks.push_back(msg.body.clone());
    }

    /// Closes the open buffer into a chunk (before a body sent by reference, to keep order).
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let sealed = self.tail.split().freeze();
            self.chunks_len += sealed.len();
            self.chunks.push_back(sealed);
        }
    }

    /// The waiting bytes as at most `max` slices, in order, for one vectored write. The open
    /// buffer goes out as it is (sealing it on every write would cost an allocation each).
    pub fn slices(&self, max: usize) -> Vec<std::io::IoSlice<'_>> {
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
        self.chunks
            .iter()
            .map(|c| &c[..])
            .chain(tail)
            .take(max)
            .map(std::io::IoSlice::new)
            .collect()
    }

    /// The first waiting bytes (for a plain write that waits for room in the socket).
    pub fn first(&self) -> &[u8] {
        self.chunks.front().map_or(&self.tail[..], |c| &c[..])
    }

    /// Drops the first `n` bytes (written).
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                if n >= self.tail.len() {
                    // Keeps the buffer's start, so its whole capacity serves the next frames.
                    self.tail.clear();
                } else {
                    self.tail.advance(n);
                }
                return;
            };
            let step = n.min(front.len());
            front.advance(step);
            self.chunks_len -= step;
            n -= step;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }

    /// Copies every waiting byte into `out` (for TLS and compression, which need them
    /// contiguous) and empties this output.
    pub fn drain_into(&mut self, out: &mut Vec<u8>) {
        for c in self.chunks.drain(..) {
            out.extend_from_slice(&c);
        }
        out.extend_from_slice(&self.tail);
        self.clear();
    }

    /// Forgets everything waiting, keeping the open buffer's memory unless it grew large.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.chunks_len = 0;
        self.tail.clear();
        if self.tail.capacity() > KEEP_CAPACITY {
            self.tail = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body_len: usize, fill: u8) -> Message {
        let mut m = Message::new(*b"0123456789abcdef", 7, Bytes::from(vec![fill; body_len]));
        m.attempts = 1;
        m
    }

    /// A clock far past every test message's timestamp.
    fn never_fresh() -> i64 {
        i64::MAX
    }

    #[test]
    fn fresh_mid_sized_bodies_are_copied_and_old_or_large_ones_referenced() {
        let now = 1_000_000_000_000;
        let mut out = Output::default();
        let mut fresh = message(2000, b'f');
        fresh.timestamp = now - FRESH_NS / 2;
        out.push_message(&fresh, || now);
        assert_eq!(
            out.slices(usize::MAX).len(),
            1,
            "a fresh 2000-byte body is copied"
        );
        let mut stale = message(2000, b's');
        stale.timestamp = now - 2 * FRESH_NS;
        out.push_message(&stale, || now);
        let mut large = message(FRESH_BODY_COPY, b'l');
        large.timestamp = now;
        out.push_message(&large, || now);
        // The copied frame with the stale header, the stale body, the large header, its body.
        assert_eq!(out.slices(usize::MAX).len(), 4);
        let mut expected = BytesMut::new();
        for m in [&fresh, &stale, &large] {
            frame::put_message(&mut expected, m.timestamp, m.attempts, &m.id, &m.body);
        }
        assert_eq!(contiguous(&out), expected.to_vec());
        // Behind a full buffer (a consumer not reading) a fresh body goes by reference too.
        let mut backed_up = Output::default();
        backed_up.tail().resize(KEEP_CAPACITY, b'x');
        backed_up.push_message(&fresh, || now);
        assert_eq!(
            backed_up.slices(usize::MAX).len(),
            2,
            "buffer with header, body"
        );
    }

    fn contiguous(out: &Output) -> Vec<u8> {
        let mut v = Vec::new();
        for s in out.slices(usize::MAX).iter() {
            v.extend_from_slice(s);
        }
        v
    }

    #[test]
    fn frames_come_out_in_order_whatever_their_size() {
        let mut out = Output::default();
        let mut expected = BytesMut::new();
        frame::put_response(out.tail(), b"OK");
        frame::put_response(&mut expected, b"OK");
        for (len, fill) in [
            (10, b'a'),
            (BODY_BY_REFERENCE, b'b'),
            (5000, b'c'),
            (3, b'd'),
        ] {
            let m = message(len, fill);
            out.push_message(&m, never_fresh);
            frame::put_message(&mut expected, m.timestamp, m.attempts, &m.id, &m.body);
        }
        assert_eq!(out.len(), expected.len());
        assert_eq!(contiguous(&out), expected.to_vec());
        // OK + small frame + header, body, header, body, the last small frame.
        assert_eq!(out.slices(usize::MAX).len(), 5);
        assert_eq!(out.first(), &expected[..out.first().len()]);
    }

    #[test]
    fn advance_drops_written_bytes_across_chunks() {
        let mut out = Output::default();
        let big = message(2000, b'x');
        out.push_message(&big, never_fresh);
        frame::put_response(out.tail(), b"OK");
        let all = contiguous(&out);
        for step in [1, frame::MESSAGE_HEADER_LEN, 1999, 5] {
            let before = out.len();
            out.advance(step);
            assert_eq!(out.len(), before - step);
            assert_eq!(contiguous(&out), all[all.len() - out.len()..].to_vec());
        }
        out.advance(out.len());
        assert!(out.is_empty());
        let mut flat = Vec::new();
        out.push_message(&big, never_fresh);
        out.drain_into(&mut flat);
        assert_eq!(flat, all[..flat.len()].to_vec());
        assert!(out.is_empty());
    }
}
