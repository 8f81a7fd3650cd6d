//! HTTP handlers of pong: `GET /pong`, readiness and the OpenAPI document.
//!
//! `GET /pong` contract (every store): every form pages the same way. A page
//! starts somewhere, runs forward (oldest first) for at most `limit` messages
//! ([`DEFAULT_LIMIT`] when absent, at most [`MAX_LIMIT`]) and is cut earlier
//! once it holds about [`PAGE_MAX_BYTES`](crate::store::PAGE_MAX_BYTES) of
//! messages. Where it starts:
//! - `from=oldest` (the default): at the oldest stored message;
//! - `from=newest`: at the `limit`-th newest, so it ends at the newest;
//! - `after=<id>`: right after message `<id>` (keyset pagination); an
//!   unknown or evicted `<id>` is 404, a malformed one 400.
//!
//! While more messages follow a page, it carries
//! `Link: </pong?after=<last id>&limit=N>; rel="next"`, so every message is
//! one loop away; a page cut by the byte bound also says so in
//! [`PAGE_CUT_HEADER`]. Each parameter may appear once; `limit` is plain
//! decimal digits. Other parameters are ignored.
//!
//! With a cache, only the canonical pages (the first page and the newest
//! page, both of the default size) are looked up under the store's current
//! version; every other page comes from the store.

use axum::extract::RawQuery;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pingpong_common::http::{AppError, ErrorBody, liveness, readiness_on_node};
use pingpong_common::openapi::Readiness;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::store::{ListQuery, Page, Start, StoreError, StoredMessage};

/// Seconds a client should wait after a 503 from an unavailable database.
const RETRY_AFTER_SECONDS: u32 = 1;
/// Messages on a page when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest accepted `limit`.
pub const MAX_LIMIT: usize = 1000;
/// Header on a page the byte bound cut before `limit` messages (value
/// `bytes`); such a page always carries `Link` to the rest.
pub const PAGE_CUT_HEADER: HeaderName = HeaderName::from_static("pong-page-cut");

/// Where a page starts when it names no `after`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// At the oldest stored message.
    #[default]
    Oldest,
    /// At the `limit`-th newest message, so the page ends at the newest.
    Newest,
}

/// Query parameters of `GET /pong`; each at most once, others are ignored.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PongParams {
    /// Most messages on the page (default 100): plain decimal digits.
    #[param(minimum = 0, maximum = 1000)]
    pub limit: Option<usize>,
    /// Where the page starts when there is no `after`: `oldest` (default) or
    /// `newest` (the page ends at the newest message).
    #[param(inline)]
    pub from: Option<Origin>,
    /// Id of the message the page starts after (the `Link` of the previous
    /// page names it); not together with `from`.
    pub after: Option<Uuid>,
}

impl PongParams {
    /// Reads the parameters from the raw query, naming a bad one.
    fn from_query(raw: Option<&str>) -> Result<Self, AppError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        let once = |name: &str| -> Result<Option<&str>, AppError> {
            let mut values = pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
            let first = values.next();
            if values.next().is_some() {
                return Err(AppError::bad_request(format!(
                    "query parameter `{name}` must appear at most once"
                )));
            }
            Ok(first.map(String::as_str))
        };
        let limit = match once("limit")? {
            None => None,
            Some(raw) => match parse_digits(raw) {
                Some(limit) if limit <= MAX_LIMIT => Some(limit),
                _ => {
                    return Err(AppError::bad_request(format!(
                        "query parameter `limit` must be an integer from 0 to {MAX_LIMIT} (decimal digits only)"
                    )));
                }
            },
        };
        let from = match once("from")? {
            None => None,
            Some("oldest") => Some(Origin::Oldest),
            Some("newest") => Some(Origin::Newest),
            Some(_) => {
                return Err(AppError::bad_request(
                    "query parameter `from` must be `oldest` or `newest`",
                ));
            }
        };
        let after = match once("after")? {
            None => None,
            Some(raw) => Some(raw.parse::<Uuid>().map_err(|_| {
                AppError::bad_request("query parameter `after` must be a message id (UUID)")
            })?),
        };
        if after.is_some() && from.is_some() {
            return Err(AppError::bad_request(
                "query parameters `after` and `from` cannot be combined",
            ));
        }
        Ok(Self { limit, from, after })
    }

    /// The page these parameters ask for.
    fn query(&self) -> ListQuery {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        match (self.after, self.from.unwrap_or_default()) {
            (Some(after), _) => ListQuery::after(after, limit),
            (None, Origin::Newest) => ListQuery::newest(limit),
            (None, Origin::Oldest) => ListQuery::oldest(limit),
        }
    }
}

