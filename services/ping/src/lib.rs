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
pub mod publisher;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use pingpong_common::amqp::{ChannelRole, ConnectionManager};
use pingpong_common::http::{self as http_common, ServeError};
use pingpong_common::metrics::track_http;
use prometheus::Registry;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

pub use config::Config;
pub use metrics::PingMetrics;
pub use publisher::{AmqpPublisher, Publish, PublishError};

/// Largest accepted request body (64 KiB); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Upper bound on handling one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The HTTP application: `/ping`, `/healthz`, `/readyz`, `/metrics`.
pub fn app(state: AppState) -> Router {
    let http_metrics = Arc::clone(&state.metrics.http);
    Router::new()
        .route("/ping", post(handlers::ping))
        .route("/healthz", get(http_common::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .fallback(http_common::not_found)
        .method_not_allowed_fallback(http_common::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            track_http,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(handlers::request_span)
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Metrics could not be registered.
    #[error("failed to register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl RunError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Metrics(_) => "Metrics",
            Self::Serve(error) => error.kind(),
        }
    }
}

/// Runs ping until `shutdown` resolves: connects to the broker in the
/// background, serves HTTP, then drains requests and closes the connection.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let registry = Registry::new();
    let metrics = PingMetrics::register(&registry)?;
    let manager = ConnectionManager::spawn(
        config.amqp.clone(),
        ChannelRole::Publisher,
        "ping".to_owned(),
        metrics.broker_connected.clone(),
    );
    let publisher = AmqpPublisher::new(
        manager.link(),
        &config.amqp.queue,
        metrics.confirm_duration.clone(),
    );
    let state = AppState::with_metrics(Arc::new(publisher), registry, metrics);
    let served = match http_common::bind(config.listen_addr).await {
        Ok(listener) => {
            tracing::info!(addr = %config.listen_addr, "ping listening");
            http_common::serve(listener, app(state), shutdown).await
        }
        Err(error) => Err(error),
    };
    manager.shutdown().await;
    tracing::info!("ping stopped");
    Ok(served?)
}
