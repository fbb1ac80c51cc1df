//! JSON bodies as Go's `encoding/json` writes them: compact, and HTML-safe (`<`, `>`, `&`,
//! U+2028 and U+2029 escaped), so nsqd's clients see byte-identical bodies.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;

use crate::options::go_json_float;

/// serde_json's compact output with Go's extra string escapes.
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                write!(writer, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    /// Go's float text (`1`, `0.99`, `1e-7`), not serde_json's (`1.0`).
    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(go_json_float(value).as_bytes())
    }
}

/// Serializes `value` as Go would (compact, HTML-safe).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Serializing plain structs, strings and numbers into a Vec cannot fail.
    let _ = value.serialize(&mut ser);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        assert_eq!(
            to_vec("a<b>&c\u{2028}"),
            br#""a\u003cb\u003e\u0026c\u2028""#
        );
        assert_eq!(to_vec("q\"\\\n"), br#""q\"\\\n""#);
        #[derive(Serialize)]
        struct S {
            message: &'static str,
            list: Option<Vec<u8>>,
        }
        assert_eq!(
            to_vec(&S {
                message: "OK",
                list: None
            }),
            br#"{"message":"OK","list":null}"#
        );
    }
}
