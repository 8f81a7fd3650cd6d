//! `fill_queue COUNT`: publishes COUNT valid ping messages (persistent, with
//! pipelined publisher confirms, 256 in flight) into `RABBITMQ_QUEUE`, so that
//! `scripts/bench-store.sh` can measure how fast pong drains a backlog.
//!
//! Broker settings come from the same `RABBITMQ_*` variables as the services.
//! Prints one JSON line: `{"published": N, "seconds": S}`.

use std::collections::VecDeque;
use std::time::Instant;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use pingpong_common::amqp::{ChannelRole, open_session};
use pingpong_common::{AmqpConfig, Env, Message};

const IN_FLIGHT: usize = 256;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: fill_queue COUNT"))?
        .parse()?;
    let lookup = |key: &str| std::env::var(key).ok();
    let mut env = Env::new(&lookup);
    let config = AmqpConfig::from_env(&mut env);
    env.finish(())?;
    let session = open_session(
        &config,
        config.addresses.get(0),
        ChannelRole::Publisher,
        "pong-fill-queue",
    )
    .await?;
    let queue = config.queue.as_str();
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(IN_FLIGHT);
    for i in 0..count {
        let body = Message::new(format!("bench message {i}")).to_json()?;
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
            .await?;
        pending.push_back(confirm);
        if pending.len() >= IN_FLIGHT
            && let Some(oldest) = pending.pop_front()
        {
            anyhow::ensure!(oldest.await?.is_ack(), "publish not confirmed");
        }
    }
    for confirm in pending {
        anyhow::ensure!(confirm.await?.is_ack(), "publish not confirmed");
    }
    println!(
        r#"{{"published": {count}, "seconds": {:.3}}}"#,
        started.elapsed().as_secs_f64()
    );
    let _ = session.connection.close(200, "done".into()).await;
    Ok(())
}
