//! The queue consumer: manual acks, ack only after the message is stored.
//!
//! It follows the connection manager's session: whenever a live session
//! exists it registers a consumer (the channel has a prefetch), and on loss it
//! waits for the next session. Deliveries are taken in batches of what is
//! already buffered plus what arrives within a short linger after the first
//! (`PONG_BATCH_LINGER_MS`, at most [`MAX_BATCH`]): invalid bodies are rejected
//! without requeue (dead-lettered into `<queue>.dead`), the valid ones are
//! stored together (one transaction with PostgreSQL) and then acked with one
//! `multiple` ack; duplicates are acked without storing. Nothing is acked
//! before the store reports it durable. When the store is unavailable the
//! batch stays unacked and is retried with backoff (the prefetch stops the
//! intake meanwhile); a message the store refuses for good is dead-lettered.
//! On stop it finishes or abandons the current batch, cancels the consumer,
//! stores and acks what the broker had already pushed (so a scale-in
//! redelivers nothing), and returns; deliveries still unacked (the store
//! was down) go back to the queue when the channel closes.
//!
//! Every wait on the broker (the next delivery, the store-and-ack of a batch,
//! the cancel) is also a wait for the connection manager to drop the session:
//! the consumer never relies on lapin alone to report a lost connection. A
//! wait that lapin never settles once the connection has failed (seen once in
//! CI) would otherwise keep the consumer on the dead session while `/readyz`
//! followed the next one, and every message published after the reconnect
//! would sit unconsumed. An abandoned batch is unacked, so
//! the broker delivers it again and the store keeps each id once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::Acker;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use pingpong_common::Message;
use pingpong_common::amqp::{Backoff, BrokerLink, Session};
use pingpong_common::config::{Partitions, QueueName};
use pingpong_common::trace;
use pingpong_otel::OpenTelemetrySpanExt;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::PongMetrics;
use crate::readiness::{AllUp, Flag};
use crate::store::{Incoming, InsertOutcome, MessageSink, StoreError};

/// Deliveries the broker may push before acks (the channel's `basic_qos`).
pub const PREFETCH: u16 = 512;
/// Delay before registering again on a still-live session.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait for `basic.cancel` or a channel close on the way out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer of one queue (one partition) and what it needs.
pub struct QueueConsumer {
    link: BrokerLink,
    queue: QueueName,
    sink: Arc<dyn MessageSink>,
    metrics: PongMetrics,
    running: Flag,
    /// The flags of every partition's consumer (this one's included): the
    /// `consumer_running` gauge is 1 only when all are registered.
    group: AllUp,
    /// Consume on a channel of its own rather than the session's. Every
    /// partition but the first does: a `multiple` ack settles everything
    /// unacked on its channel, so two consumers must never share one.
    own_channel: bool,
    linger: Duration,
}

/// Most deliveries stored (and acknowledged) together.
pub const MAX_BATCH: usize = 256;

/// Acknowledges stored deliveries. They are handled in order, so acking the
/// newest with `multiple` settles all of them (rejected ones are already
/// settled).
async fn ack_through(last: Acker, count: usize) {
    let options = BasicAckOptions {
        multiple: count > 1,
    };
    if let Err(error) = last.ack(options).await {
        tracing::warn!(%error, "ack failed; the broker will redeliver the messages");
    }
}

/// The deliveries already buffered on a cancelled consumer, without waiting.
fn drain_buffered(consumer: &mut lapin::Consumer) -> Vec<Delivery> {
    let mut held = Vec::new();
    while let Some(Some(Ok(delivery))) = consumer.next().now_or_never() {
        held.push(delivery);
    }
    held
}

enum End {
    Stopped,
    Cancelled,
    /// The connection manager dropped the session (connection lost).
    SessionLost,
}

