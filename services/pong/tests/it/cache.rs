//! Integration tests of the Redis cache of `GET /pong` over the PostgreSQL
//! store: each test has its own database and key prefix (or its own
//! `redis-server`). Skipped with a notice when a server is missing, FAIL when
//! `CI=true` (see `support`).

use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    TestDb, database, free_port, get, get_with_headers, redis, redis_cleanup, redis_ping, texts,
};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use pingpong_common::{Message, Secret, Setting};
use pingpong_pong::config::CacheConfig;
use pingpong_pong::{AppState, Cache, Flag, PgStore, PongMetrics, app};
use prometheus::Registry;
use time::OffsetDateTime;
use tower::ServiceExt;

fn state(db: &TestDb, redis_url: &str, prefix: &str) -> AppState {
    state_with(db, Setting::Value(Secret::new(redis_url)), prefix)
}

fn state_with(db: &TestDb, url: Setting<Secret>, prefix: &str) -> AppState {
    let registry = Registry::new();
    let metrics = PongMetrics::register(&registry).unwrap();
    let store = PgStore::new(
        &db.pg_config(),
        NonZeroUsize::new(1000).unwrap(),
        metrics.clone(),
    )
    .unwrap();
    let config = CacheConfig {
        url,
        target: "test".to_owned(),
        ttl: NonZeroU64::new(60).unwrap(),
        prefix: prefix.to_owned(),
    };
    let cache = Cache::new(&config, metrics.clone()).unwrap();
    AppState::from_parts(Arc::new(store), Some(Arc::new(cache)), registry, metrics)
}

/// Stores `text` the way the consumer does before it acks.
async fn commit(state: &AppState, text: &str) -> Message {
    let message = Message::new(text);
    let outcome = state
        .store
        .store(message.clone(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        pingpong_pong::InsertOutcome::Stored { .. }
    ));
    message
}

