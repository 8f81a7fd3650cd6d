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
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use pingpong_common::amqp::{
    AmqpError, ChannelRole, ConnectionManager, LinkGauges, Session, open_session,
};
use pingpong_common::testing::{broker, cleanup, eventually, ready_count, wait_connected};
use pingpong_common::topology::{DELIVERY_LIMIT, TopologyError};
use pingpong_common::{AmqpConfig, BrokerAddress, BrokerAddresses, QueueName, QueueType};
use prometheus::Registry;

async fn publish(session: &Session, queue: &str, body: &[u8]) {
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

/// A test's own queue beside the classic one [`broker`] declared, and an admin session.
struct FreshQueue {
    test: &'static str,
    classic: AmqpConfig,
    config: AmqpConfig,
    admin: Session,
}

impl FreshQueue {
    /// The queue `<broker's queue>-<suffix>`, of the configured type; `None` when the broker
    /// is unreachable outside CI (see [`broker`]).
    async fn new(test: &'static str, suffix: &str) -> Option<Self> {
        let (classic, admin) = broker(test).await?;
        let mut config = classic.clone();
        config.queue = QueueName::new(&format!("{}-{suffix}", classic.queue)).unwrap();
        Some(Self {
            test,
            classic,
            config,
            admin,
        })
    }

    /// The queue `<broker's queue>-quorum`, a quorum queue.
    async fn quorum(test: &'static str) -> Option<Self> {
        let mut fresh = Self::new(test, "quorum").await?;
        fresh.config.queue_type = QueueType::Quorum;
        Some(fresh)
    }

    fn queue(&self) -> &str {
        self.config.queue.as_str()
    }

    /// A publisher session on the first address, which declares the queue's topology.
    async fn open(&self) -> Result<Session, AmqpError> {
        open_session(
            &self.config,
            self.config.addresses.get(0),
            ChannelRole::Publisher,
            self.test,
        )
        .await
    }

    /// The next message of the queue, to be settled by the caller.
    async fn get(&self, session: &Session) -> Option<BasicGetMessage> {
        session
            .channel
            .basic_get(self.queue().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
    }

    /// Waits until one message is in `<queue>.dead`.
    async fn wait_dead_lettered(&self, what: &str) {
        let (admin, dead) = (&self.admin, &self.config.queue.dead_letter());
        eventually(what, Duration::from_secs(10), || async move {
            ready_count(admin, dead).await == 1
        })
        .await;
    }

    /// Closes `session` and deletes both queues and their dead-letter queues.
    async fn finish(self, session: Session) {
        let _ = session.connection.close(200, "done".into()).await;
        for queue in [
            self.classic.queue.to_string(),
            self.classic.queue.dead_letter(),
        ] {
            self.admin
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap();
        }
        cleanup(self.admin, &self.config).await;
    }
}

#[tokio::test]
async fn a_rejected_message_of_a_quorum_queue_is_dead_lettered() {
    // broker() declared the classic topology of its queue: use a fresh one.
    let Some(mut fresh) = FreshQueue::quorum("topology-quorum").await else {
        return;
    };
    let session = fresh.open().await.expect("a quorum topology is declared");
    publish(&session, fresh.queue(), b"poison").await;
    let got = fresh
        .get(&session)
        .await
        .expect("the message is in the quorum queue");
    got.delivery
        .acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    fresh
        .wait_dead_lettered("the rejected message in <queue>.dead")
        .await;
    assert_eq!(ready_count(&fresh.admin, fresh.queue()).await, 0);

    // The same queue asked for as classic is a clear, permanent mismatch.
    let dead = fresh.config.queue.dead_letter();
    fresh.config.queue_type = QueueType::Classic;
    let error = match fresh.open().await {
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
    fresh.finish(session).await;
}

#[tokio::test]
async fn a_classic_queue_declared_without_a_queue_version_is_still_accepted() {
    let Some(fresh) = FreshQueue::new("topology-v1", "v1").await else {
        return;
    };
    // What the services declared before queue types existed: no x-queue-version.
    let mut old = FieldTable::default();
    old.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    old.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(fresh.config.queue.dead_letter().as_str().into()),
    );
    for (queue, arguments) in [
        (fresh.config.queue.dead_letter(), FieldTable::default()),
        (fresh.config.queue.to_string(), old),
    ] {
        fresh
            .admin
            .channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments,
            )
            .await
            .unwrap();
    }
    let session = fresh
        .open()
        .await
        .expect("an existing version-1 classic queue is declared again without x-queue-version");
    publish(&session, fresh.queue(), b"still routed").await;
    assert_eq!(ready_count(&fresh.admin, fresh.queue()).await, 1);
    fresh.finish(session).await;
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
    let Some(fresh) = FreshQueue::quorum("topology-limit").await else {
        return;
    };
    let session = fresh.open().await.unwrap();
    publish(&session, fresh.queue(), b"crashes every consumer").await;
    // Each return to the queue counts; after DELIVERY_LIMIT of them the
    // next return dead-letters the message instead of requeueing it.
    let limit = usize::try_from(DELIVERY_LIMIT).unwrap();
    let mut deliveries = 0;
    for _ in 0..=limit + 1 {
        let Some(got) = fresh.get(&session).await else {
            break;
        };
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
    fresh
        .wait_dead_lettered("the message in <queue>.dead")
        .await;
    fresh.finish(session).await;
}
