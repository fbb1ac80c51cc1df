//! The layers a connection can negotiate under protocol V2, in nsqd's order: TLS, then one of
//! snappy (framing format) or deflate (raw DEFLATE, sync-flushed). Sans-IO: the reader feeds
//! socket bytes in and gets plaintext out; the writer hands plaintext in and gets wire bytes.
//!
//! Compression is bounded: inbound data is decompressed at most [`MAX_PLAINTEXT_STEP`] bytes at
//! a time, so a small compressed bomb cannot allocate more than the decoder consumes.

use std::cell::RefCell;
use std::io::{self, Read, Write};

use bytes::{Buf, BytesMut};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress};
use rustls::ServerConnection;

/// Most plaintext produced by one decompression step.
pub const MAX_PLAINTEXT_STEP: usize = 256 * 1024;
/// Largest snappy chunk accepted (the format's limit is 64 KiB of data plus a checksum).
const MAX_SNAPPY_CHUNK: usize = 4 + 4 + 65536 + 65536 / 6 + 32;

/// A compression layer chosen by IDENTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Snappy framing format.
    Snappy,
    /// Raw DEFLATE at this level (1..=9).
    Deflate(u32),
}

/// Outbound compression state.
enum Compressor {
    /// The encoder and the most plaintext one snappy chunk carries.
    Snappy(Box<snap::write::FrameEncoder<Vec<u8>>>, usize),
    Deflate(Compress),
}

/// The layers shared by a connection's reader and writer (both on the same core).
#[derive(Default)]
pub struct Transport {
    tls: RefCell<Option<ServerConnection>>,
    compressor: RefCell<Option<Compressor>>,
    scratch: RefCell<Vec<u8>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &self.has_tls())
            .finish()
    }
}

impl Transport {
    /// Whether bytes go to the socket unchanged.
    pub fn is_plain(&self) -> bool {
        self.tls.borrow().is_none() && self.compressor.borrow().is_none()
    }

    /// Whether TLS is active.
    pub fn has_tls(&self) -> bool {
        self.tls.borrow().is_some()
    }

    /// Starts TLS (server side); the handshake proceeds as bytes are fed and drained.
    pub fn start_tls(&self, conn: ServerConnection) {
        *self.tls.borrow_mut() = Some(conn);
    }

    /// Starts compressing outbound data. `output_buffer_size` is the client's: nsqd's snappy
    /// writer sits under a buffer of that size, so no chunk carries more than it (pynsq's
    /// snappy reader, for one, stalls on chunks larger than its 64 KiB reads). An unbuffered
    /// client (size 1) gets nsqd's default buffer's chunks.
    pub fn start_compression(&self, kind: Compression, output_buffer_size: usize) {
        let max_chunk = match output_buffer_size {
            n @ 64..=65536 => n,
            _ => 16384,
        };
        let c = match kind {
            Compression::Snappy => Compressor::Snappy(
                Box::new(snap::write::FrameEncoder::new(Vec::new())),
                max_chunk,
            ),
            Compression::Deflate(level) => {
                Compressor::Deflate(Compress::new(flate2::Compression::new(level), false))
            }
        };
        *self.compressor.borrow_mut() = Some(c);
    }

    /// Which compression is on, as `(snappy, deflate)` (for `/stats`).
    pub fn compression_flags(&self) -> (bool, bool) {
        match self.compressor.borrow().as_ref() {
            Some(Compressor::Snappy(..)) => (true, false),
            Some(Compressor::Deflate(_)) => (false, true),
            None => (false, false),
        }
    }

    /// Whether TLS has records (handshake or data) waiting to be written.
    pub fn tls_wants_write(&self) -> bool {
        self.tls.borrow().as_ref().is_some_and(|t| t.wants_write())
    }

    /// The client certificate's subject common name, "" without one (for the auth server).
    pub fn peer_common_name(&self) -> String {
        let tls = self.tls.borrow();
        tls.as_ref()
            .and_then(|t| t.peer_certificates()?.first().cloned())
            .and_then(|cert| crate::tls::common_name(&cert))
            .unwrap_or_default()
    }

