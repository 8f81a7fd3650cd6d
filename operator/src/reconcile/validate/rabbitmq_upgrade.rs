//! A running broker's RabbitMQ version changes only by a step RabbitMQ supports (pure).
//!
//! RabbitMQ upgrades a cluster in place one minor series at a time: within a major from X.Y to
//! X.(Y+1), and across majors only from the last series of the old one (3.13 → 4.0; "You can only
//! upgrade to RabbitMQ 4.0 from RabbitMQ 3.13", RabbitMQ's upgrade guide), with every stable
//! feature flag enabled before each step; it never supports a downgrade. A node started on
//! data of a series it cannot upgrade from refuses to boot (`required feature flag not enabled`),
//! which leaves the broker down. So when the broker image (from the spec, or a new operator
//! default under `upgradePolicy: Automatic`) would move a running broker to another series by
//! anything but such a step, the StatefulSet keeps the image it runs (the one recorded in
//! `status.images.rabbitmq`), every other child is applied, and `Degraded` says which step to
//! take instead ([`RABBITMQ_UPGRADE_REFUSED`]). A tag whose series cannot be read (`latest`,
//! `4`, a digest alone) is refused the same way, since nothing tells the step. Patch releases of
//! one series move freely. The annotation [`RABBITMQ_UPGRADE`] naming the wanted image lets one
//! change through after the user checked the path (e.g. a blue-green migration). A stack without
//! a recorded image (its first apply) takes any image.

use super::broker::tag_version;
use crate::broker_check::upgrade::BrokerView;
use crate::crd::PingPongStack;
use crate::labels::RABBITMQ_UPGRADE;
use crate::reconcile::health::Problem;

/// Condition reason of a refused RabbitMQ version change.
pub const RABBITMQ_UPGRADE_REFUSED: &str = "RabbitMQUpgradeRefused";
/// Event reason of a change of series the running broker cleared.
pub const RABBITMQ_UPGRADE_CHECKED: &str = "RabbitMQUpgradeChecked";

/// A RabbitMQ release series (`major.minor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl std::fmt::Display for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The last series of each major, from which the next major's first series is reached.
const LAST_OF_MAJOR: [Series; 1] = [Series {
    major: 3,
    minor: 13,
}];

impl Series {
    /// The series of an image reference's tag; `None` when the tag does not name one.
    pub fn of_image(image: &str) -> Option<Self> {
        match tag_version(image)? {
            (major, Some(minor)) => Some(Self { major, minor }),
            (_, None) => None,
        }
    }

    /// The one series a running broker of this series may move to.
    pub fn next(self) -> Self {
        if LAST_OF_MAJOR.contains(&self) {
            Self {
                major: self.major + 1,
                minor: 0,
            }
        } else {
            Self {
                major: self.major,
                minor: self.minor + 1,
            }
        }
    }
}

/// Whether RabbitMQ supports moving a running broker from one series to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The same series (a patch release, either way).
    SameSeries,
    /// The next series ([`Series::next`]).
    Supported,
    /// A downgrade (never supported).
    Downgrade,
    /// Skips the series between; the first step to take instead.
    Skips {
        /// The series to upgrade to first.
        first: Series,
    },
}

/// The step from `from` to `to` (pure; see the module docs for the rule).
pub fn step(from: Series, to: Series) -> Step {
    if from == to {
        Step::SameSeries
    } else if to < from {
        Step::Downgrade
    } else if to == from.next() {
        Step::Supported
    } else {
        Step::Skips { first: from.next() }
    }
}

/// The broker image to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The image to apply.
    pub image: String,
    /// Why the wanted image is not applied, when it is not.
    pub refused: Option<Problem>,
}

/// The broker image `stack` records as running (`status.images.rabbitmq`), if any.
fn running_image(stack: &PingPongStack) -> Option<String> {
    stack
        .status
        .as_ref()
        .and_then(|s| s.images.as_ref())
        .map(|i| i.rabbitmq.image.clone())
        .filter(|image| !image.is_empty())
}

/// Whether the annotation [`RABBITMQ_UPGRADE`] lets `wanted` through unchecked.
fn annotated(stack: &PingPongStack, wanted: &str) -> bool {
    stack
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RABBITMQ_UPGRADE))
        .is_some_and(|v| v.trim() == wanted)
}

