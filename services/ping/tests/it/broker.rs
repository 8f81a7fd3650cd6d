//! Integration tests of the real publisher against RabbitMQ (each test has
//! its own queue, deleted at the end). Without a broker they are skipped with
//! a notice, or FAIL when `CI=true` (see `pingpong_common::testing::broker`).

use std::num::NonZeroU16;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{JSON, post, send};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use lapin::message::BasicGetMessage;
use lapin::options::BasicGetOptions;
use pingpong_common::amqp::{ChannelRole, ConnectionManager, Session};
use pingpong_common::config::QueueName;
use pingpong_common::testing::{broker, cleanup, ready_count, wait_connected};
use pingpong_common::{AmqpConfig, Message};
use pingpong_ping::{AmqpPublisher, AppState, PingMetrics, Publish, PublishError};
use prometheus::Registry;

const CONNECT: Duration = Duration::from_secs(15);

/// A publisher and its connection manager, as ping's `main` wires them.
struct Running {
    manager: ConnectionManager,
    publisher: Arc<AmqpPublisher>,
    registry: Registry,
    metrics: PingMetrics,
}

fn start(config: &AmqpConfig) -> Running {
    let registry = Registry::new();
    let metrics = PingMetrics::register(&registry).unwrap();
    let manager = ConnectionManager::spawn(
        config.clone(),
        ChannelRole::Publisher,
        "ping-test".to_owned(),
        metrics.link_gauges(),
    );
    let publisher = Arc::new(AmqpPublisher::new(
        manager.link(),
        &config.queue,
        metrics.confirm_duration.clone(),
    ));
    Running {
        manager,
        publisher,
        registry,
        metrics,
    }
}

impl Running {
    /// The app's state on this publisher and its metrics.
    fn state(&self) -> AppState {
        AppState::with_metrics(
            self.publisher.clone(),
            self.registry.clone(),
            self.metrics.clone(),
        )
    }
}

/// A publisher connected to the test broker, the test's own queue and an admin session.
struct Connected {
    running: Running,
    config: AmqpConfig,
    admin: Session,
}

impl Connected {
    /// Starts a publisher on a fresh queue and waits until it is connected; `None` when the
    /// broker is unreachable outside CI (see [`broker`]).
    async fn start(test: &str) -> Option<Self> {
        let (config, admin) = broker(test).await?;
        let running = start(&config);
        wait_connected(&running.manager.link(), CONNECT).await;
        Some(Self {
            running,
            config,
            admin,
        })
    }

    /// Takes the next message off the test's queue (acknowledged at once).
    async fn get(&self) -> Option<BasicGetMessage> {
        self.admin
            .channel
            .basic_get(
                self.config.queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
    }

    /// How many messages wait in the test's queue.
    async fn ready_count(&self) -> u32 {
        ready_count(&self.admin, self.config.queue.as_str()).await
    }

    /// Shuts the publisher down and deletes the test's queue.
    async fn stop(self) {
        self.running.manager.shutdown().await;
        cleanup(self.admin, &self.config).await;
    }
}

impl Deref for Connected {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.running
    }
}

#[tokio::test]
async fn a_confirmed_message_is_persistent_json_in_the_queue() {
    let Some(ping) = Connected::start("ping-confirmed").await else {
        return;
    };
    assert_eq!(ping.metrics.broker_connected.get(), 1);

    let message = Message::new("durable hello");
    ping.publisher
        .publish(&message)
        .await
        .expect("publish must be confirmed");

    let got = ping
        .get()
        .await
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
    assert_eq!(delivery.routing_key.as_str(), ping.config.queue.as_str());
    let ack = ping.metrics.confirm_duration.with_label_values(&["ack"]);
    assert_eq!(ack.get_sample_count(), 1);

    ping.stop().await;
}

