//! The pod-template annotation [`labels::SECRET_DIGEST`]: a digest of exactly the Secret data a
//! workload consumes, so a changed or regenerated Secret rolls the workloads that read it, and
//! only those.
//!
//! What a workload consumes is read from its own pod template (Secret volumes with their
//! `items`, `secretKeyRef` variables, `envFrom` Secrets), never from a hand-written list, so a
//! new mount cannot be forgotten. [`SecretDigests`] holds a sha256 per key of every Secret the
//! plan knows (observed, or generated in this plan); the annotation is the sha256 of the
//! consumed `(Secret, key) → digest` pairs. Neither a value nor a per-key digest ever reaches
//! the pod template. A consumed key the plan does not know (a Secret that does not exist yet)
//! counts as absent, so its creation rolls the workload too.
//!
//! Pure: no client, no clock.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, Secret};
use sha2::{Digest as _, Sha256};

use super::common::config_hash;
use crate::labels;

/// sha256 (hex) of each key of each known Secret, by Secret name and key; values never kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretDigests(BTreeMap<String, BTreeMap<String, String>>);

impl SecretDigests {
    /// Records (or replaces) what `secret` holds; a Secret without a name is ignored.
    pub fn insert(&mut self, secret: &Secret) {
        let Some(name) = secret.metadata.name.as_deref() else {
            return;
        };
        let keys = secret
            .data
            .iter()
            .flatten()
            .map(|(key, value)| (key.clone(), hex::encode(Sha256::digest(&value.0))))
            .collect();
        self.0.insert(name.to_owned(), keys);
    }

    /// The digest of `key` of Secret `secret`, when known.
    fn of(&self, secret: &str, key: &str) -> Option<&str> {
        self.0.get(secret)?.get(key).map(String::as_str)
    }

