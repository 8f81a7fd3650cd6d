//! The bounded in-memory message store (the default `PONG_STORE=memory`).
//!
//! Policy: at most `capacity` messages; inserting into a full store evicts
//! the oldest first. A message whose id is already stored is a duplicate and
//! is not stored again (ids of evicted messages are forgotten). Each message
//! is serialised to JSON once, at insert time, so a read only clones
//! reference-counted strings under the lock and concatenates outside it.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use pingpong_common::Message;
use time::OffsetDateTime;
use uuid::Uuid;

use super::record::{Record, join_array};
use super::{InsertOutcome, ListQuery, MessageSink, MessageStore, StoreError};
use crate::config::StoreKind;

struct Inner {
    entries: VecDeque<(Uuid, Arc<str>)>,
    /// Id -> sequence number; `entries[i]` has sequence `next_seq - len + i`
    /// (only the front is evicted, only the back grows), so a cursor is
    /// found in O(1).
    ids: HashMap<Uuid, u64>,
    next_seq: u64,
}

/// The bounded store.
pub struct Store {
    capacity: NonZeroUsize,
    inner: Mutex<Inner>,
}

impl Store {
    /// An empty store holding at most `capacity` messages.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                ids: HashMap::new(),
                next_seq: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the store half-updated
        // in a way that matters for readers, so recover from poisoning.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a message unless its id is already stored.
    pub fn insert(
        &self,
        message: &Message,
        received_at: OffsetDateTime,
    ) -> Result<InsertOutcome, StoreError> {
        let record = Record {
            id: message.id,
            msg: &message.msg,
            created_at: message.created_at,
            received_at,
        };
        let json: Arc<str> = serde_json::to_string(&record)
            .map_err(|source| StoreError::Serialize {
                id: message.id,
                source,
            })?
            .into();
        let mut inner = self.lock();
        if inner.ids.contains_key(&message.id) {
            return Ok(InsertOutcome::Duplicate);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.ids.insert(message.id, seq);
        let mut evicted = 0;
        while inner.entries.len() >= self.capacity.get() {
            if let Some((old, _)) = inner.entries.pop_front() {
                inner.ids.remove(&old);
                evicted += 1;
            }
        }
        inner.entries.push_back((message.id, json));
        Ok(InsertOutcome::Stored {
            evicted,
            len: inner.entries.len(),
        })
    }

    /// Number of stored messages.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is stored.
    pub fn contains(&self, id: &Uuid) -> bool {
        self.lock().ids.contains_key(id)
    }

    /// The stored messages as a JSON array, oldest first; with `limit`, only
    /// the newest `limit` messages (still oldest first).
    pub fn to_json(&self, limit: Option<usize>) -> String {
        // Without a cursor the page cannot fail.
        self.page_json(ListQuery { after: None, limit })
            .unwrap_or_else(|_| "[]".to_owned())
    }

    /// One page as a JSON array, oldest first (see [`ListQuery`]).
    pub fn page_json(&self, query: ListQuery) -> Result<String, StoreError> {
        let parts: Vec<Arc<str>> = {
            let inner = self.lock();
            let len = inner.entries.len();
            let (start, end) = match query.after {
                None => (len.saturating_sub(query.limit.unwrap_or(len)), len),
                Some(cursor) => {
                    let seq = *inner
                        .ids
                        .get(&cursor)
                        .ok_or(StoreError::UnknownCursor(cursor))?;
                    let front = inner.next_seq - len as u64;
                    let start = usize::try_from(seq - front + 1).unwrap_or(len).min(len);
                    let end = start.saturating_add(query.limit.unwrap_or(len)).min(len);
                    (start, end)
                }
            };
            inner
                .entries
                .range(start..end)
                .map(|(_, json)| Arc::clone(json))
                .collect()
        };
        Ok(join_array(&parts))
    }
}

impl MessageSink for Store {
    fn store(
        &self,
        message: Message,
        received_at: OffsetDateTime,
    ) -> BoxFuture<'_, Result<InsertOutcome, StoreError>> {
        Box::pin(std::future::ready(self.insert(&message, received_at)))
    }
}

