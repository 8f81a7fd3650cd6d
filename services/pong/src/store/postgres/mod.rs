//! The PostgreSQL store (`PONG_STORE=postgres`): durable, shared by every
//! pong replica on the same database.
//!
//! Writes: a batch of consecutive deliveries is one statement, hence one
//! round trip and one transaction (`pong_store_batch`, migration 2:
//! `INSERT … ON CONFLICT (id) DO NOTHING`, so a redelivery is a no-op; the
//! `pong_state` bump of the exact row count and version; the deletion of
//! the oldest rows beyond `PONG_MAX_MESSAGES`); the consumer acks only
//! after it commits. Reads: bounded pages (the oldest, the newest N, or
//! keyset pages `seq > cursor`), all by the unique index on `seq`. The schema is created
//! lazily by the first operation (see [`migrations`]); until then every
//! operation fails as transient. This module never logs the password: errors
//! name `host:port/database` only.

pub mod migrations;
mod queries;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{
    ClientWrapper, Connect, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use futures::future::BoxFuture;
use pingpong_common::credential::read_setting_file;
use pingpong_common::{Message, SettingFile};
use time::OffsetDateTime;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::{
    BatchResult, Incoming, InsertOutcome, ListQuery, MessageSink, MessageStore, Page, StoreError,
};
use crate::config::{PgConfig, StoreKind};
use crate::metrics::PongMetrics;

/// Longest a write (one batch transaction) may take before it counts as failed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a read may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the health check runs.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Opens each pool connection, reading `PGPASSWORD_FILE` (when set) right
/// before, so a password rotated in a mounted Secret is used by every new
/// connection without a restart. An unreadable file is logged (variable and
/// path, never content) and the attempt goes on without a password, which
/// the server refuses: the store stays not ready and retries.
struct PasswordFileConnect {
    file: Option<SettingFile>,
    target: String,
}

impl Connect for PasswordFileConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let mut config = pg_config.clone();
        if let Some(file) = &self.file {
            match read_setting_file(file) {
                Ok(password) => {
                    config.password(password);
                }
                Err(error) => {
                    tracing::warn!(kind = error.kind(), target = %self.target, %error, "cannot read the PostgreSQL password file");
                }
            }
        }
        let target = self.target.clone();
        Box::pin(async move {
            let (client, connection) = config.connect(NoTls).await?;
            let task = tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%target, %error, "postgres connection error");
                }
            });
            Ok((client, task))
        })
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    target: String,
    max_messages: i64,
    schema: OnceCell<()>,
    /// Whether the last database operation succeeded (or failed for a
    /// reason other than the database being unavailable).
    ready: AtomicBool,
    metrics: PongMetrics,
}

