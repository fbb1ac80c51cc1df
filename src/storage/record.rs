//! One diskqueue record: `[int32 BE length][message]`, where the message is serialized exactly
//! like a wire message payload (nsqd §7.3). Lengths are validated before anything is allocated,
//! so a corrupt file can never make us reserve gigabytes.

use bytes::{BufMut, Bytes};

use crate::broker::message::{Message, MessageId};

/// Smallest serialized message: timestamp (8) + attempts (2) + ID (16).
pub const MIN_MSG_SIZE: usize = 26;

/// Size of the length prefix in front of every record.
pub const LEN_PREFIX: usize = 4;

/// Appends the serialized message (no length prefix) to `out`.
pub fn encode_message(msg: &Message, out: &mut Vec<u8>) {
    out.put_i64(msg.timestamp);
    out.put_u16(msg.attempts);
    out.extend_from_slice(&msg.id);
    out.extend_from_slice(&msg.body);
}

/// Appends a whole record (length prefix + message) to `out`.
pub fn encode_record(msg: &Message, out: &mut Vec<u8>) {
    let len = MIN_MSG_SIZE + msg.body.len();
    out.put_i32(len as i32);
    encode_message(msg, out);
}

/// Why bytes are not a valid message or record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// A length prefix outside `MIN_MSG_SIZE..=max_msg_size + MIN_MSG_SIZE`.
    BadLength(i64),
    /// A serialized message shorter than its fixed header.
    TooShort(usize),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::BadLength(n) => write!(f, "invalid message read size ({n})"),
            RecordError::TooShort(n) => write!(f, "message too short ({n} bytes)"),
        }
    }
}

/// Decodes a serialized message (no length prefix); the body shares `payload`'s memory.
pub fn decode_message(payload: &Bytes) -> Result<Message, RecordError> {
    if payload.len() < MIN_MSG_SIZE {
        return Err(RecordError::TooShort(payload.len()));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&payload[..8]);
    let mut id: MessageId = [0u8; 16];
    id.copy_from_slice(&payload[10..26]);
    Ok(Message {
        id,
        timestamp: i64::from_be_bytes(ts),
        attempts: u16::from_be_bytes([payload[8], payload[9]]),
        body: payload.slice(MIN_MSG_SIZE..),
    })
}

/// Checks a length prefix against go-diskqueue's bounds, before any buffer is sized by it.
pub fn check_len(len: i32, max_msg_size: usize) -> Result<usize, RecordError> {
    let n = len as i64;
    if n < MIN_MSG_SIZE as i64 || n > (max_msg_size + MIN_MSG_SIZE) as i64 {
        return Err(RecordError::BadLength(n));
    }
    Ok(n as usize)
}

/// What [`next_record`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole record: the message and the bytes it took (prefix included).
    Record(Message, usize),
    /// The buffer ends inside a record: read more (or, at end of file, it is truncated).
    Incomplete,
}

/// Parses the record at the start of `buf`. A bad length is an error even if the buffer is
/// short, so callers never wait for bytes a corrupt prefix promises.
pub fn next_record(buf: &Bytes, max_msg_size: usize) -> Result<Parsed, RecordError> {
    if buf.len() < LEN_PREFIX {
        return Ok(Parsed::Incomplete);
    }
    let len = check_len(
        i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
        max_msg_size,
    )?;
    let end = LEN_PREFIX + len;
    if buf.len() < end {
        return Ok(Parsed::Incomplete);
    }
    let msg = decode_message(&buf.slice(LEN_PREFIX..end))?;
    Ok(Parsed::Record(msg, end))
}

/// How far [`walk_records`] got through a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Walk {
    /// Whole records with valid lengths.
    pub records: i64,
    /// Bytes they take.
    pub used: usize,
    /// What stopped the walk at `used`.
    pub stop: WalkStop,
}

/// Why [`walk_records`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum WalkStop {
    /// The buffer ends there (it may end inside a record of `needs` bytes, prefix included,
    /// when the prefix is in the buffer).
    End { needs: Option<usize> },
    /// A length go-diskqueue would refuse: the reader stops there too.
    BadLength,
}

