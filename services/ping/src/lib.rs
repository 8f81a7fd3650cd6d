//! The ping service: `POST /ping` publishes a message to RabbitMQ and answers
//! only after the broker confirmed it.
//!
//! [`app`] builds the router from an [`AppState`] (publisher behind a trait,
//! own metrics registry) so handlers are tested without a broker; [`run`]
//! wires the real publisher, the connection manager and graceful shutdown.
//! `main.rs` only parses config, initialises logging and calls [`run`].

pub mod config;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod publish_log;
pub mod publisher;
pub mod readiness;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::FromRef;
use axum::routing::{get, post};
use pingpong_common::amqp::{ChannelRole, ConnectionManager};
use pingpong_common::http as http_common;
use pingpong_common::metrics::metrics_handler;
use prometheus::Registry;

pub use config::Config;
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
        }
    }
}

/// The HTTP application: `/ping`, `/healthz`, `/readyz`, `/metrics`,
/// `/openapi.json`.
pub fn app(state: AppState) -> Router {
    let http_metrics = Arc::clone(&state.metrics.http);
    let routes = Router::new()
        .route("/ping", post(handlers::ping))
        .route("/healthz", get(http_common::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(metrics_handler))
        .route("/openapi.json", get(openapi::document))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    http_common::service_layers(routes, http_metrics).with_state(state)
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
    let metrics = PingMetrics::register(&registry)?;
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
    );
    let state = AppState::with_metrics(Arc::new(publisher), registry, metrics);
    let served = http_common::serve_with(listener, app(state), shutdown, config.http).await;
    manager.shutdown().await;
    tracing::info!("ping stopped");
    Ok(served?)
}
