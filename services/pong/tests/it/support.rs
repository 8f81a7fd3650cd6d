//! Shared helpers of pong's PostgreSQL and Redis integration tests.
//!
//! [`database`] gives each test its own fresh database
//! (`pong_test_<uuid>`, dropped by [`TestDb::drop_db`]) on the server named by
//! `PONG_TEST_DATABASE_URL` (default `host=127.0.0.1 port=5432 user=postgres
//! dbname=postgres`); [`redis`] checks the Redis named by
//! `PONG_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) and gives a
//! unique key prefix. When a server is missing the test FAILS if `CI=true`
//! and is skipped with a notice otherwise (same rule as the broker guard).
//! [`Proxy`] (from `pingpong_common::testing`) is a TCP proxy the tests
//! switch off to simulate a database outage without touching the shared
//! server.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

pub use pingpong_common::testing::Proxy;
use pingpong_common::testing::missing;
use pingpong_pong::config::PgConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

/// A private database for one test.
pub struct TestDb {
    admin: tokio_postgres::Client,
    /// The database name.
    pub name: String,
    /// Settings pointing at it.
    pub config: tokio_postgres::Config,
}

impl TestDb {
    /// Pool settings for a store on this database.
    pub fn pg_config(&self) -> PgConfig {
        PgConfig::new(self.config.clone(), NonZeroUsize::new(4).unwrap())
    }

    /// The same database reached through `proxy`.
    pub fn via(&self, proxy: &Proxy) -> PgConfig {
        // `host`/`port` append to a config's lists: start from scratch.
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(proxy.addr.port())
            .user(self.config.get_user().unwrap_or("postgres"))
            .dbname(&self.name);
        if let Some(password) = self.config.get_password() {
            config.password(password);
        }
        config.connect_timeout(Duration::from_secs(2));
        PgConfig::new(config, NonZeroUsize::new(4).unwrap())
    }

