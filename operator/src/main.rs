//! `pingpong-operator`: run the operator (default), print the CRD, or render a stack's objects.
use anyhow::Context as _;
use clap::Parser as _;
use pingpong_operator::cli::{Cli, Command, read_input};
use pingpong_operator::{config, controller, crdgen, reconcile, render, telemetry};

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
            let input = read_input(&file).with_context(|| format!("cannot read {file}"))?;
            let defaults = reconcile::image_defaults(&config::Images::from_env()?);
            print!(
                "{}",
                render::render(&input, namespace.as_deref(), &defaults)?
            );
        }
    }
    Ok(())
}
