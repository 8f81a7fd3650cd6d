//! The broker image's RabbitMQ version, as far as its tag tells it, and what follows from it for
//! a cluster of more than one node: how the nodes find each other, and whether the version can
//! run the cluster at all.
//!
//! - RabbitMQ 4.1 and newer use the Kubernetes peer-discovery plugin, which from 4.1 needs no API
//!   access: every node joins the pod with ordinal 0 (the seed), named from its own host name.
//! - Older releases would list Endpoints through the API server with that plugin (RBAC for the
//!   broker's ServiceAccount, a token in every broker pod). They get the built-in
//!   `classic_config` backend instead, with the StatefulSet's stable node names
//!   ([`PeerDiscovery::ClassicConfig`]), which needs neither.
//! - Below [`MIN_CLUSTER_VERSION`] (3.10) a cluster is refused: the quorum queues of a cluster
//!   dead-letter at least once only from 3.10; older brokers ignore the argument and dead-letter
//!   at most once, silently.
//!
//! Only the tag is read: a tag that does not start with a version (`latest`, `management`, a
//! reference by digest only) cannot be judged, is accepted, and is taken to be recent (the
//! Kubernetes plugin).

use super::ValidationError;

/// Oldest RabbitMQ `(major, minor)` the operator runs as a cluster of more than one node.
pub const MIN_CLUSTER_VERSION: (u32, u32) = (3, 10);

/// Oldest RabbitMQ `(major, minor)` whose Kubernetes peer discovery needs no API access.
pub const MIN_K8S_DISCOVERY_VERSION: (u32, u32) = (4, 1);

/// How the nodes of a broker cluster find each other when they first boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerDiscovery {
    /// A single node: no peer discovery.
    None,
    /// `rabbitmq_peer_discovery_k8s` of RabbitMQ 4.1 and newer (the seed is ordinal 0; no API
    /// access).
    Kubernetes,
    /// The built-in `classic_config` backend with the StatefulSet's stable node names (RabbitMQ
    /// 3.10 to 4.0).
    ClassicConfig,
}

/// How a broker of `replicas` nodes running `image` finds its peers (see the module docs).
pub fn peer_discovery(image: &str, replicas: i32) -> PeerDiscovery {
    if replicas <= 1 {
        return PeerDiscovery::None;
    }
    match tag_version(image) {
        Some(version) if older_than(version, MIN_K8S_DISCOVERY_VERSION) => {
            PeerDiscovery::ClassicConfig
        }
        _ => PeerDiscovery::Kubernetes,
    }
}

/// Whether a tag's version is older than `(major, minor)`. A tag with a major version only
/// (`4`) tracks the newest release of that major and is judged by the major alone.
fn older_than((major, minor): (u32, Option<u32>), (min_major, min_minor): (u32, u32)) -> bool {
    match minor {
        Some(minor) => (major, minor) < (min_major, min_minor),
        None => major < min_major,
    }
}

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
/// node.
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
    if !older_than((major, minor), MIN_CLUSTER_VERSION) {
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
    fn a_cluster_needs_3_10_and_a_single_node_does_not() {
        assert!(check_cluster_image("rabbitmq:4.1-management", true, 3).is_ok());
        assert!(check_cluster_image("rabbitmq:4.0.9", true, 3).is_ok());
        assert!(check_cluster_image("localhost/rabbitmq:3.10.8", true, 3).is_ok());
        assert!(check_cluster_image("rabbitmq:3.9.29", true, 1).is_ok());
        assert!(check_cluster_image("rabbitmq:4", true, 3).is_ok());
        assert!(check_cluster_image("rabbitmq:latest", true, 3).is_ok());
        let err = check_cluster_image("rabbitmq:3.9.29", true, 3).unwrap_err();
        assert_eq!(err.kind(), "BrokerImageTooOld");
        let err = check_cluster_image("rabbitmq:2-management", false, 5).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("PINGPONG_RABBITMQ_IMAGE"), "{message}");
        assert!(message.contains("is RabbitMQ 2,"), "{message}");
        assert!(message.contains("3.10 or newer"), "{message}");
    }

    #[test]
    fn clusters_below_4_1_find_their_peers_by_classic_config() {
        let cases = [
            ("rabbitmq:4.2-management", 1, PeerDiscovery::None),
            ("localhost/rabbitmq:3.10.8", 1, PeerDiscovery::None),
            ("rabbitmq:4.2-management", 3, PeerDiscovery::Kubernetes),
            ("rabbitmq:4.1.0", 3, PeerDiscovery::Kubernetes),
            ("rabbitmq:4", 3, PeerDiscovery::Kubernetes),
            ("rabbitmq:latest", 3, PeerDiscovery::Kubernetes),
            ("rabbitmq:4.0.9-management", 3, PeerDiscovery::ClassicConfig),
            ("localhost/rabbitmq:3.10.8", 3, PeerDiscovery::ClassicConfig),
            ("rabbitmq:3", 5, PeerDiscovery::ClassicConfig),
        ];
        for (image, replicas, expected) in cases {
            assert_eq!(
                peer_discovery(image, replicas),
                expected,
                "{image} x{replicas}"
            );
        }
    }
}
