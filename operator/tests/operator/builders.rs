//! Builder tests: goldens for the fixtures, the configuration hash, credentials handling,
//! validation errors and `render`.
//!
//! Goldens are regenerated only with `UPDATE_GOLDEN=1 cargo test -p pingpong-operator --test
//! operator goldens`; otherwise a mismatch fails with a line diff.

use crate::support::fixtures::*;
use pingpong_operator::apis::ServedApis;
use pingpong_operator::credentials;
use pingpong_operator::images::Images;
use pingpong_operator::reconcile::builders::{
    CookieSource, CredentialsSource, PlanInputs, build_desired,
};
use pingpong_operator::reconcile::observe::ExistingSecrets;
use pingpong_operator::reconcile::validate::validate;
use pingpong_operator::render::{join_documents, render};
use pretty_assertions::assert_eq;
use serde_json::Value;

#[test]
fn goldens_match() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    for name in FIXTURES {
        let (_, desired) = desired_for(&load_fixture(name));
        let rendered = join_documents(&desired.to_yaml_documents().unwrap());
        let path = tests_dir().join("golden").join(format!("{name}.yaml"));
        if update {
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "{} missing: run UPDATE_GOLDEN=1 cargo test -p pingpong-operator --test operator goldens",
                path.display()
            )
        });
        assert_eq!(
            golden, rendered,
            "golden {name} differs (UPDATE_GOLDEN=1 to accept)"
        );
    }
}

#[test]
fn minimal_stack_has_the_documented_object_set() {
    let (_, desired) = desired_for(&load_fixture("minimal"));
    let names: Vec<String> = objects(&desired).iter().map(kind_name).collect();
    assert_eq!(
        names,
        [
            "Secret/demo-rabbitmq-credentials",
            "Secret/demo-rabbitmq-erlang-cookie",
            "Secret/demo-rabbitmq-definitions",
            "ConfigMap/demo-rabbitmq-config",
            "Service/demo-rabbitmq-nodes",
            "Service/demo-rabbitmq",
            "StatefulSet/demo-rabbitmq",
            "Service/demo-ping",
            "Deployment/demo-ping",
            "Service/demo-pong",
            "Deployment/demo-pong",
            "NetworkPolicy/demo-rabbitmq",
            "NetworkPolicy/demo-ping",
            "NetworkPolicy/demo-pong",
            "Ingress/demo",
        ]
    );
}

#[test]
fn full_stack_adds_pdbs_route_and_monitors_and_no_credentials_secret() {
    let (v, desired) = desired_for(&load_fixture("full"));
    assert!(
        desired.rabbitmq.credentials_secret.is_none(),
        "user credentialsSecret must not be written"
    );
    assert!(desired.rabbitmq.erlang_cookie_secret.is_some());
    assert!(desired.rabbitmq.pdb.is_some() && desired.ping.pdb.is_some());
    assert!(
        desired.pong.pdb.is_some(),
        "two pong replicas on PostgreSQL get a budget"
    );
    assert!(desired.postgres.is_none());
    assert!(desired.redis.is_none());
    assert!(desired.routes.ingress.is_some() && desired.routes.http_route.is_some());
    let monitors = [
        &desired.ping.service_monitor,
        &desired.pong.service_monitor,
        &desired.rabbitmq.service_monitor,
    ];
    assert_eq!(monitors.iter().filter(|m| m.is_some()).count(), 3);
    let monitor = serde_json::to_value(&desired.ping.service_monitor).unwrap();
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(
        v.endpoint().as_deref(),
        Some("https://pingpong.example.com")
    );
    let ping = serde_json::to_value(&desired.ping.deployment).unwrap();
    let pod = &ping["spec"]["template"]["spec"];
    let env = container_env(pod, &pod["containers"][0]);
    assert_eq!(
        env["RABBITMQ_DEFAULT_USER_FILE"],
        "secret:demo-full-broker/username"
    );
    assert_eq!(
        env["RABBITMQ_DEFAULT_PASS_FILE"],
        "secret:demo-full-broker/password"
    );
}

