//! Go `strconv` / `fmt` / `encoding/json` look-alikes.
//!
//! nsqd parses flag values with Go's `strconv` rules and renders `/config`
//! values with `encoding/json`; matching both keeps us a drop-in replacement.

/// Go's `strconv.ParseBool`: the only spellings nsqd accepts for booleans.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `underscoreOK`: underscores may only separate digits (or follow a base prefix).
fn underscores_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = s[1].eq_ignore_ascii_case(&b'x');
    }
    for &c in &s[i..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// Go's `strconv.ParseInt(s, 0, 64)` as used by the `flag` package: optional
/// sign, `0x`/`0o`/`0b`/leading-`0` prefixes and digit-separating underscores.
pub fn parse_int(s: &str) -> Result<i64, &'static str> {
    const SYNTAX: &str = "not an integer";
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return Err(SYNTAX);
    }
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.contains('_') && !underscores_ok(s) {
        return Err(SYNTAX);
    }
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(SYNTAX);
    }
    let magnitude = u128::from_str_radix(&digits, radix).map_err(|_| "value out of range")?;
    let value = if neg {
        -(magnitude as i128)
    } else {
        magnitude as i128
    };
    i64::try_from(value).map_err(|_| "value out of range")
}

/// Splits Rust's shortest `{:e}` form into (mantissa, decimal exponent).
fn shortest_exp(f: f64) -> (String, i32) {
    let s = format!("{:e}", f.abs());
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    (mantissa.to_string(), exp.parse().unwrap_or(0))
}

/// Go's `%e`-style tail with at least two exponent digits (`e+06`, `e-07`).
fn go_exp(f: f64, exp: i32, mantissa: &str) -> String {
    let sign = if f < 0.0 { "-" } else { "" };
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{mantissa}e{esign}{:02}", exp.abs())
}

/// Go's `fmt` `%v` for a float64 (`1`, `0.99`, `1e-07`, `1.234567e+06`),
/// used in nsqd's `invalid E2E processing latency percentile: %v` message.
pub fn go_float_v(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let (mantissa, exp) = shortest_exp(f);
    if !(-4..6).contains(&exp) {
        go_exp(f, exp, &mantissa)
    } else {
        format!("{f}")
    }
}

/// Go's `encoding/json` text for a float64 (`1`, `0.99`, `1e-7`, `1e+21`).
pub fn go_json_float(f: f64) -> String {
    if !f.is_finite() {
        // Go refuses to encode these; nsqd never stores them (validated).
        return "null".into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let (mantissa, exp) = shortest_exp(f);
        // Go's json cleans `e-07` to `e-7` but keeps `e+21`.
        let sign = if f < 0.0 { "-" } else { "" };
        if exp < 0 {
            return format!("{sign}{mantissa}e{exp}");
        }
        return format!("{sign}{mantissa}e+{exp}");
    }
    format!("{f}")
}

/// Go's `encoding/json` string literal, including its HTML-safe escapes
/// (`<`, `>`, `&`, U+2028, U+2029).
pub fn go_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_follow_strconv() {
        for s in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(s), Some(true), "{s}");
        }
        for s in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(s), Some(false), "{s}");
        }
        for s in ["", "yes", "tRUE", "2", " true"] {
            assert_eq!(parse_bool(s), None, "{s}");
        }
    }

    #[test]
    fn ints_follow_strconv_base0() {
        assert_eq!(parse_int("42"), Ok(42));
        assert_eq!(parse_int("-42"), Ok(-42));
        assert_eq!(parse_int("+7"), Ok(7));
        assert_eq!(parse_int("0"), Ok(0));
        assert_eq!(parse_int("0x1F"), Ok(31));
        assert_eq!(parse_int("0o17"), Ok(15));
        assert_eq!(parse_int("017"), Ok(15));
        assert_eq!(parse_int("0b101"), Ok(5));
        assert_eq!(parse_int("1_000"), Ok(1000));
        assert_eq!(parse_int("0x_ff"), Ok(255));
        assert_eq!(parse_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_int("9223372036854775808"), Err("value out of range"));
        for bad in [
            "", "-", "abc", "1.5", "08", "1__0", "_1", "1_", "0x", " 1", "1e3",
        ] {
            assert_eq!(parse_int(bad), Err("not an integer"), "{bad}");
        }
    }

    #[test]
    fn floats_print_like_go() {
        assert_eq!(go_float_v(1.0), "1");
        assert_eq!(go_float_v(0.99), "0.99");
        assert_eq!(go_float_v(1.5), "1.5");
        assert_eq!(go_float_v(-0.5), "-0.5");
        assert_eq!(go_float_v(0.0), "0");
        assert_eq!(go_float_v(100000.0), "100000");
        assert_eq!(go_float_v(1e6), "1e+06");
        assert_eq!(go_float_v(1e-7), "1e-07");
        assert_eq!(go_float_v(0.0001), "0.0001");
        assert_eq!(go_float_v(f64::NAN), "NaN");
        assert_eq!(go_json_float(1.0), "1");
        assert_eq!(go_json_float(0.99), "0.99");
        assert_eq!(go_json_float(1e-7), "1e-7");
        assert_eq!(go_json_float(1e21), "1e+21");
        assert_eq!(go_json_float(123456.0), "123456");
    }

    #[test]
    fn json_strings_escape_like_go() {
        assert_eq!(go_json_string("nsq.%s"), r#""nsq.%s""#);
        assert_eq!(go_json_string("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(go_json_string("<&>"), r#""\u003c\u0026\u003e""#);
        assert_eq!(go_json_string("\u{1}"), r#""\u0001""#);
        assert_eq!(go_json_string("[nsqd] "), r#""[nsqd] ""#);
    }
}
