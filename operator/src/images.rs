//! Default container images, stated in this one place.
//!
//! ping and pong are tagged with the operator's own crate version, so an operator release runs
//! the services of the same release. The three service images can be replaced per process
//! (`PINGPONG_*_IMAGE`, read by [`crate::config`]) and per stack (`spec.*.image`); the images of
//! a provisioned PostgreSQL, Redis and the exporter sidecar only per stack (or not at all).
//!
//! [`for_stack`] decides which default a stack gets (pure): under `upgradePolicy: Manual` the
//! default recorded in its `status.images` when the stack last applied one, so an operator
//! upgrade with new defaults does not roll it; [`component_images`] says, for status, where each
//! resolved image came from and which newer default is available.

use crate::crd::{ImageSource, PingPongStack, ResolvedImage, UpgradePolicy};

/// Default ping image.
pub const PING: &str = concat!("ghcr.io/pingpong-operator/ping:", env!("CARGO_PKG_VERSION"));
/// Default pong image.
pub const PONG: &str = concat!("ghcr.io/pingpong-operator/pong:", env!("CARGO_PKG_VERSION"));
/// Default RabbitMQ image.
pub const RABBITMQ: &str = "rabbitmq:4.2-management";
/// Default image of a provisioned PostgreSQL.
pub const POSTGRES: &str = "postgres:17";
/// Default image of a provisioned Redis.
pub const REDIS: &str = "redis:7.4";
/// Image of the postgres-exporter sidecar (pinned).
pub const POSTGRES_EXPORTER: &str = "quay.io/prometheuscommunity/postgres-exporter:v0.17.1";

/// The images a stack gets when it does not name its own: the defaults above, or the operator's
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// Image of the ping service (`PINGPONG_PING_IMAGE`).
    pub ping: String,
    /// Image of the pong service (`PINGPONG_PONG_IMAGE`).
    pub pong: String,
    /// Image of the RabbitMQ broker (`PINGPONG_RABBITMQ_IMAGE`).
    pub rabbitmq: String,
    /// Image of a provisioned PostgreSQL ([`POSTGRES`]).
    pub postgres: String,
    /// Image of the postgres-exporter sidecar ([`POSTGRES_EXPORTER`]).
    pub postgres_exporter: String,
    /// Image of a provisioned Redis ([`REDIS`]).
    pub redis: String,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            ping: PING.to_owned(),
            pong: PONG.to_owned(),
            rabbitmq: RABBITMQ.to_owned(),
            postgres: POSTGRES.to_owned(),
            postgres_exporter: POSTGRES_EXPORTER.to_owned(),
            redis: REDIS.to_owned(),
        }
    }
}

/// The defaults `stack` gets: the operator's `defaults`, except, under `upgradePolicy: Manual`,
/// each component whose last applied image came from a default (`status.images`) keeps that
/// image. A component the stack names an image for in its spec is not affected either way.
pub fn for_stack(stack: &PingPongStack, defaults: &Images) -> Images {
    let mut pinned = defaults.clone();
    let recorded = stack.status.as_ref().and_then(|s| s.images.as_ref());
    let Some(recorded) = recorded.filter(|_| stack.spec.upgrade_policy == UpgradePolicy::Manual)
    else {
        return pinned;
    };
    let keep = |slot: &mut String, image: Option<&ResolvedImage>| {
        if let Some(image) = image.filter(|i| i.source == ImageSource::OperatorDefault) {
            slot.clone_from(&image.image);
        }
    };
    keep(&mut pinned.ping, Some(&recorded.ping));
    keep(&mut pinned.pong, Some(&recorded.pong));
    keep(&mut pinned.rabbitmq, Some(&recorded.rabbitmq));
    keep(&mut pinned.postgres, recorded.postgres.as_ref());
    keep(
        &mut pinned.postgres_exporter,
        recorded.postgres_exporter.as_ref(),
    );
    keep(&mut pinned.redis, recorded.redis.as_ref());
    pinned
}

/// One component's entry in `status.images`: `resolved` is the image validation chose, `spec`
/// whether the spec named it, `operator` the operator's current default for the component
/// (announced as `available` when the stack kept another one).
pub fn resolved_image(resolved: &str, spec: bool, operator: &str) -> ResolvedImage {
    if spec {
        return ResolvedImage {
            image: resolved.to_owned(),
            source: ImageSource::Spec,
            available: None,
        };
    }
    ResolvedImage {
        image: resolved.to_owned(),
        source: ImageSource::OperatorDefault,
        available: (resolved != operator).then(|| operator.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ComponentImages, PingPongStackSpec, PingPongStackStatus};

    fn recorded(image: &str, source: ImageSource) -> ResolvedImage {
        ResolvedImage {
            image: image.to_owned(),
            source,
            available: None,
        }
    }

    fn stack(policy: UpgradePolicy, images: Option<ComponentImages>) -> PingPongStack {
        let mut stack = PingPongStack::new(
            "demo",
            PingPongStackSpec {
                upgrade_policy: policy,
                ..PingPongStackSpec::default()
            },
        );
        stack.status = Some(PingPongStackStatus {
            images,
            ..PingPongStackStatus::default()
        });
        stack
    }

    fn old_images() -> ComponentImages {
        ComponentImages {
            ping: recorded("ping:old", ImageSource::OperatorDefault),
            pong: recorded("my/pong:1", ImageSource::Spec),
            rabbitmq: recorded("rabbitmq:4.1-management", ImageSource::OperatorDefault),
            postgres: Some(recorded("postgres:16", ImageSource::OperatorDefault)),
            postgres_exporter: None,
            redis: None,
        }
    }

    #[test]
    fn manual_keeps_the_recorded_defaults_only() {
        let pinned = for_stack(
            &stack(UpgradePolicy::Manual, Some(old_images())),
            &Images::default(),
        );
        assert_eq!(pinned.ping, "ping:old");
        assert_eq!(pinned.rabbitmq, "rabbitmq:4.1-management");
        assert_eq!(pinned.postgres, "postgres:16");
        // A spec image recorded before is the user's choice, not a pin: once removed from the
        // spec the component takes the operator's default.
        assert_eq!(pinned.pong, PONG);
        assert_eq!(pinned.redis, REDIS);
        assert_eq!(pinned.postgres_exporter, POSTGRES_EXPORTER);
    }

    #[test]
    fn automatic_and_unrecorded_stacks_take_the_operator_defaults() {
        let defaults = Images::default();
        let automatic = stack(UpgradePolicy::Automatic, Some(old_images()));
        assert_eq!(for_stack(&automatic, &defaults), defaults);
        assert_eq!(
            for_stack(&stack(UpgradePolicy::Manual, None), &defaults),
            defaults
        );
    }

    #[test]
    fn a_kept_default_announces_the_newer_one() {
        let kept = resolved_image("rabbitmq:4.1-management", false, RABBITMQ);
        assert_eq!(kept.source, ImageSource::OperatorDefault);
        assert_eq!(kept.available.as_deref(), Some(RABBITMQ));
        assert_eq!(resolved_image(RABBITMQ, false, RABBITMQ).available, None);
        let chosen = resolved_image("rabbitmq:3.13", true, RABBITMQ);
        assert_eq!((chosen.source, chosen.available), (ImageSource::Spec, None));
    }
}