#[tokio::test]
async fn a_warm_cache_never_hides_a_committed_message() {
    let Some((url, prefix)) = redis("pong-cache-fresh").await else {
        return;
    };
    let Some(db) = database("pong-cache-fresh").await else {
        return;
    };
    let state = state(&db, &url, &prefix);
    let first = commit(&state, "a").await;
    commit(&state, "b").await;

    // The newest page of the default size is canonical, hence cached.
    let (status, cold) = get(&state, "/pong?from=newest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(texts(&cold), ["a", "b"]);
    let (_, warm) = get(&state, "/pong?from=newest").await;
    assert_eq!(warm, cold);
    assert_eq!(
        state.metrics.cache_hits.get(),
        1,
        "the second read is a hit"
    );
    assert_eq!(state.metrics.cache_misses.get(), 1);

    // Every committed (hence ackable) message is visible to the next read,
    // however warm the cache is, for every page shape.
    let mut expected = vec!["a".to_owned(), "b".to_owned()];
    for i in 0..20 {
        let text = format!("n{i}");
        commit(&state, &text).await;
        expected.push(text);
        let (_, all) = get(&state, "/pong").await;
        assert_eq!(texts(&all), expected, "after committing n{i}");
        let (_, newest) = get(&state, "/pong?from=newest&limit=1").await;
        assert_eq!(texts(&newest), [expected.last().unwrap().as_str()]);
        let (_, page) = get(&state, &format!("/pong?after={}&limit=1000", first.id)).await;
        assert_eq!(texts(&page), expected[1..]);
        // Read twice: the repeat is served from Redis and still current.
        let (_, again) = get(&state, "/pong").await;
        assert_eq!(again, all);
    }
    assert!(state.metrics.cache_hits.get() >= 20);
    assert_eq!(state.metrics.cache_errors.get(), 0);

    let (status, body) = get(&state, &format!("/pong?after={}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    redis_cleanup(&url, &prefix).await;
    db.drop_db().await;
}

#[tokio::test]
async fn link_headers_walk_every_message_on_postgres_with_the_cache() {
    let Some((url, prefix)) = redis("pong-cache-link").await else {
        return;
    };
    let Some(db) = database("pong-cache-link").await else {
        return;
    };
    let state = state(&db, &url, &prefix);
    let names: Vec<String> = (0..250).map(|i| format!("m{i}")).collect();
    let batch: Vec<(Message, OffsetDateTime)> = names
        .iter()
        .map(|name| (Message::new(name.as_str()), OffsetDateTime::now_utc()))
        .collect();
    state.store.store_batch(&batch).await.unwrap();
    // Twice: the second walk starts from the cached first page, which must
    // keep its Link.
    for walk in 0..2 {
        let mut uri = "/pong".to_owned();
        let mut seen: Vec<String> = Vec::new();
        for _ in 0..10 {
            let (status, headers, body) = get_with_headers(&state, &uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            seen.extend(texts(&body).into_iter().map(str::to_owned));
            let Some(link) = headers.get("link") else {
                break;
            };
            uri = link
                .to_str()
                .unwrap()
                .strip_prefix('<')
                .and_then(|l| l.split_once(">; rel=\"next\""))
                .unwrap()
                .0
                .to_owned();
        }
        assert_eq!(seen, names, "walk {walk}");
    }
    assert!(state.metrics.cache_hits.get() >= 1);
    redis_cleanup(&url, &prefix).await;
    db.drop_db().await;
}

/// Keys under `prefix`.
async fn keys(url: &str, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn only_canonical_pages_are_cached_whatever_clients_ask() {
    let Some((url, prefix)) = redis("pong-cache-canonical").await else {
        return;
    };
    let Some(db) = database("pong-cache-canonical").await else {
        return;
    };
    let state = state(&db, &url, &prefix);
    let messages = [
        commit(&state, "a").await,
        commit(&state, "b").await,
        commit(&state, "c").await,
    ];
    // 600 distinct requests a client may choose: every limit, every cursor.
    let mut uris: Vec<String> = (0..=200)
        .flat_map(|n| {
            [
                format!("/pong?limit={n}"),
                format!("/pong?from=newest&limit={n}"),
            ]
        })
        .collect();
    for n in 0..=195 {
        let cursor = &messages[n % 3].id;
        uris.push(format!("/pong?after={cursor}&limit={n}"));
    }
    uris.extend(["/pong", "/pong?x=1"].map(str::to_owned));
    assert_eq!(uris.len(), 600);
    for uri in &uris {
        let (status, _) = get(&state, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    let cached = keys(&url, &prefix).await;
    let mut names: Vec<&str> = cached
        .iter()
        .map(|k| k.rsplit(':').next().unwrap())
        .collect();
    names.sort_unstable();
    // One version, two canonical pages: `/pong` (and `/pong?x=1`, the same
    // page, as `/pong?limit=100`) and `/pong?from=newest&limit=100`.
    assert_eq!(names, ["first", "newest"], "{cached:?}");
    redis_cleanup(&url, &prefix).await;
    db.drop_db().await;
}

async fn ready(state: &AppState) -> StatusCode {
    let up = Flag::default();
    up.set(true);
    let state = state
        .clone()
        .with_components(Arc::new(up.clone()), Arc::new(up));
    let response = app(state)
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.status()
}

#[tokio::test]
async fn without_redis_pages_come_from_postgres_and_pong_stays_ready() {
    let Some(db) = database("pong-cache-down").await else {
        return;
    };
    // Nothing listens on this port.
    let closed = format!("redis://127.0.0.1:{}", free_port().await);
    let state = state(&db, &closed, "pingpong:test:closed:");
    commit(&state, "a").await;
    for _ in 0..3 {
        let (status, body) = get(&state, "/pong").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(texts(&body), ["a"]);
    }
    assert!(state.metrics.cache_errors.get() >= 3);
    assert_eq!(state.metrics.cache_hits.get(), 0);
    assert_eq!(ready(&state).await, StatusCode::OK);

    // A Redis that accepts connections and never answers: the short cache
    // timeout sends every read to PostgreSQL.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("redis://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let hanging = self::state(&db, &silent_url, "pingpong:test:silent:");
    for _ in 0..3 {
        let (status, body) = get(&hanging, "/pong").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(texts(&body), ["a"]);
    }
    assert!(hanging.metrics.cache_errors.get() >= 3);
    held.abort();

    // A private redis-server that dies while warm.
    let Some((mut server, url)) = private_redis(None).await else {
        db.drop_db().await;
        return;
    };
    // A fresh pong on the same database, cached by the private server.
    let state = self::state(&db, &url, "pingpong:test:private:");
    get(&state, "/pong").await;
    let (_, warm) = get(&state, "/pong").await;
    assert_eq!(texts(&warm), ["a"]);
    assert_eq!(state.metrics.cache_hits.get(), 1);

    server.kill().await.unwrap();
    commit(&state, "b").await;
    for _ in 0..3 {
        let (status, body) = get(&state, "/pong").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(texts(&body), ["a", "b"]);
    }
    assert!(state.metrics.cache_errors.get() >= 3);
    assert_eq!(ready(&state).await, StatusCode::OK);
    db.drop_db().await;
}

/// `redis-server` on a free port (with `requirepass` when given), killed on
/// drop, and its URL; `None` (after a notice) when it is not installed outside
/// CI.
async fn private_redis(password: Option<&str>) -> Option<(tokio::process::Child, String)> {
    let port = free_port().await;
    let mut command = tokio::process::Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
    if let Some(password) = password {
        command.args(["--requirepass", password]);
    }
    let Ok(server) = command
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    else {
        assert!(
            !pingpong_common::testing::in_ci(),
            "redis-server is required (CI=true)"
        );
        eprintln!("NOTICE: redis-server not installed; skipping");
        return None;
    };
    let auth = password.map_or_else(String::new, |p| format!(":{p}@"));
    let url = format!("redis://{auth}127.0.0.1:{port}");
    pingpong_common::testing::eventually("redis-server up", Duration::from_secs(10), || {
        let url = url.clone();
        async move { redis_ping(&url).await.is_ok() }
    })
    .await;
    Some((server, url))
}

#[tokio::test]
async fn a_rotated_redis_url_file_is_used_without_a_restart() {
    let Some(db) = database("pong-cache-url-file").await else {
        return;
    };
    let Some((_server, first)) = private_redis(Some("first-secret")).await else {
        db.drop_db().await;
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("url");
    let url = |password: &str| format!("{}/0\n", first.replace("first-secret", password));
    std::fs::write(&file, url("first-secret")).unwrap();
    let state = state_with(
        &db,
        Setting::file("REDIS_URL_FILE", &file),
        "pingpong:test:url-file:",
    );
    commit(&state, "a").await;
    get(&state, "/pong").await;
    let (_, warm) = get(&state, "/pong").await;
    assert_eq!(texts(&warm), ["a"]);
    assert_eq!(
        state.metrics.cache_hits.get(),
        1,
        "cached with the file's URL"
    );

    // Rotate the password on the server and cut the connection: until the
    // file changes, every cache access fails and pages come from PostgreSQL.
    let admin = redis::Client::open(url("first-secret").trim()).unwrap();
    let mut connection = admin.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("second-secret")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async::<i64>(&mut connection)
        .await
        .unwrap();
    commit(&state, "b").await;
    let errors = state.metrics.cache_errors.get();
    for _ in 0..3 {
        let (status, body) = get(&state, "/pong").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(texts(&body), ["a", "b"]);
    }
    assert!(
        state.metrics.cache_errors.get() > errors,
        "the old password still works"
    );
    assert_eq!(state.metrics.cache_hits.get(), 1);

    // The kubelet swaps the file: the next failure reads it and reconnects.
    std::fs::write(&file, url("second-secret")).unwrap();
    let mut hits = 1;
    for _ in 0..20 {
        let (status, body) = get(&state, "/pong").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(texts(&body), ["a", "b"]);
        hits = state.metrics.cache_hits.get();
        if hits > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hits > 1, "the rotated URL file was never used");
    db.drop_db().await;
}
