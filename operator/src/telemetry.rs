//! Tracing subscriber set-up for the operator process: logs and, when an OTLP endpoint is set
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`), OpenTelemetry traces of every reconcile with the Kubernetes
//! API calls it makes as child spans.
//!
//! `RUST_LOG` sets the log filter (default `info,kube=warn`); [`LogFormat`] picks text or JSON
//! lines. The trace layer has its own filter: the spans of `pingpong_operator::reconcile` (the
//! `reconcile` span) and of `kube_client` (one per API request), whatever `RUST_LOG` says. This
//! module only installs the subscriber: it never logs configuration or secrets.

use crate::config::LogFormat;
use pingpong_otel::subscriber::{self, InstallError, LogLines};
use tracing_subscriber::EnvFilter;

/// Filter used when `RUST_LOG` is unset or empty.
pub const DEFAULT_FILTER: &str = "info,kube=warn,kube_runtime=warn";

/// Span targets exported as traces: each reconcile and the API requests inside it.
pub const TRACE_TARGETS: &[&str] = &["pingpong_operator::reconcile", "kube_client"];

/// Installs the global tracing subscriber (and the trace exporter when `traces` has an
/// endpoint; keep the returned guard until the process ends). Returns an error if a subscriber is
/// already installed or the exporter cannot start.
pub fn init(
    format: LogFormat,
    traces: &pingpong_otel::TraceConfig,
    spans: &pingpong_otel::SpanCounters,
) -> Result<Option<pingpong_otel::TraceGuard>, InstallError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let lines = match format {
        LogFormat::Text => LogLines::Text {
            ansi: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        },
        LogFormat::Json => LogLines::Json {
            current_span: false,
        },
    };
    subscriber::install(filter, lines, traces, spans, TRACE_TARGETS)
}
