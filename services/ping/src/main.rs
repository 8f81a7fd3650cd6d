//! The `ping` binary: parse config, start logging, run until SIGTERM/SIGINT.

use std::process::ExitCode;

use pingpong_common::http::shutdown_signal;
use pingpong_ping::{Config, run};

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ping: invalid configuration, fix these variables:");
            for problem in &error.problems {
                eprintln!("  - {problem}");
            }
            return ExitCode::from(2);
        }
    };
    config.runtime.block_on("ping", serve(config))
}

/// Runs the service on the runtime `main` built (`RUNTIME_FLAVOR`).
async fn serve(config: Config) -> ExitCode {
    let _traces = match pingpong_common::telemetry::init(&config.log, &config.traces) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("ping: {error}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(config = %config.summary(), version = env!("CARGO_PKG_VERSION"), "ping starting");
    match run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(kind = error.kind(), %error, "ping failed");
            ExitCode::FAILURE
        }
    }
}
