//! `fill`: publish N valid ping messages into the services' queue with pipelined confirms.
//!
//! This is how `scripts/bench-store.sh` builds a backlog for pong to drain. It declares the
//! services' topology first (same arguments as ping for `RABBITMQ_QUEUE_TYPE`), exactly as ping
//! would at connect, so it never conflicts with them.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use pingpong_common::amqp::{ChannelRole, open_session_any};
use pingpong_common::{AmqpConfig, Message};

/// Unconfirmed publishes allowed at once.
pub const IN_FLIGHT: usize = 256;

/// Publish `count` messages `fill <i>` into `RABBITMQ_QUEUE`; report count and seconds.
pub async fn run(config: &AmqpConfig, count: usize) -> anyhow::Result<serde_json::Value> {
    let session = open_session_any(config, ChannelRole::Publisher, "pingpong-loadgen").await?;
    let queue = config.queue.as_str();
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(IN_FLIGHT);
    for i in 0..count {
        let body = Message::new(format!("fill {i}")).to_json()?;
        let confirm = session
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await
            .context("basic.publish failed")?;
        pending.push_back(confirm);
        if pending.len() >= IN_FLIGHT
            && let Some(oldest) = pending.pop_front()
        {
            settle(oldest).await?;
        }
    }
    for confirm in pending {
        settle(confirm).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = session.connection.close(200, "done".into()).await;
    Ok(serde_json::json!({
        "tool": "fill",
        "queue": queue,
        "published": count,
        "seconds": (seconds * 1000.0).round() / 1000.0,
    }))
}

async fn settle(confirm: lapin::PublisherConfirm) -> anyhow::Result<()> {
    let confirmation = confirm.await.context("publisher confirm failed")?;
    ensure!(
        confirmation.is_ack() && confirmation.take_message().is_none(),
        "the broker nacked or returned a message"
    );
    Ok(())
}
