//! The queues ping and pong share, and their arguments per [`QueueType`].
//!
//! Both services declare the same durable topology at every connect:
//! `<queue>.dead` and `<queue>`, which dead-letters into it through the
//! default exchange. The arguments depend on `RABBITMQ_QUEUE_TYPE`:
//!
//! | argument | classic | quorum |
//! | --- | --- | --- |
//! | `x-queue-type` | (not sent) | `quorum` (both queues) |
//! | `x-queue-version` | `2` (both queues) | — |
//! | `x-dead-letter-exchange`, `x-dead-letter-routing-key` | `""`, `<queue>.dead` | same |
//! | `x-dead-letter-strategy` | — (at-most-once) | `at-least-once` |
//! | `x-overflow` | — | `reject-publish` (required by at-least-once) |
//! | `x-delivery-limit` | — | [`DELIVERY_LIMIT`] |
//!
//! RabbitMQ ignores optional `x-` arguments it does not know, so an older
//! broker simply runs without the feature: before 3.10, classic queues stay on
//! queue version 1 and quorum dead-lettering is at-most-once. A classic queue
//! that already exists without `x-queue-version` (declared before this
//! version of the services) keeps its version: RabbitMQ 3.10 checks the
//! argument for equivalence, so the declare is retried without it instead of
//! failing. Proven on RabbitMQ 3.10.8 (Debian bookworm) by
//! `services/common/tests/topology.rs` and `tests/system/test_system_broker_ha.py`.
//!
//! Each queue is declared on a short-lived channel of its own, so a refused
//! declare (which closes its channel) never takes the caller's channel down.
//!
//! A queue that already exists with other arguments makes RabbitMQ close the
//! channel with 406 PRECONDITION_FAILED; [`TopologyError::Mismatch`] turns
//! that into a message naming the queue, what exists, what was asked and how
//! to migrate. This module declares; it never deletes.

use std::fmt;
use std::str::FromStr;

use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ErrorKind};

use crate::queue::QueueName;

/// Deliveries of one message a quorum queue allows before dead-lettering it
/// (`x-delivery-limit`). Every return to the queue counts: a consumer's
/// reject with requeue, and (RabbitMQ 3.x) a consumer connection lost with
/// the message unacked. RabbitMQ 4 uses 20 as its default too.
pub const DELIVERY_LIMIT: i64 = 20;

/// The kind of queue ping and pong declare (`RABBITMQ_QUEUE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// A queue on one node (queue version 2 where supported).
    #[default]
    Classic,
    /// A replicated Raft queue: survives losing a minority of nodes.
    Quorum,
}

impl QueueType {
    /// The value as written in `RABBITMQ_QUEUE_TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

impl FromStr for QueueType {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "classic" => Ok(Self::Classic),
            "quorum" => Ok(Self::Quorum),
            _ => Err(()),
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why declaring the topology failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The queue exists with other arguments (406 PRECONDITION_FAILED).
    #[error(
        "queue {queue} already exists with other arguments than configured. \
         The broker says: {broker_says}. Configured: {asked}. \
         To migrate, either set RABBITMQ_QUEUE_TYPE (or the arguments) back to what the queue has, \
         or move to a new queue: set RABBITMQ_QUEUE to a new name on ping and pong, \
         let the old consumer drain {queue} until it is empty, then delete it \
         (`rabbitmqctl delete_queue {queue}`, and {queue}.dead once its messages are handled)"
    )]
    Mismatch {
        /// The queue whose declaration failed.
        queue: String,
        /// RabbitMQ's reply text (names the argument, the value asked and the one it has).
        broker_says: String,
        /// What this process asked for, e.g. `quorum (x-delivery-limit=20, …)`.
        asked: String,
    },
    /// Any other declare failure (connection lost, access refused...).
    #[error("failed to declare queue {queue}: {source}")]
    Declare {
        /// The queue name.
        queue: String,
        /// The cause.
        #[source]
        source: lapin::Error,
    },
}

