//! The autoscaler's cost with many stacks (`make bench-autoscale-cost`): N autoscaled
//! PingPongStacks (default 200, one namespace each, with their credentials Secrets) in the
//! in-memory API (kube-fake-client), a stub of the RabbitMQ management API on 127.0.0.1 (one
//! broker answering every stack's queue: a steady backlog, so no decision changes after the
//! first), and the real autoscaler ([`Autoscaler::round`]) run for one minute's worth of rounds
//! at the default 5 s interval, back to back. Prints, per round and per minute: the management
//! API requests, the Kubernetes API requests by verb, the wall time and the operator's CPU time
//! (the process's, minus the stub server's own thread; it includes the in-memory API's handling
//! of the requests, which a real cluster does in the API server).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark binary: panics are failures

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube_fake_client::{ClientBuilder, interceptor};
use pingpong_operator::autoscale::metrics::AutoscaleMetrics;
use pingpong_operator::autoscale::runner::{Autoscaler, DEFAULT_INTERVAL, Settings};
use pingpong_operator::crd::{PingPongStack, PingPongStackSpec, PongAutoscaling, StoreType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A queue object as the management API returns it: 500 messages held, 1 consumer, steady rates.
const QUEUE: &str = r#"{"name":"pingpong","messages_ready":300,"messages_unacknowledged":200,"consumers":1,"consumer_utilisation":0.9,"message_stats":{"publish_details":{"rate":50.0},"deliver_get_details":{"rate":50.0},"ack_details":{"rate":50.0}}}"#;

/// CPU seconds (user + system) from a `/proc/.../stat` file.
fn cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).expect("stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

/// A minimal HTTP/1.1 keep-alive server answering every request with [`QUEUE`], on its own OS
/// thread (so its CPU can be told apart). Returns its port, the request counter and the thread,
/// which ends when `stop` is dropped and returns its CPU seconds.
fn stub_management(
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (u16, Arc<AtomicU64>, std::thread::JoinHandle<f64>) {
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let serve = async {
                loop {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    let counted = counted.clone();
                    tokio::spawn(async move {
                        let mut buf = Vec::with_capacity(4096);
                        let mut chunk = [0u8; 4096];
                        loop {
                            let n = match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            buf.extend_from_slice(&chunk[..n]);
                            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                buf.drain(..end + 4);
                                counted.fetch_add(1, Ordering::Relaxed);
                                let response = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{QUEUE}",
                                    QUEUE.len()
                                );
                                if socket.write_all(response.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            };
            tokio::select! {
                _ = stop => {}
                () = serve => {}
            }
        });
        cpu_seconds("/proc/thread-self/stat")
    });
    (port, requests, thread)
}

fn stack(i: usize) -> PingPongStack {
    let mut spec = PingPongStackSpec::default();
    spec.pong.store.type_ = StoreType::Postgres;
    spec.pong.autoscaling = Some(PongAutoscaling {
        min_replicas: 1,
        max_replicas: 4,
        target_backlog_per_replica: 1000,
        scale_down_delay_seconds: 300,
        max_drain_seconds: 300,
        engine: Default::default(),
    });
    let mut s = PingPongStack::new(&format!("stack-{i}"), spec);
    s.metadata.namespace = Some(format!("bench-{i}"));
    s.metadata.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
    s
}

fn secret(i: usize) -> Secret {
    let value = |v: &str| ByteString(v.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("stack-{i}-rabbitmq-credentials")),
            namespace: Some(format!("bench-{i}")),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("username".to_owned(), value("pingpong")),
            ("password".to_owned(), value("bench-password")),
        ])),
        ..Secret::default()
    }
}

type Counts = Arc<Mutex<BTreeMap<&'static str, u64>>>;

fn counting(counts: &Counts) -> interceptor::Funcs {
    let count = |verb: &'static str| {
        let counts = counts.clone();
        move || {
            *counts.lock().unwrap().entry(verb).or_default() += 1;
        }
    };
    let (get, list, patch, status, create) = (
        count("get"),
        count("list"),
        count("patch"),
        count("patch status"),
        count("create"),
    );
    interceptor::Funcs::new()
        .get(move |_| {
            get();
            Ok(None)
        })
        .list(move |_| {
            list();
            Ok(None)
        })
        .patch(move |_| {
            patch();
            Ok(None)
        })
        .patch_status(move |_| {
            status();
            Ok(None)
        })
        .create(move |_| {
            create();
            Ok(None)
        })
}

