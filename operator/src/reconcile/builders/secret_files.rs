//! Credentials delivered as files, never as environment variables: a read-only Secret volume
//! (mode 0440, so only root and the pod's `fsGroup` can read it), mounted as a directory (not
//! `subPath`, which the kubelet never refreshes) and named to the process by a `*_FILE`
//! variable. The kubelet swaps the files atomically when the Secret changes; ping and pong read
//! them again on every (re)connect, so a rotated password needs no restart.
//!
//! Every pod mounting one sets `fsGroup` to the group its containers read with.

use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};

/// File mode of mounted credentials: owner (root) and the pod's `fsGroup` may read.
pub const CREDENTIAL_FILE_MODE: i32 = 0o440;

/// Mount directory of the broker credentials (`username`, `password`) in ping and pong.
pub const BROKER_CREDENTIALS_DIR: &str = "/etc/pingpong/rabbitmq";
/// Mount directory of the PostgreSQL password (`password`) in pong and the database pod.
pub const POSTGRES_CREDENTIALS_DIR: &str = "/etc/pingpong/postgres";
/// Mount directory of an external Redis's URL (the user's Secret key) in pong.
pub const REDIS_URL_DIR: &str = "/etc/pingpong/redis";
/// Volume name of an external Redis's URL.
pub const REDIS_URL_VOLUME: &str = "redis-url";
/// Volume name of the broker credentials.
pub const BROKER_CREDENTIALS_VOLUME: &str = "rabbitmq-credentials";
/// Volume name of the PostgreSQL password.
pub const POSTGRES_CREDENTIALS_VOLUME: &str = "postgres-credentials";

/// A Secret mounted as files: the volume, its mount and where each key lands.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretFiles {
    /// The pod volume.
    pub volume: Volume,
    /// The container's read-only mount of it.
    pub mount: VolumeMount,
}

impl SecretFiles {
    /// `keys` of Secret `secret` as files named like the keys in `dir`.
    pub fn new(volume: &str, secret: &str, keys: &[&str], dir: &str) -> Self {
        Self {
            volume: Volume {
                name: volume.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.to_owned()),
                    items: Some(
                        keys.iter()
                            .map(|key| KeyToPath {
                                key: (*key).to_owned(),
                                path: (*key).to_owned(),
                                mode: None,
                            })
                            .collect(),
                    ),
                    default_mode: Some(CREDENTIAL_FILE_MODE),
                    optional: Some(false),
                }),
                ..Volume::default()
            },
            mount: VolumeMount {
                name: volume.to_owned(),
                mount_path: dir.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        }
    }
}

/// The path of `key` under `dir`, the value of a `*_FILE` variable.
pub fn file_path(dir: &str, key: &str) -> String {
    format!("{dir}/{key}")
}
