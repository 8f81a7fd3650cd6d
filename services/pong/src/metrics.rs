//! Metrics of the pong service, registered on the process's own registry.
//!
//! Names: `pingpong_pong_*`; labels are bounded (`reason` is an error kind).

use std::sync::Arc;

use pingpong_common::metrics::{self as common, HttpMetrics};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

/// Metric name prefix.
pub const PREFIX: &str = "pingpong_pong";

/// Buckets of the end-to-end latency (`received_at - created_at`), seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// The pong service's metrics.
#[derive(Clone)]
pub struct PongMetrics {
    /// HTTP requests and latency.
    pub http: Arc<HttpMetrics>,
    /// Deliveries received (valid or not).
    pub consumed: IntCounter,
    /// Messages newly stored.
    pub stored: IntCounter,
    /// Messages evicted because the store was full.
    pub evicted: IntCounter,
    /// Deliveries whose id was already stored.
    pub duplicates: IntCounter,
    /// Deliveries rejected into the dead-letter queue, by reason.
    pub dead_lettered: IntCounterVec,
    /// Messages currently stored.
    pub stored_messages: IntGauge,
    /// `received_at - created_at` of stored messages.
    pub end_to_end_latency: Histogram,
    /// 1 while connected to the broker.
    pub broker_connected: IntGauge,
    /// 1 while the consumer is registered on the queue.
    pub consumer_running: IntGauge,
}

impl PongMetrics {
    /// Registers every pong metric on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| common::counter(registry, PREFIX, name, help);
        let gauge = |name: &str, help: &str| common::gauge(registry, PREFIX, name, help);
        Ok(Self {
            http: HttpMetrics::register(registry, PREFIX)?,
            consumed: counter(
                "messages_consumed_total",
                "Deliveries received from the queue.",
            )?,
            stored: counter("messages_stored_total", "Messages newly stored.")?,
            evicted: counter(
                "messages_evicted_total",
                "Messages evicted (oldest first) because the store was full.",
            )?,
            duplicates: counter(
                "messages_duplicate_total",
                "Deliveries whose id was already stored (acked, not stored again).",
            )?,
            dead_lettered: common::counter_vec(
                registry,
                PREFIX,
                "messages_dead_lettered_total",
                "Invalid deliveries rejected into <queue>.dead, by reason.",
                &["reason"],
            )?,
            stored_messages: gauge("stored_messages", "Messages currently stored.")?,
            end_to_end_latency: common::histogram(
                registry,
                PREFIX,
                "end_to_end_latency_seconds",
                "Time from ping's created_at to pong's received_at.",
                LATENCY_BUCKETS,
            )?,
            broker_connected: gauge(
                "broker_connected",
                "1 while the AMQP connection is up, else 0.",
            )?,
            consumer_running: gauge(
                "consumer_running",
                "1 while the consumer is registered on the queue, else 0.",
            )?,
        })
    }
}
