//! The broker StatefulSet: stable node names for clustering, the restricted profile with the
//! image's numeric user 999, the broker user from the mounted definitions Secret (a file, never
//! an environment variable), probes, and a PersistentVolumeClaim
//! template (or an emptyDir when ephemeral).
//!
//! The Erlang cookie is a file, not the deprecated `RABBITMQ_ERLANG_COOKIE` variable: an init
//! container copies it from the cookie Secret to `$HOME/.erlang.cookie` (mode 0600, owned by the
//! broker user 999) on an emptyDir mounted as the broker's home, as the RabbitMQ Cluster Operator
//! does; the data volume is mounted inside that home.
//!
//! Both containers have a read-only root filesystem. What the broker writes outside its data
//! volume, read from the official image (`HOME=/var/lib/rabbitmq`, `SYS_PREFIX` empty) and the
//! server's defaults, gets an emptyDir (the home volume and [`scratch_volumes`]):
//! - `$HOME` `/var/lib/rabbitmq`: `.erlang.cookie` (written by the init container), with the data
//!   volume mounted at `mnesia/` below it (database, quorum and stream logs, the pid file, the
//!   expanded plugins, the feature-flags file);
//! - `/var/log/rabbitmq` (`RABBITMQ_LOG_BASE`): logs go to the console (`log.file = false`), but
//!   the node still opens `<node>_upgrade.log` there at boot and stops with
//!   `cannot_log_to_file … erofs` when it cannot, and the Erlang VM writes `erl_crash.dump`
//!   there when it crashes (kept across a container restart for diagnosis);
//! - `/tmp`: neither the server nor the probes write there; scratch space for tools run with
//!   `kubectl exec`.
//!
//! `/etc/rabbitmq` stays read-only: the configuration comes from the ConfigMap mounts and
//! `enabled_plugins` is read from its own read-only mount (`RABBITMQ_ENABLED_PLUGINS_FILE`), so
//! `rabbitmq-plugins enable` cannot change plugins at run time (change the spec instead).
//! tests/system/test_system_readonly_broker.py boots the real rabbitmq-server with exactly these
//! paths writable and everything else read-only.

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, ExecAction, KeyToPath,
    Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource,
    TCPSocketAction, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::config::{
    ENABLED_PLUGINS_KEY, RABBITMQ_CONF_KEY, enabled_plugins, rabbitmq_conf_without_peers,
};
use super::definitions::definitions_files;
use super::services::port_names;
use crate::labels::Component;
use crate::reconcile::builders::common::{
    AMQP_PORT, EPMD_PORT, ERLANG_COOKIE_KEY, ERLANG_DIST_PORT, RABBITMQ_MANAGEMENT_PORT,
    RABBITMQ_METRICS_PORT, RABBITMQ_UID, config_hash, data_claim_templates, env_from_field,
    env_value, object_meta, pod_meta, restricted_container_security_context,
    restricted_pod_security_context, scrape_annotations,
};
use crate::reconcile::validate::{DataStorage, ValidatedStack};

/// Name of the data volume (and of the claim template).
const DATA_VOLUME: &str = "data";
/// Where the data volume is mounted (the node's database directory).
const DATA_PATH: &str = "/var/lib/rabbitmq/mnesia";
/// Where `rabbitmq.conf` is mounted; replaces the image's `conf.d` defaults.
const CONF_DIR: &str = "/etc/rabbitmq/conf.d";
/// Directory of the mounted `enabled_plugins` file.
const PLUGINS_DIR: &str = "/etc/pingpong-rabbitmq";
/// The broker user's home (an emptyDir): holds `.erlang.cookie`; the data volume inside it.
const HOME_DIR: &str = "/var/lib/rabbitmq";
/// Volume of the broker's home.
const HOME_VOLUME: &str = "rabbitmq-home";
/// Volume of the cookie Secret, read only by the init container.
const COOKIE_VOLUME: &str = "erlang-cookie-secret";
/// Where the init container reads the cookie Secret.
const COOKIE_SECRET_DIR: &str = "/tmp/erlang-cookie-secret";
/// Writable scratch directories of the broker container besides its home and data: (volume,
/// path).
const SCRATCH_DIRS: [(&str, &str); 2] = [("tmp", "/tmp"), ("log", "/var/log/rabbitmq")];

