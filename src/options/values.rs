//! Value kinds an option can have, and how each is read from a flag or a
//! TOML value and rendered as `/config` JSON or as a usage default.
//!
//! Implementing [`OptValue`] for a field type is all the option table needs,
//! so the per-type rules (Go strconv, nsqd's config coercions) live here once.

use std::str::FromStr;
use std::time::Duration;

use super::duration::{format_go_duration, parse_go_duration};
use super::goflags::Arity;
use super::strconv::{go_json_float, go_json_string, parse_bool, parse_int};

/// nsqd's log verbosity (`--log-level`); numbered as Go's `lg.LogLevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LogLevel {
    /// Everything, including per-message debugging.
    Debug = 1,
    /// Normal operation (nsqd's default).
    #[default]
    Info = 2,
    /// Suspicious but recoverable events.
    Warn = 3,
    /// Failures.
    Error = 4,
    /// Only fatal events.
    Fatal = 5,
}

impl LogLevel {
    /// The integer nsqd reports for `GET /config/log_level` (1..=5).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Go's `LogLevel.String()`, used as nsqd's log-line level tag.
    pub fn go_name(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARNING",
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    /// Case-insensitive `debug|info|warn|error|fatal`, as flags, config and
    /// `PUT /config/log_level` accept; the error is nsqd's message.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            "fatal" => Ok(Self::Fatal),
            _ => Err(format!(
                "invalid log level '{s}' (debug, info, warn, error, fatal)"
            )),
        }
    }
}

/// Which client connections must use TLS (`--tls-required`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsRequired {
    /// TLS optional everywhere (`false`).
    #[default]
    None = 0,
    /// TCP clients must upgrade; plain HTTP still served (`tcp-https`).
    TcpHttps = 1,
    /// TCP must upgrade and plain HTTP answers 403 (`true`).
    All = 2,
}

impl TlsRequired {
    /// The integer nsqd reports for `GET /config/tls_required` (0/1/2).
    pub fn number(self) -> u8 {
        self as u8
    }
}

/// Lowest TLS version accepted (`--tls-min-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TlsMinVersion {
    /// `tls1.0` (nsqd's default).
    #[default]
    Tls10,
    /// `tls1.1`.
    Tls11,
    /// `tls1.2`.
    Tls12,
    /// `tls1.3`.
    Tls13,
}

impl TlsMinVersion {
    /// Go's `tls.VersionTLS1x` number, reported by `GET /config/tls_min_version`.
    pub fn go_value(self) -> u16 {
        match self {
            Self::Tls10 => 0x0301,
            Self::Tls11 => 0x0302,
            Self::Tls12 => 0x0303,
            Self::Tls13 => 0x0304,
        }
    }

    /// The spelling used on the command line (`tls1.2`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tls10 => "tls1.0",
            Self::Tls11 => "tls1.1",
            Self::Tls12 => "tls1.2",
            Self::Tls13 => "tls1.3",
        }
    }
}

/// Short description of a TOML value's type for error messages.
fn toml_type(v: &toml::Value) -> &'static str {
    v.type_str()
}

fn wrong_type(want: &str, v: &toml::Value) -> String {
    format!("expected {want}, found {}", toml_type(v))
}

/// How one option type is parsed, coerced and rendered; see the module docs.
pub(super) trait OptValue: Sized {
    /// Whether the flag is a switch (bare = true) or takes a value.
    const ARITY: Arity = Arity::Value;
    /// Go usage's type word (`string`, `int`, `duration`, `value`, or none).
    const TYPE_NAME: &'static str;

    /// Parses one command-line value.
    fn parse_flag(s: &str) -> Result<Self, String>;

    /// Applies one command-line occurrence; `first` is true for the first
    /// occurrence of this flag (lists restart then, like Go's flag.Value).
    fn set_flag(&mut self, first: bool, s: &str) -> Result<(), String> {
        let _ = first;
        *self = Self::parse_flag(s)?;
        Ok(())
    }

    /// Coerces a config-file value as nsqd (go-options) does.
    fn from_toml(v: &toml::Value) -> Result<Self, String>;

    /// The value as nsqd's `GET /config/:opt` JSON.
    fn to_json(&self) -> String;

    /// The `(default …)` text of Go's usage, `None` where Go omits it.
    fn usage_default(&self) -> Option<String>;
}

impl OptValue for String {
    const TYPE_NAME: &'static str = "string";

    fn parse_flag(s: &str) -> Result<Self, String> {
        Ok(s.to_string())
    }

    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| wrong_type("a string", v))
    }

    fn to_json(&self) -> String {
        go_json_string(self)
    }

    fn usage_default(&self) -> Option<String> {
        (!self.is_empty()).then(|| format!("{self:?}"))
    }
}

impl OptValue for bool {
    const ARITY: Arity = Arity::Switch;
    const TYPE_NAME: &'static str = "";

