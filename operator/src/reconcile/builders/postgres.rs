//! The provisioned PostgreSQL of pong's store: a one-replica StatefulSet (`<stack>-postgres`)
//! and its headless Service, which is also the address pong connects to.
//!
//! The pod passes the "restricted" profile with the Debian image's user 999 and a read-only root
//! filesystem: the data volume is mounted at `/var/lib/postgresql/data` with `PGDATA` in a
//! subdirectory (initdb wants an empty directory it owns), and emptyDirs hold the socket
//! directory and `/tmp`. The PersistentVolumeClaim is retained when the StatefulSet is deleted
//! (store switched off, stack deleted): data safety first. The optional postgres-exporter
//! sidecar serves metrics on 9187. The password reaches both containers as a file
//! (`POSTGRES_PASSWORD_FILE`, `DATA_SOURCE_PASS_FILE`; mode 0440, group `fsGroup` 999, which the
//! exporter's user also gets as a supplementary group), never as an environment variable.
//!
//! The image sets the password only when it initialises an empty data directory; a database
//! whose data outlives its Secret (the claim and the Secret are retained, the Secret can be
//! deleted and is then generated again) would keep the old one and lock pong out. So the
//! container's `postStart` hook sets the role's password from the mounted file on every start
//! ([`password_sync_script`]), and the pod template follows a digest of the password (see
//! [`super::secret_digest`]): a regenerated Secret restarts the database, which takes it on.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, Lifecycle,
    LifecycleHandler, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::common::{
    EXPORTER_UID, PASSWORD_KEY, POSTGRES_DATABASE, POSTGRES_EXPORTER_PORT, POSTGRES_PORT,
    POSTGRES_UID, POSTGRES_USER, config_hash, data_claim_templates, env_value, exec_probe,
    http_probe, object_meta, pod_meta, restricted_container_security_context,
    restricted_pod_security_context, scrape_annotations,
};
use super::secret_files::{
    POSTGRES_CREDENTIALS_DIR, POSTGRES_CREDENTIALS_VOLUME, SecretFiles, file_path,
};
use crate::labels::{self, Component};
use crate::reconcile::validate::{
    DataStorage, PostgresSettings, ValidatedStack, postgres_exporter_resources,
};

/// Name of the PostgreSQL container port (and Service port).
pub const POSTGRES_PORT_NAME: &str = "postgres";
/// Name of the exporter's container port.
pub const METRICS_PORT_NAME: &str = "metrics";
/// Name of the data volume (and of the claim template: claims are `data-<stack>-postgres-0`).
const DATA_VOLUME: &str = "data";
/// Mount point of the data volume.
const DATA_PATH: &str = "/var/lib/postgresql/data";
/// `PGDATA`: a subdirectory, so initdb finds an empty directory even on a volume with
/// `lost+found`.
const PGDATA: &str = "/var/lib/postgresql/data/pgdata";

/// Directory of the server's Unix socket (an emptyDir), where the `postStart` hook connects.
const SOCKET_DIR: &str = "/var/run/postgresql";

/// The `postStart` hook's script: once the server accepts connections on its Unix socket (local
/// connections are trusted in both the upstream image and ours), set the password of
/// `POSTGRES_USER` to the content of `POSTGRES_PASSWORD_FILE` (one trailing line break dropped,
/// as every reader of the file does). The SQL goes through standard input and the password
/// through a psql variable read from the file, so it is never a command-line argument, and
/// `ALTER ROLE` hashes it with the server's `password_encryption` (SCRAM). Retried every 2 s for
/// at most 300 s (the startup probe's budget): the first boot's initdb server may stop under it.
/// Fails when it never succeeds, which restarts the container: a database pong cannot log in to
/// must not look healthy.
pub fn password_sync_script() -> String {
    format!(
        r#"[ -s "$POSTGRES_PASSWORD_FILE" ] || exit 1
for _ in $(seq 150); do
  if pg_isready -q -h {SOCKET_DIR} -p {POSTGRES_PORT} && psql -X -q -v ON_ERROR_STOP=1 -h {SOCKET_DIR} -p {POSTGRES_PORT} -U "$POSTGRES_USER" -d postgres >/dev/null 2>&1 <<'SQL'
\set password `cat "$POSTGRES_PASSWORD_FILE"`
ALTER ROLE CURRENT_USER PASSWORD :'password';
SQL
  then exit 0; fi
  sleep 2
done
exit 1
"#
    )
}

/// What rolls the database pod when it changes: images, variables, Secret name, exporter, the
/// password hook. The password itself is followed by [`labels::SECRET_DIGEST`].
#[derive(Serialize)]
struct HashedConfig<'a> {
    image: &'a str,
    env: &'a [EnvVar],
    credentials_secret: &'a str,
    exporter_image: Option<&'a str>,
    password_sync: String,
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(false),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// The generated password Secret, mounted into both containers.
fn password_files(stack: &ValidatedStack) -> SecretFiles {
    SecretFiles::new(
        POSTGRES_CREDENTIALS_VOLUME,
        &stack.names.postgres_credentials,
        &[PASSWORD_KEY],
        POSTGRES_CREDENTIALS_DIR,
    )
}

fn password_path() -> String {
    file_path(POSTGRES_CREDENTIALS_DIR, PASSWORD_KEY)
}

fn postgres_env() -> Vec<EnvVar> {
    vec![
        env_value("POSTGRES_USER", POSTGRES_USER),
        env_value("POSTGRES_DB", POSTGRES_DATABASE),
        // The image's entrypoint reads it when it initialises an empty data directory.
        env_value("POSTGRES_PASSWORD_FILE", password_path()),
        env_value("PGDATA", PGDATA),
    ]
}

