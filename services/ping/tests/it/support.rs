//! What ping's integration tests share: sending a request through [`app`]
//! and reading the answer.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use pingpong_ping::{AppState, app};
use serde_json::Value;
use tower::ServiceExt;

/// An answer: status, headers and the body as JSON (`Null` when empty, a
/// JSON string when not JSON).
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Value,
}

/// Sends `request` to `app(state)`.
pub async fn send(state: AppState, request: Request<Body>) -> Reply {
    let response = app(state).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// `POST /ping` with `body` and, if given, a `Content-Type`.
pub fn post(content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::post("/ping");
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).unwrap()
}

/// The JSON content type.
pub const JSON: Option<&str> = Some("application/json");
