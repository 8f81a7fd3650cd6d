//! Helpers for integration tests against a real RabbitMQ (feature `testing`).
//!
//! [`broker`] is the single guard every broker test goes through: it reads
//! the same `RABBITMQ_*` variables as the services (defaults 127.0.0.1:5672
//! guest/guest), gives every test a unique queue and checks that the broker answers. When it
//! does not, the test FAILS if `CI=true` and is skipped with a notice
//! otherwise. [`Proxy`] puts a switchable TCP proxy in front of a server.
//! Not for production code.

mod proxy;

use std::time::Duration;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

use crate::amqp::{ChannelRole, Session, open_session_any};
use crate::config::{AmqpConfig, Env, QueueName};

pub use proxy::Proxy;

/// Broker settings for tests, parsed exactly as the services parse them
/// (`RABBITMQ_*`, see [`AmqpConfig::from_env`]), with a fresh queue named
/// after `test`.
///
/// # Panics
/// When a `RABBITMQ_*` variable is invalid.
pub fn test_config(test: &str) -> AmqpConfig {
    let lookup = |name: &str| std::env::var(name).ok();
    let mut env = Env::new(&lookup);
    let mut config = AmqpConfig::from_env(&mut env);
    if let Err(error) = env.finish(()) {
        panic!("invalid broker settings for the tests: {error}");
    }
    let queue = format!("pingpong-test-{test}-{}", uuid::Uuid::new_v4().simple());
    config.queue = QueueName::new(&queue)
        .unwrap_or_else(|reason| panic!("test queue name {queue:?} is invalid: {reason}"));
    config
}

/// Whether missing infrastructure must fail the test (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A test's broker settings and an admin session on them, or `None` (after
/// printing a notice) when the broker is unreachable outside CI.
///
/// # Panics
/// When the broker is unreachable and `CI=true`.
pub async fn broker(test: &str) -> Option<(AmqpConfig, Session)> {
    let config = test_config(test);
    let result = tokio::time::timeout(
        Duration::from_secs(15),
        open_session_any(
            &config,
            ChannelRole::Publisher,
            &format!("test-admin-{test}"),
        ),
    )
    .await;
    let error = match result {
        Ok(Ok(session)) => return Some((config, session)),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    let endpoint = config.addresses.to_string();
    missing(
        "RabbitMQ",
        test,
        &format!("at {endpoint}: {error}"),
        "Start the broker or set RABBITMQ_ADDRESSES (or RABBITMQ_HOST/RABBITMQ_PORT)/RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS.",
    );
    None
}

/// The rule for a server a test needs but cannot reach: FAIL when
/// `CI=true`, else print a notice (the caller then skips the test).
///
/// # Panics
/// When `CI=true`.
pub fn missing(what: &str, test: &str, error: &str, fix: &str) {
    if in_ci() {
        panic!("{what} is required (CI=true) but unreachable {error}. {fix}");
    }
    eprintln!("NOTICE: skipping {test}: {what} unreachable {error}; set CI=true to fail instead");
}

/// Ready-message count of `queue` (passive declare).
pub async fn ready_count(session: &Session, queue: &str) -> u32 {
    match session
        .channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
    {
        Ok(info) => info.message_count(),
        Err(error) => panic!("passive declare of {queue} failed: {error}"),
    }
}

/// Deletes the test queue and its dead-letter queue (of every partition), then closes the
/// session.
pub async fn cleanup(session: Session, config: &AmqpConfig) {
    let queues = config
        .queues()
        .into_iter()
        .flat_map(|queue| [queue.to_string(), queue.dead_letter()]);
    for queue in queues {
        let _ = session
            .channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = session.connection.close(200, "test done".into()).await;
}

/// Waits until `link` has a live session, failing the test after `timeout`.
///
/// # Panics
/// When the manager does not connect in time.
pub async fn wait_connected(link: &crate::amqp::BrokerLink, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !link.is_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection manager did not connect within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `check` holds, failing the test with `what` after `timeout`.
///
/// # Panics
/// When `check` is still false after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts that an OpenAPI document lists exactly the routes of `expected` (path, method, every
/// status code it documents) and that each 4xx/5xx answer, except `/readyz`'s own shape, is the
/// shared `ErrorBody`.
///
/// # Panics
/// On the first difference.
pub fn assert_openapi_routes(doc: &serde_json::Value, expected: &[(&str, &str, &[&str])]) {
    let Some(paths) = doc["paths"].as_object() else {
        panic!("the document has no paths: {doc}");
    };
    let mut listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    listed.sort_unstable();
    let mut wanted: Vec<&str> = expected.iter().map(|(path, _, _)| *path).collect();
    wanted.sort_unstable();
    assert_eq!(listed, wanted, "documented paths");
    for (path, method, statuses) in expected {
        let responses = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        let mut codes: Vec<&str> = responses.keys().map(String::as_str).collect();
        codes.sort_unstable();
        assert_eq!(&codes, statuses, "{method} {path}");
        for (code, response) in responses {
            // Every error is `{"error": ...}`; /readyz and /healthz answer
            // their own shapes (405 excepted), and hyper answers 414 and 431
            // itself, with an empty body.
            let own_shape = matches!(*path, "/readyz" | "/healthz") && code != "405";
            let by_hyper = matches!(code.as_str(), "414" | "431");
            if !own_shape && !by_hyper && (code.starts_with('4') || code.starts_with('5')) {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{path} {code}"
                );
            }
        }
    }
}
