//! HTTP handlers of pong: `GET /pong`, readiness and the OpenAPI document.
//!
//! `GET /pong` contract (every store); a page is at most `limit` messages
//! ([`DEFAULT_LIMIT`] when absent, at most [`MAX_LIMIT`]), oldest first, and
//! is cut earlier once it holds about
//! [`PAGE_MAX_BYTES`](crate::store::PAGE_MAX_BYTES) of messages:
//! - no `limit`, no `after`: the first page from the oldest message;
//! - `limit=N`: the newest N;
//! - `after=<id>[&limit=N]`: the page after message `<id>` (keyset
//!   pagination); an unknown or evicted `<id>` is 404, a malformed one 400.
//!
//! A page that starts at the oldest message or at a cursor carries
//! `Link: </pong?after=<last id>&limit=N>; rel="next"` while more messages
//! follow it, so every message is one loop away.
//!
//! With a cache, only the canonical pages (the first page and the newest
//! page, both of the default size) are looked up under the store's current
//! version; every other page comes from the store.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pingpong_common::http::{AppError, ErrorBody, readiness_on_node};
use pingpong_common::openapi::Readiness;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::store::{ListQuery, Page, Start, StoreError, StoredMessage};

/// Seconds a client should wait after a 503 from an unavailable database.
const RETRY_AFTER_SECONDS: u32 = 1;
/// Messages on a page when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest accepted `limit`.
pub const MAX_LIMIT: usize = 1000;

/// Query parameters of `GET /pong`; unknown parameters are ignored.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PongParams {
    /// Most messages on the page (default 100). Without `after`: the newest
    /// `limit` messages.
    #[param(minimum = 0, maximum = 1000)]
    pub limit: Option<usize>,
    /// Id of the message the page starts after (the `Link` of the previous
    /// page names it).
    pub after: Option<Uuid>,
}

impl PongParams {
    /// Reads the parameters from the raw query, naming a bad one.
    fn from_query(params: &BTreeMap<String, String>) -> Result<Self, AppError> {
        let limit = match params.get("limit") {
            None => None,
            Some(raw) => match raw.trim().parse::<usize>() {
                Ok(limit) if limit <= MAX_LIMIT => Some(limit),
                _ => {
                    return Err(AppError::bad_request(format!(
                        "query parameter `limit` must be an integer from 0 to {MAX_LIMIT}"
                    )));
                }
            },
        };
        let after = match params.get("after") {
            None => None,
            Some(raw) => Some(raw.trim().parse::<Uuid>().map_err(|_| {
                AppError::bad_request("query parameter `after` must be a message id (UUID)")
            })?),
        };
        Ok(Self { limit, after })
    }

    /// The page these parameters ask for.
    fn query(&self) -> ListQuery {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        match (self.after, self.limit) {
            (Some(after), _) => ListQuery::after(after, limit),
            (None, Some(_)) => ListQuery::newest(limit),
            (None, None) => ListQuery::oldest(limit),
        }
    }
}

/// `GET /pong[?limit=N][&after=<id>]`: see the module docs.
#[utoipa::path(
    get,
    path = "/pong",
    tag = "pong",
    params(PongParams),
    responses(
        (status = 200, description = "A page of stored messages, oldest first. While more messages follow a page that started at the oldest message or at `after`, `Link` names the next page.",
            body = [StoredMessage],
            headers(("Link" = String, description = "`</pong?after=<id>&limit=N>; rel=\"next\"` while more messages follow"))),
        (status = 400, description = "`limit` or `after` is malformed or out of range", body = ErrorBody),
        (status = 404, description = "`after` names a message that is not stored (unknown or evicted)", body = ErrorBody),
        (status = 414, description = "Request line longer than 64 KiB (answered by the HTTP server)", body = ErrorBody),
        (status = 431, description = "Too many or too large headers (answered by the HTTP server)", body = ErrorBody),
        (status = 500, description = "Internal error (generic body, details in the log)", body = ErrorBody),
        (status = 503, description = "The store is unavailable or the request timed out; retry later",
            body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    )
)]
pub async fn pong(
    State(state): State<AppState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(raw) = query.map_err(|_| AppError::bad_request("malformed query string"))?;
    let query = PongParams::from_query(&raw)?.query();
    let page = read_page(&state, query).await.map_err(store_error)?;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], page.json).into_response();
    if let Some(next) = page.next {
        let link = format!("</pong?after={next}&limit={}>; rel=\"next\"", query.limit);
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// Which canonical page `query` is, if any: the only pages worth caching
/// (a bounded set per store version, whatever clients ask for).
fn canonical(query: &ListQuery) -> Option<&'static str> {
    match query.start {
        Start::Oldest if query.limit == DEFAULT_LIMIT => Some("first"),
        Start::Newest if query.limit == DEFAULT_LIMIT => Some("newest"),
        _ => None,
    }
}

async fn read_page(state: &AppState, query: ListQuery) -> Result<Page, StoreError> {
    let (Some(cache), Some(name)) = (&state.cache, canonical(&query)) else {
        return state.store.list(query).await;
    };
    let Some(version) = state.store.version().await? else {
        return state.store.list(query).await;
    };
    let key = cache.key(version, name);
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
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Connected to the broker, consuming, and the store accepts writes", body = Readiness),
        (status = 503, description = "Not ready; `failing` names the checks that fail (broker, consumer, store)", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    readiness_on_node(
        &[
            ("broker", state.broker.is_up()),
            ("consumer", state.consumer.is_up()),
            ("store", state.store.is_ready()),
        ],
        state.metrics.broker_address.get(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Result<ListQuery, AppError> {
        let raw = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        PongParams::from_query(&raw).map(|p| p.query())
    }

    #[test]
    fn parameters_choose_the_page() {
        let id = Uuid::new_v4();
        let after = id.to_string();
        assert_eq!(params(&[]).unwrap(), ListQuery::oldest(DEFAULT_LIMIT));
        assert_eq!(params(&[("limit", "7")]).unwrap(), ListQuery::newest(7));
        assert_eq!(
            params(&[("after", &after)]).unwrap(),
            ListQuery::after(id, DEFAULT_LIMIT)
        );
        assert_eq!(
            params(&[("after", &after), ("limit", "1000")]).unwrap(),
            ListQuery::after(id, MAX_LIMIT)
        );
        for bad in ["1001", "-1", "x", ""] {
            let error = params(&[("limit", bad)]).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert!(error.to_string().contains("`limit`"), "{error}");
        }
    }

    #[test]
    fn only_default_sized_first_and_newest_pages_are_canonical() {
        let id = Uuid::new_v4();
        assert_eq!(canonical(&ListQuery::oldest(DEFAULT_LIMIT)), Some("first"));
        assert_eq!(canonical(&ListQuery::newest(DEFAULT_LIMIT)), Some("newest"));
        for query in [
            ListQuery::oldest(DEFAULT_LIMIT - 1),
            ListQuery::newest(MAX_LIMIT),
            ListQuery::after(id, DEFAULT_LIMIT),
        ] {
            assert_eq!(canonical(&query), None, "{query:?}");
        }
    }
}