    /// TLS details for stats: (protocol version, cipher suite).
    pub fn tls_details(&self) -> Option<(String, String)> {
        let tls = self.tls.borrow();
        let t = tls.as_ref()?;
        let version = match t.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_2 => "TLS1.2".to_string(),
            rustls::ProtocolVersion::TLSv1_3 => "TLS1.3".to_string(),
            other => format!("{other:?}"),
        };
        let suite = t
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        Some((version, suite))
    }

    /// Turns plaintext into wire bytes appended to `wire` (compress, then encrypt). Also
    /// drains pending TLS records when `plain` is empty.
    pub fn encode(&self, plain: &[u8], wire: &mut Vec<u8>) -> io::Result<()> {
        let mut scratch = self.scratch.borrow_mut();
        scratch.clear();
        let data: &[u8] = match self.compressor.borrow_mut().as_mut() {
            None => plain,
            Some(_) if plain.is_empty() => plain,
            Some(Compressor::Snappy(enc, max_chunk)) => {
                for piece in plain.chunks(*max_chunk) {
                    enc.write_all(piece)?;
                    enc.flush()?;
                }
                std::mem::swap(enc.get_mut(), &mut *scratch);
                &scratch[..]
            }
            Some(Compressor::Deflate(c)) => {
                deflate_sync(c, plain, &mut scratch)?;
                &scratch[..]
            }
        };
        match self.tls.borrow_mut().as_mut() {
            None => wire.extend_from_slice(data),
            Some(tls) => encrypt(tls, data, wire)?,
        }
        Ok(())
    }
}

/// Encrypts `data` into TLS records appended to `wire`. rustls takes at most its buffer limit
/// (64 KiB) of records at a time, so the records are drained between pieces: a consumer's
/// output after a burst of deliveries is often larger.
fn encrypt(tls: &mut ServerConnection, mut data: &[u8], wire: &mut Vec<u8>) -> io::Result<()> {
    loop {
        while tls.wants_write() {
            tls.write_tls(wire)?;
        }
        if data.is_empty() {
            return Ok(());
        }
        match tls.writer().write(data)? {
            0 if !tls.wants_write() => return Err(io::ErrorKind::WriteZero.into()),
            n => data = &data[n..],
        }
    }
}

/// Compresses `input` with a sync flush so the peer can decode everything sent so far.
fn deflate_sync(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut consumed = 0;
    loop {
        out.reserve(input.len() / 2 + 1024);
        let before = c.total_in();
        c.compress_vec(&input[consumed..], out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        consumed += (c.total_in() - before) as usize;
        if consumed == input.len() && out.len() < out.capacity() {
            return Ok(());
        }
    }
}

/// Complete snappy chunks handed to the frame decoder; empty reads mean "no more for now".
#[derive(Default)]
struct ChunkFeed {
    data: BytesMut,
}

impl Read for ChunkFeed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data.advance(n);
        Ok(n)
    }
}

enum Decompressor {
    Snappy(Box<snap::read::FrameDecoder<ChunkFeed>>),
    Deflate(Decompress),
}

/// The reader's side of the layers: raw socket bytes in, plaintext out.
#[derive(Default)]
pub struct Inbound {
    /// Bytes after TLS, before decompression.
    pending: BytesMut,
    decompressor: Option<Decompressor>,
    /// The inflater filled all the room it was given last time, so it may hold more output
    /// even with no input left (a highly compressible body expands far beyond its input).
    inflater_full: bool,
}

/// A layer rejected the peer's bytes; the connection must close.
#[derive(Debug)]
pub struct TransportError(pub String);

impl Inbound {
    /// Starts decompressing inbound data (after the `OK` that follows IDENTIFY).
    pub fn start_decompression(&mut self, kind: Compression) {
        self.decompressor = Some(match kind {
            Compression::Snappy => Decompressor::Snappy(Box::new(snap::read::FrameDecoder::new(
                ChunkFeed::default(),
            ))),
            Compression::Deflate(_) => Decompressor::Deflate(Decompress::new(false)),
        });
    }

    /// Whether a decompression layer is active.
    pub fn is_active(&self) -> bool {
        self.decompressor.is_some()
    }

    /// Adds bytes that already passed TLS (read before compression was switched on).
    pub fn push_decrypted(
        &mut self,
        bytes: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        self.pending.extend_from_slice(bytes);
        self.step(out)
    }

    /// Whether compressed input is waiting to be turned into plaintext.
    pub fn has_pending(&self) -> bool {
        self.decompressor.is_some() && (!self.pending.is_empty() || self.inflater_full)
    }

