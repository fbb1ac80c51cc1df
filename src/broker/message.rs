//! A message as nsqd stores and sends it: 16-char hex ID, nanosecond timestamp, attempts, body.

use bytes::Bytes;

/// A message ID in nsqd's wire form: 16 lowercase hex ASCII bytes.
pub type MessageId = [u8; 16];

/// One message. Cloning is cheap: the body is a shared `Bytes` slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique per topic.
    pub id: MessageId,
    /// Unix nanoseconds at publish time.
    pub timestamp: i64,
    /// Deliveries so far (incremented when sent; first delivery is 1).
    pub attempts: u16,
    /// The payload.
    pub body: Bytes,
}

impl Message {
    /// A fresh message as a publish creates it.
    pub fn new(id: MessageId, timestamp: i64, body: Bytes) -> Self {
        Message {
            id,
            timestamp,
            attempts: 0,
            body,
        }
    }

    /// Gives the body an allocation of its own. A body read from a client is a slice of the
    /// connection's read buffer, which stays allocated while any slice of it lives: one
    /// message kept for long would keep every message read with it in memory, up to 64 KiB
    /// for a 200-byte message. Done at once for a message known to stay (deferred, REQ'd with
    /// a delay, TOUCHed), and by the periodic pass of [`crate::broker::settle`] for one that
    /// merely stays queued or in flight.
    pub fn detach_body(&mut self) {
        self.body = Bytes::copy_from_slice(&self.body);
    }
}

/// Encodes a 64-bit ID as nsqd does: the 8 big-endian bytes in lowercase hex.
pub fn hex_id(id: u64) -> MessageId {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, byte) in id.to_be_bytes().iter().enumerate() {
        out[2 * i] = HEX[(byte >> 4) as usize];
        out[2 * i + 1] = HEX[(byte & 0xf) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_body_no_longer_shares_the_buffer_it_was_read_into() {
        let read_buffer = Bytes::from(vec![7u8; 64 * 1024]);
        let mut m = Message::new(hex_id(1), 0, read_buffer.slice(100..300));
        let block = read_buffer.as_ptr_range();
        assert!(block.contains(&m.body.as_ptr()));
        m.detach_body();
        assert_eq!(&m.body[..], &[7u8; 200][..]);
        assert!(!block.contains(&m.body.as_ptr()));
    }

    #[test]
    fn hex_is_lowercase_big_endian() {
        assert_eq!(&hex_id(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex_id(0), b"0000000000000000");
    }
}
