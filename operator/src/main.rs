//! `pingpong-operator`: run the operator (default), print the CRD, render a stack's objects, or
//! run the autoscaler against one queue, or check a RabbitMQ version change.
use anyhow::Context as _;
use clap::Parser as _;
use pingpong_operator::cli::{Cli, Command, read_input};
use pingpong_operator::{
    autoscale, broker_check, config, controller, crdgen, error, images, render, telemetry,
};
use std::process::ExitCode;

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let config = config::Config::from_env()?;
            let _traces = telemetry::init(config.log_format, &config.traces, &config.spans)?;
            controller::run(config).await?;
        }
        Command::Crd => print!("{}", crdgen::crd_yaml()?),
        Command::Render { file, namespace } => {
            let input = read_input(&file).with_context(|| format!("cannot read {file}"))?;
            let defaults = images::Images::from_env()?;
            print!(
                "{}",
                render::render(&input, namespace.as_deref(), &defaults)?
            );
        }
        Command::Autoscale(args) => {
            let settings = autoscale::local::settings(&args)?;
            let credentials = autoscale::local::credentials(|name| std::env::var(name).ok())?;
            autoscale::local::run(settings, credentials, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        }
        Command::RabbitmqUpgradeCheck {
            management_url,
            from,
            to,
        } => {
            let credentials = autoscale::local::credentials(|name| std::env::var(name).ok())?;
            let report = broker_check::upgrade::check(&management_url, &from, &to, &credentials);
            let report = report.await?;
            println!("{}", serde_json::to_string(&report)?);
            anyhow::ensure!(report.ok, "the change must wait: {}", report.message);
        }
    }
    Ok(())
}

/// kube's TLS runs on rustls with ring. Built together with ping and pong (`cargo build
/// --workspace`, `make test`, images/build.sh), cargo's feature unification also enables
/// rustls's aws-lc-rs provider (lapin's TLS connector asks for it); with both, rustls cannot
/// choose a process default and the first Kubernetes client would panic. Chosen here, at
/// start-up, before any client exists.
fn install_crypto_provider() {
    // An error means a provider is installed already: it stays the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::main]
async fn main() -> ExitCode {
    install_crypto_provider();
    match run(Cli::parse().command.unwrap_or(Command::Run)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", error::chain(failure.as_ref()));
            ExitCode::FAILURE
        }
    }
}
