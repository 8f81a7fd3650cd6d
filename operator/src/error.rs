//! Errors of the reconcile pipeline's I/O steps, their categories and their backoff.
//!
//! Every variant names the object and the step ("failed to apply Deployment demo-ping").
//! [`Error::kind`] is a fixed PascalCase set used for metric labels, Event reasons and the
//! `Degraded` condition reason. [`Error::category`] picks the retry delay: conflicts retry soon,
//! API outages back off exponentially, RBAC problems and bugs wait long. A spec the operator
//! cannot realise is not an `Error`: the driver reports it in status and waits for a change.

use std::time::Duration;

/// An I/O failure while reconciling one stack.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stack lacks metadata the API server always sets (name, namespace, uid).
    #[error("PingPongStack is missing metadata.{0}")]
    MissingObjectKey(&'static str),
    /// Reading an object failed.
    #[error("failed to read {kind} {name}")]
    Read {
        /// Kubernetes kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Server-side apply of a child failed.
    #[error("failed to apply {kind} {name}")]
    Apply {
        /// Kubernetes kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing children to find orphans failed.
    #[error("failed to list {kind} objects of the stack")]
    List {
        /// Kubernetes kind.
        kind: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting a child the plan no longer contains failed.
    #[error("failed to delete {kind} {name}, which the spec no longer asks for")]
    Delete {
        /// Kubernetes kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An object of a child's name exists and the stack does not control it; it was left
    /// unchanged.
    #[error(
        "{kind} {name} exists and this stack does not control it ({owner}); it was left \
         unchanged: delete or rename it, or annotate it {adopt}={stack} to let the stack adopt it",
        adopt = crate::labels::ADOPT
    )]
    NotOwned {
        /// Kubernetes kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// Who owns it instead.
        owner: String,
        /// The stack's name.
        stack: String,
    },
    /// The spec asks for a child of an optional API the cluster does not serve; every other
    /// child was still applied.
    #[error(
        "{field} needs the {kind} API ({api_version}), which the cluster does not serve (CRD \
         {crd} is not installed); every other child was applied: install it (the operator looks \
         again every {refresh} s) or remove {field}",
        kind = .api.resource().kind,
        api_version = .api.resource().api_version,
        crd = .api.crd_name(),
        refresh = crate::apis::REFRESH.as_secs()
    )]
    ApiNotServed {
        /// The API the child needs.
        api: crate::apis::OptionalApi,
        /// The spec field that asks for it.
        field: &'static str,
    },
    /// A write of the selector migration failed (relabelling a pod or ReplicaSet, or deleting
    /// a workload with its dependents orphaned); see [`crate::reconcile::migrate`].
    #[error("failed to {step} {kind} {name} while migrating the stack's selectors")]
    Migrate {
        /// What the migration did: "relabel", "orphan-delete".
        step: &'static str,
        /// Kubernetes kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A workload deleted with its dependents orphaned (selector migration) is still there
    /// after the wait: the garbage collector has not released it yet; retried soon.
    #[error(
        "{kind} {name} was deleted with its pods orphaned to migrate its selector and is still          being deleted; the migration continues once it is gone"
    )]
    MigrationPending {
        /// Kubernetes kind.
        kind: &'static str,
        /// Object name.
        name: String,
    },
    /// Writing the stack's status failed.
    #[error("failed to update the status of PingPongStack {name}")]
    Status {
        /// Stack name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The whole reconcile took longer than its deadline (a hung API call).
    #[error("reconcile did not finish within {0:?}")]
    Timeout(std::time::Duration),
    /// Several children failed to apply or to be deleted; every other child was still applied.
    #[error("{}", chains(.0))]
    Children(Vec<Error>),
}

fn chains(errors: &[Error]) -> String {
    errors
        .iter()
        .map(Error::chain)
        .collect::<Vec<_>>()
        .join("; ")
}

/// How to retry an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// Someone else wrote the object (409): retry soon.
    Conflict,
    /// The API server or network failed (5xx, 429, timeouts): back off exponentially.
    Transient,
    /// RBAC denies the request (401/403): a human must act; retry slowly.
    Forbidden,
    /// The request itself is wrong (4xx, missing metadata): retry rarely.
    Permanent,
    /// Someone else's object holds a child's name: retry at a moderate pace, since removing it
    /// is a change the operator does not watch.
    Blocked,
}