    /// Every key known of Secret `secret`.
    fn keys(&self, secret: &str) -> Vec<String> {
        self.0
            .get(secret)
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl SecretDigests {
    /// The digest of `keys` of Secret `secret` alone (an unknown key counts as absent).
    pub fn keys_digest(&self, secret: &str, keys: &[&str]) -> String {
        let values: BTreeMap<&str, Option<&str>> = keys
            .iter()
            .map(|key| (*key, self.of(secret, key)))
            .collect();
        config_hash(&BTreeMap::from([(secret, values)]))
    }
}

/// The `(Secret, keys)` a pod reads: its Secret volumes (the listed `items`, or every key), its
/// containers' and init containers' `secretKeyRef` variables and `envFrom` Secrets (every key).
/// `None` as keys means "every key".
fn consumed(spec: &PodSpec) -> BTreeMap<String, Option<Vec<String>>> {
    let mut used: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    let mut add = |secret: &str, key: Option<&str>| {
        let entry = used.entry(secret.to_owned()).or_insert(Some(Vec::new()));
        match (entry.as_mut(), key) {
            (Some(keys), Some(key)) => keys.push(key.to_owned()),
            (Some(_), None) => *entry = None,
            (None, _) => {}
        }
    };
    for volume in spec.volumes.iter().flatten() {
        let Some(source) = &volume.secret else {
            continue;
        };
        let Some(secret) = source.secret_name.as_deref() else {
            continue;
        };
        match source.items.as_deref() {
            Some(items) if !items.is_empty() => {
                for item in items {
                    add(secret, Some(&item.key));
                }
            }
            _ => add(secret, None),
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for container in containers {
        for env in container.env.iter().flatten() {
            if let Some(reference) = env
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                add(&reference.name, Some(&reference.key));
            }
        }
        for source in container.env_from.iter().flatten() {
            if let Some(reference) = &source.secret_ref {
                add(&reference.name, None);
            }
        }
    }
    used
}

/// The digest of what `spec` consumes, `None` when it reads no Secret.
pub fn pod_secret_digest(spec: &PodSpec, digests: &SecretDigests) -> Option<String> {
    let used = consumed(spec);
    if used.is_empty() {
        return None;
    }
    let pairs: BTreeMap<&str, BTreeMap<String, Option<&str>>> = used
        .iter()
        .map(|(secret, keys)| {
            let keys = keys.clone().unwrap_or_else(|| digests.keys(secret));
            let values = keys
                .into_iter()
                .map(|key| {
                    let digest = digests.of(secret, &key);
                    (key, digest)
                })
                .collect();
            (secret.as_str(), values)
        })
        .collect();
    Some(config_hash(&pairs))
}

/// Sets [`labels::SECRET_DIGEST`] on `template` from what its pod consumes (removes nothing
/// else; sets nothing when it reads no Secret).
pub fn stamp(template: &mut PodTemplateSpec, digests: &SecretDigests) {
    let Some(digest) = template
        .spec
        .as_ref()
        .and_then(|spec| pod_secret_digest(spec, digests))
    else {
        return;
    };
    template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::SECRET_DIGEST.to_owned(), digest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        Container, EnvVar, EnvVarSource, KeyToPath, SecretKeySelector, SecretVolumeSource, Volume,
    };
    use kube::api::ObjectMeta;

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn pod(volume_keys: Option<&[&str]>, env_key: Option<&str>) -> PodSpec {
        let volume = Volume {
            name: "v".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("files".to_owned()),
                items: volume_keys.map(|keys| {
                    keys.iter()
                        .map(|k| KeyToPath {
                            key: (*k).to_owned(),
                            path: (*k).to_owned(),
                            mode: None,
                        })
                        .collect()
                }),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        };
        let env = env_key.map(|key| EnvVar {
            name: "X".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "vars".to_owned(),
                    key: key.to_owned(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        });
        PodSpec {
            containers: vec![Container {
                name: "c".to_owned(),
                env: env.map(|e| vec![e]),
                ..Container::default()
            }],
            volumes: Some(vec![volume]),
            ..PodSpec::default()
        }
    }

    fn digests(files: &[(&str, &str)], vars: &[(&str, &str)]) -> SecretDigests {
        let mut digests = SecretDigests::default();
        digests.insert(&secret("files", files));
        digests.insert(&secret("vars", vars));
        digests
    }

    #[test]
    fn only_the_consumed_keys_count() {
        let spec = pod(Some(&["password"]), Some("host"));
        let base = digests(
            &[("password", "a"), ("other", "1")],
            &[("host", "h"), ("x", "1")],
        );
        let digest = pod_secret_digest(&spec, &base);
        assert!(digest.is_some());
        // Keys the pod does not read change nothing.
        let unread = digests(
            &[("password", "a"), ("other", "2")],
            &[("host", "h"), ("x", "2")],
        );
        assert_eq!(pod_secret_digest(&spec, &unread), digest);
        // A read key in a volume or a variable changes it.
        let file = digests(
            &[("password", "b"), ("other", "1")],
            &[("host", "h"), ("x", "1")],
        );
        assert_ne!(pod_secret_digest(&spec, &file), digest);
        let var = digests(
            &[("password", "a"), ("other", "1")],
            &[("host", "i"), ("x", "1")],
        );
        assert_ne!(pod_secret_digest(&spec, &var), digest);
    }

    #[test]
    fn a_volume_without_items_reads_every_key_and_an_unknown_secret_is_absent() {
        let spec = pod(None, None);
        let one = digests(&[("a", "1")], &[]);
        let two = digests(&[("a", "1"), ("b", "2")], &[]);
        assert_ne!(
            pod_secret_digest(&spec, &one),
            pod_secret_digest(&spec, &two)
        );
        let unknown = pod_secret_digest(&spec, &SecretDigests::default());
        assert!(unknown.is_some());
        assert_ne!(unknown, pod_secret_digest(&spec, &one));
    }

    #[test]
    fn the_annotation_never_holds_a_value_and_is_absent_without_secrets() {
        let mut template = PodTemplateSpec {
            spec: Some(pod(Some(&["password"]), None)),
            ..PodTemplateSpec::default()
        };
        let known = digests(&[("password", "s3cret-value")], &[]);
        stamp(&mut template, &known);
        let text = serde_json::to_string(&template).unwrap();
        assert!(!text.contains("s3cret-value"));
        let per_key = hex::encode(Sha256::digest(b"s3cret-value"));
        assert!(!text.contains(&per_key), "no per-key digest either");
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[labels::SECRET_DIGEST].len(), 64);

        let mut plain = PodTemplateSpec {
            spec: Some(PodSpec::default()),
            ..PodTemplateSpec::default()
        };
        stamp(&mut plain, &known);
        assert!(plain.metadata.is_none());
    }
}
