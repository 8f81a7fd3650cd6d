//! The shared topology and the connection manager against the real broker
//! (`RABBITMQ_*`, each test with its own queue): quorum queues with
//! at-least-once dead-lettering, a clear error for a queue that exists with
//! other arguments, and failover past an address that refuses connections.
//! Without a broker they are skipped with a notice, or FAIL when `CI=true`.
#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU16;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use pingpong_common::amqp::{AmqpError, ChannelRole, ConnectionManager, LinkGauges, open_session};
use pingpong_common::testing::{broker, cleanup, eventually, ready_count, wait_connected};
use pingpong_common::topology::{DELIVERY_LIMIT, TopologyError};
use pingpong_common::{BrokerAddress, BrokerAddresses, QueueName, QueueType};
use prometheus::Registry;

async fn publish(session: &pingpong_common::amqp::Session, queue: &str, body: &[u8]) {
    let confirm = session
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

#[tokio::test]
async fn a_rejected_message_of_a_quorum_queue_is_dead_lettered() {
    let Some((classic, admin)) = broker("topology-quorum").await else {
        return;
    };
    // broker() declared the classic topology of its queue: use a fresh one.
    let mut config = classic.clone();
    config.queue = QueueName::new(&format!("{}-quorum", classic.queue)).unwrap();
    config.queue_type = QueueType::Quorum;
    let session = open_session(
        &config,
        config.addresses.get(0),
        ChannelRole::Publisher,
        "topology-test",
    )
    .await
    .expect("a quorum topology is declared");
    publish(&session, config.queue.as_str(), b"poison").await;
    let got = session
        .channel
        .basic_get(
            config.queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("the message is in the quorum queue");
    got.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let dead = config.queue.dead_letter();
    eventually(
        "the rejected message in <queue>.dead",
        Duration::from_secs(10),
        || {
            let admin = &admin;
            let dead = dead.clone();
            async move { ready_count(admin, &dead).await == 1 }
        },
    )
    .await;
    assert_eq!(ready_count(&admin, config.queue.as_str()).await, 0);

    // The same queue asked for as classic is a clear, permanent mismatch.
    config.queue_type = QueueType::Classic;
    let error = match open_session(
        &config,
        config.addresses.get(0),
        ChannelRole::Publisher,
        "topology-test",
    )
    .await
    {
        Err(error) => error,
        Ok(_) => panic!("a quorum queue redeclared as classic must fail"),
    };
    assert!(error.is_permanent(), "{error}");
    assert_eq!(error.kind(), "QueueMismatch");
    let AmqpError::Topology(TopologyError::Mismatch {
        queue, broker_says, ..
    }) = &error
    else {
        panic!("not a mismatch: {error:?}");
    };
    // `.dead` is declared first: it is quorum too.
    assert_eq!(queue, &dead);
    assert!(broker_says.contains("x-queue-type"), "{broker_says}");
    let text = error.to_string();
    assert!(
        text.contains(&dead) && text.contains("classic queue") && text.contains("drain"),
        "{text}"
    );
    let _ = session.connection.close(200, "done".into()).await;
    delete(&admin, &classic).await;
    cleanup(admin, &config).await;
}

async fn delete(admin: &pingpong_common::amqp::Session, config: &pingpong_common::AmqpConfig) {
    for queue in [config.queue.to_string(), config.queue.dead_letter()] {
        admin
            .channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_classic_queue_declared_without_a_queue_version_is_still_accepted() {
    let Some((classic, admin)) = broker("topology-v1").await else {
        return;
    };
    let mut config = classic.clone();
    config.queue = QueueName::new(&format!("{}-v1", classic.queue)).unwrap();
    // What the services declared before queue types existed: no x-queue-version.
    let mut old = FieldTable::default();
    old.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    old.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(config.queue.dead_letter().as_str().into()),
    );
    for (queue, arguments) in [
        (config.queue.dead_letter(), FieldTable::default()),
        (config.queue.to_string(), old),
    ] {
        admin
            .channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments,
            )
            .await
            .unwrap();
    }
    let session = open_session(
        &config,
        config.addresses.get(0),
        ChannelRole::Publisher,
        "topology-v1",
    )
    .await
    .expect("an existing version-1 classic queue is declared again without x-queue-version");
    publish(&session, config.queue.as_str(), b"still routed").await;
    assert_eq!(ready_count(&admin, config.queue.as_str()).await, 1);
    let _ = session.connection.close(200, "done".into()).await;
    delete(&admin, &classic).await;
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn the_manager_skips_a_refusing_address_and_reports_the_node_in_use() {
    let Some((mut config, admin)) = broker("topology-failover").await else {
        return;
    };
    // Port 1 on localhost refuses connections.
    let refusing = BrokerAddress::new("127.0.0.1", NonZeroU16::new(1).unwrap()).unwrap();
    let real = config.addresses.get(0).clone();
    config.addresses = format!("{refusing},{real}")
        .parse::<BrokerAddresses>()
        .unwrap();
    let registry = Registry::new();
    let gauges = LinkGauges::register(&registry, "test").unwrap();
    let manager = ConnectionManager::spawn(
        config.clone(),
        ChannelRole::Publisher,
        "topology-failover".to_owned(),
        gauges.clone(),
    );
    wait_connected(&manager.link(), Duration::from_secs(15)).await;
    assert_eq!(gauges.connected.get(), 1);
    assert_eq!(gauges.address.get(), 1, "position of {real} in the list");
    assert_eq!(manager.link().node(), Some(real));
    manager.shutdown().await;
    assert_eq!((gauges.connected.get(), gauges.address.get()), (0, -1));
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn a_quorum_queue_dead_letters_a_message_past_the_delivery_limit() {
    let Some((classic, admin)) = broker("topology-limit").await else {
        return;
    };
    let mut config = classic.clone();
    config.queue = QueueName::new(&format!("{}-quorum", classic.queue)).unwrap();
    config.queue_type = QueueType::Quorum;
    let session = open_session(
        &config,
        config.addresses.get(0),
        ChannelRole::Publisher,
        "topology-limit",
    )
    .await
    .unwrap();
    publish(&session, config.queue.as_str(), b"crashes every consumer").await;
    // Each return to the queue counts; after DELIVERY_LIMIT of them the
    // next return dead-letters the message instead of requeueing it.
    let limit = usize::try_from(DELIVERY_LIMIT).unwrap();
    let mut deliveries = 0;
    for _ in 0..=limit + 1 {
        let got = session
            .channel
            .basic_get(
                config.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap();
        let Some(got) = got else { break };
        deliveries += 1;
        got.delivery
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        deliveries,
        limit + 1,
        "delivered once plus {limit} redeliveries"
    );
    let dead = config.queue.dead_letter();
    eventually(
        "the message in <queue>.dead",
        Duration::from_secs(10),
        || {
            let admin = &admin;
            let dead = dead.clone();
            async move { ready_count(admin, &dead).await == 1 }
        },
    )
    .await;
    let _ = session.connection.close(200, "done".into()).await;
    delete(&admin, &classic).await;
    cleanup(admin, &config).await;
}
