//! Configuration of the pong service, read once from the environment.
//!
//! Only parsing and the redacted summary live here; see
//! [`pingpong_common::config`] for the shared pieces and [`backends`] for
//! the store and cache settings.

pub mod backends;

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use pingpong_common::config::listen_addr;
use pingpong_common::runtime::RuntimeFlavor;
use pingpong_common::server::ServeOptions;
use pingpong_common::trace::Traces;
use pingpong_common::{AmqpConfig, ConfigError, Env, LogConfig};

pub use backends::{CacheConfig, PgConfig, StoreConfig, StoreKind};

/// Default listen address of pong.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8002);
/// Variable bounding the store (in memory or PostgreSQL).
pub const PONG_MAX_MESSAGES: &str = "PONG_MAX_MESSAGES";
/// Default bound of the in-memory store.
pub const DEFAULT_MAX_MESSAGES: NonZeroUsize = match NonZeroUsize::new(100_000) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// Variable bounding the in-memory store's bytes.
pub const PONG_MAX_BYTES: &str = "PONG_MAX_BYTES";
/// Default byte bound of the in-memory store (64 MiB): with the documented
/// overhead (prefetched deliveries, a batch in flight, the process itself)
/// it keeps pong well under the operator's default 256 MiB memory limit.
pub const DEFAULT_MAX_BYTES: NonZeroUsize = match NonZeroUsize::new(64 * 1024 * 1024) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};
/// Smallest accepted `PONG_MAX_BYTES` (1 MiB): room for several messages of
/// the largest wire size.
pub const MIN_MAX_BYTES: usize = 1024 * 1024;

/// Variable: milliseconds the consumer waits for more deliveries before storing a batch.
pub const PONG_BATCH_LINGER_MS: &str = "PONG_BATCH_LINGER_MS";
/// Default of [`PONG_BATCH_LINGER_MS`].
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(2);
/// Largest accepted [`PONG_BATCH_LINGER_MS`].
pub const MAX_BATCH_LINGER_MS: u64 = 100;

/// Default of `RUNTIME_FLAVOR` (BENCHMARKS.md, "CPU per ping: where it goes").
pub const DEFAULT_RUNTIME: RuntimeFlavor = RuntimeFlavor::MultiThread;

/// Everything pong needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address (`LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// Connection limits (`HTTP_HEADER_READ_TIMEOUT`, `HTTP_WRITE_TIMEOUT`,
    /// `HTTP_MAX_CONNECTIONS`).
    pub http: ServeOptions,
    /// Broker settings (`RABBITMQ_*`).
    pub amqp: AmqpConfig,
    /// Store bound (`PONG_MAX_MESSAGES`); the oldest message is evicted first.
    pub max_messages: NonZeroUsize,
    /// Byte bound of the in-memory store (`PONG_MAX_BYTES`).
    pub max_bytes: NonZeroUsize,
    /// How long the consumer waits for more deliveries to store and acknowledge together
    /// (`PONG_BATCH_LINGER_MS`; zero: only what is already buffered).
    pub batch_linger: Duration,
    /// Which store keeps the messages (`PONG_STORE`, `DATABASE_URL`, `PG*`).
    pub store: StoreConfig,
    /// The optional Redis cache of `GET /pong` (`REDIS_URL`, `PONG_CACHE_*`).
    pub cache: Option<CacheConfig>,
    /// Logging (`LOG_FORMAT`, `RUST_LOG`).
    pub log: LogConfig,
    /// Traces (`OTEL_*`; off unless an OTLP endpoint is set).
    pub traces: Traces,
    /// The tokio runtime (`RUNTIME_FLAVOR`).
    pub runtime: RuntimeFlavor,
}

impl Config {
    /// Parses the configuration through `lookup`, reporting every bad variable.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut env = Env::new(lookup);
        let listen_addr = listen_addr(&mut env, DEFAULT_LISTEN_ADDR);
        let http = ServeOptions::from_env(&mut env);
        let amqp = AmqpConfig::from_env(&mut env);
        let max_messages = env.parse(
            PONG_MAX_MESSAGES,
            DEFAULT_MAX_MESSAGES,
            "a positive integer (messages kept)",
        );
        let max_bytes = env.parse(
            PONG_MAX_BYTES,
            DEFAULT_MAX_BYTES,
            "a whole number of bytes, at least 1048576 (1 MiB)",
        );
        if max_bytes.get() < MIN_MAX_BYTES {
            env.problem(
                PONG_MAX_BYTES,
                Some(max_bytes.to_string()),
                "a whole number of bytes, at least 1048576 (1 MiB)",
            );
        }
        let linger_expected = "a whole number of milliseconds from 0 to 100";
        let linger_ms = env.parse(
            PONG_BATCH_LINGER_MS,
            DEFAULT_BATCH_LINGER.as_millis() as u64,
            linger_expected,
        );
        if linger_ms > MAX_BATCH_LINGER_MS {
            env.problem(
                PONG_BATCH_LINGER_MS,
                Some(linger_ms.to_string()),
                linger_expected,
            );
        }
        let batch_linger = Duration::from_millis(linger_ms.min(MAX_BATCH_LINGER_MS));
        let store = StoreConfig::from_env(&mut env);
        let cache = CacheConfig::from_env(&mut env);
        if cache.is_some() && store.kind() == StoreKind::Memory {
            env.problem(
                backends::REDIS_URL,
                None,
                "unset unless PONG_STORE=postgres (the in-memory store needs no cache)",
            );
        }
        let log = LogConfig::from_env(&mut env);
        let traces = Traces::from_env(&mut env, "pong");
        let runtime = RuntimeFlavor::from_env(&mut env, DEFAULT_RUNTIME);
        env.finish(Self {
            listen_addr,
            http,
            amqp,
            max_messages,
            max_bytes,
            batch_linger,
            store,
            cache,
            log,
            traces,
            runtime,
        })
    }

    /// Parses the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|key| std::env::var(key).ok())
    }

    /// A one-line summary with the password redacted.
    pub fn summary(&self) -> String {
        format!(
            "listen_addr={} header_read_timeout_s={} write_timeout_s={} max_connections={} broker={} max_messages={} max_bytes={} batch_linger_ms={} store={} cache={} log_format={} rust_log={} traces={} runtime={}",
            self.listen_addr,
            self.http.header_read_timeout.as_secs(),
            self.http.write_timeout.as_secs(),
            self.http.max_connections,
            self.amqp.summary(),
            self.max_messages,
            self.max_bytes,
            self.batch_linger.as_millis(),
            self.store.summary(),
            self.cache
                .as_ref()
                .map_or_else(|| "none".to_owned(), CacheConfig::summary),
            self.log.format,
            self.log.filter,
            self.traces.config.summary(),
            self.runtime
        )
    }
}
