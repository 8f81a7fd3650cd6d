//! What the operator last applied to each child, kept in memory so that a reconcile writes only
//! the children whose desired object changed or that someone changed under it.
//!
//! For every child a stack's reconcile applied successfully, [`LastApplied`] keeps a hash of the
//! desired object and what the API server answered for it: `metadata.generation` for objects that
//! have one (it moves only when their spec changes, never on a status write), their
//! `resourceVersion` otherwise. A later reconcile skips the apply of a child when its desired
//! object hashes the same AND the child as observed now (the controller's metadata cache, or the
//! metadata read the ownership check makes anyway) is still controlled by the stack, has the same
//! generation or resourceVersion and still carries every label and annotation the operator sets
//! ([`Unchanged::matches`]): an edited, relabelled or deleted child is applied again by the next
//! reconcile, which its own watch event triggers. Every [`FULL_PASS`] a reconcile applies every
//! child anyway (drift the observation cannot see: a field of a kind without a generation that
//! another manager took over). Records of deleted stacks are dropped ([`LastApplied::retain`]) and
//! those of children a stack no longer wants are dropped by its next reconcile, so memory is
//! bounded by the children that exist. The record is lost on restart, which only costs one full
//! pass. Nothing here does I/O.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use kube::api::ObjectMeta;
use tokio::time::Instant;

use super::cache::controlled_by;
use super::desired::{Child, ChildKind};

/// How often a stack's reconcile applies every child whether or not it changed (the
/// reconcile after this much time since the stack's last full pass does; with the success
/// requeue of 5 minutes, every stack gets one at least every 10 minutes).
pub const FULL_PASS: Duration = Duration::from_secs(600);

/// What the API server answered for an applied child: the mark that moves when someone changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mark {
    /// `metadata.generation` (spec changes only).
    Generation(i64),
    /// `metadata.resourceVersion` (kinds without a generation: every change).
    ResourceVersion(String),
}

impl Mark {
    fn of(meta: &ObjectMeta) -> Option<Self> {
        match (meta.generation, &meta.resource_version) {
            (Some(generation), _) => Some(Self::Generation(generation)),
            (None, Some(version)) => Some(Self::ResourceVersion(version.clone())),
            (None, None) => None,
        }
    }
}

/// One applied child: the hash of its desired object and the API server's mark of the result.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    desired: u64,
    mark: Mark,
}

/// A desired child together with its hash, ready to be compared with the record.
pub struct Unchanged<'a> {
    desired: u64,
    labels: Option<&'a BTreeMap<String, String>>,
    annotations: Option<&'a BTreeMap<String, String>>,
}

/// Hash of a desired child (its JSON: the builders use ordered maps, so equal objects hash the
/// same); `None` when it does not serialize, which never skips its apply.
fn desired_hash(child: &Child<'_>) -> Option<u64> {
    let json = serde_json::to_vec(child).ok()?;
    let mut hasher = DefaultHasher::new();
    json.hash(&mut hasher);
    Some(hasher.finish())
}

/// Every key of `wanted` is in `found` with the same value.
fn contains_all(
    found: Option<&BTreeMap<String, String>>,
    wanted: Option<&BTreeMap<String, String>>,
) -> bool {
    wanted.into_iter().flatten().all(|(key, value)| {
        found
            .and_then(|found| found.get(key))
            .is_some_and(|v| v == value)
    })
}

impl<'a> Unchanged<'a> {
    /// The comparison data of `child`; `None` when it cannot be hashed.
    pub fn of(child: &Child<'a>) -> Option<Self> {
        let meta = child.metadata();
        Some(Self {
            desired: desired_hash(child)?,
            labels: meta.labels.as_ref(),
            annotations: meta.annotations.as_ref(),
        })
    }

    /// The hash of the desired object.
    pub fn hash(&self) -> u64 {
        self.desired
    }

    /// Whether `observed`, the child's metadata as it exists now, is what the operator left it
    /// as: controlled by `stack_uid`, the same generation (or resourceVersion), and every label
    /// and annotation the operator sets still in place.
    fn matches(&self, entry: &Entry, observed: &ObjectMeta, stack_uid: &str) -> bool {
        entry.desired == self.desired
            && controlled_by(observed, stack_uid)
            && observed.deletion_timestamp.is_none()
            && Mark::of(observed).as_ref() == Some(&entry.mark)
            && contains_all(observed.labels.as_ref(), self.labels)
            && contains_all(observed.annotations.as_ref(), self.annotations)
    }
}

