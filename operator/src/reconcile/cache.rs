//! The controller's metadata caches of the children, one per watched kind, read by orphan
//! deletion instead of listing every child kind on every reconcile.
//!
//! The controller watches each child kind (label-selected on `managed-by`, metadata only) to
//! trigger reconciles; the same streams fill these stores. A cache may lag the API server: an
//! orphan it does not hold yet is deleted by the reconcile its own watch event triggers, and one
//! already gone answers the delete with a 404, which is ignored. A kind without a cache, or whose
//! cache has not finished its first list, is listed instead (also when the reconcile runs without
//! a controller, as in the tests).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::ResourceExt;
use kube::api::{DynamicObject, ObjectMeta, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};

use super::desired::ChildKind;

/// A cached child: its metadata only.
pub type CachedChild = PartialObjectMeta<DynamicObject>;

/// One kind's store and whether its first list is complete. The flag is set from the stream's
/// `InitDone` rather than polled from `Store::wait_until_ready`, whose one-shot readiness wakes only
/// the last waiter that polled it (the stall seen on /readyz, see `controller`).
#[derive(Clone)]
struct KindCache {
    store: Store<CachedChild>,
    listed: Arc<AtomicBool>,
}

/// The caches of the watched child kinds; empty when there is no controller.
#[derive(Clone, Default)]
pub struct ChildCaches {
    kinds: HashMap<ChildKind, KindCache>,
}

/// Marks one kind's cache as listed; given to the watch stream that fills the store.
#[derive(Clone, Debug)]
pub struct Listed(Arc<AtomicBool>);

impl Listed {
    /// The watch delivered its first complete list (`InitDone`).
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// True when `meta` names `owner_uid` as its controller.
pub fn controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

impl ChildCaches {
    /// Registers the store of `kind`; the returned flag is set by the stream once listed.
    pub fn insert(&mut self, kind: ChildKind, store: Store<CachedChild>) -> Listed {
        let listed = Arc::new(AtomicBool::new(false));
        self.kinds.insert(
            kind,
            KindCache {
                store,
                listed: Arc::clone(&listed),
            },
        );
        Listed(listed)
    }

    /// Whether the listed cache of `kind` holds `name` in `namespace` controlled by `owner_uid`
    /// (`false` also when the kind has no cache or is not listed yet: then ask the API server).
    pub fn controls(&self, kind: ChildKind, namespace: &str, name: &str, owner_uid: &str) -> bool {
        self.controlled(kind, namespace, name, owner_uid).is_some()
    }

    /// The cached metadata of `name` in `namespace` when the listed cache of `kind` holds it
    /// controlled by `owner_uid` (`None` also when the kind has no cache or is not listed yet).
    pub fn controlled(
        &self,
        kind: ChildKind,
        namespace: &str,
        name: &str,
        owner_uid: &str,
    ) -> Option<ObjectMeta> {
        let cache = self.kinds.get(&kind)?;
        if !cache.listed.load(Ordering::Acquire) {
            return None;
        }
        let key = ObjectRef::<CachedChild>::new_with(name, kind.api_resource()).within(namespace);
        cache
            .store
            .get(&key)
            .filter(|o| controlled_by(&o.metadata, owner_uid))
            .map(|o| o.metadata.clone())
    }

    /// The cached metadata of `name` in `namespace`, whoever controls it: `Some(None)` when the
    /// listed cache of `kind` does not hold it, `None` when `kind` has no cache or is not listed
    /// yet (then ask the API server).
    pub fn lookup(
        &self,
        kind: ChildKind,
        namespace: &str,
        name: &str,
    ) -> Option<Option<ObjectMeta>> {
        let cache = self.kinds.get(&kind)?;
        if !cache.listed.load(Ordering::Acquire) {
            return None;
        }
        let key = ObjectRef::<CachedChild>::new_with(name, kind.api_resource()).within(namespace);
        Some(cache.store.get(&key).map(|o| o.metadata.clone()))
    }

    /// The names of the cached objects of `kind` in `namespace` controlled by `owner_uid`, or
    /// `None` when `kind` has no cache or its first list is not complete (then list instead).
    pub fn owned(&self, kind: ChildKind, namespace: &str, owner_uid: &str) -> Option<Vec<String>> {
        let cache = self.kinds.get(&kind)?;
        if !cache.listed.load(Ordering::Acquire) {
            return None;
        }
        let mut names: Vec<String> = cache
            .store
            .state_filter(|o| {
                o.metadata.namespace.as_deref() == Some(namespace)
                    && controlled_by(&o.metadata, owner_uid)
            })
            .iter()
            .map(|o| o.name_any())
            .collect();
        names.sort();
        Some(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ApiResource;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn child(name: &str, namespace: &str, owner: &str, controller: bool) -> CachedChild {
        let resource = ApiResource::erase::<Service>(&());
        PartialObjectMeta {
            types: Some(kube::core::TypeMeta {
                api_version: resource.api_version,
                kind: resource.kind,
            }),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                owner_references: Some(vec![OwnerReference {
                    uid: owner.into(),
                    controller: Some(controller),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    #[test]
    fn only_a_listed_cache_answers_with_the_stacks_own_children() {
        let mut writer = Writer::<CachedChild>::new(ApiResource::erase::<Service>(&()));
        let mut caches = ChildCaches::default();
        let listed = caches.insert(ChildKind::Service, writer.as_reader());
        for object in [
            child("demo-b", "ns", "uid-1", true),
            child("demo-a", "ns", "uid-1", true),
            child("other", "ns", "uid-2", true),
            child("elsewhere", "ns2", "uid-1", true),
            child("not-controller", "ns", "uid-1", false),
        ] {
            writer.apply_watcher_event(&Event::Apply(object));
        }
        assert_eq!(caches.owned(ChildKind::Service, "ns", "uid-1"), None);
        assert!(!caches.controls(ChildKind::Service, "ns", "demo-a", "uid-1"));
        listed.set();
        assert!(caches.controls(ChildKind::Service, "ns", "demo-a", "uid-1"));
        assert!(!caches.controls(ChildKind::Service, "ns", "other", "uid-1"));
        assert!(!caches.controls(ChildKind::Service, "ns", "not-controller", "uid-1"));
        assert!(!caches.controls(ChildKind::Service, "ns2", "demo-a", "uid-1"));
        assert_eq!(
            caches.owned(ChildKind::Service, "ns", "uid-1"),
            Some(vec!["demo-a".to_owned(), "demo-b".to_owned()])
        );
        assert_eq!(caches.owned(ChildKind::Deployment, "ns", "uid-1"), None);
        assert_eq!(
            caches.owned(ChildKind::Service, "ns", "uid-3"),
            Some(Vec::new())
        );
    }
}
