//! Request dispatch: the router's decision turned into a response, nsqd's request log line,
//! and what every handler shares (parameters, bounded body reads, error values).
//!
//! One file per endpoint family: `publish` (`/pub`, `/mpub`), `admin` (topic and channel
//! actions), `stats` (`/stats`, `/metrics`), `node` (`/ping`, `/info`, `/config`, `/debug`).

mod admin;
mod node;
mod publish;
mod stats;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{HeaderMap, Request, StatusCode};

use super::query::{Query, unescape_path};
use super::response::{self, HttpResponse};
use super::router::{self, Endpoint, Routed};
use super::server::HttpContext;
use crate::options::format_go_duration;

/// An nsqd HTTP error: status and `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiError(pub StatusCode, pub &'static str);

impl ApiError {
    const INVALID_REQUEST: ApiError = ApiError(StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    const INTERNAL_ERROR: ApiError = ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR");
    const EXITING: ApiError = ApiError(StatusCode::SERVICE_UNAVAILABLE, "EXITING");
}

/// What a handler returns; errors become nsqd's JSON error responses.
type Reply = Result<HttpResponse, ApiError>;

/// One routed request as handlers see it.
struct Call {
    /// `:opt` of `/config/:opt`.
    param: Option<String>,
    /// The raw query string.
    raw_query: String,
    headers: HeaderMap,
    body: Incoming,
}

impl Call {
    /// The query as Go's `url.ParseQuery` reads it.
    fn query(&self) -> Result<Query, ApiError> {
        Query::parse(&self.raw_query).map_err(|_| {
            tracing::error!("failed to parse request params - invalid query");
            ApiError::INVALID_REQUEST
        })
    }

    /// The declared body length, if any.
    fn content_length(&self) -> Option<u64> {
        self.headers
            .get(CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Reads the body, failing once it exceeds `limit` bytes (nsqd's `LimitReader(max+1)`).
    async fn body(&mut self, limit: u64) -> Result<Bytes, BodyError> {
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        let mut total = 0u64;
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|_| BodyError::Read)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > limit {
                return Err(BodyError::TooBig);
            }
            // A body in one chunk is kept as it is (no copy); more chunks are joined.
            if first.is_none() && rest.is_empty() {
                first = Some(data);
            } else {
                if let Some(f) = first.take() {
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&data);
            }
        }
        Ok(first.unwrap_or_else(|| rest.freeze()))
    }

    /// Reads and drops the body as nsqd's `NewReqParams` does (bounded here).
    async fn discard_body(&mut self, limit: u64) {
        let _ = self.body(limit).await;
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyError {
    /// Longer than the limit.
    TooBig,
    /// The connection failed mid-body.
    Read,
}

/// Serves one request.
pub async fn handle(ctx: &HttpContext, req: Request<Incoming>, remote: SocketAddr) -> HttpResponse {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str();
    let raw_path = parts.uri.path();
    // Go's server answers `OPTIONS *` itself, before any router.
    if method == "OPTIONS" && raw_path == "*" {
        return response::plain(StatusCode::OK, Bytes::new());
    }
    let Some(path) = unescape_path(raw_path) else {
        return response::plain(StatusCode::BAD_REQUEST, "400 Bad Request");
    };
    let (resp, logged) = match router::route(method, &path, parts.uri.query()) {
        Routed::Endpoint { endpoint, param } => {
            let call = Call {
                param,
                raw_query: parts.uri.query().unwrap_or_default().to_string(),
                headers: parts.headers,
                body,
            };
            let resp = dispatch(ctx, endpoint, method, call)
                .await
                .unwrap_or_else(|ApiError(status, msg)| response::error(status, msg));
            // nsqd logs every endpoint but /pub, /mpub and Go's pprof handlers.
            let logged = !matches!(endpoint, Endpoint::Pub | Endpoint::Mpub | Endpoint::Pprof);
            (resp, logged)
        }
        Routed::Redirect { status, location } => {
            (response::redirect(status, &location, method), false)
        }
        Routed::Options { allow } => (response::options(&allow), false),
        Routed::MethodNotAllowed { allow } => (response::method_not_allowed(&allow), true),
        Routed::NotFound => (response::error(StatusCode::NOT_FOUND, "NOT_FOUND"), true),
    };
    if logged {
        tracing::info!(
            "{} {} {} ({}) {}",
            resp.status().as_u16(),
            method,
            parts.uri,
            remote,
            format_go_duration(start.elapsed())
        );
    }
    resp
}

async fn dispatch(ctx: &HttpContext, endpoint: Endpoint, method: &str, call: Call) -> Reply {
    match endpoint {
        Endpoint::Ping => node::ping(ctx).await,
        Endpoint::Info => node::info(ctx),
        Endpoint::Pub => publish::publish(ctx, call).await,
        Endpoint::Mpub => publish::multi_publish(ctx, call).await,
        Endpoint::Stats => stats::stats(ctx, call).await,
        Endpoint::Metrics => stats::metrics(ctx, call).await,
        Endpoint::TopicCreate => admin::create_topic(ctx, call).await,
        Endpoint::TopicDelete => admin::delete_topic(ctx, call).await,
        Endpoint::TopicEmpty => admin::empty_topic(ctx, call).await,
        Endpoint::TopicPause => admin::pause_topic(ctx, call, true).await,
        Endpoint::TopicUnpause => admin::pause_topic(ctx, call, false).await,
        Endpoint::ChannelCreate => admin::channel(ctx, call, admin::ChannelAction::Create).await,
        Endpoint::ChannelDelete => admin::channel(ctx, call, admin::ChannelAction::Delete).await,
        Endpoint::ChannelEmpty => admin::channel(ctx, call, admin::ChannelAction::Empty).await,
        Endpoint::ChannelPause => {
            admin::channel(ctx, call, admin::ChannelAction::Pause(true)).await
        }
        Endpoint::ChannelUnpause => {
            admin::channel(ctx, call, admin::ChannelAction::Pause(false)).await
        }
        Endpoint::ConfigGet | Endpoint::ConfigPut => node::config(ctx, call, method == "PUT").await,
        Endpoint::Pprof => Ok(node::pprof()),
        Endpoint::SetBlockRate => node::set_block_rate(call),
        Endpoint::FreeMemory => Err(ApiError::INTERNAL_ERROR),
    }
}
