//! Apply step (I/O): server-side apply of every child in the documented order, then deletion of
//! the orphans.
//!
//! [`apply_desired`] walks [`DesiredState::children`]; the [`Applier`] records every child it
//! was asked to apply, and orphan deletion removes exactly the labelled, owned objects of a
//! prunable kind that are not in that record (Stackable's `ClusterResources` idea): no keep-list
//! is written by hand. Every apply uses the field manager [`FIELD_MANAGER`] with `force`, so the
//! operator owns exactly the fields it sets; generated Secrets are created instead (an existing
//! one is never overwritten). Every call is counted in
//! `pingpong_operator_child_operations_total`. Orphans are found in the controller's metadata
//! caches of the children ([`ChildCaches`]), or with metadata-only lists where a kind has none.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ObjectMeta;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::FIELD_MANAGER;
use super::applied::{LastApplied, Unchanged};
use super::cache::{ChildCaches, controlled_by};
use super::desired::{Child, ChildKind, DesiredState};
use super::ownership::{self, Claim};
use super::rollout::{Rollout, Workloads, deployment_rollout, statefulset_rollout};
/// Desired replicas and those ready at the current spec (see [`super::rollout`]).
pub use super::rollout::{deployment_readiness, statefulset_readiness};
use crate::apis::ServedApis;
use crate::error::Error;
use crate::metrics::{ChildOperation, Metrics};