/// A number of plain decimal digits (no sign, no spaces), if it fits.
fn parse_digits(raw: &str) -> Option<usize> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// `GET /pong[?limit=N][&from=oldest|newest][&after=<id>]`: see the module
/// docs.
#[utoipa::path(
    get,
    path = "/pong",
    tag = "pong",
    params(PongParams),
    responses(
        (status = 200, description = "A page of stored messages, oldest first, starting at the oldest (`from=oldest`, the default), at the `limit`-th newest (`from=newest`) or after `after`. While more messages follow the page, `Link` names the next page.",
            body = [StoredMessage],
            headers(
                ("Link" = String, description = "`</pong?after=<id>&limit=N>; rel=\"next\"` while more messages follow"),
                ("Pong-Page-Cut" = String, description = "`bytes` when the page holds fewer than `limit` messages because of the 1 MiB page bound (then `Link` names the rest)"),
            )),
        (status = 400, description = "`limit`, `from` or `after` is malformed, out of range or repeated, or `after` comes with `from`", body = ErrorBody),
        (status = 404, description = "`after` names a message that is not stored (unknown or evicted)", body = ErrorBody),
        (status = 414, description = "Request line longer than 64 KiB (answered by the HTTP server, empty body)"),
        (status = 431, description = "Too many or too large headers (answered by the HTTP server, empty body)"),
        (status = 500, description = "Internal error (generic body, details in the log)", body = ErrorBody),
        (status = 503, description = "The store is unavailable or the request timed out; retry later",
            body = ErrorBody, headers(("Retry-After" = u32, description = "seconds to wait"))),
    )
)]
pub async fn pong(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let query = PongParams::from_query(raw.as_deref())?.query();
    let page = read_page(&state, query).await.map_err(store_error)?;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], page.json).into_response();
    if let Some(next) = page.next {
        let link = format!("</pong?after={next}&limit={}>; rel=\"next\"", query.limit);
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    if page.cut {
        response
            .headers_mut()
            .insert(PAGE_CUT_HEADER, HeaderValue::from_static("bytes"));
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

/// `GET /healthz`: 200 while the process makes progress, 503 when the broker
/// connection manager is stuck past its own bounded waits (the kubelet then
/// restarts the process).
pub async fn healthz(State(state): State<AppState>) -> Response {
    liveness(&[("broker", state.broker.is_stalled())])
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

    fn params(query: &str) -> Result<ListQuery, AppError> {
        PongParams::from_query(Some(query)).map(|p| p.query())
    }

    #[test]
    fn parameters_choose_the_page() {
        let id = Uuid::new_v4();
        assert_eq!(params("").unwrap(), ListQuery::oldest(DEFAULT_LIMIT));
        assert_eq!(
            PongParams::from_query(None).unwrap().query(),
            ListQuery::oldest(DEFAULT_LIMIT)
        );
        assert_eq!(params("limit=7").unwrap(), ListQuery::oldest(7));
        assert_eq!(params("from=oldest&limit=7").unwrap(), ListQuery::oldest(7));
        assert_eq!(params("from=newest&limit=7").unwrap(), ListQuery::newest(7));
        assert_eq!(
            params("from=newest").unwrap(),
            ListQuery::newest(DEFAULT_LIMIT)
        );
        assert_eq!(
            params(&format!("after={id}")).unwrap(),
            ListQuery::after(id, DEFAULT_LIMIT)
        );
        assert_eq!(
            params(&format!("after={id}&limit=1000&x=1&x=2")).unwrap(),
            ListQuery::after(id, MAX_LIMIT)
        );
        assert_eq!(params("limit=007").unwrap(), ListQuery::oldest(7));
    }

    #[test]
    fn malformed_repeated_or_conflicting_parameters_are_400_naming_them() {
        let id = Uuid::new_v4();
        let cases = [
            ("limit=1001", "`limit`"),
            ("limit=-1", "`limit`"),
            ("limit=x", "`limit`"),
            ("limit=", "`limit`"),
            ("limit=+5", "`limit`"),
            ("limit=%205", "`limit`"),
            ("limit=5%0A", "`limit`"),
            ("limit= 5", "`limit`"),
            ("limit=5.0", "`limit`"),
            ("limit=1&limit=2", "`limit` must appear at most once"),
            ("from=middle", "`from`"),
            ("from=newest&from=newest", "`from` must appear at most once"),
            ("after=x", "`after`"),
            ("after=%ZZ", "`after`"),
            (&format!("after={id}&from=newest"), "cannot be combined"),
            (
                &format!("after={id}&after={id}"),
                "`after` must appear at most once",
            ),
        ];
        for (query, needle) in cases {
            let error = params(query).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{query}");
            assert!(error.to_string().contains(needle), "{query}: {error}");
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
