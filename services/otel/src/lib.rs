//! OpenTelemetry traces for ping, pong and the operator.
//!
//! - [`config`]: the standard `OTEL_*` variables, parsed through a lookup
//!   function; traces are off unless an OTLP endpoint is set.
//! - [`export`]: the bounded batch processor and its drop counters.
//! - [`propagate`]: W3C `traceparent`/`tracestate` in and out of carriers.
//! - [`subscriber`]: the global subscriber (logs plus that layer) every process installs.
//! - [`layer`]: the `tracing` layer that turns the spans of [`TARGET`] (and
//!   of extra targets a process names) into OpenTelemetry spans.
//!
//! Spans meant for traces are created with `target: pingpong_otel::TARGET`
//! at debug level: with traces off and the default log filter they are
//! disabled at the call site and cost nothing. The log layer never sees them
//! unless `RUST_LOG` names the target.

pub mod config;
pub mod export;
pub mod propagate;
pub mod subscriber;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

pub use config::{Sampler, TraceConfig};
pub use export::SpanCounters;
pub use opentelemetry;
pub use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of every span meant for traces.
pub const TARGET: &str = "pingpong::trace";

/// The exporting layer, boxed so callers need not name its type.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// Why the trace pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The OTLP exporter could not be built.
    #[error("failed to build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The export thread could not start.
    #[error("failed to start the span export thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl TraceError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Exporter(_) => "TraceExporter",
            Self::Thread(_) => "TraceThread",
        }
    }
}

/// Keeps the tracer provider alive; dropping it flushes the queued spans
/// (bounded by the export timeout) and stops the export thread.
pub struct TraceGuard {
    provider: SdkTracerProvider,
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

fn sdk_sampler(sampler: Sampler) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler as S;
    match sampler {
        Sampler::AlwaysOn => S::AlwaysOn,
        Sampler::AlwaysOff => S::AlwaysOff,
        Sampler::TraceIdRatio(ratio) => S::TraceIdRatioBased(ratio),
        Sampler::ParentBasedAlwaysOn => S::ParentBased(Box::new(S::AlwaysOn)),
        Sampler::ParentBasedAlwaysOff => S::ParentBased(Box::new(S::AlwaysOff)),
        Sampler::ParentBasedTraceIdRatio(ratio) => {
            S::ParentBased(Box::new(S::TraceIdRatioBased(ratio)))
        }
    }
}

/// The `tracing` layer exporting the spans of [`TARGET`] and of the
/// `extra_targets` prefixes (e.g. `kube_client` for the operator's API
/// calls), or `None` when traces are off. Must be called inside a Tokio
/// runtime; keep the guard until the process ends.
pub fn layer<S>(
    config: &TraceConfig,
    counters: &SpanCounters,
    extra_targets: &'static [&'static str],
) -> Result<Option<(BoxedLayer<S>, TraceGuard)>, TraceError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let Some(export) = &config.export else {
        return Ok(None);
    };
    // Not `Resource::builder()`: its environment detector would read `OTEL_*` a second time,
    // past the checked configuration (and past the lookup tests use).
    let resource = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(key, value)| opentelemetry::KeyValue::new(key.clone(), value.clone())),
        )
        .with_service_name(config.service_name.clone())
        .build();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(HyperClient::with_default_connector(export.timeout, None))
        .with_endpoint(export.traces_url.clone())
        .with_timeout(export.timeout)
        .build()?;
    exporter.set_resource(&resource);
    let processor = export::BoundedBatchProcessor::start(exporter, export, counters.clone())?;
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sdk_sampler(config.sampler))
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer("pingpong");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_level(false)
        .with_threads(false)
        .with_location(false)
        .with_filter(filter_fn(move |metadata| {
            metadata.is_span()
                && (metadata.target() == TARGET
                    || extra_targets
                        .iter()
                        .any(|prefix| metadata.target().starts_with(prefix)))
        }));
    Ok(Some((Box::new(layer), TraceGuard { provider })))
}
