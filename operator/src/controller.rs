//! The `run` subcommand: start-up checks, the metrics server, leader election and the
//! kube-runtime Controller that drives [`crate::reconcile`].
//!
//! Start-up fails fast, with a message that says what to do, when the PingPongStack CRD is not
//! installed. Only the replica holding the leader Lease runs the Controller; losing the Lease drops
//! it at once, reconciles in progress included (one stuck on a hung API server must not write
//! when the API answers again while another replica leads), and the replica goes back to waiting.
//! SIGTERM/Ctrl-C stop the controller and let its running reconciles finish while the Lease is
//! still renewed; only then is the Lease released. This module holds no reconcile logic.

use crate::apis::ServedApis;
use crate::config::Config;
use crate::crd::PingPongStack;
use crate::labels;
use crate::leader::{self, ElectionConfig};
use crate::metrics::Metrics;
use crate::reconcile::cache::{CachedChild, ChildCaches};
use crate::reconcile::desired::ChildKind;
use crate::reconcile::upgrade_gate::UpgradeGate;
use crate::reconcile::{self, Context};
use crate::server::{self, AppState, Health};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Reconciles running at once (the Controller never runs two for the same stack).
pub const CONCURRENCY: u16 = 8;
/// How long a stack's reconcile waits for its events to settle: the burst of watch events its
/// children send while they are created and roll out (several status writes per workload)
/// folds into one reconcile instead of one each (kube-runtime's trailing-edge debounce; a
/// requeue is delayed by as much).
pub const DEBOUNCE: std::time::Duration = std::time::Duration::from_secs(1);
/// How often the readiness task looks again whether the PingPongStack cache has synced.
const SYNC_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// Name reported as the Events' `reportingController`.
pub const CONTROLLER_NAME: &str = "pingpong-operator";

/// Why the operator could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig or in-cluster configuration.
    #[error("cannot build a Kubernetes client (no kubeconfig or in-cluster service account)")]
    Client(#[source] kube::Error),
    /// The CRD check itself failed.
    #[error("cannot check whether the PingPongStack CRD is installed")]
    CrdCheck(#[source] kube::Error),
    /// The CRD is missing.
    #[error(
        "the PingPongStack CRD ({0}) is not installed or does not serve {1}: install it with \
         `kubectl apply -f manifests/crd.yaml` (or `pingpong-operator crd | kubectl apply -f -`) \
         before starting the operator"
    )]
    CrdMissing(String, String),
    /// Metrics registration failed.
    #[error("cannot register metrics")]
    Metrics(#[source] prometheus::Error),
    /// The metrics/health server failed.
    #[error("metrics server on {addr} failed")]
    Server {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the operator until SIGTERM/Ctrl-C.
pub async fn run(config: Config) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let crd_name = PingPongStack::crd_name();
    let version = PingPongStack::version(&()).into_owned();
    if !crate::apis::crd_serves(&client, crd_name, &version)
        .await
        .map_err(RunError::CrdCheck)?
    {
        return Err(RunError::CrdMissing(crd_name.to_owned(), version));
    }
    let metrics = Metrics::with_spans(config.spans.clone()).map_err(RunError::Metrics)?;
    let health = Health::new();
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));

    let state = AppState {
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let addr = config.metrics_addr;
    let server = tokio::spawn(server::serve(
        addr,
        state,
        shutdown.clone().cancelled_owned(),
    ));

    let (leading_tx, mut leading) = watch::channel(config.leader_election.is_none());
    // The elector stops (and releases the Lease) only once the controller has stopped, its
    // running reconciles finished: stopping it on the signal itself would hand the Lease to
    // another replica while this one still writes, and its "not leading" would drop those
    // reconciles half-way.
    let release = CancellationToken::new();
    let elector = config.leader_election.clone().map(|le| {
        let api: Api<Lease> = Api::namespaced(client.clone(), &le.namespace);
        let h = health.clone();
        tokio::spawn(leader::run(
            api,
            ElectionConfig::new(le.identity),
            leading_tx,
            move || h.set_standby(),
            release.clone(),
        ))
    });
    tracing::info!(
        watch_namespace = config.watch_namespace.as_deref().unwrap_or("<all>"),
        metrics_addr = %addr,
        leader_election = config.leader_election.is_some(),
        "pingpong-operator starting"
    );

    while !shutdown.is_cancelled() {
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
        }
        metrics.set_leader(true);
        health.set_leading();
        let stop = shutdown.child_token();
        let lost = CancellationToken::new();
        let mut leading_watch = leading.clone();
        {
            let (stop, lost) = (stop.clone(), lost.clone());
            tokio::spawn(async move {
                // Err means the elector is gone (no election, or shutting down): nothing was lost.
                if leading_watch.wait_for(|l| !*l).await.is_ok() {
                    stop.cancel();
                    lost.cancel();
                }
            });
        }
        let stopped = stop.clone();
        let controller = run_controller(
            client.clone(),
            &config,
            metrics.clone(),
            health.clone(),
            stop,
        );
        let finished = run_unless_lost(controller, &lost).await;
        if !finished {
            tracing::warn!("lost leadership; dropped the controller and its running reconciles");
        } else if shutdown.is_cancelled() {
            tracing::info!("controller stopped; its running reconciles finished");
        }
        if restart_after(finished, stopped.is_cancelled()) {
            // Restarted to watch an optional API that appeared; still leading.
            continue;
        }
        metrics.set_leader(false);
        if !shutdown.is_cancelled() {
            tracing::warn!("lost leadership; controller stopped, waiting for the Lease again");
            health.set_standby();
        }
    }
    release.cancel();
    if let Some(elector) = elector {
        let _ = elector.await;
    }
    match server.await {
        Ok(Err(source)) => Err(RunError::Server { addr, source }),
        _ => Ok(()),
    }
}

