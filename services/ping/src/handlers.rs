//! HTTP handlers of ping. Input validation happens here; publishing is
//! delegated to the [`crate::Publish`] in the state.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use pingpong_common::Message;
use pingpong_common::http::{ApiJson, AppError, readiness_on_node};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::AppState;

/// Seconds a client should wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Body of `POST /ping`: a JSON object with a string field `msg`; other
/// fields are ignored.
#[derive(Debug)]
pub struct PingRequest {
    /// The text to send (non-empty).
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
#[derive(Debug, Serialize, Deserialize)]
pub struct PingResponse {
    /// The message id (also the AMQP `message_id`).
    pub id: Uuid,
    /// `Created at <RFC 3339 time>`.
    pub message: String,
    /// The text sent.
    pub content: String,
}

/// `POST /ping`: validate, publish, wait for the confirm, answer.
pub async fn ping(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PingRequest>,
) -> Result<Json<PingResponse>, AppError> {
    if request.msg.is_empty() {
        return Err(AppError::unprocessable("field `msg` must not be empty"));
    }
    let message = Message::new(request.msg);
    if let Err(error) = state.publisher.publish(&message).await {
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

/// `GET /readyz`: ready while the broker is connected.
pub async fn readyz(State(state): State<AppState>) -> Response {
    readiness_on_node(
        &[("broker", state.publisher.is_ready())],
        state.metrics.broker_address.get(),
    )
}