impl MessageStore for Store {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn list(&self, query: ListQuery) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(std::future::ready(self.page_json(query)))
    }

    fn version(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_store(capacity: usize) -> Store {
        Store::new(NonZeroUsize::new(capacity).unwrap())
    }

    fn ids(json: &str) -> Vec<String> {
        let value: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
        value
            .iter()
            .map(|v| v["msg"].as_str().unwrap().to_owned())
            .collect()
    }

    fn insert(store: &Store, text: &str) -> InsertOutcome {
        store
            .insert(&Message::new(text), OffsetDateTime::now_utc())
            .unwrap()
    }

    #[test]
    fn evicts_oldest_first_when_full() {
        let store = new_store(3);
        for text in ["a", "b", "c"] {
            assert!(matches!(
                insert(&store, text),
                InsertOutcome::Stored { evicted: 0, .. }
            ));
        }
        assert_eq!(
            insert(&store, "d"),
            InsertOutcome::Stored { evicted: 1, len: 3 }
        );
        assert_eq!(
            insert(&store, "e"),
            InsertOutcome::Stored { evicted: 1, len: 3 }
        );
        assert_eq!(ids(&store.to_json(None)), ["c", "d", "e"]);
    }

    #[test]
    fn duplicates_are_stored_once() {
        let store = new_store(10);
        let message = Message::new("once");
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            store.insert(&message, now).unwrap(),
            InsertOutcome::Stored { .. }
        ));
        assert_eq!(
            store.insert(&message, now).unwrap(),
            InsertOutcome::Duplicate
        );
        assert_eq!(store.len(), 1);
        assert!(store.contains(&message.id));
    }

    #[test]
    fn evicted_ids_are_forgotten() {
        let store = new_store(1);
        let first = Message::new("first");
        let now = OffsetDateTime::now_utc();
        store.insert(&first, now).unwrap();
        insert(&store, "second");
        assert!(!store.contains(&first.id));
        assert!(matches!(
            store.insert(&first, now).unwrap(),
            InsertOutcome::Stored { evicted: 1, .. }
        ));
    }

    #[test]
    fn limit_returns_the_newest_in_oldest_first_order() {
        let store = new_store(10);
        for text in ["a", "b", "c", "d"] {
            insert(&store, text);
        }
        let cases: [(Option<usize>, &[&str]); 5] = [
            (None, &["a", "b", "c", "d"]),
            (Some(0), &[]),
            (Some(2), &["c", "d"]),
            (Some(4), &["a", "b", "c", "d"]),
            (Some(100), &["a", "b", "c", "d"]),
        ];
        for (limit, expected) in cases {
            assert_eq!(ids(&store.to_json(limit)), expected, "limit {limit:?}");
        }
    }

    #[test]
    fn a_full_store_of_100_000_serves_the_newest_100() {
        let store = new_store(100_000);
        let now = OffsetDateTime::now_utc();
        let messages: Vec<Message> = (0..100_050)
            .map(|i| Message::new(format!("m{i}")))
            .collect();
        for message in &messages {
            store.insert(message, now).unwrap();
        }
        assert_eq!(store.len(), 100_000);
        let expected: Vec<String> = (99_950..100_050).map(|i| format!("m{i}")).collect();
        assert_eq!(ids(&store.to_json(Some(100))), expected);
        let all: Vec<serde_json::Value> = serde_json::from_str(&store.to_json(None)).unwrap();
        assert_eq!(all.len(), 100_000);
        assert_eq!(all[0]["msg"], "m50");
        assert!(!store.contains(&messages[49].id));
        assert!(store.contains(&messages[50].id));
    }

    #[test]
    fn after_pages_follow_eviction() {
        let store = new_store(3);
        let messages: Vec<Message> = (0..5).map(|i| Message::new(format!("m{i}"))).collect();
        let now = OffsetDateTime::now_utc();
        for message in &messages {
            store.insert(message, now).unwrap();
        }
        // m0 and m1 were evicted: the window is m2..m4.
        let page = |after: usize, limit: Option<usize>| {
            store.page_json(ListQuery {
                after: Some(messages[after].id),
                limit,
            })
        };
        assert_eq!(ids(&page(2, None).unwrap()), ["m3", "m4"]);
        assert_eq!(ids(&page(3, Some(1)).unwrap()), ["m4"]);
        assert_eq!(page(4, Some(10)).unwrap(), "[]");
        assert!(matches!(
            page(1, None),
            Err(StoreError::UnknownCursor(id)) if id == messages[1].id
        ));
    }

    #[test]
    fn records_have_the_documented_shape() {
        let store = new_store(2);
        let message = Message::new("shape");
        store.insert(&message, OffsetDateTime::now_utc()).unwrap();
        let value: Vec<serde_json::Value> = serde_json::from_str(&store.to_json(None)).unwrap();
        let record = value[0].as_object().unwrap();
        let mut keys: Vec<&str> = record.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["created_at", "id", "msg", "received_at"]);
        assert_eq!(record["id"], message.id.to_string());
        assert_eq!(store.to_json(None).chars().next(), Some('['));
        assert_eq!(new_store(1).to_json(None), "[]");
    }
}