impl Category {
    fn of_api(source: &kube::Error) -> Self {
        match source {
            kube::Error::Api(status) => match status.code {
                409 => Self::Conflict,
                401 | 403 => Self::Forbidden,
                429 => Self::Transient,
                code if code >= 500 => Self::Transient,
                _ => Self::Permanent,
            },
            _ => Self::Transient,
        }
    }

    /// Delay before retry number `attempt` (0 for the first retry): exponential, capped.
    pub fn backoff(self, attempt: u32) -> Duration {
        let (base, cap): (u64, u64) = match self {
            Self::Conflict => (2, 60),
            Self::Transient => (5, 300),
            Self::Forbidden => (60, 900),
            Self::Permanent => (300, 1800),
            Self::Blocked => (15, 300),
        };
        let factor = 1u64.checked_shl(attempt.min(16)).unwrap_or(u64::MAX);
        Duration::from_secs(base.saturating_mul(factor).min(cap))
    }
}

impl Error {
    fn api_source(&self) -> Option<&kube::Error> {
        match self {
            Self::Children(errors) => errors.first().and_then(Self::api_source),
            Self::Read { source, .. }
            | Self::Apply { source, .. }
            | Self::List { source, .. }
            | Self::Delete { source, .. }
            | Self::Migrate { source, .. }
            | Self::Status { source, .. } => Some(source),
            Self::MissingObjectKey(_)
            | Self::MigrationPending { .. }
            | Self::Timeout(_)
            | Self::NotOwned { .. }
            | Self::ApiNotServed { .. } => None,
        }
    }

    /// How to retry this error.
    pub fn category(&self) -> Category {
        match self {
            Self::Timeout(_) => Category::Transient,
            Self::NotOwned { .. } => Category::Blocked,
            Self::MigrationPending { .. } => Category::Conflict,
            // A retry cannot help: the operator looks for the API on its own timer and
            // reconciles every stack again when it appears.
            Self::ApiNotServed { .. } => Category::Permanent,
            // Retry as soon as the most urgent failure asks for.
            Self::Children(errors) => errors
                .iter()
                .map(Self::category)
                .min_by_key(|c| c.backoff(0))
                .unwrap_or(Category::Transient),
            _ => self
                .api_source()
                .map_or(Category::Permanent, Category::of_api),
        }
    }

    /// The error's category as a fixed PascalCase string (metrics, Events, condition reasons).
    pub fn kind(&self) -> &'static str {
        if let Self::Children(errors) = self {
            return errors.first().map_or("ApplyFailed", Self::kind);
        }
        let category = self.category();
        match (self, category) {
            (_, Category::Forbidden) if self.api_source().is_some() => "Forbidden",
            (Self::Apply { .. }, Category::Conflict) => "ApplyConflict",
            (Self::Status { .. }, Category::Conflict) => "StatusConflict",
            (Self::MissingObjectKey(_), _) => "MissingObjectKey",
            (Self::Read { .. }, _) => "ReadFailed",
            (Self::Apply { .. }, _) => "ApplyFailed",
            (Self::List { .. }, _) => "ListFailed",
            (Self::Delete { .. }, _) => "DeleteFailed",
            (Self::Status { .. }, _) => "StatusFailed",
            (Self::Migrate { .. }, _) => "SelectorMigrationFailed",
            (Self::MigrationPending { .. }, _) => "SelectorMigrationPending",
            (Self::Timeout(_), _) => "Timeout",
            (Self::NotOwned { .. }, _) => "ChildNotOwned",
            (Self::ApiNotServed { api, .. }, _) => api.missing_reason(),
            (Self::Children(_), _) => "ApplyFailed",
        }
    }

    /// One error for the failures of a walk over the children: `None` when there were none.
    pub fn of_children(mut errors: Vec<Error>) -> Option<Self> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Self::Children(errors)),
        }
    }

    /// The error and its sources on one line, for status messages and Event notes.
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// `error` and its sources on one line, each said once: "failed to apply StatefulSet demo-rabbitmq:
/// StatefulSet.apps \"demo-rabbitmq\" is invalid: … (Invalid, 422)".
///
/// kube's own `Display` of an API error repeats the server's message and then the whole `Status`
/// in `Debug` form, and the `Status` is its source again, so a plain walk says everything three
/// times. An API error is written as the server's message, reason and code and ends the walk; any
/// other source whose text the line already holds is skipped.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(kube::Error::Api(status)) = current.downcast_ref::<kube::Error>() {
            push_part(&mut out, &api_status(status));
            break;
        }
        push_part(&mut out, &current.to_string());
        next = current.source();
    }
    out
}