impl TopologyError {
    /// Error category for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mismatch { .. } => "QueueMismatch",
            Self::Declare { .. } => "Declare",
        }
    }

    /// Whether retrying cannot help until someone changes the configuration
    /// or the queue.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Mismatch { .. })
    }
}

/// Declares the topology of every queue in `queues` (the partitions of the
/// work queue, see [`declare_queue`]). Idempotent.
pub async fn declare_topology(
    connection: &Connection,
    queues: &[QueueName],
    queue_type: QueueType,
) -> Result<(), TopologyError> {
    for queue in queues {
        declare_queue(connection, queue, queue_type).await?;
    }
    Ok(())
}

/// Declares durable `<queue>.dead`, then durable `<queue>` dead-lettering
/// into it, with the arguments of `queue_type`. Idempotent.
pub async fn declare_queue(
    connection: &Connection,
    queue: &QueueName,
    queue_type: QueueType,
) -> Result<(), TopologyError> {
    let dead = queue.dead_letter();
    declare(
        connection,
        &dead,
        dead_letter_queue_arguments(queue_type),
        queue_type,
    )
    .await?;
    declare(
        connection,
        queue.as_str(),
        queue_arguments(queue, queue_type),
        queue_type,
    )
    .await
}

/// Declares one queue; a classic queue that exists without
/// `x-queue-version` is declared again without it (it keeps its version).
async fn declare(
    connection: &Connection,
    name: &str,
    mut arguments: FieldTable,
    queue_type: QueueType,
) -> Result<(), TopologyError> {
    match declare_once(connection, name, arguments.clone(), queue_type).await {
        Err(TopologyError::Mismatch { broker_says, .. })
            if broker_says.contains(&format!("'{QUEUE_VERSION}'"))
                && arguments.inner().contains_key(QUEUE_VERSION) =>
        {
            tracing::info!(
                queue = name,
                "queue exists without x-queue-version and keeps its queue version; \
                 delete it (when empty) to have it declared on version 2"
            );
            arguments = FieldTable::from(
                arguments
                    .inner()
                    .iter()
                    .filter(|(key, _)| key.as_str() != QUEUE_VERSION)
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            );
            declare_once(connection, name, arguments, queue_type).await
        }
        other => other,
    }
}

async fn declare_once(
    connection: &Connection,
    name: &str,
    arguments: FieldTable,
    queue_type: QueueType,
) -> Result<(), TopologyError> {
    let asked = describe(queue_type, &arguments);
    let channel = connection
        .create_channel()
        .await
        .map_err(|source| TopologyError::Declare {
            queue: name.to_owned(),
            source,
        })?;
    match channel
        .queue_declare(name.into(), QueueDeclareOptions::durable(), arguments)
        .await
    {
        Ok(_) => {
            if let Err(error) = channel.close(200, "declared".into()).await {
                tracing::debug!(%error, "closing the declare channel failed");
            }
            Ok(())
        }
        Err(source) => Err(match precondition_failed(&source) {
            Some(broker_says) => TopologyError::Mismatch {
                queue: name.to_owned(),
                broker_says,
                asked,
            },
            None => TopologyError::Declare {
                queue: name.to_owned(),
                source,
            },
        }),
    }
}

/// The broker's reply text when `error` is a 406 PRECONDITION_FAILED.
fn precondition_failed(error: &lapin::Error) -> Option<String> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp)
            if matches!(
                amqp.kind(),
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
            ) =>
        {
            Some(amqp.get_message().to_string())
        }
        _ => None,
    }
}

/// `quorum (x-delivery-limit=20, x-overflow=reject-publish, ...)`, sorted.
fn describe(queue_type: QueueType, arguments: &FieldTable) -> String {
    let shown: Vec<String> = arguments
        .inner()
        .iter()
        .map(|(key, value)| format!("{key}={}", show_value(value)))
        .collect();
    format!("{queue_type} queue ({})", shown.join(", "))
}

