//! The broker's ceiling: persistent publishes to a durable queue with publisher confirms,
//! `in_flight` unconfirmed at most, for a fixed duration.
//!
//! This is the yardstick for ping's throughput in `make bench`: it is what one client with one
//! connection and one confirm channel can push through this broker, with no HTTP in between. The
//! queue gets the services' arguments for `RABBITMQ_QUEUE_TYPE` (classic or quorum, see
//! `pingpong_common::topology`), so each queue type has its own ceiling.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Channel,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions},
};
use pingpong_common::topology::declare_queue;
use pingpong_common::{AmqpConfig, QueueName, QueueType};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Params {
    /// How long to keep publishing.
    pub duration: Duration,
    /// Unconfirmed messages allowed at once.
    pub in_flight: usize,
    /// Payload size in bytes.
    pub size: usize,
    /// Queue to publish into (and its `.dead` queue); declared, deleted afterwards.
    pub queue: QueueName,
}

/// What was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Messages positively confirmed.
    pub confirmed: u64,
    /// Messages nacked or returned (should be zero).
    pub failed: u64,
    /// Wall time from the first publish to the last confirm.
    pub elapsed: Duration,
    /// Unconfirmed messages allowed at once.
    pub in_flight: usize,
    /// Payload size in bytes.
    pub size: usize,
    /// The type of the queue measured.
    pub queue_type: QueueType,
}

impl Report {
    /// Confirmed messages per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.confirmed as f64 / secs
        } else {
            0.0
        }
    }

    /// The report as one JSON line.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tool": "ceiling",
            "confirmed": self.confirmed,
            "failed": self.failed,
            "seconds": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "msg_per_s": self.rate().round(),
            "in_flight": self.in_flight,
            "size": self.size,
            "queue_type": self.queue_type.as_str(),
        })
    }
}

/// Publish one persistent, mandatory message and wait for its confirm; `Ok(true)` on a clean ack.
async fn publish_confirmed(channel: &Channel, queue: &str, payload: &[u8]) -> anyhow::Result<bool> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish("".into(), queue.into(), options, payload, properties)
        .await
        .context("basic.publish failed")?
        .await
        .context("publisher confirm failed")?;
    Ok(confirm.is_ack() && confirm.take_message().is_none())
}

/// Run the measurement; the queue is deleted afterwards even when publishing failed.
pub async fn run(config: &AmqpConfig, params: &Params) -> anyhow::Result<Report> {
    let connection = pingpong_common::amqp::connect_any(config, "pingpong-loadgen").await?;
    declare_queue(&connection, &params.queue, config.queue_type).await?;
    let channel = connection
        .create_channel()
        .await
        .context("failed to open a channel")?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("failed to enable publisher confirms")?;

    let result = publish_for(&channel, params, config.queue_type).await;
    let mut deleted = Ok(());
    for queue in [params.queue.to_string(), params.queue.dead_letter()] {
        let outcome = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .with_context(|| format!("failed to delete queue {queue}"));
        deleted = deleted.and(outcome.map(drop));
    }
    let _ = connection.close(200, "done".into()).await;
    let report = result?;
    deleted?;
    if report.confirmed == 0 {
        bail!("no message was confirmed in {:?}", params.duration);
    }
    Ok(report)
}

/// Keep `in_flight` publishes outstanding until the duration is over, then settle them all.
async fn publish_for(
    channel: &Channel,
    params: &Params,
    queue_type: QueueType,
) -> anyhow::Result<Report> {
    let payload = vec![b'x'; params.size];
    let mut pending = FuturesUnordered::new();
    let mut confirmed = 0_u64;
    let mut failed = 0_u64;
    let start = Instant::now();
    let deadline = start + params.duration;
    loop {
        let open = Instant::now() < deadline;
        while open && pending.len() < params.in_flight {
            pending.push(publish_confirmed(channel, params.queue.as_str(), &payload));
        }
        match pending.next().await {
            Some(Ok(true)) => confirmed += 1,
            Some(Ok(false)) => failed += 1,
            Some(Err(error)) => return Err(error),
            None => break,
        }
    }
    Ok(Report {
        confirmed,
        failed,
        elapsed: start.elapsed(),
        in_flight: params.in_flight,
        size: params.size,
        queue_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_confirmed_per_second() {
        let report = Report {
            confirmed: 5_000,
            failed: 0,
            elapsed: Duration::from_millis(2_500),
            in_flight: 256,
            size: 120,
            queue_type: QueueType::Quorum,
        };
        assert_eq!(report.rate(), 2_000.0);
        assert_eq!(report.to_json()["msg_per_s"], 2_000.0);
        assert_eq!(report.to_json()["failed"], 0);
        assert_eq!(report.to_json()["queue_type"], "quorum");
    }

    #[test]
    fn zero_elapsed_is_no_division_by_zero() {
        let report = Report {
            confirmed: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            in_flight: 1,
            size: 1,
            queue_type: QueueType::Classic,
        };
        assert_eq!(report.rate(), 0.0);
    }
}