fn api_status(status: &kube::core::Status) -> String {
    let message = if status.message.is_empty() {
        "the API server refused the request"
    } else {
        status.message.as_str()
    };
    match (status.reason.is_empty(), status.code) {
        (true, 0) => message.to_owned(),
        (true, code) => format!("{message} ({code})"),
        (false, 0) => format!("{message} ({})", status.reason),
        (false, code) => format!("{message} ({}, {code})", status.reason),
    }
}

fn push_part(out: &mut String, part: &str) {
    if part.is_empty() || out.contains(part) {
        return;
    }
    if !out.is_empty() {
        out.push_str(": ");
    }
    out.push_str(part);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("injected", "Injected")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn kinds_and_categories() {
        let apply = |code| Error::Apply {
            kind: "Deployment",
            name: "demo-ping".into(),
            source: api(code),
        };
        assert_eq!(apply(409).kind(), "ApplyConflict");
        assert_eq!(apply(409).category(), Category::Conflict);
        assert_eq!(apply(500).kind(), "ApplyFailed");
        assert_eq!(apply(500).category(), Category::Transient);
        assert_eq!(apply(403).kind(), "Forbidden");
        assert_eq!(apply(422).category(), Category::Permanent);
        assert_eq!(Error::MissingObjectKey("uid").kind(), "MissingObjectKey");
        let timeout = Error::Timeout(Duration::from_secs(120));
        assert_eq!(
            (timeout.kind(), timeout.category()),
            ("Timeout", Category::Transient)
        );
        assert!(
            apply(500)
                .chain()
                .starts_with("failed to apply Deployment demo-ping: ")
        );
    }

    #[test]
    fn an_api_error_is_said_once_with_reason_and_code() {
        let status = kube::core::Status::failure(
            "StatefulSet.apps \"demo-rabbitmq\" is invalid: spec: Forbidden: updates to statefulset spec are forbidden",
            "Invalid",
        )
        .with_code(422);
        let error = Error::Apply {
            kind: "StatefulSet",
            name: "demo-rabbitmq".into(),
            source: kube::Error::Api(status.boxed()),
        };
        assert_eq!(
            error.chain(),
            "failed to apply StatefulSet demo-rabbitmq: StatefulSet.apps \"demo-rabbitmq\" is \
             invalid: spec: Forbidden: updates to statefulset spec are forbidden (Invalid, 422)"
        );
        let conflict = Error::Apply {
            kind: "Deployment",
            name: "demo-ping".into(),
            source: api(409),
        };
        let both = Error::Children(vec![error, conflict]);
        assert_eq!(both.chain().matches("is invalid").count(), 1);
        assert!(
            both.chain().ends_with("injected (Injected, 409)"),
            "{}",
            both.chain()
        );
    }

    #[test]
    fn other_sources_are_chained_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] std::io::Error);
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(chain(&error), "outer: connection refused");
        let timeout = Error::Timeout(Duration::from_secs(120));
        assert_eq!(timeout.chain(), "reconcile did not finish within 120s");
    }

    #[test]
    fn backoff_is_exponential_capped_and_never_a_fixed_second() {
        assert_eq!(Category::Conflict.backoff(0), Duration::from_secs(2));
        assert_eq!(Category::Conflict.backoff(1), Duration::from_secs(4));
        assert_eq!(Category::Conflict.backoff(10), Duration::from_secs(60));
        assert_eq!(Category::Transient.backoff(0), Duration::from_secs(5));
        assert_eq!(Category::Transient.backoff(3), Duration::from_secs(40));
        assert_eq!(
            Category::Transient.backoff(u32::MAX),
            Duration::from_secs(300)
        );
        assert_eq!(Category::Forbidden.backoff(0), Duration::from_secs(60));
        assert_eq!(Category::Permanent.backoff(2), Duration::from_secs(1200));
    }
}