impl PgStore {
    /// A store over a new (lazy) connection pool; does no I/O.
    pub fn new(
        config: &PgConfig,
        max_messages: NonZeroUsize,
        metrics: PongMetrics,
    ) -> Result<Self, deadpool_postgres::BuildError> {
        let manager = Manager::from_connect(
            config.connect_config().clone(),
            PasswordFileConnect {
                file: config.password_file().cloned(),
                target: config.target().to_owned(),
            },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.get())
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(READ_TIMEOUT))
            .create_timeout(Some(READ_TIMEOUT))
            .recycle_timeout(Some(READ_TIMEOUT))
            .build()?;
        Ok(Self {
            pool,
            target: config.target().to_owned(),
            max_messages: i64::try_from(max_messages.get()).unwrap_or(i64::MAX),
            schema: OnceCell::new(),
            ready: AtomicBool::new(false),
            metrics,
        })
    }

    /// `host:port/database`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Applies the migrations once per process (retried on the next call
    /// after a failure) and sets the stored-messages gauge.
    pub async fn ensure_schema(&self) -> Result<(), StoreError> {
        self.schema
            .get_or_try_init(|| async {
                let applied = self
                    .with_client("migrate", WRITE_TIMEOUT, |client| {
                        Box::pin(async move { migrations::migrate(client).await })
                    })
                    .await?;
                tracing::info!(target = %self.target, ?applied, "postgres schema is current");
                Ok::<(), StoreError>(())
            })
            .await?;
        Ok(())
    }

    /// Number of stored rows (from `pong_state`).
    pub async fn stored(&self) -> Result<i64, StoreError> {
        self.ensure_schema().await?;
        self.with_client("count", READ_TIMEOUT, |client| {
            Box::pin(async move { queries::state(client).await.map(|(stored, _)| stored) })
        })
        .await
    }

    /// Checks the database every [`HEALTH_INTERVAL`] until `stop`, keeping
    /// the readiness gauge current while no messages flow.
    pub async fn watch_health(self: Arc<Self>, stop: CancellationToken) {
        let mut failing = false;
        loop {
            match self.stored().await {
                Ok(stored) => {
                    if failing {
                        tracing::info!(target = %self.target, "postgres reachable again");
                    }
                    failing = false;
                    self.metrics.stored_messages.set(stored);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(kind = error.kind(), error = %error.chain(), "postgres unavailable; not acking, retrying");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(HEALTH_INTERVAL) => {}
            }
        }
    }

    /// Runs `work` on a pooled connection within `timeout`, timing it and
    /// keeping the error count and readiness gauge current. A connection
    /// whose operation timed out is discarded, not returned to the pool.
    async fn with_client<T, F>(
        &self,
        op: &'static str,
        timeout: Duration,
        work: F,
    ) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut ClientWrapper) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    {
        self.with_client_on(op, timeout, &(), |client, ()| work(client))
            .await
    }

    /// [`Self::with_client`] for work that borrows `data` (the batch being
    /// written) instead of owning a copy of it.
    async fn with_client_on<T, D, F>(
        &self,
        op: &'static str,
        timeout: Duration,
        data: &D,
        work: F,
    ) -> Result<T, StoreError>
    where
        D: ?Sized + Sync,
        F: for<'c> FnOnce(
            &'c mut ClientWrapper,
            &'c D,
        ) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    {
        let started = Instant::now();
        let result = self.run_on_client(op, timeout, data, work).await;
        self.metrics
            .db_query_duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.set_ready(true),
            Err(error) if error.is_transient() => {
                self.metrics.db_errors.inc();
                self.set_ready(false);
            }
            Err(_) => self.metrics.db_errors.inc(),
        }
        result
    }

    /// Records the store's readiness (the gauge mirrors it).
    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.store_ready.set(i64::from(ready));
    }

    async fn run_on_client<T, D, F>(
        &self,
        op: &'static str,
        timeout: Duration,
        data: &D,
        work: F,
    ) -> Result<T, StoreError>
    where
        D: ?Sized + Sync,
        F: for<'c> FnOnce(
            &'c mut ClientWrapper,
            &'c D,
        ) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    {
        let timed_out = || StoreError::Timeout {
            target: self.target.clone(),
            op,
            seconds: timeout.as_secs(),
        };
        let mut client = match tokio::time::timeout(timeout, self.pool.get()).await {
            Ok(Ok(client)) => client,
            Ok(Err(source)) => {
                return Err(StoreError::Pool {
                    target: self.target.clone(),
                    op,
                    source,
                });
            }
            Err(_) => return Err(timed_out()),
        };
        let outcome = tokio::time::timeout(timeout, work(&mut client, data)).await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(StoreError::Database {
                target: self.target.clone(),
                op,
                source,
            }),
            Err(_) => {
                // The connection may be stuck mid-statement: close it.
                drop(Object::take(client));
                Err(timed_out())
            }
        }
    }

    async fn insert_batch(&self, batch: &[Incoming]) -> BatchResult {
        self.ensure_schema().await?;
        // PostgreSQL text cannot hold NUL: condemn those messages up front.
        let mut results: Vec<Option<Result<InsertOutcome, StoreError>>> = batch
            .iter()
            .map(|(message, _)| {
                message.msg.contains('\0').then(|| {
                    Err(StoreError::Unstorable {
                        id: message.id,
                        target: self.target.clone(),
                        reason: "NUL character in msg",
                    })
                })
            })
            .collect();
        let rows: Vec<&Incoming> = batch
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_none())
            .map(|(incoming, _)| incoming)
            .collect();
        if !rows.is_empty() {
            let written = self.write(&rows).await;
            let outcomes = match written {
                Ok(outcomes) => outcomes,
                Err(error) if is_data_error(&error) && rows.len() > 1 => {
                    // One row poisons the batch: isolate it.
                    let mut outcomes = Vec::with_capacity(rows.len());
                    for row in &rows {
                        match self.write(std::slice::from_ref(row)).await {
                            Ok(mut one) => outcomes.append(&mut one),
                            Err(error) if is_data_error(&error) => {
                                outcomes.push(Err(self.unstorable(&row.0)))
                            }
                            Err(error) => return Err(error),
                        }
                    }
                    outcomes
                }
                Err(error) if is_data_error(&error) => rows
                    .iter()
                    .map(|row| Err(self.unstorable(&row.0)))
                    .collect(),
                Err(error) => return Err(error),
            };
            let mut outcomes = outcomes.into_iter();
            for slot in results.iter_mut().filter(|slot| slot.is_none()) {
                *slot = outcomes.next();
            }
        }
        // Every slot is filled above; should one not be, the message is
        // dead-lettered (kept), never acked as if stored.
        Ok(batch
            .iter()
            .zip(results)
            .map(|((message, _), result)| {
                result.unwrap_or_else(|| Err(self.refused(message, "no outcome recorded")))
            })
            .collect())
    }

    fn unstorable(&self, message: &Message) -> StoreError {
        self.refused(message, "rejected by the database as invalid data")
    }

    fn refused(&self, message: &Message, reason: &'static str) -> StoreError {
        StoreError::Unstorable {
            id: message.id,
            target: self.target.clone(),
            reason,
        }
    }

    /// One transaction for `rows`; per-row outcomes in order.
    async fn write(
        &self,
        rows: &[&Incoming],
    ) -> Result<Vec<Result<InsertOutcome, StoreError>>, StoreError> {
        let max = self.max_messages;
        let written = self
            .with_client_on("insert", WRITE_TIMEOUT, rows, move |client, rows| {
                Box::pin(async move { queries::insert(client, rows, max).await })
            })
            .await?;
        let len = usize::try_from(written.stored).unwrap_or(0);
        let mut evicted = written.evicted;
        let mut evicted_bytes = written.evicted_bytes;
        Ok(written
            .inserted
            .into_iter()
            .map(|inserted| {
                if inserted {
                    // Attribute the batch's evictions to its first new row.
                    let outcome = InsertOutcome::Stored {
                        evicted,
                        evicted_bytes,
                        len,
                        bytes: None,
                    };
                    evicted = 0;
                    evicted_bytes = 0;
                    Ok(outcome)
                } else {
                    Ok(InsertOutcome::Duplicate)
                }
            })
            .collect())
    }

    async fn read<T, F>(&self, op: &'static str, work: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut ClientWrapper) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    {
        self.ensure_schema().await?;
        self.with_client(op, READ_TIMEOUT, work).await
    }
}

