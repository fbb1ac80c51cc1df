//! `/mpub` bodies, pure: newline-separated messages (text mode) or nsqd's binary MPUB layout
//! (int32 count, then int32 size + bytes per message). Messages are slices of the body, so
//! nothing is copied. All messages are validated before any is published.

use bytes::Bytes;

/// Why an `/mpub` body was refused: nsqd's message (all are 413).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpubError {
    /// Text mode: one line is longer than `--max-msg-size`.
    MsgTooBig,
    /// Binary mode: unreadable or out-of-range message count.
    BadBody,
    /// Binary mode: a message's size is unreadable, out of range, or its bytes are short.
    BadMessage,
}

impl MpubError {
    /// nsqd's `message` text.
    pub fn message(self) -> &'static str {
        match self {
            MpubError::MsgTooBig => "MSG_TOO_BIG",
            MpubError::BadBody => "BAD_BODY",
            MpubError::BadMessage => "BAD_MESSAGE",
        }
    }
}

/// Text mode: one message per `\n`-terminated line; empty lines are skipped silently and a
/// `\r` is kept, as nsqd does.
pub fn split_lines(body: &Bytes, max_msg_size: u64) -> Result<Vec<Bytes>, MpubError> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let end = body[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| start + i);
        let line = body.slice(start..end);
        start = end + 1;
        if line.is_empty() {
            continue;
        }
        if line.len() as u64 > max_msg_size {
            return Err(MpubError::MsgTooBig);
        }
        out.push(line);
    }
    Ok(out)
}

/// Binary mode: nsqd's `readMPUB` over the body (bytes after the last message are ignored).
pub fn parse_binary(
    body: &Bytes,
    max_msg_size: u64,
    max_body_size: u64,
) -> Result<Vec<Bytes>, MpubError> {
    let mut pos = 0;
    let count = read_i32(body, &mut pos).ok_or(MpubError::BadBody)?;
    let max_messages = max_body_size.saturating_sub(4) / 5;
    if count <= 0 || count as u64 > max_messages {
        return Err(MpubError::BadBody);
    }
    // Every message takes at least 5 bytes: reserve what the body can hold, not what it claims.
    let mut out = Vec::with_capacity((count as usize).min(body.len() / 5));
    for _ in 0..count {
        let size = read_i32(body, &mut pos).ok_or(MpubError::BadMessage)?;
        if size <= 0 || size as u64 > max_msg_size {
            return Err(MpubError::BadMessage);
        }
        let end = pos + size as usize;
        if end > body.len() {
            return Err(MpubError::BadMessage);
        }
        out.push(body.slice(pos..end));
        pos = end;
    }
    Ok(out)
}

fn read_i32(body: &[u8], pos: &mut usize) -> Option<i32> {
    let bytes: [u8; 4] = body.get(*pos..*pos + 4)?.try_into().ok()?;
    *pos += 4;
    Some(i32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(msgs: &[&[u8]]) -> Bytes {
        let mut b = (msgs.len() as u32).to_be_bytes().to_vec();
        for m in msgs {
            b.extend_from_slice(&(m.len() as u32).to_be_bytes());
            b.extend_from_slice(m);
        }
        Bytes::from(b)
    }

    #[test]
    fn text_mode_splits_skips_empty_and_keeps_cr() {
        let body = Bytes::from_static(b"a\n\nb\r\nc");
        let msgs = split_lines(&body, 10).unwrap();
        assert_eq!(msgs, [&b"a"[..], b"b\r", b"c"]);
        assert!(split_lines(&Bytes::new(), 10).unwrap().is_empty());
        assert!(
            split_lines(&Bytes::from_static(b"\n\n"), 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            split_lines(&Bytes::from_static(b"ok\ntoolong"), 3),
            Err(MpubError::MsgTooBig)
        );
    }

    #[test]
    fn binary_mode_follows_read_mpub() {
        let msgs = parse_binary(&binary(&[b"one", b"two"]), 10, 100).unwrap();
        assert_eq!(msgs, [&b"one"[..], b"two"]);
        let bad = |b: &[u8]| parse_binary(&Bytes::copy_from_slice(b), 10, 100);
        assert_eq!(bad(b"x"), Err(MpubError::BadBody));
        assert_eq!(bad(&0u32.to_be_bytes()), Err(MpubError::BadBody));
        assert_eq!(
            bad(&20u32.to_be_bytes()),
            Err(MpubError::BadBody),
            "> (100-4)/5"
        );
        assert_eq!(bad(&1u32.to_be_bytes()), Err(MpubError::BadMessage));
        let mut zero = 1u32.to_be_bytes().to_vec();
        zero.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(bad(&zero), Err(MpubError::BadMessage));
        assert_eq!(
            parse_binary(&binary(&[b"0123456789a"]), 10, 100),
            Err(MpubError::BadMessage)
        );
        let mut short = binary(&[b"abc"]).to_vec();
        short.pop();
        assert_eq!(bad(&short), Err(MpubError::BadMessage));
        let mut trailing = binary(&[b"abc"]).to_vec();
        trailing.extend_from_slice(b"junk");
        assert_eq!(bad(&trailing).unwrap(), [&b"abc"[..]]);
    }
}
