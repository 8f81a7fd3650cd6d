//! Shutdown of the HTTP server over real sockets on 127.0.0.1: an idle
//! keep-alive connection is never closed under a client's next request (a
//! proxy could not retry that POST), answers after the signal close their
//! connection, and a client still sending headers does not hold the shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use pingpong_common::server::{ServeOptions, bind, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const REQUEST: &[u8] = b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<()>,
}

async fn start(drain_timeout: Duration) -> Server {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/ping", post(|| async { "ok" }));
    let (stop, stopped) = oneshot::channel::<()>();
    let options = ServeOptions {
        drain_timeout,
        ..ServeOptions::default()
    };
    let done = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        serve_with(listener, router, shutdown, options)
            .await
            .unwrap();
    });
    Server {
        addr,
        stop: Some(stop),
        done,
    }
}

/// Reads one response head and its (short, Content-Length) body.
async fn read_response(conn: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed before an answer: {data:?}");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .map_or(0, |v| v.trim().parse().unwrap());
            if body.len() >= length {
                return text;
            }
        }
    }
}

async fn closed_by_server(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_left_to_the_client_after_the_signal() {
    let mut server = start(Duration::from_secs(10)).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(REQUEST).await.unwrap();
    let first = read_response(&mut conn).await;
    assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );

    server.stop.take().unwrap().send(()).unwrap();
    // Longer than the grace given to a half-sent request: an idle connection stays open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !server.done.is_finished(),
        "shutdown closed an idle keep-alive connection"
    );
    // New connections are refused at once (a proxy retries those elsewhere).
    assert!(TcpStream::connect(server.addr).await.is_err());

    // The client's next request on its pooled connection is served, and closes it.
    conn.write_all(REQUEST).await.unwrap();
    let second = read_response(&mut conn).await;
    assert!(second.starts_with("HTTP/1.1 200 "), "{second}");
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "{second}"
    );
    assert!(closed_by_server(&mut conn).await);
    tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .expect("shutdown ends once the last connection closed")
        .unwrap();
}

#[tokio::test]
async fn a_client_that_closes_its_idle_connection_ends_the_drain() {
    let mut server = start(Duration::from_secs(30)).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(REQUEST).await.unwrap();
    read_response(&mut conn).await;
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(conn);
    tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .expect("shutdown does not wait for the drain timeout")
        .unwrap();
}

#[tokio::test]
async fn half_sent_headers_do_not_hold_the_shutdown() {
    let mut server = start(Duration::from_secs(30)).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(REQUEST).await.unwrap();
    read_response(&mut conn).await;
    // The next request's headers only partly sent.
    conn.write_all(b"POST /ping HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop.take().unwrap().send(()).unwrap();
    assert!(
        closed_by_server(&mut conn).await,
        "the half-sent request was not cut"
    );
    tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .expect("shutdown is not held by half-sent headers")
        .unwrap();
}
