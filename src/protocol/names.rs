//! Topic and channel name rules shared by TCP, HTTP and lookupd, and Go's `%q` quoting used in
//! nsqd's error texts.

/// The suffix that marks a topic or channel as ephemeral (memory only, deleted when unused).
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// nsqd's rule: 1..=64 bytes of `[.a-zA-Z0-9_-]`, optionally ending in `#ephemeral`.
pub fn is_valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > 64 {
        return false;
    }
    let base = name
        .strip_suffix(EPHEMERAL_SUFFIX.as_bytes())
        .unwrap_or(name);
    !base.is_empty()
        && base
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Whether a (valid) name denotes an ephemeral topic or channel.
pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

/// Quotes bytes the way Go's `strconv.Quote` (`%q`) does, so error texts match nsqd's.
pub fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() => {
                    if (c as u32) < 0x10000 {
                        out.push_str(&format!("\\u{:04x}", c as u32))
                    } else {
                        out.push_str(&format!("\\U{:08x}", c as u32))
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nsqd_names() {
        for ok in ["a", "orders", "a.b-c_d", "t#ephemeral", &"x".repeat(64)] {
            assert!(is_valid_name(ok.as_bytes()), "{ok}");
        }
        let long_eph = format!("{}#ephemeral", "x".repeat(54));
        assert!(is_valid_name(long_eph.as_bytes()));
    }

    #[test]
    fn rejects_bad_names() {
        let too_long = "x".repeat(65);
        let long_eph = format!("{}#ephemeral", "x".repeat(55));
        for bad in [
            "",
            "a b",
            "a#b",
            "#ephemeral",
            "é",
            "a:b",
            &too_long,
            &long_eph,
        ] {
            assert!(!is_valid_name(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn ephemeral_is_a_suffix_test() {
        assert!(is_ephemeral("t#ephemeral"));
        assert!(!is_ephemeral("t"));
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote(b"a b"), "\"a b\"");
        assert_eq!(go_quote(b"a\"\\"), "\"a\\\"\\\\\"");
        assert_eq!(go_quote(b"\n\x00\x7f"), "\"\\n\\x00\\x7f\"");
        assert_eq!(go_quote(b"\xff"), "\"\\xff\"");
        assert_eq!(go_quote("é".as_bytes()), "\"é\"");
    }
}
