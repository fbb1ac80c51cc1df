//! Logs in nsqd's shape: `<prefix><date> <time.micros> <LEVEL>: <message>`, through `tracing`,
//! filtered by nsqd's `--log-level` values.

use std::fmt;

use time::OffsetDateTime;
use time::macros::format_description;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::options::LogLevel;

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

/// Installs the global logger writing to stderr at `level`.
pub fn init(level: LogLevel, prefix: &str) {
    let filter = match level {
        LogLevel::Debug => tracing::level_filters::LevelFilter::DEBUG,
        LogLevel::Info => tracing::level_filters::LevelFilter::INFO,
        LogLevel::Warn => tracing::level_filters::LevelFilter::WARN,
        LogLevel::Error | LogLevel::Fatal => tracing::level_filters::LevelFilter::ERROR,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(filter)
        .event_format(NsqdFormat {
            prefix: prefix.to_string(),
        })
        .try_init();
}