/// `pg_isready` over TCP: true only once the real server listens (not the socket-only server
/// initdb runs first).
fn pg_isready(period_seconds: i32, failure_threshold: i32) -> k8s_openapi::api::core::v1::Probe {
    let port = POSTGRES_PORT.to_string();
    exec_probe(
        &[
            "pg_isready",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            POSTGRES_USER,
            "-d",
            POSTGRES_DATABASE,
        ],
        period_seconds,
        5,
        failure_threshold,
    )
}

fn postgres_container(stack: &ValidatedStack, settings: &PostgresSettings) -> Container {
    Container {
        name: "postgres".to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![port(POSTGRES_PORT_NAME, POSTGRES_PORT)]),
        env: Some(postgres_env()),
        resources: Some(settings.resources.clone()),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, DATA_PATH),
            mount("run", SOCKET_DIR),
            mount("tmp", "/tmp"),
            password_files(stack).mount,
        ]),
        // initdb on a fresh volume takes a while; then the server must accept connections.
        startup_probe: Some(pg_isready(5, 60)),
        readiness_probe: Some(pg_isready(10, 3)),
        liveness_probe: Some(pg_isready(30, 3)),
        security_context: Some(restricted_container_security_context(POSTGRES_UID, true)),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        lifecycle: Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "/bin/sh".to_owned(),
                        "-c".to_owned(),
                        password_sync_script(),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            pre_stop: None,
        }),
        ..Container::default()
    }
}

fn exporter_container(stack: &ValidatedStack, settings: &PostgresSettings) -> Container {
    let uri = format!("127.0.0.1:{POSTGRES_PORT}/{POSTGRES_DATABASE}?sslmode=disable");
    Container {
        name: "postgres-exporter".to_owned(),
        image: Some(settings.exporter_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![port(METRICS_PORT_NAME, POSTGRES_EXPORTER_PORT)]),
        env: Some(vec![
            env_value("DATA_SOURCE_URI", uri),
            env_value("DATA_SOURCE_USER", POSTGRES_USER),
            env_value("DATA_SOURCE_PASS_FILE", password_path()),
        ]),
        volume_mounts: Some(vec![password_files(stack).mount]),
        resources: Some(postgres_exporter_resources()),
        liveness_probe: Some(http_probe("/", METRICS_PORT_NAME, 30, 3)),
        // A pod is ready only when every container is: the same lenient check as liveness, so
        // the exporter marks the database unready only while it would be restarted anyway.
        readiness_probe: Some(http_probe("/", METRICS_PORT_NAME, 30, 3)),
        security_context: Some(restricted_container_security_context(EXPORTER_UID, true)),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// The StatefulSet `<stack>-postgres`, when the store is a provisioned PostgreSQL.
pub fn build_postgres_statefulset(stack: &ValidatedStack) -> Option<StatefulSet> {
    let settings = stack.store.provisioned()?;
    let names = &stack.names;
    let postgres = postgres_container(stack, settings);
    let hash = config_hash(&HashedConfig {
        image: &settings.image,
        env: postgres.env.as_deref().unwrap_or_default(),
        credentials_secret: &names.postgres_credentials,
        exporter_image: settings.metrics.then_some(settings.exporter_image.as_str()),
        password_sync: password_sync_script(),
    });
    let annotations = if settings.metrics {
        scrape_annotations(POSTGRES_EXPORTER_PORT, "/metrics", hash)
    } else {
        BTreeMap::from([(labels::CONFIG_HASH.to_owned(), hash)])
    };
    let mut containers = vec![postgres];
    if settings.metrics {
        containers.push(exporter_container(stack, settings));
    }
    let mut volumes = vec![
        empty_dir("run"),
        empty_dir("tmp"),
        password_files(stack).volume,
    ];
    if settings.storage == DataStorage::Ephemeral {
        volumes.push(empty_dir(DATA_VOLUME));
    }
    Some(StatefulSet {
        metadata: object_meta(stack, &names.postgres, Component::Postgres),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names.postgres.clone()),
            selector: LabelSelector {
                match_labels: Some(stack.workload_selector(Component::Postgres)),
                match_expressions: None,
            },
            // Data safety first: the claim outlives the StatefulSet and the stack.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(pod_meta(stack, Component::Postgres, annotations)),
                spec: Some(PodSpec {
                    containers,
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod_security_context(
                        POSTGRES_UID,
                        Some(POSTGRES_UID),
                    )),
                    termination_grace_period_seconds: Some(60),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: data_claim_templates(
                stack,
                Component::Postgres,
                DATA_VOLUME,
                &settings.storage,
            ),
            ..StatefulSetSpec::default()
        }),
        status: None,
    })
}

/// The headless Service `<stack>-postgres` (5432): the StatefulSet's governing Service and the
/// host pong connects to (`<stack>-postgres.<namespace>.svc`).
pub fn build_postgres_service(stack: &ValidatedStack) -> Option<Service> {
    stack.store.provisioned()?;
    Some(Service {
        metadata: object_meta(stack, &stack.names.postgres, Component::Postgres),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            type_: Some("ClusterIP".to_owned()),
            selector: Some(stack.service_selector(Component::Postgres)),
            ports: Some(vec![ServicePort {
                name: Some(POSTGRES_PORT_NAME.to_owned()),
                port: POSTGRES_PORT,
                target_port: Some(IntOrString::String(POSTGRES_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}
