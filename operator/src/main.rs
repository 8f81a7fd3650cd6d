//! `pingpong-operator`: run the operator (default), print the CRD, or render a stack's objects.
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pingpong_operator::{config, controller, crdgen, reconcile, render, telemetry};
use std::io::Read as _;

#[derive(Parser)]
#[command(
    version,
    about = "Reconciles PingPongStack objects into running ping/pong stacks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command.unwrap_or(Command::Run) {
        Command::Run => {
            let config = config::Config::from_env()?;
            telemetry::init(config.log_format).map_err(|e| anyhow::anyhow!(e))?;
            controller::run(config).await?;
        }
        Command::Crd => print!("{}", crdgen::crd_yaml()?),
        Command::Render { file, namespace } => {
            let mut input = String::new();
            if file == "-" {
                std::io::stdin().read_to_string(&mut input)?;
            } else {
                input = std::fs::read_to_string(&file).with_context(|| format!("read {file}"))?;
            }
            let defaults = reconcile::image_defaults(&config::Images::from_env()?);
            print!(
                "{}",
                render::render(&input, namespace.as_deref(), &defaults)?
            );
        }
    }
    Ok(())
}
