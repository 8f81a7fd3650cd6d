//! Handler and configuration tests of pong without a broker.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use crate::support::{get, get_with_headers, texts};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::future::BoxFuture;
use pingpong_common::Message;
use pingpong_pong::store::{Page, StoreError};
use pingpong_pong::{
    AppState, Config, Flag, InsertOutcome, ListQuery, MemoryStore, MessageSink, MessageStore,
    PongMetrics, Probe, StoreKind, app,
};
use time::OffsetDateTime;
use tower::ServiceExt;

fn state_with(messages: &[&str]) -> AppState {
    let store = Arc::new(MemoryStore::new(NonZeroUsize::new(100).unwrap()));
    for text in messages {
        store
            .insert(&Message::new(*text), OffsetDateTime::now_utc())
            .unwrap();
    }
    AppState::new(store).unwrap()
}

#[tokio::test]
async fn get_pong_pages_oldest_first_and_from_newest_ends_at_the_newest() {
    let state = state_with(&["a", "b", "c", "d"]);
    let cases: [(&str, &[&str]); 10] = [
        ("/pong", &["a", "b", "c", "d"]),
        ("/pong?limit=2", &["a", "b"]),
        ("/pong?from=oldest&limit=2", &["a", "b"]),
        ("/pong?from=newest&limit=2", &["c", "d"]),
        ("/pong?from=newest", &["a", "b", "c", "d"]),
        ("/pong?limit=0", &[]),
        ("/pong?from=newest&limit=0", &[]),
        ("/pong?limit=4", &["a", "b", "c", "d"]),
        ("/pong?from=newest&limit=1000", &["a", "b", "c", "d"]),
        ("/pong?other=x&from=newest&limit=1", &["d"]),
    ];
    for (uri, expected) in cases {
        let (status, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(texts(&body), expected, "{uri}");
    }
    // Every form pages the same way: `Link` while more follow.
    let (_, headers, _) = get_with_headers(&state, "/pong?limit=2").await;
    assert!(headers["link"].to_str().unwrap().contains("&limit=2>"));
    let (_, headers, _) = get_with_headers(&state, "/pong?from=newest&limit=2").await;
    assert!(headers.get("link").is_none(), "nothing follows the newest");
    let (_, body) = get(&state, "/pong?from=newest&limit=1").await;
    let record = body[0].as_object().unwrap();
    let mut keys: Vec<&str> = record.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["created_at", "id", "msg", "received_at"]);
}

#[tokio::test]
async fn an_empty_store_is_an_empty_array() {
    let (status, body) = get(&state_with(&[]), "/pong").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!([]));
}

