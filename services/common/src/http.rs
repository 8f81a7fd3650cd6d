//! HTTP pieces shared by the services: the error type and its JSON body, a
//! JSON extractor with JSON rejections, health handlers, fallbacks, the
//! request deadline and the shutdown signal. The server itself (connections,
//! header timeout, draining) is [`crate::server`].
//!
//! Client errors name what is wrong; 5xx bodies are generic and the details
//! go to the log only. Nothing here knows about AMQP.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::metrics::{HttpMetrics, UNMATCHED_ROUTE, track_http};

/// Body of every error response: `{"error": "..."}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong (generic for 5xx).
    pub error: String,
}

/// Boxed error used as the hidden cause of 5xx responses.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An HTTP handler error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The client sent something invalid (4xx); `message` names the field.
    #[error("{message}")]
    Client {
        /// Status code, 400..=499.
        status: StatusCode,
        /// Shown to the client.
        message: String,
    },
    /// A dependency (the broker) is unavailable: 503 with `Retry-After`.
    #[error("service unavailable ({kind})")]
    Unavailable {
        /// Category of the cause, for logs.
        kind: &'static str,
        /// Seconds the client should wait.
        retry_after: u32,
        /// The cause, logged, never shown.
        #[source]
        source: BoxError,
    },
    /// Anything else: 500 with a generic body.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl AppError {
    /// A 4xx error with a message for the client.
    pub fn client(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            message: message.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, message)
    }

    /// 422 Unprocessable Entity.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Client { .. } => "ClientError",
            Self::Unavailable { .. } => "Unavailable",
            Self::Internal(_) => "Internal",
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client { status, .. } => *status,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::Client { message, .. } => json_error(status, message),
            Self::Unavailable {
                kind,
                retry_after,
                source,
            } => {
                // Debug: during an outage this fires per request; the
                // connection manager already warns once per state change.
                tracing::debug!(kind, error = %source, "request failed: dependency unavailable");
                let mut response =
                    json_error(status, "service temporarily unavailable, retry later");
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                response
            }
            Self::Internal(source) => {
                tracing::error!(error = %source, "request failed: internal error");
                json_error(status, "internal server error")
            }
        }
    }
}

/// A JSON error response `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Like [`axum::Json`], but rejections become [`AppError`] JSON bodies:
/// 415 (content type), 400 (syntax), 422 (shape, naming the field), 413 (size).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// Maps a JSON rejection to a client error with a readable message.
pub fn json_rejection(rejection: &JsonRejection) -> AppError {
    let status = rejection.status();
    let message = match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a request with Content-Type: application/json".to_owned()
        }
        JsonRejection::JsonSyntaxError(_) => format!("malformed JSON: {}", source_text(rejection)),
        JsonRejection::JsonDataError(_) => {
            format!("invalid request body: {}", source_text(rejection))
        }
        JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => {
            "request body too large".to_owned()
        }
        _ => "could not read the request body".to_owned(),
    };
    // Anything not classified as a client error is still the client's fault
    // (a broken body stream): never a 5xx for client input.
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    AppError::client(status, message)
}

/// The innermost error text of a rejection (serde's message, which names the
/// field and position).
fn source_text(rejection: &JsonRejection) -> String {
    let mut current: &dyn std::error::Error = rejection;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Fallback for unknown routes: 404 `{"error": "not found"}`.
pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}

