//! Kubernetes Events on the stack, emitted only on transitions.
//!
//! [`transitions`] is pure: it compares the status before and after a reconcile and says which
//! Events a user should see (created, updated, an error appeared or changed, recovered, paused,
//! resumed, became ready). A steady state emits nothing, so a reconcile every five minutes does
//! not fill `kubectl describe`. Publishing failures are logged and never fail a reconcile.

use super::status::condition_type;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::{Event, EventType, Recorder};

/// Event reasons that are not condition reasons.
pub mod event_reason {
    /// The first successful apply of a new stack.
    pub const CREATED: &str = "Created";
    /// A spec change (new generation) was applied.
    pub const UPDATED: &str = "Updated";
    /// Degraded went back to False.
    pub const RECOVERED: &str = "Recovered";
    /// Paused became True.
    pub const PAUSED: &str = "Paused";
    /// Paused became False.
    pub const RESUMED: &str = "Resumed";
    /// Ready became True.
    pub const READY: &str = "Ready";
}

/// One Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Normal or Warning.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// PascalCase action the operator took.
    pub action: &'static str,
    /// Human-readable note.
    pub note: String,
}

fn find<'a>(cs: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    cs.iter().find(|c| c.type_ == type_)
}

fn status_of(cs: &[Condition], type_: &str) -> bool {
    find(cs, type_).is_some_and(|c| c.status == "True")
}

/// Decides which Events describe the change from `before` to `after`.
///
/// `previous_generation` is the status's `observedGeneration` before this reconcile (`None` for a
/// new stack); `generation` is the stack's current `metadata.generation`; `applied` says whether
/// children were written in this reconcile.
pub fn transitions(
    before: &[Condition],
    after: &[Condition],
    previous_generation: Option<i64>,
    generation: Option<i64>,
    applied: bool,
) -> Vec<Notice> {
    use condition_type::{DEGRADED, PAUSED, READY};
    let mut out = Vec::new();
    let normal = |reason: &str, action: &'static str, note: String| Notice {
        warning: false,
        reason: reason.to_owned(),
        action,
        note,
    };
    if applied {
        match previous_generation {
            None => out.push(normal(
                event_reason::CREATED,
                "Apply",
                "created the stack's objects".to_owned(),
            )),
            Some(prev) if generation.is_some_and(|g| g > prev) => out.push(normal(
                event_reason::UPDATED,
                "Apply",
                format!("applied spec generation {}", generation.unwrap_or_default()),
            )),
            Some(_) => {}
        }
    }
    let degraded_before = find(before, DEGRADED).filter(|c| c.status == "True");
    match (
        degraded_before,
        find(after, DEGRADED).filter(|c| c.status == "True"),
    ) {
        (prev, Some(now)) if prev.is_none_or(|p| p.reason != now.reason) => out.push(Notice {
            warning: true,
            reason: now.reason.clone(),
            action: "Reconcile",
            note: now.message.clone(),
        }),
        (Some(_), None) => out.push(normal(
            event_reason::RECOVERED,
            "Reconcile",
            "the last reconcile succeeded".to_owned(),
        )),
        _ => {}
    }
    match (status_of(before, PAUSED), status_of(after, PAUSED)) {
        (false, true) => out.push(normal(
            event_reason::PAUSED,
            "Pause",
            "spec.paused is true; children are no longer changed".to_owned(),
        )),
        (true, false) => out.push(normal(
            event_reason::RESUMED,
            "Resume",
            "spec.paused is false; reconciling children again".to_owned(),
        )),
        _ => {}
    }
    if !status_of(before, READY) && status_of(after, READY) {
        let note = find(after, READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        out.push(normal(event_reason::READY, "Reconcile", note));
    }
    out
}

/// Publishes `notices` on the object `regarding`; failures are logged.
pub async fn publish(recorder: &Recorder, regarding: &ObjectReference, notices: Vec<Notice>) {
    for notice in notices {
        let event = Event {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason,
            note: Some(truncate(notice.note, 1000)),
            action: notice.action.to_owned(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, regarding).await {
            tracing::warn!(%error, reason = %event.reason, "failed to publish Event");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ComponentStatus;
    use crate::labels::Component;
    use crate::reconcile::status::{Outcome, Readiness, conditions, converged};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn now() -> Time {
        Time(Timestamp::UNIX_EPOCH)
    }

    fn ready(n: i32) -> Outcome {
        let c = ComponentStatus {
            replicas: 1,
            ready_replicas: n,
        };
        converged(Readiness::new([
            (Component::RabbitMq, c),
            (Component::Ping, c),
            (Component::Pong, c),
        ]))
    }

    fn reasons(n: &[Notice]) -> Vec<&str> {
        n.iter().map(|n| n.reason.as_str()).collect()
    }

    #[test]
    fn lifecycle_emits_one_event_per_transition() {
        let c1 = conditions(&ready(0), false, Some(1), &[], now());
        assert_eq!(
            reasons(&transitions(&[], &c1, None, Some(1), true)),
            ["Created"]
        );
        // Steady state: nothing.
        let c2 = conditions(&ready(0), false, Some(1), &c1, now());
        assert!(transitions(&c1, &c2, Some(1), Some(1), true).is_empty());
        // Became ready.
        let c3 = conditions(&ready(1), false, Some(1), &c2, now());
        assert_eq!(
            reasons(&transitions(&c2, &c3, Some(1), Some(1), true)),
            ["Ready"]
        );
        // Spec change.
        let c4 = conditions(&ready(1), false, Some(2), &c3, now());
        assert_eq!(
            reasons(&transitions(&c3, &c4, Some(1), Some(2), true)),
            ["Updated"]
        );
    }

    #[test]
    fn errors_warn_once_and_recovery_is_reported() {
        let ok = conditions(&ready(1), false, Some(1), &[], now());
        let failed = Outcome::Failed {
            reason: "ApplyFailed",
            message: "failed to apply Service demo-ping".into(),
        };
        let f1 = conditions(&failed, false, Some(1), &ok, now());
        let n = transitions(&ok, &f1, Some(1), Some(1), false);
        assert_eq!(reasons(&n), ["ApplyFailed"]);
        assert!(n[0].warning);
        let f2 = conditions(&failed, false, Some(1), &f1, now());
        assert!(transitions(&f1, &f2, Some(1), Some(1), false).is_empty());
        let back = conditions(&ready(1), false, Some(1), &f2, now());
        assert_eq!(
            reasons(&transitions(&f2, &back, Some(1), Some(1), true)),
            ["Recovered"]
        );
    }

    #[test]
    fn pause_and_resume() {
        let ok = conditions(&ready(1), false, Some(1), &[], now());
        let paused = conditions(&ready(1), true, Some(2), &ok, now());
        assert_eq!(
            reasons(&transitions(&ok, &paused, Some(1), Some(2), false)),
            ["Paused"]
        );
        let resumed = conditions(&ready(1), false, Some(3), &paused, now());
        assert_eq!(
            reasons(&transitions(&paused, &resumed, Some(2), Some(3), true)),
            ["Updated", "Resumed"]
        );
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        assert!(truncate(s, 1000).len() <= 1000);
    }
}
