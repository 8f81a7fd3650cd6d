//! Integration tests of the PostgreSQL store against the real server: each
//! test creates its own database (`pong_test_<uuid>`) and, with a broker, its
//! own queue. Skipped with a notice when PostgreSQL or RabbitMQ is missing,
//! FAIL when `CI=true` (see `support`).

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Arc;

use crate::support::{Consumer, Proxy, TestDb, WAIT, database, metrics, publish};
use pingpong_common::Message;
use pingpong_common::testing::{broker, cleanup, eventually, ready_count};
use pingpong_pong::store::postgres::migrations::{MIGRATIONS, migrate};
use pingpong_pong::store::{Incoming, StoreError};
use pingpong_pong::{InsertOutcome, ListQuery, MessageSink, MessageStore, PgStore, PongMetrics};
use prometheus::Registry;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

fn pg_store(db: &TestDb, max: usize) -> Arc<PgStore> {
    Arc::new(PgStore::new(&db.pg_config(), NonZeroUsize::new(max).unwrap(), metrics()).unwrap())
}

fn batch(texts: &[&str]) -> Vec<Incoming> {
    texts
        .iter()
        .map(|t| (Message::new(*t), OffsetDateTime::now_utc()))
        .collect()
}

async fn list(store: &dyn MessageStore, query: ListQuery) -> Vec<Value> {
    serde_json::from_str(&store.list(query).await.unwrap().json).unwrap()
}

/// Every stored message, oldest first, following the pages' next cursors.
async fn all(store: &dyn MessageStore) -> Vec<Value> {
    let mut query = ListQuery::oldest(1000);
    let mut every = Vec::new();
    for _ in 0..1000 {
        let page = store.list(query).await.unwrap();
        every.extend(serde_json::from_str::<Vec<Value>>(&page.json).unwrap());
        match page.next {
            Some(next) => query = ListQuery::after(next, 1000),
            None => return every,
        }
    }
    panic!("more than 1000 pages");
}

fn texts(page: &[Value]) -> Vec<String> {
    page.iter()
        .map(|m| m["msg"].as_str().unwrap().to_owned())
        .collect()
}

async fn row_count(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM pong_messages", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn migrations_are_idempotent_and_concurrent_runners_apply_them_once() {
    let Some(db) = database("pong-pg-migrations").await else {
        return;
    };
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(db.client().await);
    }
    let runs = futures::future::join_all(clients.iter_mut().map(migrate)).await;
    let applied: Vec<Vec<i32>> = runs.into_iter().map(Result::unwrap).collect();
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(
        applied.iter().filter(|a| **a == all).count(),
        1,
        "exactly one runner applies: {applied:?}"
    );
    assert!(applied.iter().filter(|a| **a != all).all(Vec::is_empty));
    // Again: nothing to do.
    assert_eq!(migrate(&mut clients[0]).await.unwrap(), Vec::<i32>::new());
    let recorded: i64 = clients[0]
        .query_one("SELECT count(*) FROM pong_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, MIGRATIONS.len() as i64);
    // A store on the migrated database works; so does a second one.
    let store = pg_store(&db, 10);
    store.ensure_schema().await.unwrap();
    pg_store(&db, 10).ensure_schema().await.unwrap();
    assert_eq!(store.stored().await.unwrap(), 0);
    drop(clients);
    db.drop_db().await;
}

