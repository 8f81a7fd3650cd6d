//! The pong service: consumes the queue into a bounded store (in memory, or
//! PostgreSQL with an optional Redis cache) and serves it on `GET /pong`.
//!
//! [`app`] builds the router from an [`AppState`] (store, cache, own metrics
//! registry) so handlers are tested without a broker; [`run`] wires the
//! store, the connection manager, the consumer and graceful shutdown.
//! `main.rs` only parses config, initialises logging and calls [`run`].

pub mod cache;
pub mod config;
pub mod consumer;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod readiness;
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

pub use cache::Cache;
pub use config::{Config, StoreConfig, StoreKind};
pub use consumer::QueueConsumer;
pub use metrics::PongMetrics;
pub use readiness::{AllUp, Flag, Probe};
pub use store::{InsertOutcome, ListQuery, MemoryStore, MessageSink, MessageStore, PgStore};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The message store.
    pub store: Arc<dyn MessageStore>,
    /// The optional page cache.
    pub cache: Option<Arc<Cache>>,
    /// The process's metrics registry (served on `/metrics`).
    pub registry: Registry,
    /// The registered metrics (mirrors of the components' states).
    pub metrics: PongMetrics,
    /// The broker connection, as `/readyz` sees it.
    pub broker: Arc<dyn Probe>,
    /// The queue consumer, as `/readyz` sees it.
    pub consumer: Arc<dyn Probe>,
}

impl AppState {
    /// State with a fresh registry around an in-memory `store`; the broker
    /// and the consumer count as down until [`Self::with_components`].
    pub fn new(store: Arc<MemoryStore>) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let metrics = PongMetrics::register(&registry)?;
        Ok(Self::from_parts(store, None, registry, metrics))
    }

    /// State from its parts; marks the store kind in `metrics`. The broker
    /// and the consumer count as down until [`Self::with_components`].
    pub fn from_parts(
        store: Arc<dyn MessageStore>,
        cache: Option<Arc<Cache>>,
        registry: Registry,
        metrics: PongMetrics,
    ) -> Self {
        let kind = store.kind();
        metrics
            .store_info
            .with_label_values(&[kind.as_str()])
            .set(1);
        metrics.store_ready.set(i64::from(store.is_ready()));
        Self {
            store,
            cache,
            registry,
            metrics,
            broker: Arc::new(Flag::default()),
            consumer: Arc::new(Flag::default()),
        }
    }

    /// The same state reading readiness from `broker` and `consumer`.
    pub fn with_components(self, broker: Arc<dyn Probe>, consumer: Arc<dyn Probe>) -> Self {
        Self {
            broker,
            consumer,
            ..self
        }
    }
}

/// Why pong stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Metrics could not be registered, or serving HTTP failed.
    #[error(transparent)]
    Service(#[from] pingpong_common::http::RunError),
    /// The PostgreSQL pool could not be built.
    #[error("failed to set up the postgres store for {target}: {source}")]
    Store {
        /// `host:port/database`.
        target: String,
        /// The cause.
        #[source]
        source: deadpool_postgres::BuildError,
    },
    /// The Redis cache could not be set up.
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
}

impl RunError {
    /// Error category for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Service(error) => error.kind(),
            Self::Store { .. } => "Store",
            Self::Cache(error) => error.kind(),
        }
    }
}

impl From<prometheus::Error> for RunError {
    fn from(error: prometheus::Error) -> Self {
        Self::Service(error.into())
    }
}

impl From<pingpong_common::http::ServeError> for RunError {
    fn from(error: pingpong_common::http::ServeError) -> Self {
        Self::Service(error.into())
    }
}

/// Builds the state for `config`: the store, the cache and the metrics.
/// With PostgreSQL, the returned task prepares the schema in the
/// background and then watches the database until `stop`.
pub fn build_state(
    config: &Config,
    stop: &CancellationToken,
) -> Result<(AppState, Option<tokio::task::JoinHandle<()>>), RunError> {
    let registry = Registry::new();
    let metrics = PongMetrics::register_with_spans(&registry, config.traces.counters.clone())?;
    let (store, watcher): (Arc<dyn MessageStore>, _) = match &config.store {
        StoreConfig::Memory => (
            Arc::new(MemoryStore::with_max_bytes(
                config.max_messages,
                config.max_bytes,
            )),
            None,
        ),
        StoreConfig::Postgres(pg) => {
            let store =
                PgStore::new(pg, config.max_messages, metrics.clone()).map_err(|source| {
                    RunError::Store {
                        target: pg.target().to_owned(),
                        source,
                    }
                })?;
            let store = Arc::new(store);
            let watcher = tokio::spawn(Arc::clone(&store).watch_health(stop.clone()));
            (store, Some(watcher))
        }
    };
    let cache = match &config.cache {
        Some(cache) => Some(Arc::new(Cache::new(cache, metrics.clone())?)),
        None => None,
    };
    Ok((
        AppState::from_parts(store, cache, registry, metrics),
        watcher,
    ))
}

/// The HTTP application: `/pong`, `/healthz`, `/readyz`, `/metrics`,
/// `/openapi.json`.
pub fn app(state: AppState) -> Router {
    let http_metrics = Arc::clone(&state.metrics.http);
    let routes = Router::new()
        .route("/pong", get(handlers::pong))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(metrics_handler))
        .route("/openapi.json", get(openapi::document));
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
    let stop = CancellationToken::new();
    let (state, watcher) = build_state(&config, &stop)?;
    let manager = ConnectionManager::spawn(
        config.amqp.clone(),
        ChannelRole::Consumer {
            prefetch: consumer::PREFETCH,
        },
        "pong".to_owned(),
        state.metrics.link_gauges(),
    );
    let sink: Arc<dyn MessageSink> = state.store.clone();
    let (consumers, running) = QueueConsumer::partitioned(
        &manager.link(),
        &config.amqp.queue,
        config.amqp.partitions,
        &sink,
        &state.metrics,
    );
    let state = state.with_components(Arc::new(manager.link()), Arc::new(running));
    let consuming: Vec<_> = consumers
        .into_iter()
        .map(|consumer| tokio::spawn(consumer.with_linger(config.batch_linger).run(stop.clone())))
        .collect();
    let served = match http_common::bind(config.listen_addr).await {
        Ok(listener) => {
            tracing::info!(addr = %config.listen_addr, "pong listening");
            http_common::serve_with(listener, app(state), shutdown, config.http).await
        }
        Err(error) => Err(error),
    };
    stop.cancel();
    for consumer in consuming {
        if let Err(error) = consumer.await {
            tracing::error!(%error, "consumer task failed");
        }
    }
    manager.shutdown().await;
    if let Some(watcher) = watcher
        && let Err(error) = watcher.await
    {
        tracing::error!(%error, "store health task failed");
    }
    tracing::info!("pong stopped");
    Ok(served?)
}
