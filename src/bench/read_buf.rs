//! A read buffer that is never zeroed on the hot path: its memory is initialised once, reads
//! land after the unparsed bytes, and parsed bytes are dropped by moving an offset. Zeroing a
//! fresh 256 KiB region before every read (what `BytesMut::resize` does) cost more than the read.

use std::ops::Deref;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

/// Bytes asked of the socket per read, at least.
pub const READ_CHUNK: usize = 256 * 1024;

/// Unparsed bytes `data[start..end]` in an always-initialised buffer.
#[derive(Debug)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf::new()
    }
}

impl ReadBuf {
    /// An empty buffer; its memory is allocated by the first read, so idle connections stay
    /// small.
    pub fn new() -> ReadBuf {
        ReadBuf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Drops `n` parsed bytes from the front.
    pub fn advance(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for at least [`READ_CHUNK`] more bytes after the unparsed ones: moves them to the
    /// front, or grows (only when one frame is larger than the buffer).
    fn spare(&mut self) -> &mut [u8] {
        if self.data.len() - self.end < READ_CHUNK {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.data.len() - self.end < READ_CHUNK {
                self.data.resize(self.end + READ_CHUNK, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Reads what the socket has onto the end; `Ok(0)` is end of stream.
    pub async fn read_from(&mut self, stream: &mut TcpStream) -> std::io::Result<usize> {
        let n = stream.read(self.spare()).await?;
        self.end += n;
        Ok(n)
    }

    /// Appends bytes as if read (tests, and callers that already hold bytes).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            self.end += n;
            rest = &rest[n..];
        }
    }
}

impl Deref for ReadBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unparsed_bytes_across_compaction_and_growth() {
        let mut b = ReadBuf::new();
        b.extend_from_slice(b"hello");
        b.advance(2);
        assert_eq!(&b[..], b"llo");
        // Fill past the end: the unparsed bytes move to the front, then the buffer grows.
        let big = vec![7u8; READ_CHUNK * 2];
        b.extend_from_slice(&big);
        assert_eq!(b.len(), 3 + big.len());
        assert_eq!(&b[..3], b"llo");
        b.advance(3 + big.len());
        assert!(b.is_empty());
        b.advance(10);
        assert!(b.is_empty());
    }
}
