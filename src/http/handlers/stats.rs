//! `/stats` (nsqd's, text or JSON) and `/metrics` (Prometheus): one snapshot gathered from
//! every core in one mesh round, then rendered.

use super::{Call, Reply};
use crate::http::query::bool_param;
use crate::http::server::HttpContext;
use crate::http::{metrics, response, stats as render};
use crate::stats::{NodeStats, ProcessFigures, StatsFilter};

/// `GET /stats?format=json&topic=…&channel=…&include_clients=…&include_mem=…`.
pub(super) async fn stats(ctx: &HttpContext, mut call: Call) -> Reply {
    let limit = ctx.shard.settings.limits.max_body_size.max(0) as u64;
    call.discard_body(limit).await;
    let query = call.query()?;
    let flag = |key| query.get(key).and_then(bool_param).unwrap_or(true);
    let non_empty = |key| query.get(key).filter(|v| !v.is_empty()).map(str::to_string);
    let filter = StatsFilter {
        topic: non_empty("topic"),
        channel: non_empty("channel"),
        include_clients: flag("include_clients"),
        include_topics: true,
    };
    let include_mem = flag("include_mem");
    let json = query.get("format") == Some("json");
    let node = NodeStats::merge(&filter, ctx.shard.gather_stats(&filter).await);
    let process = include_mem.then(ProcessFigures::read);
    let shared = &ctx.shared;
    if json {
        Ok(response::json(render::json(
            &node,
            shared,
            process.as_ref(),
        )))
    } else {
        Ok(response::text(render::text(
            &node,
            shared,
            process.as_ref(),
        )))
    }
}

/// `GET /metrics`: Prometheus text exposition of the same snapshot, without client lists.
pub(super) async fn metrics(ctx: &HttpContext, _call: Call) -> Reply {
    let filter = StatsFilter {
        include_clients: false,
        ..StatsFilter::default()
    };
    let node = NodeStats::merge(&filter, ctx.shard.gather_stats(&filter).await);
    let body = metrics::render(&node, &ProcessFigures::read(), &ctx.shared);
    Ok(response::with_type(response::PROMETHEUS_TEXT, body))
}
