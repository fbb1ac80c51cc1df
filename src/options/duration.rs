//! Go `time.Duration` text forms: `time.ParseDuration` and `Duration.String()`.
//!
//! nsqd prints and accepts durations in Go's notation (`1m0s`, `250ms`,
//! `1.5h`), so flags, config files and `/stats` output must use the same text.

use std::fmt;
use std::time::Duration;

/// Why a Go duration string was rejected; displays like Go's `time` errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoDurationError(String);

impl fmt::Display for GoDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GoDurationError {}

/// Largest magnitude Go accepts while parsing (1<<63 ns).
const LIMIT: u64 = 1 << 63;

fn invalid(orig: &str) -> GoDurationError {
    GoDurationError(format!("time: invalid duration {orig:?}"))
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration (`300ms`, `1m30s`, `1.5h`, `2µs`, `0`) exactly as
/// Go's `time.ParseDuration` does, including its float rounding of fractions.
///
/// Negative durations (which Go allows) are rejected because
/// `std::time::Duration` cannot hold them; `-0` is accepted as zero.
pub fn parse_go_duration(orig: &str) -> Result<Duration, GoDurationError> {
    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid(orig));
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid(orig));
        }
        // Integer part.
        let mut i = 0;
        let mut v: u64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if v > LIMIT / 10 {
                return Err(invalid(orig));
            }
            v = v * 10 + u64::from(b[i] - b'0');
            if v > LIMIT {
                return Err(invalid(orig));
            }
            i += 1;
        }
        let pre = i > 0;
        // Fraction part: digits past what fits are ignored, like Go.
        let (mut frac, mut scale, mut post) = (0u64, 1.0f64, false);
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let start = i;
            let mut overflow = false;
            while i < b.len() && b[i].is_ascii_digit() {
                if !overflow {
                    if frac > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = frac * 10 + u64::from(b[i] - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            frac = y;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            post = i > start;
        }
        if !pre && !post {
            return Err(invalid(orig));
        }
        // Unit: everything up to the next digit or '.'.
        let unit_start = i;
        while i < b.len() && !(b[i] == b'.' || b[i].is_ascii_digit()) {
            i += 1;
        }
        if i == unit_start {
            return Err(GoDurationError(format!(
                "time: missing unit in duration {orig:?}"
            )));
        }
        let unit_text = &s[unit_start..i];
        let unit = unit_nanos(unit_text).ok_or_else(|| {
            GoDurationError(format!(
                "time: unknown unit {unit_text:?} in duration {orig:?}"
            ))
        })?;
        if v > LIMIT / unit {
            return Err(invalid(orig));
        }
        v *= unit;
        if frac > 0 {
            // Same float arithmetic as Go, so rounding matches; the cast saturates.
            v += (frac as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid(orig));
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid(orig));
        }
        s = &s[i..];
    }
    if neg {
        if total == 0 {
            return Ok(Duration::ZERO);
        }
        return Err(GoDurationError(format!(
            "time: negative duration {orig:?} is not supported"
        )));
    }
    if total > LIMIT - 1 {
        return Err(invalid(orig));
    }
    Ok(Duration::from_nanos(total))
}