/// The record of one stack.
#[derive(Debug)]
struct StackRecord {
    full_pass_at: Instant,
    children: HashMap<(ChildKind, String), Entry>,
}

/// The record of every stack, keyed by the stack's uid (a stack re-created under its name starts
/// afresh). Shared by the reconciles through the context.
#[derive(Debug, Default)]
pub struct LastApplied {
    stacks: Mutex<HashMap<String, StackRecord>>,
}

impl LastApplied {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StackRecord>> {
        self.stacks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this reconcile of the stack `stack_uid` must apply every child: its first, or
    /// the first [`FULL_PASS`] after the last full pass. Marks the full pass as started.
    pub fn begin(&self, stack_uid: &str, now: Instant) -> bool {
        let mut stacks = self.lock();
        match stacks.get_mut(stack_uid) {
            Some(record) if now.duration_since(record.full_pass_at) < FULL_PASS => false,
            Some(record) => {
                record.full_pass_at = now;
                true
            }
            None => {
                stacks.insert(
                    stack_uid.to_owned(),
                    StackRecord {
                        full_pass_at: now,
                        children: HashMap::new(),
                    },
                );
                true
            }
        }
    }

    /// Whether the child `kind`/`name` of `stack_uid`, wanted as `desired` and observed as
    /// `observed` (`None`: it does not exist), is unchanged since its last successful apply.
    pub fn unchanged(
        &self,
        stack_uid: &str,
        kind: ChildKind,
        name: &str,
        desired: &Unchanged<'_>,
        observed: Option<&ObjectMeta>,
    ) -> bool {
        let Some(observed) = observed else {
            return false;
        };
        let stacks = self.lock();
        stacks
            .get(stack_uid)
            .and_then(|record| record.children.get(&(kind, name.to_owned())))
            .is_some_and(|entry| desired.matches(entry, observed, stack_uid))
    }

    /// Whether this process's last successful apply of `child` (of `stack_uid`) wrote exactly
    /// this desired object (whatever happened to it since).
    pub fn last_wrote(&self, stack_uid: &str, child: &Child<'_>) -> bool {
        let Some(desired) = desired_hash(child) else {
            return false;
        };
        let key = (child.kind(), child.name().to_owned());
        self.lock()
            .get(stack_uid)
            .and_then(|record| record.children.get(&key))
            .is_some_and(|entry| entry.desired == desired)
    }

    /// Records a successful apply of the child `kind`/`name` whose desired object hashed
    /// `desired` and which the API server answered with `result`.
    pub fn record(
        &self,
        stack_uid: &str,
        kind: ChildKind,
        name: &str,
        desired: u64,
        result: &ObjectMeta,
    ) {
        let mut stacks = self.lock();
        let Some(record) = stacks.get_mut(stack_uid) else {
            return;
        };
        let key = (kind, name.to_owned());
        match Mark::of(result) {
            Some(mark) => {
                record.children.insert(key, Entry { desired, mark });
            }
            None => {
                record.children.remove(&key);
            }
        }
    }

    /// Forgets the child `kind`/`name` of `stack_uid` (its apply failed: apply it next time).
    pub fn forget(&self, stack_uid: &str, kind: ChildKind, name: &str) {
        if let Some(record) = self.lock().get_mut(stack_uid) {
            record.children.remove(&(kind, name.to_owned()));
        }
    }

    /// Keeps only the children of `stack_uid` in `wanted` (the rest were pruned or never
    /// applied again).
    pub fn keep_children(&self, stack_uid: &str, wanted: impl Fn(&(ChildKind, String)) -> bool) {
        if let Some(record) = self.lock().get_mut(stack_uid) {
            record.children.retain(|key, _| wanted(key));
        }
    }

    /// Forgets the stack `stack_uid` (deleted).
    pub fn forget_stack(&self, stack_uid: &str) {
        self.lock().remove(stack_uid);
    }

    /// Keeps only the stacks whose uid `exists` says still exist.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.lock().retain(|uid, _| exists(uid));
    }