#[tokio::test]
async fn batches_dedupe_evict_oldest_and_refuse_nul() {
    let Some(db) = database("pong-pg-store").await else {
        return;
    };
    let store = pg_store(&db, 5);
    let mut first = batch(&["a", "b", "c"]);
    first.push(first[1].clone()); // the same id twice in one batch
    let outcomes = store.store_batch(&first).await.unwrap();
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            Ok(InsertOutcome::Stored { .. }) => "stored",
            Ok(InsertOutcome::Duplicate) => "duplicate",
            Err(_) => "error",
        })
        .collect();
    assert_eq!(kinds, ["stored", "stored", "stored", "duplicate"]);

    // A redelivery is a no-op.
    assert_eq!(
        store.store_batch(&first[..1]).await.unwrap()[0]
            .as_ref()
            .unwrap(),
        &InsertOutcome::Duplicate
    );

    // NUL cannot be stored in PostgreSQL text: condemned alone, the rest of
    // the batch is stored; beyond 5 rows the oldest go.
    let second = batch(&["d", "bad\0nul", "e", "f", "g"]);
    let outcomes = store.store_batch(&second).await.unwrap();
    assert!(matches!(outcomes[1], Err(StoreError::Unstorable { .. })));
    let evicted: usize = outcomes
        .iter()
        .filter_map(|o| match o {
            Ok(InsertOutcome::Stored { evicted, .. }) => Some(*evicted),
            _ => None,
        })
        .sum();
    assert_eq!(evicted, 2);
    assert!(matches!(
        outcomes[4],
        Ok(InsertOutcome::Stored { len: 5, .. })
    ));
    let all = all(store.as_ref()).await;
    assert_eq!(texts(&all), ["c", "d", "e", "f", "g"]);
    assert_eq!(row_count(&db).await, 5);
    assert_eq!(store.stored().await.unwrap(), 5);

    // Same contract as the memory store.
    let newest = list(store.as_ref(), ListQuery::newest(2)).await;
    assert_eq!(texts(&newest), ["f", "g"]);
    let record = newest[0].as_object().unwrap();
    let keys: BTreeSet<&str> = record.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["created_at", "id", "msg", "received_at"])
    );
    let cursor = Uuid::parse_str(all[1]["id"].as_str().unwrap()).unwrap();
    let after = list(store.as_ref(), ListQuery::after(cursor, 2)).await;
    assert_eq!(texts(&after), ["e", "f"]);
    // An evicted id is an unknown cursor.
    let evicted_id = first[0].0.id;
    assert!(matches!(
        store.list(ListQuery::after(evicted_id, 100)).await,
        Err(StoreError::UnknownCursor(id)) if id == evicted_id
    ));
    db.drop_db().await;
}

#[tokio::test]
async fn keyset_pages_walk_every_row_exactly_once() {
    let Some(db) = database("pong-pg-keyset").await else {
        return;
    };
    let store = pg_store(&db, 100_000);
    let names: Vec<String> = (0..2_000).map(|i| format!("m{i}")).collect();
    for chunk in names.chunks(250) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        store.store_batch(&batch(&refs)).await.unwrap();
    }
    let first = list(store.as_ref(), ListQuery::oldest(100)).await;
    let mut seen = vec![first[0]["msg"].as_str().unwrap().to_owned()];
    let mut cursor = Uuid::parse_str(first[0]["id"].as_str().unwrap()).unwrap();
    loop {
        let page = list(store.as_ref(), ListQuery::after(cursor, 333)).await;
        let Some(last) = page.last() else { break };
        cursor = Uuid::parse_str(last["id"].as_str().unwrap()).unwrap();
        seen.extend(texts(&page));
    }
    assert_eq!(seen, names);
    // Following the pages' next cursors walks the same rows.
    assert_eq!(texts(&all(store.as_ref()).await), names);
    // A page stops before PAGE_MAX_BYTES of text (never empty), and says
    // where the rest starts.
    let big = "z".repeat(pingpong_pong::store::PAGE_MAX_BYTES / 3);
    let large: Vec<String> = (0..3).map(|i| format!("{i}{big}")).collect();
    let refs: Vec<&str> = large.iter().map(String::as_str).collect();
    store.store_batch(&batch(&refs)).await.unwrap();
    let last_small =
        Uuid::parse_str(all(store.as_ref()).await[1999]["id"].as_str().unwrap()).unwrap();
    let page = store.list(ListQuery::after(last_small, 100)).await.unwrap();
    let on_page: Vec<Value> = serde_json::from_str(&page.json).unwrap();
    assert_eq!(texts(&on_page), &large[..2]);
    assert_eq!(
        page.next.map(|id| id.to_string()),
        Some(on_page[1]["id"].as_str().unwrap().to_owned())
    );
    assert!(page.cut);
    // The newest page starts at the 3rd newest and is cut the same way.
    let newest = store.list(ListQuery::newest(3)).await.unwrap();
    let on_page: Vec<Value> = serde_json::from_str(&newest.json).unwrap();
    assert_eq!(texts(&on_page), &large[..2]);
    assert!(newest.cut);
    assert_eq!(
        newest.next.map(|id| id.to_string()),
        Some(on_page[1]["id"].as_str().unwrap().to_owned())
    );
    let newest = store.list(ListQuery::newest(2)).await.unwrap();
    let on_page: Vec<Value> = serde_json::from_str(&newest.json).unwrap();
    assert_eq!(texts(&on_page), &large[1..]);
    assert_eq!((newest.next, newest.cut), (None, false));
    db.drop_db().await;
}