    fn parse_flag(s: &str) -> Result<Self, String> {
        parse_bool(s).ok_or_else(|| "invalid boolean (use true/false, 1/0, t/f)".to_string())
    }

    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Boolean(b) => Ok(*b),
            toml::Value::String(s) => Self::parse_flag(s),
            _ => Err(wrong_type("a boolean", v)),
        }
    }

    fn to_json(&self) -> String {
        self.to_string()
    }

    fn usage_default(&self) -> Option<String> {
        self.then(|| "true".to_string())
    }
}

impl OptValue for i64 {
    const TYPE_NAME: &'static str = "int";

    fn parse_flag(s: &str) -> Result<Self, String> {
        parse_int(s).map_err(str::to_string)
    }

    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(i) => Ok(*i),
            toml::Value::String(s) => s.parse().map_err(|_| "not an integer".to_string()),
            _ => Err(wrong_type("an integer", v)),
        }
    }

    fn to_json(&self) -> String {
        self.to_string()
    }

    fn usage_default(&self) -> Option<String> {
        (*self != 0).then(|| self.to_string())
    }
}

impl OptValue for usize {
    const TYPE_NAME: &'static str = "int";

    fn parse_flag(s: &str) -> Result<Self, String> {
        let i = parse_int(s).map_err(str::to_string)?;
        usize::try_from(i).map_err(|_| "must not be negative".to_string())
    }

    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        let i = i64::from_toml(v)?;
        usize::try_from(i).map_err(|_| "must not be negative".to_string())
    }

    fn to_json(&self) -> String {
        self.to_string()
    }

    fn usage_default(&self) -> Option<String> {
        (*self != 0).then(|| self.to_string())
    }
}

impl OptValue for Duration {
    const TYPE_NAME: &'static str = "duration";

    fn parse_flag(s: &str) -> Result<Self, String> {
        parse_go_duration(s).map_err(|e| e.to_string())
    }

    /// Strings are Go durations; integers are milliseconds (go-options).
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Self::parse_flag(s),
            toml::Value::Integer(ms) => u64::try_from(*ms)
                .map(Duration::from_millis)
                .map_err(|_| "negative durations are not supported".to_string()),
            _ => Err(wrong_type("a duration string or integer milliseconds", v)),
        }
    }

    fn to_json(&self) -> String {
        self.as_nanos().to_string()
    }

    fn usage_default(&self) -> Option<String> {
        (!self.is_zero()).then(|| format_go_duration(*self))
    }
}

impl OptValue for Vec<String> {
    const TYPE_NAME: &'static str = "value";

    fn parse_flag(s: &str) -> Result<Self, String> {
        Ok(vec![s.to_string()])
    }

    /// Each occurrence appends one item, verbatim (no comma splitting on the CLI).
    fn set_flag(&mut self, first: bool, s: &str) -> Result<(), String> {
        if first {
            self.clear();
        }
        self.push(s.to_string());
        Ok(())
    }

    /// TOML array of strings, or one comma-separated string (empty items dropped).
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Ok(s
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| "array items must be strings".to_string()),
            _ => Err(wrong_type(
                "an array of strings or a comma-separated string",
                v,
            )),
        }
    }

    fn to_json(&self) -> String {
        let items: Vec<String> = self.iter().map(|s| go_json_string(s)).collect();
        format!("[{}]", items.join(","))
    }

    fn usage_default(&self) -> Option<String> {
        None
    }
}

fn parse_float(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| format!("could not parse {s:?} as a number"))
}

impl OptValue for Vec<f64> {
    const TYPE_NAME: &'static str = "value";

    fn parse_flag(s: &str) -> Result<Self, String> {
        let mut v = Vec::new();
        v.set_flag(true, s)?;
        Ok(v)
    }

    /// Appends a comma list, then keeps the whole list sorted descending
    /// (nsqd's `FloatArray.Set`).
    fn set_flag(&mut self, first: bool, s: &str) -> Result<(), String> {
        if first {
            self.clear();
        }
        for piece in s.split(',') {
            self.push(parse_float(piece)?);
        }
        self.sort_by(|a, b| b.total_cmp(a));
        Ok(())
    }

    /// TOML array of numbers or a comma-separated string; order kept as given.
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => s.split(',').map(parse_float).collect(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::Float(f) => Some(*f),
                    toml::Value::Integer(i) => Some(*i as f64),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| "array items must be numbers".to_string()),
            _ => Err(wrong_type(
                "an array of numbers or a comma-separated string",
                v,
            )),
        }
    }

    fn to_json(&self) -> String {
        let items: Vec<String> = self.iter().map(|f| go_json_float(*f)).collect();
        format!("[{}]", items.join(","))
    }

    fn usage_default(&self) -> Option<String> {
        None
    }
}

/// A TOML scalar as Go's `fmt.Sprintf("%v")` would give it to a `Set` method.
fn toml_scalar_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

impl OptValue for LogLevel {
    const TYPE_NAME: &'static str = "value";

    fn parse_flag(s: &str) -> Result<Self, String> {
        s.parse()
    }

    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        let text = toml_scalar_text(v).ok_or_else(|| wrong_type("a log level string", v))?;
        Self::parse_flag(&text)
    }

    fn to_json(&self) -> String {
        self.number().to_string()
    }

    fn usage_default(&self) -> Option<String> {
        Some(self.go_name().to_string())
    }
}