/// Decides the broker image of `stack` that wants `wanted`.
pub fn decide(stack: &PingPongStack, wanted: &str) -> Decision {
    let accept = || Decision {
        image: wanted.to_owned(),
        refused: None,
    };
    let Some(running) = running_image(stack) else {
        return accept();
    };
    if running == wanted || annotated(stack, wanted) {
        return accept();
    }
    let why = match (Series::of_image(&running), Series::of_image(wanted)) {
        (Some(from), Some(to)) => match step(from, to) {
            Step::SameSeries | Step::Supported => return accept(),
            Step::Downgrade => format!(
                "RabbitMQ {to} ({wanted}) would downgrade the broker from {from}, which RabbitMQ \
                 does not support"
            ),
            Step::Skips { first } => format!(
                "RabbitMQ {from} → {to} ({wanted}) skips {first}: RabbitMQ upgrades a running \
                 broker one series at a time (3.13 → 4.0 → 4.1 → 4.2 …); set \
                 spec.rabbitmq.image to a RabbitMQ {first} image first"
            ),
        },
        (from, to) => {
            let unknown = match (from, to) {
                (None, _) => &running,
                _ => wanted,
            };
            format!(
                "the RabbitMQ version of {unknown} cannot be read from its tag, so the step from \
                 {running} to {wanted} cannot be judged; name a tag with the version \
                 (rabbitmq:4.2-management)"
            )
        }
    };
    let message = format!(
        "{why}. The broker keeps running {running}. Before each step enable every stable \
         feature flag (rabbitmqctl enable_feature_flag all). To apply {wanted} anyway, after \
         checking the path yourself (e.g. a blue-green migration), annotate the stack \
         {RABBITMQ_UPGRADE}={wanted}"
    );
    Decision {
        image: running,
        refused: Some(Problem {
            reason: RABBITMQ_UPGRADE_REFUSED,
            message,
            needs_action: true,
        }),
    }
}

/// A change of series that the running broker is asked about before it is applied: RabbitMQ
/// takes the step only with every stable feature flag enabled, and a later series removes the
/// deprecated features still in use. The reconcile reads both from a ready broker pod
/// ([`crate::broker_check::upgrade::ask_running`]) and keeps the running image while either
/// blocks the step or the broker cannot be read ([`SeriesChange::hold`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesChange {
    /// The image the broker runs (recorded in status).
    pub running: String,
    /// The image of the other series to apply.
    pub wanted: String,
    /// The running series.
    pub from: Series,
    /// The wanted series.
    pub to: Series,
}

/// The change of series that applying `wanted` makes to `stack`'s running broker (pure), after
/// [`decide`]: none on a first apply, within a series, for a tag without a version, or when the
/// annotation [`RABBITMQ_UPGRADE`] names `wanted` (the user checked the broker).
pub fn series_change(stack: &PingPongStack, wanted: &str) -> Option<SeriesChange> {
    let running = running_image(stack)?;
    if running == wanted || annotated(stack, wanted) {
        return None;
    }
    let (from, to) = (Series::of_image(&running)?, Series::of_image(wanted)?);
    (from != to).then(|| SeriesChange {
        running,
        wanted: wanted.to_owned(),
        from,
        to,
    })
}

impl SeriesChange {
    /// Why the change waits, from what asking the running broker gave (pure): `None` when it
    /// answered with nothing that blocks the step.
    pub fn hold(&self, asked: &Result<BrokerView, String>) -> Option<Problem> {
        let why = match asked {
            Ok(view) => view.refusal()?,
            Err(error) => format!(
                "its feature flags and deprecated features could not be read ({error}); the \
                 operator asks again on its next reconcile"
            ),
        };
        let Self {
            running,
            wanted,
            from,
            to,
        } = self;
        Some(Problem {
            reason: RABBITMQ_UPGRADE_REFUSED,
            message: format!(
                "RabbitMQ {from} → {to} ({wanted}) waits for the running broker: {why}. The \
                 broker keeps running {running}. To apply {wanted} anyway, after checking the \
                 broker yourself, annotate the stack {RABBITMQ_UPGRADE}={wanted}"
            ),
            needs_action: true,
        })
    }

