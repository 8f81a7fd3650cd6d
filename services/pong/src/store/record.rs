//! The JSON shape of a stored message, shared by every store so that
//! `GET /pong` answers byte-for-byte alike whatever the backend.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// A stored message as served by `GET /pong` (also its OpenAPI schema).
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredMessage<'a> {
    /// The message id (ping's answer names it).
    pub id: Uuid,
    /// The client's text.
    pub msg: &'a str,
    /// When ping accepted the message (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When pong received it (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: OffsetDateTime,
}

/// Joins serialised records into a JSON array.
pub(crate) fn join_array<S: AsRef<str>>(parts: &[S]) -> String {
    let size = parts.iter().map(|p| p.as_ref().len() + 1).sum::<usize>() + 2;
    let mut out = String::with_capacity(size);
    out.push('[');
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(part.as_ref());
    }
    out.push(']');
    out
}
