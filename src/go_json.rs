//! JSON input decoded the way Go's `encoding/json` (so nsqd) decodes it, where that is more
//! lenient than serde_json: inside strings, bytes that are not UTF-8 and `\u` escapes of
//! unpaired UTF-16 surrogates each become U+FFFD instead of failing the whole document.
//! A client whose IDENTIFY carries such a `user_agent` is accepted by nsqd; it must be here too.

use std::borrow::Cow;

use serde::de::DeserializeOwned;

/// The UTF-8 encoding of U+FFFD, Go's `utf8.RuneError`.
const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();

/// `serde_json::from_slice` after Go's repairs (see the module comment).
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> serde_json::Result<T> {
    let valid = replace_invalid_utf8(body);
    let repaired = replace_lone_surrogate_escapes(&valid);
    serde_json::from_slice(&repaired)
}

/// Each byte of every invalid UTF-8 sequence replaced by U+FFFD, as Go's decoder does (one
/// replacement per byte: `utf8.DecodeRune` reports an invalid sequence as one byte long).
/// Outside strings a replacement is still a syntax error, as the bad byte was in Go.
fn replace_invalid_utf8(body: &[u8]) -> Cow<'_, [u8]> {
    if std::str::from_utf8(body).is_ok() {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut rest = body;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.extend_from_slice(valid.as_bytes());
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.extend_from_slice(valid);
                let bad = e.error_len().unwrap_or(after.len());
                for _ in 0..bad {
                    out.extend_from_slice(REPLACEMENT);
                }
                rest = &after[bad..];
            }
        }
    }
    Cow::Owned(out)
}

/// Inside strings, a `\uD800`–`\uDFFF` escape that is not a high surrogate directly followed
/// by a low one becomes `\ufffd`; the escape after an unpaired high surrogate is read on its
/// own, as Go's `unquote` does.
fn replace_lone_surrogate_escapes(body: &[u8]) -> Cow<'_, [u8]> {
    if !body
        .windows(3)
        .any(|w| w[..2] == *b"\\u" && matches!(w[2], b'd' | b'D'))
    {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut in_string = false;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if !in_string {
            in_string = b == b'"';
            out.push(b);
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = false;
                out.push(b);
                i += 1;
            }
            b'\\' => match escaped_unit(body, i) {
                Some(unit) if is_surrogate(unit) => {
                    let paired = (0xd800..0xdc00).contains(&unit)
                        && escaped_unit(body, i + 6).is_some_and(|u| (0xdc00..0xe000).contains(&u));
                    if paired {
                        out.extend_from_slice(&body[i..i + 12]);
                        i += 12;
                    } else {
                        out.extend_from_slice(b"\\ufffd");
                        i += 6;
                    }
                }
                _ => {
                    // Any other escape: copy it whole (a bad one fails in serde_json as in Go).
                    let end = (i + 2).min(body.len());
                    out.extend_from_slice(&body[i..end]);
                    i = end;
                }
            },
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// The UTF-16 unit of a `\uXXXX` escape starting at `at`, if there is one.
fn escaped_unit(body: &[u8], at: usize) -> Option<u32> {
    let esc = body.get(at..at + 6)?;
    if esc[..2] != *b"\\u" {
        return None;
    }
    let hex = std::str::from_utf8(&esc[2..]).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

fn is_surrogate(unit: u32) -> bool {
    (0xd800..0xe000).contains(&unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn string_of(json: &[u8]) -> String {
        let v: Value = from_slice(json).expect("decodes");
        v["s"].as_str().unwrap().to_string()
    }

    #[test]
    fn invalid_utf8_becomes_one_replacement_per_byte() {
        assert_eq!(string_of(b"{\"s\":\"a\xffb\"}"), "a\u{fffd}b");
        // A UTF-8-encoded surrogate: three bytes, three replacements (Go: the same).
        assert_eq!(string_of(b"{\"s\":\"\xed\xa0\xbd\"}"), "\u{fffd}".repeat(3));
        // A truncated sequence before a quote: each byte replaced.
        assert_eq!(string_of(b"{\"s\":\"x\xe2\x82\"}"), "x\u{fffd}\u{fffd}");
        assert_eq!(string_of("{\"s\":\"héllo €\"}".as_bytes()), "héllo €");
    }

    #[test]
    fn unpaired_surrogate_escapes_become_replacements() {
        assert_eq!(string_of(br#"{"s":"\ud83d"}"#), "\u{fffd}");
        assert_eq!(string_of(br#"{"s":"\uDC00x"}"#), "\u{fffd}x");
        assert_eq!(string_of(br#"{"s":"\ud83d\ude00"}"#), "😀");
        // A high surrogate before a non-surrogate escape: that escape is read on its own.
        assert_eq!(string_of(br#"{"s":"\ud83d\u0041"}"#), "\u{fffd}A");
        assert_eq!(string_of(br#"{"s":"\ud83d\ud83d\ude00"}"#), "\u{fffd}😀");
        // An escaped backslash before "ud83d" is text, not an escape.
        assert_eq!(string_of(br#"{"s":"\\ud83d"}"#), "\\ud83d");
        // Keys are strings too.
        let v: Value = from_slice(br#"{"\ud800":1}"#).unwrap();
        assert_eq!(v["\u{fffd}"], 1);
    }

    #[test]
    fn what_go_rejects_is_still_rejected() {
        assert!(from_slice::<Value>(b"{\"s\":1}\xff").is_err());
        assert!(from_slice::<Value>(br#"{"s":"\x"}"#).is_err());
        assert!(from_slice::<Value>(br#"{"s":"\u12"}"#).is_err());
        assert!(from_slice::<Value>(b"{\"s\":\"a").is_err());
    }
}
