//! Metrics of the pong service, registered on the process's own registry.
//!
//! Names: `pingpong_pong_*`; labels are bounded (`reason` is an error kind,
//! `query` one of the store's fixed operations, `store` memory|postgres).

use std::sync::Arc;

use pingpong_common::amqp::LinkGauges;
use pingpong_common::metrics::{self as common, HttpMetrics};
use pingpong_common::trace::SpanCounters;
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

/// Metric name prefix.
pub const PREFIX: &str = "pingpong_pong";

/// Buckets of the end-to-end latency (`received_at - created_at`), seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Buckets of database statement durations, seconds.
pub const DB_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets of the deliveries stored and acknowledged together (up to the consumer's batch bound).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The pong service's metrics.
#[derive(Clone)]
pub struct PongMetrics {
    /// HTTP requests and latency.
    pub http: Arc<HttpMetrics>,
    /// Deliveries received (valid or not).
    pub consumed: IntCounter,
    /// Deliveries the broker flagged as redelivered.
    pub redelivered: IntCounter,
    /// Messages newly stored.
    pub stored: IntCounter,
    /// Messages evicted because the store was full.
    pub evicted: IntCounter,
    /// Bytes freed by those evictions.
    pub evicted_bytes: IntCounter,
    /// Deliveries whose id was already stored.
    pub duplicates: IntCounter,
    /// Deliveries rejected into the dead-letter queue, by reason.
    pub dead_lettered: IntCounterVec,
    /// Messages currently stored.
    pub stored_messages: IntGauge,
    /// Bytes currently stored (stores bounded by `PONG_MAX_BYTES`).
    pub stored_bytes: IntGauge,
    /// `received_at - created_at` of stored messages.
    pub end_to_end_latency: Histogram,
    /// Deliveries settled together (one store call, one acknowledgement).
    pub batch_size: Histogram,
    /// 1 while connected to the broker.
    pub broker_connected: IntGauge,
    /// Position in `RABBITMQ_ADDRESSES` of the node in use, -1 when none.
    pub broker_address: IntGauge,
    /// 1 while a consumer is registered on every partition of the queue.
    pub consumer_running: IntGauge,
    /// 1 while the store accepts writes (always for memory).
    pub store_ready: IntGauge,
    /// 1 for the configured store kind (`store` label).
    pub store_info: IntGaugeVec,
    /// Failed database operations.
    pub db_errors: IntCounter,
    /// Duration of database operations by `query` (fixed set).
    pub db_query_duration: HistogramVec,
    /// `GET /pong` pages served from the cache.
    pub cache_hits: IntCounter,
    /// `GET /pong` pages not in the cache (read from the store).
    pub cache_misses: IntCounter,
    /// Cache operations that failed or timed out (served from the store).
    pub cache_errors: IntCounter,
}

impl PongMetrics {
    /// Registers every pong metric on `registry`, with span counters of
    /// their own (traces off).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        Self::register_with_spans(registry, SpanCounters::default())
    }

    /// Registers every pong metric on `registry`; `spans` are the counters
    /// the trace exporter feeds (`{PREFIX}_trace_spans_*`).
    pub fn register_with_spans(
        registry: &Registry,
        spans: SpanCounters,
    ) -> prometheus::Result<Self> {
        spans.register(registry, PREFIX)?;
        let counter = |name: &str, help: &str| common::counter(registry, PREFIX, name, help);
        let link = LinkGauges::register(registry, PREFIX)?;
        let gauge = |name: &str, help: &str| common::gauge(registry, PREFIX, name, help);
        Ok(Self {
            http: HttpMetrics::register(registry, PREFIX)?,
            consumed: counter(
                "messages_consumed_total",
                "Deliveries received from the queue.",
            )?,
            redelivered: counter(
                "messages_redelivered_total",
                "Deliveries the broker flagged as redelivered: an earlier consumer received them and never acknowledged them (a crash, a lost connection, or a replica removed mid-work).",
            )?,
            stored: counter("messages_stored_total", "Messages newly stored.")?,
            evicted: counter(
                "messages_evicted_total",
                "Messages evicted (oldest first) because the store was full.",
            )?,
            evicted_bytes: counter(
                "messages_evicted_bytes_total",
                "Bytes freed by evictions (memory: serialised records; PostgreSQL: msg text).",
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
            stored_bytes: gauge(
                "stored_bytes",
                "Bytes held by the in-memory store (bounded by PONG_MAX_BYTES).",
            )?,
            end_to_end_latency: common::histogram(
                registry,
                PREFIX,
                "end_to_end_latency_seconds",
                "Time from ping's created_at to pong's received_at.",
                LATENCY_BUCKETS,
            )?,
            batch_size: common::histogram(
                registry,
                PREFIX,
                "consumer_batch_messages",
                "Deliveries stored and acknowledged together (one store call, one ack); PONG_BATCH_LINGER_MS trades a little latency for larger batches.",
                BATCH_BUCKETS,
            )?,
            broker_connected: link.connected,
            broker_address: link.address,
            consumer_running: gauge(
                "consumer_running",
                "1 while a consumer is registered on every partition of the queue, else 0.",
            )?,
            store_ready: gauge(
                "store_ready",
                "1 while the message store accepts writes, else 0.",
            )?,
            store_info: common::gauge_vec(
                registry,
                PREFIX,
                "store_info",
                "The configured store (value 1).",
                &["store"],
            )?,
            db_errors: counter(
                "db_errors_total",
                "Failed PostgreSQL operations (messages stay unacked and are retried).",
            )?,
            db_query_duration: common::histogram_vec(
                registry,
                PREFIX,
                "db_query_duration_seconds",
                "Duration of PostgreSQL operations (pool wait included), by query.",
                DB_BUCKETS,
                &["query"],
            )?,
            cache_hits: counter("cache_hits_total", "GET /pong pages served from Redis.")?,
            cache_misses: counter(
                "cache_misses_total",
                "GET /pong pages not found in Redis (read from the store).",
            )?,
            cache_errors: counter(
                "cache_errors_total",
                "Redis operations that failed or timed out (served from the store).",
            )?,
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