/// What rolls the broker pods when it changes: image, configuration files (`rabbitmq.conf`
/// without the `classic_config` node list, which only a blank node reads: a scale-up must not
/// restart the running nodes) and Secret names. The content of the definitions and cookie
/// Secrets is followed by [`labels::SECRET_DIGEST`] (see
/// [`crate::reconcile::builders::secret_digest`]), so rotated credentials restart each node, which
/// imports them at boot, and a regenerated cookie reaches every node.
#[derive(Serialize)]
struct HashedConfig<'a> {
    image: &'a str,
    rabbitmq_conf: String,
    enabled_plugins: String,
    credentials_secret: &'a str,
    erlang_cookie_secret: &'a str,
}

fn container_port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn tcp_probe(period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port_names::AMQP.to_owned()),
            host: None,
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(5),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn broker_env(stack: &ValidatedStack) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let names = &stack.names;
    vec![
        env_from_field("MY_POD_NAME", "metadata.name"),
        env_from_field("MY_POD_NAMESPACE", "metadata.namespace"),
        env_value("K8S_SERVICE_NAME", names.rabbitmq_headless.clone()),
        env_value("RABBITMQ_USE_LONGNAME", "true"),
        env_value(
            "RABBITMQ_NODENAME",
            "rabbit@$(MY_POD_NAME).$(K8S_SERVICE_NAME).$(MY_POD_NAMESPACE)",
        ),
        env_value(
            "K8S_HOSTNAME_SUFFIX",
            ".$(K8S_SERVICE_NAME).$(MY_POD_NAMESPACE)",
        ),
        env_value(
            "RABBITMQ_ENABLED_PLUGINS_FILE",
            format!("{PLUGINS_DIR}/{ENABLED_PLUGINS_KEY}"),
        ),
    ]
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// Copies the cookie from its Secret into the broker's home with mode 0600.
fn cookie_init_container(stack: &ValidatedStack) -> Container {
    let script = format!(
        "cp {COOKIE_SECRET_DIR}/.erlang.cookie {HOME_DIR}/.erlang.cookie && \
         chmod 600 {HOME_DIR}/.erlang.cookie"
    );
    Container {
        name: "setup-erlang-cookie".to_owned(),
        image: Some(stack.rabbitmq.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec!["sh".to_owned(), "-c".to_owned(), script]),
        resources: Some(cookie_init_resources()),
        volume_mounts: Some(vec![
            mount(COOKIE_VOLUME, COOKIE_SECRET_DIR, true),
            mount(HOME_VOLUME, HOME_DIR, false),
        ]),
        security_context: Some(restricted_container_security_context(RABBITMQ_UID, true)),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

fn cookie_init_resources() -> k8s_openapi::api::core::v1::ResourceRequirements {
    let quantity = |q: &str| k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.to_owned());
    k8s_openapi::api::core::v1::ResourceRequirements {
        requests: Some(std::collections::BTreeMap::from([
            ("cpu".to_owned(), quantity("10m")),
            ("memory".to_owned(), quantity("16Mi")),
        ])),
        limits: Some(std::collections::BTreeMap::from([(
            "memory".to_owned(),
            quantity("64Mi"),
        )])),
        ..Default::default()
    }
}

/// The emptyDirs behind [`SCRATCH_DIRS`] (the root filesystem is read-only).
fn scratch_volumes() -> Vec<Volume> {
    SCRATCH_DIRS
        .iter()
        .map(|(name, _)| Volume {
            name: (*name).to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        })
        .collect()
}

/// The broker container's mounts of [`scratch_volumes`].
fn scratch_mounts() -> Vec<VolumeMount> {
    SCRATCH_DIRS
        .iter()
        .map(|(name, path)| mount(name, path, false))
        .collect()
}

fn volumes(stack: &ValidatedStack) -> Vec<Volume> {
    let config_volume = |name: &str, key: &str, path: &str| Volume {
        name: name.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: stack.names.rabbitmq_config.clone(),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: path.to_owned(),
                mode: None,
            }]),
            default_mode: Some(0o444),
            optional: Some(false),
        }),
        ..Volume::default()
    };
    let mut volumes = vec![
        config_volume("config", RABBITMQ_CONF_KEY, "10-pingpong.conf"),
        config_volume("plugins", ENABLED_PLUGINS_KEY, ENABLED_PLUGINS_KEY),
        Volume {
            name: HOME_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: COOKIE_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(stack.names.erlang_cookie_secret.clone()),
                items: Some(vec![KeyToPath {
                    key: ERLANG_COOKIE_KEY.to_owned(),
                    path: ".erlang.cookie".to_owned(),
                    mode: None,
                }]),
                default_mode: Some(0o400),
                optional: Some(false),
            }),
            ..Volume::default()
        },
    ];
    volumes.extend(scratch_volumes());
    volumes.push(definitions_files(stack).volume);
    if stack.rabbitmq.storage == DataStorage::Ephemeral {
        volumes.push(Volume {
            name: DATA_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    }
    volumes
}

/// Seconds a broker node may take to stop: a clustered node first waits for its quorum queues.
fn termination_grace_seconds(stack: &ValidatedStack) -> i64 {
    if stack.rabbitmq.replicas > 1 {
        QUORUM_AWAIT_SECONDS + DRAIN_SECONDS + 60
    } else {
        120
    }
}

/// How long a stopping cluster node waits for every quorum queue it hosts to have a majority
/// without it (`rabbitmq-upgrade await_online_quorum_plus_one`), and then for its drain.
const QUORUM_AWAIT_SECONDS: i64 = 480;
const DRAIN_SECONDS: i64 = 60;

/// Seconds the postStart's background job waits for its node to boot before giving up.
const GROW_AWAIT_SECONDS: i64 = 900;
/// How many times the postStart's background job runs the grow, [`GROW_INTERVAL_SECONDS`] apart.
const GROW_ROUNDS: u32 = 5;
/// Seconds between two grows of the postStart's background job.
const GROW_INTERVAL_SECONDS: u32 = 60;

/// The lifecycle of a clustered broker node (none for a single node, which has no quorum to
/// protect and stops at once):
/// - preStop, as the RabbitMQ Cluster Operator does it: wait until stopping this node cannot take
///   a quorum queue below its majority, then drain it (clients move to the other nodes). A
///   rolling restart or a node drain then never makes a queue unavailable.
/// - postStart: once the node has booted, add it to every quorum queue that lacks it
///   (`rabbitmq-queues grow <node> all`). RabbitMQ picks a quorum queue's members from the nodes
///   running when the queue is declared and (before the opt-in membership reconciliation of
///   3.13) never adds a node that joins later: ping and pong declare the queue as soon as one
///   node accepts connections, so on a new cluster the queue could get two members of three and
///   lose its majority with either. The job runs in the background (the hook returns at once, so
///   the probes start as usual) and always succeeds: a failing postStart would kill the
///   container. It grows [`GROW_ROUNDS`] times a minute apart, not once: a queue declared while
///   this node was booting can miss it even when declared just after its first grow (the
///   declaring node had not yet seen it up; seen once in `test_e2e_28`). A node that is already
///   a member makes a round a no-op; a scale-up adds the new nodes to every queue.
fn cluster_lifecycle(stack: &ValidatedStack) -> Option<Lifecycle> {
    // `1 2 3 4 5`: a word list, so the shell needs no `seq`.
    let rounds = (1..=GROW_ROUNDS)
        .map(|round| round.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    (stack.rabbitmq.replicas > 1).then(|| Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![
                    "/bin/sh".to_owned(),
                    "-c".to_owned(),
                    format!(
                        "(rabbitmqctl -q await_startup -t {GROW_AWAIT_SECONDS} && \
                         for round in {rounds}; do \
                         rabbitmq-queues -q grow \"$RABBITMQ_NODENAME\" all; \
                         sleep {GROW_INTERVAL_SECONDS}; done) \
                         </dev/null >/dev/null 2>&1 &"
                    ),
                ]),
            }),
            ..LifecycleHandler::default()
        }),
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![
                    "/bin/sh".to_owned(),
                    "-c".to_owned(),
                    format!(
                        "rabbitmq-upgrade await_online_quorum_plus_one -t {QUORUM_AWAIT_SECONDS}; \
                         rabbitmq-upgrade drain -t {DRAIN_SECONDS}"
                    ),
                ]),
            }),
            ..LifecycleHandler::default()
        }),
    })
}

