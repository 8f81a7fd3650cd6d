//! Leader election rounds against an in-memory Lease API: create, follow, renew, take over an
//! expired Lease, release on shutdown, and the resourceVersion-conditional write.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube_fake_client::ClientBuilder;
use pingpong_operator::leader::{ElectionConfig, ElectionError, Elector, LEASE_NAME, release, run};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn lease_api() -> Api<Lease> {
    let client = ClientBuilder::new().build().await.unwrap();
    Api::namespaced(client, "pingpong-system")
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    api.get(LEASE_NAME)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
}

#[tokio::test(start_paused = true)]
async fn one_leader_at_a_time_with_take_over_after_expiry_and_release() {
    let api = lease_api().await;
    let mut a = Elector::new(ElectionConfig::new("operator-a"));
    let mut b = Elector::new(ElectionConfig::new("operator-b"));

    assert!(
        a.try_acquire_or_renew(&api).await.unwrap(),
        "a creates the Lease"
    );
    assert!(
        !b.try_acquire_or_renew(&api).await.unwrap(),
        "b follows a valid Lease"
    );
    assert!(a.try_acquire_or_renew(&api).await.unwrap(), "a renews");
    let lease = api.get(LEASE_NAME).await.unwrap();
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(0));

    // a stops renewing: its last renewal is now older than the lease duration.
    let mut stale = lease.clone();
    stale.spec.as_mut().unwrap().renew_time =
        Some(MicroTime(Timestamp::now() - SignedDuration::from_secs(60)));
    api.replace(LEASE_NAME, &PostParams::default(), &stale)
        .await
        .unwrap();
    // b judges by its own clock: the record changed just now, so it is still valid ...
    assert!(
        !b.try_acquire_or_renew(&api).await.unwrap(),
        "the holder's timestamps are not trusted"
    );
    // ... until b has seen it unchanged for the whole lease duration.
    tokio::time::advance(Duration::from_secs(15)).await;
    assert!(b.try_acquire_or_renew(&api).await.unwrap(), "b takes over");
    assert_eq!(holder(&api).await.as_deref(), Some("operator-b"));
    let transitions = api
        .get(LEASE_NAME)
        .await
        .unwrap()
        .spec
        .unwrap()
        .lease_transitions;
    assert_eq!(transitions, Some(1));
    assert!(
        !a.try_acquire_or_renew(&api).await.unwrap(),
        "a now follows b"
    );

    // b shuts down and releases: a takes over at once, without waiting for expiry.
    release(&api, &b.config).await.unwrap();
    assert_eq!(holder(&api).await, None);
    release(&api, &a.config).await.unwrap(); // not the holder: a no-op
    assert!(a.try_acquire_or_renew(&api).await.unwrap());
    assert_eq!(holder(&api).await.as_deref(), Some("operator-a"));
}

#[tokio::test]
async fn a_stale_write_loses_with_a_conflict() {
    let api = lease_api().await;
    let mut a = Elector::new(ElectionConfig::new("operator-a"));
    assert!(a.try_acquire_or_renew(&api).await.unwrap());
    // Another replica read the Lease, then a renewed: the other replica's write is stale.
    let seen = api.get(LEASE_NAME).await.unwrap();
    assert!(a.try_acquire_or_renew(&api).await.unwrap());
    let error = api
        .replace(LEASE_NAME, &PostParams::default(), &seen)
        .await
        .unwrap_err();
    let error = ElectionError::Write(error);
    assert_eq!(error.kind(), "LeaseConflict");
}

