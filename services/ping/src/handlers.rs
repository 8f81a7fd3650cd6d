//! HTTP handlers of ping. Input validation happens here; publishing is
//! delegated to the [`crate::Publish`] in the state.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use pingpong_common::Message;
use pingpong_common::http::{ApiJson, AppError, ErrorBody, liveness, readiness_on_node};
use pingpong_common::message::{MessageError, check_msg};
use pingpong_common::openapi::Readiness;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::idempotency::{IdempotencyKey, msg_digest};
use crate::publisher::PublishError;

/// Seconds a client should wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Body of `POST /ping`: a JSON object with a string field `msg`; other
/// fields are ignored.
#[derive(Debug, ToSchema)]
pub struct PingRequest {
    /// The text to send: not empty, no NUL (U+0000) character; the whole
    /// body is at most 64 KiB.
    #[schema(min_length = 1, pattern = "^[^\\u0000]+$", example = "hello")]
    pub msg: String,
}

impl<'de> Deserialize<'de> for PingRequest {
    // Hand-written because the derived impl also accepts a JSON array
    // (`["text"]`), which is not a valid request.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RequestVisitor;

        impl<'de> Visitor<'de> for RequestVisitor {
            type Value = PingRequest;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object with a string field `msg`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PingRequest, A::Error> {
                let mut msg = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "msg" {
                        if msg.is_some() {
                            return Err(de::Error::duplicate_field("msg"));
                        }
                        msg = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                msg.map(|msg| PingRequest { msg })
                    .ok_or_else(|| de::Error::missing_field("msg"))
            }
        }

        deserializer.deserialize_map(RequestVisitor)
    }
}

/// Answer of a confirmed `POST /ping`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PingResponse {
    /// The message id (also the AMQP `message_id`).
    pub id: Uuid,
    /// `Created at <RFC 3339 time>`.
    #[schema(example = "Created at 2026-11-21T08:37:36.234245138Z")]
    pub message: String,
    /// The text sent.
    pub content: String,
}

/// `POST /ping`: validate, publish, wait for the confirm, answer.
#[utoipa::path(
    post,
    path = "/ping",
    tag = "ping",
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "Makes retries safe: 1 to 255 visible ASCII characters (`!` to `~`, not `\"` or `\\`), bare or in double quotes. The message id is derived from the key (the same in every ping process), so every attempt with the key is stored once. A retry must send the same `msg`; the key with another `msg` is refused with 422 by a process that saw it (each remembers its last 65,536 keys), and otherwise the message stored first is kept.",
            max_length = 257, min_length = 1, pattern = "^([!#-\\[\\]-~]{1,255}|\"[!#-\\[\\]-~]{1,255}\")$",
            example = "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    ),
    request_body(content = PingRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "RabbitMQ confirmed the message (persistent, on the durable queue)", body = PingResponse),
        (status = 400, description = "Malformed JSON, an empty body, or a malformed or repeated `Idempotency-Key`", body = ErrorBody),
        (status = 408, description = "The body did not arrive within the request timeout (10 s); the connection is closed", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Content type is not application/json", body = ErrorBody),
        (status = 414, description = "Request line longer than 64 KiB (answered by the HTTP server, empty body)"),
        (status = 431, description = "Too many or too large headers (answered by the HTTP server, empty body)"),
        (status = 422, description = "Body is not an object, or `msg` is missing, not a string, empty or contains NUL (the message names `msg`); or the `Idempotency-Key` was used with another `msg`", body = ErrorBody),
        (status = 500, description = "Internal error (generic body, details in the log)", body = ErrorBody),
        (status = 503, description = "Broker unavailable, nack, unroutable, confirm timeout, request timeout, or too many requests in progress (`PING_MAX_IN_FLIGHT`); retry later, with the same `Idempotency-Key` (the message may have been stored)",
            body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    )
)]
pub async fn ping(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PingRequest>,
) -> Result<Json<PingResponse>, AppError> {
    let key = IdempotencyKey::from_headers(&headers)
        .map_err(|error| AppError::bad_request(error.to_string()))?;
    check_msg(&request.msg).map_err(|error| match error {
        MessageError::NulInMsg => {
            AppError::unprocessable("field `msg` must not contain NUL (\\u0000) characters")
        }
        _ => AppError::unprocessable("field `msg` must not be empty"),
    })?;
    let message = match key {
        None => Message::new(request.msg),
        Some(key) => {
            let id = key.message_id();
            let created_at = state
                .keys
                .claim(id, msg_digest(&request.msg), OffsetDateTime::now_utc())
                .map_err(|conflict| AppError::unprocessable(conflict.to_string()))?;
            Message {
                id,
                msg: request.msg,
                created_at,
            }
        }
    };
    // The request span (see `pingpong_common::http::request_span`).
    tracing::Span::current().record("messaging.message.id", tracing::field::display(message.id));
    if let Err(error) = state.publisher.publish(&message).await {
        if let PublishError::Returned { code, text } = &error {
            // By id, never the body (lapin's own log of it is off).
            tracing::warn!(id = %message.id, code, reason = %text, "the broker returned the message as unroutable");
        }
        state
            .metrics
            .failed
            .with_label_values(&[error.kind()])
            .inc();
        return Err(if error.is_transient() {
            AppError::Unavailable {
                kind: error.kind(),
                retry_after: RETRY_AFTER_SECS,
                source: Box::new(error),
            }
        } else {
            AppError::Internal(Box::new(error))
        });
    }
    state.metrics.published.inc();
    let created = message
        .created_at
        .format(&Rfc3339)
        .map_err(|error| AppError::Internal(Box::new(error)))?;
    Ok(Json(PingResponse {
        id: message.id,
        message: format!("Created at {created}"),
        content: message.msg,
    }))
}

/// `GET /healthz`: 200 while the process makes progress, 503 when the broker
/// connection manager is stuck past its own bounded waits (the kubelet then
/// restarts the process).
pub async fn healthz(State(state): State<AppState>) -> Response {
    liveness(&[("broker", state.publisher.is_stalled())])
}

/// `GET /readyz`: ready while the broker is connected.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Connected to the broker", body = Readiness),
        (status = 503, description = "Not ready; `failing` names the failing check (broker)", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    readiness_on_node(
        &[("broker", state.publisher.is_ready())],
        state.metrics.broker_address.get(),
    )
}