fn show_value(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(text) => format!("{:?}", text.to_string()),
        AMQPValue::LongLongInt(number) => number.to_string(),
        other => format!("{other:?}"),
    }
}

/// The classic queue version argument.
const QUEUE_VERSION: &str = "x-queue-version";

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The arguments of the work queue `queue` for `queue_type`.
pub fn queue_arguments(queue: &QueueName, queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-dead-letter-exchange".into(), text(""));
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        text(&queue.dead_letter()),
    );
    match queue_type {
        QueueType::Classic => {
            arguments.insert(QUEUE_VERSION.into(), AMQPValue::LongLongInt(2));
        }
        QueueType::Quorum => {
            arguments.insert("x-queue-type".into(), text("quorum"));
            arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
            arguments.insert("x-overflow".into(), text("reject-publish"));
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
        }
    }
    arguments
}

/// The arguments of `<queue>.dead` for `queue_type` (no dead-lettering of its own).
pub fn dead_letter_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    match queue_type {
        QueueType::Classic => {
            arguments.insert(QUEUE_VERSION.into(), AMQPValue::LongLongInt(2));
        }
        QueueType::Quorum => {
            arguments.insert("x-queue-type".into(), text("quorum"));
        }
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(table: &FieldTable) -> Vec<String> {
        table.inner().keys().map(ToString::to_string).collect()
    }

    #[test]
    fn quorum_queue_dead_letters_at_least_once_with_a_delivery_limit() {
        let queue = QueueName::new("work").unwrap();
        let args = queue_arguments(&queue, QueueType::Quorum);
        assert_eq!(
            keys(&args),
            [
                "x-dead-letter-exchange",
                "x-dead-letter-routing-key",
                "x-dead-letter-strategy",
                "x-delivery-limit",
                "x-overflow",
                "x-queue-type"
            ]
        );
        let described = describe(QueueType::Quorum, &args);
        assert!(
            described.contains(r#"x-overflow="reject-publish""#),
            "{described}"
        );
        assert!(described.contains("x-delivery-limit=20"), "{described}");
        assert!(described.contains(r#""work.dead""#), "{described}");
        assert_eq!(
            keys(&dead_letter_queue_arguments(QueueType::Quorum)),
            ["x-queue-type"]
        );
    }

    #[test]
    fn classic_queues_ask_for_queue_version_2() {
        let queue = QueueName::new("work").unwrap();
        let args = queue_arguments(&queue, QueueType::Classic);
        assert_eq!(
            keys(&args),
            [
                "x-dead-letter-exchange",
                "x-dead-letter-routing-key",
                "x-queue-version"
            ]
        );
        assert_eq!(
            keys(&dead_letter_queue_arguments(QueueType::Classic)),
            ["x-queue-version"]
        );
    }

    #[test]
    fn queue_type_parses_case_insensitively() {
        assert_eq!("Quorum".parse(), Ok(QueueType::Quorum));
        assert_eq!("classic".parse(), Ok(QueueType::Classic));
        assert!("stream".parse::<QueueType>().is_err());
    }

    #[test]
    fn mismatch_message_names_queue_both_sides_and_the_migration() {
        let error = TopologyError::Mismatch {
            queue: "work".to_owned(),
            broker_says: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type'".to_owned(),
            asked: "quorum queue (x-queue-type=\"quorum\")".to_owned(),
        };
        let text = error.to_string();
        for needle in [
            "queue work",
            "inequivalent arg 'x-queue-type'",
            "quorum queue",
            "RABBITMQ_QUEUE",
            "drain",
        ] {
            assert!(text.contains(needle), "{needle} missing: {text}");
        }
        assert!(error.is_permanent());
        assert_eq!(error.kind(), "QueueMismatch");
    }
}
