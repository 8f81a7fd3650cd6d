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

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};
use crate::trace::{TraceGuard, Traces};

/// Why the subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter directives did not parse.
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber was already installed.
    #[error("failed to install the tracing subscriber: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
    /// The trace exporter could not start.
    #[error(transparent)]
    Traces(#[from] pingpong_otel::TraceError),
}

impl TelemetryError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Filter(_) => "InvalidFilter",
            Self::Install(_) => "AlreadyInstalled",
            Self::Traces(error) => error.kind(),
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
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let fmt = match config.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let (otel, guard) = match pingpong_otel::layer(&traces.config, &traces.counters, &[])? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()?;
    Ok(guard)
}