impl OptValue for TlsRequired {
    const ARITY: Arity = Arity::Switch;
    const TYPE_NAME: &'static str = "";

    /// `tcp-https`, or any Go boolean (case-insensitive, like nsqd).
    fn parse_flag(s: &str) -> Result<Self, String> {
        let s = s.to_ascii_lowercase();
        if s == "tcp-https" {
            return Ok(Self::TcpHttps);
        }
        match parse_bool(&s) {
            Some(true) => Ok(Self::All),
            Some(false) => Ok(Self::None),
            None => Err("must be true, false or tcp-https".to_string()),
        }
    }

    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        let text =
            toml_scalar_text(v).ok_or_else(|| wrong_type("a boolean or \"tcp-https\"", v))?;
        Self::parse_flag(&text)
    }

    fn to_json(&self) -> String {
        self.number().to_string()
    }

    fn usage_default(&self) -> Option<String> {
        (*self != Self::None).then(|| self.number().to_string())
    }
}

impl OptValue for TlsMinVersion {
    const TYPE_NAME: &'static str = "value";

    fn parse_flag(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        [Self::Tls10, Self::Tls11, Self::Tls12, Self::Tls13]
            .into_iter()
            .find(|v| v.name() == lower)
            .ok_or_else(|| format!("unknown tlsVersionOption {lower:?}"))
    }

    /// An empty value leaves the setting unchanged, as nsqd does.
    fn set_flag(&mut self, _first: bool, s: &str) -> Result<(), String> {
        if !s.is_empty() {
            *self = Self::parse_flag(s)?;
        }
        Ok(())
    }

    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v.as_str() {
            Some("") => Ok(Self::default()),
            Some(s) => Self::parse_flag(s),
            None => Err(wrong_type("a string such as \"tls1.2\"", v)),
        }
    }

    fn to_json(&self) -> String {
        self.go_value().to_string()
    }

    fn usage_default(&self) -> Option<String> {
        Some(self.name().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_parse_and_number() {
        assert_eq!("WaRn".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert_eq!(
            "loud".parse::<LogLevel>().unwrap_err(),
            "invalid log level 'loud' (debug, info, warn, error, fatal)"
        );
        assert_eq!(LogLevel::Fatal.number(), 5);
        assert_eq!(
            TlsRequired::parse_flag("TCP-HTTPS"),
            Ok(TlsRequired::TcpHttps)
        );
        assert_eq!(TlsRequired::parse_flag("tRuE"), Ok(TlsRequired::All));
        assert_eq!(TlsRequired::parse_flag("0"), Ok(TlsRequired::None));
        assert!(TlsRequired::parse_flag("maybe").is_err());
        assert_eq!(
            TlsMinVersion::parse_flag("TLS1.3").map(|v| v.go_value()),
            Ok(772)
        );
        assert_eq!(
            TlsMinVersion::parse_flag("ssl3.0").unwrap_err(),
            "unknown tlsVersionOption \"ssl3.0\""
        );
    }

    #[test]
    fn toml_coercions() {
        let ms = toml::Value::Integer(1500);
        assert_eq!(Duration::from_toml(&ms), Ok(Duration::from_millis(1500)));
        let s = toml::Value::String("1m30s".into());
        assert_eq!(Duration::from_toml(&s), Ok(Duration::from_secs(90)));
        assert!(Duration::from_toml(&toml::Value::Float(1.5)).is_err());
        assert!(Duration::from_toml(&toml::Value::Integer(-1)).is_err());
        let list = toml::Value::String("a:1,b:2".into());
        assert_eq!(
            Vec::<String>::from_toml(&list),
            Ok(vec!["a:1".into(), "b:2".into()])
        );
        let floats = toml::Value::String("0.5, 1".into());
        assert_eq!(Vec::<f64>::from_toml(&floats), Ok(vec![0.5, 1.0]));
        assert_eq!(
            TlsRequired::from_toml(&toml::Value::Boolean(true)),
            Ok(TlsRequired::All)
        );
        assert_eq!(bool::from_toml(&toml::Value::String("F".into())), Ok(false));
        assert_eq!(i64::from_toml(&toml::Value::String("12".into())), Ok(12));
        assert!(i64::from_toml(&toml::Value::Float(1.0)).is_err());
    }

    #[test]
    fn lists_restart_then_append() {
        let mut v = vec!["default".to_string()];
        v.set_flag(true, "a").unwrap();
        v.set_flag(false, "b,c").unwrap();
        assert_eq!(v, ["a", "b,c"]);
        let mut f = Vec::<f64>::new();
        f.set_flag(true, "0.5,1").unwrap();
        f.set_flag(false, "0.99").unwrap();
        assert_eq!(f, [1.0, 0.99, 0.5]);
        assert_eq!(f.to_json(), "[1,0.99,0.5]");
        assert!(f.set_flag(false, "x").is_err());
    }
}
