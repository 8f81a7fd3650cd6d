//! The ping service: `POST /ping` publishes a message to RabbitMQ and answers
//! only after the broker confirmed it.
//!
//! [`app`] builds the router from an [`AppState`] (publisher behind a trait,
//! own metrics registry) so handlers are tested without a broker; [`run`]
//! wires the real publisher, the connection manager and graceful shutdown.
//! `main.rs` only parses config, initialises logging and calls [`run`].

pub mod config;
pub mod handlers;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod publish_log;
pub mod publisher;
pub mod readiness;

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::extract::FromRef;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use pingpong_common::amqp::{ChannelRole, ConnectionManager};
use pingpong_common::http as http_common;
use pingpong_common::metrics::metrics_handler;
use prometheus::{IntCounter, Registry};
use tower::ServiceBuilder;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;

pub use config::{Config, DEFAULT_MAX_IN_FLIGHT};
pub use idempotency::RecentKeys;
pub use metrics::PingMetrics;
pub use pingpong_common::http::RunError;
pub use publisher::{AmqpPublisher, Publish, PublishError};

/// Largest accepted request body (64 KiB); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Where messages go.
    pub publisher: Arc<dyn Publish>,
    /// The process's metrics registry (served on `/metrics`).
    pub registry: Registry,
    /// The registered metrics.
    pub metrics: PingMetrics,
    /// The idempotency keys this process saw last.
    pub keys: Arc<RecentKeys>,
    /// `POST /ping` requests handled at once (`PING_MAX_IN_FLIGHT`).
    pub max_in_flight: NonZeroUsize,
}

impl AppState {
    /// State with a fresh registry and `publisher`.
    pub fn new(publisher: Arc<dyn Publish>) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let metrics = PingMetrics::register(&registry)?;
        Ok(Self::with_metrics(publisher, registry, metrics))
    }

    /// State from parts already created.
    pub fn with_metrics(
        publisher: Arc<dyn Publish>,
        registry: Registry,
        metrics: PingMetrics,
    ) -> Self {
        Self {
            publisher,
            registry,
            metrics,
            keys: Arc::new(RecentKeys::default()),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// The same state handling at most `max_in_flight` `POST /ping` at once.
    pub fn with_max_in_flight(self, max_in_flight: NonZeroUsize) -> Self {
        Self {
            max_in_flight,
            ..self
        }
    }
}

/// The HTTP application: `/ping`, `/healthz`, `/readyz`, `/metrics`,
/// `/openapi.json`.
///
/// `POST /ping` is bounded by `state.max_in_flight`: a request beyond it is
/// answered 503 with `Retry-After` at once (tower's load shedding in front of
/// its concurrency limit), so overload never becomes a queue of parked
/// requests and confirms. The bound covers one `app`; build it once per
/// process.
pub fn app(state: AppState) -> Router {
    let http_metrics = Arc::clone(&state.metrics.http);
    let shed = state.metrics.shed.clone();
    let bounded = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |error| {
            std::future::ready(overloaded(&shed, &error))
        }))
        .layer(LoadShedLayer::new())
        .layer(ConcurrencyLimitLayer::new(state.max_in_flight.get()));
    let routes = Router::new()
        .route("/ping", post(handlers::ping).route_layer(bounded))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(metrics_handler))
        .route("/openapi.json", get(openapi::document))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    http_common::service_layers(routes, http_metrics).with_state(state)
}

/// The answer to a request the in-flight bound refused: 503 with
/// `Retry-After`, counted. Load shedding is the only error of those layers.
fn overloaded(shed: &IntCounter, error: &tower::BoxError) -> Response {
    if !error.is::<tower::load_shed::error::Overloaded>() {
        tracing::error!(%error, "unexpected error of the in-flight bound");
        return http_common::json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error");
    }
    shed.inc();
    let mut response = http_common::json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many requests in progress, retry later",
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(handlers::RETRY_AFTER_SECS),
    );
    response
}

impl FromRef<AppState> for Registry {
    fn from_ref(state: &AppState) -> Self {
        state.registry.clone()
    }
}

/// Runs ping until `shutdown` resolves: binds the listen address, connects
/// to the broker in the background, serves HTTP, then drains requests and
/// closes the connection.
///
/// The address is bound before anything else starts, so a busy port is a
/// plain error with nothing to tear down (no broker connection half open).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let registry = Registry::new();
    let metrics = PingMetrics::register_with_spans(&registry, config.traces.counters.clone())?;
    let listener = http_common::bind(config.listen_addr).await?;
    tracing::info!(addr = %config.listen_addr, "ping listening");
    let manager = ConnectionManager::spawn(
        config.amqp.clone(),
        ChannelRole::Publisher,
        "ping".to_owned(),
        metrics.link_gauges(),
    );
    let publisher = AmqpPublisher::new(
        manager.link(),
        &config.amqp.queue,
        metrics.confirm_duration.clone(),
    )
    .with_partitions(&config.amqp.queue, config.amqp.partitions);
    let state = AppState::with_metrics(Arc::new(publisher), registry, metrics)
        .with_max_in_flight(config.max_in_flight);
    let served = http_common::serve_with(listener, app(state), shutdown, config.http).await;
    manager.shutdown().await;
    tracing::info!("ping stopped");
    Ok(served?)
}