/// Resolves once `session` is no longer the link's current session: the
/// manager saw it fail (and published `None` or a newer session), or the
/// manager is gone.
async fn session_ended(mut sessions: watch::Receiver<Option<Arc<Session>>>, session: Arc<Session>) {
    loop {
        let current = sessions
            .borrow_and_update()
            .as_ref()
            .is_some_and(|live| Arc::ptr_eq(live, &session));
        if !current || sessions.changed().await.is_err() {
            return;
        }
    }
}

/// Runs `step` unless `ended` fires first (`None`).
async fn unless_ended<T>(
    ended: &mut (impl Future<Output = ()> + Unpin),
    step: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = ended => None,
        value = step => Some(value),
    }
}

/// What happened to a batch.
enum Settled {
    /// Every delivery was acked or rejected.
    Done,
    /// `stop` fired while the store was unavailable: nothing was acked.
    Abandoned,
}

/// A valid delivery waiting to be stored.
struct Pending {
    acker: Acker,
    delivery_tag: u64,
}

/// Most links a batch's span carries (OpenTelemetry's default limit).
const MAX_LINKS: usize = 128;

/// The CONSUMER span of one batch (OpenTelemetry messaging conventions):
/// it covers storing and acking the batch's messages.
fn consume_span(queue: &str, count: usize) -> tracing::Span {
    tracing::debug_span!(
        target: trace::TARGET,
        "process",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = queue,
        messaging.batch.message_count = count,
        messaging.message.id = tracing::field::Empty,
    )
}

/// Makes the batch span continue its messages' traces: the child of the
/// publish when every traced message belongs to one trace, otherwise a new
/// trace linked to each message's publish (at most [`MAX_LINKS`]).
fn continue_traces(span: &tracing::Span, contexts: &[pingpong_otel::opentelemetry::Context]) {
    let Some(first) = contexts.first() else {
        return;
    };
    let remote = |cx| pingpong_otel::propagate::remote_span_context(cx);
    let trace_id = remote(first).trace_id();
    if contexts.iter().all(|cx| remote(cx).trace_id() == trace_id) {
        let _ = span.set_parent(first.clone());
    } else {
        for cx in contexts.iter().take(MAX_LINKS) {
            span.add_link(remote(cx));
        }
    }
}

impl QueueConsumer {
    /// A consumer of `queue` over `link`, storing into `sink`.
    pub fn new(
        link: BrokerLink,
        queue: QueueName,
        sink: Arc<dyn MessageSink>,
        metrics: PongMetrics,
    ) -> Self {
        let running = Flag::default();
        Self {
            link,
            queue,
            sink,
            metrics,
            group: AllUp::new(vec![running.clone()]),
            running,
            own_channel: false,
            linger: Duration::ZERO,
        }
    }

    /// One consumer per partition of `queue` (see [`pingpong_common::queue`]),
    /// each on its own channel of the same connection, and the probe that is
    /// up when all of them are registered.
    pub fn partitioned(
        link: &BrokerLink,
        queue: &QueueName,
        partitions: Partitions,
        sink: &Arc<dyn MessageSink>,
        metrics: &PongMetrics,
    ) -> (Vec<Self>, AllUp) {
        let queues = partitions.queues(queue);
        let flags: Vec<Flag> = queues.iter().map(|_| Flag::default()).collect();
        let group = AllUp::new(flags.clone());
        let consumers = queues
            .into_iter()
            .zip(flags)
            .enumerate()
            .map(|(index, (queue, running))| Self {
                link: link.clone(),
                queue,
                sink: Arc::clone(sink),
                metrics: metrics.clone(),
                running,
                group: group.clone(),
                own_channel: index > 0,
                linger: Duration::ZERO,
            })
            .collect();
        (consumers, group)
    }

