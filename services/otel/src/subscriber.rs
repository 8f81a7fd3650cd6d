//! The global `tracing` subscriber every process of the project installs: one log layer (text or
//! JSON lines on stdout, filtered by the process's own filter) and, when traces are on, the
//! exporting [`layer`](crate::layer) beside it with its own target filter.
//!
//! ping, pong and the operator differ only in the filter they pass and in how their log lines
//! look ([`LogLines`]); this module never logs configuration or secrets itself.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::{SpanCounters, TraceConfig, TraceError, TraceGuard};

/// How the log layer writes its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLines {
    /// Human-readable text; coloured only when `ansi` (stdout is a terminal).
    Text {
        /// Whether to colour the output.
        ansi: bool,
    },
    /// One JSON object per line, the event's fields flattened into it.
    Json {
        /// Whether each line carries the fields of the span it was logged in.
        current_span: bool,
    },
}

/// Why the subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A global subscriber was already installed.
    #[error("failed to install the tracing subscriber: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
    /// The trace exporter could not start.
    #[error(transparent)]
    Traces(#[from] TraceError),
}

impl InstallError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Install(_) => "AlreadyInstalled",
            Self::Traces(error) => error.kind(),
        }
    }
}

/// Installs the global subscriber: logs through `filter` as `lines`, and the spans of
/// [`TARGET`](crate::TARGET) and the `extra_targets` prefixes exported when `traces` has an
/// endpoint. Must be called inside a Tokio runtime; keep the returned guard (`None` when traces
/// are off) until the process ends.
pub fn install(
    filter: EnvFilter,
    lines: LogLines,
    traces: &TraceConfig,
    counters: &SpanCounters,
    extra_targets: &'static [&'static str],
) -> Result<Option<TraceGuard>, InstallError> {
    let fmt = tracing_subscriber::fmt::layer().with_target(true);
    let fmt = match lines {
        LogLines::Text { ansi } => fmt.with_ansi(ansi).boxed(),
        LogLines::Json { current_span } => fmt
            .json()
            .flatten_event(true)
            .with_current_span(current_span)
            .with_span_list(false)
            .boxed(),
    };
    let (otel, guard) = match crate::layer(traces, counters, extra_targets)? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()?;
    Ok(guard)
}