/// Applies and deletes the children of one stack, in one namespace, and records what it applied.
pub struct Applier<'a> {
    client: &'a Client,
    namespace: &'a str,
    stack: &'a str,
    stack_uid: &'a str,
    metrics: &'a Metrics,
    served: ServedApis,
    caches: &'a ChildCaches,
    last_applied: Option<(&'a LastApplied, bool)>,
    recorded: BTreeSet<(ChildKind, String)>,
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The API server refused an apply as invalid (422), e.g. a change to an immutable field.
fn is_invalid(e: &Error) -> bool {
    matches!(e, Error::Apply { source: kube::Error::Api(s), .. } if s.code == 422)
}

impl<'a> Applier<'a> {
    /// An applier for the children of the stack `stack` (uid `stack_uid`) in `namespace`; kinds
    /// of optional APIs not in `served` are never listed, and kinds with a listed cache in
    /// `caches` are not listed either.
    pub fn new(
        client: &'a Client,
        namespace: &'a str,
        stack: &'a str,
        stack_uid: &'a str,
        metrics: &'a Metrics,
        served: ServedApis,
        caches: &'a ChildCaches,
    ) -> Self {
        Self {
            client,
            namespace,
            stack,
            stack_uid,
            metrics,
            served,
            caches,
            last_applied: None,
            recorded: BTreeSet::new(),
        }
    }

    /// The same applier, skipping the apply of every child that `record` says is unchanged
    /// since its last successful apply, unless `full_pass` (then every child is applied, and
    /// recorded).
    pub fn skipping_unchanged(mut self, record: &'a LastApplied, full_pass: bool) -> Self {
        self.last_applied = Some((record, full_pass));
        self
    }

    fn params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    async fn apply_typed<K>(&self, obj: &K, kind: ChildKind) -> Result<K, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let name = obj.name_any();
        let result = api.patch(&name, &Self::params(), &Patch::Apply(obj)).await;
        self.metrics
            .child_operation(kind.as_str(), ChildOperation::Apply, result.is_ok());
        result.map_err(|source| Error::Apply {
            kind: kind.as_str(),
            name,
            source,
        })
    }

    /// Refuses to write the object of `kind` and `name` unless it is missing, controlled by this
    /// stack, or opted in to adoption ([`ownership::claim`]). The cache of `kind` answers for
    /// the stack's own children; anything else costs one metadata-only read. Returns the
    /// child's metadata as observed (`None`: it does not exist).
    async fn check_claim(&self, kind: ChildKind, name: &str) -> Result<Option<ObjectMeta>, Error> {
        if let Some(cached) = self
            .caches
            .controlled(kind, self.namespace, name, self.stack_uid)
        {
            return Ok(Some(cached));
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, &kind.api_resource());
        let existing = api
            .get_metadata_opt(name)
            .await
            .map_err(|source| Error::Read {
                kind: kind.as_str(),
                name: name.to_owned(),
                source,
            })?;
        let meta = existing.map(|o| o.metadata);
        match ownership::claim(meta.as_ref(), self.stack, self.stack_uid) {
            Claim::Create | Claim::Owned => Ok(meta),
            Claim::Adopt => {
                tracing::info!(kind = kind.as_str(), name, "adopting an existing object");
                Ok(meta)
            }
            Claim::Foreign(owner) => Err(Error::NotOwned {
                kind: kind.as_str(),
                name: name.to_owned(),
                owner,
                stack: self.stack.to_owned(),
            }),
        }
    }

    /// Applies a StatefulSet. When the API server refuses it (422) and it has claim templates,
    /// the apply is tried once more with the templates the live StatefulSet was created with
    /// ([`keep_claim_templates`]): Kubernetes refuses any change to them, their labels included,
    /// so a label that changed between releases would otherwise fail every apply of it (image
    /// upgrades included). The read happens only after such a refusal, never on the usual path.
    async fn apply_statefulset(&self, desired: &StatefulSet) -> Result<StatefulSet, Error> {
        let kind = ChildKind::StatefulSet;
        let refused = match self.apply_typed(desired, kind).await {
            Err(error) if is_invalid(&error) && claim_templates(desired).is_some() => error,
            result => return result,
        };
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), self.namespace);
        let name = desired.name_any();
        let live = api.get_opt(&name).await.map_err(|source| Error::Read {
            kind: kind.as_str(),
            name,
            source,
        })?;
        match keep_claim_templates(desired, live.as_ref()) {
            Some(kept) => self.apply_typed(&kept, kind).await,
            None => Err(refused),
        }
    }

    /// Creates a generated Secret; one that exists already (409: another leader, or a
    /// reconcile that observed before it was created) is left alone, never overwritten.
    async fn create_secret(&self, secret: &Secret) -> Result<(), Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), self.namespace);
        let result = match api.create(&PostParams::default(), secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        };
        self.metrics
            .child_operation("Secret", ChildOperation::Create, result.is_ok());
        result.map_err(|source| Error::Apply {
            kind: "Secret",
            name: secret.name_any(),
            source,
        })
    }

    async fn apply_dynamic(
        &self,
        obj: &DynamicObject,
        kind: ChildKind,
    ) -> Result<DynamicObject, Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, &kind.api_resource());
        let name = obj.name_any();
        let result = api.patch(&name, &Self::params(), &Patch::Apply(obj)).await;
        self.metrics
            .child_operation(kind.as_str(), ChildOperation::Apply, result.is_ok());
        result.map_err(|source| Error::Apply {
            kind: kind.as_str(),
            name,
            source,
        })
    }

    /// Server-side applies `child` and records it (also when the apply fails: a child that
    /// failed to apply is still wanted and must never be deleted as an orphan). An object of
    /// the child's name that the stack does not control is left unchanged
    /// ([`Error::NotOwned`]); generated Secrets are only ever created, so they need no check.
    /// With [`Self::skipping_unchanged`], a child whose desired object and observed state are
    /// as last applied is not written ([`LastApplied`]): a workload or route is then read
    /// instead, for its status. Returns what the API reported for StatefulSets, Deployments and
    /// the HTTPRoute.
    pub async fn apply(&mut self, child: Child<'_>) -> Result<Applied, Error> {
        let kind = child.kind();
        let name = child.name().to_owned();
        self.recorded.insert((kind, name.clone()));
        if matches!(child, Child::Secret(_)) {
            return self.write(child).await.map(|(applied, _)| applied);
        }
        let observed = self.check_claim(kind, &name).await?;
        let Some((record, full_pass)) = self.last_applied else {
            return self.write(child).await.map(|(applied, _)| applied);
        };
        let desired = Unchanged::of(&child);
        if let Some(desired) = &desired
            && !full_pass
            && record.unchanged(self.stack_uid, kind, &name, desired, observed.as_ref())
            && let Some(applied) = self.read_back(&child).await?
        {
            self.metrics
                .child_operation(kind.as_str(), ChildOperation::Skip, true);
            return Ok(applied);
        }
        match self.write(child).await {
            Ok((applied, result)) => {
                if let (Some(desired), Some(result)) = (desired, result) {
                    record.record(self.stack_uid, kind, &name, desired.hash(), &result);
                }
                Ok(applied)
            }
            Err(error) => {
                record.forget(self.stack_uid, kind, &name);
                Err(error)
            }
        }
    }

    /// What a skipped child would have returned from its apply: the workload or the route as
    /// it is now (one read), nothing for the other kinds. `None` when it is gone (then apply).
    async fn read_back(&self, child: &Child<'_>) -> Result<Option<Applied>, Error> {
        let kind = child.kind();
        let name = child.name();
        let read = |source| Error::Read {
            kind: kind.as_str(),
            name: name.to_owned(),
            source,
        };
        Ok(match child {
            Child::StatefulSet(_) => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), self.namespace);
                let live = api.get_opt(name).await.map_err(read)?;
                live.map(|s| Applied::Workload(statefulset_rollout(&s)))
            }
            Child::Deployment(_) => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), self.namespace);
                let live = api.get_opt(name).await.map_err(read)?;
                live.map(|d| Applied::Workload(deployment_rollout(&d)))
            }
            Child::HttpRoute(_) => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), self.namespace, &kind.api_resource());
                let live = api.get_opt(name).await.map_err(read)?;
                live.map(|r| Applied::Route(Box::new(r)))
            }
            _ => Some(Applied::Other),
        })
    }

    /// Writes `child`; returns what status reads and the metadata the API server answered with
    /// (`None` for a created Secret).
    async fn write(&self, child: Child<'_>) -> Result<(Applied, Option<ObjectMeta>), Error> {
        let kind = child.kind();
        let other = |meta: ObjectMeta| (Applied::Other, Some(meta));
        match child {
            Child::Secret(o) => self.create_secret(o).await.map(|()| (Applied::Other, None)),
            Child::RenderedSecret(o) => self.apply_typed(o, kind).await.map(|o| other(o.metadata)),
            Child::ConfigMap(o) => self.apply_typed(o, kind).await.map(|o| other(o.metadata)),
            Child::Service(o) => self.apply_typed(o, kind).await.map(|o| other(o.metadata)),
            Child::StatefulSet(o) => self.apply_statefulset(o).await.map(|s| {
                let rollout = statefulset_rollout(&s);
                (Applied::Workload(rollout), Some(s.metadata))
            }),
            Child::Deployment(o) => self.apply_typed(o, kind).await.map(|d| {
                let rollout = deployment_rollout(&d);
                (Applied::Workload(rollout), Some(d.metadata))
            }),
            Child::NetworkPolicy(o) => self.apply_typed(o, kind).await.map(|o| other(o.metadata)),
            Child::PodDisruptionBudget(o) => {
                self.apply_typed(o, kind).await.map(|o| other(o.metadata))
            }
            Child::Ingress(o) => self.apply_typed(o, kind).await.map(|o| other(o.metadata)),
            Child::HttpRoute(o) => self.apply_dynamic(o, kind).await.map(|r| {
                let meta = r.metadata.clone();
                (Applied::Route(Box::new(r)), Some(meta))
            }),
            Child::ServiceMonitor(o)
            | Child::PrometheusRule(o)
            | Child::ScaledObject(o)
            | Child::TriggerAuthentication(o) => {
                self.apply_dynamic(o, kind).await.map(|o| other(o.metadata))
            }
        }
    }

    /// Drops the record of the children this reconcile did not want (pruned, or no longer
    /// planned), so the record holds only what exists.
    fn forget_unwanted(&self) {
        if let Some((record, _)) = self.last_applied {
            record.keep_children(self.stack_uid, |key| self.recorded.contains(key));
        }
    }

    /// Deletes every object of a prunable kind selected by `selector` and controlled by
    /// `owner_uid` that was not recorded. Kinds of optional APIs the cluster does not serve are
    /// not listed. One failing kind or object does not stop the others; returns the failures.
    pub async fn delete_orphans(&self, selector: &str, owner_uid: &str) -> Vec<Error> {
        let mut failures = Vec::new();
        for kind in ChildKind::ALL {
            let served = kind
                .optional_api()
                .is_none_or(|api| self.served.serves(api));
            if kind.prunable() && served {
                failures.extend(self.delete_unrecorded(kind, selector, owner_uid).await);
            }
        }
        failures
    }

    async fn delete_unrecorded(
        &self,
        kind: ChildKind,
        selector: &str,
        owner_uid: &str,
    ) -> Vec<Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, &kind.api_resource());
        let owned = match self.caches.owned(kind, self.namespace, owner_uid) {
            Some(cached) => cached,
            None => match api
                .list_metadata(&ListParams::default().labels(selector))
                .await
            {
                Ok(list) => list
                    .items
                    .iter()
                    .filter(|o| controlled_by(&o.metadata, owner_uid))
                    .map(|o| o.name_any())
                    .collect(),
                Err(source) => {
                    let kind = kind.as_str();
                    return vec![Error::List { kind, source }];
                }
            },
        };
        let orphans: Vec<String> = owned
            .into_iter()
            .filter(|name| !self.recorded.contains(&(kind, name.clone())))
            .collect();
        let mut failures = Vec::new();
        for name in orphans {
            let result = api.delete(&name, &DeleteParams::background()).await;
            let result = result
                .map(|_| ())
                .or_else(|e| if is_not_found(&e) { Ok(()) } else { Err(e) });
            self.metrics
                .child_operation(kind.as_str(), ChildOperation::Delete, result.is_ok());
            if let Err(source) = result {
                let kind = kind.as_str();
                failures.push(Error::Delete { kind, name, source });
            }
        }
        failures
    }
}

