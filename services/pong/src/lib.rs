//! The pong service: consumes the queue into a bounded in-memory store and
//! serves it on `GET /pong`.
//!
//! [`app`] builds the router from an [`AppState`] (store, own metrics
//! registry) so handlers are tested without a broker; [`run`] wires the
//! connection manager, the consumer and graceful shutdown. `main.rs` only
//! parses config, initialises logging and calls [`run`].

pub mod config;
pub mod consumer;
pub mod handlers;
pub mod metrics;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use pingpong_common::amqp::{ChannelRole, ConnectionManager};
use pingpong_common::http as http_common;
use pingpong_common::metrics::metrics_handler;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use consumer::QueueConsumer;
pub use metrics::PongMetrics;
pub use pingpong_common::http::RunError;
pub use store::{InsertOutcome, MessageSink, Store};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The message store.
    pub store: Arc<Store>,
    /// The process's metrics registry (served on `/metrics`).
    pub registry: Registry,
    /// The registered metrics (also the source of readiness).
    pub metrics: PongMetrics,
}

impl AppState {
    /// State with a fresh registry around `store`.
    pub fn new(store: Arc<Store>) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let metrics = PongMetrics::register(&registry)?;
        Ok(Self {
            store,
            registry,
            metrics,
        })
    }
}

/// The HTTP application: `/pong`, `/healthz`, `/readyz`, `/metrics`.
pub fn app(state: AppState) -> Router {
    let http_metrics = Arc::clone(&state.metrics.http);
    let routes = Router::new()
        .route("/pong", get(handlers::pong))
        .route("/healthz", get(http_common::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(metrics_handler));
    http_common::service_layers(routes, http_metrics).with_state(state)
}

impl FromRef<AppState> for Registry {
    fn from_ref(state: &AppState) -> Self {
        state.registry.clone()
    }
}

/// Runs pong until `shutdown` resolves: stops HTTP, stops the consumer
/// (everything stored is acked), then closes the channel and connection.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let state = AppState::new(Arc::new(Store::new(config.max_messages)))?;
    let manager = ConnectionManager::spawn(
        config.amqp.clone(),
        ChannelRole::Consumer {
            prefetch: consumer::PREFETCH,
        },
        "pong".to_owned(),
        state.metrics.broker_connected.clone(),
    );
    let sink: Arc<dyn MessageSink> = state.store.clone();
    let consumer = QueueConsumer::new(
        manager.link(),
        config.amqp.queue.clone(),
        sink,
        state.metrics.clone(),
    );
    let stop = CancellationToken::new();
    let consuming = tokio::spawn(consumer.run(stop.clone()));
    let served = match http_common::bind(config.listen_addr).await {
        Ok(listener) => {
            tracing::info!(addr = %config.listen_addr, "pong listening");
            http_common::serve(listener, app(state), shutdown).await
        }
        Err(error) => Err(error),
    };
    stop.cancel();
    if let Err(error) = consuming.await {
        tracing::error!(%error, "consumer task failed");
    }
    manager.shutdown().await;
    tracing::info!("pong stopped");
    Ok(served?)
}
