//! Tracing subscriber set-up for the operator process: logs and, when an OTLP endpoint is set
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`), OpenTelemetry traces of every reconcile with the Kubernetes
//! API calls it makes as child spans.
//!
//! `RUST_LOG` sets the log filter (default `info,kube=warn`); [`LogFormat`] picks text or JSON
//! lines. The trace layer has its own filter: the spans of `pingpong_operator::reconcile` (the
//! `reconcile` span) and of `kube_client` (one per API request), whatever `RUST_LOG` says. This
//! module only installs the subscriber: it never logs configuration or secrets.

use crate::config::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
) -> Result<Option<pingpong_otel::TraceGuard>, Box<dyn std::error::Error + Send + Sync>> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let fmt = tracing_subscriber::fmt::layer();
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let (otel, guard) = match pingpong_otel::layer(traces, spans, TRACE_TARGETS)? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()?;
    Ok(guard)
}
