//! The one error type of option handling; its `Display` is what the binary
//! prints before exiting 1, so every message names the flag/key and value.

use std::fmt;

/// A command line, config file or option value that nsqd would refuse at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsError {
    /// Malformed flag such as `---x` or `-=v` (Go: "bad flag syntax").
    BadSyntax(String),
    /// A flag name nsqd does not define.
    UnknownFlag(String),
    /// A value flag given last on the command line without its value.
    MissingValue(String),
    /// A non-flag argument; nsqd takes none.
    Positional(String),
    /// An argument that is not valid UTF-8 (shown lossily).
    NotUtf8(String),
    /// A flag value that does not parse for the flag's type.
    InvalidValue {
        /// Flag name without dashes.
        flag: String,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The `--config` file could not be read or is not valid TOML.
    ConfigFile {
        /// Path given to `--config`.
        path: String,
        /// Underlying I/O or TOML error.
        reason: String,
    },
    /// A known config-file key holds a value of the wrong type or form.
    ConfigValue {
        /// Path given to `--config`.
        path: String,
        /// The config key, e.g. `msg_timeout`.
        key: String,
        /// The value rendered as TOML.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A startup check failed; the text is nsqd's own message.
    Invalid(String),
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSyntax(arg) => write!(f, "bad flag syntax: {arg}"),
            Self::UnknownFlag(name) => write!(f, "flag provided but not defined: -{name}"),
            Self::MissingValue(name) => write!(f, "flag needs an argument: -{name}"),
            Self::Positional(arg) => {
                write!(f, "unexpected argument {arg:?}: nsqd takes only flags")
            }
            Self::NotUtf8(arg) => write!(f, "argument {arg:?} is not valid UTF-8"),
            Self::InvalidValue {
                flag,
                value,
                reason,
            } => {
                write!(f, "invalid value {value:?} for flag -{flag}: {reason}")
            }
            Self::ConfigFile { path, reason } => {
                write!(f, "failed to load config file {path} - {reason}")
            }
            Self::ConfigValue {
                path,
                key,
                value,
                reason,
            } => write!(
                f,
                "failed parsing {key} = {value} in config file {path}: {reason}"
            ),
            Self::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for OptionsError {}