fn summary(counts: &BTreeMap<&'static str, u64>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(verb, n)| format!("{n} {verb}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("STACKS must be a number"))
        .unwrap_or(200);
    let rounds_per_minute = (60 / DEFAULT_INTERVAL.as_secs()) as usize;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (port, management, stub) = stub_management(stopped);

    let counts: Counts = Arc::default();
    let mut builder = ClientBuilder::new()
        .with_resource::<PingPongStack>()
        .with_resource::<HorizontalPodAutoscaler>()
        .with_interceptor_funcs(counting(&counts));
    for i in 0..n {
        builder = builder.with_object(stack(i)).with_object(secret(i));
    }
    let client = builder.build().await.expect("in-memory API");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "pingpong-operator".into(),
            instance: Some("bench".into()),
        },
    );
    let metrics = AutoscaleMetrics::register(&prometheus::Registry::new()).expect("metrics");
    let settings = Settings {
        interval: DEFAULT_INTERVAL,
        watch_namespace: None,
        management_url: Some(format!("http://127.0.0.1:{port}")),
    };
    let mut autoscaler = Autoscaler::new(client.clone(), recorder, metrics, settings);
    let all: kube::Api<PingPongStack> = kube::Api::all(client);

    let mut rows = Vec::new();
    let mut minute = (Duration::ZERO, 0.0, 0u64, BTreeMap::new());
    for round in 1..=rounds_per_minute {
        // What the controller's watch keeps in its store (with the statuses written so far):
        // read here, not counted (the operator's store is fed by one watch, not per round).
        let stacks: Vec<Arc<PingPongStack>> = all
            .list(&kube::api::ListParams::default())
            .await
            .expect("stacks")
            .items
            .into_iter()
            .map(Arc::new)
            .collect();
        assert_eq!(stacks.len(), n);
        counts.lock().unwrap().clear();
        let requests_before = management.load(Ordering::Relaxed);
        let cpu_before = cpu_seconds("/proc/self/stat");
        let started = Instant::now();
        autoscaler.round(stacks).await;
        let wall = started.elapsed();
        let cpu = cpu_seconds("/proc/self/stat") - cpu_before;
        let mgmt = management.load(Ordering::Relaxed) - requests_before;
        let api = counts.lock().unwrap().clone();
        minute.0 += wall;
        minute.1 += cpu;
        minute.2 += mgmt;
        for (verb, c) in &api {
            *minute.3.entry(*verb).or_insert(0) += c;
        }
        if round <= 2 {
            rows.push((format!("round {round}"), wall, cpu, mgmt, api));
        }
    }
    drop(stop);
    let stub_cpu = stub.join().expect("stub thread");
    rows.push((
        format!("one minute ({rounds_per_minute} rounds)"),
        minute.0,
        (minute.1 - stub_cpu).max(0.0),
        minute.2,
        minute.3,
    ));

    println!(
        "| {n} stacks | wall | operator CPU | management API requests | Kubernetes API requests |"
    );
    println!("| --- | ---: | ---: | ---: | --- |");
    for (label, wall, cpu, mgmt, api) in &rows {
        println!(
            "| {label} | {:.0} ms | {:.0} ms | {mgmt} | {} |",
            wall.as_secs_f64() * 1000.0,
            cpu * 1000.0,
            summary(api)
        );
    }
    println!();
    println!(
        "CPU of the rounds 1-2 rows includes the stub server's thread ({:.0} ms over the whole \
         minute, subtracted from the minute's row). Operator CPU per minute at the default \
         {} s interval: {:.1} % of one core.",
        stub_cpu * 1000.0,
        DEFAULT_INTERVAL.as_secs(),
        (minute.1 - stub_cpu).max(0.0) / 60.0 * 100.0
    );
}
