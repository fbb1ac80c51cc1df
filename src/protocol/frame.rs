//! Frames nsqd sends: `[int32 size][int32 type][data]`, size = 4 + len(data).

use bytes::{BufMut, BytesMut};

/// Response frame type (`OK`, `CLOSE_WAIT`, `_heartbeat_`, JSON replies).
pub const FRAME_TYPE_RESPONSE: i32 = 0;
/// Error frame type (`E_CODE text`).
pub const FRAME_TYPE_ERROR: i32 = 1;
/// Message frame type (timestamp, attempts, id, body).
pub const FRAME_TYPE_MESSAGE: i32 = 2;

/// The response to a successful command.
pub const OK: &[u8] = b"OK";
/// The response to CLS.
pub const CLOSE_WAIT: &[u8] = b"CLOSE_WAIT";
/// The heartbeat nsqd sends to every connection.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";

/// Appends one frame of the given type.
pub fn put_frame(out: &mut BytesMut, frame_type: i32, data: &[u8]) {
    out.reserve(8 + data.len());
    out.put_i32(4 + data.len() as i32);
    out.put_i32(frame_type);
    out.put_slice(data);
}

/// Appends a response frame.
pub fn put_response(out: &mut BytesMut, data: &[u8]) {
    put_frame(out, FRAME_TYPE_RESPONSE, data);
}

/// Appends an error frame.
pub fn put_error(out: &mut BytesMut, data: &[u8]) {
    put_frame(out, FRAME_TYPE_ERROR, data);
}

/// Appends a message frame from its parts, without building the payload separately.
pub fn put_message(out: &mut BytesMut, timestamp: i64, attempts: u16, id: &[u8; 16], body: &[u8]) {
    out.reserve(MESSAGE_HEADER_LEN + body.len());
    put_message_header(out, timestamp, attempts, id, body.len());
    out.put_slice(body);
}

/// Bytes of a message frame before its body.
pub const MESSAGE_HEADER_LEN: usize = 4 + 4 + 8 + 2 + 16;

/// Appends everything of a message frame but its body, which the caller sends right after.
pub fn put_message_header(
    out: &mut BytesMut,
    timestamp: i64,
    attempts: u16,
    id: &[u8; 16],
    body_len: usize,
) {
    let payload = 8 + 2 + 16 + body_len;
    out.reserve(MESSAGE_HEADER_LEN);
    out.put_i32(4 + payload as i32);
    out.put_i32(FRAME_TYPE_MESSAGE);
    out.put_i64(timestamp);
    out.put_u16(attempts);
    out.put_slice(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_frame_matches_nsqd_bytes() {
        let mut b = BytesMut::new();
        put_response(&mut b, OK);
        assert_eq!(&b[..], &[0, 0, 0, 6, 0, 0, 0, 0, b'O', b'K']);
    }

    #[test]
    fn bad_protocol_frame_is_size_18() {
        let mut b = BytesMut::new();
        put_error(&mut b, b"E_BAD_PROTOCOL");
        assert_eq!(&b[..8], &[0, 0, 0, 18, 0, 0, 0, 1]);
    }

    #[test]
    fn message_frame_layout() {
        let mut b = BytesMut::new();
        put_message(&mut b, 0x0102030405060708, 3, b"0123456789abcdef", b"hi");
        assert_eq!(&b[0..4], &(4 + 28i32).to_be_bytes());
        assert_eq!(&b[4..8], &2i32.to_be_bytes());
        assert_eq!(&b[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[16..18], &[0, 3]);
        assert_eq!(&b[18..34], b"0123456789abcdef");
        assert_eq!(&b[34..], b"hi");
    }
}
