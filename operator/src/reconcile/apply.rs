//! Apply step machinery: server-side apply of one child, and deletion of orphaned children.
//!
//! [`Applier`] is generic over typed k8s-openapi resources and has `_dynamic` twins for the
//! Gateway API and Prometheus Operator kinds, which have no Rust types here. Every apply uses the
//! field manager [`FIELD_MANAGER`] with `force`, so the operator owns exactly the fields it sets.
//! Every call is counted in `pingpong_operator_child_operations_total`. The order of applies and
//! the choice of what to delete live in the driver ([`super::apply_desired`]), not here.

use crate::error::Error;
use crate::metrics::{ChildOperation, Metrics};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Field manager of every child apply.
pub const FIELD_MANAGER: &str = "pingpong-operator";
/// Field manager of the status apply.
pub const STATUS_FIELD_MANAGER: &str = "pingpong-operator/status";

/// Applies and deletes the children of one stack, in one namespace.
pub struct Applier<'a> {
    client: &'a Client,
    namespace: &'a str,
    metrics: &'a Metrics,
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn owned_by(meta: &kube::api::ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

impl<'a> Applier<'a> {
    /// An applier for the children in `namespace`.
    pub fn new(client: &'a Client, namespace: &'a str, metrics: &'a Metrics) -> Self {
        Self {
            client,
            namespace,
            metrics,
        }
    }

    fn params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    /// Server-side applies `obj` and returns the object as stored (with its status).
    pub async fn apply<K>(&self, obj: &K) -> Result<K, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + k8s_openapi::Resource
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let name = obj.name_any();
        let result = api.patch(&name, &Self::params(), &Patch::Apply(obj)).await;
        self.metrics
            .child_operation(K::KIND, ChildOperation::Apply, result.is_ok());
        result.map_err(|source| Error::Apply {
            kind: K::KIND,
            name,
            source,
        })
    }

    /// Server-side applies a dynamic object of `kind` described by `resource`.
    pub async fn apply_dynamic(
        &self,
        kind: &'static str,
        resource: &ApiResource,
        obj: &DynamicObject,
    ) -> Result<DynamicObject, Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, resource);
        let name = obj.name_any();
        let result = api.patch(&name, &Self::params(), &Patch::Apply(obj)).await;
        self.metrics
            .child_operation(kind, ChildOperation::Apply, result.is_ok());
        result.map_err(|source| Error::Apply { kind, name, source })
    }

    /// Reads one child (`None` when it does not exist).
    pub async fn get<K>(&self, name: &str) -> Result<Option<K>, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + k8s_openapi::Resource
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        api.get_opt(name).await.map_err(|source| Error::Read {
            kind: K::KIND,
            name: name.to_owned(),
            source,
        })
    }

    /// Deletes every `K` selected by `selector` and controlled by `owner_uid` whose name is not
    /// in `keep`. Returns the names deleted.
    pub async fn delete_orphans<K>(
        &self,
        selector: &str,
        owner_uid: &str,
        keep: &[&str],
    ) -> Result<Vec<String>, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + k8s_openapi::Resource
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|source| Error::List {
                kind: K::KIND,
                source,
            })?;
        self.delete_unkept(&api, K::KIND, &list.items, owner_uid, keep)
            .await
    }

    /// [`Self::delete_orphans`] for a dynamic kind.
    pub async fn delete_orphans_dynamic(
        &self,
        kind: &'static str,
        resource: &ApiResource,
        selector: &str,
        owner_uid: &str,
        keep: &[&str],
    ) -> Result<Vec<String>, Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.namespace, resource);
        // Without the CRD there is nothing to delete (the API answers 404 for the resource).
        let list = match api.list(&ListParams::default().labels(selector)).await {
            Ok(list) => list,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(source) => return Err(Error::List { kind, source }),
        };
        self.delete_unkept(&api, kind, &list.items, owner_uid, keep)
            .await
    }

    /// Deletes the `listed` objects controlled by `owner_uid` whose name is not in `keep` (a
    /// missing object counts as deleted), counting each deletion. Returns the names deleted.
    async fn delete_unkept<K>(
        &self,
        api: &Api<K>,
        kind: &'static str,
        listed: &[K],
        owner_uid: &str,
        keep: &[&str],
    ) -> Result<Vec<String>, Error>
    where
        K: Resource + DeserializeOwned + Clone + Debug,
    {
        let orphans: Vec<String> = listed
            .iter()
            .filter(|o| owned_by(o.meta(), owner_uid) && !keep.contains(&o.name_any().as_str()))
            .map(ResourceExt::name_any)
            .collect();
        for name in &orphans {
            let result = api.delete(name, &DeleteParams::background()).await;
            let result = result
                .map(|_| ())
                .or_else(|e| if is_not_found(&e) { Ok(()) } else { Err(e) });
            self.metrics
                .child_operation(kind, ChildOperation::Delete, result.is_ok());
            result.map_err(|source| Error::Delete {
                kind,
                name: name.clone(),
                source,
            })?;
        }
        Ok(orphans)
    }
}