/// Counts the whole records at the start of `buf` by their length prefixes alone, stopping
/// where the reader would: at a bad length, or where the buffer ends.
pub fn walk_records(buf: &[u8], max_msg_size: usize) -> Walk {
    let mut walk = Walk {
        records: 0,
        used: 0,
        stop: WalkStop::End { needs: None },
    };
    while let Some(prefix) = buf.get(walk.used..walk.used + LEN_PREFIX) {
        let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let Ok(len) = check_len(len, max_msg_size) else {
            walk.stop = WalkStop::BadLength;
            return walk;
        };
        if buf.len() - walk.used < LEN_PREFIX + len {
            walk.stop = WalkStop::End {
                needs: Some(LEN_PREFIX + len),
            };
            return walk;
        }
        walk.used += LEN_PREFIX + len;
        walk.records += 1;
    }
    walk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &'static [u8], attempts: u16) -> Message {
        Message {
            id: *b"18a82673a6a69000",
            timestamp: 0x18eb_526d_0ea0_1212,
            attempts,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn record_matches_nsqd_bytes() {
        // Captured from nsqd v1.3.0's t1.diskqueue.000001.dat (publish of "hello-4").
        let nsqd: &[u8] =
            b"\x00\x00\x00\x21\x18\xeb\x52\x6d\x0e\xa0\x12\x12\x00\x0018a82673a6a69000hello-4";
        let mut out = Vec::new();
        encode_record(&msg(b"hello-4", 0), &mut out);
        assert_eq!(out, nsqd);
    }

    #[test]
    fn round_trip_keeps_id_timestamp_attempts_body() {
        let m = msg(b"payload", 7);
        let mut out = Vec::new();
        encode_record(&m, &mut out);
        let buf = Bytes::from(out);
        assert_eq!(next_record(&buf, 100), Ok(Parsed::Record(m, buf.len())));
    }

    #[test]
    fn empty_body_is_minimum_size() {
        let mut out = Vec::new();
        encode_record(&msg(b"", 0), &mut out);
        assert_eq!(out.len(), LEN_PREFIX + MIN_MSG_SIZE);
        assert!(matches!(
            next_record(&Bytes::from(out), 0),
            Ok(Parsed::Record(..))
        ));
    }

    #[test]
    fn lengths_outside_bounds_fail_before_reading_body() {
        let huge = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(
            next_record(&huge, 1024),
            Err(RecordError::BadLength(i32::MAX as i64))
        );
        let negative = Bytes::from_static(&[0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(
            next_record(&negative, 1024),
            Err(RecordError::BadLength(-2))
        );
        let small = Bytes::from_static(&[0, 0, 0, 25]);
        assert_eq!(next_record(&small, 1024), Err(RecordError::BadLength(25)));
        assert_eq!(check_len(1024 + 26, 1024), Ok(1050));
        assert_eq!(
            check_len(1024 + 27, 1024),
            Err(RecordError::BadLength(1051))
        );
    }

    #[test]
    fn partial_record_is_incomplete() {
        let mut out = Vec::new();
        encode_record(&msg(b"abc", 0), &mut out);
        let buf = Bytes::from(out);
        assert_eq!(next_record(&buf.slice(..2), 100), Ok(Parsed::Incomplete));
        assert_eq!(
            next_record(&buf.slice(..buf.len() - 1), 100),
            Ok(Parsed::Incomplete)
        );
    }

    #[test]
    fn short_payload_is_rejected() {
        assert_eq!(
            decode_message(&Bytes::from_static(b"short")),
            Err(RecordError::TooShort(5))
        );
    }

    #[test]
    fn walk_counts_whole_records_and_stops_where_the_reader_would() {
        let mut buf = Vec::new();
        encode_record(&msg(b"one", 0), &mut buf);
        encode_record(&msg(b"two!", 1), &mut buf);
        let two = buf.len();
        let whole = walk_records(&buf, 100);
        assert_eq!((whole.records, whole.used), (2, two));
        assert_eq!(whole.stop, WalkStop::End { needs: None });
        // A torn third record: counted up to it, and its size is known.
        encode_record(&msg(b"three", 0), &mut buf);
        let torn = walk_records(&buf[..buf.len() - 1], 100);
        assert_eq!((torn.records, torn.used), (2, two));
        assert_eq!(
            torn.stop,
            WalkStop::End {
                needs: Some(buf.len() - two)
            }
        );
        // Half a prefix: nothing more to say.
        let half = walk_records(&buf[..two + 2], 100);
        assert_eq!(
            (half.records, half.stop),
            (2, WalkStop::End { needs: None })
        );
        // A length over the limit (or under the header size) stops the walk.
        buf.truncate(two);
        buf.extend_from_slice(&1_000_000i32.to_be_bytes());
        let bad = walk_records(&buf, 100);
        assert_eq!(
            (bad.records, bad.used, bad.stop),
            (2, two, WalkStop::BadLength)
        );
    }
}
