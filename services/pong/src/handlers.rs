//! HTTP handlers of pong: `GET /pong`, readiness and metrics.
//!
//! `GET /pong` contract (every store):
//! - no parameters: every stored message, oldest first (bounded by
//!   `PONG_MAX_MESSAGES`);
//! - `limit=N`: the newest N, oldest first;
//! - `after=<id>[&limit=N]`: the messages stored after `<id>` (the first N of
//!   them), oldest first — keyset pagination; an unknown or evicted `<id>` is
//!   404, a malformed one 400.
//!
//! With a cache, the page is looked up under the store's current version.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pingpong_common::http::{AppError, readiness_on_node};
use uuid::Uuid;

use crate::AppState;
use crate::store::{ListQuery, StoreError};

/// Seconds a client should wait after a 503 from an unavailable database.
const RETRY_AFTER_SECONDS: u32 = 1;

/// `GET /pong[?limit=N][&after=<id>]`: see the module docs.
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
    let after = match params.get("after") {
        None => None,
        Some(raw) => Some(raw.trim().parse::<Uuid>().map_err(|_| {
            AppError::bad_request("query parameter `after` must be a message id (UUID)")
        })?),
    };
    let query = ListQuery { after, limit };
    let body = read_page(&state, query).await.map_err(store_error)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn read_page(state: &AppState, query: ListQuery) -> Result<String, StoreError> {
    let Some(cache) = &state.cache else {
        return state.store.list(query).await;
    };
    let Some(version) = state.store.version().await? else {
        return state.store.list(query).await;
    };
    let key = cache.key(version, &query);
    if let Some(page) = cache.get(&key).await {
        return Ok(page);
    }
    let page = state.store.list(query).await?;
    cache.put(&key, &page).await;
    Ok(page)
}

fn store_error(error: StoreError) -> AppError {
    match error {
        StoreError::UnknownCursor(_) => AppError::client(StatusCode::NOT_FOUND, error.to_string()),
        error if error.is_transient() => AppError::Unavailable {
            kind: error.kind(),
            retry_after: RETRY_AFTER_SECONDS,
            source: Box::new(error),
        },
        error => AppError::Internal(Box::new(error)),
    }
}

/// `GET /readyz`: ready while connected to the broker, consuming, and the
/// store accepts writes.
pub async fn readyz(State(state): State<AppState>) -> Response {
    readiness_on_node(
        &[
            ("broker", state.metrics.broker_connected.get() == 1),
            ("consumer", state.metrics.consumer_running.get() == 1),
            ("store", state.metrics.store_ready.get() == 1),
        ],
        state.metrics.broker_address.get(),
    )
}
