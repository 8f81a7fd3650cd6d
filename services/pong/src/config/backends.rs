//! Store and cache settings of pong: `PONG_STORE`, the PostgreSQL
//! connection (`DATABASE_URL` or libpq-style `PG*` variables) and the
//! optional Redis cache (`REDIS_URL` or `REDIS_URL_FILE`, `PONG_CACHE_*`).
//!
//! Only parsing lives here; connecting is the store's and the cache's job.
//! Passwords and URLs (which may carry credentials) are [`Secret`]s and never
//! appear in problems, summaries or `Debug` output: summaries name
//! `host:port/database` only.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU64, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use pingpong_common::{Env, Secret, Setting, SettingFile};
use tokio_postgres::config::{Host, SslMode};

/// Variable selecting the store (`memory` or `postgres`).
pub const PONG_STORE: &str = "PONG_STORE";
/// Variable with a PostgreSQL connection URL or key=value string (a secret).
pub const DATABASE_URL: &str = "DATABASE_URL";
/// libpq: server host.
pub const PGHOST: &str = "PGHOST";
/// libpq: server port.
pub const PGPORT: &str = "PGPORT";
/// libpq: user name.
pub const PGUSER: &str = "PGUSER";
/// libpq: password (a secret).
pub const PGPASSWORD: &str = "PGPASSWORD";
/// A file holding the password, read again for every new connection.
pub const PGPASSWORD_FILE: &str = "PGPASSWORD_FILE";
/// libpq: database name.
pub const PGDATABASE: &str = "PGDATABASE";
/// libpq: TLS mode; only `disable` and `prefer` (no TLS is negotiated).
pub const PGSSLMODE: &str = "PGSSLMODE";
/// Variable sizing the connection pool.
pub const PONG_DB_POOL_SIZE: &str = "PONG_DB_POOL_SIZE";
/// Variable with the Redis URL (a secret); unset means no cache.
pub const REDIS_URL: &str = "REDIS_URL";
/// File holding the Redis URL instead of `REDIS_URL` (a mounted Secret): read
/// at start and again whenever Redis fails, so a rotated URL needs no restart.
pub const REDIS_URL_FILE: &str = "REDIS_URL_FILE";
/// Variable with the cache entry lifetime in seconds.
pub const PONG_CACHE_TTL: &str = "PONG_CACHE_TTL";
/// Variable with the prefix of every cache key.
pub const PONG_CACHE_PREFIX: &str = "PONG_CACHE_PREFIX";

/// Default size of the PostgreSQL connection pool.
pub const DEFAULT_POOL_SIZE: NonZeroUsize = match NonZeroUsize::new(8) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};
/// Default lifetime of a cache entry.
pub const DEFAULT_CACHE_TTL: NonZeroU64 = match NonZeroU64::new(60) {
    Some(n) => n,
    None => NonZeroU64::MIN,
};
/// Default prefix of cache keys.
pub const DEFAULT_CACHE_PREFIX: &str = "pingpong:pong:";
/// How long opening one PostgreSQL connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which store keeps the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// Bounded, in process memory (lost on restart).
    #[default]
    Memory,
    /// PostgreSQL (durable, shared by replicas).
    Postgres,
}

impl StoreKind {
    /// The value as written in `PONG_STORE` (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Postgres => "postgres",
        }
    }
}

impl FromStr for StoreKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "memory" => Ok(Self::Memory),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(()),
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The store settings.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The in-memory store.
    Memory,
    /// PostgreSQL with these connection settings.
    Postgres(Box<PgConfig>),
}

impl StoreConfig {
    /// The kind of store.
    pub fn kind(&self) -> StoreKind {
        match self {
            Self::Memory => StoreKind::Memory,
            Self::Postgres(_) => StoreKind::Postgres,
        }
    }

    /// Reads `PONG_STORE` and, for PostgreSQL, its connection settings.
    pub fn from_env(env: &mut Env<'_>) -> Self {
        match env.parse(PONG_STORE, StoreKind::Memory, "memory or postgres") {
            StoreKind::Memory => Self::Memory,
            StoreKind::Postgres => Self::Postgres(Box::new(PgConfig::from_env(env))),
        }
    }

    /// A one-line description without secrets.
    pub fn summary(&self) -> String {
        match self {
            Self::Memory => "memory".to_owned(),
            Self::Postgres(pg) => format!("postgres {} pool={}", pg.target(), pg.pool_size),
        }
    }
}