/// `int` followed by the fraction `frac` of `digits` places, trailing zeros
/// (and a bare '.') dropped, as Go's `fmtFrac`/`fmtInt` print it.
fn with_fraction(int: u128, frac: u128, digits: usize) -> String {
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0digits$}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// Formats like Go's `time.Duration.String()`: `0s`, `1.5µs`, `250ms`,
/// `1.5s`, `1m0s`, `1h0m0s`.
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_string();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}\u{b5}s", with_fraction(ns / 1_000, ns % 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", with_fraction(ns / 1_000_000, ns % 1_000_000, 6));
    }
    let secs = ns / 1_000_000_000;
    let seconds = with_fraction(secs % 60, ns % 1_000_000_000, 9);
    let minutes = secs / 60;
    if minutes == 0 {
        return format!("{seconds}s");
    }
    let hours = minutes / 60;
    if hours == 0 {
        return format!("{minutes}m{seconds}s");
    }
    format!("{hours}h{}m{seconds}s", minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        parse_go_duration(s).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(p("10ns"), Duration::from_nanos(10));
        assert_eq!(p("2us"), Duration::from_micros(2));
        assert_eq!(p("2µs"), Duration::from_micros(2));
        assert_eq!(p("2\u{3bc}s"), Duration::from_micros(2));
        assert_eq!(p("300ms"), Duration::from_millis(300));
        assert_eq!(p("5s"), Duration::from_secs(5));
        assert_eq!(p("2m"), Duration::from_secs(120));
        assert_eq!(p("3h"), Duration::from_secs(3 * 3600));
    }

    #[test]
    fn parses_compound_fraction_and_signs() {
        assert_eq!(p("1m30s"), Duration::from_secs(90));
        assert_eq!(p("1h0m0s"), Duration::from_secs(3600));
        assert_eq!(p("1.5h"), Duration::from_secs(5400));
        assert_eq!(p("0.5s"), Duration::from_millis(500));
        assert_eq!(p(".5s"), Duration::from_millis(500));
        assert_eq!(p("1.s"), Duration::from_secs(1));
        assert_eq!(p("1.000000001s"), Duration::from_nanos(1_000_000_001));
        assert_eq!(
            p("1h1m1s1ms1us1ns"),
            Duration::from_nanos(3_661_001_001_001)
        );
        assert_eq!(p("+5s"), Duration::from_secs(5));
        assert_eq!(p("0"), Duration::ZERO);
        assert_eq!(p("-0"), Duration::ZERO);
        assert_eq!(p("+0"), Duration::ZERO);
        assert_eq!(p("0s"), Duration::ZERO);
        assert_eq!(p("-0s"), Duration::ZERO);
        assert_eq!(
            p("9223372036854775807ns"),
            Duration::from_nanos(i64::MAX as u64)
        );
    }

    #[test]
    fn rejects_bad_input_with_go_messages() {
        assert_eq!(err(""), r#"time: invalid duration """#);
        assert_eq!(err("abc"), r#"time: invalid duration "abc""#);
        assert_eq!(err("."), r#"time: invalid duration ".""#);
        assert_eq!(err("1"), r#"time: missing unit in duration "1""#);
        assert_eq!(err("10"), r#"time: missing unit in duration "10""#);
        assert_eq!(err("1x"), r#"time: unknown unit "x" in duration "1x""#);
        assert_eq!(err("1 s"), r#"time: unknown unit " s" in duration "1 s""#);
        assert_eq!(
            err("1sec"),
            r#"time: unknown unit "sec" in duration "1sec""#
        );
        assert_eq!(err("s"), r#"time: invalid duration "s""#);
        assert_eq!(err("-"), r#"time: invalid duration "-""#);
        assert_eq!(
            err("9223372036854775808ns"),
            r#"time: invalid duration "9223372036854775808ns""#
        );
        assert_eq!(err("3000000h"), r#"time: invalid duration "3000000h""#);
        assert!(err("-1s").contains("negative"));
    }

    fn f(ns: u64) -> String {
        format_go_duration(Duration::from_nanos(ns))
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(f(0), "0s");
        assert_eq!(f(1), "1ns");
        assert_eq!(f(999), "999ns");
        assert_eq!(f(1_000), "1µs");
        assert_eq!(f(1_500), "1.5µs");
        assert_eq!(f(1_000_000), "1ms");
        assert_eq!(f(250_000_000), "250ms");
        assert_eq!(f(1_234_567), "1.234567ms");
        assert_eq!(f(1_000_000_000), "1s");
        assert_eq!(f(1_500_000_000), "1.5s");
        assert_eq!(f(2_000_000_001), "2.000000001s");
        assert_eq!(f(60_000_000_000), "1m0s");
        assert_eq!(f(90_000_000_000), "1m30s");
        assert_eq!(f(62_500_000_000), "1m2.5s");
        assert_eq!(f(3_600_000_000_000), "1h0m0s");
        assert_eq!(f(5_400_000_000_000), "1h30m0s");
        assert_eq!(f(100 * 3_600_000_000_000 + 1), "100h0m0.000000001s");
        assert_eq!(f(i64::MAX as u64), "2562047h47m16.854775807s");
    }

    #[test]
    fn round_trips_defaults() {
        for s in [
            "2s", "5s", "1m0s", "15m0s", "1h0m0s", "250ms", "25ms", "30s", "10m0s",
        ] {
            assert_eq!(format_go_duration(p(s)), s);
        }
    }
}
