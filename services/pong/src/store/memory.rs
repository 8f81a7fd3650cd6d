//! The bounded in-memory message store (the default `PONG_STORE=memory`).
//!
//! Policy: at most `capacity` messages (`PONG_MAX_MESSAGES`) and at most
//! `max_bytes` bytes (`PONG_MAX_BYTES`, counted as each record's JSON plus
//! [`ENTRY_OVERHEAD`]); inserting into a full store evicts the oldest first
//! until both bounds hold. A message whose id is already stored is a
//! duplicate and is not stored again (ids of evicted messages are
//! forgotten). Each message is serialised to JSON once, at insert time and
//! outside the lock, so a read only clones reference-counted strings under
//! the lock and concatenates outside it; a consumer batch is stored under
//! one lock, without copying the messages.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use pingpong_common::Message;
use time::OffsetDateTime;
use uuid::Uuid;

use super::record::{StoredMessage, join_array};
use super::{
    BatchResult, Incoming, InsertOutcome, ListQuery, MessageSink, MessageStore, PAGE_MAX_BYTES,
    Page, Start, StoreError,
};
use crate::config::StoreKind;

/// Bytes counted per stored message on top of its JSON: the queue slot, the
/// id index entry and the shared string's header.
pub const ENTRY_OVERHEAD: usize = 96;

struct Inner {
    entries: VecDeque<(Uuid, Arc<String>)>,
    /// Id -> sequence number; `entries[i]` has sequence `next_seq - len + i`
    /// (only the front is evicted, only the back grows), so a cursor is
    /// found in O(1).
    ids: HashMap<Uuid, u64>,
    next_seq: u64,
    /// Bytes counted for the stored entries.
    bytes: usize,
}

/// The bounded store.
pub struct MemoryStore {
    capacity: NonZeroUsize,
    max_bytes: NonZeroUsize,
    inner: Mutex<Inner>,
}

fn entry_bytes(json: &String) -> usize {
    json.capacity() + ENTRY_OVERHEAD
}

/// Serialises `record` into a buffer sized for it up front, so that a large
/// message is allocated once, at its size (no doubling, no copy into the
/// store): churn is what fragments the allocator's heaps.
fn serialise(record: &StoredMessage<'_>) -> Result<String, serde_json::Error> {
    let mut buffer = Vec::with_capacity(record.msg.len() + 160);
    serde_json::to_writer(&mut buffer, record)?;
    buffer.shrink_to_fit();
    // serde_json writes UTF-8 only.
    String::from_utf8(buffer).map_err(|error| serde::ser::Error::custom(error.utf8_error()))
}

/// The record of `message` as stored and served, serialised once.
fn record_json(message: &Message, received_at: OffsetDateTime) -> Result<Arc<String>, StoreError> {
    let record = StoredMessage {
        id: message.id,
        msg: &message.msg,
        created_at: message.created_at,
        received_at,
    };
    serialise(&record)
        .map(Arc::new)
        .map_err(|source| StoreError::Serialize {
            id: message.id,
            source,
        })
}