/// What the API server answered to one apply, as far as status reads it.
#[derive(Clone, Debug)]
pub enum Applied {
    /// A StatefulSet or Deployment.
    Workload(Rollout),
    /// The HTTPRoute (its `status.parents` say whether its Gateway accepted it).
    Route(Box<DynamicObject>),
    /// Anything else.
    Other,
}

fn claim_templates(sts: &StatefulSet) -> Option<&Vec<PersistentVolumeClaim>> {
    sts.spec
        .as_ref()
        .and_then(|spec| spec.volume_claim_templates.as_ref())
        .filter(|templates| !templates.is_empty())
}

/// `desired` with the claim templates of `live`, the StatefulSet as it exists, when those differ
/// from the desired ones; `None` when `desired` can be applied as it is. The templates are fixed
/// at creation (the CRD refuses a storage change), so the live ones are what the spec asked for.
pub fn keep_claim_templates(
    desired: &StatefulSet,
    live: Option<&StatefulSet>,
) -> Option<StatefulSet> {
    let live_templates = live.and_then(claim_templates)?;
    if claim_templates(desired) == Some(live_templates) {
        return None;
    }
    let mut kept = desired.clone();
    if let Some(spec) = kept.spec.as_mut() {
        spec.volume_claim_templates = Some(live_templates.clone());
    }
    Some(kept)
}