    /// A plain client on this database (for assertions).
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.config).await.unwrap()
    }

    /// Drops the database.
    pub async fn drop_db(self) {
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, String> {
    let attempt = tokio::time::timeout(Duration::from_secs(10), config.connect(NoTls)).await;
    let (client, connection) = match attempt {
        Ok(Ok(pair)) => pair,
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err("timed out".to_owned()),
    };
    tokio::spawn(connection);
    Ok(client)
}

fn admin_config() -> tokio_postgres::Config {
    let raw = std::env::var("PONG_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    raw.parse()
        .expect("PONG_TEST_DATABASE_URL is not a PostgreSQL URL")
}

/// A fresh database for `test`, or `None` (after a notice) when PostgreSQL
/// is unreachable outside CI.
///
/// # Panics
/// When PostgreSQL is unreachable and `CI=true`.
pub async fn database(test: &str) -> Option<TestDb> {
    let admin_config = admin_config();
    let admin = match connect(&admin_config).await {
        Ok(client) => client,
        Err(error) => {
            missing(
                "PostgreSQL",
                test,
                &format!("({error})"),
                "Start it or set PONG_TEST_DATABASE_URL.",
            );
            return None;
        }
    };
    let name = format!("pong_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut config = admin_config;
    config.dbname(&name);
    Some(TestDb {
        admin,
        name,
        config,
    })
}

/// The Redis URL for tests and a unique key prefix, or `None` (after a
/// notice) when Redis is unreachable outside CI.
///
/// # Panics
/// When Redis is unreachable and `CI=true`.
pub async fn redis(test: &str) -> Option<(String, String)> {
    let url = std::env::var("PONG_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    match redis_ping(&url).await {
        Ok(()) => Some((
            url,
            format!("pingpong:test:{}:", uuid::Uuid::new_v4().simple()),
        )),
        Err(error) => {
            missing(
                "Redis",
                test,
                &format!("({error})"),
                "Start it or set PONG_TEST_REDIS_URL.",
            );
            None
        }
    }
}

/// `PING` against `url`.
pub async fn redis_ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let attempt = tokio::time::timeout(Duration::from_secs(5), async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    })
    .await;
    match attempt {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// Deletes every key starting with `prefix`.
pub async fn redis_cleanup(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut connection)
            .await
            .unwrap();
    }
}

/// A port nothing listens on (bound and released).
pub async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A running consumer (connection manager + [`QueueConsumer`]) over a sink.
pub struct Consumer {
    /// Its connection manager.
    pub manager: pingpong_common::amqp::ConnectionManager,
    /// Stops the consumer tasks.
    pub stop: CancellationToken,
    /// The consumer tasks, one per partition of `config.queue`.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Its metrics.
    pub metrics: pingpong_pong::PongMetrics,
}

impl Consumer {
    /// Starts consuming `config.queue` into `sink`, with `metrics` (no batch linger).
    pub fn start(
        config: &pingpong_common::AmqpConfig,
        sink: Arc<dyn pingpong_pong::MessageSink>,
        metrics: pingpong_pong::PongMetrics,
    ) -> Self {
        Self::start_lingering(config, sink, metrics, Duration::ZERO)
    }

    /// [`Self::start`] with the consumer waiting up to `linger` to fill a batch.
    pub fn start_lingering(
        config: &pingpong_common::AmqpConfig,
        sink: Arc<dyn pingpong_pong::MessageSink>,
        metrics: pingpong_pong::PongMetrics,
        linger: Duration,
    ) -> Self {
        use pingpong_common::amqp::{ChannelRole, ConnectionManager};
        let manager = ConnectionManager::spawn(
            config.clone(),
            ChannelRole::Consumer {
                prefetch: pingpong_pong::consumer::PREFETCH,
            },
            "pong-test".to_owned(),
            metrics.link_gauges(),
        );
        let stop = CancellationToken::new();
        // As pong's `run` wires them: one consumer per partition (one with one partition).
        let (consumers, _) = pingpong_pong::QueueConsumer::partitioned(
            &manager.link(),
            &config.queue,
            config.partitions,
            &sink,
            &metrics,
        );
        let tasks = consumers
            .into_iter()
            .map(|consumer| tokio::spawn(consumer.with_linger(linger).run(stop.clone())))
            .collect();
        Self {
            manager,
            stop,
            tasks,
            metrics,
        }
    }

    /// Waits until the consumer is registered.
    pub async fn wait_consuming(&self) {
        pingpong_common::testing::wait_connected(&self.manager.link(), WAIT).await;
        let running = self.metrics.consumer_running.clone();
        pingpong_common::testing::eventually("consumer running", WAIT, || {
            let running = running.clone();
            async move { running.get() == 1 }
        })
        .await;
    }

    /// Stops consuming and closes the connection.
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.join().await;
        self.manager.shutdown().await;
    }

    /// Waits for every consumer task (after `stop` was cancelled).
    pub async fn join(&mut self) {
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }
}

/// Fresh pong metrics on their own registry.
pub fn metrics() -> pingpong_pong::PongMetrics {
    pingpong_pong::PongMetrics::register(&prometheus::Registry::new()).unwrap()
}

/// Patience for eventual conditions.
pub const WAIT: Duration = Duration::from_secs(20);

/// Publishes `body` to `queue` on the default exchange and awaits the confirm.
pub async fn publish(admin: &pingpong_common::amqp::Session, queue: &str, body: &[u8]) {
    use lapin::BasicProperties;
    use lapin::options::BasicPublishOptions;
    let confirm = admin
        .channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack() && confirm.take_message().is_none());
}

/// `GET uri` on `app(state)`: the status and the body as JSON (a JSON string
/// when the body is not JSON, e.g. `/metrics`).
pub async fn get(
    state: &pingpong_pong::AppState,
    uri: &str,
) -> (axum::http::StatusCode, serde_json::Value) {
    let (status, _, body) = get_with_headers(state, uri).await;
    (status, body)
}

/// [`get`] with the response headers.
pub async fn get_with_headers(
    state: &pingpong_pong::AppState,
    uri: &str,
) -> (
    axum::http::StatusCode,
    axum::http::HeaderMap,
    serde_json::Value,
) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = axum::http::Request::get(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = pingpong_pong::app(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    (status, headers, body)
}

/// A minimal HTTP/1.1 GET on a real socket: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: pong\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The `msg` of every message of a `GET /pong` body.
pub fn texts(body: &serde_json::Value) -> Vec<&str> {
    body.as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect()
}
