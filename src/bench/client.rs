//! The client half of protocol V2 that the load generator speaks: commands appended to a write
//! buffer, frames parsed from a read buffer, and a connection that does both on io_uring.
//!
//! This is deliberately separate from the broker's `protocol::codec`: a load generator that
//! shared the server's parser could not catch the server's parsing mistakes. Only the frame type
//! constants are shared, because they are the wire format itself.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};

use bytes::{BufMut, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use super::read_buf::ReadBuf;
use crate::protocol::frame::{FRAME_TYPE_ERROR, FRAME_TYPE_MESSAGE, FRAME_TYPE_RESPONSE};

/// The protocol magic a V2 client sends first.
pub const MAGIC_V2: &[u8; 4] = b"  V2";
/// A frame's header: size (4) and type (4).
const FRAME_HEADER: usize = 8;
/// A message frame's fixed part after the header: timestamp (8), attempts (2), ID (16).
const MESSAGE_HEADER: usize = 26;
/// The largest frame the generator accepts (nsqd's default max message size plus headers, with
/// room to spare): anything bigger means the stream is out of step.
pub const MAX_FRAME: usize = 16 << 20;

/// Appends `PUB <topic>\n<size><body>`.
pub fn put_pub(out: &mut BytesMut, topic: &str, body: &[u8]) {
    out.reserve(topic.len() + 9 + body.len());
    out.put_slice(b"PUB ");
    out.put_slice(topic.as_bytes());
    out.put_u8(b'\n');
    out.put_u32(body.len() as u32);
    out.put_slice(body);
}

/// Appends `MPUB <topic>\n<size><count>` and then each body with its length; `fill(i, body)`
/// writes message `i`'s bytes into a `size`-byte slot, so bodies are built in place.
pub fn put_mpub(
    out: &mut BytesMut,
    topic: &str,
    count: usize,
    size: usize,
    mut fill: impl FnMut(usize, &mut [u8]),
) {
    let body_len = 4 + count * (4 + size);
    out.reserve(topic.len() + 10 + body_len);
    out.put_slice(b"MPUB ");
    out.put_slice(topic.as_bytes());
    out.put_u8(b'\n');
    out.put_u32(body_len as u32);
    out.put_u32(count as u32);
    for i in 0..count {
        out.put_u32(size as u32);
        let start = out.len();
        out.put_bytes(0, size);
        fill(i, &mut out[start..]);
    }
}

/// Appends `SUB <topic> <channel>\n`.
pub fn put_sub(out: &mut BytesMut, topic: &str, channel: &str) {
    out.put_slice(format!("SUB {topic} {channel}\n").as_bytes());
}

/// Appends `RDY <count>\n`.
pub fn put_rdy(out: &mut BytesMut, count: u64) {
    out.put_slice(format!("RDY {count}\n").as_bytes());
}

/// Appends `FIN <id>\n` (called once per message, so no formatting).
pub fn put_fin(out: &mut BytesMut, id: &[u8; 16]) {
    out.reserve(21);
    out.put_slice(b"FIN ");
    out.put_slice(id);
    out.put_u8(b'\n');
}

/// Appends `NOP\n` (the answer to a heartbeat).
pub fn put_nop(out: &mut BytesMut) {
    out.put_slice(b"NOP\n");
}

/// Appends `IDENTIFY\n<size><json>`.
pub fn put_identify(out: &mut BytesMut, json: &str) {
    out.put_slice(b"IDENTIFY\n");
    out.put_u32(json.len() as u32);
    out.put_slice(json.as_bytes());
}

/// One frame from the broker, borrowing the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `OK`, `_heartbeat_`, `CLOSE_WAIT`, or an IDENTIFY reply.
    Response(&'a [u8]),
    /// `E_CODE text`.
    Error(&'a [u8]),
    /// A delivered message.
    Message {
        /// Broker timestamp (Unix ns).
        timestamp: i64,
        /// Delivery attempts.
        attempts: u16,
        /// The 16-byte ID to FIN.
        id: &'a [u8; 16],
        /// The payload.
        body: &'a [u8],
    },
}

/// Why the frame stream cannot be read any further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A size below the type field or above [`MAX_FRAME`].
    BadSize(i64),
    /// A type other than response, error or message.
    BadType(i32),
    /// A message frame too short for its fixed fields.
    ShortMessage(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadSize(n) => write!(f, "bad frame size {n}"),
            FrameError::BadType(t) => write!(f, "unknown frame type {t}"),
            FrameError::ShortMessage(n) => write!(f, "message frame of {n} bytes is too short"),
        }
    }
}

/// Parses the frame at the front of `buf`: `Ok(None)` until it is complete, else the frame and
/// the bytes it took.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 4 || size as usize > MAX_FRAME {
        return Err(FrameError::BadSize(i64::from(size)));
    }
    let total = 4 + size as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let kind = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let data = &buf[FRAME_HEADER..total];
    let frame = match kind {
        FRAME_TYPE_RESPONSE => Frame::Response(data),
        FRAME_TYPE_ERROR => Frame::Error(data),
        FRAME_TYPE_MESSAGE => {
            if data.len() < MESSAGE_HEADER {
                return Err(FrameError::ShortMessage(data.len()));
            }
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&data[..8]);
            let id: &[u8; 16] = data[10..26]
                .try_into()
                .map_err(|_| FrameError::ShortMessage(data.len()))?;
            Frame::Message {
                timestamp: i64::from_be_bytes(ts),
                attempts: u16::from_be_bytes([data[8], data[9]]),
                id,
                body: &data[MESSAGE_HEADER..],
            }
        }
        other => return Err(FrameError::BadType(other)),
    };
    Ok(Some((frame, total)))
}

