//! Publishing with publisher confirms, behind the [`Publish`] trait.
//!
//! [`AmqpPublisher`] publishes on the managed confirm channel through the
//! default exchange (routing key = the queue of the partition the message id
//! selects: the queue itself with one partition), `mandatory`, persistent, JSON, with
//! `message_id` = the caller's id, and awaits that message's own confirm with
//! a timeout. Only an ack *without* a returned message is success; a returned
//! message must carry the id of the publish it is attributed to. Handlers see
//! only the trait, so tests can use a fake.
//!
//! **Wire order.** lapin takes a publish's delivery tag and queues its frames
//! in two steps; two publishes on two runtime threads could take tags 1 and 2
//! and queue their frames as 2 then 1, and the broker, which numbers messages
//! by arrival, would then confirm each with the other's tag: a nack for one
//! could answer the other. Every publish therefore does both steps under
//! [`AmqpPublisher`]'s `wire_order` lock: lapin 4.12's `basic_publish` takes
//! the tag (`before_basic_publish`) and queues the frames
//! (`send_method_frame_with_body` → `push_frames`) within the first poll of
//! its future, before its first await, so the lock is held across exactly
//! that first poll and never across an await.
//! `services/ping/tests/it/broker.rs` checks the outcome on a real broker.
//!
//! **Bounded confirms.** At most [`MAX_UNCONFIRMED`] publishes wait for their
//! confirm at a time; beyond that a publish fails at once
//! ([`PublishError::Overloaded`]). A publish whose confirm does not come
//! within [`CONFIRM_TIMEOUT`] answers `Timeout`, but its confirm stays
//! awaited in the background with its slot taken until the broker answers or
//! the channel closes, so confirms parked during a long broker block are
//! bounded too (and never pile up in lapin's list of dropped confirms).
//!
//! **Refused publishes.** A nack asks the connection manager for a fresh
//! channel (paced there): RabbitMQ 3.10 can leave a channel refusing every
//! publish to a quorum queue after a failover (see
//! `pingpong_common::amqp::manager`). Every failed publish is counted in
//! `pingpong_ping_publish_confirm_duration_seconds{outcome}` and logged at
//! `warn`, at most once per [`crate::publish_log::LOG_EVERY`] per kind with
//! the number of failures it stands for.
//!
//! Readiness follows the connection *and* the confirms
//! ([`crate::readiness::ConfirmHealth`]): a run of confirm timeouts on a
//! connection that still looks alive makes ping not ready.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use pingpong_common::Message;
use pingpong_common::amqp::{BrokerLink, Session};
use pingpong_common::config::{Partitions, QueueName};
use pingpong_common::trace;
use prometheus::HistogramVec;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::publish_log::FailureLog;
use crate::readiness::ConfirmHealth;

/// How long a publish may wait for its confirm.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes that may await their confirm at once (answered or parked after
/// a timeout). At 64 KiB per message at most, that bounds what a blocked
/// broker can leave queued in this process to 64 MiB.
pub const MAX_UNCONFIRMED: usize = 1024;

/// AMQP delivery mode of persistent messages.
const PERSISTENT: u8 = 2;

/// `mandatory`: an unroutable message comes back instead of vanishing.
const OPTIONS: BasicPublishOptions = BasicPublishOptions {
    mandatory: true,
    immediate: false,
};

/// Why a message was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No live broker connection.
    #[error("the broker is not connected")]
    Unavailable,
    /// [`MAX_UNCONFIRMED`] publishes already await their confirm.
    #[error("too many publishes await their confirm")]
    Overloaded,
    /// The message could not be encoded.
    #[error("failed to encode the message: {0}")]
    Encode(#[source] serde_json::Error),
    /// Sending the publish failed (connection lost while sending).
    #[error("failed to send the publish: {0}")]
    Send(#[source] lapin::Error),
    /// Waiting for the confirm failed (channel or connection closed).
    #[error("failed while waiting for the confirm: {0}")]
    Confirm(#[source] lapin::Error),
    /// The broker nacked the message.
    #[error("the broker rejected the message (nack)")]
    Nacked,
    /// The broker returned the message as unroutable.
    #[error("the broker returned the message: {code} {text}")]
    Returned {
        /// AMQP reply code (312 NO_ROUTE).
        code: u16,
        /// AMQP reply text.
        text: String,
    },
    /// The channel is not in confirm mode.
    #[error("publisher confirms are not enabled on the channel")]
    NotConfirmed,
    /// No confirm within [`CONFIRM_TIMEOUT`].
    #[error("no confirm within {0:?}")]
    Timeout(Duration),
}

impl PublishError {
    /// Error category, used as the `reason` metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable => "Unavailable",
            Self::Overloaded => "Overloaded",
            Self::Encode(_) => "Encode",
            Self::Send(_) => "Send",
            Self::Confirm(_) => "Confirm",
            Self::Nacked => "Nacked",
            Self::Returned { .. } => "Returned",
            Self::NotConfirmed => "NotConfirmed",
            Self::Timeout(_) => "Timeout",
        }
    }

    /// Whether the cause is on the broker side and a retry may succeed (503);
    /// otherwise it is a bug of ours (500).
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Encode(_))
    }
}

