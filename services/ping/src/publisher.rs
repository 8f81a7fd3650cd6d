//! Publishing with publisher confirms, behind the [`Publish`] trait.
//!
//! [`AmqpPublisher`] publishes on the managed confirm channel through the
//! default exchange (routing key = queue), `mandatory`, persistent, JSON, with
//! `message_id` = id, and awaits that message's own confirm with a timeout.
//! Only an ack *without* a returned message is success. No lock is held
//! across an await: concurrent requests publish concurrently and their
//! confirms are pipelined on the one channel. Handlers see only the trait, so
//! tests can use a fake. Readiness follows the connection *and* the confirms
//! ([`crate::readiness::ConfirmHealth`]): a run of confirm timeouts on a
//! connection that still looks alive makes ping not ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use pingpong_common::Message;
use pingpong_common::amqp::BrokerLink;
use pingpong_common::config::QueueName;
use prometheus::HistogramVec;

use crate::readiness::ConfirmHealth;

/// How long a publish may wait for its confirm.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// AMQP delivery mode of persistent messages.
const PERSISTENT: u8 = 2;

/// Why a message was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No live broker connection.
    #[error("the broker is not connected")]
    Unavailable,
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
    /// Publishes `message`; `Ok` only after a positive confirm.
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), PublishError>>;

    /// Whether publishing can currently succeed (for `/readyz`).
    fn is_ready(&self) -> bool;
}

/// The real publisher on the managed AMQP connection.
pub struct AmqpPublisher {
    link: BrokerLink,
    routing_key: ShortString,
    confirm_duration: HistogramVec,
    health: ConfirmHealth,
}

impl AmqpPublisher {
    /// A publisher sending to `queue` over `link`.
    pub fn new(link: BrokerLink, queue: &QueueName, confirm_duration: HistogramVec) -> Self {
        Self {
            link,
            routing_key: queue.as_str().into(),
            confirm_duration,
            health: ConfirmHealth::default(),
        }
    }

    async fn publish_confirmed(&self, message: &Message) -> Result<(), PublishError> {
        let session = self.link.session().ok_or(PublishError::Unavailable)?;
        let payload = message.to_json().map_err(PublishError::Encode)?;
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_message_id(message.id.to_string().into())
            .with_timestamp(message.created_at.unix_timestamp().try_into().unwrap_or(0));
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let started = Instant::now();
        let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, async {
            let confirm = session
                .channel
                .basic_publish(
                    "".into(),
                    self.routing_key.clone(),
                    options,
                    &payload,
                    properties,
                )
                .await
                .map_err(PublishError::Send)?;
            confirm.await.map_err(PublishError::Confirm)
        })
        .await;
        let connection = Arc::as_ptr(&session).addr();
        match &confirmed {
            Err(_) => self.health.record_timeout(connection, Instant::now()),
            Ok(Ok(_)) => self.health.record_answer(),
            // Send and channel errors: the connection manager sees those.
            Ok(Err(_)) => {}
        }
        let (outcome, result) = match confirmed {
            Err(_) => ("timeout", Err(PublishError::Timeout(CONFIRM_TIMEOUT))),
            Ok(Err(error)) => ("error", Err(error)),
            Ok(Ok(Confirmation::Ack(None))) => ("ack", Ok(())),
            Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
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
            Ok(Ok(Confirmation::Nack(None))) => ("nack", Err(PublishError::Nacked)),
            Ok(Ok(Confirmation::NotRequested)) => ("error", Err(PublishError::NotConfirmed)),
        };
        self.confirm_duration
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

impl Publish for AmqpPublisher {
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(self.publish_confirmed(message))
    }

    fn is_ready(&self) -> bool {
        self.link.session().is_some_and(|session| {
            self.health
                .is_healthy(Arc::as_ptr(&session).addr(), Instant::now())
        })
    }
}
