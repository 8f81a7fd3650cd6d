//! Shared harness for the reconcile tests: an in-memory API (kube-fake-client) with the
//! PingPongStack, HTTPRoute and ServiceMonitor kinds registered, a Context, snapshots of
//! every child object with the fields the in-memory API changes on every write removed, and
//! [`Started`], the client and Context most reconcile tests drive.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion,
};
use kube::api::{
    Api, ApiResource, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, CustomResource, Resource};
use kube_fake_client::{ClientBuilder, interceptor};
use pingpong_operator::apis::ServedApis;
use pingpong_operator::broker_check::upgrade::{BrokerView, BrokerViews};
use pingpong_operator::crd::{PingPongStack, PingPongStackSpec, PingPongStackStatus};
use pingpong_operator::error::Error;
use pingpong_operator::images::Images;
use pingpong_operator::metrics::Metrics;
use pingpong_operator::reconcile::{self, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const NS: &str = "demo";
pub const NAME: &str = "stack";

/// Registration-only stand-in for gateway.networking.k8s.io/v1 HTTPRoute.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    schema = "disabled"
)]
pub struct HttpRouteSpec {
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

/// Registration-only stand-in for monitoring.coreos.com/v1 ServiceMonitor.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    plural = "servicemonitors",
    namespaced,
    schema = "disabled"
)]
pub struct ServiceMonitorSpec {
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

/// A CRD object as the existence checks see it.
pub fn crd(group: &str, plural: &str, kind: &str) -> CustomResourceDefinition {
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{plural}.{group}")),
            ..ObjectMeta::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: group.to_owned(),
            names: CustomResourceDefinitionNames {
                kind: kind.to_owned(),
                plural: plural.to_owned(),
                ..CustomResourceDefinitionNames::default()
            },
            scope: "Namespaced".to_owned(),
            versions: vec![CustomResourceDefinitionVersion {
                name: "v1".to_owned(),
                served: true,
                storage: true,
                ..CustomResourceDefinitionVersion::default()
            }],
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    }
}

/// A stack as a user would create it (uid and generation are set by the in-memory API).
pub fn stack(spec: PingPongStackSpec) -> PingPongStack {
    let mut s = PingPongStack::new(NAME, spec);
    s.metadata.namespace = Some(NS.to_owned());
    // A status object makes the in-memory API treat status as a subresource.
    s.status = Some(PingPongStackStatus::default());
    s
}

/// What a test environment starts with.
#[derive(Default)]
pub struct Setup {
    pub stacks: Vec<PingPongStack>,
    pub objects: Vec<Value>,
    pub gateway_crd: bool,
    pub service_monitor_crd: bool,
    pub interceptors: Option<interceptor::Funcs>,
    /// Return metadata.managedFields in responses (stripped by default).
    pub managed_fields: bool,
}

impl Setup {
    /// One stack with `spec` and nothing else.
    pub fn for_stack(spec: PingPongStackSpec) -> Self {
        Self {
            stacks: vec![stack(spec)],
            ..Self::default()
        }
    }
}

pub async fn client(setup: Setup) -> Client {
    let mut b = ClientBuilder::new()
        .with_resource::<PingPongStack>()
        .with_resource::<HTTPRoute>()
        .with_resource::<ServiceMonitor>();
    for s in setup.stacks {
        b = b.with_object(s);
    }
    if setup.gateway_crd {
        b = b.with_object(crd("gateway.networking.k8s.io", "httproutes", "HTTPRoute"));
    }
    if setup.service_monitor_crd {
        b = b.with_object(crd(
            "monitoring.coreos.com",
            "servicemonitors",
            "ServiceMonitor",
        ));
    }
    b = b.with_runtime_objects(setup.objects);
    if setup.managed_fields {
        b = b.with_return_managed_fields();
    }
    if let Some(i) = setup.interceptors {
        b = b.with_interceptor_funcs(i);
    }
    b.build().await.expect("in-memory API")
}

/// A Context that learned the optional APIs as the controller does when it starts.
pub async fn context(client: &Client) -> Arc<Context> {
    let served = ServedApis::discover(client)
        .await
        .expect("optional APIs of the in-memory API");
    Arc::new(bare_context(client, served))
}

/// A Context that knows `served` from the start, without a default Gateway.
pub fn bare_context(client: &Client, served: ServedApis) -> Context {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "pingpong-operator".to_owned(),
            instance: Some("test".to_owned()),
        },
    );
    Context::new(
        client.clone(),
        Metrics::new().expect("metrics"),
        recorder,
        Images::default(),
        served,
    )
    .with_broker_views(cleared_broker())
}

/// What the in-memory API's brokers answer before a change of RabbitMQ series (its pods have
/// no broker behind them): 20 feature flags, every stable one enabled, no deprecated feature in
/// use. Tests of a broker that blocks the step, or cannot be read, set their own.
pub fn cleared_broker() -> BrokerViews {
    BrokerViews::Fixed(Ok(BrokerView {
        feature_flags: 20,
        ..BrokerView::default()
    }))
}

pub async fn get_stack(client: &Client) -> PingPongStack {
    Api::<PingPongStack>::namespaced(client.clone(), NS)
        .get(NAME)
        .await
        .expect("stack exists")
}

/// Replaces the stack's spec, as `kubectl replace` would (bumps metadata.generation; fields
/// set to `None` are removed, which a merge patch of the serialized spec would not do).
pub async fn set_spec(client: &Client, spec: &PingPongStackSpec) {
    let api = Api::<PingPongStack>::namespaced(client.clone(), NS);
    let mut stack = api.get(NAME).await.expect("stack exists");
    stack.spec = spec.clone();
    api.replace(NAME, &PostParams::default(), &stack)
        .await
        .expect("spec replaced");
}