/// Applies every child of `desired` in the documented order, then deletes the orphans: the
/// owned, labelled children the plan no longer contains (the provisioned PostgreSQL's and
/// Redis's objects when the store or cache is switched off, a dropped Ingress, PDB, route or
/// monitor). Returns the workloads and the route as the API reported them in the apply
/// responses.
///
/// Apply never wedges: a child the API server refuses (a 422 on an immutable field, a webhook's
/// denial) does not stop the children after it nor orphan deletion. Every failure is returned
/// together ([`Error::Children`] names each child and the API's message), so the status says
/// which children failed and the error policy retries with backoff. `unserved` are the children
/// the spec asks for whose API the cluster does not serve ([`Error::ApiNotServed`]): reported
/// first, with the same effect.
pub async fn apply_desired(
    applier: &mut Applier<'_>,
    desired: &DesiredState,
    owner_uid: &str,
    selector: &str,
    unserved: Vec<Error>,
) -> Result<Workloads, Error> {
    let mut workloads = Workloads::default();
    let mut failures = unserved;
    for (component, child) in desired.children() {
        match applier.apply(child).await {
            Ok(Applied::Workload(rollout)) => {
                workloads.rollouts.insert(component, rollout);
            }
            Ok(Applied::Route(route)) => workloads.route = Some(*route),
            Ok(Applied::Other) => {}
            Err(error) => {
                tracing::warn!(error = %error.chain(), "child not applied; continuing with the others");
                failures.push(error);
            }
        }
    }
    failures.extend(applier.delete_orphans(selector, owner_uid).await);
    applier.forget_unwanted();
    match Error::of_children(failures) {
        Some(error) => Err(error),
        None => Ok(workloads),
    }
}

#[cfg(test)]
mod tests {
    use super::keep_claim_templates;
    use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn sts(claim_label: Option<&str>, image: &str) -> StatefulSet {
        let templates = claim_label.map(|value| {
            vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(BTreeMap::from([("release".to_owned(), value.to_owned())])),
                    ..ObjectMeta::default()
                },
                ..PersistentVolumeClaim::default()
            }]
        });
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("demo-rabbitmq".into()),
                annotations: Some(BTreeMap::from([("image".to_owned(), image.to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                volume_claim_templates: templates,
                ..StatefulSetSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn an_existing_statefulset_keeps_the_claim_templates_it_was_created_with() {
        let desired = sts(Some("new"), "rabbitmq:4.3");
        let live = sts(Some("old"), "rabbitmq:4.2");
        let kept = keep_claim_templates(&desired, Some(&live)).expect("templates differ");
        // The templates are the live ones; everything else is the desired object.
        assert_eq!(
            kept.spec.as_ref().unwrap().volume_claim_templates,
            live.spec.as_ref().unwrap().volume_claim_templates
        );
        assert_eq!(kept.metadata, desired.metadata);
    }

    #[test]
    fn a_new_or_unchanged_statefulset_is_applied_as_built() {
        let desired = sts(Some("new"), "rabbitmq:4.3");
        assert_eq!(keep_claim_templates(&desired, None), None, "created");
        assert_eq!(
            keep_claim_templates(&desired, Some(&sts(Some("new"), "rabbitmq:4.2"))),
            None,
            "same templates"
        );
        assert_eq!(
            keep_claim_templates(&desired, Some(&sts(None, "rabbitmq:4.2"))),
            None,
            "the live one has none"
        );
    }
}
