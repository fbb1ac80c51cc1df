//! Node-level endpoints: `/ping`, `/info`, `GET/PUT /config/:opt`, and nsqd's `/debug` ones.

use hyper::StatusCode;
use serde::Serialize;

use super::{ApiError, BodyError, Call, Reply};
use crate::http::json;
use crate::http::query::Query;
use crate::http::response::{self, HttpResponse};
use crate::http::server::HttpContext;
use crate::options::{LogLevel, os_hostname};
use crate::settings::NSQD_VERSION;
use crate::stats::{NodeStats, StatsFilter};

const INVALID_VALUE: ApiError = ApiError(StatusCode::BAD_REQUEST, "INVALID_VALUE");
const INVALID_OPTION: ApiError = ApiError(StatusCode::BAD_REQUEST, "INVALID_OPTION");

/// `GET /ping`: `OK`, or 500 with `NOK - <error>` while a core's storage is failing.
pub(super) async fn ping(ctx: &HttpContext) -> Reply {
    let filter = StatsFilter {
        include_clients: false,
        include_topics: false,
        ..StatsFilter::default()
    };
    let node = NodeStats::merge(&filter, ctx.shard.gather_stats(&filter).await);
    let status = match node.health_error {
        None => StatusCode::OK,
        Some(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Ok(response::plain(status, node.health()))
}

/// `GET /info`: version, addresses, ports and client limits, as nsqd v1.3.0 lists them.
pub(super) fn info(ctx: &HttpContext) -> Reply {
    #[derive(Serialize)]
    struct Info<'a> {
        version: &'a str,
        broadcast_address: &'a str,
        hostname: String,
        http_port: i32,
        tcp_port: i32,
        start_time: i64,
        max_heartbeat_interval: u128,
        max_output_buffer_size: i64,
        max_output_buffer_timeout: u128,
        max_deflate_level: i64,
    }
    let shared = &ctx.shared;
    let o = shared.options();
    let body = json::to_vec(&Info {
        version: NSQD_VERSION,
        broadcast_address: &o.broadcast_address,
        hostname: os_hostname(),
        http_port: shared.http_port(),
        tcp_port: shared.tcp_port(),
        start_time: shared.start_unix(),
        max_heartbeat_interval: o.max_heartbeat_interval.as_nanos(),
        max_output_buffer_size: o.max_output_buffer_size,
        max_output_buffer_timeout: o.max_output_buffer_timeout.as_nanos(),
        max_deflate_level: o.max_deflate_level,
    });
    Ok(response::json(body))
}

/// `GET /config/:opt` reads an option by its config key; `PUT` changes `log_level` (live) or
/// `nsqlookupd_tcp_addresses` (peers reconnected at once), then answers with the new value.
pub(super) async fn config(ctx: &HttpContext, mut call: Call, put: bool) -> Reply {
    let opt = call.param.clone().unwrap_or_default();
    if put {
        let max = ctx.shard.settings.limits.max_msg_size.max(0) as u64;
        let body = match call.body(max).await {
            Ok(b) if !b.is_empty() => b,
            Ok(_) | Err(BodyError::TooBig) => {
                return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_VALUE"));
            }
            Err(BodyError::Read) => return Err(ApiError::INTERNAL_ERROR),
        };
        match opt.as_str() {
            "nsqlookupd_tcp_addresses" => {
                let addrs: Option<Vec<String>> =
                    crate::go_json::from_slice(&body).map_err(|_| INVALID_VALUE)?;
                let addrs = addrs.unwrap_or_default();
                // Removed peers are dropped and new ones connected (and sent every
                // registration) by the lookupd task on the first core.
                ctx.shard.set_lookupd_peers(addrs.clone());
                ctx.shared.set_option(|o| o.lookupd_tcp_addresses = addrs);
            }
            "log_level" => {
                let text = std::str::from_utf8(&body).map_err(|_| INVALID_VALUE)?;
                let level = parse_log_level(text).ok_or(INVALID_VALUE)?;
                if let Err(e) = crate::logging::set_level(level) {
                    tracing::error!("failed to change the log level - {e}");
                    return Err(ApiError::INTERNAL_ERROR);
                }
                ctx.shared.set_option(|o| o.log_level = level);
            }
            _ => return Err(INVALID_OPTION),
        }
    }
    let value = ctx
        .shared
        .options()
        .config_value_json(&opt)
        .ok_or(INVALID_OPTION)?;
    // nsqd writes a string option as it is (text), anything else as JSON.
    match serde_json::from_str::<serde_json::Value>(&value) {
        Ok(serde_json::Value::String(s)) if s.is_empty() => Ok(response::empty()),
        Ok(serde_json::Value::String(s)) => Ok(response::text(s)),
        _ => Ok(response::json(value.into_bytes())),
    }
}

/// nsqd's `lg.ParseLogLevel`: case-insensitive, nothing trimmed.
fn parse_log_level(s: &str) -> Option<LogLevel> {
    match s.to_ascii_lowercase().as_str() {
        "debug" => Some(LogLevel::Debug),
        "info" => Some(LogLevel::Info),
        "warn" => Some(LogLevel::Warn),
        "error" => Some(LogLevel::Error),
        "fatal" => Some(LogLevel::Fatal),
        _ => None,
    }
}

/// Go's `net/http/pprof` endpoints: there is no Go runtime to profile.
pub(super) fn pprof() -> HttpResponse {
    response::plain(
        StatusCode::NOT_IMPLEMENTED,
        "pprof profiles describe a Go runtime; nsqd-uring has none (use perf or /metrics)\n",
    )
}

/// `PUT /debug/setblockrate?rate=N`: nsqd validates `rate` (plain-text 400) and then fails
/// with 500 `INTERNAL_ERROR` (its plain-text wrapper cannot render an empty success), so
/// nsqd-uring answers the same.
pub(super) fn set_block_rate(call: Call) -> Reply {
    let query = Query::parse(&call.raw_query).unwrap_or_default();
    let raw = query.get("rate").unwrap_or_default();
    match go_atoi(raw) {
        Ok(_) => Err(ApiError::INTERNAL_ERROR),
        Err(why) => Ok(response::plain(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid block rate : strconv.Atoi: parsing {}: {why}",
                go_quote(raw)
            ),
        )),
    }
}

/// Go's `strconv.Atoi` on a 64-bit platform; the error is Go's wording.
fn go_atoi(s: &str) -> Result<i64, &'static str> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid syntax");
    }
    s.parse::<i64>().map_err(|_| "value out of range")
}

fn go_quote(s: &str) -> String {
    crate::protocol::names::go_quote(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_parse_like_nsqd() {
        assert_eq!(parse_log_level("WARN"), Some(LogLevel::Warn));
        assert_eq!(parse_log_level("debug"), Some(LogLevel::Debug));
        assert_eq!(parse_log_level("info\n"), None);
        assert_eq!(parse_log_level(""), None);
    }

    #[test]
    fn atoi_matches_go() {
        assert_eq!(go_atoi("12"), Ok(12));
        assert_eq!(go_atoi("-3"), Ok(-3));
        assert_eq!(go_atoi("x"), Err("invalid syntax"));
        assert_eq!(go_atoi(""), Err("invalid syntax"));
        assert_eq!(go_atoi("99999999999999999999"), Err("value out of range"));
    }
}
