//! Integration tests of the pong consumer against RabbitMQ (each test has its
//! own queue, deleted at the end). Without a broker they are skipped with a
//! notice, or FAIL when `CI=true` (see `pingpong_common::testing::broker`).

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::{Consumer, WAIT, metrics, publish as publish_raw};
use futures::future::BoxFuture;
use lapin::options::BasicGetOptions;
use pingpong_common::amqp::Session;
use pingpong_common::testing::{broker, cleanup, eventually, ready_count};
use pingpong_common::{AmqpConfig, Message};
use pingpong_pong::store::StoreError;
use pingpong_pong::{InsertOutcome, MemoryStore, MessageSink};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

fn start(config: &AmqpConfig, sink: Arc<dyn MessageSink>) -> Consumer {
    Consumer::start(config, sink, metrics())
}

async fn publish(admin: &Session, queue: &str, message: &Message) {
    publish_raw(admin, queue, &message.to_json().unwrap()).await;
}

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(NonZeroUsize::new(1000).unwrap()))
}

/// Publishes `count` messages `<prefix>0`, `<prefix>1`... one at a time (each confirmed before
/// the next), waits until the store holds them all, and checks they are listed in queue order.
async fn publish_and_check_order(
    admin: &Session,
    queue: &str,
    store: &Arc<MemoryStore>,
    prefix: &str,
    count: usize,
) {
    let expected: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    for text in &expected {
        publish(admin, queue, &Message::new(text.clone())).await;
    }
    let s = store.clone();
    eventually("every message stored", WAIT, || {
        let s = s.clone();
        async move { s.len() == count }
    })
    .await;
    let listed: Vec<serde_json::Value> = serde_json::from_str(
        &store
            .page(pingpong_pong::ListQuery::oldest(1000))
            .unwrap()
            .json,
    )
    .unwrap();
    let order: Vec<&str> = listed.iter().map(|m| m["msg"].as_str().unwrap()).collect();
    assert_eq!(order, expected, "oldest first, in queue order");
}