/// Fallback for a known route with the wrong method: 405.
pub async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// A `GET /healthz` answer: 200 `{"status": "ok"}` while the process makes
/// progress; 503 `{"status": "stalled", "failing": [...]}` naming the
/// components that are stuck past their own bounded waits (the broker
/// connection manager), so the kubelet's liveness probe restarts the process.
pub fn liveness(stalled: &[(&'static str, bool)]) -> Response {
    let failing: Vec<&str> = stalled
        .iter()
        .filter(|(_, stuck)| *stuck)
        .map(|(name, _)| *name)
        .collect();
    if failing.is_empty() {
        return (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
            .into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({"status": "stalled", "failing": failing})),
    )
        .into_response()
}

/// A `/readyz` response: 200 when every check passes, else 503 naming the
/// failed checks.
pub fn readiness(checks: &[(&'static str, bool)]) -> Response {
    readiness_on_node(checks, -1)
}

/// [`readiness`] that also says which broker node is in use:
/// `broker_address` is its 0-based position in `RABBITMQ_ADDRESSES` (the
/// value of the `<service>_broker_address` gauge); left out while disconnected (-1).
pub fn readiness_on_node(checks: &[(&'static str, bool)], broker_address: i64) -> Response {
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    let (status, mut body) = if failing.is_empty() {
        (StatusCode::OK, serde_json::json!({"status": "ready"}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not ready", "failing": failing}),
        )
    };
    if broker_address >= 0 {
        body["broker_address"] = broker_address.into();
    }
    (status, axum::Json(body)).into_response()
}

/// Upper bound on one request, from its headers to the response: 408 if the
/// client had not sent its whole body by then, else 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Seconds a client should wait after the request deadline's 503.
const DEADLINE_RETRY_AFTER: u32 = 1;

/// Bounds every request by `timeout` (see [`REQUEST_TIMEOUT`]). A request
/// whose body had not fully arrived gets 408 (the client is too slow; the
/// connection is closed, its body was not read), one whose handler was too
/// slow gets 503 with `Retry-After`; both with a JSON body.
pub async fn request_deadline(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let received = Arc::new(AtomicBool::new(body.is_end_stream()));
    let body = Body::new(WatchedBody {
        body,
        received: Arc::clone(&received),
    });
    match tokio::time::timeout(timeout, next.run(Request::from_parts(parts, body))).await {
        Ok(response) => response,
        Err(_) if received.load(Ordering::Acquire) => {
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request took too long, retry later",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(DEADLINE_RETRY_AFTER));
            response
        }
        Err(_) => {
            let mut response = json_error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request timed out: the body did not arrive within {} s",
                    timeout.as_secs()
                ),
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// A request body that records when it has been received completely.
struct WatchedBody {
    body: Body,
    received: Arc<AtomicBool>,
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.body.is_end_stream() {
            self.received.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The layers every service router gets: JSON 404/405 fallbacks, the request
/// deadline, HTTP metrics by route template and a debug-level trace span with
/// the route template. Add route-specific layers (body limit) before this.
pub fn service_layers<S>(router: axum::Router<S>, metrics: Arc<HttpMetrics>) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            REQUEST_TIMEOUT,
            request_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(metrics, track_http))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_response)
                // 5xx are logged where they are produced; per-request errors
                // during an outage would flood the log.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
}

/// The request span: method and route template, never the raw path.
/// Debug level: an enabled span per request costs ~20% of ping's throughput.
/// Its target is the trace target ([`crate::trace::TARGET`]): with traces on
/// it is the SERVER span of the request and continues an incoming W3C
/// `traceparent`; handlers may record `messaging.message.id` on it.
pub fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    let span = tracing::debug_span!(
        target: crate::trace::TARGET,
        "http",
        method = %request.method(),
        route,
        otel.name = %format_args!("{} {route}", request.method()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        messaging.message.id = tracing::field::Empty,
    );
    crate::trace::continue_http(&span, request.headers());
    span
}

/// Records the response status on the request span (5xx marks it failed)
/// and logs the response at debug, as tower-http's default does.
fn record_response(response: &Response, latency: Duration, span: &tracing::Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(
        status = status.as_u16(),
        ?latency,
        "finished processing request"
    );
}

/// Why a service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Metrics could not be registered.
    #[error("failed to register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl RunError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Metrics(_) => "Metrics",
            Self::Serve(error) => error.kind(),
        }
    }
}

pub use crate::server::{DRAIN_TIMEOUT, ServeError, bind, serve, serve_with};

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::http::{Request, StatusCode, header};
    use axum::routing::post;
    use futures::StreamExt;
    use tower::ServiceExt;

    use super::request_deadline;

    const DEADLINE: Duration = Duration::from_millis(300);

    fn app() -> Router {
        Router::new()
            .route(
                "/slow-handler",
                post(|body: Bytes| async move {
                    tokio::time::sleep(DEADLINE * 10).await;
                    body
                }),
            )
            .route("/echo", post(|body: Bytes| async move { body }))
            .layer(axum::middleware::from_fn_with_state(
                DEADLINE,
                request_deadline,
            ))
    }

    async fn json_error(response: axum::response::Response) -> String {
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/json",
            "error bodies are JSON"
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value["error"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_408_and_closes() {
        // One byte, then nothing: a client trickling its body too slowly.
        let chunks = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("{")) })
            .chain(futures::stream::pending());
        let request = Request::post("/echo")
            .body(Body::from_stream(chunks))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert!(json_error(response).await.contains("request timed out"));
    }

    #[tokio::test]
    async fn a_handler_that_is_too_slow_is_503_with_retry_after() {
        let request = Request::post("/slow-handler")
            .body(Body::from("complete body"))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(json_error(response).await.contains("took too long"));
    }

    #[tokio::test]
    async fn a_request_in_time_passes_untouched() {
        let request = Request::post("/echo").body(Body::from("hello")).unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 64)
            .await
            .unwrap();
        assert_eq!(&body[..], b"hello");
    }
}
