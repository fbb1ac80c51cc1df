//! Logs in nsqd's shape: `<prefix><date> <time.micros> <LEVEL>: <message>`, through `tracing`,
//! filtered by nsqd's `--log-level` values.

use std::fmt;
use std::sync::OnceLock;

use time::OffsetDateTime;
use time::macros::format_description;
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

use crate::options::LogLevel;

/// The `tracing` target of an error the process exits for: logged with nsqd's `FATAL` level.
pub const FATAL_TARGET: &str = "fatal";

/// nsqd's line layout with a fixed prefix (`--log-prefix`).
struct NsqdFormat {
    prefix: String,
}

impl<S, N> FormatEvent<S, N> for NsqdFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = OffsetDateTime::now_utc();
        let stamp = now
            .format(format_description!(
                "[year]/[month]/[day] [hour]:[minute]:[second].[subsecond digits:6]"
            ))
            .unwrap_or_default();
        let level = match *event.metadata().level() {
            tracing::Level::ERROR if event.metadata().target() == FATAL_TARGET => "FATAL",
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            _ => "DEBUG",
        };
        write!(w, "{}{stamp} {level}: ", self.prefix)?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// The live level filter, so `PUT /config/log_level` can change it.
static LEVEL: OnceLock<reload::Handle<LevelFilter, Registry>> = OnceLock::new();

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Fatal => LevelFilter::ERROR,
    }
}

/// Installs the global logger writing to stderr at `level`.
pub fn init(level: LogLevel, prefix: &str) {
    let (filter, handle) = reload::Layer::new(level_filter(level));
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(NsqdFormat {
            prefix: prefix.to_string(),
        });
    if tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .is_ok()
    {
        let _ = LEVEL.set(handle);
    }
}

/// Changes the level of the logger [`init`] installed (`PUT /config/log_level`).
pub fn set_level(level: LogLevel) -> Result<(), String> {
    let handle = LEVEL.get().ok_or("the logger is not installed")?;
    handle
        .reload(level_filter(level))
        .map_err(|e| e.to_string())
}
