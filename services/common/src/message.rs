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
    /// The client's text (never empty, no NUL; see [`check_msg`]).
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
    /// The `msg` field contains a NUL character, which no store can keep
    /// (PostgreSQL text cannot hold it).
    #[error("field `msg` contains a NUL (U+0000) character")]
    NulInMsg,
}

impl MessageError {
    /// Error category for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::TooLarge { .. } => "TooLarge",
            Self::Invalid(_) => "Invalid",
            Self::EmptyMsg => "EmptyMsg",
            Self::NulInMsg => "NulInMsg",
        }
    }

    /// Every value [`Self::kind`] can return.
    pub const KINDS: &'static [&'static str] =
        &["Empty", "TooLarge", "Invalid", "EmptyMsg", "NulInMsg"];
}

/// Checks a message text the way every store needs it: not empty and
/// without NUL characters. ping applies it at the door (422), pong's
/// decoder again on every delivery (dead-lettered).
pub fn check_msg(msg: &str) -> Result<(), MessageError> {
    if msg.is_empty() {
        return Err(MessageError::EmptyMsg);
    }
    if msg.contains('\0') {
        return Err(MessageError::NulInMsg);
    }
    Ok(())
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
        check_msg(&message.msg)?;
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
            (
                "NUL in msg",
                format!(r#"{{"id":"{id}","msg":"a\u0000b","created_at":"2024-01-01T00:00:00Z"}}"#)
                    .into_bytes(),
                "NulInMsg",
            ),
            ("huge", vec![b'x'; MAX_WIRE_BYTES + 1], "TooLarge"),
        ];
        for (name, body, kind) in cases {
            let err = Message::from_slice(&body).expect_err(name);
            assert_eq!(err.kind(), kind, "{name}");
        }
    }

    /// The decoder's contract on one body: a message that passes
    /// [`check_msg`] and encodes back to an equal message, or an error of a
    /// documented kind. Never a panic.
    fn decodes_or_documents(body: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        match Message::from_slice(body) {
            Ok(message) => {
                proptest::prop_assert!(check_msg(&message.msg).is_ok());
                let again = Message::from_slice(&message.to_json().unwrap()).unwrap();
                proptest::prop_assert_eq!(again, message);
            }
            Err(error) => {
                proptest::prop_assert!(MessageError::KINDS.contains(&error.kind()), "{error}");
                let expected = match &error {
                    MessageError::Empty => body.is_empty(),
                    MessageError::TooLarge { size } => {
                        *size == body.len() && *size > MAX_WIRE_BYTES
                    }
                    _ => !body.is_empty() && body.len() <= MAX_WIRE_BYTES,
                };
                proptest::prop_assert!(expected, "{error} for {} bytes", body.len());
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_decode_or_give_a_documented_error(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)
        ) {
            decodes_or_documents(&body)?;
        }

        #[test]
        fn message_shaped_json_decodes_or_gives_a_documented_error(
            id in proptest::option::of("[0-9a-f-]{0,40}"),
            msg in proptest::option::of(proptest::prelude::any::<String>()),
            created_at in proptest::option::of("[0-9T:Z.+-]{0,35}"),
            extra in proptest::option::of(proptest::prelude::any::<String>()),
        ) {
            let mut object = serde_json::Map::new();
            if let Some(id) = id {
                object.insert("id".into(), id.into());
            }
            if let Some(msg) = msg {
                object.insert("msg".into(), msg.into());
            }
            if let Some(created_at) = created_at {
                object.insert("created_at".into(), created_at.into());
            }
            if let Some(extra) = extra {
                object.insert("extra".into(), extra.into());
            }
            decodes_or_documents(&serde_json::to_vec(&object).unwrap())?;
        }

        #[test]
        fn every_valid_text_round_trips_and_only_bad_texts_are_refused(
            msg in proptest::prelude::any::<String>()
        ) {
            let message = Message::new(msg.clone());
            let decoded = Message::from_slice(&message.to_json().unwrap());
            match check_msg(&msg) {
                Ok(()) => proptest::prop_assert_eq!(decoded.unwrap(), message),
                Err(expected) => {
                    proptest::prop_assert_eq!(decoded.unwrap_err().kind(), expected.kind())
                }
            }
        }
    }
}