#[tokio::test]
async fn messages_are_stored_then_acked() {
    let Some((config, admin)) = broker("pong-store").await else {
        return;
    };
    let store = store();
    let pong = start(&config, store.clone());
    pong.wait_consuming().await;

    publish_and_check_order(&admin, config.queue.as_str(), &store, "m", 50).await;
    assert_eq!(pong.metrics.stored.get(), 50);
    assert_eq!(pong.metrics.stored_messages.get(), 50);
    assert_eq!(pong.metrics.end_to_end_latency.get_sample_count(), 50);
    assert_eq!(pong.metrics.redelivered.get(), 0, "first deliveries only");

    // Graceful stop acks everything stored: nothing comes back to the queue.
    pong.stop().await;
    assert_eq!(ready_count(&admin, config.queue.as_str()).await, 0);
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn every_partition_is_consumed_on_its_own_channel() {
    let Some((mut config, admin)) = broker("pong-partitions").await else {
        return;
    };
    config.partitions = pingpong_common::Partitions::new(3).unwrap();
    let store = store();
    let pong = start(&config, store.clone());
    pong.wait_consuming().await;

    // Declared by pong's connection manager: every partition and its dead-letter queue.
    let queues = config.queues();
    let names: Vec<&str> = queues.iter().map(|q| q.as_str()).collect();
    assert_eq!(
        names[1..],
        [format!("{}.1", config.queue), format!("{}.2", config.queue)]
    );
    let mut sent = BTreeSet::new();
    for (index, queue) in queues.iter().enumerate() {
        for i in 0..20 {
            let message = Message::new(format!("p{index}-{i}"));
            sent.insert(message.id);
            publish(&admin, queue.as_str(), &message).await;
        }
    }
    let s = store.clone();
    eventually("every partition's messages stored", WAIT, || {
        let s = s.clone();
        async move { s.len() == 60 }
    })
    .await;
    let listed: Vec<serde_json::Value> = serde_json::from_str(
        &store
            .page(pingpong_pong::ListQuery::oldest(1000))
            .unwrap()
            .json,
    )
    .unwrap();
    let stored: BTreeSet<uuid::Uuid> = listed
        .iter()
        .map(|m| m["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(stored, sent);
    assert_eq!(pong.metrics.redelivered.get(), 0, "first deliveries only");
    assert_eq!(
        pong.metrics.consumer_running.get(),
        1,
        "every partition consumed"
    );

    // Graceful stop acks everything stored, on every partition.
    pong.stop().await;
    for queue in &queues {
        assert_eq!(ready_count(&admin, queue.as_str()).await, 0, "{queue}");
    }
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn a_lingering_consumer_stores_a_trickle_in_batches_in_order() {
    let Some((config, admin)) = broker("pong-linger").await else {
        return;
    };
    let store = store();
    let pong = Consumer::start_lingering(
        &config,
        store.clone(),
        metrics(),
        std::time::Duration::from_millis(500),
    );
    pong.wait_consuming().await;

    // One at a time, each confirmed before the next: without the linger every delivery
    // arrives alone and is its own batch (checked: 30 batches with a zero linger).
    publish_and_check_order(&admin, config.queue.as_str(), &store, "t", 30).await;
    let batches = pong.metrics.batch_size.get_sample_count();
    assert_eq!(pong.metrics.batch_size.get_sample_sum() as u64, 30);
    assert!(
        batches < 30,
        "{batches} batches for 30 deliveries: the linger took none together"
    );
    assert_eq!(pong.metrics.redelivered.get(), 0);

    pong.stop().await;
    assert_eq!(
        ready_count(&admin, config.queue.as_str()).await,
        0,
        "all acked"
    );
    cleanup(admin, &config).await;
}

/// A sink that blocks every store until the test opens the gate.
struct GatedSink {
    store: Arc<MemoryStore>,
    entered: AtomicUsize,
    gate: Semaphore,
}

impl MessageSink for GatedSink {
    fn store(
        &self,
        message: Message,
        received_at: OffsetDateTime,
    ) -> BoxFuture<'_, Result<InsertOutcome, StoreError>> {
        Box::pin(async move {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let _permit = self.gate.acquire().await.unwrap();
            self.store.insert(&message, received_at)
        })
    }
}

/// A consumer on `consumer` whose store blocks, and one message (`text`,
/// published on `admin` to `config.queue`) it has taken and is storing.
async fn stuck_in_store(
    consumer: &AmqpConfig,
    config: &AmqpConfig,
    admin: &Session,
    text: &str,
) -> (Arc<GatedSink>, Consumer, Message) {
    let sink = Arc::new(GatedSink {
        store: store(),
        entered: AtomicUsize::new(0),
        gate: Semaphore::new(0),
    });
    let pong = start(consumer, sink.clone());
    pong.wait_consuming().await;
    let message = Message::new(text);
    publish(admin, config.queue.as_str(), &message).await;
    let s = sink.clone();
    eventually("the consumer is inside store()", WAIT, || {
        let s = s.clone();
        async move { s.entered.load(Ordering::SeqCst) == 1 }
    })
    .await;
    (sink, pong, message)
}

#[tokio::test]
async fn nothing_is_acked_before_it_is_stored() {
    let Some((config, admin)) = broker("pong-ack-after-store").await else {
        return;
    };
    let (sink, pong, message) = stuck_in_store(&config, &config, &admin, "blocked").await;
    // Delivered but not acked: it is neither ready nor stored.
    assert_eq!(ready_count(&admin, config.queue.as_str()).await, 0);
    assert!(sink.store.is_empty());

    // The consumer's connection goes away while the store is still blocked:
    // an unacked message goes back to the queue.
    pong.manager.shutdown().await;
    let a = &admin;
    let queue = config.queue.as_str();
    eventually("the unacked message is ready again", WAIT, || async move {
        ready_count(a, queue).await == 1
    })
    .await;
    // It comes back marked as delivered before: it was held, not acked
    // (an acked message never returns), and it is the same message.
    let held = admin
        .channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("the unacked message is in the queue");
    assert!(held.delivery.redelivered, "it was delivered before");
    assert_eq!(Message::from_slice(&held.delivery.data).unwrap(), message);
    held.delivery
        .acker
        .reject(lapin::options::BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    sink.gate.add_permits(1000);
    pong.stop.cancel();
    for task in pong.tasks {
        task.await.unwrap();
    }

    // A healthy consumer then stores and acks it.
    let store = store();
    let pong = start(&config, store.clone());
    let s = store.clone();
    eventually("redelivered message stored", WAIT, || {
        let s = s.clone();
        async move { s.contains(&message.id) }
    })
    .await;
    assert_eq!(pong.metrics.redelivered.get(), 1, "counted as a redelivery");
    pong.stop().await;
    assert_eq!(ready_count(&admin, config.queue.as_str()).await, 0);
    cleanup(admin, &config).await;
}

/// The connection dies while the consumer's batch is stuck (here in the
/// store; in CI once, in a wait on lapin that never settled after the
/// connection failed). The consumer must leave the lost session at
/// once, register on the next one and take the message again: it must not sit
/// on the dead session while the link (and `/readyz`) follow the new one,
/// leaving every later message unconsumed.
#[tokio::test]
async fn a_lost_connection_ends_a_stuck_batch_and_consuming_resumes() {
    let Some((config, admin)) = broker("pong-lost-session").await else {
        return;
    };
    let upstream = config.addresses.as_slice()[0].to_string();
    let proxy = crate::support::Proxy::start(upstream).await;
    let mut via = config.clone();
    via.addresses =
        pingpong_common::BrokerAddresses::single(proxy.addr.to_string().parse().unwrap());
    let (sink, pong, message) = stuck_in_store(&via, &config, &admin, "stuck").await;

    proxy.down();
    let running = pong.metrics.consumer_running.clone();
    eventually(
        "the consumer to leave the lost session while its batch is stuck",
        WAIT,
        || {
            let running = running.clone();
            async move { running.get() == 0 }
        },
    )
    .await;

    // The next session: the consumer registers again and the unacked message
    // comes back to it.
    proxy.up();
    pong.wait_consuming().await;
    let s = sink.clone();
    eventually(
        "the message delivered again to the new consumer",
        WAIT,
        || {
            let s = s.clone();
            async move { s.entered.load(Ordering::SeqCst) == 2 }
        },
    )
    .await;
    sink.gate.add_permits(1000);
    let a = &admin;
    let queue = config.queue.as_str();
    eventually("the message stored and acked", WAIT, || {
        let s = sink.clone();
        async move { s.store.contains(&message.id) && ready_count(a, queue).await == 0 }
    })
    .await;
    pong.stop().await;
    assert_eq!(sink.store.len(), 1, "stored once");
    assert_eq!(
        ready_count(&admin, config.queue.as_str()).await,
        0,
        "acked, not requeued"
    );
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_and_consuming_continues() {
    let Some((config, admin)) = broker("pong-dead-letter").await else {
        return;
    };
    let store = store();
    let pong = start(&config, store.clone());
    pong.wait_consuming().await;

    let id = uuid::Uuid::new_v4();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"hello world".to_vec(), "Invalid"),
        ("empty body", Vec::new(), "Empty"),
        ("JSON array", b"[1,2,3]".to_vec(), "Invalid"),
        (
            "missing msg",
            format!(r#"{{"id":"{id}","created_at":"2024-01-01T00:00:00Z"}}"#).into_bytes(),
            "Invalid",
        ),
        (
            "missing id",
            br#"{"msg":"x","created_at":"2024-01-01T00:00:00Z"}"#.to_vec(),
            "Invalid",
        ),
        (
            "bad uuid",
            br#"{"id":"not-a-uuid","msg":"x","created_at":"2024-01-01T00:00:00Z"}"#.to_vec(),
            "Invalid",
        ),
        (
            "bad timestamp",
            format!(r#"{{"id":"{id}","msg":"x","created_at":"last tuesday"}}"#).into_bytes(),
            "Invalid",
        ),
        (
            "msg not a string",
            format!(r#"{{"id":"{id}","msg":42,"created_at":"2024-01-01T00:00:00Z"}}"#).into_bytes(),
            "Invalid",
        ),
        (
            "empty msg",
            format!(r#"{{"id":"{id}","msg":"","created_at":"2024-01-01T00:00:00Z"}}"#).into_bytes(),
            "EmptyMsg",
        ),
        ("invalid UTF-8", vec![0xff, 0xfe, 0x00, 0x01], "Invalid"),
        ("huge body", vec![b'{'; 300 * 1024], "TooLarge"),
    ];
    for (_, body, _) in &cases {
        publish_raw(&admin, config.queue.as_str(), body).await;
    }
    let valid = Message::new("after the garbage");
    publish(&admin, config.queue.as_str(), &valid).await;

    let s = store.clone();
    eventually(
        "the valid message after the bad ones is stored",
        WAIT,
        || {
            let s = s.clone();
            async move { s.contains(&valid.id) }
        },
    )
    .await;
    assert_eq!(store.len(), 1, "no malformed message may be stored");
    let dead = config.queue.dead_letter();
    let a = &admin;
    let d = dead.as_str();
    let total = cases.len() as u32;
    eventually(
        "every malformed message is in <queue>.dead",
        WAIT,
        || async move { ready_count(a, d).await == total },
    )
    .await;
    let mut dead_bodies = BTreeSet::new();
    while let Some(got) = admin
        .channel
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        dead_bodies.insert(got.delivery.data);
    }
    for (name, body, kind) in &cases {
        assert!(dead_bodies.contains(body), "{name} is not in {dead}");
        assert!(
            pong.metrics.dead_lettered.with_label_values(&[kind]).get() >= 1,
            "{name}: {kind}"
        );
    }
    let counted: u64 = ["Invalid", "Empty", "EmptyMsg", "TooLarge"]
        .iter()
        .map(|k| pong.metrics.dead_lettered.with_label_values(&[k]).get())
        .sum();
    assert_eq!(counted, cases.len() as u64);
    assert_eq!(
        ready_count(&admin, config.queue.as_str()).await,
        0,
        "nothing loops back"
    );

    pong.stop().await;
    cleanup(admin, &config).await;
}

#[tokio::test]
async fn a_duplicate_id_is_stored_once_and_acked() {
    let Some((config, admin)) = broker("pong-duplicate").await else {
        return;
    };
    let store = store();
    let pong = start(&config, store.clone());
    pong.wait_consuming().await;

    let message = Message::new("twice");
    publish(&admin, config.queue.as_str(), &message).await;
    publish(&admin, config.queue.as_str(), &message).await;
    let marker = Message::new("marker");
    publish(&admin, config.queue.as_str(), &marker).await;
    let s = store.clone();
    eventually("marker stored", WAIT, || {
        let s = s.clone();
        async move { s.contains(&marker.id) }
    })
    .await;
    assert_eq!(store.len(), 2);
    assert_eq!(pong.metrics.duplicates.get(), 1);
    assert_eq!(pong.metrics.consumed.get(), 3);
    pong.stop().await;
    assert_eq!(
        ready_count(&admin, config.queue.as_str()).await,
        0,
        "duplicates are acked too"
    );
    cleanup(admin, &config).await;
}
