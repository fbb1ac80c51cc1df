//! The raw baseline: the same frame sizes over the same kind of glommio sockets, with no broker
//! logic at all. A server executor echoes every `[u32 len][body]` frame back (the ceiling for
//! pubsub, where every byte crosses loopback twice) or answers each batch with a 10-byte frame
//! (the ceiling for pub, like MPUB and its OK). Whatever a broker reaches is compared with this.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

use super::stamp;
use super::stamp_of;
use crate::bench::args::RawReply;
use crate::bench::client::{self, Conn};
use crate::bench::histogram::Latencies;
use crate::bench::read_buf::ReadBuf;
use crate::bench::run::{POLL, Shared};
use crate::bench::schedule::Schedule;
use crate::protocol::frame;
use crate::wakeup::Wakeup;

/// Raw frames: a 4-byte length, then the body.
const LEN: usize = 4;

/// Appends `count` frames of `size` bytes, each stamped with `t_ns`.
pub fn put_frames(out: &mut BytesMut, count: usize, size: usize, t_ns: u64) {
    out.reserve(count * (LEN + size));
    for _ in 0..count {
        out.put_u32(size as u32);
        let at = out.len();
        out.put_bytes(0, size);
        stamp(&mut out[at..], t_ns);
    }
}

/// The length of the complete frames at the front of `buf`, and how many there are; `None` if a
/// length is absurd.
pub fn complete_frames(buf: &[u8]) -> Option<(usize, usize)> {
    let (mut at, mut n) = (0usize, 0usize);
    while buf.len() - at >= LEN {
        let len = u32::from_be_bytes(buf[at..at + LEN].try_into().ok()?) as usize;
        if len > client::MAX_FRAME {
            return None;
        }
        if buf.len() - at - LEN < len {
            break;
        }
        at += LEN + len;
        n += 1;
    }
    Some((at, n))
}

/// Binds an echo listener at `addr` (shared by every executor through SO_REUSEPORT) and serves
/// it until the run stops.
pub async fn serve(shared: &Shared, addr: SocketAddr, bound: std::sync::mpsc::Sender<SocketAddr>) {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            shared.error(format!("raw: bind: {e}"));
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        let _ = bound.send(addr);
    }
    let reply = shared.args.raw_reply;
    let batch = shared.args.batch.max(1);
    let accept = async {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    glommio::spawn_local(async move {
                        let _ = serve_conn(stream, reply, batch).await;
                    })
                    .detach();
                }
                Err(_) => glommio::timer::sleep(POLL).await,
            }
        }
    };
    let stopped = async {
        while !shared.stopped() {
            glommio::timer::sleep(POLL * 10).await;
        }
    };
    futures_lite::future::or(accept, stopped).await;
}

/// One echo connection, shaped like a broker connection: a reader task that parses frames and
/// appends the replies to an output buffer, and a writer task on a second descriptor that drains
/// it in whatever batches have accumulated. Anything slower would flatter the broker.
async fn serve_conn(stream: TcpStream, reply: RawReply, batch: usize) -> std::io::Result<()> {
    let writer_stream = dup(&stream)?;
    let out = Rc::new(Output::default());
    let writer = glommio::spawn_local(write_loop(out.clone(), writer_stream));
    let result = read_loop(stream, &out, reply, batch).await;
    out.closed.set(true);
    out.wakeup.wake();
    writer.await;
    result
}

/// The reply bytes a connection's reader leaves for its writer.
#[derive(Default)]
struct Output {
    buf: RefCell<BytesMut>,
    wakeup: Wakeup,
    closed: Cell<bool>,
}

async fn read_loop(
    mut stream: TcpStream,
    out: &Output,
    reply: RawReply,
    batch: usize,
) -> std::io::Result<()> {
    let mut buf = ReadBuf::new();
    let mut frames_since_ack = 0usize;
    loop {
        if buf.read_from(&mut stream).await? == 0 {
            return Ok(());
        }
        let (len, n) = complete_frames(&buf).ok_or_else(|| client::invalid("raw frame"))?;
        match reply {
            RawReply::Echo => out.buf.borrow_mut().extend_from_slice(&buf[..len]),
            RawReply::Ack => {
                frames_since_ack += n;
                while frames_since_ack >= batch {
                    frames_since_ack -= batch;
                    frame::put_response(&mut out.buf.borrow_mut(), frame::OK);
                }
            }
        }
        out.wakeup.wake();
        buf.advance(len);
    }
}

async fn write_loop(out: Rc<Output>, mut stream: TcpStream) {
    let mut spare = BytesMut::new();
    loop {
        out.wakeup
            .until(|| !out.buf.borrow().is_empty() || out.closed.get())
            .await;
        std::mem::swap(&mut *out.buf.borrow_mut(), &mut spare);
        if spare.is_empty() || stream.write_all(&spare).await.is_err() {
            return;
        }
        spare.clear();
    }
}