impl MemoryStore {
    /// An empty store holding at most `capacity` messages and no byte bound
    /// beyond the address space (see [`Self::with_max_bytes`]).
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self::with_max_bytes(capacity, NonZeroUsize::MAX)
    }

    /// An empty store holding at most `capacity` messages and `max_bytes`
    /// bytes (a message larger than `max_bytes` alone is still kept, alone).
    pub fn with_max_bytes(capacity: NonZeroUsize, max_bytes: NonZeroUsize) -> Self {
        Self {
            capacity,
            max_bytes,
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                ids: HashMap::new(),
                next_seq: 0,
                bytes: 0,
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
        let json = record_json(message, received_at)?;
        let mut inner = self.lock();
        Ok(self.insert_locked(&mut inner, message.id, json))
    }

    /// Stores consecutive messages under one lock: each record is
    /// serialised before the lock is taken, and neither the message nor
    /// its record is copied.
    pub fn insert_batch(&self, batch: &[Incoming]) -> Vec<Result<InsertOutcome, StoreError>> {
        let records: Vec<Result<Arc<String>, StoreError>> = batch
            .iter()
            .map(|(message, received_at)| record_json(message, *received_at))
            .collect();
        let mut inner = self.lock();
        batch
            .iter()
            .zip(records)
            .map(|((message, _), json)| Ok(self.insert_locked(&mut inner, message.id, json?)))
            .collect()
    }

    /// The insert itself, under the lock.
    fn insert_locked(
        &self,
        inner: &mut Inner,
        message_id: Uuid,
        json: Arc<String>,
    ) -> InsertOutcome {
        let size = entry_bytes(&json);
        if inner.ids.contains_key(&message_id) {
            return InsertOutcome::Duplicate;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.ids.insert(message_id, seq);
        let mut evicted = 0;
        let mut evicted_bytes = 0;
        while inner.entries.len() >= self.capacity.get()
            || (!inner.entries.is_empty()
                && inner.bytes.saturating_add(size) > self.max_bytes.get())
        {
            if let Some((old, old_json)) = inner.entries.pop_front() {
                inner.ids.remove(&old);
                let freed = entry_bytes(&old_json);
                inner.bytes -= freed;
                evicted += 1;
                evicted_bytes += freed as u64;
            }
        }
        inner.entries.push_back((message_id, json));
        inner.bytes += size;
        InsertOutcome::Stored {
            evicted,
            evicted_bytes,
            len: inner.entries.len(),
            bytes: Some(inner.bytes as u64),
        }
    }

    /// Number of stored messages.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes counted for the stored messages (bounded by `max_bytes`).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Whether `id` is stored.
    pub fn contains(&self, id: &Uuid) -> bool {
        self.lock().ids.contains_key(id)
    }

    /// One page, oldest first (see [`ListQuery`]).
    pub fn page(&self, query: ListQuery) -> Result<Page, StoreError> {
        let (parts, next, cut) = {
            let inner = self.lock();
            let len = inner.entries.len();
            let budget = |json: &Arc<String>, used: &mut usize| {
                let fits = *used == 0 || *used + json.len() <= PAGE_MAX_BYTES;
                *used += json.len();
                fits
            };
            let mut used = 0;
            let mut parts: Vec<(Uuid, Arc<String>)> = Vec::new();
            let start = match query.start {
                Start::Oldest => 0,
                Start::After(cursor) => {
                    let seq = *inner
                        .ids
                        .get(&cursor)
                        .ok_or(StoreError::UnknownCursor(cursor))?;
                    let front = inner.next_seq - len as u64;
                    usize::try_from(seq - front + 1).unwrap_or(len).min(len)
                }
                Start::Newest => len.saturating_sub(query.limit),
            };
            let mut end = start;
            let mut cut = false;
            for (id, json) in inner.entries.range(start..).take(query.limit) {
                if !budget(json, &mut used) {
                    cut = true;
                    break;
                }
                parts.push((*id, Arc::clone(json)));
                end += 1;
            }
            let next = match parts.last() {
                Some((last, _)) if end < len => Some(*last),
                _ => None,
            };
            (parts, next, cut)
        };
        let json: Vec<&str> = parts.iter().map(|(_, json)| json.as_str()).collect();
        Ok(Page {
            json: join_array(&json),
            next,
            cut,
        })
    }
}

impl MessageSink for MemoryStore {
    fn store(
        &self,
        message: Message,
        received_at: OffsetDateTime,
    ) -> BoxFuture<'_, Result<InsertOutcome, StoreError>> {
        Box::pin(std::future::ready(self.insert(&message, received_at)))
    }

    fn store_batch<'a>(&'a self, batch: &'a [Incoming]) -> BoxFuture<'a, BatchResult> {
        let span = super::store_span(StoreKind::Memory, "insert", batch);
        Box::pin(std::future::ready(Ok(
            span.in_scope(|| self.insert_batch(batch))
        )))
    }
}