#[tokio::test]
async fn two_consumers_on_one_database_and_queue_store_each_message_once_and_survive_restart() {
    let Some(db) = database("pong-pg-two-consumers").await else {
        return;
    };
    let Some((config, admin)) = broker("pong-pg-two").await else {
        db.drop_db().await;
        return;
    };
    let (store_a, store_b) = (pg_store(&db, 100_000), pg_store(&db, 100_000));
    let a = Consumer::start(&config, store_a.clone(), metrics());
    let b = Consumer::start(&config, store_b.clone(), metrics());
    a.wait_consuming().await;
    b.wait_consuming().await;

    let messages: Vec<Message> = (0..400).map(|i| Message::new(format!("m{i}"))).collect();
    for (i, message) in messages.iter().enumerate() {
        let body = message.to_json().unwrap();
        publish(&admin, config.queue.as_str(), &body).await;
        if i % 10 == 0 {
            // A redelivered duplicate, possibly to the other consumer.
            publish(&admin, config.queue.as_str(), &body).await;
        }
    }
    let s = store_a.clone();
    eventually("all 400 stored", WAIT, || {
        let s = s.clone();
        async move { s.stored().await.unwrap() == 400 }
    })
    .await;
    let queue = config.queue.as_str();
    let ad = &admin;
    eventually("everything acked", WAIT, || async move {
        ready_count(ad, queue).await == 0
    })
    .await;
    let seen_a = all(store_a.as_ref()).await;
    let seen_b = all(store_b.as_ref()).await;
    assert_eq!(seen_a, seen_b, "both replicas serve the same list");
    let ids: BTreeSet<&str> = seen_a.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 400, "no duplicates");
    assert_eq!(row_count(&db).await, 400);
    let duplicates = a.metrics.duplicates.get() + b.metrics.duplicates.get();
    assert_eq!(duplicates, 40);
    assert!(a.metrics.stored.get() > 0 || b.metrics.stored.get() > 0);
    assert_eq!(
        a.metrics.stored.get() + b.metrics.stored.get(),
        400,
        "each message counted as stored exactly once across both consumers"
    );

    // "Restart pong": drop both consumers and stores, publish while none
    // runs, start a fresh one on the same database: nothing is lost.
    a.stop().await;
    b.stop().await;
    drop((store_a, store_b));
    let later: Vec<Message> = (0..50).map(|i| Message::new(format!("later{i}"))).collect();
    for message in &later {
        publish(&admin, queue, &message.to_json().unwrap()).await;
    }
    let store = pg_store(&db, 100_000);
    let c = Consumer::start(&config, store.clone(), metrics());
    let s = store.clone();
    eventually("all 450 stored after the restart", WAIT, || {
        let s = s.clone();
        async move { s.stored().await.unwrap() == 450 }
    })
    .await;
    let all = all(store.as_ref()).await;
    let all_ids: BTreeSet<String> = all
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    for message in messages.iter().chain(&later) {
        assert!(
            all_ids.contains(&message.id.to_string()),
            "{} lost",
            message.msg
        );
    }
    c.stop().await;
    cleanup(admin, &config).await;
    db.drop_db().await;
}

