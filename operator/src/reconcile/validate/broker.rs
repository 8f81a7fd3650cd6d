//! The broker image's RabbitMQ version, as far as its tag tells it.
//!
//! A cluster of more than one node finds its peers through the Kubernetes peer-discovery plugin,
//! which needs RabbitMQ 4.1 or newer to work without RBAC on the API server (older versions list
//! Endpoints through the API). Only the tag is read: a tag that does not start with a version
//! (`latest`, `management`, a reference by digest only) cannot be judged and is accepted.

use super::ValidationError;

/// Oldest RabbitMQ `(major, minor)` that forms a cluster without RBAC.
pub const MIN_CLUSTER_VERSION: (u32, u32) = (4, 1);

/// The version a tag starts with: `4.2-management` → `(4, Some(2))`, `3.13.7` → `(3, Some(13))`,
/// `4` → `(4, None)`, `v4.1.0` → `(4, Some(1))`. `None` when the tag has no version to read, or
/// when the image has no tag at all.
pub fn tag_version(image: &str) -> Option<(u32, Option<u32>)> {
    // The digest goes first (`repo:tag@sha256:…`); a `:` before the last `/` is a registry port.
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let (_, tag) = last.split_once(':')?;
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    let mut parts = tag.splitn(2, '.');
    let major = parts.next()?;
    let (major, rest) = split_number(major)?;
    if !rest.is_empty() && !rest.starts_with(['-', '_']) {
        return None;
    }
    if !rest.is_empty() {
        return Some((major, None));
    }
    let Some(after) = parts.next() else {
        return Some((major, None));
    };
    let (minor, rest) = split_number(after)?;
    if rest.is_empty() || rest.starts_with(['.', '-', '_']) {
        Some((major, Some(minor)))
    } else {
        None
    }
}

/// The leading decimal number of `s` and what follows it.
fn split_number(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let number = s.get(..end)?.parse().ok()?;
    Some((number, s.get(end..).unwrap_or_default()))
}

/// Refuses a broker image older than [`MIN_CLUSTER_VERSION`] when the stack runs more than one
/// node. A tag with a major version only (`4`) tracks the newest release of that major and is
/// judged by the major alone.
pub fn check_cluster_image(
    image: &str,
    from_spec: bool,
    replicas: i32,
) -> Result<(), ValidationError> {
    if replicas <= 1 {
        return Ok(());
    }
    let Some((major, minor)) = tag_version(image) else {
        return Ok(());
    };
    let (min_major, min_minor) = MIN_CLUSTER_VERSION;
    let too_old = match minor {
        Some(minor) => (major, minor) < (min_major, min_minor),
        None => major < min_major,
    };
    if !too_old {
        return Ok(());
    }
    Err(ValidationError::BrokerImageTooOld {
        field: if from_spec {
            "spec.rabbitmq.image"
        } else {
            "the operator's PINGPONG_RABBITMQ_IMAGE"
        },
        image: image.to_owned(),
        version: match minor {
            Some(minor) => format!("{major}.{minor}"),
            None => major.to_string(),
        },
        replicas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_a_tag_starts_with() {
        let cases = [
            ("rabbitmq:4.2-management", Some((4, Some(2)))),
            ("rabbitmq:3.13.7-management-alpine", Some((3, Some(13)))),
            ("rabbitmq:4", Some((4, None))),
            ("rabbitmq:3-management", Some((3, None))),
            (
                "registry.local:5000/mirror/rabbitmq:4.0.5",
                Some((4, Some(0))),
            ),
            ("bitnami/rabbitmq:v4.1.0", Some((4, Some(1)))),
            ("rabbitmq:3.12@sha256:abc", Some((3, Some(12)))),
            ("rabbitmq:latest", None),
            ("rabbitmq:management", None),
            ("rabbitmq@sha256:abc", None),
            ("registry.local:5000/rabbitmq", None),
            ("rabbitmq", None),
            ("rabbitmq:4.x", None),
            ("rabbitmq:4rc1", None),
        ];
        for (image, expected) in cases {
            assert_eq!(tag_version(image), expected, "{image}");
        }
    }

    #[test]
    fn a_cluster_needs_4_1_and_a_single_node_does_not() {
        assert!(check_cluster_image("rabbitmq:4.1-management", true, 3).is_ok());
        assert!(check_cluster_image("rabbitmq:4.0.9", true, 1).is_ok());
        assert!(check_cluster_image("rabbitmq:4", true, 3).is_ok());
        assert!(check_cluster_image("rabbitmq:latest", true, 3).is_ok());
        let err = check_cluster_image("rabbitmq:4.0.9", true, 3).unwrap_err();
        assert_eq!(err.kind(), "BrokerImageTooOld");
        let err = check_cluster_image("rabbitmq:3-management", false, 5).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("PINGPONG_RABBITMQ_IMAGE"), "{message}");
        assert!(message.contains("is RabbitMQ 3,"), "{message}");
        assert!(message.contains("4.1 or newer"), "{message}");
    }
}
