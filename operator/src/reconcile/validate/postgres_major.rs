//! A provisioned PostgreSQL never meets a major version its data directory was not initialised
//! with (pure).
//!
//! PostgreSQL refuses to start on a data directory of another major version, so a new default
//! image (an operator upgrade) or an edited `image` with another major would leave the database
//! down. The major the data was initialised with is recorded in `status.store.dataMajorVersion`;
//! a change is refused, and the StatefulSet keeps the image of the recorded major, unless the
//! stack carries the annotation [`POSTGRES_MAJOR_UPGRADE`] naming the new major (the documented
//! dump, delete the claim, restore path). Every other child is still applied.

use crate::crd::PingPongStack;
use crate::labels::POSTGRES_MAJOR_UPGRADE;
use crate::reconcile::health::Problem;

/// Condition reason of a refused major-version change.
pub const POSTGRES_MAJOR_UPGRADE_REFUSED: &str = "PostgresMajorUpgradeRefused";

/// The major version of a `postgres` image reference, from its tag: `postgres:17` and
/// `postgres:16.4-bookworm` are 17 and 16; no tag, `latest` or a digest alone are unknown.
pub fn major_version(image: &str) -> Option<u32> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let (_, tag) = last.split_once(':')?;
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What the provisioned database runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The image to apply.
    pub image: String,
    /// `status.store.dataMajorVersion` after this apply.
    pub data_major: Option<u32>,
    /// Why the wanted image is not applied, when it is not.
    pub refused: Option<Problem>,
}

/// Decides the image of the provisioned database of `stack` that wants `wanted`; `ephemeral`
/// data starts empty on every pod start, so it takes any major.
pub fn decide(stack: &PingPongStack, wanted: &str, ephemeral: bool) -> Decision {
    let status = stack.status.as_ref();
    let recorded = status
        .and_then(|s| s.store.as_ref())
        .and_then(|s| s.data_major_version);
    let wanted_major = major_version(wanted);
    let accept = |major| Decision {
        image: wanted.to_owned(),
        data_major: major,
        refused: None,
    };
    let (Some(recorded), Some(new)) = (recorded, wanted_major) else {
        // Nothing recorded yet (this apply initialises the data), or a tag that cannot be
        // judged: keep what is known.
        return accept(recorded.or(wanted_major));
    };
    let allowed = stack
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POSTGRES_MAJOR_UPGRADE))
        .is_some_and(|v| v.trim() == new.to_string());
    if new == recorded || ephemeral || allowed {
        return accept(Some(new));
    }
    // Keep running the image applied before when it is of the recorded major.
    let previous = status
        .and_then(|s| s.images.as_ref())
        .and_then(|i| i.postgres.as_ref())
        .map(|i| i.image.clone())
        .filter(|image| major_version(image) == Some(recorded))
        .unwrap_or_else(|| format!("postgres:{recorded}"));
    let message = format!(
        "PostgreSQL {new} ({wanted}) cannot start on data initialised by PostgreSQL {recorded}: \
         the database keeps running {previous}. To upgrade, dump the data, annotate the stack \
         {POSTGRES_MAJOR_UPGRADE}={new}, delete the claim and the pod, and restore (README, \
         Day-2 operations: upgrading PostgreSQL), or set \
         spec.pong.store.postgres.provisioned.image to a PostgreSQL {recorded} image"
    );
    Decision {
        image: previous,
        data_major: Some(recorded),
        refused: Some(Problem {
            reason: POSTGRES_MAJOR_UPGRADE_REFUSED,
            message,
            needs_action: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        ComponentImages, ImageSource, PingPongStackSpec, PingPongStackStatus, ResolvedImage,
        StoreStatus,
    };

    fn stack(recorded: Option<u32>, previous: &str, annotation: Option<&str>) -> PingPongStack {
        let mut stack = PingPongStack::new("demo", PingPongStackSpec::default());
        stack.metadata.annotations =
            annotation.map(|v| [(POSTGRES_MAJOR_UPGRADE.to_owned(), v.to_owned())].into());
        stack.status = Some(PingPongStackStatus {
            store: Some(StoreStatus {
                data_major_version: recorded,
                ..StoreStatus::default()
            }),
            images: Some(ComponentImages {
                postgres: Some(ResolvedImage {
                    image: previous.to_owned(),
                    source: ImageSource::OperatorDefault,
                    available: None,
                }),
                ..ComponentImages::default()
            }),
            ..PingPongStackStatus::default()
        });
        stack
    }

    #[test]
    fn majors_come_from_the_tag() {
        assert_eq!(major_version("postgres:17"), Some(17));
        assert_eq!(major_version("postgres:16.4-bookworm"), Some(16));
        assert_eq!(
            major_version("registry:5000/library/postgres:15-alpine"),
            Some(15)
        );
        assert_eq!(major_version("postgres:18@sha256:abc"), Some(18));
        assert_eq!(major_version("postgres"), None);
        assert_eq!(major_version("postgres:latest"), None);
        assert_eq!(major_version("registry:5000/postgres"), None);
    }

    #[test]
    fn a_new_major_is_refused_and_the_old_image_kept() {
        let decision = decide(
            &stack(Some(16), "postgres:16.4", None),
            "postgres:17",
            false,
        );
        assert_eq!(decision.image, "postgres:16.4");
        assert_eq!(decision.data_major, Some(16));
        let refused = decision.refused.unwrap();
        assert_eq!(refused.reason, POSTGRES_MAJOR_UPGRADE_REFUSED);
        assert!(
            refused
                .message
                .contains("pingpong.dev/postgres-major-upgrade=17")
        );
        // Without a recorded image of that major, the official image of the recorded major.
        let decision = decide(&stack(Some(16), "postgres:17", None), "postgres:17", false);
        assert_eq!(decision.image, "postgres:16");
    }

    #[test]
    fn the_documented_path_ephemeral_data_and_first_apply_are_accepted() {
        let annotated = decide(
            &stack(Some(16), "postgres:16", Some("17")),
            "postgres:17",
            false,
        );
        assert_eq!(
            (annotated.image.as_str(), annotated.data_major),
            ("postgres:17", Some(17))
        );
        assert_eq!(annotated.refused, None);
        // An annotation for another major does not open this one.
        let other = decide(
            &stack(Some(16), "postgres:16", Some("18")),
            "postgres:17",
            false,
        );
        assert!(other.refused.is_some());
        let ephemeral = decide(&stack(Some(16), "postgres:16", None), "postgres:17", true);
        assert_eq!(ephemeral.refused, None);
        let first = decide(&stack(None, "postgres:17", None), "postgres:17", false);
        assert_eq!((first.data_major, first.refused), (Some(17), None));
        let same = decide(
            &stack(Some(17), "postgres:17", None),
            "postgres:17.2",
            false,
        );
        assert_eq!((same.image.as_str(), same.refused), ("postgres:17.2", None));
        // A tag that cannot be judged keeps the recorded major.
        let latest = decide(
            &stack(Some(16), "postgres:16", None),
            "postgres:latest",
            false,
        );
        assert_eq!((latest.data_major, latest.refused), (Some(16), None));
    }
}