/// The StatefulSet `<stack>-rabbitmq`.
pub fn build_rabbitmq_statefulset(stack: &ValidatedStack) -> StatefulSet {
    let names = &stack.names;
    let hash = config_hash(&HashedConfig {
        image: &stack.rabbitmq.image,
        rabbitmq_conf: rabbitmq_conf_without_peers(stack),
        enabled_plugins: enabled_plugins(stack),
        credentials_secret: &names.credentials_secret,
        erlang_cookie_secret: &names.erlang_cookie_secret,
    });
    let container = Container {
        name: "rabbitmq".to_owned(),
        image: Some(stack.rabbitmq.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![
            container_port(port_names::AMQP, AMQP_PORT),
            container_port(port_names::PROMETHEUS, RABBITMQ_METRICS_PORT),
            container_port(port_names::MANAGEMENT, RABBITMQ_MANAGEMENT_PORT),
            container_port(port_names::EPMD, EPMD_PORT),
            container_port(port_names::CLUSTER_RPC, ERLANG_DIST_PORT),
        ]),
        env: Some(broker_env(stack)),
        resources: Some(stack.rabbitmq.resources.clone()),
        volume_mounts: Some(
            [
                mount("config", CONF_DIR, true),
                mount("plugins", PLUGINS_DIR, true),
                mount(HOME_VOLUME, HOME_DIR, false),
                mount(DATA_VOLUME, DATA_PATH, false),
            ]
            .into_iter()
            .chain(scratch_mounts())
            .chain([definitions_files(stack).mount])
            .collect(),
        ),
        // Booting (and forming a cluster) can take minutes; then AMQP must accept connections.
        startup_probe: Some(tcp_probe(10, 30)),
        readiness_probe: Some(tcp_probe(10, 3)),
        liveness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(
                    ["rabbitmq-diagnostics", "-q", "ping"]
                        .map(str::to_owned)
                        .to_vec(),
                ),
            }),
            period_seconds: Some(60),
            timeout_seconds: Some(30),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        // Read-only root: every path the broker writes is a volume (see the module docs).
        security_context: Some(restricted_container_security_context(RABBITMQ_UID, true)),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        lifecycle: cluster_lifecycle(stack),
        ..Container::default()
    };
    StatefulSet {
        metadata: object_meta(stack, &names.rabbitmq, Component::RabbitMq),
        spec: Some(StatefulSetSpec {
            replicas: Some(stack.rabbitmq.replicas),
            service_name: Some(names.rabbitmq_headless.clone()),
            pod_management_policy: Some("Parallel".to_owned()),
            selector: LabelSelector {
                match_labels: Some(stack.workload_selector(Component::RabbitMq)),
                match_expressions: None,
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(pod_meta(
                    stack,
                    Component::RabbitMq,
                    scrape_annotations(RABBITMQ_METRICS_PORT, "/metrics", hash),
                )),
                spec: Some(PodSpec {
                    init_containers: Some(vec![cookie_init_container(stack)]),
                    containers: vec![container],
                    volumes: Some(volumes(stack)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod_security_context(
                        RABBITMQ_UID,
                        Some(RABBITMQ_UID),
                    )),
                    termination_grace_period_seconds: Some(termination_grace_seconds(stack)),
                    // One node per host where the scheduler can, without blocking scheduling on a
                    // small cluster.
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        when_unsatisfiable: "ScheduleAnyway".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(stack.workload_selector(Component::RabbitMq)),
                            match_expressions: None,
                        }),
                        ..TopologySpreadConstraint::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: data_claim_templates(
                stack,
                Component::RabbitMq,
                DATA_VOLUME,
                &stack.rabbitmq.storage,
            ),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}
