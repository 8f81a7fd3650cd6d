//! Integration tests of the real publisher against RabbitMQ (each test has
//! its own queue, deleted at the end). Without a broker they are skipped with
//! a notice, or FAIL when `CI=true` (see `pingpong_common::testing::broker`).

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{JSON, post, send};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use lapin::options::BasicGetOptions;
use pingpong_common::Message;
use pingpong_common::amqp::{ChannelRole, ConnectionManager};
use pingpong_common::config::QueueName;
use pingpong_common::testing::{broker, cleanup, ready_count, wait_connected};
use pingpong_ping::{AmqpPublisher, AppState, PingMetrics, Publish, PublishError};
use prometheus::Registry;

const CONNECT: Duration = Duration::from_secs(15);

struct Running {
    manager: ConnectionManager,
    publisher: AmqpPublisher,
    registry: Registry,
    metrics: PingMetrics,
}

fn start(config: &pingpong_common::AmqpConfig) -> Running {
    let registry = Registry::new();
    let metrics = PingMetrics::register(&registry).unwrap();
    let manager = ConnectionManager::spawn(
        config.clone(),
        ChannelRole::Publisher,
        "ping-test".to_owned(),
        metrics.link_gauges(),
    );
    let publisher = AmqpPublisher::new(
        manager.link(),
        &config.queue,
        metrics.confirm_duration.clone(),
    );
    Running {
        manager,
        publisher,
        registry,
        metrics,
    }
}

#[tokio::test]
async fn a_confirmed_message_is_persistent_json_in_the_queue() {
    let Some((config, admin)) = broker("ping-confirmed").await else {
        return;
    };
    let running = start(&config);
    wait_connected(&running.manager.link(), CONNECT).await;
    assert_eq!(running.metrics.broker_connected.get(), 1);

    let message = Message::new("durable hello");
    running
        .publisher
        .publish(&message)
        .await
        .expect("publish must be confirmed");

    let got = admin
        .channel
        .basic_get(
            config.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the confirmed message is in the queue");
    let delivery = got.delivery;
    assert_eq!(Message::from_slice(&delivery.data).unwrap(), message);
    let props = &delivery.properties;
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*props.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        props.message_id().as_ref().map(|s| s.to_string()),
        Some(message.id.to_string())
    );
    assert_eq!(delivery.routing_key.as_str(), config.queue.as_str());
    let ack = running.metrics.confirm_duration.with_label_values(&["ack"]);
    assert_eq!(ack.get_sample_count(), 1);

    running.manager.shutdown().await;
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn an_unroutable_publish_is_an_error_not_a_success() {
    let Some((config, admin)) = broker("ping-unroutable").await else {
        return;
    };
    let running = start(&config);
    wait_connected(&running.manager.link(), CONNECT).await;

    let missing = QueueName::new(&format!("{}-does-not-exist", config.queue)).unwrap();
    let publisher = AmqpPublisher::new(
        running.manager.link(),
        &missing,
        running.metrics.confirm_duration.clone(),
    );
    let error = publisher
        .publish(&Message::new("nowhere"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, PublishError::Returned { code: 312, .. }),
        "expected a NO_ROUTE return, got {error:?}"
    );
    // The channel stays usable after a return.
    running
        .publisher
        .publish(&Message::new("still works"))
        .await
        .unwrap();
    assert_eq!(ready_count(&admin, config.queue.as_str()).await, 1);

    running.manager.shutdown().await;
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn concurrent_publishes_are_all_confirmed() {
    let Some((config, admin)) = broker("ping-concurrent").await else {
        return;
    };
    let running = start(&config);
    wait_connected(&running.manager.link(), CONNECT).await;
    let publisher = Arc::new(running.publisher);

    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let publisher = Arc::clone(&publisher);
            tokio::spawn(async move { publisher.publish(&Message::new(format!("m{i}"))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(ready_count(&admin, config.queue.as_str()).await, 300);

    running.manager.shutdown().await;
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn post_ping_through_the_app_lands_in_the_queue() {
    let Some((config, admin)) = broker("ping-app").await else {
        return;
    };
    let running = start(&config);
    wait_connected(&running.manager.link(), CONNECT).await;
    let state = AppState::with_metrics(
        Arc::new(running.publisher),
        running.registry,
        running.metrics,
    );

    let reply = send(state.clone(), post(JSON, r#"{"msg":"via http"}"#)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.body;

    let got = admin
        .channel
        .basic_get(
            config.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("message in queue");
    let message = Message::from_slice(&got.delivery.data).unwrap();
    assert_eq!(message.id.to_string(), body["id"]);
    assert_eq!(message.msg, "via http");

    let ready = send(state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(ready.status, StatusCode::OK);

    running.manager.shutdown().await;
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn without_a_broker_publishing_fails_fast_and_readiness_is_false() {
    // A listener that accepts and at once closes every connection: no
    // broker needed, and the test sees each connection attempt fail.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = pingpong_common::testing::test_config("ping-refused");
    config.addresses = pingpong_common::BrokerAddresses::single(
        pingpong_common::BrokerAddress::new(
            "127.0.0.1",
            NonZeroU16::new(listener.local_addr().unwrap().port()).unwrap(),
        )
        .unwrap(),
    );
    let running = start(&config);
    // The second attempt proves the first one failed and was given up.
    for attempt in 1..=2 {
        let (socket, _) = tokio::time::timeout(CONNECT, listener.accept())
            .await
            .unwrap_or_else(|_| panic!("no connection attempt {attempt} within {CONNECT:?}"))
            .unwrap();
        drop(socket);
    }
    assert!(!running.publisher.is_ready());
    assert_eq!(running.metrics.broker_connected.get(), 0);
    let error = running
        .publisher
        .publish(&Message::new("x"))
        .await
        .unwrap_err();
    assert!(matches!(error, PublishError::Unavailable), "{error:?}");

    let state = AppState::with_metrics(
        Arc::new(running.publisher),
        running.registry,
        running.metrics,
    );
    let reply = send(state, post(JSON, r#"{"msg":"x"}"#)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    running.manager.shutdown().await;
}

#[tokio::test]
async fn a_deleted_queue_is_declared_again_after_a_return() {
    let Some((config, admin)) = broker("ping-redeclare").await else {
        return;
    };
    let running = start(&config);
    wait_connected(&running.manager.link(), CONNECT).await;
    admin
        .channel
        .queue_delete(
            config.queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();

    let error = running
        .publisher
        .publish(&Message::new("lost"))
        .await
        .unwrap_err();
    assert!(matches!(error, PublishError::Returned { .. }), "{error:?}");
    let publisher = &running.publisher;
    pingpong_common::testing::eventually("publishing works again", CONNECT, || async move {
        publisher.publish(&Message::new("again")).await.is_ok()
    })
    .await;
    assert_eq!(ready_count(&admin, config.queue.as_str()).await, 1);

    running.manager.shutdown().await;
    cleanup(admin, &config).await;
}
