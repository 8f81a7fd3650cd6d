//! The JSON shape of a stored message, shared by every store so that
//! `GET /pong` answers byte-for-byte alike whatever the backend.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// A stored message as served by `GET /pong`.
#[derive(Debug, Serialize)]
pub(crate) struct Record<'a> {
    pub id: Uuid,
    pub msg: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
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