    /// Feeds raw socket bytes (decrypting through `transport`'s TLS if active) and appends up to
    /// [`MAX_PLAINTEXT_STEP`] bytes of plaintext to `out`.
    pub fn feed(
        &mut self,
        transport: &Transport,
        raw: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        match transport.tls.borrow_mut().as_mut() {
            None => self.pending.extend_from_slice(raw),
            Some(tls) => {
                // rustls holds a bounded amount of decrypted data: take it out after every
                // record batch, or a large read fails with "received plaintext buffer full".
                let mut rest = raw;
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    if !rest.is_empty() {
                        tls.read_tls(&mut rest)
                            .map_err(|e| TransportError(format!("TLS read: {e}")))?;
                        tls.process_new_packets()
                            .map_err(|e| TransportError(format!("TLS: {e}")))?;
                    }
                    loop {
                        match tls.reader().read(&mut chunk) {
                            Ok(0) => break,
                            Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(TransportError(format!("TLS: {e}"))),
                        }
                    }
                    if rest.is_empty() {
                        break;
                    }
                }
            }
        }
        self.step(out)
    }

    /// Moves pending bytes to `out`, decompressing at most one bounded step.
    pub fn step(&mut self, out: &mut BytesMut) -> Result<(), TransportError> {
        match &mut self.decompressor {
            None => {
                out.extend_from_slice(&self.pending);
                self.pending.clear();
                Ok(())
            }
            Some(Decompressor::Deflate(d)) => {
                let mut produced = Vec::with_capacity(64 * 1024);
                // Bounded per step, not by what `out` already holds: a command larger than a
                // step is completed over several.
                while (!self.pending.is_empty() || self.inflater_full)
                    && produced.len() < MAX_PLAINTEXT_STEP
                {
                    produced.reserve(64 * 1024);
                    let room = produced.capacity() - produced.len();
                    let (in_before, out_before) = (d.total_in(), d.total_out());
                    d.decompress_vec(&self.pending, &mut produced, FlushDecompress::None)
                        .map_err(|e| TransportError(format!("deflate: {e}")))?;
                    let made = (d.total_out() - out_before) as usize;
                    self.pending.advance((d.total_in() - in_before) as usize);
                    self.inflater_full = made == room;
                    if d.total_in() == in_before && made == 0 {
                        break;
                    }
                }
                out.extend_from_slice(&produced);
                Ok(())
            }
            Some(Decompressor::Snappy(dec)) => {
                // Hand over only whole chunks, so the decoder never sees a partial one.
                loop {
                    if self.pending.len() < 4 {
                        break;
                    }
                    let len = 4
                        + (self.pending[1] as usize
                            | (self.pending[2] as usize) << 8
                            | (self.pending[3] as usize) << 16);
                    if len > MAX_SNAPPY_CHUNK {
                        return Err(TransportError(format!("snappy: chunk of {len} bytes")));
                    }
                    if self.pending.len() < len {
                        break;
                    }
                    let chunk = self.pending.split_to(len);
                    dec.get_mut().data.extend_from_slice(&chunk);
                    if dec.get_ref().data.len() > MAX_PLAINTEXT_STEP {
                        break;
                    }
                }
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match dec.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                        Err(e) => return Err(TransportError(format!("snappy: {e}"))),
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(kind: Compression, payloads: &[&[u8]]) {
        let tx = Transport::default();
        tx.start_compression(kind, 16384);
        let mut inbound = Inbound::default();
        inbound.start_decompression(kind);
        let plain = Transport::default();
        let mut got = BytesMut::new();
        for p in payloads {
            let mut wire = Vec::new();
            tx.encode(p, &mut wire).unwrap();
            // Feed in awkward pieces: one byte, then the rest.
            let (a, b) = wire.split_at(1.min(wire.len()));
            inbound.feed(&plain, a, &mut got).unwrap();
            inbound.feed(&plain, b, &mut got).unwrap();
            while inbound.has_pending() {
                let before = got.len();
                inbound.step(&mut got).unwrap();
                if got.len() == before {
                    break;
                }
            }
        }
        let want: Vec<u8> = payloads.concat();
        assert_eq!(&got[..], &want[..]);
    }

    #[test]
    fn snappy_round_trips_across_flushes() {
        round_trip(Compression::Snappy, &[b"hello", &[7u8; 200_000], b"x"]);
    }

    #[test]
    fn deflate_round_trips_across_flushes() {
        round_trip(Compression::Deflate(6), &[b"hello", &[7u8; 200_000], b"x"]);
    }

    /// A body that compresses to a few hundred bytes leaves its inflated output in the
    /// inflater once the input is used up: it must still come out, with nothing more read.
    #[test]
    fn deflate_output_larger_than_a_step_comes_out_without_more_input() {
        for level in [1, 6, 9] {
            let tx = Transport::default();
            tx.start_compression(Compression::Deflate(level), 16384);
            let mut wire = Vec::new();
            let body = vec![b' '; 300_000];
            tx.encode(&body, &mut wire).unwrap();
            let plain = Transport::default();
            let mut inbound = Inbound::default();
            inbound.start_decompression(Compression::Deflate(level));
            let mut got = BytesMut::new();
            inbound.feed(&plain, &wire, &mut got).unwrap();
            for _ in 0..10 {
                if !inbound.has_pending() {
                    break;
                }
                let before = got.len();
                inbound.step(&mut got).unwrap();
                // A step that found nothing more (the last one filled its room exactly)
                // must say so, or the reader would spin instead of reading the socket.
                assert!(got.len() > before || !inbound.has_pending());
            }
            assert_eq!(got.len(), body.len(), "level {level}");
        }
    }

    /// A TLS server connection and the client talking to it, handshake done.
    fn tls_pair() -> (ServerConnection, rustls::ClientConnection) {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = CertificateDer::from(key.cert.der().to_vec());
        let private = PrivateKeyDer::try_from(key.key_pair.serialize_der()).unwrap();
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], private)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut server = ServerConnection::new(std::sync::Arc::new(server_cfg)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client =
            rustls::ClientConnection::new(std::sync::Arc::new(client_cfg), name).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets().unwrap();
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut &buf[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        (server, client)
    }

    /// rustls buffers at most 64 KiB of records; a consumer's output after a burst of
    /// deliveries is larger and must go out whole.
    #[test]
    fn tls_encodes_more_than_rustls_buffers_at_once() {
        let (server, mut client) = tls_pair();
        let tx = Transport::default();
        tx.start_tls(server);
        let plain: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        tx.encode(&plain, &mut wire).unwrap();
        let mut rest = &wire[..];
        let mut got = Vec::new();
        while !rest.is_empty() {
            client.read_tls(&mut rest).unwrap();
            client.process_new_packets().unwrap();
            let _ = client.reader().read_to_end(&mut got);
        }
        assert_eq!(got.len(), plain.len());
        assert!(got == plain);
    }

    /// nsqd's snappy writer sits under the client's output buffer: no chunk carries more
    /// than `output_buffer_size` bytes of plaintext.
    #[test]
    fn snappy_chunks_are_no_larger_than_the_output_buffer() {
        for size in [4096, 16384] {
            let tx = Transport::default();
            tx.start_compression(Compression::Snappy, size);
            let plain: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
            let mut wire = Vec::new();
            tx.encode(&plain, &mut wire).unwrap();
            let mut rest = &wire[..];
            let mut chunks = 0;
            while rest.len() >= 4 {
                let len = rest[1] as usize | (rest[2] as usize) << 8 | (rest[3] as usize) << 16;
                if rest[0] != 0xff {
                    // Compressed or uncompressed data: a 4-byte checksum, then the data.
                    assert!(len <= size + 4, "chunk of {len} with buffer {size}");
                    chunks += 1;
                }
                rest = &rest[4 + len..];
            }
            assert!(rest.is_empty());
            assert!(chunks >= plain.len() / size, "{chunks} chunks");
        }
    }

    #[test]
    fn snappy_stream_starts_with_identifier() {
        let tx = Transport::default();
        tx.start_compression(Compression::Snappy, 16384);
        let mut wire = Vec::new();
        tx.encode(b"\x00\x00\x00\x06\x00\x00\x00\x00OK", &mut wire)
            .unwrap();
        assert_eq!(&wire[..10], b"\xff\x06\x00\x00sNaPpY");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let plain = Transport::default();
        let mut inbound = Inbound::default();
        inbound.start_decompression(Compression::Snappy);
        let mut out = BytesMut::new();
        assert!(
            inbound
                .feed(&plain, b"\x00\xff\xff\xffjunk", &mut out)
                .is_err()
        );
        let mut inbound = Inbound::default();
        inbound.start_decompression(Compression::Deflate(6));
        assert!(inbound.feed(&plain, &[0xff; 64], &mut out).is_err());
    }

    #[test]
    fn deflate_bomb_is_decompressed_in_bounded_steps() {
        let tx = Transport::default();
        tx.start_compression(Compression::Deflate(9), 16384);
        let mut wire = Vec::new();
        tx.encode(&vec![0u8; 8 << 20], &mut wire).unwrap();
        assert!(wire.len() < 64 * 1024);
        let plain = Transport::default();
        let mut inbound = Inbound::default();
        inbound.start_decompression(Compression::Deflate(9));
        let mut out = BytesMut::new();
        inbound.feed(&plain, &wire, &mut out).unwrap();
        assert!(
            out.len() <= MAX_PLAINTEXT_STEP + 128 * 1024,
            "{}",
            out.len()
        );
        assert!(inbound.has_pending());
    }
}
