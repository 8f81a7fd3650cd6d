//! Reconcile benchmark (`make bench-operator`): N PingPongStacks, one namespace each, reconciled
//! by the real reconcile function against the in-memory API (kube-fake-client), twice: the first
//! round creates every child, the second is the steady state. Prints a Markdown summary: total
//! time, per-reconcile p50/p99/max, and the process's peak RSS (VmHWM), which includes the
//! in-memory API's own copy of every object.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark binary: panics are failures

use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, networking::v1 as networking};
use kube::api::{Api, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube_fake_client::ClientBuilder;
use pingpong_operator::apis::ServedApis;
use pingpong_operator::crd::{PingPongStack, PingPongStackSpec, PingPongStackStatus};
use pingpong_operator::images::Images;
use pingpong_operator::metrics::{Metrics, ReconcileResult};
use pingpong_operator::reconcile::{self, Context};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn stack(i: usize) -> PingPongStack {
    let mut s = PingPongStack::new(&format!("stack-{i}"), PingPongStackSpec::default());
    s.metadata.namespace = Some(format!("bench-{i}"));
    s.status = Some(PingPongStackStatus::default());
    s
}

async fn count<K>(client: &kube::Client) -> usize
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::all(client.clone());
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .len()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn status_mib(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.1} MiB", kb / 1024.0),
        )
}

async fn round(client: &kube::Client, ctx: &Arc<Context>, n: usize) -> (Duration, Vec<Duration>) {
    let mut each = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let api: Api<PingPongStack> = Api::namespaced(client.clone(), &format!("bench-{i}"));
        let s = api.get(&format!("stack-{i}")).await.expect("stack");
        let t = Instant::now();
        reconcile::reconcile(Arc::new(s), ctx.clone())
            .await
            .expect("reconcile succeeds");
        each.push(t.elapsed());
    }
    let total = start.elapsed();
    each.sort();
    (total, each)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("STACKS must be a number"))
        .unwrap_or(1000);
    let mut builder = ClientBuilder::new().with_resource::<PingPongStack>();
    for i in 0..n {
        builder = builder.with_object(stack(i));
    }
    let client = builder.build().await.expect("in-memory API");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "pingpong-operator".into(),
            instance: Some("bench".into()),
        },
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        Metrics::new().expect("metrics"),
        recorder,
        Images::default(),
        ServedApis::default(),
    ));

    let rss_setup = status_mib("VmRSS:");
    let (first_total, first) = round(&client, &ctx, n).await;
    let rss_first = status_mib("VmRSS:");
    let (second_total, second) = round(&client, &ctx, n).await;
    assert_eq!(
        ctx.metrics.reconciliations(ReconcileResult::Success),
        2 * n as u64,
        "every reconcile succeeded"
    );
    let children = count::<apps::Deployment>(&client).await
        + count::<apps::StatefulSet>(&client).await
        + count::<core::Service>(&client).await
        + count::<core::Secret>(&client).await
        + count::<core::ConfigMap>(&client).await
        + count::<networking::Ingress>(&client).await
        + count::<networking::NetworkPolicy>(&client).await;
    assert_eq!(
        count::<apps::Deployment>(&client).await,
        2 * n,
        "ping and pong for every stack"
    );
    let per_stack = children / n.max(1);

    println!("| round | reconciles | total | per reconcile p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let first_label = format!("first (creates {per_stack} objects per stack)");
    for (name, total, each) in [
        (first_label.as_str(), first_total, &first),
        (
            "second (steady state: every child re-applied unchanged, status not written)",
            second_total,
            &second,
        ),
    ] {
        println!(
            "| {name} | {n} | {:.2} s | {} | {} | {} |",
            total.as_secs_f64(),
            ms(percentile(each, 50.0)),
            ms(percentile(each, 99.0)),
            ms(*each.last().expect("at least one stack")),
        );
    }
    println!();
    println!(
        "Peak RSS (VmHWM) of the benchmark process: {}. It includes the in-memory API, which keeps \
         every object as JSON with its managedFields: RSS was {rss_setup} after loading the {n} \
         stacks, {rss_first} after the first round created {} children.",
        status_mib("VmHWM:"),
        children
    );
}
