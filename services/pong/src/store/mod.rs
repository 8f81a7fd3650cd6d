//! Message stores behind the consumer and `GET /pong`.
//!
//! The consumer writes through [`MessageSink`] and the HTTP handlers read
//! through [`MessageStore`]; both are implemented by the bounded in-memory
//! [`MemoryStore`] (the default) and by [`PgStore`] (PostgreSQL). Errors carry a
//! class: a *batch* error ([`StoreError::is_transient`]) means "nothing was
//! stored, retry later, do not ack"; a *per-message* error means "this message
//! can never be stored" and the consumer dead-letters it.

pub mod memory;
pub mod postgres;
mod record;

use futures::future::BoxFuture;
use pingpong_common::Message;
use time::OffsetDateTime;
use uuid::Uuid;

pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use record::StoredMessage;

use crate::config::StoreKind;

/// A message and the time pong received it.
pub type Incoming = (Message, OffsetDateTime);

/// Result of an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored; older messages were dropped to make room.
    Stored {
        /// Messages evicted to make room.
        evicted: usize,
        /// Bytes those messages held (the memory store counts the
        /// serialised record, PostgreSQL the text of `msg`).
        evicted_bytes: u64,
        /// Messages stored after the insert.
        len: usize,
        /// Bytes stored after the insert, for stores bounded by bytes
        /// (`PONG_MAX_BYTES`, the memory store); `None` otherwise.
        bytes: Option<u64>,
    },
    /// The id is already stored; nothing changed.
    Duplicate,
}

/// Why a message could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record could not be serialised (e.g. a timestamp out of range).
    #[error("failed to serialise message {id}: {source}")]
    Serialize {
        /// The message id.
        id: Uuid,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The database refused this one message for good (e.g. a NUL character
    /// in `msg`, which PostgreSQL text cannot hold).
    #[error("message {id} cannot be stored in {target}: {reason}")]
    Unstorable {
        /// The message id.
        id: Uuid,
        /// `host:port/database`.
        target: String,
        /// Why.
        reason: &'static str,
    },
    /// A database statement failed (connection lost, server error).
    #[error("postgres {target}: {op} failed: {source}")]
    Database {
        /// `host:port/database` (never the password).
        target: String,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection could be taken from the pool (server unreachable,
    /// authentication failed, pool exhausted).
    #[error("postgres {target}: no connection for {op}: {source}")]
    Pool {
        /// `host:port/database` (never the password).
        target: String,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: deadpool_postgres::PoolError,
    },
    /// A database operation took too long.
    #[error("postgres {target}: {op} timed out after {seconds} s")]
    Timeout {
        /// `host:port/database`.
        target: String,
        /// What was being done.
        op: &'static str,
        /// The limit.
        seconds: u64,
    },
    /// The `after` cursor names a message that is not stored (never was, or
    /// was evicted).
    #[error("message {0} is not stored (unknown or evicted)")]
    UnknownCursor(Uuid),
}

impl StoreError {
    /// Error category for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Serialize { .. } => "Serialize",
            Self::Unstorable { .. } => "Unstorable",
            Self::Database { .. } => "Database",
            Self::Pool { .. } => "Pool",
            Self::Timeout { .. } => "Timeout",
            Self::UnknownCursor(_) => "UnknownCursor",
        }
    }

    /// Whether retrying later may succeed (the database is unavailable),
    /// as opposed to a verdict on the message or the request.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Database { .. } | Self::Pool { .. } | Self::Timeout { .. }
        )
    }
}

impl StoreError {
    /// The error and its causes, `: `-separated, for logs (the driver's
    /// errors keep the useful part, such as "connection refused", in their
    /// sources; none of them contains the password).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }
}

/// Where a page of `GET /pong` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the oldest stored message (`GET /pong`).
    Oldest,
    /// At the `limit`-th newest message, so that a page not cut by the byte
    /// bound ends at the newest (`GET /pong?from=newest`).
    Newest,
    /// Right after this message (`GET /pong?after=<id>`, keyset pagination).
    After(Uuid),
}

/// A page of `GET /pong`: at most `limit` messages, oldest first, cut
/// earlier once it holds about [`PAGE_MAX_BYTES`] (never empty because of
/// that cut while messages remain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    /// Where the page starts.
    pub start: Start,
    /// Most messages on the page.
    pub limit: usize,
}

