//! `pingpong-loadgen`: small AMQP tools for the benchmark and the system tests.
//!
//! - `ceiling`: the broker's own ceiling for persistent publishes with pipelined publisher
//!   confirms, on a queue of `RABBITMQ_QUEUE_TYPE` (what `make bench` compares ping against);
//! - `fill`: publish N valid ping messages into `RABBITMQ_QUEUE` (a backlog for pong to drain);
//! - `publish`: publish one raw message (any bytes) to an existing queue and wait for its confirm
//!   (the system tests use it to feed malformed messages to pong);
//! - `queue-depth`: ready messages and consumers of a queue, as JSON;
//! - `delete-queue`: delete queues (cleanup after tests and benchmarks).
//!
//! Broker settings come from the same `RABBITMQ_*` variables as the services, parsed by the same
//! code (`pingpong_common::AmqpConfig`, including `RABBITMQ_ADDRESSES`). Every command prints one
//! JSON object on stdout; errors go to stderr with a non-zero exit status.

mod ceiling;
mod fill;
mod tools;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use pingpong_common::{AmqpConfig, Env, Partitions, QueueName};

/// Command line of `pingpong-loadgen`.
#[derive(Debug, Parser)]
#[command(name = "pingpong-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The tools.
#[derive(Debug, Subcommand)]
enum Command {
    /// Publish persistent messages with pipelined confirms for a fixed time; print msg/s.
    Ceiling {
        /// How long to publish, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Unconfirmed messages allowed in flight at once.
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
        /// Payload size in bytes (about the size of ping's wire message by default).
        #[arg(long, default_value_t = 120)]
        size: usize,
        /// Queue to publish into (declared durable, deleted afterwards). Default: unique name.
        #[arg(long)]
        queue: Option<String>,
        /// Spread the publishes round-robin over this many partitions of the queue (1 to 32:
        /// `<queue>`, `<queue>.1`, ...), as ping spreads its messages.
        #[arg(long, default_value_t = 1)]
        partitions: u8,
    },
    /// Publish COUNT valid ping messages into RABBITMQ_QUEUE (declared as the services do).
    Fill {
        /// How many messages.
        #[arg(long)]
        count: usize,
    },
    /// Publish one message (body from --body, or stdin) to an existing queue and await its confirm.
    Publish {
        /// Target queue (routing key on the default exchange). It must already exist.
        #[arg(long)]
        queue: String,
        /// Message body; read from stdin when absent (any bytes).
        #[arg(long)]
        body: Option<String>,
        /// The message's content_type property.
        #[arg(long)]
        content_type: Option<String>,
        /// The message's message_id property.
        #[arg(long)]
        message_id: Option<String>,
    },
    /// Print the ready message count and consumer count of an existing queue.
    QueueDepth {
        /// Queue name.
        #[arg(long)]
        queue: String,
    },
    /// Delete queues (a missing queue is not an error).
    DeleteQueue {
        /// Queue names.
        #[arg(required = true)]
        queues: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pingpong-loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run one tool and return its JSON report.
async fn run(command: Command) -> anyhow::Result<serde_json::Value> {
    let config = broker_config(&|key| std::env::var(key).ok())?;
    let output = match command {
        Command::Ceiling {
            seconds,
            in_flight,
            size,
            queue,
            partitions,
        } => {
            let partitions = Partitions::new(partitions)
                .ok_or_else(|| anyhow::anyhow!("--partitions {partitions}: expected 1 to 32"))?;
            let queue =
                queue.unwrap_or_else(|| format!("pingpong.loadgen.ceiling.{}", std::process::id()));
            let queue = QueueName::new(&queue)
                .map_err(|expected| anyhow::anyhow!("--queue {queue:?}: expected {expected}"))?;
            let params = ceiling::Params {
                duration: Duration::from_secs(seconds),
                in_flight: in_flight.max(1),
                size,
                queue,
                partitions,
            };
            ceiling::run(&config, &params).await?.to_json()
        }
        Command::Fill { count } => fill::run(&config, count).await?,
        Command::Publish {
            queue,
            body,
            content_type,
            message_id,
        } => {
            let body = match body {
                Some(body) => body.into_bytes(),
                None => tools::read_stdin()?,
            };
            let message = tools::RawMessage {
                queue,
                body,
                content_type,
                message_id,
            };
            tools::publish(&config, &message).await?
        }
        Command::QueueDepth { queue } => tools::queue_depth(&config, &queue).await?,
        Command::DeleteQueue { queues } => tools::delete_queues(&config, &queues).await?,
    };
    Ok(output)
}

/// The broker settings, parsed exactly as ping and pong parse them (every bad variable named).
fn broker_config(lookup: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<AmqpConfig> {
    let mut env = Env::new(lookup);
    let config = AmqpConfig::from_env(&mut env);
    Ok(env.finish(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_settings_are_the_services_settings() {
        let config = broker_config(&|key| match key {
            "RABBITMQ_ADDRESSES" => Some("a:5673,b:5674".to_owned()),
            "RABBITMQ_QUEUE_TYPE" => Some("quorum".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.addresses.to_string(), "a:5673,b:5674");
        assert_eq!(config.queue_type, pingpong_common::QueueType::Quorum);
    }

    #[test]
    fn bad_settings_name_the_variable_and_hide_the_password() {
        let error = broker_config(&|key| match key {
            "RABBITMQ_PORT" => Some("nope".to_owned()),
            "RABBITMQ_DEFAULT_PASS" => Some("s3cret-value".to_owned()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("RABBITMQ_PORT"), "{error}");
        assert!(!error.contains("s3cret-value"), "{error}");
    }
}
