//! The optional Redis cache of `GET /pong` pages.
//!
//! Only canonical pages are cached (the first page and the newest page of
//! the default size, see `handlers`), so the keys per version are a fixed
//! few whatever `limit`/`after` clients send. Keys are versioned, never
//! invalidated: `<prefix>v<version>:<page>`, where
//! the version is read from the store (PostgreSQL bumps it in the same
//! transaction that stores or evicts rows) at the start of each request. A
//! message acked before a request started was committed before that version
//! read, so the request's key can only hold a page at least that new: a
//! reader never sees a list older than what was acked before it asked. Old
//! versions simply expire (`PONG_CACHE_TTL`).
//!
//! Redis is an optimisation only: every Redis failure or timeout (a short
//! one) is counted and the page is read from the store instead; the cache
//! never affects readiness.
//!
//! With `REDIS_URL_FILE` the URL (which may carry a password) is read from
//! the file at start and again after a failure, at most once per
//! [`URL_REREAD_INTERVAL`] (while Redis is down every request fails, and a
//! request must not cost a file read); a changed URL replaces
//! the connection, so a rotated Secret needs no restart. An unreadable file or
//! a line that is not a Redis URL is a failure like any other (counted,
//! logged without the content), retried at the next request.

use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::Instrument;

use uuid::Uuid;

use pingpong_common::{Secret, Setting};

use crate::config::CacheConfig;
use crate::metrics::PongMetrics;
use crate::store::Page;

/// Longest a Redis round trip may take before the store is used instead.
pub const TIMEOUT: Duration = Duration::from_millis(250);
/// Least time between two reads of `REDIS_URL_FILE` after failures.
pub const URL_REREAD_INTERVAL: Duration = Duration::from_secs(1);
/// Pages larger than this are not cached.
pub const MAX_CACHED_BYTES: usize = 1024 * 1024;

/// Why the cache could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The Redis client could not be created.
    #[error("redis {target}: {source}")]
    Client {
        /// `host:port`.
        target: String,
        /// The cause.
        #[source]
        source: redis::RedisError,
    },
}

impl CacheError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Client { .. } => "CacheClient",
        }
    }
}

/// A Redis-backed page cache.
pub struct Cache {
    url: Setting<Secret>,
    /// The URL in use and its connection; `None` while a URL file cannot be
    /// read or does not hold a Redis URL.
    connection: RwLock<Option<(String, ConnectionManager)>>,
    /// When `REDIS_URL_FILE` was last read.
    url_read_at: Mutex<Option<Instant>>,
    prefix: String,
    ttl: u64,
    target: String,
    metrics: PongMetrics,
}

impl Cache {
    /// A cache that connects lazily (Redis may be down at start). A URL
    /// given in `REDIS_URL` that redis cannot use is an error; one read from
    /// `REDIS_URL_FILE` is retried until it works.
    pub fn new(config: &CacheConfig, metrics: PongMetrics) -> Result<Self, CacheError> {
        let cache = Self {
            url: config.url.clone(),
            connection: RwLock::new(None),
            url_read_at: Mutex::new(None),
            prefix: config.prefix.clone(),
            ttl: config.ttl.get(),
            target: config.target.clone(),
            metrics,
        };
        match &config.url {
            Setting::Value(url) => {
                let manager = connect(url.expose()).map_err(|source| CacheError::Client {
                    target: config.target.clone(),
                    source,
                })?;
                cache.replace(url.expose().to_owned(), manager);
            }
            Setting::File(_) => cache.refresh(),
        }
        Ok(cache)
    }

    fn replace(&self, url: String, manager: ConnectionManager) {
        *self
            .connection
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some((url, manager));
    }

