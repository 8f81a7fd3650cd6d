//! Idempotency keys of `POST /ping`: a client that retries after a 503, a
//! timeout or a dropped connection sends the same `Idempotency-Key`, and the
//! retry is stored once.
//!
//! The key decides the message id: [`IdempotencyKey::message_id`] is a hash
//! of the key (a UUID version 8), the same in every ping process and across
//! restarts, so pong's dedupe by id (memory and PostgreSQL stores) keeps one
//! message per key whichever replica handled each attempt.
//!
//! "The same request" means the same `msg`. Each process remembers the
//! digest of `msg` and the creation time of the last [`REMEMBERED_KEYS`] keys
//! it saw ([`RecentKeys`]): a reuse with another `msg` is refused (422) and
//! a retry republishes the very same message (id, text, `created_at`). A
//! process that has not seen the key (another replica, a restart) cannot
//! tell: it publishes, and pong keeps the first message stored under that id
//! and drops the later one as a duplicate. This module is pure (no I/O, no
//! clock): callers pass the time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use axum::http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

/// The request header.
pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// Longest accepted key, in bytes (without the optional quotes).
pub const MAX_KEY_LEN: usize = 255;

/// Keys each process remembers (with their `msg` digest), oldest forgotten
/// first: about 100 bytes each, under 7 MiB in all.
pub const REMEMBERED_KEYS: usize = 65_536;

/// Domain separation of the key hash, so ids derived from keys cannot be
/// produced by hashing anything else of ours.
const ID_DOMAIN: &[u8] = b"pingpong-operator idempotency-key v1\0";

/// A valid `Idempotency-Key`: 1 to [`MAX_KEY_LEN`] visible ASCII characters
/// (`!` to `~`) other than `"` and `\`, given bare (`abc-123`) or as a
/// structured-field string (`"abc-123"`, as in the IETF draft); both forms
/// are the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// Why an `Idempotency-Key` header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The header appears more than once.
    #[error("header `Idempotency-Key` must appear at most once")]
    Repeated,
    /// Empty, too long or with a character outside `!`..`~` (or `"`, `\`).
    #[error(
        "header `Idempotency-Key` must be 1 to {MAX_KEY_LEN} visible ASCII characters (`!` to `~`, not `\"` or `\\`), optionally in double quotes"
    )]
    Invalid,
}

impl IdempotencyKey {
    /// Reads the key from `headers`: `Ok(None)` when absent.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, KeyError> {
        let mut values = headers.get_all(HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(KeyError::Repeated);
        }
        Self::parse(value.as_bytes()).map(Some)
    }

    /// Validates a raw header value.
    pub fn parse(raw: &[u8]) -> Result<Self, KeyError> {
        let bare = match raw {
            [b'"', inner @ .., b'"'] => inner,
            _ => raw,
        };
        // `"` and `\` would need escaping inside quotes: refused anywhere,
        // so a key reads the same in both forms.
        let allowed = |b: &u8| (b'!'..=b'~').contains(b) && !matches!(b, b'"' | b'\\');
        if bare.is_empty() || bare.len() > MAX_KEY_LEN || !bare.iter().all(allowed) {
            return Err(KeyError::Invalid);
        }
        // Visible ASCII is UTF-8.
        String::from_utf8(bare.to_vec())
            .map(Self)
            .map_err(|_| KeyError::Invalid)
    }

    /// The key as sent (without quotes).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The message id of this key: the first 16 bytes of SHA-256 over the
    /// key, as a UUID version 8 (RFC 9562 custom).
    pub fn message_id(&self) -> Uuid {
        let mut hash = Sha256::new();
        hash.update(ID_DOMAIN);
        hash.update(self.0.as_bytes());
        uuid::Builder::from_custom_bytes(truncate(&hash.finalize())).into_uuid()
    }
}

/// A digest of a message text: what tells two requests with one key apart.
pub fn msg_digest(msg: &str) -> [u8; 16] {
    truncate(&Sha256::digest(msg.as_bytes()))
}

fn truncate(hash: &[u8]) -> [u8; 16] {
    let mut out = [0; 16];
    for (o, h) in out.iter_mut().zip(hash) {
        *o = *h;
    }
    out
}

/// The key was used before with another `msg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this `Idempotency-Key` was already used with a different `msg`")]
pub struct KeyConflict;

/// The keys this process saw last, bounded by [`REMEMBERED_KEYS`].
#[derive(Debug)]
pub struct RecentKeys {
    capacity: usize,
    inner: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    entries: HashMap<Uuid, Entry>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<Uuid>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    digest: [u8; 16],
    created_at: OffsetDateTime,
}