impl MessageStore for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn list(&self, query: ListQuery) -> BoxFuture<'_, Result<Page, StoreError>> {
        Box::pin(std::future::ready(self.page(query)))
    }

    fn version(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_store(capacity: usize) -> MemoryStore {
        MemoryStore::new(NonZeroUsize::new(capacity).unwrap())
    }

    fn ids(json: &str) -> Vec<String> {
        let value: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
        value
            .iter()
            .map(|v| v["msg"].as_str().unwrap().to_owned())
            .collect()
    }

    fn insert(store: &MemoryStore, text: &str) -> InsertOutcome {
        store
            .insert(&Message::new(text), OffsetDateTime::now_utc())
            .unwrap()
    }

    /// Every stored message, oldest first, by following the pages.
    fn all(store: &MemoryStore) -> String {
        let mut query = ListQuery::oldest(1000);
        let mut every: Vec<serde_json::Value> = Vec::new();
        loop {
            let page = store.page(query).unwrap();
            every.extend(serde_json::from_str::<Vec<serde_json::Value>>(&page.json).unwrap());
            match page.next {
                Some(next) => query = ListQuery::after(next, 1000),
                None => return serde_json::to_string(&every).unwrap(),
            }
        }
    }

    fn newest(store: &MemoryStore, limit: usize) -> String {
        store.page(ListQuery::newest(limit)).unwrap().json
    }

    fn stored(evicted: usize, len: usize) -> impl Fn(InsertOutcome) -> bool {
        move |outcome| matches!(outcome, InsertOutcome::Stored { evicted: e, len: l, .. } if e == evicted && l == len)
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
        assert!(stored(1, 3)(insert(&store, "d")));
        assert!(stored(1, 3)(insert(&store, "e")));
        assert_eq!(ids(&all(&store)), ["c", "d", "e"]);
    }

    #[test]
    fn evicts_oldest_first_when_the_bytes_are_full() {
        // Room for three records of this size, whatever the count bound.
        let text = "x".repeat(1000);
        let one = entry_bytes(
            &serialise(&StoredMessage {
                id: Uuid::nil(),
                msg: &text,
                created_at: OffsetDateTime::now_utc(),
                received_at: OffsetDateTime::now_utc(),
            })
            .unwrap(),
        );
        let store = MemoryStore::with_max_bytes(
            NonZeroUsize::new(100).unwrap(),
            NonZeroUsize::new(3 * one + one / 2).unwrap(),
        );
        let now = OffsetDateTime::now_utc();
        let messages: Vec<Message> = (0..5).map(|i| Message::new(format!("{i}{text}"))).collect();
        let mut evicted_bytes = 0;
        for message in &messages {
            match store.insert(message, now).unwrap() {
                InsertOutcome::Stored {
                    evicted_bytes: freed,
                    bytes,
                    ..
                } => {
                    evicted_bytes += freed;
                    assert_eq!(bytes, Some(store.bytes() as u64));
                    assert!(store.bytes() <= 3 * one + one / 2, "{}", store.bytes());
                }
                InsertOutcome::Duplicate => panic!("not a duplicate"),
            }
        }
        assert_eq!(store.len(), 3);
        assert!(!store.contains(&messages[1].id));
        assert!(store.contains(&messages[2].id));
        // Two records of `one` bytes each (give or take the digits of their
        // timestamps' fractions) were evicted.
        assert!(
            evicted_bytes.abs_diff(2 * one as u64) <= 32,
            "{evicted_bytes}"
        );
    }

    #[test]
    fn a_message_larger_than_the_byte_bound_is_kept_alone() {
        let store = MemoryStore::with_max_bytes(
            NonZeroUsize::new(10).unwrap(),
            NonZeroUsize::new(200).unwrap(),
        );
        insert(&store, "small");
        assert!(stored(1, 1)(insert(&store, &"y".repeat(500))));
        assert_eq!(store.len(), 1);
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
    fn a_batch_is_stored_like_the_same_inserts_one_by_one() {
        let now = OffsetDateTime::now_utc();
        let messages: Vec<Message> = (0..5).map(|i| Message::new(format!("m{i}"))).collect();
        let mut batch: Vec<Incoming> = messages.iter().map(|m| (m.clone(), now)).collect();
        // A repeat inside the batch and one already stored.
        batch.push((messages[1].clone(), now));
        let one_by_one = new_store(4);
        one_by_one.insert(&messages[0], now).unwrap();
        let batched = new_store(4);
        batched.insert(&messages[0], now).unwrap();
        let expected: Vec<InsertOutcome> = batch
            .iter()
            .map(|(m, at)| one_by_one.insert(m, *at).unwrap())
            .collect();
        let outcomes: Vec<InsertOutcome> = batched
            .insert_batch(&batch)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(outcomes, expected);
        assert_eq!(outcomes[0], InsertOutcome::Duplicate);
        assert_eq!(outcomes[5], InsertOutcome::Duplicate);
        assert_eq!(all(&batched), all(&one_by_one));
        assert_eq!(batched.bytes(), one_by_one.bytes());
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
        let cases: [(usize, &[&str]); 4] = [
            (0, &[]),
            (2, &["c", "d"]),
            (4, &["a", "b", "c", "d"]),
            (100, &["a", "b", "c", "d"]),
        ];
        for (limit, expected) in cases {
            assert_eq!(ids(&newest(&store, limit)), expected, "limit {limit}");
        }
        assert_eq!(ids(&all(&store)), ["a", "b", "c", "d"]);
        assert_eq!(store.page(ListQuery::newest(2)).unwrap().next, None);
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
        assert_eq!(ids(&newest(&store, 100)), expected);
        let all: Vec<serde_json::Value> = serde_json::from_str(&all(&store)).unwrap();
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
        let page =
            |after: usize, limit: usize| store.page(ListQuery::after(messages[after].id, limit));
        assert_eq!(ids(&page(2, 10).unwrap().json), ["m3", "m4"]);
        assert_eq!(ids(&page(3, 1).unwrap().json), ["m4"]);
        assert_eq!(page(4, 10).unwrap().json, "[]");
        assert!(matches!(
            page(1, 10),
            Err(StoreError::UnknownCursor(id)) if id == messages[1].id
        ));
    }

    #[test]
    fn pages_link_to_the_next_until_the_end() {
        let store = new_store(10);
        let messages: Vec<Message> = (0..5).map(|i| Message::new(format!("m{i}"))).collect();
        let now = OffsetDateTime::now_utc();
        for message in &messages {
            store.insert(message, now).unwrap();
        }
        let first = store.page(ListQuery::oldest(2)).unwrap();
        assert_eq!(ids(&first.json), ["m0", "m1"]);
        assert_eq!(first.next, Some(messages[1].id));
        let second = store.page(ListQuery::after(messages[1].id, 2)).unwrap();
        assert_eq!(ids(&second.json), ["m2", "m3"]);
        assert_eq!(second.next, Some(messages[3].id));
        let last = store.page(ListQuery::after(messages[3].id, 2)).unwrap();
        assert_eq!(ids(&last.json), ["m4"]);
        assert_eq!(last.next, None);
        // A page that ends exactly at the newest message has no next either.
        let exact = store.page(ListQuery::after(messages[2].id, 2)).unwrap();
        assert_eq!(ids(&exact.json), ["m3", "m4"]);
        assert_eq!(exact.next, None);
    }

    #[test]
    fn pages_stop_at_the_byte_budget_but_never_come_out_empty() {
        let store = new_store(100);
        let big = "z".repeat(PAGE_MAX_BYTES / 3);
        let messages: Vec<Message> = (0..5).map(|i| Message::new(format!("{i}{big}"))).collect();
        let now = OffsetDateTime::now_utc();
        for message in &messages {
            store.insert(message, now).unwrap();
        }
        let first = store.page(ListQuery::oldest(100)).unwrap();
        let on_page: Vec<serde_json::Value> = serde_json::from_str(&first.json).unwrap();
        assert_eq!(on_page.len(), 2, "three of these exceed the budget");
        assert!(first.json.len() <= PAGE_MAX_BYTES + 2);
        assert_eq!(first.next, Some(messages[1].id));
        assert!(first.cut);
        // The newest page starts at the 3rd newest and pages forward the
        // same way: cut, with the rest one page away.
        let newest = store.page(ListQuery::newest(3)).unwrap();
        let on_page: Vec<serde_json::Value> = serde_json::from_str(&newest.json).unwrap();
        assert_eq!(on_page.len(), 2);
        assert_eq!(on_page[0]["id"], messages[2].id.to_string());
        assert_eq!((newest.next, newest.cut), (Some(messages[3].id), true));
        let uncut = store.page(ListQuery::newest(1)).unwrap();
        assert_eq!((uncut.next, uncut.cut), (None, false));

        let huge = new_store(2);
        insert(&huge, &"h".repeat(PAGE_MAX_BYTES * 2));
        let page = huge.page(ListQuery::oldest(100)).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<serde_json::Value>>(&page.json)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn records_have_the_documented_shape() {
        let store = new_store(2);
        let message = Message::new("shape");
        store.insert(&message, OffsetDateTime::now_utc()).unwrap();
        let value: Vec<serde_json::Value> = serde_json::from_str(&all(&store)).unwrap();
        let record = value[0].as_object().unwrap();
        let mut keys: Vec<&str> = record.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["created_at", "id", "msg", "received_at"]);
        assert_eq!(record["id"], message.id.to_string());
        assert_eq!(all(&store).chars().next(), Some('['));
        assert_eq!(all(&new_store(1)), "[]");
    }
}