    fn manager(&self) -> Option<ConnectionManager> {
        self.connection
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, manager)| manager.clone())
    }

    /// Reads the URL file again and connects anew when the URL changed.
    fn refresh(&self) {
        let Setting::File(_) = &self.url else {
            return;
        };
        {
            let mut read_at = self
                .url_read_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if read_at.is_some_and(|at| now.duration_since(at) < URL_REREAD_INTERVAL) {
                return;
            }
            *read_at = Some(now);
        }
        let url = match self.url.read() {
            Ok(url) => url,
            Err(error) => {
                tracing::warn!(kind = error.kind(), %error, "cannot read the Redis URL");
                return;
            }
        };
        let unchanged = self
            .connection
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|(current, _)| current == url.expose());
        if unchanged {
            return;
        }
        match connect(url.expose()) {
            Ok(manager) => {
                tracing::info!(target = %self.target, "using the Redis URL read from the file");
                self.replace(url.expose().to_owned(), manager);
            }
            Err(_) => tracing::warn!(
                target = %self.target,
                "the Redis URL file does not hold a Redis URL such as redis://127.0.0.1:6379/0"
            ),
        }
    }

    /// The key of the canonical page `page` at store version `version`.
    pub fn key(&self, version: i64, page: &'static str) -> String {
        format!("{}v{version}:{page}", self.prefix)
    }

    /// The cached page, or `None` on a miss or any failure (counted).
    pub async fn get(&self, key: &str) -> Option<Page> {
        let span = redis_span("GET");
        let page = self.get_page(key).instrument(span.clone()).await;
        span.record("pingpong.cache.hit", page.is_some());
        page
    }

    async fn get_page(&self, key: &str) -> Option<Page> {
        let Some(mut connection) = self.manager() else {
            self.failed("GET", "no usable Redis URL");
            return None;
        };
        let command = redis::cmd("GET").arg(key).to_owned();
        match tokio::time::timeout(
            TIMEOUT,
            command.query_async::<Option<String>>(&mut connection),
        )
        .await
        {
            Ok(Ok(Some(value))) => match decode(&value) {
                Some(page) => {
                    self.metrics.cache_hits.inc();
                    Some(page)
                }
                None => {
                    self.failed("GET", "unreadable cached page");
                    None
                }
            },
            Ok(Ok(None)) => {
                self.metrics.cache_misses.inc();
                None
            }
            Ok(Err(error)) => {
                self.failed("GET", &error.to_string());
                None
            }
            Err(_) => {
                self.failed("GET", "timed out");
                None
            }
        }
    }

    /// Stores `page` under `key` for the TTL (failures are counted only).
    pub async fn put(&self, key: &str, page: &Page) {
        if page.json.len() > MAX_CACHED_BYTES {
            return;
        }
        self.put_page(key, page).instrument(redis_span("SET")).await;
    }

    async fn put_page(&self, key: &str, page: &Page) {
        let Some(mut connection) = self.manager() else {
            self.failed("SET", "no usable Redis URL");
            return;
        };
        let command = redis::cmd("SET")
            .arg(key)
            .arg(encode(page))
            .arg("EX")
            .arg(self.ttl)
            .to_owned();
        match tokio::time::timeout(TIMEOUT, command.query_async::<()>(&mut connection)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.failed("SET", &error.to_string()),
            Err(_) => self.failed("SET", "timed out"),
        }
    }

    fn failed(&self, command: &'static str, error: &str) {
        tracing::Span::current().record("otel.status_code", "ERROR");
        self.metrics.cache_errors.inc();
        tracing::debug!(target = %self.target, command, error, "redis unavailable, using the store");
        self.refresh();
    }
}

/// The CLIENT span of one Redis command (the cache of `GET /pong`).
fn redis_span(command: &'static str) -> tracing::Span {
    tracing::debug_span!(
        target: pingpong_common::trace::TARGET,
        "redis",
        otel.name = command,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "redis",
        db.operation.name = command,
        pingpong.cache.hit = tracing::field::Empty,
    )
}

fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// A cached value: the next-page cursor (or `-`), `+` when the byte bound
/// cut the page, a newline, the JSON.
fn encode(page: &Page) -> String {
    let next = page
        .next
        .map_or_else(|| "-".to_owned(), |id| id.to_string());
    let cut = if page.cut { "+" } else { "" };
    format!("{next}{cut}\n{}", page.json)
}

fn decode(value: &str) -> Option<Page> {
    let (head, json) = value.split_once('\n')?;
    let (next, cut) = match head.strip_suffix('+') {
        Some(next) => (next, true),
        None => (head, false),
    };
    let next = match next {
        "-" => None,
        id => Some(id.parse::<Uuid>().ok()?),
    };
    Some(Page {
        json: json.to_owned(),
        next,
        cut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_pages_keep_their_next_cursor() {
        for (next, cut) in [
            (None, false),
            (Some(Uuid::new_v4()), false),
            (Some(Uuid::new_v4()), true),
        ] {
            let page = Page {
                json: "[{\"msg\":\"a\\nb\"}]".to_owned(),
                next,
                cut,
            };
            assert_eq!(decode(&encode(&page)), Some(page));
        }
        assert_eq!(decode("no newline"), None);
        assert_eq!(decode("not-a-uuid\n[]"), None);
    }
}