#[tokio::test]
async fn nothing_is_acked_while_the_database_is_down() {
    let Some(db) = database("pong-pg-outage").await else {
        return;
    };
    let Some((config, admin)) = broker("pong-pg-outage").await else {
        db.drop_db().await;
        return;
    };
    let port = db.config.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start(format!("127.0.0.1:{port}")).await;
    let store_metrics = metrics();
    let store = Arc::new(
        PgStore::new(
            &db.via(&proxy),
            NonZeroUsize::new(1000).unwrap(),
            store_metrics.clone(),
        )
        .unwrap(),
    );
    store.ensure_schema().await.unwrap();
    let pong = Consumer::start(&config, store.clone(), store_metrics.clone());
    pong.wait_consuming().await;
    let queue = config.queue.as_str();

    proxy.down();
    let message = Message::new("during the outage");
    publish(&admin, queue, &message.to_json().unwrap()).await;
    let m = store_metrics.clone();
    eventually("the consumer met the outage", WAIT, || {
        let m = m.clone();
        async move { m.db_errors.get() > 0 }
    })
    .await;
    assert_eq!(
        store_metrics.store_ready.get(),
        0,
        "not ready while the DB is down"
    );
    assert_eq!(
        ready_count(&admin, queue).await,
        0,
        "delivered, held unacked"
    );

    // Proof it was never acked: the consumer stops (abandoning its batch while
    // the store is down), its connection goes away and the message is back in
    // the queue. Stopping it fully also leaves no task behind to outlive the
    // test's clean-up.
    pong.stop().await;
    let ad = &admin;
    eventually("the unacked message is ready again", WAIT, || async move {
        ready_count(ad, queue).await == 1
    })
    .await;
    assert_eq!(row_count(&db).await, 0);

    // The database comes back: a fresh consumer stores it, then acks it.
    proxy.up();
    let pong = Consumer::start(&config, store.clone(), store_metrics.clone());
    let s = store.clone();
    eventually("stored after the outage", WAIT, || {
        let s = s.clone();
        async move { s.stored().await.is_ok_and(|n| n == 1) }
    })
    .await;
    eventually("acked after the commit", WAIT, || async move {
        ready_count(ad, queue).await == 0
    })
    .await;
    assert_eq!(store_metrics.store_ready.get(), 1);
    let all = all(store.as_ref()).await;
    assert_eq!(all[0]["id"], message.id.to_string());
    pong.stop().await;
    cleanup(admin, &config).await;
    db.drop_db().await;
}

#[tokio::test]
async fn connection_errors_name_the_target_and_never_the_password() {
    // No server needed: nothing listens on this port.
    let port = crate::support::free_port().await;
    let url = format!("postgres://pong:hunter2-secret@127.0.0.1:{port}/messages");
    let config =
        pingpong_pong::config::PgConfig::new(url.parse().unwrap(), NonZeroUsize::new(1).unwrap());
    let store_metrics = metrics();
    let store = PgStore::new(
        &config,
        NonZeroUsize::new(10).unwrap(),
        store_metrics.clone(),
    )
    .unwrap();
    let error = store.stored().await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    let shown = format!("{error} | {error:?} | {}", error.chain());
    assert!(
        shown.contains(&format!("127.0.0.1:{port}/messages")),
        "{shown}"
    );
    assert!(shown.to_lowercase().contains("refused"), "{shown}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");
    assert!(!format!("{config:?}").contains("hunter2-secret"));
    assert_eq!(store_metrics.store_ready.get(), 0);
    assert!(store_metrics.db_errors.get() >= 1);
    // Reads fail as unavailable too (the handler turns this into a 503).
    assert!(
        store
            .list(ListQuery::oldest(100))
            .await
            .unwrap_err()
            .is_transient()
    );
}

#[tokio::test]
async fn an_idle_pong_notices_the_outage_and_answers_503_until_the_database_is_back() {
    let Some(db) = database("pong-pg-idle-outage").await else {
        return;
    };
    let port = db.config.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start(format!("127.0.0.1:{port}")).await;
    let registry = Registry::new();
    let store_metrics = PongMetrics::register(&registry).unwrap();
    let store = Arc::new(
        PgStore::new(
            &db.via(&proxy),
            NonZeroUsize::new(10).unwrap(),
            store_metrics.clone(),
        )
        .unwrap(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(store.clone().watch_health(stop.clone()));
    let state = pingpong_pong::AppState::from_parts(store.clone(), None, registry, store_metrics);
    let ready = state.metrics.store_ready.clone();
    eventually("store ready", WAIT, || {
        let ready = ready.clone();
        async move { ready.get() == 1 }
    })
    .await;
    let (status, _) = crate::support::get(&state, "/pong").await;
    assert_eq!(status, axum::http::StatusCode::OK);

    proxy.down();
    eventually("the health check noticed", WAIT, || {
        let ready = ready.clone();
        async move { ready.get() == 0 }
    })
    .await;
    let (status, body) = crate::support::get(&state, "/pong").await;
    assert_eq!(
        status,
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "{body}"
    );
    assert!(body["error"].is_string());

    proxy.up();
    eventually("ready again", WAIT, || {
        let ready = ready.clone();
        async move { ready.get() == 1 }
    })
    .await;
    let (status, body) = crate::support::get(&state, "/pong").await;
    assert_eq!(
        (status, body),
        (axum::http::StatusCode::OK, serde_json::json!([]))
    );
    stop.cancel();
    watcher.await.unwrap();
    db.drop_db().await;
}
