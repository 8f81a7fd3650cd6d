//! `pong::run` end to end with `PONG_STORE=postgres` (and Redis when it is
//! there): the real configuration path, HTTP on a real socket, a real queue,
//! then a restart of the whole service on the same database. Skipped with a
//! notice when a server is missing, FAIL when `CI=true`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::support::{WAIT, database, free_port, http_get, publish, redis, redis_cleanup};
use pingpong_common::Message;
use pingpong_common::testing::{broker, cleanup, eventually};
use pingpong_pong::{Config, run};
use serde_json::Value;
use tokio::sync::oneshot;

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start(vars: &BTreeMap<String, String>) -> Running {
    let config = Config::from_lookup(&|key: &str| vars.get(key).cloned()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run(config, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running { stop, task }
}

async fn stop(running: Running) {
    let _ = running.stop.send(());
    running.task.await.unwrap();
}

async fn wait_ready(addr: SocketAddr) {
    eventually("pong ready", WAIT, || async move {
        matches!(http_get(addr, "/readyz").await, Some((200, _)))
    })
    .await;
}

async fn listed(addr: SocketAddr) -> Vec<String> {
    let (status, body) = http_get(addr, "/pong").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let list: Vec<Value> = serde_json::from_str(&body).unwrap();
    list.iter()
        .map(|m| m["msg"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pong_on_postgres_serves_what_it_consumed_across_a_restart() {
    let Some(db) = database("pong-run").await else {
        return;
    };
    let Some((amqp, admin)) = broker("pong-run").await else {
        db.drop_db().await;
        return;
    };
    let cache = redis("pong-run").await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port().await).parse().unwrap();
    let pg = &db.config;
    let host = "127.0.0.1";
    let mut vars: BTreeMap<String, String> = [
        ("LISTEN_ADDR", addr.to_string()),
        ("RABBITMQ_ADDRESSES", amqp.addresses.to_string()),
        ("RABBITMQ_VHOST", amqp.vhost.clone()),
        ("RABBITMQ_DEFAULT_USER", amqp.user.read().unwrap()),
        (
            "RABBITMQ_DEFAULT_PASS",
            amqp.password.read().unwrap().expose().to_owned(),
        ),
        ("RABBITMQ_QUEUE", amqp.queue.to_string()),
        ("PONG_STORE", "postgres".to_owned()),
        ("PGHOST", host.to_owned()),
        (
            "PGPORT",
            pg.get_ports().first().copied().unwrap_or(5432).to_string(),
        ),
        ("PGUSER", pg.get_user().unwrap_or("postgres").to_owned()),
        ("PGDATABASE", db.name.clone()),
        ("PONG_MAX_MESSAGES", "1000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some((url, prefix)) = &cache {
        vars.insert("REDIS_URL".to_owned(), url.clone());
        vars.insert("PONG_CACHE_PREFIX".to_owned(), prefix.clone());
    }

    let pong = start(&vars);
    wait_ready(addr).await;
    let queue = amqp.queue.as_str();
    let first: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for text in &first {
        publish(
            &admin,
            queue,
            &Message::new(text.as_str()).to_json().unwrap(),
        )
        .await;
    }
    eventually("20 listed", WAIT, || async move {
        listed(addr).await.len() == 20
    })
    .await;
    assert_eq!(listed(addr).await, first);
    stop(pong).await;

    // Restart: the list is there before anything new arrives.
    let pong = start(&vars);
    wait_ready(addr).await;
    assert_eq!(listed(addr).await, first);
    let later = Message::new("after the restart");
    publish(&admin, queue, &later.to_json().unwrap()).await;
    eventually("21 listed", WAIT, || async move {
        listed(addr).await.len() == 21
    })
    .await;
    let (status, body) = http_get(addr, "/pong?from=newest&limit=1").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(&later.id.to_string()), "{body}");
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"pingpong_pong_store_info{store="postgres"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("pingpong_pong_store_ready 1"), "{metrics}");
    stop(pong).await;

    if let Some((url, prefix)) = &cache {
        redis_cleanup(url, prefix).await;
    }
    cleanup(admin, &amqp).await;
    db.drop_db().await;
}
