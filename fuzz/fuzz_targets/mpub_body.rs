//! MPUB bodies: arbitrary bytes after a valid `MPUB t` line and a matching size prefix (or the
//! input's own first four bytes as the size). A decoded MPUB must account for exactly the bytes
//! it consumed; anything else must be E_BAD_BODY or E_BAD_MESSAGE.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use nsqd_uring::protocol::codec::{
    ClientState, Command, DecodeContext, DecodeError, Limits, decode,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let line = b"MPUB t\n";
    let mut input = BytesMut::from(&line[..]);
    if mode & 1 == 0 {
        input.put_i32(body.len() as i32);
    }
    input.extend_from_slice(body);
    let limits = if mode & 2 == 0 {
        Limits::default()
    } else {
        Limits {
            max_msg_size: i64::from(mode >> 2) + 1,
            max_body_size: 64 * (i64::from(mode >> 2) + 1),
            ..Limits::default()
        }
    };
    let ctx = DecodeContext {
        state: ClientState::Init,
        heartbeats_disabled: false,
        limits,
        tls_required: false,
    };
    let total = input.len();
    let eof = mode & 0x80 != 0;
    match decode(&mut input, &ctx, eof) {
        Ok(Some(Command::Mpub { bodies, .. })) => {
            let framed = line.len() + 8 + bodies.iter().map(|b| 4 + b.len()).sum::<usize>();
            assert_eq!(total - input.len(), framed);
            assert!(!bodies.is_empty());
            assert!(
                bodies
                    .iter()
                    .all(|b| !b.is_empty() && b.len() as i64 <= limits.max_msg_size)
            );
        }
        Ok(Some(other)) => panic!("MPUB decoded as {other:?}"),
        Ok(None) => assert!(!eof, "EOF must end a short MPUB with an error"),
        Err(DecodeError::Protocol(e)) => {
            assert!(e.fatal);
            assert!(e.code == "E_BAD_BODY" || e.code == "E_BAD_MESSAGE", "{e}");
        }
        Err(DecodeError::LineTooLong) => panic!("the line is short"),
    }
});
