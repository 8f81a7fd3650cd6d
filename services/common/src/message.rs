//! The wire message that ping publishes and pong consumes.
//!
//! JSON `{"id": "<uuid>", "msg": "<text>", "created_at": "<RFC 3339>"}`. This
//! module owns the format and its validation; it knows nothing about AMQP.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Largest accepted wire message in bytes. Ping bodies are capped at 64 KiB,
/// so anything near this size did not come from ping.
pub const MAX_WIRE_BYTES: usize = 256 * 1024;

/// A message as it travels through the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Unique id, also the AMQP `message_id`.
    pub id: Uuid,
    /// The client's text (never empty).
    pub msg: String,
    /// When ping accepted the request.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Why a queue body is not a valid [`Message`].
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The body was empty.
    #[error("empty message body")]
    Empty,
    /// The body exceeds [`MAX_WIRE_BYTES`].
    #[error("message body of {size} bytes exceeds the limit of {MAX_WIRE_BYTES} bytes")]
    TooLarge {
        /// Body size in bytes.
        size: usize,
    },
    /// The body is not JSON of the expected shape.
    #[error("message body is not a valid message: {0}")]
    Invalid(#[source] serde_json::Error),
    /// The `msg` field is empty.
    #[error("field `msg` is empty")]
    EmptyMsg,
}

impl MessageError {
    /// Error category for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::TooLarge { .. } => "TooLarge",
            Self::Invalid(_) => "Invalid",
            Self::EmptyMsg => "EmptyMsg",
        }
    }
}

impl Message {
    /// A new message with a random (v4) id, stamped now (UTC).
    ///
    /// The id comes from the thread-local CSPRNG of `rand` instead of
    /// `Uuid::new_v4`, which costs one `getrandom` syscall per message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            id: uuid::Builder::from_random_bytes(rand::random()).into_uuid(),
            msg: msg.into(),
            created_at: OffsetDateTime::now_utc(),
        }
    }

    /// Encodes the message as JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Decodes and validates a queue body.
    pub fn from_slice(body: &[u8]) -> Result<Self, MessageError> {
        if body.is_empty() {
            return Err(MessageError::Empty);
        }
        if body.len() > MAX_WIRE_BYTES {
            return Err(MessageError::TooLarge { size: body.len() });
        }
        let message: Self = serde_json::from_slice(body).map_err(MessageError::Invalid)?;
        if message.msg.is_empty() {
            return Err(MessageError::EmptyMsg);
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_v4() {
        let a = Message::new("a");
        let b = Message::new("b");
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.get_version(), Some(uuid::Version::Random));
    }

    #[test]
    fn round_trips_through_json() {
        let message = Message::new("hello");
        let decoded = Message::from_slice(&message.to_json().unwrap()).unwrap();
        assert_eq!(decoded, message);
    }

    #[test]
    fn rejects_malformed_bodies() {
        let id = Uuid::new_v4();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "Empty"),
            ("not json", b"hello".to_vec(), "Invalid"),
            ("array", b"[1,2]".to_vec(), "Invalid"),
            (
                "missing msg",
                format!(r#"{{"id":"{id}","created_at":"2024-01-01T00:00:00Z"}}"#).into_bytes(),
                "Invalid",
            ),
            (
                "bad uuid",
                br#"{"id":"nope","msg":"x","created_at":"2024-01-01T00:00:00Z"}"#.to_vec(),
                "Invalid",
            ),
            (
                "bad time",
                format!(r#"{{"id":"{id}","msg":"x","created_at":"yesterday"}}"#).into_bytes(),
                "Invalid",
            ),
            (
                "msg number",
                format!(r#"{{"id":"{id}","msg":1,"created_at":"2024-01-01T00:00:00Z"}}"#)
                    .into_bytes(),
                "Invalid",
            ),
            (
                "empty msg",
                format!(r#"{{"id":"{id}","msg":"","created_at":"2024-01-01T00:00:00Z"}}"#)
                    .into_bytes(),
                "EmptyMsg",
            ),
            ("huge", vec![b'x'; MAX_WIRE_BYTES + 1], "TooLarge"),
        ];
        for (name, body, kind) in cases {
            let err = Message::from_slice(&body).expect_err(name);
            assert_eq!(err.kind(), kind, "{name}");
        }
    }
}
