//! Logging and trace set-up: a `tracing` subscriber writing text or JSON to
//! stdout and, when an OTLP endpoint is configured, exporting the trace
//! spans ([`pingpong_otel::TARGET`]) as OpenTelemetry spans.
//!
//! Call [`init`] once at start-up, after the configuration is parsed, inside
//! the Tokio runtime, and keep the returned guard until the process ends (it
//! flushes the queued spans on drop). This module never logs configuration
//! or environment values itself. Text output is coloured only when stdout is
//! a terminal, so log files stay readable.

use std::io::IsTerminal;

use pingpong_otel::subscriber::{self, InstallError, LogLines};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::trace::{TraceGuard, Traces};

/// Why the subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter directives did not parse.
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// The subscriber or the trace exporter could not be installed.
    #[error(transparent)]
    Install(#[from] InstallError),
}

impl TelemetryError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Filter(_) => "InvalidFilter",
            Self::Install(error) => error.kind(),
        }
    }
}

/// Installs the global subscriber described by `config` and, when traces
/// are on, the trace exporter; the guard is `None` when traces are off.
pub fn init(config: &LogConfig, traces: &Traces) -> Result<Option<TraceGuard>, TelemetryError> {
    let mut filter = EnvFilter::builder().parse(&config.filter)?;
    if !config.filter.contains("lapin::returned_messages") {
        filter = filter.add_directive(LogConfig::QUIET_RETURNS.parse()?);
    }
    let lines = match config.format {
        LogFormat::Text => LogLines::Text {
            ansi: std::io::stdout().is_terminal(),
        },
        LogFormat::Json => LogLines::Json { current_span: true },
    };
    Ok(subscriber::install(
        filter,
        lines,
        &traces.config,
        &traces.counters,
        &[],
    )?)
}