#[test]
fn broker_memory_alarm_follows_the_limit_and_pods_spread_and_drain() {
    let (_, single) = desired_for(&load_fixture("minimal"));
    let conf = &single.rabbitmq.config.data.as_ref().unwrap()["rabbitmq.conf"];
    // The default limit, 1Gi.
    assert!(
        conf.contains("total_memory_available_override_value = 1073741824\n"),
        "{conf}"
    );
    let (_, custom) = desired_for(&stack_from_spec(
        "mem",
        "  rabbitmq:\n    resources:\n      limits:\n        memory: 1536Mi",
    ));
    let conf = &custom.rabbitmq.config.data.as_ref().unwrap()["rabbitmq.conf"];
    assert!(
        conf.contains("total_memory_available_override_value = 1610612736\n"),
        "{conf}"
    );
    let (_, unlimited) = desired_for(&stack_from_spec(
        "nolimit",
        "  rabbitmq:\n    resources:\n      requests:\n        memory: 1Gi",
    ));
    let conf = &unlimited.rabbitmq.config.data.as_ref().unwrap()["rabbitmq.conf"];
    assert!(!conf.contains("total_memory_available_override_value"));

    let broker = serde_json::to_value(&single.rabbitmq.statefulset).unwrap();
    let spread = &broker["spec"]["template"]["spec"]["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread["whenUnsatisfiable"], "ScheduleAnyway");
    assert_eq!(
        spread["labelSelector"]["matchLabels"],
        broker["spec"]["selector"]["matchLabels"]
    );
    for app in [&single.ping.deployment, &single.pong.deployment] {
        let app = serde_json::to_value(app).unwrap();
        let container = &app["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
        assert!(
            app["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap()
                > 5
        );
    }
}

#[test]
fn clustered_brokers_wait_for_quorum_before_stopping() {
    let (_, cluster) = desired_for(&load_fixture("full"));
    let sts = serde_json::to_value(&cluster.rabbitmq.statefulset).unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    let command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .unwrap();
    let script = command[2].as_str().unwrap();
    let await_at = script
        .find("rabbitmq-upgrade await_online_quorum_plus_one -t 480")
        .unwrap();
    assert!(
        script.find("rabbitmq-upgrade drain -t 60").unwrap() > await_at,
        "{script}"
    );
    // The grace period covers both waits, or the kubelet kills the node mid-wait.
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() > 480 + 60);
    // Once booted, a node joins every quorum queue declared without it, in the background.
    let grow = pod["containers"][0]["lifecycle"]["postStart"]["exec"]["command"][2]
        .as_str()
        .unwrap();
    assert!(
        grow.starts_with("(rabbitmqctl -q await_startup -t 900 && "),
        "{grow}"
    );
    // Five rounds a minute apart: a queue declared while the node booted can miss the first.
    assert!(
        grow.contains(
            "for round in 1 2 3 4 5; do rabbitmq-queues -q grow \"$RABBITMQ_NODENAME\" all; \
             sleep 60; done)"
        ),
        "{grow}"
    );
    assert!(grow.ends_with("</dev/null >/dev/null 2>&1 &"), "{grow}");

    let (_, single) = desired_for(&load_fixture("minimal"));
    let sts = serde_json::to_value(&single.rabbitmq.statefulset).unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    assert!(pod["containers"][0].get("lifecycle").is_none());
    assert_eq!(pod["terminationGracePeriodSeconds"], 120);
}

#[test]
fn the_erlang_cookie_is_a_0600_file_not_an_environment_variable() {
    let (_, desired) = desired_for(&load_fixture("full"));
    let sts = serde_json::to_value(&desired.rabbitmq.statefulset).unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    let broker = &pod["containers"][0];
    let env = broker["env"].as_array().unwrap();
    assert!(env.iter().all(|e| e["name"] != "RABBITMQ_ERLANG_COOKIE"));
    let init = &pod["initContainers"][0];
    assert_eq!(init["image"], broker["image"]);
    assert_eq!(init["securityContext"]["runAsUser"], 999);
    let script = init["command"][2].as_str().unwrap();
    assert!(
        script.contains("/var/lib/rabbitmq/.erlang.cookie"),
        "{script}"
    );
    assert!(
        script.contains("chmod 600 /var/lib/rabbitmq/.erlang.cookie"),
        "{script}"
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"].is_object())
        .unwrap();
    assert_eq!(
        volume["secret"]["secretName"],
        "demo-full-rabbitmq-erlang-cookie"
    );
    assert_eq!(volume["secret"]["items"][0]["key"], "cookie");
    assert_eq!(volume["secret"]["items"][0]["path"], ".erlang.cookie");
    // The broker's home (where the cookie lands) is shared; the data volume sits inside it.
    let mounts: Vec<&str> = broker["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(&"/var/lib/rabbitmq"));
    assert!(mounts.contains(&"/var/lib/rabbitmq/mnesia"));
}

#[test]
fn rabbitmq_config_follows_replicas() {
    let (_, single) = desired_for(&load_fixture("minimal"));
    let conf = &single.rabbitmq.config.data.as_ref().unwrap()["rabbitmq.conf"];
    assert!(conf.contains("loopback_users.guest = true"));
    assert!(!conf.contains("peer_discovery"));
    let (_, cluster) = desired_for(&load_fixture("full"));
    let data = cluster.rabbitmq.config.data.as_ref().unwrap();
    assert!(data["rabbitmq.conf"].contains("cluster_formation.peer_discovery_backend = k8s"));
    assert!(!data["rabbitmq.conf"].contains("classic_config"));
    assert!(data["enabled_plugins"].contains("rabbitmq_peer_discovery_k8s"));
    assert!(data["enabled_plugins"].contains("rabbitmq_prometheus"));
}

/// The value of `name` in the first container of `deployment`, if set.
fn env_var(deployment: &k8s_openapi::api::apps::v1::Deployment, name: &str) -> Option<String> {
    let pod = deployment.spec.as_ref()?.template.spec.as_ref()?;
    pod.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn partitions_reach_ping_and_pong_and_spread_a_cluster_s_leaders() {
    let spec = |replicas: i32, partitions: Option<i32>| {
        let mut stack = load_fixture("full");
        stack.spec.rabbitmq.replicas = replicas;
        stack.spec.rabbitmq.partitions = partitions;
        desired_for(&stack).1
    };
    let locator = "queue_leader_locator = least-leaders";
    let conf = |d: &pingpong_operator::reconcile::desired::DesiredState| {
        d.rabbitmq.config.data.as_ref().unwrap()["rabbitmq.conf"].clone()
    };

    // One partition (unset or 1): what a stack rendered before partitions existed.
    for unset in [None, Some(1)] {
        let d = spec(3, unset);
        assert_eq!(env_var(&d.ping.deployment, "RABBITMQ_PARTITIONS"), None);
        assert_eq!(env_var(&d.pong.deployment, "RABBITMQ_PARTITIONS"), None);
        assert!(!conf(&d).contains(locator));
    }
    let d = spec(3, Some(4));
    assert_eq!(
        env_var(&d.ping.deployment, "RABBITMQ_PARTITIONS").as_deref(),
        Some("4")
    );
    assert_eq!(
        env_var(&d.pong.deployment, "RABBITMQ_PARTITIONS").as_deref(),
        Some("4")
    );
    assert!(conf(&d).contains(locator), "{}", conf(&d));
    // One node has nowhere to spread the leaders to.
    assert!(!conf(&spec(1, Some(4))).contains(locator));
}

#[test]
fn ephemeral_storage_uses_an_empty_dir_and_no_claim_template() {
    let (_, desired) = desired_for(&load_fixture("gateway"));
    let spec = desired.rabbitmq.statefulset.spec.as_ref().unwrap();
    assert!(spec.volume_claim_templates.is_none());
    let volumes = spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v.name == "data" && v.empty_dir.is_some())
    );
    assert!(desired.routes.ingress.is_none());
    assert!(desired.ping.service_monitor.is_none());
    assert!(desired.pong.service_monitor.is_none());
    assert!(desired.rabbitmq.service_monitor.is_none());
}

fn pod_hash(desired: &Value) -> String {
    desired["spec"]["template"]["metadata"]["annotations"]["pingpong.dev/config-hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn hashes(spec: &str) -> (String, String, String) {
    let (_, desired) = desired_for(&stack_from_spec("hash", spec));
    (
        pod_hash(&serde_json::to_value(&desired.ping.deployment).unwrap()),
        pod_hash(&serde_json::to_value(&desired.pong.deployment).unwrap()),
        pod_hash(&serde_json::to_value(&desired.rabbitmq.statefulset).unwrap()),
    )
}

#[test]
fn config_hash_changes_with_configuration_only() {
    let base = hashes("  {}");
    assert_eq!(
        base,
        hashes("  ping:\n    replicas: 3"),
        "replicas are not configuration"
    );
    assert_eq!(base, hashes("  ingress:\n    host: a.example.com"));

    let image = hashes("  ping:\n    image: example.com/ping:2");
    assert_ne!(base.0, image.0, "ping image must roll ping");
    assert_eq!(base.1, image.1, "ping image must not roll pong");

    let retention = hashes("  pong:\n    maxMessages: 10");
    assert_eq!(base.0, retention.0);
    assert_ne!(base.1, retention.1, "maxMessages must roll pong");

    let queue = hashes("  rabbitmq:\n    queue: other");
    assert_ne!(base.0, queue.0);
    assert_ne!(base.1, queue.1);

    let env = hashes("  ping:\n    env:\n      - name: RUST_LOG\n        value: debug");
    assert_ne!(base.0, env.0);

    // queueType pinned to the single node's default, so only the broker changes.
    let cluster = hashes("  rabbitmq:\n    replicas: 3\n    queueType: classic");
    assert_ne!(
        base.2, cluster.2,
        "broker config change must roll the broker"
    );
    assert_eq!(base.0, cluster.0);

    let quorum = hashes("  rabbitmq:\n    replicas: 3");
    assert_ne!(cluster.0, quorum.0, "the queue type must roll ping");
    assert_ne!(cluster.1, quorum.1, "the queue type must roll pong");
}

#[test]
fn secret_digest_follows_the_credentials_content_by_digest_only() {
    let stack = stack_from_spec("hash", "  {}");
    let v = validate(&stack, &Images::default()).unwrap();
    let fresh = || {
        PlanInputs::fresh(
            &v,
            credentials::generate(),
            credentials::generate_password(),
            ServedApis::default(),
        )
    };
    let (a, b) = (build_desired(&v, &fresh()), build_desired(&v, &fresh()));
    assert_ne!(a.rabbitmq.credentials_secret, b.rabbitmq.credentials_secret);
    // Other credentials roll ping and pong (they read them) and the broker, whose nodes
    // import the user from the definitions Secret at boot.
    assert_ne!(a.ping.deployment, b.ping.deployment);
    assert_ne!(a.pong.deployment, b.pong.deployment);
    assert_ne!(a.rabbitmq.statefulset, b.rabbitmq.statefulset);
    assert_ne!(a.rabbitmq.definitions_secret, b.rabbitmq.definitions_secret);
    // Only a digest reaches the pod template, never a value.
    let secret = a.rabbitmq.credentials_secret.as_ref().unwrap();
    let password = String::from_utf8(secret.data.as_ref().unwrap()["password"].0.clone()).unwrap();
    for workload in [
        serde_json::to_string(&a.ping.deployment).unwrap(),
        serde_json::to_string(&a.pong.deployment).unwrap(),
        serde_json::to_string(&a.rabbitmq.statefulset).unwrap(),
        serde_json::to_string(&a.rabbitmq.config).unwrap(),
    ] {
        assert!(!workload.contains(&password));
    }
    let definitions = a.rabbitmq.definitions_secret.as_ref().unwrap();
    let json = String::from_utf8(
        definitions.data.as_ref().unwrap()["definitions.json"]
            .0
            .clone(),
    )
    .unwrap();
    assert!(
        json.contains(&password),
        "the definitions file carries the password"
    );
    // The next reconcile reads the Secrets it created: same content, same digest, no roll.
    let next = PlanInputs::from_observed(
        &v,
        ExistingSecrets {
            credentials: true,
            erlang_cookie: true,
            postgres: false,
        },
        ServedApis::default(),
        || panic!("credentials generated again"),
        || panic!("password generated again"),
    )
    .with_existing(
        &v,
        &[
            secret.clone(),
            a.rabbitmq.erlang_cookie_secret.clone().unwrap(),
        ],
    );
    let again = build_desired(&v, &next);
    assert_eq!(again.ping.deployment, a.ping.deployment);
    assert_eq!(again.pong.deployment, a.pong.deployment);
    assert_eq!(again.rabbitmq.statefulset, a.rabbitmq.statefulset);
    assert_eq!(
        again.rabbitmq.definitions_secret,
        a.rabbitmq.definitions_secret
    );
}

#[test]
fn existing_secrets_are_never_planned_and_never_regenerated() {
    let v = validated(&load_fixture("minimal"));
    let existing = ExistingSecrets {
        credentials: true,
        erlang_cookie: true,
        postgres: false,
    };
    let inputs = PlanInputs::from_observed(
        &v,
        existing,
        ServedApis::default(),
        || panic!("credentials generated although both Secrets exist"),
        || panic!("no PostgreSQL password for a memory store"),
    );
    assert_eq!(
        inputs.credentials,
        CredentialsSource::Existing {
            secret_name: "demo-rabbitmq-credentials".to_owned()
        }
    );
    assert_eq!(inputs.erlang_cookie, CookieSource::Existing);
    let desired = build_desired(&v, &inputs);
    assert!(desired.rabbitmq.credentials_secret.is_none());
    assert!(desired.rabbitmq.erlang_cookie_secret.is_none());
    assert!(objects(&desired).iter().all(|o| o["kind"] != "Secret"));
}

#[test]
fn missing_cookie_alone_creates_only_the_cookie_secret() {
    let v = validated(&load_fixture("minimal"));
    let existing = ExistingSecrets {
        credentials: true,
        ..ExistingSecrets::default()
    };
    let inputs = PlanInputs::from_observed(
        &v,
        existing,
        ServedApis::default(),
        fixed_credentials,
        fixed_postgres_password,
    );
    let desired = build_desired(&v, &inputs);
    assert!(desired.rabbitmq.credentials_secret.is_none());
    assert!(desired.rabbitmq.erlang_cookie_secret.is_some());
}

#[test]
fn user_credentials_secret_is_never_generated() {
    let v = validated(&load_fixture("full"));
    let existing = ExistingSecrets {
        erlang_cookie: true,
        ..ExistingSecrets::default()
    };
    let inputs = PlanInputs::from_observed(
        &v,
        existing,
        ServedApis::default(),
        || panic!("credentials generated for a user-supplied Secret"),
        fixed_postgres_password,
    );
    assert!(matches!(
        inputs.credentials,
        CredentialsSource::Existing { .. }
    ));
}

fn validation_kind(spec: &str) -> String {
    validation_error("stack", spec).0
}

fn validation_error(name: &str, spec: &str) -> (String, String) {
    let err = validate(&stack_from_spec(name, spec), &Images::default()).unwrap_err();
    (err.kind().to_owned(), err.to_string())
}

#[test]
fn validation_rejects_what_the_schema_cannot() {
    let long = "a".repeat(45);
    let (kind, message) = validation_error(&long, "  {}");
    assert_eq!(kind, "NameTooLong");
    assert!(message.contains("at most 40 characters"), "{message}");
    assert_eq!(validation_error("9lives", "  {}").0, "InvalidName");
    assert_eq!(
        validation_kind("  ingress:\n    tlsSecret: tls"),
        "TlsWithoutHost"
    );
    assert_eq!(
        validation_kind("  ping:\n    env:\n      - name: RABBITMQ_DEFAULT_PASS\n        value: x"),
        "ReservedEnv"
    );
    assert_eq!(
        validation_kind(
            "  pong:\n    env:\n      - name: A\n        value: x\n      - name: A\n        value: y"
        ),
        "DuplicateEnv"
    );
    assert_eq!(
        validation_kind("  rabbitmq:\n    storage:\n      size: lots"),
        "InvalidQuantity"
    );
    assert_eq!(
        validation_kind(
            "  ping:\n    resources:\n      requests:\n        memory: 1Gi\n      limits:\n        memory: 128Mi"
        ),
        "RequestExceedsLimit"
    );
    assert_eq!(
        validation_kind("  rabbitmq:\n    queue: amq.direct"),
        "InvalidQueue"
    );
    assert_eq!(
        validation_kind("  pong:\n    replicas: 2"),
        "InvalidReplicas"
    );
    assert_eq!(
        validation_kind("  rabbitmq:\n    credentialsSecret: stack-rabbitmq-erlang-cookie"),
        "CredentialsSecretConflict"
    );
    assert_eq!(validation_kind("  ping:\n    image: \"\""), "InvalidImage");
    assert_eq!(
        validation_kind("  ingress:\n    host: Bad_Host"),
        "InvalidHost"
    );
    assert_eq!(
        validation_kind("  gateway:\n    parentRef:\n      name: g\n    hostname: a..b"),
        "InvalidHost"
    );
    let ok = stack_from_spec("s", "  ingress:\n    host: \"*.example.com\"");
    validate(&ok, &Images::default()).unwrap();
}

#[test]
fn a_broker_cluster_needs_rabbitmq_3_10() {
    let cluster = |image: &str| format!("  rabbitmq:\n    replicas: 3\n    image: \"{image}\"");
    for old in [
        "rabbitmq:3.9-management",
        "rabbitmq:3.8.34-management-alpine",
        "registry.local:5000/rabbitmq:2",
        "rabbitmq:3.9@sha256:0000",
    ] {
        let (kind, message) = validation_error("stack", &cluster(old));
        assert_eq!(kind, "BrokerImageTooOld", "{old}");
        assert!(message.contains(old), "names the image: {message}");
        assert!(
            message.contains("3.10 or newer"),
            "names the minimum: {message}"
        );
    }
    // Versions from 3.10, tags that are no version and digests alone cannot be judged: accepted.
    for ok in [
        "localhost/rabbitmq:3.10.8",
        "rabbitmq:3.13-management",
        "rabbitmq:4.0.9-management-alpine",
        "rabbitmq:4.1-management",
        "rabbitmq:4.2.1",
        "rabbitmq:4",
        "rabbitmq:latest",
        "rabbitmq@sha256:0000",
    ] {
        validate(&stack_from_spec("s", &cluster(ok)), &Images::default())
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    // An old image on one node is fine.
    let single = "  rabbitmq:\n    image: rabbitmq:3.9-management";
    validate(&stack_from_spec("s", single), &Images::default()).unwrap();
    // The default image forms a cluster; an old operator default is named as such.
    let three = "  rabbitmq:\n    replicas: 3";
    validate(&stack_from_spec("s", three), &Images::default()).unwrap();
    let old_default = Images {
        rabbitmq: "rabbitmq:3.9-management".into(),
        ..Images::default()
    };
    let err = validate(&stack_from_spec("s", three), &old_default).unwrap_err();
    assert_eq!(err.kind(), "BrokerImageTooOld");
    assert!(err.to_string().contains("PINGPONG_RABBITMQ_IMAGE"), "{err}");
}

/// RabbitMQ 3.10 to 4.0 cluster by `classic_config` with the names the pods give themselves;
/// the node list does not roll the pods, so a scale-up restarts no running node.
#[test]
fn a_cluster_below_4_1_lists_its_nodes_and_scales_up_without_a_restart() {
    let spec = |replicas: i32| {
        format!("  rabbitmq:\n    replicas: {replicas}\n    image: localhost/rabbitmq:3.10.8")
    };
    let (_, three) = desired_for(&stack_from_spec("demo", &spec(3)));
    let data = three.rabbitmq.config.data.as_ref().unwrap();
    let conf = &data["rabbitmq.conf"];
    for line in [
        "cluster_formation.peer_discovery_backend = classic_config\n",
        "cluster_formation.discovery_retry_limit = 10\n",
        "cluster_formation.discovery_retry_interval = 3000\n",
        "cluster_partition_handling = pause_minority\n",
        "cluster_formation.classic_config.nodes.1 = rabbit@demo-rabbitmq-0.demo-rabbitmq-nodes.ns\n",
        "cluster_formation.classic_config.nodes.3 = rabbit@demo-rabbitmq-2.demo-rabbitmq-nodes.ns\n",
    ] {
        assert!(conf.contains(line), "{line:?} not in\n{conf}");
    }
    assert!(!conf.contains("nodes.4 ="), "{conf}");
    assert!(!conf.contains("k8s"), "{conf}");
    assert!(!data["enabled_plugins"].contains("peer_discovery"));

    // The names are the ones RABBITMQ_NODENAME gives the pods (long names).
    let sts = &three.rabbitmq.statefulset;
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let env: std::collections::BTreeMap<_, _> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(env["RABBITMQ_USE_LONGNAME"], "true");
    let expanded = env["RABBITMQ_NODENAME"]
        .replace("$(MY_POD_NAME)", "demo-rabbitmq-1")
        .replace("$(K8S_SERVICE_NAME)", &env["K8S_SERVICE_NAME"])
        .replace("$(MY_POD_NAMESPACE)", "ns");
    assert!(
        conf.contains(&format!("nodes.2 = {expanded}\n")),
        "{expanded} not in\n{conf}"
    );

    // Five nodes: two more names, the same pod template (no rolling restart).
    let (_, five) = desired_for(&stack_from_spec("demo", &spec(5)));
    let conf5 = &five.rabbitmq.config.data.as_ref().unwrap()["rabbitmq.conf"];
    assert!(conf5.contains("nodes.5 = rabbit@demo-rabbitmq-4.demo-rabbitmq-nodes.ns\n"));
    let template = |d: &pingpong_operator::reconcile::desired::DesiredState| {
        serde_json::to_value(&d.rabbitmq.statefulset.spec.as_ref().unwrap().template).unwrap()
    };
    assert_eq!(template(&three), template(&five));
}

#[test]
fn forty_character_names_fit() {
    let name = "a".repeat(40);
    let (_, desired) = desired_for(&stack_from_spec(&name, "  {}"));
    for object in objects(&desired) {
        assert!(object["metadata"]["name"].as_str().unwrap().len() <= 63);
    }
}

fn parse_documents(text: &str) -> Vec<Value> {
    assert!(text.starts_with("---\n"));
    text.split("\n---\n")
        .map(|doc| serde_yaml::from_str::<Value>(doc.trim_start_matches("---\n")).unwrap())
        .collect()
}

#[test]
fn render_prints_every_sample() {
    let dir = tests_dir().join("../../manifests/samples");
    for sample in ["minimal", "full", "gateway"] {
        let input = std::fs::read_to_string(dir.join(format!("{sample}.yaml"))).unwrap();
        let text = render(&input, None, &Images::default()).unwrap();
        let docs = parse_documents(&text);
        assert!(docs.len() >= 10, "{sample}: {} documents", docs.len());
        for doc in &docs {
            assert!(doc["apiVersion"].is_string(), "{sample}: {doc}");
            assert!(doc["kind"].is_string(), "{sample}: {doc}");
            assert!(doc["metadata"]["name"].is_string(), "{sample}: {doc}");
            // A plain manifest has no uid, so no owner references are rendered.
            assert!(doc["metadata"].get("ownerReferences").is_none());
        }
    }
}

#[test]
fn render_takes_namespace_and_uid_from_the_input_and_namespace_flag_overrides() {
    let input = std::fs::read_to_string(tests_dir().join("fixtures/minimal.yaml")).unwrap();
    let docs = parse_documents(&render(&input, None, &Images::default()).unwrap());
    for doc in &docs {
        assert_eq!(doc["metadata"]["namespace"], "pingpong");
        let owner = &doc["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], "6f1c2a3b-0000-4000-8000-000000000001");
        assert_eq!(owner["controller"], true);
    }
    let docs = parse_documents(&render(&input, Some("other"), &Images::default()).unwrap());
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "other"));
    let plain =
        "apiVersion: pingpong.dev/v1alpha1\nkind: PingPongStack\nmetadata:\n  name: x\nspec: {}\n";
    let docs = parse_documents(&render(plain, None, &Images::default()).unwrap());
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "default"));
}

#[test]
fn render_generates_fresh_credentials_each_time() {
    let input = std::fs::read_to_string(tests_dir().join("fixtures/minimal.yaml")).unwrap();
    let a = render(&input, None, &Images::default()).unwrap();
    let b = render(&input, None, &Images::default()).unwrap();
    assert_ne!(a, b);
    let secret = &parse_documents(&a)[0];
    assert_eq!(secret["kind"], "Secret");
    assert!(secret["data"]["password"].is_string());
}

#[test]
fn render_rejects_other_kinds_and_invalid_stacks() {
    let defaults = Images::default();
    let err = render(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        None,
        &defaults,
    )
    .unwrap_err();
    assert_eq!(err.kind(), "WrongKind");
    let err = render("not: [valid", None, &defaults).unwrap_err();
    assert_eq!(err.kind(), "Parse");
    let bad = "apiVersion: pingpong.dev/v1alpha1\nkind: PingPongStack\nmetadata:\n  name: x\nspec:\n  pong:\n    replicas: 2\n";
    assert_eq!(
        render(bad, None, &defaults).unwrap_err().kind(),
        "InvalidReplicas"
    );
}

#[test]
fn render_accepts_kubectl_get_output() {
    let input = r#"apiVersion: pingpong.dev/v1alpha1
kind: PingPongStack
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"pingpong.dev/v1alpha1","kind":"PingPongStack","metadata":{"name":"demo","namespace":"team-a"},"spec":{}}
  creationTimestamp: "2026-03-01T10:00:00Z"
  generation: 2
  managedFields:
  - apiVersion: pingpong.dev/v1alpha1
    fieldsType: FieldsV1
    fieldsV1:
      f:spec: {}
    manager: kubectl-client-side-apply
    operation: Update
    time: "2026-03-01T10:00:00Z"
  name: demo
  namespace: team-a
  resourceVersion: "12345"
  uid: 0c0ffee0-0000-4000-8000-000000000123
spec:
  ingress:
    className: nginx
    enabled: true
  monitoring:
    serviceMonitor: false
  paused: false
  ping:
    replicas: 1
  pong:
    maxMessages: 100000
    replicas: 1
  rabbitmq:
    queue: pingpong
    replicas: 1
    storage:
      ephemeral: false
      size: 1Gi
status:
  conditions:
  - lastTransitionTime: "2026-03-01T10:01:00Z"
    message: every component is ready
    observedGeneration: 2
    reason: AllReady
    status: "True"
    type: Ready
  credentialsSecret: demo-rabbitmq-credentials
  observedGeneration: 2
  ping:
    readyReplicas: 1
    replicas: 1
"#;
    let docs = parse_documents(&render(input, None, &Images::default()).unwrap());
    for doc in &docs {
        assert_eq!(doc["metadata"]["namespace"], "team-a");
        assert_eq!(
            doc["metadata"]["ownerReferences"][0]["uid"],
            "0c0ffee0-0000-4000-8000-000000000123"
        );
    }
}
