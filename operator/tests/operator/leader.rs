//! Leader election rounds against an in-memory Lease API: create, follow, renew, take over an
//! expired Lease, release on shutdown, and the resourceVersion-conditional write.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube_fake_client::ClientBuilder;
use pingpong_operator::leader::{
    ElectionConfig, ElectionError, LEASE_NAME, release, try_acquire_or_renew,
};

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

#[tokio::test]
async fn one_leader_at_a_time_with_take_over_after_expiry_and_release() {
    let api = lease_api().await;
    let a = ElectionConfig::new("operator-a");
    let b = ElectionConfig::new("operator-b");

    assert!(
        try_acquire_or_renew(&api, &a).await.unwrap(),
        "a creates the Lease"
    );
    assert!(
        !try_acquire_or_renew(&api, &b).await.unwrap(),
        "b follows a valid Lease"
    );
    assert!(try_acquire_or_renew(&api, &a).await.unwrap(), "a renews");
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
    assert!(
        try_acquire_or_renew(&api, &b).await.unwrap(),
        "b takes over"
    );
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
        !try_acquire_or_renew(&api, &a).await.unwrap(),
        "a now follows b"
    );

    // b shuts down and releases: a takes over at once, without waiting for expiry.
    release(&api, &b).await.unwrap();
    assert_eq!(holder(&api).await, None);
    release(&api, &a).await.unwrap(); // not the holder: a no-op
    assert!(try_acquire_or_renew(&api, &a).await.unwrap());
    assert_eq!(holder(&api).await.as_deref(), Some("operator-a"));
}

#[tokio::test]
async fn a_stale_write_loses_with_a_conflict() {
    let api = lease_api().await;
    let a = ElectionConfig::new("operator-a");
    assert!(try_acquire_or_renew(&api, &a).await.unwrap());
    // Another replica read the Lease, then a renewed: the other replica's write is stale.
    let seen = api.get(LEASE_NAME).await.unwrap();
    assert!(try_acquire_or_renew(&api, &a).await.unwrap());
    let error = api
        .replace(LEASE_NAME, &PostParams::default(), &seen)
        .await
        .unwrap_err();
    let error = ElectionError::Write(error);
    assert_eq!(error.kind(), "LeaseConflict");
}