/// How to reach PostgreSQL. `Debug` shows only the target and pool size.
#[derive(Clone)]
pub struct PgConfig {
    connect: tokio_postgres::Config,
    /// `PGPASSWORD_FILE`: read for every new connection, so a rotated
    /// password is used without a restart.
    password_file: Option<SettingFile>,
    /// Maximum open connections (`PONG_DB_POOL_SIZE`).
    pub pool_size: NonZeroUsize,
    target: String,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("target", &self.target)
            .field(
                "password_file",
                &self.password_file.as_ref().map(|file| &file.path),
            )
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl PgConfig {
    /// Reads `DATABASE_URL` and the `PG*` variables. As with libpq, a `PG*`
    /// variable fills in only what `DATABASE_URL` leaves out; without either,
    /// host `127.0.0.1`, port `5432`, user `postgres`, database = user.
    pub fn from_env(env: &mut Env<'_>) -> Self {
        let mut connect = match env.raw(DATABASE_URL) {
            None => tokio_postgres::Config::new(),
            Some(url) => match url.trim().parse::<tokio_postgres::Config>() {
                Ok(parsed) => parsed,
                Err(_) => {
                    // The value may hold a password: never echo it.
                    env.problem(
                        DATABASE_URL,
                        None,
                        "a PostgreSQL URL such as postgres://user:password@host:5432/db",
                    );
                    tokio_postgres::Config::new()
                }
            },
        };
        if connect.get_hosts().is_empty() {
            connect.host(env.string(PGHOST, "127.0.0.1"));
        }
        if connect.get_ports().is_empty() {
            let default = NonZeroU16::new(5432).unwrap_or(NonZeroU16::MIN);
            let port = env.parse(PGPORT, default, "a TCP port number 1-65535");
            connect.port(port.get());
        }
        if connect.get_user().is_none() {
            connect.user(env.string(PGUSER, "postgres"));
        }
        // Like PGPASSWORD, the file fills in only a password DATABASE_URL leaves out.
        let mut password_file = None;
        if connect.get_password().is_none() {
            password_file = env.file_variable(PGPASSWORD, PGPASSWORD_FILE);
            let password = env.secret(PGPASSWORD, "");
            if password_file.is_none() && !password.expose().is_empty() {
                connect.password(password.expose());
            }
        }
        if connect.get_dbname().is_none() {
            let user = connect.get_user().unwrap_or("postgres").to_owned();
            connect.dbname(env.string(PGDATABASE, &user));
        }
        if let Some(mode) = env.raw(PGSSLMODE) {
            match mode.trim() {
                "disable" => {
                    connect.ssl_mode(SslMode::Disable);
                }
                "prefer" | "allow" => {
                    connect.ssl_mode(SslMode::Prefer);
                }
                _ => env.problem(
                    PGSSLMODE,
                    Some(mode),
                    "disable or prefer (pong does not negotiate TLS with PostgreSQL)",
                ),
            }
        }
        if connect.get_ssl_mode() == SslMode::Require {
            env.problem(
                DATABASE_URL,
                None,
                "no sslmode=require (pong does not negotiate TLS with PostgreSQL)",
            );
        }
        connect.connect_timeout(CONNECT_TIMEOUT);
        connect.application_name("pingpong-pong");
        let pool_size = env.parse(
            PONG_DB_POOL_SIZE,
            DEFAULT_POOL_SIZE,
            "a positive integer (PostgreSQL connections)",
        );
        let target = describe(&connect);
        Self {
            connect,
            password_file,
            pool_size,
            target,
        }
    }

    /// Settings from an already built connection config (tests, tools).
    pub fn new(mut connect: tokio_postgres::Config, pool_size: NonZeroUsize) -> Self {
        connect.connect_timeout(CONNECT_TIMEOUT);
        let target = describe(&connect);
        Self {
            connect,
            password_file: None,
            pool_size,
            target,
        }
    }

    /// Reads the password from `file` for every new connection instead.
    pub fn with_password_file(mut self, file: SettingFile) -> Self {
        self.password_file = Some(file);
        self
    }

    /// The password file (`PGPASSWORD_FILE`), when the password is read from one.
    pub fn password_file(&self) -> Option<&SettingFile> {
        self.password_file.as_ref()
    }

    /// `host:port/database`, for logs and errors (never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The connection settings (they hold the password: do not log them);
    /// without the password of [`Self::password_file`], which the store
    /// reads for each new connection.
    pub fn connect_config(&self) -> &tokio_postgres::Config {
        &self.connect
    }
}

fn describe(connect: &tokio_postgres::Config) -> String {
    let host = match connect.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "?".to_owned(),
    };
    let port = connect.get_ports().first().copied().unwrap_or(5432);
    let db = connect.get_dbname().unwrap_or("?");
    format!("{host}:{port}/{db}")
}

/// The optional Redis cache of `GET /pong`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// `REDIS_URL` (may carry a password), or the file named by `REDIS_URL_FILE`.
    pub url: Setting<Secret>,
    /// `host:port` of Redis, or `REDIS_URL_FILE=<path>`, for logs.
    pub target: String,
    /// Lifetime of an entry (`PONG_CACHE_TTL`, seconds).
    pub ttl: NonZeroU64,
    /// Prefix of every key (`PONG_CACHE_PREFIX`).
    pub prefix: String,
}

impl CacheConfig {
    /// Reads `REDIS_URL` (or `REDIS_URL_FILE`) and `PONG_CACHE_*`; `None`
    /// when neither is set. A URL from a file is checked when it is read.
    pub fn from_env(env: &mut Env<'_>) -> Option<Self> {
        let ttl = env.parse(
            PONG_CACHE_TTL,
            DEFAULT_CACHE_TTL,
            "a positive integer (seconds a cached GET /pong response lives)",
        );
        let prefix = env.string(PONG_CACHE_PREFIX, DEFAULT_CACHE_PREFIX);
        let (url, target) = match env.file_variable(REDIS_URL, REDIS_URL_FILE) {
            Some(file) => {
                let target = format!("{}={}", file.variable, file.path.display());
                (Setting::File(file), target)
            }
            None => {
                let url = env.raw(REDIS_URL)?;
                let Some(target) = redis_target(&url) else {
                    env.problem(
                        REDIS_URL,
                        None,
                        "a Redis URL such as redis://127.0.0.1:6379/0",
                    );
                    return None;
                };
                (Setting::Value(Secret::new(url.trim())), target)
            }
        };
        Some(Self {
            url,
            target,
            ttl,
            prefix,
        })
    }

    /// A one-line description without secrets.
    pub fn summary(&self) -> String {
        format!(
            "redis {} ttl={}s prefix={}",
            self.target, self.ttl, self.prefix
        )
    }
}

/// `host:port` of a Redis URL, `None` when it is not one (never echoes the URL).
pub fn redis_target(url: &str) -> Option<String> {
    redis::Client::open(url.trim())
        .ok()
        .map(|client| client.get_connection_info().addr().to_string())
}