#[tokio::test]
async fn partitions_spread_the_messages_by_id() {
    let Some((mut config, admin)) = broker("ping-partitions").await else {
        return;
    };
    config.partitions = pingpong_common::Partitions::new(4).unwrap();
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
    )
    .with_partitions(&config.queue, config.partitions);
    wait_connected(&manager.link(), CONNECT).await;

    let messages: Vec<Message> = (0..200).map(|i| Message::new(format!("m{i}"))).collect();
    for message in &messages {
        publisher.publish(message).await.expect("confirmed");
    }
    // Each message is in the partition its id selects, and only there.
    let mut found = 0;
    for (index, queue) in config.queues().iter().enumerate() {
        let mut in_partition = 0;
        while let Some(got) = admin
            .channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let message = Message::from_slice(&got.delivery.data).unwrap();
            assert_eq!(
                usize::from(config.partitions.of(&message.id)),
                index,
                "{} in {queue}",
                message.id
            );
            assert_eq!(got.delivery.routing_key.as_str(), queue.as_str());
            in_partition += 1;
        }
        // 50 expected in each; 200 random ids put fewer than 20 in one with odds below 1e-7.
        assert!(in_partition >= 20, "{queue} holds {in_partition} of 200");
        found += in_partition;
    }
    assert_eq!(found, messages.len());

    manager.shutdown().await;
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn an_unroutable_publish_is_an_error_not_a_success() {
    let Some(ping) = Connected::start("ping-unroutable").await else {
        return;
    };

    let missing = QueueName::new(&format!("{}-does-not-exist", ping.config.queue)).unwrap();
    let publisher = AmqpPublisher::new(
        ping.manager.link(),
        &missing,
        ping.metrics.confirm_duration.clone(),
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
    ping.publisher
        .publish(&Message::new("still works"))
        .await
        .unwrap();
    assert_eq!(ping.ready_count().await, 1);

    ping.stop().await;
}

#[tokio::test]
async fn concurrent_publishes_are_all_confirmed() {
    let Some(ping) = Connected::start("ping-concurrent").await else {
        return;
    };
    let publisher = Arc::clone(&ping.publisher);

    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let publisher = Arc::clone(&publisher);
            tokio::spawn(async move { publisher.publish(&Message::new(format!("m{i}"))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(ping.ready_count().await, 300);

    ping.stop().await;
}

#[tokio::test]
async fn post_ping_through_the_app_lands_in_the_queue() {
    let Some(ping) = Connected::start("ping-app").await else {
        return;
    };
    let state = ping.state();

    let reply = send(state.clone(), post(JSON, r#"{"msg":"via http"}"#)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.body;

    let got = ping.get().await.expect("message in queue");
    let message = Message::from_slice(&got.delivery.data).unwrap();
    assert_eq!(message.id.to_string(), body["id"]);
    assert_eq!(message.msg, "via http");

    let ready = send(state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(ready.status, StatusCode::OK);

    ping.stop().await;
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

    let reply = send(running.state(), post(JSON, r#"{"msg":"x"}"#)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    running.manager.shutdown().await;
}

#[tokio::test]
async fn a_deleted_queue_is_declared_again_after_a_return() {
    let Some(ping) = Connected::start("ping-redeclare").await else {
        return;
    };
    ping.admin
        .channel
        .queue_delete(
            ping.config.queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();

    let error = ping
        .publisher
        .publish(&Message::new("lost"))
        .await
        .unwrap_err();
    assert!(matches!(error, PublishError::Returned { .. }), "{error:?}");
    let publisher = &ping.publisher;
    pingpong_common::testing::eventually("publishing works again", CONNECT, || async move {
        publisher.publish(&Message::new("again")).await.is_ok()
    })
    .await;
    assert_eq!(ping.ready_count().await, 1);

    ping.stop().await;
}

/// Issue 20's ordering test: a queue bounded with `x-max-length` and
/// `reject-publish`, concurrent publishers on a multi-threaded runtime and a
/// drainer that keeps the queue oscillating around full, so the broker
/// switches between ack and nack many times while tags are being taken. If a
/// confirm resolved another publish's request, an id answered `Ok` would be
/// missing from what the queue held (or a nacked one would be there).
/// Without the publisher's wire-order lock this failed in 10 runs out of 10,
/// already in the first round (2 to 9 ids answered `Ok` per round were
/// refused, and as many refused ids were in the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_confirmed_are_exactly_the_ids_the_bounded_queue_took() {
    use std::collections::BTreeSet;

    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable, LongString};

    const MAX_LENGTH: i64 = 50;
    const PUBLISHERS: usize = 16;
    const PER_PUBLISHER: usize = 150;
    const ROUNDS: usize = 4;

    let Some(ping) = Connected::start("ping-order").await else {
        return;
    };
    let bounded = QueueName::new(&format!("{}-bounded", ping.config.queue)).unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(MAX_LENGTH));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    ping.admin
        .channel
        .queue_declare(
            bounded.as_str().into(),
            QueueDeclareOptions::default(),
            arguments,
        )
        .await
        .unwrap();
    let publisher = Arc::new(AmqpPublisher::new(
        ping.manager.link(),
        &bounded,
        ping.metrics.confirm_duration.clone(),
    ));
    let (mut confirmed_total, mut nacked_total) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let drainer = {
            let (draining, admin, queue) = (
                Arc::clone(&draining),
                ping.admin.channel.clone(),
                bounded.clone(),
            );
            tokio::spawn(async move {
                let mut taken = BTreeSet::new();
                while draining.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = admin
                        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                        .await
                        .unwrap();
                    match got {
                        Some(got) => {
                            taken.insert(Message::from_slice(&got.delivery.data).unwrap().id);
                        }
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                taken
            })
        };
        let tasks: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let publisher = Arc::clone(&publisher);
                tokio::spawn(async move {
                    let mut confirmed = BTreeSet::new();
                    let mut nacked = 0usize;
                    for i in 0..PER_PUBLISHER {
                        let message = Message::new(format!("r{round}-p{p}-{i}"));
                        match publisher.publish(&message).await {
                            Ok(()) => {
                                confirmed.insert(message.id);
                            }
                            Err(PublishError::Nacked) => nacked += 1,
                            Err(error) => panic!("unexpected publish error: {error:?}"),
                        }
                    }
                    (confirmed, nacked)
                })
            })
            .collect();
        let mut confirmed = BTreeSet::new();
        for task in tasks {
            let (ids, nacked) = task.await.unwrap();
            confirmed.extend(ids);
            nacked_total += nacked;
        }
        draining.store(false, std::sync::atomic::Ordering::Relaxed);
        let mut stored = drainer.await.unwrap();
        while let Some(got) = ping
            .admin
            .channel
            .basic_get(bounded.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            stored.insert(Message::from_slice(&got.delivery.data).unwrap().id);
        }
        let lost: Vec<_> = confirmed.difference(&stored).collect();
        let unconfirmed: Vec<_> = stored.difference(&confirmed).collect();
        assert!(
            lost.is_empty() && unconfirmed.is_empty(),
            "round {round}: {} ids answered Ok are not in the queue, {} ids in the queue were \
             answered with an error (first: {:?}, {:?})",
            lost.len(),
            unconfirmed.len(),
            lost.first(),
            unconfirmed.first()
        );
        confirmed_total += confirmed.len();
    }
    assert!(
        nacked_total > 0 && confirmed_total > 0,
        "the queue must both take and refuse messages ({confirmed_total} taken, {nacked_total} refused)"
    );
    ping.admin
        .channel
        .queue_delete(bounded.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ping.stop().await;
}
