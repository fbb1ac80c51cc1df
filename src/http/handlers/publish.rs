//! `/pub` and `/mpub`: nsqd's checks in nsqd's order, then one publish on the topic's owner
//! core (in place or one mesh round trip away).

use hyper::StatusCode;

use super::{ApiError, BodyError, Call, Reply};
use crate::http::mpub::{self, MpubError};
use crate::http::query::{Query, bool_param};
use crate::http::response;
use crate::http::server::HttpContext;
use crate::mesh::{AdminOp, PublishCmd};
use crate::protocol::codec::go_millis_to_nanos;
use crate::protocol::names::is_valid_name;

const MSG_TOO_BIG: ApiError = ApiError(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG");
const BODY_TOO_BIG: ApiError = ApiError(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_BIG");

/// `POST /pub?topic=…[&defer=ms]`: the body is one message.
pub(super) async fn publish(ctx: &HttpContext, mut call: Call) -> Reply {
    let limits = ctx.shard.settings.limits;
    let max_msg = limits.max_msg_size.max(0) as u64;
    if call.content_length().is_some_and(|n| n > max_msg) {
        return Err(MSG_TOO_BIG);
    }
    let body = match call.body(max_msg).await {
        Ok(b) => b,
        Err(BodyError::TooBig) => return Err(MSG_TOO_BIG),
        Err(BodyError::Read) => return Err(ApiError::INTERNAL_ERROR),
    };
    if body.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "MSG_EMPTY"));
    }
    let query = call.query()?;
    let topic = topic_param(&query)?;
    let defer_ms = match query.get("defer") {
        None => 0,
        Some(raw) => match raw.parse::<i64>().map(go_millis_to_nanos) {
            Ok(ns) if (0..=go_millis_to_nanos(limits.max_req_timeout_ms)).contains(&ns) => {
                (ns / 1_000_000) as u64
            }
            _ => {
                // nsqd has already created the topic when it looks at `defer`.
                create_topic(ctx, &topic).await?;
                return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_DEFER"));
            }
        },
    };
    put(ctx, topic, vec![body], defer_ms).await
}

/// `POST /mpub?topic=…[&binary=true]`: newline-separated messages, or nsqd's binary layout.
pub(super) async fn multi_publish(ctx: &HttpContext, mut call: Call) -> Reply {
    let limits = ctx.shard.settings.limits;
    let max_msg = limits.max_msg_size.max(0) as u64;
    let max_body = limits.max_body_size.max(0) as u64;
    if call.content_length().is_some_and(|n| n > max_body) {
        return Err(BODY_TOO_BIG);
    }
    let query = call.query()?;
    let topic = topic_param(&query)?;
    // nsqd counts an unrecognised `binary` value as true.
    let binary = query
        .get("binary")
        .is_some_and(|v| bool_param(v).unwrap_or(true));
    let body = match call.body(max_body).await {
        Ok(b) => Ok(b),
        Err(BodyError::TooBig) => Err(BODY_TOO_BIG),
        Err(BodyError::Read) => Err(ApiError::INTERNAL_ERROR),
    };
    let parsed = body.and_then(|body| {
        let msgs = if binary {
            mpub::parse_binary(&body, max_msg, max_body)
        } else {
            mpub::split_lines(&body, max_msg)
        };
        msgs.map_err(|e: MpubError| ApiError(StatusCode::PAYLOAD_TOO_LARGE, e.message()))
    });
    match parsed {
        Ok(bodies) if !bodies.is_empty() => put(ctx, topic, bodies, 0).await,
        // nsqd creates the topic before it reads the body, whatever the body holds.
        Ok(_) => create_topic(ctx, &topic)
            .await
            .map(|()| response::text("OK")),
        Err(e) => {
            create_topic(ctx, &topic).await?;
            Err(e)
        }
    }
}

/// nsqd's `getTopicFromQuery` checks.
fn topic_param(query: &Query) -> Result<String, ApiError> {
    let topic = query
        .get("topic")
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC"))?;
    if !is_valid_name(topic.as_bytes()) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_TOPIC"));
    }
    Ok(topic.to_string())
}

async fn create_topic(ctx: &HttpContext, topic: &str) -> Result<(), ApiError> {
    let op = AdminOp::CreateTopic {
        topic: topic.to_string(),
    };
    ctx.shard.admin(op).await.map_err(|_| ApiError::EXITING)
}

async fn put(ctx: &HttpContext, topic: String, bodies: Vec<bytes::Bytes>, defer_ms: u64) -> Reply {
    let shard = &ctx.shard;
    if shard.is_shutting_down() {
        return Err(ApiError::EXITING);
    }
    let owner = shard.owner_of(&topic);
    let cmd = PublishCmd {
        topic,
        bodies,
        defer_ms,
    };
    let outcome = shard.publish(owner, vec![cmd]).await;
    match outcome.error {
        None => Ok(response::text("OK")),
        Some(e) => {
            tracing::error!("HTTP: publish failed - {e}");
            Err(ApiError::EXITING)
        }
    }
}
