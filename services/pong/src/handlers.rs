//! HTTP handlers of pong: `GET /pong`, readiness and metrics.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pingpong_common::http::{AppError, readiness};

use crate::AppState;

/// `GET /pong[?limit=N]`: stored messages oldest first; with `limit`, the
/// newest N (still oldest first).
pub async fn pong(
    State(state): State<AppState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(params) = query.map_err(|_| AppError::bad_request("malformed query string"))?;
    let limit = match params.get("limit") {
        None => None,
        Some(raw) => Some(raw.trim().parse::<usize>().map_err(|_| {
            AppError::bad_request("query parameter `limit` must be a non-negative integer")
        })?),
    };
    let body = state.store.to_json(limit);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /readyz`: ready while connected to the broker and consuming.
pub async fn readyz(State(state): State<AppState>) -> Response {
    readiness(&[
        ("broker", state.metrics.broker_connected.get() == 1),
        ("consumer", state.metrics.consumer_running.get() == 1),
    ])
}
