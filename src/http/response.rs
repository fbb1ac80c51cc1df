//! nsqd's response conventions, built once here: "V1" responses (`X-NSQ-Content-Type`, text
//! or JSON, errors as `{"message":"…"}`), plain-text ones (`/ping`, `/debug/*`), and the
//! router's redirects, `OPTIONS` and 405 answers.

use bytes::Bytes;
use http_body_util::Full;
use hyper::ext::ReasonPhrase;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Response, StatusCode};

/// Every response body is complete before it is sent.
pub type Body = Full<Bytes>;
/// A response as the handlers build it.
pub type HttpResponse = Response<Body>;

const NSQ_CONTENT_TYPE: &str = "X-NSQ-Content-Type";
const NSQ_V1: &str = "nsq; version=1.0";
/// JSON bodies.
pub const JSON: &str = "application/json; charset=utf-8";
/// What Go's content sniffing gives nsqd's text bodies.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn build(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> HttpResponse {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // Go's status text for 413, which nsqd's clients see.
        resp.extensions_mut()
            .insert(ReasonPhrase::from_static(b"Request Entity Too Large"));
    }
    if let Some(ct) = content_type {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}

fn v1(mut resp: HttpResponse) -> HttpResponse {
    resp.headers_mut()
        .insert(NSQ_CONTENT_TYPE, HeaderValue::from_static(NSQ_V1));
    resp
}

/// Go sniffs a content type only for non-empty bodies.
fn sniffed(body: &Bytes) -> Option<&'static str> {
    (!body.is_empty()).then_some(TEXT)
}

/// V1 success with a text body (`OK`, the text `/stats`).
pub fn text(body: impl Into<Bytes>) -> HttpResponse {
    let body = body.into();
    v1(build(StatusCode::OK, sniffed(&body), body))
}

/// V1 success with no body.
pub fn empty() -> HttpResponse {
    v1(build(StatusCode::OK, None, Bytes::new()))
}

/// V1 success with a JSON body.
pub fn json(body: Vec<u8>) -> HttpResponse {
    v1(build(StatusCode::OK, Some(JSON), body.into()))
}

/// nsqd's answer to every plain-HTTP request under `--tls-required=true`: 403 and this exact
/// body (spaces included), with the V1 headers.
pub fn tls_required(https_port: i32) -> HttpResponse {
    let body = format!(r#"{{"message": "TLS_REQUIRED", "https_port": {https_port}}}"#);
    v1(build(StatusCode::FORBIDDEN, Some(JSON), body.into()))
}

/// V1 error: `status` and `{"message":"<message>"}`.
pub fn error(status: StatusCode, message: &str) -> HttpResponse {
    #[derive(serde::Serialize)]
    struct Message<'a> {
        message: &'a str,
    }
    let body = super::json::to_vec(&Message { message });
    v1(build(status, Some(JSON), body.into()))
}

/// nsqd's plain-text handlers (`/ping`, `/debug/setblockrate`): no `X-NSQ-Content-Type`.
pub fn plain(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    let body = body.into();
    build(status, sniffed(&body), body)
}

/// A body with its own content type (`/metrics`).
pub fn with_type(content_type: &'static str, body: impl Into<Bytes>) -> HttpResponse {
    build(StatusCode::OK, Some(content_type), body.into())
}

/// Go's `http.Redirect`: GET gets a small HTML body, HEAD the content type only, others
/// nothing.
pub fn redirect(status: u16, location: &str, method: &str) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let reason = status.canonical_reason().unwrap_or_default();
    let (ct, body) = match method {
        "GET" => (
            Some("text/html; charset=utf-8"),
            format!("<a href=\"{}\">{reason}</a>.\n\n", html_escape(location)),
        ),
        "HEAD" => (Some("text/html; charset=utf-8"), String::new()),
        _ => (None, String::new()),
    };
    let mut resp = build(status, ct, body.into());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// `OPTIONS` on a known path: 200, empty, `Allow`.
pub fn options(allow: &str) -> HttpResponse {
    with_allow(build(StatusCode::OK, None, Bytes::new()), allow)
}

/// 405 `METHOD_NOT_ALLOWED` with `Allow`.
pub fn method_not_allowed(allow: &str) -> HttpResponse {
    with_allow(
        error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
        allow,
    )
}

fn with_allow(mut resp: HttpResponse, allow: &str) -> HttpResponse {
    if let Ok(v) = HeaderValue::from_str(allow) {
        resp.headers_mut().insert(ALLOW, v);
    }
    resp
}

/// Go's `htmlEscape` for the redirect body.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(resp: HttpResponse) -> Vec<u8> {
        futures_lite::future::block_on(resp.into_body().collect())
            .map(|c| c.to_bytes().to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn v1_conventions() {
        let ok = text("OK");
        assert_eq!(ok.headers()[NSQ_CONTENT_TYPE], NSQ_V1);
        assert_eq!(ok.headers()[CONTENT_TYPE], TEXT);
        let e = empty();
        assert!(e.headers().get(CONTENT_TYPE).is_none());
        let err = error(StatusCode::BAD_REQUEST, "INVALID_TOPIC");
        assert_eq!(err.status(), 400);
        assert_eq!(err.headers()[CONTENT_TYPE], JSON);
        assert_eq!(body(err), br#"{"message":"INVALID_TOPIC"}"#);
        assert!(
            plain(StatusCode::OK, "OK")
                .headers()
                .get(NSQ_CONTENT_TYPE)
                .is_none()
        );
    }

    #[test]
    fn redirect_body_matches_go() {
        let r = redirect(301, "/ping", "GET");
        assert_eq!(r.headers()[LOCATION], "/ping");
        assert_eq!(body(r), b"<a href=\"/ping\">Moved Permanently</a>.\n\n");
        let r = redirect(301, "/stats?format=json&x=1", "GET");
        assert_eq!(
            body(r),
            b"<a href=\"/stats?format=json&amp;x=1\">Moved Permanently</a>.\n\n"
        );
        let r = redirect(307, "/pub", "POST");
        assert!(r.headers().get(CONTENT_TYPE).is_none());
        assert!(body(r).is_empty());
    }
}
