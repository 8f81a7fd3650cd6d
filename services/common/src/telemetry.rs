//! Logging set-up: a `tracing` subscriber writing text or JSON to stdout.
//!
//! Call [`init`] once at start-up, after the configuration is parsed. This
//! module never logs configuration or environment values itself. Text output
//! is coloured only when stdout is a terminal, so log files stay readable.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Why the subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter directives did not parse.
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber was already installed.
    #[error("failed to install the tracing subscriber: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
}

impl TelemetryError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Filter(_) => "InvalidFilter",
            Self::Install(_) => "AlreadyInstalled",
        }
    }
}

/// Installs the global subscriber described by `config`.
pub fn init(config: &LogConfig) -> Result<(), TelemetryError> {
    let mut filter = EnvFilter::builder().parse(&config.filter)?;
    if !config.filter.contains("lapin::returned_messages") {
        filter = filter.add_directive(LogConfig::QUIET_RETURNS.parse()?);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    match config.format {
        LogFormat::Text => builder.finish().try_init()?,
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .try_init()?,
    }
    Ok(())
}
