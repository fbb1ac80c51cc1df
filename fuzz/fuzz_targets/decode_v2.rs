//! The V2 decoder on arbitrary bytes, in every client state and with small or default limits.
//!
//! Checks what the connection relies on: no panic; a command always consumes bytes and never
//! more than the buffer holds; waiting consumes nothing; and the same bytes arriving in chunks
//! give the same commands and the same first error as arriving at once.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nsqd_uring::protocol::codec::{
    ClientState, Command, DecodeContext, DecodeError, Limits, MAX_LINE_LEN, decode,
};

fn context(flags: u8, limits: u8) -> DecodeContext {
    let state = match flags % 3 {
        0 => ClientState::Init,
        1 => ClientState::Subscribed,
        _ => ClientState::Closing,
    };
    let limits = if limits & 1 == 0 {
        Limits::default()
    } else {
        let n = i64::from(limits >> 1);
        Limits {
            max_msg_size: n + 1,
            max_body_size: 4 * n + 5,
            max_rdy_count: n,
            max_req_timeout_ms: 100 * n,
        }
    };
    DecodeContext {
        state,
        heartbeats_disabled: flags & 4 != 0,
        limits,
        tls_required: flags & 8 != 0,
    }
}

/// Decodes everything available, as the connection's read loop does.
fn drain(
    buf: &mut BytesMut,
    ctx: &DecodeContext,
    eof: bool,
) -> (Vec<Command>, Option<DecodeError>) {
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        match decode(buf, ctx, eof) {
            Ok(Some(cmd)) => {
                assert!(buf.len() < before, "a command consumed nothing");
                out.push(cmd);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "waiting consumed bytes");
                return (out, None);
            }
            Err(e) => {
                if e == DecodeError::LineTooLong {
                    assert!(before >= MAX_LINE_LEN);
                }
                return (out, Some(e));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (head, input) = data.split_at(3);
    let ctx = context(head[0], head[1]);
    let chunk = usize::from(head[2]).max(1);

    let mut whole = BytesMut::from(input);
    let (cmds, err) = drain(&mut whole, &ctx, false);

    let mut buf = BytesMut::new();
    let mut chunked = Vec::new();
    let mut chunked_err = None;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        let (c, e) = drain(&mut buf, &ctx, false);
        chunked.extend(c);
        if e.is_some() {
            chunked_err = e;
            break;
        }
    }
    assert_eq!(cmds, chunked, "split points changed the commands");
    assert_eq!(err, chunked_err, "split points changed the error");
    if err.is_none() {
        assert_eq!(&whole[..], &buf[..]);
        // End of stream: what is left either decodes, waits for a line, or is an error.
        let _ = drain(&mut whole, &ctx, true);
    }
});