/// A client whose every request hangs, like an API server behind a proxy that stopped answering.
fn hanging_lease_api() -> Api<Lease> {
    let service = tower::service_fn(|_: axum::http::Request<kube::client::Body>| {
        futures::future::pending::<
            Result<axum::http::Response<kube::client::Body>, std::convert::Infallible>,
        >()
    });
    Api::namespaced(
        kube::Client::new(service, "pingpong-system"),
        "pingpong-system",
    )
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewal_hangs_steps_down_within_the_renew_deadline() {
    let config = ElectionConfig::new("operator-a");
    let deadline = config.renew_deadline;
    let mut elector = Elector::new(config.clone());
    let started = tokio::time::Instant::now();
    let error = elector.round(&hanging_lease_api()).await.unwrap_err();
    assert_eq!(error.kind(), "LeaseTimeout");
    assert_eq!(
        started.elapsed(),
        deadline,
        "the round is cut at the renew deadline"
    );

    // A replica that leads when the API starts hanging stops leading at the renew deadline,
    // before the lease duration after which a standby may take over.
    let (leading, mut watch) = tokio::sync::watch::channel(true);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let elector = tokio::spawn(run(
        hanging_lease_api(),
        config.clone(),
        leading,
        || {},
        shutdown.clone(),
    ));
    let started = tokio::time::Instant::now();
    tokio::time::timeout(config.lease_duration, watch.wait_for(|l| !*l))
        .await
        .expect("stepped down before the lease expired")
        .unwrap();
    assert!(started.elapsed() <= deadline, "{:?}", started.elapsed());
    shutdown.cancel();
    elector.abort();
}

/// A Lease API that answers the first `answered` requests `delay` after they reach it (no Lease
/// yet: GET is a 404, the create succeeds) and then hangs, noting when the create reached it.
fn slow_then_hanging_lease_api(
    delay: Duration,
    answered: usize,
    created_at: Arc<Mutex<Option<tokio::time::Instant>>>,
) -> Api<Lease> {
    let seen = Arc::new(AtomicUsize::new(0));
    let service = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let created_at = Arc::clone(&created_at);
        async move {
            if n >= answered {
                futures::future::pending::<()>().await;
            }
            let (status, body) = if request.method() == axum::http::Method::GET {
                (
                    404,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "NotFound", "code": 404,
                        "message": "leases.coordination.k8s.io \"pingpong-operator-leader\" not found"}),
                )
            } else {
                *created_at.lock().unwrap() = Some(tokio::time::Instant::now());
                (
                    201,
                    serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": LEASE_NAME, "namespace": "pingpong-system",
                                     "resourceVersion": "1"},
                        "spec": {"holderIdentity": "operator-a", "leaseDurationSeconds": 15}}),
                )
            };
            // The request reached the server; its answer takes `delay` to come back.
            tokio::time::sleep(delay).await;
            let response = axum::http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(body.to_string().into_bytes()))
                .unwrap();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    Api::namespaced(
        kube::Client::new(service, "pingpong-system"),
        "pingpong-system",
    )
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_last_renewal_was_slow_steps_down_before_a_standby_may_take_over() {
    let config = ElectionConfig::new("operator-a");
    let created_at = Arc::new(Mutex::new(None));
    // Each answer takes 45 % of the renew deadline: the round (GET, then create) succeeds late,
    // long after its write reached the API server; then the API hangs.
    let delay = config.renew_deadline * 9 / 20;
    let api = slow_then_hanging_lease_api(delay, 2, Arc::clone(&created_at));
    let (leading, mut watch) = tokio::sync::watch::channel(false);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = tokio::time::Instant::now();
    let elector = tokio::spawn(run(api, config.clone(), leading, || {}, shutdown.clone()));
    watch.wait_for(|l| *l).await.unwrap();
    let led = tokio::time::Instant::now();
    assert_eq!(
        led - started,
        2 * delay,
        "leads once the slow round answered"
    );
    watch.wait_for(|l| !*l).await.unwrap();
    let stepped_down = tokio::time::Instant::now();
    let landed = created_at
        .lock()
        .unwrap()
        .expect("the create reached the API");
    // A standby that saw the write the instant it landed may take over a lease duration later;
    // the leader must be gone by then, whatever the timing of its last round.
    assert!(
        stepped_down < landed + config.lease_duration,
        "stepped down {:?} after the write landed; a standby may take over after {:?}",
        stepped_down - landed,
        config.lease_duration
    );
    // Precisely: the renew deadline after the successful round started.
    assert_eq!(stepped_down - started, config.renew_deadline);
    shutdown.cancel();
    elector.abort();
}