    /// Waits up to `linger` after a batch's first delivery for more, so that a steady stream
    /// is stored and acknowledged in real batches (one store call and one ack for many) rather
    /// than one by one. Zero (the default of [`Self::new`]) takes only what is buffered.
    #[must_use]
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Up while the consumer is registered on the queue (what `/readyz`
    /// reads); shared with the running consumer.
    pub fn running(&self) -> Flag {
        self.running.clone()
    }

    /// Records whether the consumer is registered (flag, and the gauge
    /// mirroring whether every partition's consumer is).
    fn set_running(&self, running: bool) {
        self.running.set(running);
        self.metrics
            .consumer_running
            .set(i64::from(self.group.all_up()));
    }

    /// The channel to consume on in `session`: the session's own, which the
    /// connection manager set up with the prefetch, or a new one with the
    /// same prefetch (see `own_channel`).
    async fn open_channel(&self, session: &Session) -> Result<Channel, lapin::Error> {
        if !self.own_channel {
            return Ok(session.channel.clone());
        }
        let channel = session.connection.create_channel().await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        Ok(channel)
    }

    /// Consumes until `stop` is cancelled, following reconnects.
    pub async fn run(self, stop: CancellationToken) {
        let mut sessions = self.link.subscribe();
        loop {
            let current = sessions.borrow_and_update().clone();
            if let Some(session) = current.filter(|s| s.is_alive()) {
                let result = self.consume(&session, &stop).await;
                self.set_running(false);
                match result {
                    Ok(End::Stopped) => break,
                    Ok(End::Cancelled) => {
                        tracing::warn!(queue = %self.queue, "consumer cancelled, registering again")
                    }
                    Ok(End::SessionLost) => {
                        tracing::warn!(queue = %self.queue, "broker session lost; unacked deliveries return to the queue, waiting for the broker")
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
        self.set_running(false);
        tracing::info!(queue = %self.queue, "consumer stopped");
    }

    async fn consume(
        &self,
        session: &Arc<Session>,
        stop: &CancellationToken,
    ) -> Result<End, lapin::Error> {
        let mut ended = Box::pin(session_ended(self.link.subscribe(), Arc::clone(session)));
        let tag = format!("pong-{}", uuid::Uuid::new_v4().simple());
        let channel = match unless_ended(&mut ended, self.open_channel(session)).await {
            None => return Ok(End::SessionLost),
            Some(channel) => channel?,
        };
        let registered = unless_ended(
            &mut ended,
            channel.basic_consume(
                self.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        let Some(registered) = registered else {
            return Ok(End::SessionLost);
        };
        let mut consumer = registered?;
        self.set_running(true);
        tracing::info!(queue = %self.queue, consumer_tag = %tag, "consuming");
        let end = loop {
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => break Ok(End::Stopped),
                () = &mut ended => break Ok(End::SessionLost),
                next = consumer.next() => next,
            };
            let mut batch = Vec::new();
            let mut after = None;
            match first {
                Some(Ok(delivery)) => batch.push(delivery),
                Some(Err(error)) => break Err(error),
                None => break Ok(End::Cancelled),
            }
            // Take what is already buffered, without waiting.
            while batch.len() < MAX_BATCH {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(delivery))) => batch.push(delivery),
                    Some(Some(Err(error))) => {
                        after = Some(Err(error));
                        break;
                    }
                    Some(None) => {
                        after = Some(Ok(End::Cancelled));
                        break;
                    }
                    None => break,
                }
            }
            if after.is_none() && batch.len() < MAX_BATCH && !self.linger.is_zero() {
                after = self.linger(&mut consumer, &mut batch, stop).await;
            }
            self.metrics.batch_size.observe(batch.len() as f64);
            match unless_ended(&mut ended, self.settle(batch, stop)).await {
                None => break Ok(End::SessionLost),
                Some(Settled::Abandoned) => break Ok(End::Stopped),
                Some(Settled::Done) => {}
            }
            if let Some(end) = after {
                break end;
            }
            if stop.is_cancelled() {
                break Ok(End::Stopped);
            }
        };
        match &end {
            Ok(End::Stopped) => {
                let cancel =
                    channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
                match unless_ended(&mut ended, tokio::time::timeout(CLOSE_TIMEOUT, cancel)).await {
                    Some(Ok(Ok(()))) => {
                        // The broker sends nothing after cancel-ok, and everything it sent
                        // before is buffered: store and ack it instead of leaving it to be
                        // requeued and redelivered to another replica (scale-in without
                        // redeliveries).
                        let mut held = drain_buffered(&mut consumer);
                        if !held.is_empty() {
                            tracing::info!(
                                deliveries = held.len(),
                                "storing the deliveries held at stop"
                            );
                        }
                        while !held.is_empty() {
                            let rest = held.split_off(held.len().min(MAX_BATCH));
                            match unless_ended(&mut ended, self.settle(held, stop)).await {
                                Some(Settled::Done) => held = rest,
                                None | Some(Settled::Abandoned) => break,
                            }
                        }
                    }
                    None => {}
                    Some(Ok(Err(error))) => tracing::debug!(%error, "basic.cancel failed"),
                    Some(Err(_)) => tracing::debug!("basic.cancel unanswered"),
                }
            }
            Ok(End::Cancelled) => {
                // Deliveries of the cancelled consumer may still be unacked
                // on this channel; a later multiple-ack must not cover them,
                // so drop the channel and let the manager reconnect.
                let close = channel.close(200, "consumer cancelled".into());
                let _ = unless_ended(&mut ended, tokio::time::timeout(CLOSE_TIMEOUT, close)).await;
            }
            Ok(End::SessionLost) | Err(_) => {}
        }
        if self.own_channel && channel.status().connected() {
            // The session's channel goes with its connection; this one is ours to close.
            let close = channel.close(200, "consumer stopped".into());
            let _ = unless_ended(&mut ended, tokio::time::timeout(CLOSE_TIMEOUT, close)).await;
        }
        end
    }

    /// Adds to `batch` what arrives within the linger (or until the batch is full or `stop`
    /// fires); returns how the consumer ended if it did meanwhile. It does not watch the
    /// session: the wait is bounded by the linger, and the settle that follows does.
    async fn linger(
        &self,
        consumer: &mut lapin::Consumer,
        batch: &mut Vec<Delivery>,
        stop: &CancellationToken,
    ) -> Option<Result<End, lapin::Error>> {
        let deadline = tokio::time::sleep(self.linger);
        tokio::pin!(deadline);
        while batch.len() < MAX_BATCH {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => return None,
                () = &mut deadline => return None,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => batch.push(delivery),
                Some(Err(error)) => return Some(Err(error)),
                None => return Some(Ok(End::Cancelled)),
            }
        }
        None
    }

    /// Dead-letters the invalid deliveries of `batch`, stores the valid ones
    /// (retrying while the store is unavailable) and acks them, in the
    /// batch's CONSUMER span (see [`consume_span`]).
    async fn settle(&self, batch: Vec<Delivery>, stop: &CancellationToken) -> Settled {
        let received_at = OffsetDateTime::now_utc();
        let span = consume_span(self.queue.as_str(), batch.len());
        // Filled only while the span is traced.
        let mut contexts = Vec::new();
        let mut messages: Vec<Incoming> = Vec::with_capacity(batch.len());
        let mut pending = Vec::with_capacity(batch.len());
        // By value: each body is freed once decoded, so a batch of large
        // messages is not held twice.
        for delivery in batch {
            self.metrics.consumed.inc();
            if delivery.redelivered {
                self.metrics.redelivered.inc();
            }
            let delivery_span =
                tracing::debug_span!("delivery", delivery_tag = delivery.delivery_tag);
            let _entered = delivery_span.enter();
            match Message::from_slice(&delivery.data) {
                Ok(message) => {
                    if !span.is_disabled()
                        && let Some(cx) =
                            trace::amqp_context(delivery.properties.headers().as_ref())
                    {
                        contexts.push(cx);
                    }
                    messages.push((message, received_at));
                    pending.push(Pending {
                        acker: delivery.acker,
                        delivery_tag: delivery.delivery_tag,
                    });
                }
                Err(error) => {
                    tracing::warn!(kind = error.kind(), %error, "invalid message, dead-lettering");
                    drop(_entered);
                    self.dead_letter(&delivery.acker, error.kind()).await;
                }
            }
        }
        if messages.is_empty() {
            return Settled::Done;
        }
        if !span.is_disabled() {
            continue_traces(&span, &contexts);
            if let [(message, _)] = messages.as_slice() {
                span.record("messaging.message.id", tracing::field::display(message.id));
            }
        }
        self.store_and_ack(messages, pending, received_at, stop)
            .instrument(span)
            .await
    }

    /// Stores the decoded messages of a batch and acks them (or
    /// dead-letters those the store refuses for good).
    async fn store_and_ack(
        &self,
        messages: Vec<Incoming>,
        pending: Vec<Pending>,
        received_at: OffsetDateTime,
        stop: &CancellationToken,
    ) -> Settled {
        let Some(outcomes) = self.store_with_retry(&messages, stop).await else {
            return Settled::Abandoned;
        };
        // Reject the condemned before the multiple-ack could cover them.
        let mut last = None;
        let mut count = 0;
        for ((outcome, (message, _)), entry) in outcomes.into_iter().zip(&messages).zip(pending) {
            let span = tracing::debug_span!("delivery", delivery_tag = entry.delivery_tag);
            match outcome {
                Ok(outcome) => {
                    span.in_scope(|| self.record(outcome, message, received_at));
                    last = Some(entry.acker);
                    count += 1;
                }
                Err(error) => {
                    span.in_scope(|| {
                        tracing::warn!(kind = error.kind(), %error, "message cannot be stored, dead-lettering")
                    });
                    self.dead_letter(&entry.acker, error.kind())
                        .instrument(span)
                        .await;
                }
            }
        }
        if let Some(last) = last {
            ack_through(last, count).await;
        }
        Settled::Done
    }

    /// Stores `messages`, retrying with backoff while the store is
    /// unavailable; `None` when `stop` fires first.
    async fn store_with_retry(
        &self,
        messages: &[Incoming],
        stop: &CancellationToken,
    ) -> Option<Vec<Result<InsertOutcome, StoreError>>> {
        let mut backoff = Backoff::default();
        let mut failures = 0u32;
        loop {
            match self.sink.store_batch(messages).await {
                Ok(outcomes) => {
                    if failures > 0 {
                        tracing::info!(failures, "store available again, acking");
                    }
                    return Some(outcomes);
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    if failures == 0 {
                        tracing::warn!(kind = error.kind(), error = %error.chain(), ?delay, "store unavailable; messages stay unacked, retrying");
                    } else {
                        tracing::debug!(kind = error.kind(), error = %error.chain(), ?delay, "store still unavailable");
                    }
                    failures += 1;
                    tokio::select! {
                        () = stop.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn record(&self, outcome: InsertOutcome, message: &Message, received_at: OffsetDateTime) {
        match outcome {
            InsertOutcome::Stored {
                evicted,
                evicted_bytes,
                len,
                bytes,
            } => {
                self.metrics.stored.inc();
                self.metrics.evicted.inc_by(evicted as u64);
                self.metrics.evicted_bytes.inc_by(evicted_bytes);
                if let Some(bytes) = bytes {
                    self.metrics
                        .stored_bytes
                        .set(bytes.try_into().unwrap_or(i64::MAX));
                }
                self.metrics
                    .stored_messages
                    .set(len.try_into().unwrap_or(i64::MAX));
                let latency = (received_at - message.created_at).as_seconds_f64().max(0.0);
                self.metrics.end_to_end_latency.observe(latency);
            }
            InsertOutcome::Duplicate => {
                tracing::debug!("duplicate message, acking without storing");
                self.metrics.duplicates.inc();
            }
        }
    }

    async fn dead_letter(&self, acker: &Acker, reason: &'static str) {
        match acker.reject(BasicRejectOptions { requeue: false }).await {
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