    /// What the Event of a change the broker cleared says.
    pub fn cleared(&self, pod: &str, view: &BrokerView) -> String {
        let Self {
            running,
            wanted,
            from,
            to,
        } = self;
        let asked = if pod.is_empty() {
            "the broker".to_owned()
        } else {
            format!("broker pod {pod}")
        };
        format!(
            "RabbitMQ {from} → {to}: {asked} lists {} feature flags with every stable one \
             enabled, and no deprecated feature in use; {running} is replaced by {wanted}",
            view.feature_flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        ComponentImages, ImageSource, PingPongStackSpec, PingPongStackStatus, ResolvedImage,
    };

    fn series(major: u32, minor: u32) -> Series {
        Series { major, minor }
    }

    fn stack(running: Option<&str>, annotation: Option<&str>) -> PingPongStack {
        let mut stack = PingPongStack::new("demo", PingPongStackSpec::default());
        stack.metadata.annotations =
            annotation.map(|v| [(RABBITMQ_UPGRADE.to_owned(), v.to_owned())].into());
        stack.status = running.map(|image| PingPongStackStatus {
            images: Some(ComponentImages {
                rabbitmq: ResolvedImage {
                    image: image.to_owned(),
                    source: ImageSource::OperatorDefault,
                    available: None,
                },
                ..ComponentImages::default()
            }),
            ..PingPongStackStatus::default()
        });
        stack
    }

    #[test]
    fn series_come_from_the_tag() {
        for (image, expected) in [
            ("rabbitmq:4.2-management", Some(series(4, 2))),
            ("rabbitmq:3.13.7-management-alpine", Some(series(3, 13))),
            (
                "registry.local:5000/mirror/rabbitmq:4.0.5",
                Some(series(4, 0)),
            ),
            ("localhost/rabbitmq:3.10.8", Some(series(3, 10))),
            ("rabbitmq:4.1@sha256:abc", Some(series(4, 1))),
            ("rabbitmq:4", None),
            ("rabbitmq:3-management", None),
            ("rabbitmq:latest", None),
            ("rabbitmq", None),
            ("rabbitmq@sha256:abc", None),
        ] {
            assert_eq!(Series::of_image(image), expected, "{image}");
        }
    }

    #[test]
    fn the_supported_steps() {
        for (from, to, expected) in [
            (series(4, 2), series(4, 2), Step::SameSeries),
            (series(4, 1), series(4, 2), Step::Supported),
            (series(3, 12), series(3, 13), Step::Supported),
            (series(3, 13), series(4, 0), Step::Supported),
            (series(4, 0), series(4, 1), Step::Supported),
            (series(3, 10), series(3, 11), Step::Supported),
            (
                series(4, 0),
                series(4, 2),
                Step::Skips {
                    first: series(4, 1),
                },
            ),
            (
                series(3, 12),
                series(4, 0),
                Step::Skips {
                    first: series(3, 13),
                },
            ),
            (
                series(3, 13),
                series(4, 1),
                Step::Skips {
                    first: series(4, 0),
                },
            ),
            (
                series(3, 10),
                series(4, 2),
                Step::Skips {
                    first: series(3, 11),
                },
            ),
            (series(4, 2), series(4, 1), Step::Downgrade),
            (series(4, 0), series(3, 13), Step::Downgrade),
        ] {
            assert_eq!(step(from, to), expected, "{from} → {to}");
        }
    }

    #[test]
    fn a_skip_a_downgrade_and_an_unreadable_tag_are_refused_keeping_the_running_image() {
        for (running, wanted, says) in [
            (
                "rabbitmq:4.0-management",
                "rabbitmq:4.2-management",
                "skips 4.1",
            ),
            (
                "rabbitmq:4.2-management",
                "rabbitmq:4.1-management",
                "downgrade",
            ),
            (
                "rabbitmq:4.2-management",
                "rabbitmq:latest",
                "rabbitmq:latest",
            ),
            (
                "rabbitmq:latest",
                "rabbitmq:4.2-management",
                "rabbitmq:latest",
            ),
        ] {
            let decision = decide(&stack(Some(running), None), wanted);
            assert_eq!(decision.image, running, "{running} → {wanted}");
            let refused = decision.refused.expect("refused");
            assert_eq!(refused.reason, RABBITMQ_UPGRADE_REFUSED);
            assert!(refused.needs_action);
            for part in [
                says,
                "rabbitmqctl enable_feature_flag all",
                &format!("pingpong.dev/rabbitmq-upgrade={wanted}"),
                &format!("keeps running {running}"),
            ] {
                assert!(
                    refused.message.contains(part),
                    "{part:?} not in {}",
                    refused.message
                );
            }
        }
    }

    #[test]
    fn a_supported_step_the_first_apply_and_the_annotated_image_are_applied() {
        for (running, wanted, annotation) in [
            (None, "rabbitmq:3.9-management", None),
            (
                Some("rabbitmq:4.2-management"),
                "rabbitmq:4.3-management",
                None,
            ),
            (
                Some("rabbitmq:3.13.7-management"),
                "rabbitmq:4.0-management",
                None,
            ),
            (Some("rabbitmq:4.2.1"), "rabbitmq:4.2.0", None),
            (
                Some("rabbitmq:4.2"),
                "rabbitmq:latest",
                Some("rabbitmq:latest"),
            ),
            (Some("rabbitmq:4.0"), "rabbitmq:4.2", Some(" rabbitmq:4.2 ")),
        ] {
            let decision = decide(&stack(running, annotation), wanted);
            assert_eq!(
                decision,
                Decision {
                    image: wanted.to_owned(),
                    refused: None
                },
                "{running:?} → {wanted} ({annotation:?})"
            );
        }
        // An annotation naming another image does not open this one.
        let other = decide(
            &stack(Some("rabbitmq:4.0"), Some("rabbitmq:4.1")),
            "rabbitmq:4.2",
        );
        assert_eq!(other.image, "rabbitmq:4.0");
    }

    #[test]
    fn only_a_change_of_series_asks_the_broker() {
        let change =
            |running, annotation, wanted| series_change(&stack(running, annotation), wanted);
        let asked = change(
            Some("rabbitmq:4.2-management"),
            None,
            "rabbitmq:4.3-management",
        )
        .expect("4.2 → 4.3 asks");
        assert_eq!(
            (asked.from, asked.to, asked.running.as_str()),
            (series(4, 2), series(4, 3), "rabbitmq:4.2-management")
        );
        for (running, annotation, wanted) in [
            (None, None, "rabbitmq:4.3"),
            (Some("rabbitmq:4.2.1"), None, "rabbitmq:4.2.2"),
            (Some("rabbitmq:4.2"), None, "rabbitmq:4.2"),
            (Some("rabbitmq:4.2"), Some("rabbitmq:4.3"), "rabbitmq:4.3"),
            (Some("rabbitmq:4.2"), None, "rabbitmq:latest"),
        ] {
            assert_eq!(
                change(running, annotation, wanted),
                None,
                "{running:?} → {wanted}"
            );
        }
        // An annotation naming another image does not spare this one the question.
        assert!(change(Some("rabbitmq:4.2"), Some("rabbitmq:4.4"), "rabbitmq:4.3").is_some());
    }

    #[test]
    fn the_broker_clears_a_change_only_with_nothing_blocking_it() {
        let change = series_change(
            &stack(Some("rabbitmq:3.13.7"), None),
            "rabbitmq:4.0.5-management",
        )
        .expect("3.13 → 4.0 asks");
        let clear = BrokerView {
            feature_flags: 31,
            ..BrokerView::default()
        };
        assert_eq!(change.hold(&Ok(clear.clone())), None);
        let note = change.cleared("demo-rabbitmq-0", &clear);
        assert!(
            note.contains("3.13 → 4.0") && note.contains("demo-rabbitmq-0") && note.contains("31"),
            "{note}"
        );

        let blocked = BrokerView {
            disabled_feature_flags: vec!["khepri_db".into(), "stream_filtering".into()],
            ..clear
        };
        let held = change.hold(&Ok(blocked)).expect("held");
        assert_eq!(
            (held.reason, held.needs_action),
            (RABBITMQ_UPGRADE_REFUSED, true)
        );
        for part in [
            "RabbitMQ 3.13 → 4.0 (rabbitmq:4.0.5-management) waits for the running broker",
            "khepri_db, stream_filtering",
            "keeps running rabbitmq:3.13.7",
            "pingpong.dev/rabbitmq-upgrade=rabbitmq:4.0.5-management",
        ] {
            assert!(
                held.message.contains(part),
                "{part:?} not in {}",
                held.message
            );
        }
        let unread = change
            .hold(&Err("no broker pod is ready to answer".into()))
            .expect("held");
        assert!(
            unread
                .message
                .contains("could not be read (no broker pod is ready to answer)"),
            "{}",
            unread.message
        );
    }
}
