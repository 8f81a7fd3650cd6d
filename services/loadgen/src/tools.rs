//! One-shot broker tools for tests and scripts: raw publish, queue depth, queue delete.
//!
//! These never declare the services' queues: the services own their arguments (dead-lettering,
//! queue type), and a declare with different arguments would fail with PRECONDITION_FAILED.
//! They connect to the first node of `RABBITMQ_ADDRESSES` that answers.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};

use pingpong_common::AmqpConfig;
use pingpong_common::amqp::connect_any;

/// The AMQP connection name of every tool.
const CONNECTION_NAME: &str = "pingpong-loadgen";

/// One message to publish as is.
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// Target queue (routing key on the default exchange).
    pub queue: String,
    /// Body bytes, not checked in any way.
    pub body: Vec<u8>,
    /// `content_type` property, if any.
    pub content_type: Option<String>,
    /// `message_id` property, if any.
    pub message_id: Option<String>,
}

/// Read all of stdin as the message body.
pub fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("failed to read the message body from stdin")?;
    Ok(body)
}

/// Publish `message` persistent and mandatory; fail unless the broker acks it and routes it.
pub async fn publish(
    config: &AmqpConfig,
    message: &RawMessage,
) -> anyhow::Result<serde_json::Value> {
    let connection = connect_any(config, CONNECTION_NAME).await?;
    let channel = connection
        .create_channel()
        .await
        .context("failed to open a channel")?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("failed to enable publisher confirms")?;
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    if let Some(content_type) = &message.content_type {
        properties = properties.with_content_type(content_type.as_str().into());
    }
    if let Some(message_id) = &message.message_id {
        properties = properties.with_message_id(message_id.as_str().into());
    }
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish(
            "".into(),
            message.queue.as_str().into(),
            options,
            &message.body,
            properties,
        )
        .await
        .context("basic.publish failed")?
        .await
        .context("publisher confirm failed")?;
    let _ = connection.close(200, "done".into()).await;
    if !confirm.is_ack() {
        bail!("the broker nacked the message to {}", message.queue);
    }
    if confirm.take_message().is_some() {
        bail!(
            "the message was returned unroutable: does queue {} exist?",
            message.queue
        );
    }
    Ok(serde_json::json!({"tool": "publish", "queue": message.queue, "bytes": message.body.len()}))
}

/// Ready messages and consumers of `queue` (a passive declare: fails if it does not exist).
pub async fn queue_depth(config: &AmqpConfig, queue: &str) -> anyhow::Result<serde_json::Value> {
    let connection = connect_any(config, CONNECTION_NAME).await?;
    let channel = connection
        .create_channel()
        .await
        .context("failed to open a channel")?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("queue {queue} does not exist or cannot be inspected"))?;
    let _ = connection.close(200, "done".into()).await;
    Ok(serde_json::json!({
        "tool": "queue-depth",
        "queue": queue,
        "messages": declared.message_count(),
        "consumers": declared.consumer_count(),
    }))
}

/// Delete every queue in `queues`; report how many messages each held.
pub async fn delete_queues(
    config: &AmqpConfig,
    queues: &[String],
) -> anyhow::Result<serde_json::Value> {
    let connection = connect_any(config, CONNECTION_NAME).await?;
    let channel = connection
        .create_channel()
        .await
        .context("failed to open a channel")?;
    let mut deleted = serde_json::Map::new();
    for queue in queues {
        let messages = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .with_context(|| format!("failed to delete queue {queue}"))?;
        deleted.insert(queue.clone(), messages.into());
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(serde_json::json!({"tool": "delete-queue", "deleted": deleted}))
}