/// Runs `controller` to its end and returns true, unless leadership is `lost` first: then the
/// controller is dropped at once with the reconciles it was running (a graceful stop would wait
/// for a reconcile stuck on a hung API server, which could still write once the API answers,
/// while another replica leads), and this returns false.
/// Whether the leader loop starts the controller again at once: only when the controller ended
/// on its own (to watch an optional API that appeared) and nothing asked it to stop. A controller
/// dropped because the Lease was lost is never restarted here, even if the loop sees the loss
/// before the stop token (two tokens, two threads).
fn restart_after(finished: bool, stop_requested: bool) -> bool {
    finished && !stop_requested
}

async fn run_unless_lost(
    controller: impl std::future::Future<Output = ()>,
    lost: &CancellationToken,
) -> bool {
    tokio::select! {
        biased;
        () = lost.cancelled() => false,
        () = controller => true,
    }
}

async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing running reconciles");
    token.cancel();
}

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = ()>,
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The watch of the children: only objects carrying the operator's `managed-by` label, and only
/// their metadata (the owner reference is all the Controller needs).
fn children_watch() -> watcher::Config {
    watcher::Config::default().labels(&labels::managed_by_selector())
}

/// The API one child kind is watched through. Its type is [`CachedChild`], a
/// `PartialObjectMeta`, so its lists and watches are metadata-only on the wire: kube (3.1 and
/// later) sends `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` for
/// every `Api<PartialObjectMeta<K>>` (what the deprecated `metadata_watcher` did), and the API
/// server sends only metadata. `child_watches_are_metadata_only` below proves it on the requests.
fn child_api(client: &Client, namespace: Option<&str>, kind: ChildKind) -> Api<CachedChild> {
    let resource = kind.api_resource();
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Watches one child kind, metadata only ([`child_api`]), into its cache in `caches`; every
/// event triggers the reconcile of the owning stack.
fn own_kind(
    controller: Controller<DeserializeGuard<PingPongStack>>,
    client: &Client,
    namespace: Option<&str>,
    kind: ChildKind,
    caches: &mut ChildCaches,
) -> Controller<DeserializeGuard<PingPongStack>> {
    let resource = kind.api_resource();
    let api = child_api(client, namespace, kind);
    let writer = reflector::store::Writer::<CachedChild>::new(resource.clone());
    let listed = caches.insert(kind, writer.as_reader());
    let stream = watcher::watcher(api, children_watch())
        .default_backoff()
        // Owner references and names are all that is read; managedFields are most of an
        // object's metadata.
        .modify(|child: &mut CachedChild| child.metadata.managed_fields = None)
        .reflect(writer)
        .inspect_ok(move |event| {
            if matches!(event, watcher::Event::InitDone) {
                listed.set();
            }
        })
        .touched_objects();
    controller.owns_stream_with(stream, resource)
}

/// Adds a watch for every child kind the operator writes (Secrets excepted: they are read by
/// name, never listed) whose API the cluster serves, and returns the caches those watches fill.
fn owns_children(
    mut controller: Controller<DeserializeGuard<PingPongStack>>,
    client: &Client,
    namespace: Option<&str>,
    served: ServedApis,
) -> (Controller<DeserializeGuard<PingPongStack>>, ChildCaches) {
    let mut caches = ChildCaches::default();
    for kind in ChildKind::ALL {
        let watched =
            kind != ChildKind::Secret && kind.optional_api().is_none_or(|api| served.serves(api));
        if watched {
            controller = own_kind(controller, client, namespace, kind, &mut caches);
        }
    }
    (controller, caches)
}

/// What a stack event must change to trigger a reconcile: its generation (the spec), labels,
/// annotations (`kubectl annotate pps NAME reconcile=...` forces one), deletion, or the one part
/// of the status the reconcile reads as input: the pong replicas an autoscaled stack applies
/// (the autoscaler's decision in `status.autoscaling`) and whether the broker check found the
/// broker split (`status.brokerCluster`). Never the rest of the status.
pub fn stack_changed(stack: &DeserializeGuard<PingPongStack>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = stack.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut hasher);
    stack
        .0
        .as_ref()
        .ok()
        .map(crate::autoscale::applied_replicas)
        .hash(&mut hasher);
    // The broker check's verdict decides Ready: a split found or healed must reach it.
    stack
        .0
        .as_ref()
        .ok()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.broker_cluster.as_ref())
        .map(|b| b.state == crate::crd::BrokerClusterState::Partitioned)
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Asks the API server which optional APIs it serves every [`crate::apis::REFRESH`] until
/// `stop` (a change notifies the context's subscribers, which restart the controller); never
/// inside a reconcile, so a stack that asks for a missing API costs no discovery.
async fn refresh_apis(context: Arc<Context>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(crate::apis::REFRESH);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate: the controller has just asked
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if let Err(error) = context.relearn_apis().await {
            tracing::warn!(
                error = %crate::error::chain(&error),
                "cannot check the optional APIs; keeping what was known"
            );
        }
    }
}

