//! nsqd's command line and config file, for nsqd-uring (a drop-in `nsqd`).
//!
//! [`parse_args`] accepts Go `flag` syntax, merges `--config` TOML under the
//! command line, applies nsqd's defaults and runs nsqd's startup checks.
//! Every option is defined once, in `table.rs`.
//!
//! Submodules, one job each: `table` (the option rows), `values` (per-type
//! parsing/rendering), `goflags` (Go flag syntax), `config_file` (TOML),
//! `validate` (startup checks, unbuilt features), `duration` (Go durations),
//! `strconv` (Go number/JSON text), `host` (hostname-derived defaults),
//! `error` (the error type).

mod config_file;
pub mod duration;
mod error;
mod goflags;
mod host;
mod strconv;
mod table;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::ffi::OsString;

pub use duration::{GoDurationError, format_go_duration, parse_go_duration};
pub use error::OptionsError;
pub use host::{default_node_id, os_hostname};
pub use strconv::{go_float_v, go_json_float};
pub use table::Options;
pub use validate::UNBUILT_FLAGS;
pub use values::{LogLevel, TlsMinVersion, TlsRequired};

use goflags::{Token, Tokens};
use table::by_flag;

/// What the process should do after reading its arguments.
// `Run` is much larger than `Exit`, but it is built once at startup.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Start the broker with these options.
    Run(Options),
    /// Print `message` and exit with `code` (`--help`, `--version`).
    Exit {
        /// Text to print (no trailing newline).
        message: String,
        /// Process exit status.
        code: i32,
        /// On stderr (the usage, as Go's flag package prints it) rather than stdout.
        to_stderr: bool,
    },
}

/// The `--version` line, in nsqd's format with our build instead of Go's.
pub fn version_line() -> String {
    format!(
        "nsqd v1.3.0 (built w/nsqd-uring {})",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses `args` (including argv\[0\]) like nsqd: Go flag syntax, then the
/// `--config` file for options not given as flags, then defaults; finally
/// nsqd's startup checks ([`Options::validate`]).
pub fn parse_args<I, T>(args: I) -> Result<Parsed, OptionsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args = args
        .into_iter()
        .skip(1)
        .map(|a| {
            a.into()
                .into_string()
                .map_err(|a| OptionsError::NotUtf8(a.to_string_lossy().into_owned()))
        })
        .collect::<Result<Vec<String>, _>>()?;

    let mut opts = Options::default();
    let mut on_cli: Vec<&'static str> = Vec::new();
    for token in Tokens::new(&args, |name| by_flag(name).map(|d| d.arity)) {
        let (name, value) = match token? {
            Token::Help => {
                return Ok(Parsed::Exit {
                    message: table::usage(),
                    code: 0,
                    to_stderr: true,
                });
            }
            Token::Flag { name, value } => (name, value.unwrap_or("true")),
        };
        let def = by_flag(name).ok_or_else(|| OptionsError::UnknownFlag(name.to_string()))?;
        let first = !on_cli.contains(&def.flag);
        (def.set_flag)(&mut opts, first, value).map_err(|reason| OptionsError::InvalidValue {
            flag: name.to_string(),
            value: value.to_string(),
            reason,
        })?;
        if first {
            on_cli.push(def.flag);
        }
    }

    if opts.version {
        return Ok(Parsed::Exit {
            message: version_line(),
            code: 0,
            to_stderr: false,
        });
    }
    if !opts.config.is_empty() {
        let path = opts.config.clone();
        config_file::apply(&mut opts, &path, &on_cli)?;
    }
    opts.validate()?;
    Ok(Parsed::Run(opts))
}