/// SQLSTATE class 22 (data exception) or 23 (integrity violation): the rows,
/// not the database, are at fault.
fn is_data_error(error: &StoreError) -> bool {
    let StoreError::Database { source, .. } = error else {
        return false;
    };
    source
        .code()
        .is_some_and(|code| code.code().starts_with("22") || code.code().starts_with("23"))
}

impl MessageSink for PgStore {
    fn store(
        &self,
        message: Message,
        received_at: OffsetDateTime,
    ) -> BoxFuture<'_, Result<InsertOutcome, StoreError>> {
        Box::pin(async move {
            let batch = [(message, received_at)];
            let mut outcomes = self.insert_batch(&batch).await?;
            outcomes
                .pop()
                .unwrap_or_else(|| Err(self.refused(&batch[0].0, "no outcome recorded")))
        })
    }

    fn store_batch<'a>(&'a self, batch: &'a [Incoming]) -> BoxFuture<'a, BatchResult> {
        let span = super::store_span(StoreKind::Postgres, "insert", batch);
        Box::pin(super::traced(span, self.insert_batch(batch)))
    }
}

impl MessageStore for PgStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn list(&self, query: ListQuery) -> BoxFuture<'_, Result<Page, StoreError>> {
        let span = super::store_span(StoreKind::Postgres, "list", &[]);
        Box::pin(super::traced(span, async move {
            let page = self
                .read("list", |client| {
                    Box::pin(async move { queries::page(client, query).await })
                })
                .await?;
            match page {
                queries::Page::Found(page) => Ok(page),
                queries::Page::UnknownCursor(id) => Err(StoreError::UnknownCursor(id)),
            }
        }))
    }

    fn version(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            let version = self
                .read("version", |client| {
                    Box::pin(
                        async move { queries::state(client).await.map(|(_, version)| version) },
                    )
                })
                .await?;
            Ok(Some(version))
        })
    }
}