impl Default for RecentKeys {
    fn default() -> Self {
        Self::with_capacity(REMEMBERED_KEYS)
    }
}

impl RecentKeys {
    /// Remembers at most `capacity` keys (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Recent::default()),
        }
    }

    /// Claims message `id` for a `msg` with `digest`: the creation time to
    /// publish with (`now` for a key not seen, the first attempt's for a
    /// retry), or [`KeyConflict`] when the key came with another `msg`.
    ///
    /// The key stays claimed whatever the publish gives: a 503 may still
    /// have been stored, so a later reuse with another `msg` must be refused.
    pub fn claim(
        &self,
        id: Uuid,
        digest: [u8; 16],
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, KeyConflict> {
        let mut recent = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = recent.entries.get(&id) {
            return if entry.digest == digest {
                Ok(entry.created_at)
            } else {
                Err(KeyConflict)
            };
        }
        if recent.order.len() >= self.capacity
            && let Some(oldest) = recent.order.pop_front()
        {
            recent.entries.remove(&oldest);
        }
        recent.order.push_back(id);
        recent.entries.insert(
            id,
            Entry {
                digest,
                created_at: now,
            },
        );
        Ok(now)
    }

    /// Number of remembered keys.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .order
            .len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated_by_length_and_charset() {
        for good in [
            "a",
            "8e03978e-40d5-43e8-bc93-6894a57f9324",
            "order:42/retry_1.~!",
            &"k".repeat(MAX_KEY_LEN),
        ] {
            let key = IdempotencyKey::parse(good.as_bytes()).unwrap();
            assert_eq!(key.as_str(), good);
        }
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for bad in [
            "", "\"\"", "a b", "tab\t", "é", "nul\0", &long, "\"a\"b\"", "\"a\\b\"", "\"open",
            "a\\b",
        ] {
            assert_eq!(
                IdempotencyKey::parse(bad.as_bytes()),
                Err(KeyError::Invalid),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_quoted_key_is_the_same_key() {
        let bare = IdempotencyKey::parse(b"abc-1").unwrap();
        let quoted = IdempotencyKey::parse(b"\"abc-1\"").unwrap();
        assert_eq!(bare, quoted);
        assert_eq!(bare.message_id(), quoted.message_id());
    }

    #[test]
    fn the_id_is_a_stable_version_8_hash_of_the_key() {
        let id = IdempotencyKey::parse(b"abc").unwrap().message_id();
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        // The same in every process and release: a retry reaching another
        // replica, or one after an upgrade, keeps its id.
        assert_eq!(id.to_string(), "662c1b04-191d-8606-95d5-61841358fc36");
        assert_ne!(id, IdempotencyKey::parse(b"abd").unwrap().message_id());
    }

    #[test]
    fn a_repeated_header_is_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(IdempotencyKey::from_headers(&headers), Ok(None));
        headers.append(HEADER, "a".parse().unwrap());
        assert!(IdempotencyKey::from_headers(&headers).unwrap().is_some());
        headers.append(HEADER, "a".parse().unwrap());
        assert_eq!(
            IdempotencyKey::from_headers(&headers),
            Err(KeyError::Repeated)
        );
    }

    #[test]
    fn a_retry_keeps_its_time_and_another_msg_conflicts() {
        let keys = RecentKeys::default();
        let id = Uuid::nil();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let t1 = t0 + time::Duration::seconds(5);
        assert_eq!(keys.claim(id, msg_digest("a"), t0), Ok(t0));
        assert_eq!(keys.claim(id, msg_digest("a"), t1), Ok(t0));
        assert_eq!(keys.claim(id, msg_digest("b"), t1), Err(KeyConflict));
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn the_oldest_keys_are_forgotten_first() {
        let keys = RecentKeys::with_capacity(2);
        let now = OffsetDateTime::UNIX_EPOCH;
        let ids: Vec<Uuid> = (0..3u128).map(Uuid::from_u128).collect();
        for id in &ids {
            keys.claim(*id, msg_digest("a"), now).unwrap();
        }
        assert_eq!(keys.len(), 2);
        // The first was forgotten: another msg is accepted for it now.
        assert!(keys.claim(ids[0], msg_digest("b"), now).is_ok());
        assert_eq!(keys.claim(ids[2], msg_digest("b"), now), Err(KeyConflict));
    }
}