/// Something that durably hands a message to the broker.
pub trait Publish: Send + Sync {
    /// Publishes `message` (its `id` becomes the AMQP `message_id`); `Ok`
    /// only after a positive confirm.
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), PublishError>>;

    /// Whether publishing can currently succeed (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// Whether the publisher's machinery is stuck and only a restart helps
    /// (for `/healthz`). A publisher without such machinery never is.
    fn is_stalled(&self) -> bool {
        false
    }
}

/// The AMQP properties of `message`. When `span` (the publish span) is
/// traced, its W3C `traceparent`/`tracestate` go into the headers so pong
/// continues the trace; otherwise the message carries no headers.
pub fn message_properties(message: &Message, span: &tracing::Span) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT)
        .with_message_id(message.id.to_string().into())
        .with_timestamp(message.created_at.unix_timestamp().try_into().unwrap_or(0));
    match trace::amqp_headers(span) {
        Some(headers) => properties.with_headers(headers),
        None => properties,
    }
}

/// The PRODUCER span of one publish (OpenTelemetry messaging conventions):
/// it covers encoding, sending and waiting for the confirm.
fn publish_span(queue: &str, message: &Message) -> tracing::Span {
    tracing::debug_span!(
        target: trace::TARGET,
        "publish",
        otel.name = %format_args!("publish {queue}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = queue,
        messaging.rabbitmq.destination.routing_key = queue,
        messaging.message.id = %message.id,
        error.type = tracing::field::Empty,
    )
}

/// The real publisher on the managed AMQP connection.
pub struct AmqpPublisher {
    link: BrokerLink,
    /// The queue of each partition (the default exchange routes by name).
    routing_keys: Vec<ShortString>,
    partitions: Partitions,
    confirm_duration: HistogramVec,
    health: ConfirmHealth,
    failures: FailureLog,
    /// Held across taking a delivery tag and queueing the frames.
    wire_order: Mutex<()>,
    unconfirmed: Arc<Semaphore>,
}

impl AmqpPublisher {
    /// A publisher sending to `queue` over `link`.
    pub fn new(link: BrokerLink, queue: &QueueName, confirm_duration: HistogramVec) -> Self {
        Self {
            link,
            routing_keys: vec![queue.as_str().into()],
            partitions: Partitions::ONE,
            confirm_duration,
            health: ConfirmHealth::default(),
            failures: FailureLog::default(),
            wire_order: Mutex::new(()),
            unconfirmed: Arc::new(Semaphore::new(MAX_UNCONFIRMED)),
        }
    }

    /// Spreads the messages over `queue`'s `partitions` (see
    /// [`pingpong_common::queue`]), each to the partition its id selects.
    #[must_use]
    pub fn with_partitions(mut self, queue: &QueueName, partitions: Partitions) -> Self {
        self.routing_keys = partitions
            .queues(queue)
            .iter()
            .map(|queue| queue.as_str().into())
            .collect();
        self.partitions = partitions;
        self
    }

    /// The queue `message` goes to.
    fn routing_key(&self, message: &Message) -> &ShortString {
        let partition = usize::from(self.partitions.of(&message.id));
        // `routing_keys` has one key per partition and `of` is below their count.
        &self.routing_keys[partition.min(self.routing_keys.len() - 1)]
    }

    async fn publish_traced(&self, message: &Message) -> Result<(), PublishError> {
        let routing_key = self.routing_key(message);
        let span = publish_span(routing_key.as_str(), message);
        let result = self
            .publish_confirmed(message, routing_key, &span)
            .instrument(span.clone())
            .await;
        if let Err(error) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", error.kind());
        }
        result
    }

    async fn publish_confirmed(
        &self,
        message: &Message,
        routing_key: &ShortString,
        span: &tracing::Span,
    ) -> Result<(), PublishError> {
        let Some(session) = self.link.session() else {
            return Err(self.failed(None, PublishError::Unavailable));
        };
        let Ok(slot) = Arc::clone(&self.unconfirmed).try_acquire_owned() else {
            return Err(self.failed(Some(&session), PublishError::Overloaded));
        };
        let payload = message.to_json().map_err(PublishError::Encode)?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        let mut publishing = Box::pin(publish_on(
            Arc::clone(&session),
            routing_key.clone(),
            payload,
            message_properties(message, span),
        ));
        let first = poll_fn(|cx| {
            let _wire_order = self
                .wire_order
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Poll::Ready(publishing.as_mut().poll(cx))
        })
        .await;
        // `None`: no answer within the timeout.
        let answered = match first {
            Poll::Ready(result) => Some(result),
            Poll::Pending => tokio::time::timeout_at(deadline, &mut publishing)
                .await
                .ok(),
        };
        let (label, result) = match answered {
            None => {
                park(publishing, slot);
                self.health
                    .record_timeout(session.connection_id, Instant::now());
                ("timeout", Err(PublishError::Timeout(CONFIRM_TIMEOUT)))
            }
            Some(confirmed) => {
                drop(slot);
                self.judge(&session, message, confirmed)
            }
        };
        self.confirm_duration
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|error| self.failed(Some(&session), error))
    }

    /// The metric label and the result of a publish the broker answered.
    fn judge(
        &self,
        session: &Session,
        message: &Message,
        confirmed: Result<Confirmation, PublishError>,
    ) -> (&'static str, Result<(), PublishError>) {
        let confirmation = match confirmed {
            // Send and channel errors: the connection manager sees those.
            Err(error) => return ("error", Err(error)),
            Ok(confirmation) => confirmation,
        };
        self.health.record_answer();
        match confirmation {
            Confirmation::Ack(None) => ("ack", Ok(())),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                let expected = message.id.to_string();
                let returned_id = returned
                    .properties
                    .message_id()
                    .as_ref()
                    .map(ShortString::as_str);
                if returned_id != Some(expected.as_str()) {
                    tracing::error!(
                        expected = %expected,
                        returned = returned_id.unwrap_or("(none)"),
                        "a returned message was attributed to another publish; confirms are out of order"
                    );
                }
                // Our queue is declared at connect; a return means it was
                // deleted since. Declare it again so the next publish works.
                self.link.request_redeclare();
                (
                    "returned",
                    Err(PublishError::Returned {
                        code: returned.reply_code,
                        text: returned.reply_text.to_string(),
                    }),
                )
            }
            Confirmation::Nack(None) => {
                self.link.request_new_channel(session.id);
                ("nack", Err(PublishError::Nacked))
            }
            Confirmation::NotRequested => ("error", Err(PublishError::NotConfirmed)),
        }
    }

    /// Logs `error` at `warn` (paced per kind) and hands it back.
    fn failed(&self, session: Option<&Session>, error: PublishError) -> PublishError {
        if let Some(failures) = self.failures.note(error.kind(), Instant::now()) {
            match session {
                Some(session) => tracing::warn!(
                    kind = error.kind(),
                    failures,
                    node = %session.address,
                    channel = session.channel.id(),
                    %error,
                    "publishes failed"
                ),
                None => tracing::warn!(kind = error.kind(), failures, %error, "publishes failed"),
            }
        }
        error
    }
}

