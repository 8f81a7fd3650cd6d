//! The queue consumer: manual acks, ack only after the message is stored.
//!
//! It follows the connection manager's session: whenever a live session
//! exists it registers a consumer (the channel has a prefetch), and on loss it
//! waits for the next session. Each delivery is handled in its own span:
//! invalid bodies are rejected without requeue (dead-lettered into
//! `<queue>.dead`), valid ones are stored and then acked; duplicates are acked
//! without storing. Acks of consecutive stored deliveries are coalesced into
//! one `multiple` ack, sent before the consumer waits for more (so nothing
//! stored stays unacked while idle) and at least every 128 deliveries. On stop it finishes the current delivery, cancels the
//! consumer and returns; unacked prefetched deliveries go back to the queue
//! when the channel closes.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use pingpong_common::Message;
use pingpong_common::amqp::{BrokerLink, Session};
use pingpong_common::config::QueueName;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::PongMetrics;
use crate::store::{InsertOutcome, MessageSink};

/// Deliveries the broker may push before acks (the channel's `basic_qos`).
pub const PREFETCH: u16 = 512;
/// Delay before registering again on a still-live session.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The consumer and what it needs.
pub struct QueueConsumer {
    link: BrokerLink,
    queue: QueueName,
    sink: Arc<dyn MessageSink>,
    metrics: PongMetrics,
}

/// Most stored deliveries acknowledged by one multiple-ack.
const MAX_ACK_BATCH: usize = 128;

/// Stored deliveries not yet acknowledged. Deliveries are handled in order,
/// so acking the newest with `multiple` settles all of them (rejected ones
/// are already settled).
#[derive(Default)]
struct PendingAcks {
    last: Option<Acker>,
    count: usize,
}

impl PendingAcks {
    fn push(&mut self, acker: Acker) {
        self.last = Some(acker);
        self.count += 1;
    }

    async fn flush(&mut self) {
        let Some(acker) = self.last.take() else {
            return;
        };
        let options = BasicAckOptions {
            multiple: self.count > 1,
        };
        self.count = 0;
        if let Err(error) = acker.ack(options).await {
            tracing::warn!(%error, "ack failed; the broker will redeliver the messages");
        }
    }
}

enum End {
    Stopped,
    Cancelled,
}

impl QueueConsumer {
    /// A consumer of `queue` over `link`, storing into `sink`.
    pub fn new(
        link: BrokerLink,
        queue: QueueName,
        sink: Arc<dyn MessageSink>,
        metrics: PongMetrics,
    ) -> Self {
        Self {
            link,
            queue,
            sink,
            metrics,
        }
    }

    /// Consumes until `stop` is cancelled, following reconnects.
    pub async fn run(self, stop: CancellationToken) {
        let mut sessions = self.link.subscribe();
        loop {
            let current = sessions.borrow_and_update().clone();
            if let Some(session) = current.filter(|s| s.is_alive()) {
                let result = self.consume(&session, &stop).await;
                self.metrics.consumer_running.set(0);
                match result {
                    Ok(End::Stopped) => break,
                    Ok(End::Cancelled) => {
                        tracing::warn!(queue = %self.queue, "consumer cancelled, registering again")
                    }
                    Err(error) => {
                        tracing::warn!(queue = %self.queue, %error, "consumer stopped, waiting for the broker")
                    }
                }
            }
            tokio::select! {
                changed = sessions.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(RETRY_DELAY) => {}
                () = stop.cancelled() => break,
            }
        }
        self.metrics.consumer_running.set(0);
        tracing::info!(queue = %self.queue, "consumer stopped");
    }

    async fn consume(
        &self,
        session: &Session,
        stop: &CancellationToken,
    ) -> Result<End, lapin::Error> {
        let tag = format!("pong-{}", uuid::Uuid::new_v4().simple());
        let mut consumer = session
            .channel
            .basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.metrics.consumer_running.set(1);
        tracing::info!(queue = %self.queue, consumer_tag = %tag, "consuming");
        let mut acks = PendingAcks::default();
        let end = loop {
            // Take what is already buffered without waiting; before waiting,
            // settle the stored-but-unacked deliveries with one multiple-ack.
            let next = match consumer.next().now_or_never() {
                Some(next) if acks.count < MAX_ACK_BATCH => next,
                buffered => {
                    acks.flush().await;
                    match buffered {
                        Some(next) => next,
                        None => tokio::select! {
                            biased;
                            () = stop.cancelled() => break Ok(End::Stopped),
                            next = consumer.next() => next,
                        },
                    }
                }
            };
            match next {
                Some(Ok(delivery)) => {
                    let span =
                        tracing::debug_span!("delivery", delivery_tag = delivery.delivery_tag);
                    if let Some(acker) = self.handle(&delivery).instrument(span).await {
                        acks.push(acker);
                    }
                }
                Some(Err(error)) => break Err(error),
                None => break Ok(End::Cancelled),
            }
            if stop.is_cancelled() {
                break Ok(End::Stopped);
            }
        };
        // Everything stored is acked before the consumer goes away.
        acks.flush().await;
        match &end {
            Ok(End::Stopped) => {
                if let Err(error) = session
                    .channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await
                {
                    tracing::debug!(%error, "basic.cancel failed");
                }
            }
            Ok(End::Cancelled) => {
                // Deliveries of the cancelled consumer may still be unacked
                // on this channel; a later multiple-ack must not cover them,
                // so drop the channel and let the manager reconnect.
                let _ = session
                    .channel
                    .close(200, "consumer cancelled".into())
                    .await;
            }
            Err(_) => {}
        }
        end
    }

    /// Stores a valid delivery and returns its acker (the caller acks it);
    /// dead-letters an invalid one and returns `None`.
    async fn handle(&self, delivery: &Delivery) -> Option<Acker> {
        self.metrics.consumed.inc();
        let received_at = OffsetDateTime::now_utc();
        let message = match Message::from_slice(&delivery.data) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(kind = error.kind(), %error, "invalid message, dead-lettering");
                self.dead_letter(delivery, error.kind()).await;
                return None;
            }
        };
        let created_at = message.created_at;
        match self.sink.store(message, received_at).await {
            Ok(InsertOutcome::Stored { evicted, len }) => {
                self.metrics.stored.inc();
                self.metrics.evicted.inc_by(evicted as u64);
                self.metrics
                    .stored_messages
                    .set(len.try_into().unwrap_or(i64::MAX));
                let latency = (received_at - created_at).as_seconds_f64().max(0.0);
                self.metrics.end_to_end_latency.observe(latency);
            }
            Ok(InsertOutcome::Duplicate) => {
                tracing::debug!("duplicate message, acking without storing");
                self.metrics.duplicates.inc();
            }
            Err(error) => {
                tracing::warn!(kind = error.kind(), %error, "message cannot be stored, dead-lettering");
                self.dead_letter(delivery, error.kind()).await;
                return None;
            }
        }
        Some(delivery.acker.clone())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &'static str) {
        match delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await
        {
            Ok(_) => self
                .metrics
                .dead_lettered
                .with_label_values(&[reason])
                .inc(),
            Err(error) => {
                tracing::warn!(%error, "reject failed; the broker will redeliver the message")
            }
        }
    }
}