impl ListQuery {
    /// The first page, oldest first, of `limit` messages.
    pub fn oldest(limit: usize) -> Self {
        Self {
            start: Start::Oldest,
            limit,
        }
    }

    /// The page ending at the newest message.
    pub fn newest(limit: usize) -> Self {
        Self {
            start: Start::Newest,
            limit,
        }
    }

    /// The page after message `id`.
    pub fn after(id: Uuid, limit: usize) -> Self {
        Self {
            start: Start::After(id),
            limit,
        }
    }
}

/// Bytes of message content after which a page is cut (at least one
/// message is always on it), so that every `GET /pong` answer stays small
/// whatever the messages' sizes.
pub const PAGE_MAX_BYTES: usize = 1024 * 1024;

/// One page: its JSON array and where the next page starts. Every start
/// pages the same way: forward from the start, with `next` while more
/// messages follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The messages as a JSON array, oldest first.
    pub json: String,
    /// The id of the page's last message when more messages are stored
    /// after it; the next page is `Start::After(next)`.
    pub next: Option<Uuid>,
    /// Whether [`PAGE_MAX_BYTES`] ended the page before `limit` messages
    /// (then `next` is set).
    pub cut: bool,
}

/// Batch-level result of [`MessageSink::store_batch`]: one per-message
/// result per input, in order.
pub type BatchResult = Result<Vec<Result<InsertOutcome, StoreError>>, StoreError>;

/// The span of one store operation (`op`: `insert`, `list`, `version`):
/// a CLIENT span with `db.system.name=postgresql` for PostgreSQL, an
/// internal one for memory. With one message, it carries the message id.
pub(crate) fn store_span(kind: StoreKind, op: &'static str, batch: &[Incoming]) -> tracing::Span {
    let span = tracing::debug_span!(
        target: pingpong_common::trace::TARGET,
        "store",
        otel.name = %format_args!("{op} {}", kind.as_str()),
        otel.kind = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        db.system.name = tracing::field::Empty,
        db.operation.name = op,
        pingpong.store = kind.as_str(),
        pingpong.batch.size = batch.len(),
        messaging.message.id = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if kind == StoreKind::Postgres {
        span.record("otel.kind", "client");
        span.record("db.system.name", "postgresql");
    }
    if let [(message, _)] = batch {
        span.record("messaging.message.id", tracing::field::display(message.id));
    }
    span
}

/// Runs `operation` in `span`, marking the span failed on an error.
pub(crate) async fn traced<T>(
    span: tracing::Span,
    operation: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let result = tracing::Instrument::instrument(operation, span.clone()).await;
    if let Err(error) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", error.kind());
    }
    result
}

/// Where the consumer puts messages; a store, or a fake in tests.
pub trait MessageSink: Send + Sync {
    /// Stores `message` received at `received_at`; the delivery is acked only
    /// after this resolves successfully.
    fn store(
        &self,
        message: Message,
        received_at: OffsetDateTime,
    ) -> BoxFuture<'_, Result<InsertOutcome, StoreError>>;

    /// Stores consecutive messages; every `Ok` outcome is durable when this
    /// resolves. The outer `Err` means nothing may be acked (retry the
    /// batch); an inner `Err` condemns that message only. By default the
    /// messages are stored one by one.
    fn store_batch<'a>(&'a self, batch: &'a [Incoming]) -> BoxFuture<'a, BatchResult> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(batch.len());
            for (message, received_at) in batch {
                match self.store(message.clone(), *received_at).await {
                    Err(error) if error.is_transient() => return Err(error),
                    result => outcomes.push(result),
                }
            }
            Ok(outcomes)
        })
    }
}

/// What `GET /pong` reads from; implemented by every store.
pub trait MessageStore: MessageSink {
    /// Which store this is.
    fn kind(&self) -> StoreKind;

    /// Whether the store accepts writes now (the source of the `store`
    /// readiness check; `pingpong_pong_store_ready` mirrors it).
    fn is_ready(&self) -> bool;

    /// One page, oldest first (see [`ListQuery`]).
    fn list(&self, query: ListQuery) -> BoxFuture<'_, Result<Page, StoreError>>;

    /// A number that changes whenever the stored list changes and is read
    /// from the same source of truth as the list (the key of cached pages);
    /// `None` when the store is not worth caching.
    fn version(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;
}