/// Publishes on `session` and awaits the broker's answer. The tag and the
/// frames are taken and queued in the first poll (see the module doc).
async fn publish_on(
    session: Arc<Session>,
    routing_key: ShortString,
    payload: Vec<u8>,
    properties: BasicProperties,
) -> Result<Confirmation, PublishError> {
    let confirm = session
        .channel
        .basic_publish("".into(), routing_key, OPTIONS, &payload, properties)
        .await
        .map_err(PublishError::Send)?;
    confirm.await.map_err(PublishError::Confirm)
}

/// Awaits a timed-out publish's confirm in the background, its slot taken
/// until the broker answers or the channel closes.
fn park<F>(publishing: Pin<Box<F>>, slot: OwnedSemaphorePermit)
where
    F: Future + Send + 'static,
{
    tokio::spawn(async move {
        let _ = publishing.await;
        drop(slot);
    });
}

impl Publish for AmqpPublisher {
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(self.publish_traced(message))
    }

    fn is_ready(&self) -> bool {
        self.link.session().is_some_and(|session| {
            self.health
                .is_healthy(session.connection_id, Instant::now())
        })
    }

    fn is_stalled(&self) -> bool {
        self.link.is_stalled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_lasts_twice_the_confirm_timeout() {
        assert_eq!(crate::readiness::UNREADY_FOR, 2 * CONFIRM_TIMEOUT);
    }

    #[test]
    fn properties_carry_the_callers_id_and_persistence() {
        let message = Message::new("hello".to_owned());
        let properties = message_properties(&message, &tracing::Span::none());
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some(message.id.to_string().as_str())
        );
        assert_eq!(properties.delivery_mode(), &Some(PERSISTENT));
        assert_eq!(
            properties.headers(),
            &None,
            "an untraced publish adds no headers"
        );
    }
}