async fn run_controller(
    client: Client,
    config: &Config,
    metrics: Metrics,
    health: Health,
    stop: CancellationToken,
) {
    let ns = config.watch_namespace.as_deref();
    // Learned once per controller run, then asked again every `apis::REFRESH` below; a change
    // restarts the run (the new kind is watched, every stack reconciled again).
    let served = match ServedApis::discover(&client).await {
        Ok(served) => served,
        Err(error) => {
            tracing::warn!(
                error = %crate::error::chain(&error),
                "cannot check the optional APIs; assuming none is served"
            );
            ServedApis::default()
        }
    };
    tracing::info!(
        http_route = served.http_route,
        service_monitor = served.service_monitor,
        prometheus_rule = served.prometheus_rule,
        "optional APIs"
    );
    let reporter = Reporter {
        controller: CONTROLLER_NAME.to_owned(),
        instance: config.instance.clone(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let restart = stop.child_token();
    let stacks: Api<DeserializeGuard<PingPongStack>> = api_for(&client, ns);
    // The store sees every change (the autoscaler and the readiness gauge read it); reconciles
    // are triggered only by what the user or a controller changed about the stack itself, not
    // by status writes (ours would re-trigger a failed reconcile past its backoff, the
    // autoscaler's would reconcile every stack on every decision).
    let (reader, writer) = reflector::store();
    let trigger = watcher::watcher(stacks, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(stack_changed, PredicateConfig::default());
    let controller = Controller::for_stream(trigger, reader)
        .with_config(
            ControllerConfig::default()
                .concurrency(CONCURRENCY)
                .debounce(DEBOUNCE),
        )
        .graceful_shutdown_on(restart.clone().cancelled_owned());
    let (controller, children) = owns_children(controller, &client, ns, served);
    let context = Arc::new(
        Context::new(
            client.clone(),
            metrics.clone(),
            recorder,
            config.images.clone(),
            served,
        )
        .with_child_caches(children)
        .with_allowed_secrets(config.allowed_secrets.clone())
        .with_default_gateway(config.default_gateway.clone())
        .with_upgrade_gate(UpgradeGate::new(
            config.max_concurrent_upgrades,
            config.watch_namespace.clone(),
        )),
    );
    let mut apis_changed = context.subscribe_apis();
    let on_change = restart.clone();
    tokio::spawn(async move {
        tokio::select! {
            changed = apis_changed.changed() => if changed.is_ok() {
                tracing::info!("an optional API appeared or went away; restarting the controller");
                on_change.cancel();
            },
            () = on_change.cancelled() => {}
        }
    });
    tokio::spawn(refresh_apis(Arc::clone(&context), restart.clone()));
    let store = controller.store();
    // The autoscaler reads the controller's cache on its own timer, never inside a reconcile,
    // and stops with this controller run (and so with the Lease).
    let autoscaler = crate::autoscale::runner::Autoscaler::new(
        client.clone(),
        context.recorder.clone(),
        metrics.autoscale.clone(),
        config.autoscale.clone(),
    );
    tokio::spawn(autoscaler.run(store.clone(), restart.clone()));
    // The same for the broker membership check of clustered brokers.
    let broker_check =
        crate::broker_check::runner::BrokerCheck::new(client.clone(), context.recorder.clone());
    tokio::spawn(broker_check.run(store.clone(), restart.clone()));
    let synced = store.clone();
    tokio::spawn(async move {
        // The store's readiness is a one-shot channel that wakes only the waiter that polled it
        // last, and the controller's own applier waits on it too: a single long wait here is
        // never woken (seen on a real API server: /readyz stuck at "cache syncing"). A fresh wait
        // every second finds the memoized value once the first list is in.
        loop {
            match tokio::time::timeout(SYNC_POLL, synced.wait_until_ready()).await {
                Ok(Ok(())) => {
                    tracing::info!("PingPongStack cache synced");
                    health.set_synced();
                    break;
                }
                Ok(Err(_)) => break, // the controller stopped before its first list
                Err(_elapsed) => {}
            }
        }
    });
    let bookkeeping = Arc::clone(&context);
    controller
        .run(
            reconcile::reconcile_guarded,
            reconcile::error_policy,
            context,
        )
        .for_each(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
            let stacks = store.state();
            if bookkeeping.last_applied.stacks() > 0 {
                let uids: std::collections::HashSet<String> =
                    stacks.iter().filter_map(|s| s.uid()).collect();
                bookkeeping.forget_deleted_records(|uid| uids.contains(uid));
            }
            if bookkeeping.failing_stacks() > 0 {
                let present: std::collections::HashSet<(String, String)> = stacks
                    .iter()
                    .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
                    .collect();
                bookkeeping
                    .forget_deleted(|ns, name| present.contains(&(ns.to_owned(), name.to_owned())));
            }
            let ready = stacks
                .iter()
                .filter(|s| s.0.as_ref().is_ok_and(reconcile::is_ready))
                .count();
            metrics.set_stacks(stacks.len(), ready);
            std::future::ready(())
        })
        .await;
    restart.cancel();
}

#[cfg(test)]
mod tests {
    use super::{child_api, children_watch, restart_after, run_unless_lost, stack_changed};
    use crate::reconcile::desired::ChildKind;
    use futures::StreamExt;
    use kube::runtime::watcher;
    use std::sync::Mutex;

    #[tokio::test]
    async fn child_watches_are_metadata_only() {
        // Every request's path and Accept header; each answered with an empty list, so the
        // watcher lists and then watches.
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let record = seen.clone();
        let service = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
            let accept = request
                .headers()
                .get(axum::http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let path = request.uri().to_string();
            record.lock().unwrap().push((path, accept));
            let body = r#"{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"1"},"items":[]}"#;
            futures::future::ready(Ok::<_, std::convert::Infallible>(
                axum::http::Response::new(kube::client::Body::from(body.as_bytes().to_vec())),
            ))
        });
        let client = kube::Client::new(service, "default");
        for kind in [
            ChildKind::StatefulSet,
            ChildKind::Deployment,
            ChildKind::Service,
        ] {
            let stream = watcher::watcher(child_api(&client, None, kind), children_watch());
            let mut stream = Box::pin(stream);
            // Init, the list's page, InitDone: then the watch request.
            for _ in 0..4 {
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await;
            }
        }
        let seen = seen.lock().unwrap().clone();
        let lists = seen
            .iter()
            .filter(|(path, _)| !path.contains("watch=true"))
            .count();
        let watches = seen
            .iter()
            .filter(|(path, _)| path.contains("watch=true"))
            .count();
        assert!(lists >= 3 && watches >= 3, "{seen:?}");
        for (path, accept) in &seen {
            assert!(
                accept.contains("as=PartialObjectMetadata") && accept.contains("g=meta.k8s.io"),
                "{path}: Accept {accept:?}"
            );
            assert!(
                path.contains("labelSelector="),
                "{path}: only labelled children"
            );
        }
    }
    use crate::crd::{
        AutoscalingStatus, PingPongStack, PingPongStackSpec, PingPongStackStatus, PongAutoscaling,
    };
    use kube::core::DeserializeGuard;

    #[test]
    fn only_spec_metadata_and_deletion_changes_trigger_a_reconcile() {
        let mut stack = PingPongStack::new("demo", PingPongStackSpec::default());
        stack.metadata.generation = Some(3);
        let hash = |s: &PingPongStack| stack_changed(&DeserializeGuard(Ok(s.clone())));
        let before = hash(&stack);
        // A status write (the operator's own, or the autoscaler's) changes nothing that counts.
        stack.status = Some(PingPongStackStatus {
            observed_generation: Some(3),
            warnings: vec!["changed".into()],
            ..PingPongStackStatus::default()
        });
        stack.metadata.resource_version = Some("42".into());
        assert_eq!(hash(&stack), before);
        let mut spec = stack.clone();
        spec.metadata.generation = Some(4);
        assert_ne!(hash(&spec), before);
        let mut annotated = stack.clone();
        annotated.metadata.annotations = Some(
            [("reconcile".to_owned(), "1".to_owned())]
                .into_iter()
                .collect(),
        );
        assert_ne!(hash(&annotated), before);
        let mut deleted = stack.clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_ne!(hash(&deleted), before);
    }

    #[test]
    fn an_autoscaler_decision_triggers_a_reconcile_only_for_an_autoscaled_stack() {
        let decide = |stack: &mut PingPongStack, replicas: i32| {
            stack.status = Some(PingPongStackStatus {
                autoscaling: Some(AutoscalingStatus {
                    desired_replicas: replicas,
                    ..AutoscalingStatus::default()
                }),
                ..PingPongStackStatus::default()
            });
        };
        let hash = |s: &PingPongStack| stack_changed(&DeserializeGuard(Ok(s.clone())));
        let mut stack = PingPongStack::new("demo", PingPongStackSpec::default());
        stack.spec.pong.autoscaling = Some(PongAutoscaling {
            min_replicas: 1,
            max_replicas: 10,
            target_backlog_per_replica: 100,
            scale_down_delay_seconds: 60,
            max_drain_seconds: 300,
            engine: Default::default(),
        });
        decide(&mut stack, 2);
        let before = hash(&stack);
        // The reconcile applies the decided replicas: a new decision must reach it.
        decide(&mut stack, 5);
        assert_ne!(hash(&stack), before);
        // Without autoscaling the decision is no input of the reconcile.
        let mut manual = PingPongStack::new("demo", PingPongStackSpec::default());
        decide(&mut manual, 2);
        let before = hash(&manual);
        decide(&mut manual, 5);
        assert_eq!(hash(&manual), before);
    }

    #[test]
    fn only_a_controller_that_ended_on_its_own_is_restarted() {
        assert!(restart_after(true, false), "an optional API appeared");
        assert!(!restart_after(true, true), "shutdown or lost Lease");
        // Seen on the local control plane: the loss was observed before the stop token was
        // cancelled, the dropped controller was restarted as if still leading, and the leader
        // gauge stayed at 1.
        assert!(
            !restart_after(false, false),
            "dropped because the Lease was lost"
        );
        assert!(!restart_after(false, true));
    }
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio_util::sync::CancellationToken;

    /// Notes its drop: a reconcile in progress that was abandoned.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn losing_the_lease_drops_a_controller_stuck_on_a_hung_api() {
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(Arc::clone(&dropped));
        // A controller whose reconcile waits for an answer that never comes.
        let stuck = async move {
            let _reconcile = guard;
            std::future::pending::<()>().await;
        };
        let lost = CancellationToken::new();
        let cancel = lost.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            cancel.cancel();
        });
        let finished = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            run_unless_lost(stuck, &lost),
        )
        .await
        .expect("returns as soon as the Lease is lost");
        assert!(!finished);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the stuck reconcile was dropped"
        );
    }

    #[tokio::test]
    async fn a_controller_that_ends_by_itself_is_not_reported_as_lost() {
        let lost = CancellationToken::new();
        assert!(run_unless_lost(async {}, &lost).await);
    }
}
