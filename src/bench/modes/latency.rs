//! The open-loop sender of the latency mode (and of the raw baseline at a fixed `--rate`):
//! messages leave on a fixed schedule whether or not the broker has answered the previous ones,
//! each stamped with its *intended* send time.
//!
//! Writing and reading are separate tasks on two descriptors of one socket, so a slow response
//! never delays the schedule; only a full socket can, and then the overdue messages go out
//! together with their original stamps (see `schedule`).

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use super::publish::{put_publish, read_responses};
use crate::bench::client::Conn;
use crate::bench::run::{POLL, Shared};
use crate::bench::schedule::Schedule;

/// Most messages put into one write when the sender is behind.
const MAX_PER_WRITE: u64 = 1024;
/// Shortest sleep worth arming a timer for; closer sends go out in the same write.
const MIN_SLEEP: Duration = Duration::from_micros(20);

/// Sends PUB/MPUB on `schedule` until the measured window's schedule is complete (or the run
/// stops), while a sibling task counts the broker's responses.
pub async fn open_loop(
    shared: &Shared,
    core: usize,
    mut conn: Conn,
    topic: String,
    schedule: Schedule,
) -> std::io::Result<()> {
    let mut writer = conn.split_writer()?;
    let batch = shared.args.batch.max(1);
    let size = shared.args.size;
    // One PUB per due message (or MPUB of up to --batch, each body with its own time).
    let encode = |out: &mut BytesMut, due: Range<u64>, schedule: &Schedule| {
        let mut i = due.start;
        while i < due.end {
            let n = ((due.end - i) as usize).min(batch);
            if n == 1 {
                put_publish(out, &topic, size, 1, Some(schedule.intended_ns(i)));
            } else {
                let first = i;
                crate::bench::client::put_mpub(out, &topic, n, size, |k, body| {
                    super::stamp(body, schedule.intended_ns(first + k as u64));
                });
            }
            i += n as u64;
        }
    };
    // Responses are only read (and heartbeats answered) so the socket never backs up; sends
    // are counted when written, as an open loop offers them.
    let responses = drain_responses(&mut conn);
    let sends = send_on_schedule(shared, core, &mut writer, schedule, encode);
    // Keep reading after the schedule ends: closing with unread responses would reset the
    // connection under the broker. The run's stop cancels both.
    futures_lite::future::try_zip(sends, responses)
        .await
        .map(|_| ())
}

/// Writes what `encode` makes of each run of due messages, on `schedule`, until the measured
/// window's schedule is complete or the run stops; counts them as sent when written.
pub async fn send_on_schedule(
    shared: &Shared,
    core: usize,
    writer: &mut TcpStream,
    mut schedule: Schedule,
    mut encode: impl FnMut(&mut BytesMut, Range<u64>, &Schedule),
) -> std::io::Result<()> {
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    loop {
        if shared.stopped() {
            return Ok(());
        }
        let until = shared.measure_to_ns();
        if schedule.done(until) {
            return Ok(());
        }
        let due = schedule.take_due(shared.now_ns(), until, MAX_PER_WRITE);
        if due.is_empty() {
            let wait = schedule.next_due_ns().saturating_sub(shared.now_ns());
            let wait = Duration::from_nanos(wait).min(POLL * 10);
            if wait >= MIN_SLEEP {
                glommio::timer::sleep(wait).await;
            }
            continue;
        }
        encode(&mut wbuf, due.clone(), &schedule);
        writer.write_all(&wbuf).await?;
        wbuf.clear();
        shared
            .core(core)
            .sent
            .fetch_add(due.end - due.start, Ordering::Relaxed);
    }
}

/// Reads responses (answering heartbeats) until the connection fails.
async fn drain_responses(conn: &mut Conn) -> std::io::Result<()> {
    loop {
        read_responses(conn).await?;
    }
}
