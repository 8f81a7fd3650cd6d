//! Prometheus helpers: HTTP request metrics, the `/metrics` handler and
//! constructors that register a metric on a caller-owned [`Registry`].
//!
//! There are no globals: each process creates one `Registry`, passes it
//! through its state, and tests scrape that registry directly. Labels are
//! bounded: route templates (`MatchedPath`, else `unmatched`), a fixed set of
//! methods (else `OTHER`) and status codes.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets for HTTP requests, in seconds.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Label value for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Registers and returns a counter named `<prefix>_<name>`.
pub fn counter(
    registry: &Registry,
    prefix: &str,
    name: &str,
    help: &str,
) -> prometheus::Result<IntCounter> {
    let metric = IntCounter::with_opts(Opts::new(format!("{prefix}_{name}"), help))?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Registers and returns a labelled counter named `<prefix>_<name>`.
pub fn counter_vec(
    registry: &Registry,
    prefix: &str,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let metric = IntCounterVec::new(Opts::new(format!("{prefix}_{name}"), help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Registers and returns a gauge named `<prefix>_<name>`.
pub fn gauge(
    registry: &Registry,
    prefix: &str,
    name: &str,
    help: &str,
) -> prometheus::Result<IntGauge> {
    let metric = IntGauge::with_opts(Opts::new(format!("{prefix}_{name}"), help))?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Registers and returns a histogram named `<prefix>_<name>`.
pub fn histogram(
    registry: &Registry,
    prefix: &str,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> prometheus::Result<Histogram> {
    let opts = HistogramOpts::new(format!("{prefix}_{name}"), help).buckets(buckets.to_vec());
    let metric = Histogram::with_opts(opts)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Registers and returns a labelled gauge named `<prefix>_<name>`.
pub fn gauge_vec(
    registry: &Registry,
    prefix: &str,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let metric = IntGaugeVec::new(Opts::new(format!("{prefix}_{name}"), help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Registers and returns a labelled histogram named `<prefix>_<name>`.
pub fn histogram_vec(
    registry: &Registry,
    prefix: &str,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let opts = HistogramOpts::new(format!("{prefix}_{name}"), help).buckets(buckets.to_vec());
    let metric = HistogramVec::new(opts, labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// HTTP request counters and latency histograms of one service.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    /// Registers `<prefix>_http_requests_total{method,route,status}` and
    /// `<prefix>_http_request_duration_seconds{method,route}`.
    pub fn register(registry: &Registry, prefix: &str) -> prometheus::Result<Arc<Self>> {
        let requests = counter_vec(
            registry,
            prefix,
            "http_requests_total",
            "HTTP requests by method, route template and status code.",
            &["method", "route", "status"],
        )?;
        let duration = histogram_vec(
            registry,
            prefix,
            "http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            HTTP_BUCKETS,
            &["method", "route"],
        )?;
        Ok(Arc::new(Self { requests, duration }))
    }

    /// Records one finished request.
    pub fn observe(&self, method: &Method, route: &str, status: StatusCode, seconds: f64) {
        let method = method_label(method);
        self.requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[method, route])
            .observe(seconds);
    }
}

/// Maps a method to a bounded label value.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Axum middleware (use with `middleware::from_fn_with_state`) that records
/// [`HttpMetrics`] for every request, labelled by route template.
pub async fn track_http(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
    metrics.observe(
        &method,
        route,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`: the registry in the Prometheus text format.
pub async fn metrics_handler(State(registry): State<Registry>) -> Response {
    render(&registry)
}

/// Encodes `registry` as a text-format HTTP response.
pub fn render(registry: &Registry) -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::with_capacity(8 * 1024);
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "failed to encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The names in a checked-in metric list (`metrics.txt`): one name per line,
/// blank lines and `#` comments ignored. Tests compare it with [`metric_names`].
pub fn listed_names(list: &str) -> Vec<&str> {
    list.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// Names of all metric families in `registry`, sorted (for drift tests).
pub fn metric_names(registry: &Registry) -> Vec<String> {
    let mut names: Vec<String> = registry
        .gather()
        .iter()
        .map(|family| family.name().to_owned())
        .collect();
    names.sort();
    names
}
