//! The command line of the `pingpong-operator` binary (parsed in `main.rs`).
//!
//! Only argument definitions and input reading live here; what each subcommand does is in
//! [`crate::controller`], [`crate::crdgen`] and [`crate::render`].

use clap::{Parser, Subcommand};
use std::io::Read as _;

/// `pingpong-operator [run|crd|render|autoscale|rabbitmq-upgrade-check]`.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Reconciles PingPongStack objects into running ping/pong stacks"
)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default); configured by environment variables.
    Run,
    /// Print the PingPongStack CustomResourceDefinition as YAML.
    Crd,
    /// Print, as multi-document YAML, the objects the controller would apply for a stack.
    Render {
        /// The PingPongStack YAML file, or `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Namespace of the rendered objects (default: the stack's, else `default`).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Decide pong's replicas for one queue outside Kubernetes: read it from a RabbitMQ
    /// management API every interval and print each decision as a JSON line (credentials from
    /// BROKER_USERNAME and BROKER_PASSWORD).
    Autoscale(AutoscaleArgs),
    /// Check, before moving a running broker to another image, what RabbitMQ needs for that
    /// version step: a supported step (one series at a time), every stable feature flag enabled
    /// and no deprecated feature in use, read from the broker's management API (credentials from
    /// BROKER_USERNAME and BROKER_PASSWORD). Prints one JSON object; exits 1 when the change
    /// must wait.
    RabbitmqUpgradeCheck {
        /// Management API base URL of a running node, e.g. http://127.0.0.1:15672.
        #[arg(long)]
        management_url: String,
        /// The image the broker runs.
        #[arg(long)]
        from: String,
        /// The image to move to.
        #[arg(long)]
        to: String,
    },
}

/// Arguments of `autoscale` (the meanings of `spec.pong.autoscaling`).
#[derive(Debug, clap::Args)]
pub struct AutoscaleArgs {
    /// Management API base URL, e.g. http://127.0.0.1:15672.
    #[arg(long)]
    pub management_url: String,
    /// The queue (in vhost /).
    #[arg(long)]
    pub queue: String,
    /// Partitions of the queue (1 to 32): the backlog of `<queue>`, `<queue>.1`, ... is summed.
    #[arg(long, default_value_t = 1)]
    pub partitions: u8,
    /// Fewest replicas (0 scales to zero).
    #[arg(long, default_value_t = 1)]
    pub min_replicas: i32,
    /// Most replicas.
    #[arg(long)]
    pub max_replicas: i32,
    /// Ready + unacknowledged messages per replica.
    #[arg(long, default_value_t = 1000)]
    pub target_backlog_per_replica: i64,
    /// Seconds of lower demand before each scale-in step.
    #[arg(long, default_value_t = 300)]
    pub scale_down_delay_seconds: i32,
    /// Bound on the time to drain the backlog at the observed per-replica rate.
    #[arg(long, default_value_t = 300)]
    pub max_drain_seconds: i32,
    /// Milliseconds between decisions.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Replicas running at start.
    #[arg(long, default_value_t = 0)]
    pub initial_replicas: i32,
}

/// Reads `file`, or stdin when it is `-`.
pub fn read_input(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input)?;
        Ok(input)
    } else {
        std::fs::read_to_string(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_is_the_default_and_render_takes_a_file_and_namespace() {
        assert!(
            Cli::try_parse_from(["pingpong-operator"])
                .unwrap()
                .command
                .is_none()
        );
        let cli =
            Cli::try_parse_from(["pingpong-operator", "render", "-f", "-", "--namespace", "x"])
                .unwrap();
        match cli.command {
            Some(Command::Render { file, namespace }) => {
                assert_eq!(file, "-");
                assert_eq!(namespace.as_deref(), Some("x"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["pingpong-operator", "render"]).is_err());
    }

    #[test]
    fn rabbitmq_upgrade_check_takes_a_url_and_both_images() {
        let cli = Cli::try_parse_from([
            "pingpong-operator",
            "rabbitmq-upgrade-check",
            "--management-url",
            "http://127.0.0.1:15672",
            "--from",
            "rabbitmq:4.1",
            "--to",
            "rabbitmq:4.2",
        ])
        .unwrap();
        match cli.command {
            Some(Command::RabbitmqUpgradeCheck { from, to, .. }) => {
                assert_eq!(
                    (from.as_str(), to.as_str()),
                    ("rabbitmq:4.1", "rabbitmq:4.2")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["pingpong-operator", "rabbitmq-upgrade-check"]).is_err());
    }
}
