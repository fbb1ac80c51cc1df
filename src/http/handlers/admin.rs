//! Topic and channel administration: `/topic/{create,delete,empty,pause,unpause}` and
//! `/channel/{create,delete,empty,pause,unpause}`, with nsqd's parameter checks (which differ
//! per endpoint) and the action applied on the topic's owner core.

use hyper::StatusCode;

use super::{ApiError, Call, Reply};
use crate::http::query::Query;
use crate::http::response;
use crate::http::server::HttpContext;
use crate::mesh::{AdminError, AdminOp};
use crate::protocol::names::is_valid_name;

const MISSING_ARG_TOPIC: ApiError = ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC");
const INVALID_TOPIC: ApiError = ApiError(StatusCode::BAD_REQUEST, "INVALID_TOPIC");
const TOPIC_NOT_FOUND: ApiError = ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND");
const CHANNEL_NOT_FOUND: ApiError = ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND");

/// A channel endpoint's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChannelAction {
    Create,
    Delete,
    Empty,
    Pause(bool),
}

/// `POST /topic/create`: name validated, topic created.
pub(super) async fn create_topic(ctx: &HttpContext, mut call: Call) -> Reply {
    let query = call.query()?;
    let topic = topic_arg(&query, true)?;
    drain(ctx, &mut call).await;
    apply(ctx, AdminOp::CreateTopic { topic }).await
}

/// `POST /topic/delete`: no name validation (nsqd's), 404 when absent.
pub(super) async fn delete_topic(ctx: &HttpContext, mut call: Call) -> Reply {
    drain(ctx, &mut call).await;
    let topic = topic_arg(&call.query()?, false)?;
    apply(ctx, AdminOp::DeleteTopic { topic }).await
}

/// `POST /topic/empty`: name validated, 404 when absent.
pub(super) async fn empty_topic(ctx: &HttpContext, mut call: Call) -> Reply {
    drain(ctx, &mut call).await;
    let topic = topic_arg(&call.query()?, true)?;
    apply(ctx, AdminOp::EmptyTopic { topic }).await
}

/// `POST /topic/pause` and `/topic/unpause`: no name validation, 404 when absent.
pub(super) async fn pause_topic(ctx: &HttpContext, mut call: Call, paused: bool) -> Reply {
    drain(ctx, &mut call).await;
    let topic = topic_arg(&call.query()?, false)?;
    apply(ctx, AdminOp::PauseTopic { topic, paused }).await
}

/// `POST /channel/…`: nsqd's `GetTopicChannelArgs` (`INVALID_ARG_TOPIC` wording), then the
/// topic must exist, then (but for create) the channel.
pub(super) async fn channel(ctx: &HttpContext, mut call: Call, action: ChannelAction) -> Reply {
    drain(ctx, &mut call).await;
    let query = call.query()?;
    let bad = |msg| ApiError(StatusCode::BAD_REQUEST, msg);
    let topic = query.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if !is_valid_name(topic.as_bytes()) {
        return Err(bad("INVALID_ARG_TOPIC"));
    }
    let channel = query.get("channel").ok_or(bad("MISSING_ARG_CHANNEL"))?;
    if !is_valid_name(channel.as_bytes()) {
        return Err(bad("INVALID_ARG_CHANNEL"));
    }
    let (topic, channel) = (topic.to_string(), channel.to_string());
    let op = match action {
        ChannelAction::Create => AdminOp::CreateChannel { topic, channel },
        ChannelAction::Delete => AdminOp::DeleteChannel { topic, channel },
        ChannelAction::Empty => AdminOp::EmptyChannel { topic, channel },
        ChannelAction::Pause(paused) => AdminOp::PauseChannel {
            topic,
            channel,
            paused,
        },
    };
    apply(ctx, op).await
}

/// The `topic` parameter; `validate` for the endpoints where nsqd checks the name.
fn topic_arg(query: &Query, validate: bool) -> Result<String, ApiError> {
    let topic = query.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if validate && !is_valid_name(topic.as_bytes()) {
        return Err(INVALID_TOPIC);
    }
    Ok(topic.to_string())
}

/// nsqd reads (and ignores) these endpoints' bodies.
async fn drain(ctx: &HttpContext, call: &mut Call) {
    let limit = ctx.shard.settings.limits.max_body_size.max(0) as u64;
    call.discard_body(limit).await;
}

async fn apply(ctx: &HttpContext, op: AdminOp) -> Reply {
    match ctx.shard.admin(op).await {
        Ok(()) => Ok(response::empty()),
        Err(AdminError::TopicNotFound) => Err(TOPIC_NOT_FOUND),
        Err(AdminError::ChannelNotFound) => Err(CHANNEL_NOT_FOUND),
        Err(AdminError::Exiting) => Err(ApiError::EXITING),
    }
}
