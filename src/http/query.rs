//! Go's `net/url` decoding as nsqd sees requests: `ParseQuery` for parameters (first value
//! wins, `+` is a space, a bad escape or a `;` separator makes the whole query invalid) and
//! path unescaping for routing.

/// The decoded query parameters of one request, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

/// The query string is not valid (nsqd answers `INVALID_REQUEST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidQuery;

impl Query {
    /// Parses a raw query string like Go's `url.ParseQuery`.
    pub fn parse(raw: &str) -> Result<Query, InvalidQuery> {
        let mut pairs = Vec::new();
        let mut invalid = false;
        for part in raw.split('&') {
            if part.contains(';') {
                invalid = true;
                continue;
            }
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match (unescape(k, true), unescape(v, true)) {
                (Some(k), Some(v)) => pairs.push((k, v)),
                _ => invalid = true,
            }
        }
        if invalid {
            Err(InvalidQuery)
        } else {
            Ok(Query { pairs })
        }
    }

    /// The first value of `key` (Go's `Values[key][0]`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// nsqd's boolean parameters: `true`/`1` and `false`/`0`; anything else is `None`.
pub fn bool_param(value: &str) -> Option<bool> {
    match value {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Percent-decodes a URL path as Go does for `URL.Path`; `None` for a bad escape.
pub fn unescape_path(raw: &str) -> Option<String> {
    unescape(raw, false)
}

/// Percent-decoding; `plus_is_space` for query components. Bytes that are not UTF-8 become
/// U+FFFD (such names fail nsqd's name rules either way).
fn unescape(s: &str, plus_is_space: bool) -> Option<String> {
    if !s.contains(['%', '+']) {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        let q = Query::parse("topic=a+b&topic=second&x=%41&flag&=v&&").unwrap();
        assert_eq!(q.get("topic"), Some("a b"), "first value wins");
        assert_eq!(q.get("x"), Some("A"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get(""), Some("v"));
        assert_eq!(q.get("missing"), None);
        assert_eq!(Query::parse(""), Ok(Query::default()));
    }

    #[test]
    fn bad_escapes_and_semicolons_invalidate_the_query() {
        for bad in ["topic=a%zz", "topic=a%2", "topic=a;b", "a%=1", "t=%"] {
            assert_eq!(Query::parse(bad), Err(InvalidQuery), "{bad}");
        }
    }

    #[test]
    fn bools_and_paths() {
        assert_eq!(bool_param("1"), Some(true));
        assert_eq!(bool_param("false"), Some(false));
        assert_eq!(bool_param("yes"), None);
        assert_eq!(unescape_path("/p%69ng").as_deref(), Some("/ping"));
        assert_eq!(unescape_path("/a+b").as_deref(), Some("/a+b"));
        assert_eq!(unescape_path("/%zz"), None);
    }
}
