//! Metrics of the ping service, registered on the process's own registry.
//!
//! Names: `pingpong_ping_*`. Labels are bounded: `reason` is a
//! [`crate::publisher::PublishError::kind`], `outcome` is one of
//! `ack|nack|returned|timeout|error`.

use std::sync::Arc;

use pingpong_common::amqp::LinkGauges;
use pingpong_common::metrics::{self as common, HttpMetrics};
use pingpong_common::trace::SpanCounters;
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

/// Metric name prefix.
pub const PREFIX: &str = "pingpong_ping";

/// Buckets of the publisher-confirm latency, in seconds.
pub const CONFIRM_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The ping service's metrics.
#[derive(Clone)]
pub struct PingMetrics {
    /// HTTP requests and latency.
    pub http: Arc<HttpMetrics>,
    /// Messages confirmed by the broker.
    pub published: IntCounter,
    /// `POST /ping` requests answered 503 at once because
    /// `PING_MAX_IN_FLIGHT` requests were in progress.
    pub shed: IntCounter,
    /// Failed publishes by reason.
    pub failed: IntCounterVec,
    /// Publish-to-confirm latency by outcome.
    pub confirm_duration: HistogramVec,
    /// 1 while connected to the broker.
    pub broker_connected: IntGauge,
    /// Position in `RABBITMQ_ADDRESSES` of the node in use, -1 when none.
    pub broker_address: IntGauge,
}

impl PingMetrics {
    /// Registers every ping metric on `registry`, with span counters of
    /// their own (traces off).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        Self::register_with_spans(registry, SpanCounters::default())
    }

    /// Registers every ping metric on `registry`; `spans` are the counters
    /// the trace exporter feeds (`{PREFIX}_trace_spans_*`).
    pub fn register_with_spans(
        registry: &Registry,
        spans: SpanCounters,
    ) -> prometheus::Result<Self> {
        spans.register(registry, PREFIX)?;
        let http = HttpMetrics::register(registry, PREFIX)?;
        let published = common::counter(
            registry,
            PREFIX,
            "messages_published_total",
            "Messages published and confirmed (ack, not returned) by the broker.",
        )?;
        let shed = common::counter(
            registry,
            PREFIX,
            "requests_shed_total",
            "POST /ping requests answered 503 at once because PING_MAX_IN_FLIGHT requests were in progress.",
        )?;
        let failed = common::counter_vec(
            registry,
            PREFIX,
            "publish_failures_total",
            "Publishes that did not get a positive confirm, by reason.",
            &["reason"],
        )?;
        let confirm_duration = common::histogram_vec(
            registry,
            PREFIX,
            "publish_confirm_duration_seconds",
            "Time from publish to the broker's confirm, by outcome.",
            CONFIRM_BUCKETS,
            &["outcome"],
        )?;
        let link = LinkGauges::register(registry, PREFIX)?;
        Ok(Self {
            http,
            published,
            shed,
            failed,
            confirm_duration,
            broker_connected: link.connected,
            broker_address: link.address,
        })
    }

    /// The gauges the connection manager keeps up to date.
    pub fn link_gauges(&self) -> LinkGauges {
        LinkGauges {
            connected: self.broker_connected.clone(),
            address: self.broker_address.clone(),
        }
    }
}