#[tokio::test]
async fn invalid_limits_are_400_json_errors() {
    let state = state_with(&["a"]);
    for uri in [
        "/pong?limit=-1",
        "/pong?limit=abc",
        "/pong?limit=1.5",
        "/pong?limit=",
        "/pong?limit=99999999999999999999999999",
        "/pong?limit=%ZZ",
        "/pong?limit=1001",
        "/pong?limit=+5",
        "/pong?limit=%205",
        "/pong?limit=5%0A",
        "/pong?limit=1&limit=2",
        "/pong?from=last",
    ] {
        let (status, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body:?}");
        assert!(body["error"].as_str().is_some(), "{uri}: {body:?}");
    }
    let (_, body) = get(&state, "/pong?limit=x").await;
    assert!(body["error"].as_str().unwrap().contains("limit"));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let state = state_with(&[]);
    let (status, body) = get(&state, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not found");
    let response = app(state)
        .oneshot(Request::post("/pong").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET,HEAD");
}

#[tokio::test]
async fn readiness_needs_broker_and_consumer() {
    let (broker_up, consumer_up) = (Flag::default(), Flag::default());
    let state =
        state_with(&[]).with_components(Arc::new(broker_up.clone()), Arc::new(consumer_up.clone()));
    let (status, _) = get(&state, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    for (broker, consumer, expected) in [
        (false, false, StatusCode::SERVICE_UNAVAILABLE),
        (true, false, StatusCode::SERVICE_UNAVAILABLE),
        (false, true, StatusCode::SERVICE_UNAVAILABLE),
        (true, true, StatusCode::OK),
    ] {
        broker_up.set(broker);
        consumer_up.set(consumer);
        let (status, body) = get(&state, "/readyz").await;
        assert_eq!(
            status, expected,
            "broker={broker} consumer={consumer}: {body:?}"
        );
    }
    // The gauges mirror readiness; they are not its source.
    state.metrics.consumer_running.set(0);
    state.metrics.store_ready.set(0);
    let (status, _) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    // The store's readiness counts too (PostgreSQL down: not ready).
    let registry = prometheus::Registry::new();
    let metrics = PongMetrics::register(&registry).unwrap();
    let state = AppState::from_parts(Arc::new(Unready), None, registry, metrics)
        .with_components(Arc::new(broker_up), Arc::new(consumer_up));
    let (status, body) = get(&state, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["failing"], serde_json::json!(["store"]));
}

/// A broker connection whose manager is stuck past its bounded waits.
struct StalledBroker;

impl Probe for StalledBroker {
    fn is_up(&self) -> bool {
        false
    }

    fn is_stalled(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn liveness_fails_while_the_connection_manager_is_stuck() {
    let state = state_with(&[]).with_components(Arc::new(StalledBroker), Arc::new(Flag::default()));
    let (status, body) = get(&state, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "stalled");
    assert_eq!(body["failing"], serde_json::json!(["broker"]));
}

/// A store that is never ready (as PostgreSQL while unreachable).
struct Unready;

impl MessageSink for Unready {
    fn store(
        &self,
        message: Message,
        _received_at: OffsetDateTime,
    ) -> BoxFuture<'_, Result<InsertOutcome, StoreError>> {
        Box::pin(std::future::ready(Err(StoreError::Timeout {
            target: format!("nowhere ({})", message.id),
            op: "insert",
            seconds: 0,
        })))
    }
}

impl MessageStore for Unready {
    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    fn is_ready(&self) -> bool {
        false
    }

    fn list(&self, _query: ListQuery) -> BoxFuture<'_, Result<Page, StoreError>> {
        Box::pin(std::future::ready(Ok(Page {
            json: "[]".to_owned(),
            next: None,
            cut: false,
        })))
    }

    fn version(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

#[tokio::test]
async fn after_walks_pages_oldest_first_and_unknown_cursors_are_404() {
    let store = Arc::new(MemoryStore::new(NonZeroUsize::new(100).unwrap()));
    let messages: Vec<Message> = (0..7).map(|i| Message::new(format!("m{i}"))).collect();
    for message in &messages {
        store.insert(message, OffsetDateTime::now_utc()).unwrap();
    }
    let state = AppState::new(store).unwrap();
    let id = |i: usize| messages[i].id.to_string();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("/pong?after={}", id(0)),
            vec!["m1", "m2", "m3", "m4", "m5", "m6"],
        ),
        (format!("/pong?after={}&limit=2", id(0)), vec!["m1", "m2"]),
        (format!("/pong?after={}&limit=2", id(4)), vec!["m5", "m6"]),
        (format!("/pong?after={}&limit=10", id(5)), vec!["m6"]),
        (format!("/pong?after={}", id(6)), vec![]),
        (format!("/pong?after={}&limit=0", id(1)), vec![]),
    ];
    for (uri, expected) in &cases {
        let (status, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(&texts(&body), expected, "{uri}");
    }
    // A client walking pages of 3 from the start sees everything once.
    let (_, first) = get(&state, "/pong?limit=1").await;
    let mut seen = vec![first[0]["msg"].as_str().unwrap().to_owned()];
    let mut cursor = first[0]["id"].as_str().unwrap().to_owned();
    loop {
        let (_, page) = get(&state, &format!("/pong?after={cursor}&limit=3")).await;
        let page = page.as_array().unwrap().clone();
        let Some(last) = page.last() else { break };
        cursor = last["id"].as_str().unwrap().to_owned();
        seen.extend(page.iter().map(|m| m["msg"].as_str().unwrap().to_owned()));
    }
    let expected: Vec<String> = (0..7).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected);

    let unknown = uuid::Uuid::new_v4();
    let (status, body) = get(&state, &format!("/pong?after={unknown}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:?}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&unknown.to_string())
    );
    for uri in [
        "/pong?after=not-a-uuid",
        "/pong?after=",
        "/pong?after=123&limit=2",
    ] {
        let (status, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body:?}");
        assert!(body["error"].as_str().unwrap().contains("after"), "{uri}");
    }
}

/// The checked-in list of metric families (`metrics.txt`, also read by the
/// Grafana dashboard test); renaming one must show up there in review.
fn metric_names_checked_in() -> Vec<&'static str> {
    pingpong_common::metrics::listed_names(include_str!("../../metrics.txt"))
}

#[tokio::test]
async fn metrics_use_route_templates_and_the_checked_in_names() {
    let state = state_with(&[]);
    get(&state, "/pong").await;
    get(&state, "/random/raw/path").await;
    state.metrics.dead_lettered.with_label_values(&["Invalid"]);
    state.metrics.db_query_duration.with_label_values(&["list"]);
    let (status, body) = get(&state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(
        text.contains(
            r#"pingpong_pong_http_requests_total{method="GET",route="/pong",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(
        text.contains(r#"pingpong_pong_store_info{store="memory"} 1"#),
        "{text}"
    );
    assert!(!text.contains("/random/raw/path"));
    assert_eq!(
        pingpong_common::metrics::metric_names(&state.registry),
        metric_names_checked_in()
    );
}

pub fn parse(vars: &[(&str, &str)]) -> Result<Config, pingpong_common::ConfigError> {
    let map: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(&move |key: &str| map.get(key).cloned())
}

#[test]
fn config_defaults_and_max_messages() {
    let config = parse(&[]).unwrap();
    assert_eq!(config.listen_addr, "0.0.0.0:8002".parse().unwrap());
    assert_eq!(config.max_messages.get(), 100_000);
    assert_eq!(
        parse(&[("PONG_MAX_MESSAGES", "5")])
            .unwrap()
            .max_messages
            .get(),
        5
    );
    assert_eq!(config.max_bytes.get(), 64 * 1024 * 1024);
    assert_eq!(
        parse(&[("PONG_MAX_BYTES", "1048576")])
            .unwrap()
            .max_bytes
            .get(),
        1024 * 1024
    );
    for bad in ["0", "1048575", "-1", "64MiB"] {
        let error = parse(&[("PONG_MAX_BYTES", bad)]).unwrap_err();
        assert_eq!(error.problems.len(), 1, "{bad}: {error}");
        assert_eq!(error.problems[0].variable, "PONG_MAX_BYTES", "{bad}");
    }
    assert_eq!(config.batch_linger, std::time::Duration::from_millis(2));
    for (value, ms) in [("0", 0), ("100", 100)] {
        let linger = parse(&[("PONG_BATCH_LINGER_MS", value)])
            .unwrap()
            .batch_linger;
        assert_eq!(linger, std::time::Duration::from_millis(ms));
    }
    for bad in ["101", "-1", "2ms"] {
        let error = parse(&[("PONG_BATCH_LINGER_MS", bad)]).unwrap_err();
        assert_eq!(error.problems.len(), 1, "{bad}: {error}");
        assert_eq!(error.problems[0].variable, "PONG_BATCH_LINGER_MS", "{bad}");
    }
    let summary = parse(&[("RABBITMQ_DEFAULT_PASS", "hunter2-secret")])
        .unwrap()
        .summary();
    assert!(!summary.contains("hunter2-secret"), "{summary}");
}

#[test]
fn config_reports_every_bad_variable() {
    let err = parse(&[
        ("PONG_MAX_MESSAGES", "0"),
        ("LISTEN_ADDR", "8002"),
        ("RABBITMQ_PORT", "x"),
        ("RABBITMQ_DEFAULT_PASS", "hunter2-secret"),
    ])
    .unwrap_err();
    let mut names: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
    names.sort_unstable();
    assert_eq!(names, ["LISTEN_ADDR", "PONG_MAX_MESSAGES", "RABBITMQ_PORT"]);
    assert!(!format!("{err} {err:?}").contains("hunter2-secret"));
    assert!(parse(&[("PONG_MAX_MESSAGES", "lots")]).is_err());
}

#[test]
fn store_and_cache_configuration() {
    use pingpong_pong::StoreConfig;
    let config = parse(&[]).unwrap();
    assert!(matches!(config.store, StoreConfig::Memory));
    assert!(config.cache.is_none());

    let config = parse(&[
        ("PONG_STORE", "postgres"),
        ("PGHOST", "db.example"),
        ("PGPORT", "6543"),
        ("PGUSER", "pong"),
        ("PGPASSWORD", "hunter2-secret"),
        ("PONG_DB_POOL_SIZE", "3"),
        ("REDIS_URL", "redis://:hunter2-secret@cache.example:6380/1"),
        ("PONG_CACHE_TTL", "5"),
        ("PONG_CACHE_PREFIX", "t:"),
    ])
    .unwrap();
    let StoreConfig::Postgres(pg) = &config.store else {
        panic!("expected postgres: {config:?}");
    };
    assert_eq!(
        pg.target(),
        "db.example:6543/pong",
        "database defaults to the user"
    );
    assert_eq!(pg.pool_size.get(), 3);
    assert_eq!(
        pg.connect_config().get_password(),
        Some(&b"hunter2-secret"[..])
    );
    let cache = config.cache.as_ref().unwrap();
    assert_eq!(cache.target, "cache.example:6380");
    assert_eq!((cache.ttl.get(), cache.prefix.as_str()), (5, "t:"));
    let shown = format!("{config:?} {}", config.summary());
    assert!(!shown.contains("hunter2-secret"), "{shown}");
    assert!(shown.contains("db.example:6543/pong"), "{shown}");

    // DATABASE_URL wins; PG* fill in only what it leaves out (a URL always
    // has a port: 5432 when not written).
    let config = parse(&[
        ("PONG_STORE", "postgres"),
        ("DATABASE_URL", "postgres://10.0.0.9/messages"),
        ("PGUSER", "app"),
        ("PGPASSWORD", "hunter2-secret"),
        ("PGHOST", "ignored.example"),
        ("PGDATABASE", "ignored"),
    ])
    .unwrap();
    let StoreConfig::Postgres(pg) = &config.store else {
        panic!("expected postgres");
    };
    assert_eq!(pg.target(), "10.0.0.9:5432/messages");
    assert_eq!(pg.connect_config().get_user(), Some("app"));
    assert_eq!(
        pg.connect_config().get_password(),
        Some(&b"hunter2-secret"[..])
    );
    assert!(!format!("{config:?} {}", config.summary()).contains("hunter2-secret"));
}

#[test]
fn bad_store_and_cache_settings_are_reported_together() {
    let err = parse(&[
        ("PONG_STORE", "mysql"),
        ("REDIS_URL", "redis://:hunter2-secret@cache:6379"),
    ])
    .unwrap_err();
    let names: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
    assert_eq!(names, ["PONG_STORE", "REDIS_URL"], "{err}");

    let err = parse(&[
        ("PONG_STORE", "postgres"),
        ("DATABASE_URL", "postgres://u:hunter2-secret@h:notaport/db"),
        ("PGSSLMODE", "verify-full"),
        ("PONG_DB_POOL_SIZE", "0"),
        ("REDIS_URL", "http://hunter2-secret@nowhere"),
        ("PONG_CACHE_TTL", "-1"),
    ])
    .unwrap_err();
    let mut names: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "DATABASE_URL",
            "PGSSLMODE",
            "PONG_CACHE_TTL",
            "PONG_DB_POOL_SIZE",
            "REDIS_URL"
        ],
        "{err}"
    );
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");

    let err = parse(&[
        ("PONG_STORE", "postgres"),
        ("DATABASE_URL", "postgres://h/db?sslmode=require"),
    ])
    .unwrap_err();
    assert_eq!(err.problems[0].variable, "DATABASE_URL");
}

#[tokio::test]
async fn without_limit_pages_are_bounded_and_link_to_the_next_until_the_end() {
    let names: Vec<String> = (0..250).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let state = state_with_capacity(&refs, 1000);
    let mut uri = "/pong".to_owned();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (status, headers, body) = get_with_headers(&state, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let page = texts(&body);
        assert!(
            page.len() <= pingpong_pong::handlers::DEFAULT_LIMIT,
            "{uri}"
        );
        seen.extend(page.iter().map(|t| (*t).to_owned()));
        pages += 1;
        let Some(link) = headers.get("link") else {
            break;
        };
        let link = link.to_str().unwrap();
        let last = body.as_array().unwrap().last().unwrap()["id"]
            .as_str()
            .unwrap();
        assert_eq!(
            link,
            format!("</pong?after={last}&limit=100>; rel=\"next\"")
        );
        uri = link
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .unwrap()
            .0
            .to_owned();
        assert!(pages < 10, "the pages do not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, names);

    // An explicit limit walks the same way; the newest page has no next.
    let (_, headers, body) = get_with_headers(&state, "/pong?limit=1000").await;
    assert_eq!(texts(&body).len(), 250);
    assert!(headers.get("link").is_none());
    let (_, headers, body) = get_with_headers(&state, "/pong?from=newest&limit=3").await;
    assert_eq!(texts(&body), ["m247", "m248", "m249"]);
    assert!(headers.get("link").is_none());
    assert!(headers.get("pong-page-cut").is_none());
}

#[tokio::test]
async fn a_page_cut_by_the_byte_bound_says_so_and_links_to_the_rest() {
    // 100 KiB messages: ten fit in the 1 MiB page bound, not twenty.
    let big: Vec<String> = (0..30)
        .map(|i| format!("{i:02}{}", "x".repeat(100 * 1024)))
        .collect();
    let refs: Vec<&str> = big.iter().map(String::as_str).collect();
    let state = state_with_capacity(&refs, 100);
    for uri in ["/pong?limit=20", "/pong?from=newest&limit=20"] {
        let (status, headers, body) = get_with_headers(&state, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let page = texts(&body);
        assert!(page.len() < 20 && !page.is_empty(), "{uri}: {}", page.len());
        assert_eq!(headers["pong-page-cut"], "bytes", "{uri}");
        let last = body.as_array().unwrap().last().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            headers["link"].to_str().unwrap(),
            format!("</pong?after={last}&limit=20>; rel=\"next\""),
            "{uri}"
        );
        // The rest is one page away, starting right after the cut.
        let (_, rest) = get(&state, &format!("/pong?after={last}&limit=20")).await;
        let first_of_rest = &texts(&rest)[0][..2];
        let last_of_page = &page[page.len() - 1][..2];
        assert_eq!(
            first_of_rest.parse::<u32>().unwrap(),
            last_of_page.parse::<u32>().unwrap() + 1,
            "{uri}"
        );
    }
    // A page the limit ended is not cut.
    let (_, headers, _) = get_with_headers(&state, "/pong?limit=2").await;
    assert!(headers.get("pong-page-cut").is_none());
}

fn state_with_capacity(messages: &[&str], capacity: usize) -> AppState {
    let store = Arc::new(MemoryStore::new(NonZeroUsize::new(capacity).unwrap()));
    for text in messages {
        store
            .insert(&Message::new(*text), OffsetDateTime::now_utc())
            .unwrap();
    }
    AppState::new(store).unwrap()
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_status() {
    let state = state_with(&["a"]);
    let (status, doc) = get(&state, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "pong");
    let expected: [(&str, &str, &[&str]); 5] = [
        (
            "/pong",
            "get",
            &["200", "400", "404", "405", "414", "431", "500", "503"],
        ),
        ("/readyz", "get", &["200", "405", "503"]),
        ("/healthz", "get", &["200", "405", "503"]),
        ("/metrics", "get", &["200", "405"]),
        ("/openapi.json", "get", &["200", "405"]),
    ];
    pingpong_common::testing::assert_openapi_routes(&doc, &expected);
    let pong = &doc["paths"]["/pong"]["get"];
    let params: Vec<&str> = pong["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["limit", "from", "after"]);
    assert_eq!(
        pong["parameters"][1]["schema"]["enum"],
        serde_json::json!(["oldest", "newest"])
    );
    assert!(pong["responses"]["200"]["headers"]["Pong-Page-Cut"].is_object());
    assert_eq!(pong["parameters"][0]["schema"]["maximum"], 1000);
    assert!(pong["responses"]["200"]["headers"]["Link"].is_object());
    assert!(pong["responses"]["503"]["headers"]["Retry-After"].is_object());
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], serde_json::json!(["error"]));
    assert_eq!(error["properties"]["error"]["type"], "string");
    let message = &doc["components"]["schemas"]["StoredMessage"];
    let mut fields: Vec<&str> = message["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["created_at", "id", "msg", "received_at"]);
}

#[test]
fn the_readme_lists_every_dead_letter_reason() {
    let readme = include_str!("../../../../README.md");
    let store_kinds = ["Serialize", "Unstorable"];
    for reason in pingpong_common::message::MessageError::KINDS
        .iter()
        .chain(&store_kinds)
    {
        assert!(
            readme.contains(&format!("| `{reason}` |")),
            "README's dead-letter table misses {reason}"
        );
    }
}

#[test]
fn the_redis_url_may_come_from_a_file_but_not_from_both() {
    let config = parse(&[
        ("PONG_STORE", "postgres"),
        ("PGHOST", "db.example"),
        ("REDIS_URL_FILE", "/etc/pingpong/redis/url"),
    ])
    .unwrap();
    let cache = config.cache.as_ref().unwrap();
    assert_eq!(cache.target, "REDIS_URL_FILE=/etc/pingpong/redis/url");
    assert!(cache.url.as_file().is_some(), "read from the file");

    let err = parse(&[
        ("PONG_STORE", "postgres"),
        ("PGHOST", "db.example"),
        ("REDIS_URL", "redis://:hunter2-secret@cache:6379"),
        ("REDIS_URL_FILE", "/etc/pingpong/redis/url"),
    ])
    .unwrap_err();
    let names: Vec<&str> = err.problems.iter().map(|p| p.variable).collect();
    assert_eq!(names, ["REDIS_URL_FILE"], "{err}");
    assert!(!err.to_string().contains("hunter2-secret"), "{err}");
}
