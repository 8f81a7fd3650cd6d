//! The observability part of the `PingPongStack` API: `spec.observability`. Types only, like the
//! rest of [`crate::crd`].
//!
//! `observability.tracing` turns on OpenTelemetry traces in ping and pong: the operator renders
//! it into the standard `OTEL_*` variables of both containers (see
//! `reconcile/builders/app.rs`), so the services export one trace per request, from ping's HTTP
//! span through the broker to pong's store.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default `spec.observability.tracing.samplingRatio`: one new trace in ten.
pub const DEFAULT_SAMPLING_RATIO: f64 = 0.1;

/// Observability settings beyond metrics (see `monitoring` for Prometheus).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservabilitySpec {
    /// OpenTelemetry traces of ping and pong, exported over OTLP/HTTP. Unset: traces are off
    /// and cost nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
}

impl ObservabilitySpec {
    /// Whether nothing is set (then the field is left out when serialized).
    pub fn is_empty(&self) -> bool {
        self.tracing.is_none()
    }
}

/// Where ping and pong send their spans and which share of new traces they keep.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// Base URL of an OTLP/HTTP receiver (a Jaeger v2 or an OpenTelemetry Collector), for example
    /// `http://jaeger-collector.observability:4318`; spans go to `<endpoint>/v1/traces`. Becomes
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` of ping and pong. Only `http://` (no TLS: export to a
    /// collector inside the cluster).
    #[schemars(length(min = 8, max = 512), pattern(r"^http://[^/?#\s@]+(/[^\s]*)?$"))]
    pub endpoint: String,
    /// Share of new traces recorded, from 0 to 1 (default 0.1). A request that arrives with a
    /// W3C `traceparent` follows its caller's decision instead (`parentbased_traceidratio`).
    /// Becomes `OTEL_TRACES_SAMPLER_ARG`.
    #[serde(default = "default_sampling_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: f64,
}

fn default_sampling_ratio() -> f64 {
    DEFAULT_SAMPLING_RATIO
}