/// Runs one reconcile of the stack as stored.
pub async fn reconcile_once(client: &Client, ctx: &Arc<Context>) -> Result<Action, Error> {
    let s = get_stack(client).await;
    reconcile::reconcile(Arc::new(s), ctx.clone()).await
}

fn strip_volatile(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in ["resourceVersion", "generation", "managedFields"] {
            meta.remove(key);
        }
    }
    v
}

async fn typed<K>(client: &Client, out: &mut BTreeMap<String, Value>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), NS);
    for o in api.list(&ListParams::default()).await.expect("list").items {
        let name = o.meta().name.clone().unwrap_or_default();
        let v = serde_json::to_value(&o).expect("json");
        out.insert(format!("{}/{name}", K::KIND), strip_volatile(v));
    }
}

async fn dynamic(client: &Client, ar: &ApiResource, out: &mut BTreeMap<String, Value>) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, ar);
    for o in api.list(&ListParams::default()).await.expect("list").items {
        let name = o.metadata.name.clone().unwrap_or_default();
        let v = serde_json::to_value(&o).expect("json");
        out.insert(format!("{}/{name}", ar.kind), strip_volatile(v));
    }
}

/// Every child object in the namespace, keyed `Kind/name`, without resourceVersion,
/// generation and managedFields (which the in-memory API bumps on every write).
pub async fn children(client: &Client) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    typed::<StatefulSet>(client, &mut out).await;
    typed::<Deployment>(client, &mut out).await;
    typed::<Service>(client, &mut out).await;
    typed::<Secret>(client, &mut out).await;
    typed::<ConfigMap>(client, &mut out).await;
    typed::<Ingress>(client, &mut out).await;
    typed::<NetworkPolicy>(client, &mut out).await;
    typed::<PodDisruptionBudget>(client, &mut out).await;
    dynamic(client, &ApiResource::erase::<HTTPRoute>(&()), &mut out).await;
    dynamic(client, &ApiResource::erase::<ServiceMonitor>(&()), &mut out).await;
    out
}

/// Keys of `after` that are new or differ from `before`, and keys that disappeared.
pub fn diff(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> Vec<String> {
    let mut changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| format!("~{k}"))
        .collect();
    changed.extend(
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| format!("-{k}")),
    );
    changed
}

/// Events recorded in the namespace: (type, reason).
pub async fn events(client: &Client) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let mut out: Vec<_> = api
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
        .collect();
    out.sort();
    out
}

/// An in-memory API and a Context on it: the stack of [`NAME`] is reconciled, read and
/// edited through these methods.
pub struct Started {
    pub client: Client,
    pub ctx: Arc<Context>,
}

impl Started {
    /// The in-memory API holding `setup`, not reconciled yet.
    pub async fn new(setup: Setup) -> Self {
        let client = client(setup).await;
        let ctx = context(&client).await;
        Self { client, ctx }
    }

    /// One stack with `spec`, after a first reconcile that succeeded.
    pub async fn reconciled(spec: PingPongStackSpec) -> Self {
        let started = Self::new(Setup::for_stack(spec)).await;
        started.reconcile().await.expect("first reconcile");
        started
    }

    /// Runs one reconcile of the stack as stored.
    pub async fn reconcile(&self) -> Result<Action, Error> {
        reconcile_once(&self.client, &self.ctx).await
    }

    /// See [`children`].
    pub async fn children(&self) -> BTreeMap<String, Value> {
        children(&self.client).await
    }

    /// The stack as stored.
    pub async fn stack(&self) -> PingPongStack {
        get_stack(&self.client).await
    }

    /// The stored stack's status (the in-memory API always has one).
    pub async fn status(&self) -> PingPongStackStatus {
        self.stack().await.status.expect("status")
    }

    /// See [`events`].
    pub async fn events(&self) -> Vec<(String, String)> {
        events(&self.client).await
    }

    /// Reads the stored spec, changes it with `edit` and replaces it (see [`set_spec`]); does
    /// not reconcile.
    pub async fn edit_spec(&self, edit: impl FnOnce(&mut PingPongStackSpec)) {
        let mut spec = self.stack().await.spec;
        edit(&mut spec);
        set_spec(&self.client, &spec).await;
    }

    /// Sets the stack's annotation `key` to `value` (a merge patch); does not reconcile.
    pub async fn annotate(&self, key: &str, value: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.api::<PingPongStack>()
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("stack annotated");
    }

    /// Marks the named StatefulSets and Deployments as having their one replica ready, as
    /// their controllers would.
    pub async fn set_ready(&self, stateful_sets: &[&str], deployments: &[&str]) {
        let ready = rolled_out();
        let params = PatchParams::default();
        for name in stateful_sets {
            self.api::<StatefulSet>()
                .patch_status(name, &params, &Patch::Merge(&ready))
                .await
                .expect("StatefulSet status patched");
        }
        for name in deployments {
            self.api::<Deployment>()
                .patch_status(name, &params, &Patch::Merge(&ready))
                .await
                .expect("Deployment status patched");
        }
    }

    /// An API for `K` in the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), NS)
    }
}

/// A workload status that has rolled out its current spec with one replica: updated, ready and
/// available. The in-memory API bumps `metadata.generation` on every write, even an apply that
/// changes nothing (a real API server does not), so the simulated workload controller claims to
/// have observed every generation the later reconciles will write.
fn rolled_out() -> serde_json::Value {
    serde_json::json!({ "status": {
        "observedGeneration": i64::MAX,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
    } })
}
