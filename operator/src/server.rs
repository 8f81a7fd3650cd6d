//! The operator's HTTP server: `/metrics`, `/healthz` and `/readyz` on `METRICS_ADDR`.
//!
//! [`app`] builds the router from an [`AppState`] so tests call it with `oneshot`, no socket.
//! Readiness is a [`Health`] value shared with the leader elector and the controller. This module
//! never talks to the Kubernetes API.

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const STANDBY: u8 = 1;
const LEADING_SYNCING: u8 = 2;
const LEADING_SYNCED: u8 = 3;

/// What `/readyz` reports, shared between the elector, the controller and the server.
///
/// Ready means: the leader state is known, and, when this replica leads, the controller's
/// PingPongStack cache has completed its first list. A standby replica is ready (it can take
/// over); a replica that has not yet talked to the Lease API is not.
#[derive(Clone, Debug, Default)]
pub struct Health {
    state: Arc<AtomicU8>,
}

impl Health {
    /// A replica that does not yet know whether it leads.
    pub fn new() -> Self {
        Self::default()
    }

    /// This replica observed the Lease held by another replica.
    pub fn set_standby(&self) {
        self.state.store(STANDBY, Ordering::SeqCst);
    }

    /// This replica leads; the controller is starting and its cache is not synced yet.
    pub fn set_leading(&self) {
        self.state.store(LEADING_SYNCING, Ordering::SeqCst);
    }

    /// The controller's cache of PingPongStacks is synced.
    pub fn set_synced(&self) {
        self.state.store(LEADING_SYNCED, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        matches!(self.state.load(Ordering::SeqCst), STANDBY | LEADING_SYNCED)
    }

    fn describe(&self) -> &'static str {
        match self.state.load(Ordering::SeqCst) {
            UNKNOWN => "leader state unknown",
            STANDBY => "standby",
            LEADING_SYNCING => "leading, cache syncing",
            _ => "leading, cache synced",
        }
    }
}

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The process's metrics registry.
    pub metrics: Metrics,
    /// Readiness.
    pub health: Health,
}

/// Builds the router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves [`app`] on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics and health server listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "failed to encode metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to encode metrics",
            )
                .into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let code = if state.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, state.health.describe())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readiness_follows_leader_and_sync_state() {
        let state = AppState {
            metrics: Metrics::new().unwrap(),
            health: Health::new(),
        };
        let health = state.health.clone();
        let router = app(state);
        assert_eq!(get(router.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(router.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_leading();
        assert_eq!(
            get(router.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_synced();
        assert_eq!(get(router.clone(), "/readyz").await.0, StatusCode::OK);
        health.set_standby();
        assert_eq!(get(router, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_served_in_text_format() {
        let state = AppState {
            metrics: Metrics::new().unwrap(),
            health: Health::new(),
        };
        let (status, body) = get(app(state), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("# TYPE pingpong_operator_reconciliations_total counter"));
    }
}