/// A V2 connection: a socket plus its read and write buffers.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    pub rbuf: ReadBuf,
    /// Commands appended and not yet written.
    pub wbuf: BytesMut,
}

impl Conn {
    /// Connects, disables Nagle, and sends the V2 magic.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let mut conn = Conn::connect_plain(addr).await?;
        conn.wbuf.put_slice(MAGIC_V2);
        conn.flush().await?;
        Ok(conn)
    }

    /// Connects and disables Nagle, sending nothing (the raw baseline speaks no NSQ).
    pub async fn connect_plain(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            rbuf: ReadBuf::new(),
            wbuf: BytesMut::new(),
        })
    }

    /// Writes everything in the write buffer.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Reads what the socket has onto the read buffer; `Ok(0)` is end of stream.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        self.rbuf.read_from(&mut self.stream).await
    }

    /// Reads until one response or error frame arrives (answering heartbeats), and returns
    /// `Ok(())` for `OK` or the error frame's text.
    pub async fn expect_ok(&mut self) -> std::io::Result<()> {
        loop {
            if let Some(result) = self.take_response()? {
                return result;
            }
            if self.fill().await? == 0 {
                return Err(closed());
            }
        }
    }

    /// Consumes one buffered response frame, if a complete one is at the front. Heartbeats are
    /// answered and skipped; message frames are an error here (a publisher receives none).
    fn take_response(&mut self) -> std::io::Result<Option<std::io::Result<()>>> {
        loop {
            let Some((frame, used)) = parse_frame(&self.rbuf).map_err(invalid)? else {
                return Ok(None);
            };
            let result = match frame {
                Frame::Response(b"_heartbeat_") => None,
                Frame::Response(_) => Some(Ok(())),
                Frame::Error(text) => Some(Err(broker_error(text))),
                Frame::Message { .. } => Some(Err(invalid("message frame on a publisher"))),
            };
            self.rbuf.advance(used);
            match result {
                Some(r) => return Ok(Some(r)),
                None => put_nop(&mut self.wbuf),
            }
        }
    }

    /// Counts the complete responses buffered (consuming them), answering heartbeats; an error
    /// frame fails.
    pub fn take_responses(&mut self) -> std::io::Result<usize> {
        let mut n = 0;
        while let Some(result) = self.take_response()? {
            result?;
            n += 1;
        }
        Ok(n)
    }

    /// A second handle on the socket (its own descriptor), so one task can write on schedule
    /// while another reads.
    pub fn split_writer(&self) -> std::io::Result<TcpStream> {
        let fd = nix::unistd::dup(self.stream.as_raw_fd()).map_err(std::io::Error::from)?;
        // SAFETY: `fd` was just returned by dup(2), so it is open and owned by nothing else;
        // the new stream takes sole ownership and closes it on drop.
        Ok(unsafe { TcpStream::from_raw_fd(fd) })
    }
}

/// The error for a connection the broker closed.
pub fn closed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "broker closed the connection",
    )
}

/// An error for a stream that makes no sense.
pub fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// An error frame from the broker, as an IO error carrying its text.
pub fn broker_error(text: &[u8]) -> std::io::Error {
    std::io::Error::other(format!("broker: {}", String::from_utf8_lossy(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pub_and_mpub_bytes_match_the_spec() {
        let mut b = BytesMut::new();
        put_pub(&mut b, "t", b"hi");
        assert_eq!(&b[..], b"PUB t\n\0\0\0\x02hi");
        let mut m = BytesMut::new();
        put_mpub(&mut m, "t", 2, 3, |i, body| body.fill(b'a' + i as u8));
        let mut want = b"MPUB t\n".to_vec();
        want.extend_from_slice(&(4u32 + 2 * 7).to_be_bytes());
        want.extend_from_slice(&2u32.to_be_bytes());
        for c in [b'a', b'b'] {
            want.extend_from_slice(&3u32.to_be_bytes());
            want.extend_from_slice(&[c; 3]);
        }
        assert_eq!(&m[..], &want[..]);
    }

    #[test]
    fn fin_rdy_sub_lines() {
        let mut b = BytesMut::new();
        put_sub(&mut b, "t", "c");
        put_rdy(&mut b, 7);
        put_fin(&mut b, b"0123456789abcdef");
        assert_eq!(&b[..], b"SUB t c\nRDY 7\nFIN 0123456789abcdef\n");
    }

    #[test]
    fn parses_frames_and_waits_for_partial_ones() {
        let mut b = BytesMut::new();
        crate::protocol::frame::put_response(&mut b, b"OK");
        crate::protocol::frame::put_message(&mut b, 5, 1, b"0123456789abcdef", b"xyz");
        let (f, used) = parse_frame(&b).unwrap().unwrap();
        assert_eq!(f, Frame::Response(b"OK"));
        let rest = &b[used..];
        assert_eq!(parse_frame(&rest[..rest.len() - 1]), Ok(None));
        match parse_frame(rest).unwrap().unwrap().0 {
            Frame::Message {
                timestamp,
                attempts,
                id,
                body,
            } => {
                assert_eq!((timestamp, attempts, body), (5, 1, &b"xyz"[..]));
                assert_eq!(id, b"0123456789abcdef");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_sizes_and_types_without_reading_on() {
        assert_eq!(
            parse_frame(&[0, 0, 0, 1, 0, 0, 0, 0]),
            Err(FrameError::BadSize(1))
        );
        assert_eq!(
            parse_frame(&[0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::BadSize(-1))
        );
        assert_eq!(
            parse_frame(&[0, 0, 0, 4, 0, 0, 0, 9]),
            Err(FrameError::BadType(9))
        );
        assert_eq!(
            parse_frame(&[0, 0, 0, 6, 0, 0, 0, 2, 1, 2]),
            Err(FrameError::ShortMessage(2))
        );
    }
}
