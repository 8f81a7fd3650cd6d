//! Who may write an object of a child's name: the pure decision taken before a child is applied.
//!
//! A child is named after the stack (`<stack>-ping`, the route `<stack>`), so a namespace can
//! already hold an object of that name that belongs to someone else: a user's Ingress `web`, a
//! Helm release's Service, another stack's child. Server-side apply with `force` would rewrite
//! it and make the stack its controller, and the stack's deletion would then delete it. So
//! [`claim`] allows a write only when the object does not exist yet or is already controlled by
//! this stack. An object that nothing controls is adopted only when whoever manages it opted in
//! with the annotation [`ADOPT`](crate::labels::ADOPT) naming the stack; an object controlled by
//! anything else is never taken. This module is pure: the applier reads the metadata.

use kube::api::ObjectMeta;

use crate::labels::ADOPT;

/// What the stack may do with the object of a child's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nothing of that name exists: create it.
    Create,
    /// The stack controls it already.
    Owned,
    /// Nothing controls it and its annotation [`ADOPT`] names this stack: take it over.
    Adopt,
    /// Someone else's: leave it unchanged. The text says who owns it.
    Foreign(String),
}

impl Claim {
    /// Whether the child may be written.
    pub fn writable(&self) -> bool {
        !matches!(self, Self::Foreign(_))
    }
}

/// Decides what the stack `stack` (uid `stack_uid`) may do with `existing`, the metadata of the
/// object of the child's name (`None`: there is none).
pub fn claim(existing: Option<&ObjectMeta>, stack: &str, stack_uid: &str) -> Claim {
    let Some(meta) = existing else {
        return Claim::Create;
    };
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    if let Some(controller) = owners.iter().find(|r| r.controller == Some(true)) {
        if controller.uid == stack_uid {
            return Claim::Owned;
        }
        return Claim::Foreign(format!(
            "it is controlled by {} {} (uid {})",
            controller.kind, controller.name, controller.uid
        ));
    }
    let opted_in = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ADOPT))
        .is_some_and(|value| value == stack);
    if opted_in {
        return Claim::Adopt;
    }
    let mut owner = match owners.first() {
        Some(r) => format!("it has no controller but is owned by {} {}", r.kind, r.name),
        None => "it has no owner reference".to_owned(),
    };
    let mut managers: Vec<&str> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    managers.sort_unstable();
    managers.dedup();
    if !managers.is_empty() {
        owner.push_str(&format!(" and was written by {}", managers.join(", ")));
    }
    Claim::Foreign(owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};
    use std::collections::BTreeMap;

    fn owned_by(uid: &str, controller: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "other".into(),
                uid: uid.into(),
                controller: Some(controller),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_a_missing_or_own_object_is_writable() {
        assert_eq!(claim(None, "web", "uid-1"), Claim::Create);
        assert_eq!(
            claim(Some(&owned_by("uid-1", true)), "web", "uid-1"),
            Claim::Owned
        );
        let foreign = claim(Some(&owned_by("uid-2", true)), "web", "uid-1");
        assert_eq!(
            foreign,
            Claim::Foreign("it is controlled by Deployment other (uid uid-2)".into())
        );
        assert!(!foreign.writable());
    }

    #[test]
    fn an_unowned_object_names_who_wrote_it() {
        let meta = ObjectMeta {
            managed_fields: Some(vec![
                ManagedFieldsEntry {
                    manager: Some("kubectl-create".into()),
                    ..ManagedFieldsEntry::default()
                },
                ManagedFieldsEntry {
                    manager: Some("helm".into()),
                    ..ManagedFieldsEntry::default()
                },
            ]),
            ..ObjectMeta::default()
        };
        assert_eq!(
            claim(Some(&meta), "web", "uid-1"),
            Claim::Foreign(
                "it has no owner reference and was written by helm, kubectl-create".into()
            )
        );
        let not_controller = claim(Some(&owned_by("uid-1", false)), "web", "uid-1");
        assert_eq!(
            not_controller,
            Claim::Foreign("it has no controller but is owned by Deployment other".into())
        );
    }

    #[test]
    fn adoption_needs_the_annotation_naming_this_stack_and_no_controller() {
        let annotated = |stack: &str, mut meta: ObjectMeta| {
            meta.annotations = Some(BTreeMap::from([(ADOPT.to_owned(), stack.to_owned())]));
            meta
        };
        let free = annotated("web", ObjectMeta::default());
        assert_eq!(claim(Some(&free), "web", "uid-1"), Claim::Adopt);
        let other_stack = annotated("api", ObjectMeta::default());
        assert!(!claim(Some(&other_stack), "web", "uid-1").writable());
        let controlled = annotated("web", owned_by("uid-2", true));
        assert!(!claim(Some(&controlled), "web", "uid-1").writable());
    }
}