fn dup(stream: &TcpStream) -> std::io::Result<TcpStream> {
    let fd = nix::unistd::dup(stream.as_raw_fd()).map_err(std::io::Error::from)?;
    // SAFETY: `fd` was just returned by dup(2), so it is open and owned by nothing else; the new
    // stream takes sole ownership and closes it on drop.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// The echo client: keeps its share of `--window` frames in flight, counts and times each echo.
pub async fn echo_client(
    shared: &Shared,
    core: usize,
    conn: &mut Conn,
    window: u64,
    latencies: &mut Latencies,
) -> std::io::Result<()> {
    let counters = shared.core(core);
    let (batch, size) = (shared.args.batch.max(1) as u64, shared.args.size);
    let mut in_flight = 0u64;
    loop {
        while shared.sending() && in_flight + batch <= window.max(batch) {
            put_frames(&mut conn.wbuf, batch as usize, size, shared.now_ns());
            in_flight += batch;
            counters.sent.fetch_add(batch, Ordering::Relaxed);
        }
        if in_flight == 0 {
            if !shared.sending() {
                return Ok(());
            }
            glommio::timer::sleep(Duration::from_micros(100)).await;
            continue;
        }
        conn.flush().await?;
        let n = read_echoes(shared, conn, latencies).await?;
        in_flight = in_flight.saturating_sub(n);
        counters.received.fetch_add(n, Ordering::Relaxed);
    }
}

/// The echo client at a fixed `--rate`: frames leave on `schedule` (stamped with their intended
/// send times) from one descriptor while this one reads the echoes, so the figures are the
/// latency floor of an open-loop load with no broker in the path.
pub async fn open_loop_echo_client(
    shared: &Shared,
    core: usize,
    mut conn: Conn,
    schedule: Schedule,
    latencies: &mut Latencies,
) -> std::io::Result<()> {
    let mut writer = conn.split_writer()?;
    let size = shared.args.size;
    let encode = |out: &mut BytesMut, due: Range<u64>, schedule: &Schedule| {
        for i in due {
            put_frames(out, 1, size, schedule.intended_ns(i));
        }
    };
    let sends = super::latency::send_on_schedule(shared, core, &mut writer, schedule, encode);
    let echoes = async {
        loop {
            let n = read_echoes(shared, &mut conn, latencies).await?;
            shared.core(core).received.fetch_add(n, Ordering::Relaxed);
        }
    };
    futures_lite::future::try_zip(sends, echoes)
        .await
        .map(|_: ((), ())| ())
}

/// Reads what the socket has, and times each complete echoed frame from the stamp it carries;
/// returns how many came back.
async fn read_echoes(
    shared: &Shared,
    conn: &mut Conn,
    latencies: &mut Latencies,
) -> std::io::Result<u64> {
    if conn.fill().await? == 0 {
        return Err(client::closed());
    }
    let now = shared.now_ns();
    let (len, n) = complete_frames(&conn.rbuf).ok_or_else(|| client::invalid("raw echo"))?;
    let mut at = 0;
    for _ in 0..n {
        let body = &conn.rbuf[at + LEN..];
        if let Some(sent) = stamp_of(body)
            && shared.in_window(sent)
        {
            latencies.record_ns(now as i64 - sent as i64);
        }
        let flen = u32::from_be_bytes(conn.rbuf[at..at + LEN].try_into().unwrap_or([0; 4]));
        at += LEN + flen as usize;
    }
    conn.rbuf.advance(len);
    Ok(n as u64)
}

/// The ack client: like a publisher, `--pipeline` batches outstanding, one ack per batch.
pub async fn ack_client(shared: &Shared, core: usize, conn: &mut Conn) -> std::io::Result<()> {
    let counters = shared.core(core);
    let (batch, size) = (shared.args.batch.max(1), shared.args.size);
    let pipeline = shared.args.pipeline.max(1);
    let mut outstanding = 0usize;
    loop {
        while outstanding < pipeline && shared.sending() {
            put_frames(&mut conn.wbuf, batch, size, 0);
            outstanding += 1;
        }
        if outstanding == 0 {
            return Ok(());
        }
        conn.flush().await?;
        let n = super::publish::read_responses(conn).await?.min(outstanding);
        outstanding -= n;
        counters
            .sent
            .fetch_add((n * batch) as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_partial_ones_wait() {
        let mut b = BytesMut::new();
        put_frames(&mut b, 3, 10, 42);
        assert_eq!(b.len(), 3 * 14);
        assert_eq!(complete_frames(&b), Some((42, 3)));
        assert_eq!(complete_frames(&b[..41]), Some((28, 2)));
        assert_eq!(stamp_of(&b[4..]), Some(42));
        assert_eq!(complete_frames(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}
