//! `--config FILE`: nsqd's TOML config file, applied under command-line flags.
//!
//! Keys are the table's config keys; unknown keys are ignored (nsqd shares
//! files with other tools). A bad value for a known key is fatal even when a
//! flag overrides it, so a broken file never goes unnoticed.

use super::OptionsError;
use super::table::{OPTIONS, Options};

/// Reads and parses the file, naming it in any error.
fn load(path: &str) -> Result<toml::Table, OptionsError> {
    let file_error = |reason: String| OptionsError::ConfigFile {
        path: path.to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    text.parse::<toml::Table>()
        .map_err(|e| file_error(one_line(&text, &e)))
}

/// A TOML error as `line L, column C: message`, fit for a one-line log.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_string();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: {}", e.message())
}

/// Applies every known key of the file at `path` to `opts`, except those
/// whose flag appears in `on_cli` (command line wins over the file).
pub(super) fn apply(opts: &mut Options, path: &str, on_cli: &[&str]) -> Result<(), OptionsError> {
    let table = load(path)?;
    for def in OPTIONS {
        let Some(key) = def.key else { continue };
        let Some(value) = table.get(key) else {
            continue;
        };
        let value_error = |reason: String| OptionsError::ConfigValue {
            path: path.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            reason,
        };
        (def.check_toml)(value).map_err(value_error)?;
        if !on_cli.contains(&def.flag) {
            (def.set_toml)(opts, value).map_err(value_error)?;
        }
    }
    Ok(())
}