    /// How many stacks have a record (for tests and bookkeeping).
    pub fn stacks(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn config_map(data: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("demo-config".into()),
                labels: Some(BTreeMap::from([("app".to_owned(), "demo".to_owned())])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("k".to_owned(), data.to_owned())])),
            ..ConfigMap::default()
        }
    }

    fn live(version: &str, owner: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("demo-config".into()),
            resource_version: Some(version.into()),
            owner_references: Some(vec![OwnerReference {
                uid: owner.into(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_an_unchanged_child_left_as_applied_is_skipped() {
        let record = LastApplied::default();
        let start = Instant::now();
        assert!(
            record.begin("uid-1", start),
            "the first reconcile is a full pass"
        );
        let cm = config_map("v1");
        let child = Child::ConfigMap(&cm);
        let desired = Unchanged::of(&child).unwrap();
        let kind = ChildKind::ConfigMap;
        let applied = live("7", "uid-1", &[("app", "demo"), ("extra", "x")]);
        assert!(!record.unchanged("uid-1", kind, "demo-config", &desired, Some(&applied)));
        record.record("uid-1", kind, "demo-config", desired.hash(), &applied);
        assert!(record.unchanged("uid-1", kind, "demo-config", &desired, Some(&applied)));
        // Deleted, edited, relabelled, taken over: applied again.
        assert!(!record.unchanged("uid-1", kind, "demo-config", &desired, None));
        let edited = live("8", "uid-1", &[("app", "demo")]);
        assert!(!record.unchanged("uid-1", kind, "demo-config", &desired, Some(&edited)));
        let relabelled = live("7", "uid-1", &[("app", "other")]);
        assert!(!record.unchanged("uid-1", kind, "demo-config", &desired, Some(&relabelled)));
        let foreign = live("7", "uid-2", &[("app", "demo")]);
        assert!(!record.unchanged("uid-1", kind, "demo-config", &desired, Some(&foreign)));
        // A new desired object is applied.
        let changed = config_map("v2");
        let changed = Unchanged::of(&Child::ConfigMap(&changed)).unwrap();
        assert!(!record.unchanged("uid-1", kind, "demo-config", &changed, Some(&applied)));
        // Another stack's record is its own.
        assert!(!record.unchanged("uid-2", kind, "demo-config", &desired, Some(&applied)));
        // A failed apply forgets the child.
        record.forget("uid-1", kind, "demo-config");
        assert!(!record.unchanged("uid-1", kind, "demo-config", &desired, Some(&applied)));
    }

    #[test]
    fn last_wrote_names_the_object_of_the_last_successful_apply() {
        let record = LastApplied::default();
        record.begin("uid-1", Instant::now());
        let (v1, v2) = (config_map("v1"), config_map("v2"));
        let (first, second) = (Child::ConfigMap(&v1), Child::ConfigMap(&v2));
        assert!(!record.last_wrote("uid-1", &first), "nothing applied yet");
        let applied = live("7", "uid-1", &[("app", "demo")]);
        let hash = Unchanged::of(&first).unwrap().hash();
        record.record("uid-1", ChildKind::ConfigMap, "demo-config", hash, &applied);
        assert!(record.last_wrote("uid-1", &first));
        assert!(
            !record.last_wrote("uid-1", &second),
            "another desired object"
        );
        assert!(!record.last_wrote("uid-2", &first), "another stack");
        record.forget("uid-1", ChildKind::ConfigMap, "demo-config");
        assert!(
            !record.last_wrote("uid-1", &first),
            "a failed apply forgets"
        );
    }

    #[test]
    fn a_generation_ignores_status_writes_but_not_spec_changes() {
        let record = LastApplied::default();
        record.begin("uid-1", Instant::now());
        let cm = config_map("v1");
        let desired = Unchanged::of(&Child::ConfigMap(&cm)).unwrap();
        let kind = ChildKind::Deployment;
        let mut applied = live("7", "uid-1", &[("app", "demo")]);
        applied.generation = Some(3);
        record.record("uid-1", kind, "demo-config", desired.hash(), &applied);
        let mut status_written = applied.clone();
        status_written.resource_version = Some("9".into());
        assert!(record.unchanged(
            "uid-1",
            kind,
            "demo-config",
            &desired,
            Some(&status_written)
        ));
        let mut spec_changed = status_written.clone();
        spec_changed.generation = Some(4);
        assert!(!record.unchanged("uid-1", kind, "demo-config", &desired, Some(&spec_changed)));
    }

    #[test]
    fn a_full_pass_comes_around_and_deleted_stacks_are_forgotten() {
        let record = LastApplied::default();
        let start = Instant::now();
        assert!(record.begin("uid-1", start));
        assert!(!record.begin("uid-1", start + FULL_PASS / 2));
        assert!(record.begin("uid-1", start + FULL_PASS));
        assert!(!record.begin("uid-1", start + FULL_PASS + FULL_PASS / 2));
        assert!(record.begin("uid-2", start));
        record.retain(|uid| uid == "uid-2");
        assert_eq!(record.stacks(), 1);
        record.forget_stack("uid-2");
        assert_eq!(record.stacks(), 0);
    }
}
