//! Builder tests of pong's store and cache: the provisioned PostgreSQL and Redis objects, the
//! variables pong gets, the rollout strategy, the generated password that is planned only once,
//! and the validation rules that mirror the CRD's CEL rules.

use std::collections::BTreeMap;

use crate::support::fixtures::*;
use pingpong_operator::apis::ServedApis;
use pingpong_operator::images::Images;
use pingpong_operator::reconcile::builders::{PlanInputs, build_desired};
use pingpong_operator::reconcile::observe::ExistingSecrets;
use pingpong_operator::reconcile::validate::validate;
use pretty_assertions::assert_eq;
use serde_json::Value;

fn desired(spec: &str) -> Vec<Value> {
    let (_, desired) = desired_for(&stack_from_spec("s", spec));
    objects(&desired)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The pong container's variables: name → plain value, or `secret:<name>/<key>` (for a
/// `*_FILE` variable, the Secret key mounted at its path).
fn pong_env(objects: &[Value]) -> BTreeMap<String, String> {
    let pong = find(objects, "Deployment", "s-pong").unwrap();
    container_env(&pong["spec"]["template"]["spec"], container(pong, "pong"))
}

const POSTGRES: &str = "  pong:\n    store:\n      type: postgres";

#[test]
fn type_postgres_alone_provisions_a_database_with_every_default() {
    let objects = desired(POSTGRES);
    let sts = find(&objects, "StatefulSet", "s-postgres").expect("StatefulSet");
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["serviceName"], "s-postgres");
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        serde_json::json!({ "whenDeleted": "Retain", "whenScaled": "Retain" }),
        "data safety first: the claim outlives the StatefulSet"
    );
    let claim = &spec["volumeClaimTemplates"][0];
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    let postgres = container(sts, "postgres");
    assert_eq!(postgres["image"], "postgres:17");
    let pod = &spec["template"]["spec"];
    assert_eq!(
        pod["containers"].as_array().unwrap().len(),
        1,
        "no exporter"
    );
    let annotations = spec["template"]["metadata"]["annotations"]
        .as_object()
        .unwrap();
    assert!(!annotations.contains_key("prometheus.io/scrape"));
    assert_eq!(pod["securityContext"]["runAsUser"], 999);
    assert_eq!(pod["securityContext"]["fsGroup"], 999);
    assert_eq!(postgres["securityContext"]["readOnlyRootFilesystem"], true);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            postgres[probe]["exec"]["command"][0], "pg_isready",
            "{probe}"
        );
    }

    // PGDATA is a subdirectory of the data mount; every other writable path is an emptyDir.
    let env: BTreeMap<&str, &Value> = postgres["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    let pgdata = env["PGDATA"]["value"].as_str().unwrap();
    let mounts: BTreeMap<&str, &str> = postgres["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap(),
                m["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(pgdata.starts_with(&format!("{}/", "/var/lib/postgresql/data")));
    assert_eq!(mounts["/var/lib/postgresql/data"], "data");
    let empty_dirs: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["emptyDir"].is_object())
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(empty_dirs, ["run", "tmp"]);
    assert_eq!(mounts["/var/run/postgresql"], "run");
    assert_eq!(mounts["/tmp"], "tmp");
    // The password is a file from the generated Secret, never a variable.
    assert!(!env.contains_key("POSTGRES_PASSWORD"));
    assert_eq!(
        container_env(pod, postgres)["POSTGRES_PASSWORD_FILE"],
        "secret:s-postgres-credentials/password"
    );

    let service = find(&objects, "Service", "s-postgres").unwrap();
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["ports"][0]["port"], 5432);

    let secret = find(&objects, "Secret", "s-postgres-credentials").unwrap();
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["database", "host", "password", "port", "username"]);
    assert!(find(&objects, "NetworkPolicy", "s-postgres").is_some());
    assert!(find(&objects, "Deployment", "s-redis").is_none());
}

/// Whether a component a test needs must be there (`CI=true`): then its absence fails the test.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Runs `argv` (bounded by `PGCONNECT_TIMEOUT`); `None` when the program is not installed.
fn run(argv: &[String]) -> Option<std::process::ExitStatus> {
    match std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdout(std::process::Stdio::null())
        .status()
    {
        Ok(status) => Some(status),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("running {argv:?}: {e}"),
    }
}

#[test]
fn postgres_readiness_is_pg_isready_on_127_0_0_1_as_the_configured_user() {
    let objects = desired(POSTGRES);
    let sts = find(&objects, "StatefulSet", "s-postgres").unwrap();
    let postgres = container(sts, "postgres");
    let env: BTreeMap<&str, &str> = postgres["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    let probe = &postgres["readinessProbe"];
    let argv: Vec<String> = probe["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    // TCP on 127.0.0.1, not the socket: initdb's temporary server listens on the socket only,
    // so the pod is ready only once the real server accepts connections.
    assert_eq!(
        argv,
        [
            "pg_isready",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            env["POSTGRES_USER"],
            "-d",
            env["POSTGRES_DB"],
        ]
    );
    assert_eq!(postgres["ports"][0]["containerPort"], 5432);
    assert_eq!(probe["periodSeconds"], 10);
    assert_eq!(probe["failureThreshold"], 3);
    assert!(probe["timeoutSeconds"].as_i64().unwrap() >= 1);

    // The same argv against the real binary and the host's PostgreSQL on 127.0.0.1:5432 (it
    // need not know the user: pg_isready only asks whether the server accepts connections),
    // and against a port nothing listens on.
    let Some(status) = run(&argv) else {
        assert!(
            !in_ci(),
            "pg_isready is required (CI=true) but not installed"
        );
        eprintln!("skipped the pg_isready run: pg_isready is not installed");
        return;
    };
    if !status.success() {
        assert!(
            !in_ci(),
            "PostgreSQL is required on 127.0.0.1:5432 (CI=true): {argv:?} gave {status}; run scripts/ensure-services.sh"
        );
        eprintln!("skipped the pg_isready run: no PostgreSQL on 127.0.0.1:5432 ({status})");
        return;
    }
    let mut closed = argv.clone();
    closed[4] = "1".to_owned();
    let status = run(&closed).unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "no server answers on port 1: {status}"
    );
}

#[test]
fn pong_gets_the_postgres_settings_and_rolls_one_pod_at_a_time() {
    let objects = desired(POSTGRES);
    let env = pong_env(&objects);
    assert_eq!(env["PONG_STORE"], "postgres");
    assert_eq!(env["PGHOST"], "s-postgres.ns.svc");
    assert_eq!(env["PGPORT"], "5432");
    assert_eq!(env["PGDATABASE"], "pong");
    assert_eq!(env["PGUSER"], "pong");
    assert_eq!(
        env["PGPASSWORD_FILE"],
        "secret:s-postgres-credentials/password"
    );
    assert!(!env.contains_key("PGPASSWORD"), "never a variable");
    assert!(!env.contains_key("REDIS_URL"));
    let pong = find(&objects, "Deployment", "s-pong").unwrap();
    // Explicit rolling parameters, owned by the operator's field manager (see pong.rs).
    assert_eq!(
        pong["spec"]["strategy"],
        serde_json::json!({
            "type": "RollingUpdate",
            "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 }
        })
    );

    let memory = desired("  {}");
    let env = pong_env(&memory);
    assert!(
        ["PONG_STORE", "PGHOST", "PGPASSWORD_FILE", "REDIS_URL"]
            .iter()
            .all(|k| !env.contains_key(*k)),
        "the memory default adds nothing: {env:?}"
    );
    let pong = find(&memory, "Deployment", "s-pong").unwrap();
    assert_eq!(pong["spec"]["strategy"]["type"], "Recreate");
}

#[test]
fn an_external_database_and_cache_come_from_the_users_secrets() {
    let objects = desired(
        "  pong:\n    replicas: 3\n    store:\n      type: postgres\n      postgres:\n        external:\n          secretName: db\n    cache:\n      external:\n        secretName: cache\n        key: redis-url",
    );
    let env = pong_env(&objects);
    for (var, key) in [
        ("PGHOST", "host"),
        ("PGPORT", "port"),
        ("PGDATABASE", "database"),
        ("PGUSER", "username"),
        ("PGPASSWORD_FILE", "password"),
    ] {
        assert_eq!(env[var], format!("secret:db/{key}"));
    }
    assert_eq!(env["REDIS_URL_FILE"], "secret:cache/redis-url");
    assert!(
        !env.contains_key("REDIS_URL"),
        "never a variable: it may hold a password"
    );
    let kinds: Vec<String> = objects.iter().map(kind_name).collect();
    assert!(
        kinds
            .iter()
            .all(|k| !k.contains("postgres") && !k.contains("redis")),
        "nothing provisioned: {kinds:?}"
    );
    let pdb = find(&objects, "PodDisruptionBudget", "s-pong").expect("3 replicas get a budget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
}

#[test]
fn a_provisioned_cache_is_a_hardened_redis_without_persistence() {
    let objects = desired(&format!("{POSTGRES}\n    cache:\n      provisioned: {{}}"));
    let redis = find(&objects, "Deployment", "s-redis").expect("Redis Deployment");
    let c = container(redis, "redis");
    assert_eq!(c["image"], "redis:7.4");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.windows(2).any(|w| w == ["--save", ""]), "{args:?}");
    assert!(args.contains(&"--appendonly no"), "{args:?}");
    // A bare `no` would be a boolean to YAML 1.1 readers (kubectl) of the rendered YAML.
    let yaml = serde_yaml::to_string(redis).unwrap();
    assert!(
        !yaml.lines().any(|l| l.trim_end().ends_with("- no")),
        "{yaml}"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["runAsUser"], 999);
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/data");
    assert!(redis["spec"]["template"]["spec"]["volumes"][0]["emptyDir"].is_object());
    assert_eq!(c["readinessProbe"]["exec"]["command"][0], "redis-cli");
    let service = find(&objects, "Service", "s-redis").unwrap();
    assert_eq!(service["spec"]["ports"][0]["port"], 6379);
    assert_eq!(
        pong_env(&objects)["REDIS_URL"],
        "redis://s-redis.ns.svc:6379/0"
    );
    let policy = find(&objects, "NetworkPolicy", "s-redis").unwrap();
    assert_eq!(policy["spec"]["ingress"].as_array().unwrap().len(), 1);
}

#[test]
fn metrics_add_the_exporter_sidecar_and_scrape_annotations() {
    let objects = desired(
        "  pong:\n    store:\n      type: postgres\n      postgres:\n        provisioned:\n          metrics: true",
    );
    let sts = find(&objects, "StatefulSet", "s-postgres").unwrap();
    let exporter = container(sts, "postgres-exporter");
    assert!(
        exporter["image"]
            .as_str()
            .unwrap()
            .starts_with("quay.io/prometheuscommunity/postgres-exporter:v")
    );
    assert_eq!(exporter["ports"][0]["containerPort"], 9187);
    assert_eq!(exporter["securityContext"]["readOnlyRootFilesystem"], true);
    // The exporter reads the password file through the pod's fsGroup (its user is nobody).
    let pod = &sts["spec"]["template"]["spec"];
    let env = container_env(pod, exporter);
    assert_eq!(
        env["DATA_SOURCE_PASS_FILE"],
        "secret:s-postgres-credentials/password"
    );
    assert!(!env.contains_key("DATA_SOURCE_PASS"));
    let annotations = &sts["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "9187");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    let policy = find(&objects, "NetworkPolicy", "s-postgres").unwrap();
    let ports: Vec<&Value> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["ports"][0]["port"])
        .collect();
    assert_eq!(ports, [5432, 9187]);
}

#[test]
fn ephemeral_storage_has_no_claim_template() {
    let objects = desired(
        "  pong:\n    store:\n      type: postgres\n      postgres:\n        provisioned:\n          storage:\n            ephemeral: true",
    );
    let sts = find(&objects, "StatefulSet", "s-postgres").unwrap();
    assert!(sts["spec"].get("volumeClaimTemplates").is_none());
    let volumes = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["name"] == "data" && v["emptyDir"].is_object())
    );
}

fn pong_hash(spec: &str) -> String {
    let objects = desired(spec);
    find(&objects, "Deployment", "s-pong").unwrap()["spec"]["template"]["metadata"]
        ["annotations"]["pingpong.dev/config-hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_store_and_cache_roll_pong_and_so_does_the_password() {
    let memory = pong_hash("  {}");
    let postgres = pong_hash(POSTGRES);
    let cached = pong_hash(&format!("{POSTGRES}\n    cache:\n      provisioned: {{}}"));
    assert_ne!(memory, postgres);
    assert_ne!(postgres, cached);
    let v = validated(&stack_from_spec("s", POSTGRES));
    let a = build_desired(
        &v,
        &PlanInputs::fresh(
            &v,
            fixed_credentials(),
            fixed_postgres_password(),
            ServedApis::default(),
        ),
    );
    let b = build_desired(
        &v,
        &PlanInputs::fresh(
            &v,
            fixed_credentials(),
            pingpong_operator::credentials::generate_password(),
            ServedApis::default(),
        ),
    );
    assert_ne!(
        a.postgres.as_ref().unwrap().secret,
        b.postgres.as_ref().unwrap().secret
    );
    // Another password rolls the database (its postStart hook sets it) and pong (which logs in
    // with it), through the Secret digest only; ping and the broker do not read it.
    let digest = |d: &pingpong_operator::reconcile::desired::DesiredState, kind: &str| {
        let object = objects(d)
            .into_iter()
            .find(|o| kind_name(o) == kind)
            .unwrap();
        object["spec"]["template"]["metadata"]["annotations"]["pingpong.dev/secret-digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for kind in ["Deployment/s-pong", "StatefulSet/s-postgres"] {
        assert_ne!(digest(&a, kind), digest(&b, kind), "{kind} rolls");
    }
    for kind in ["Deployment/s-ping", "StatefulSet/s-rabbitmq"] {
        assert_eq!(digest(&a, kind), digest(&b, kind), "{kind} does not roll");
    }
    assert_eq!(
        a.pong
            .deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["pingpong.dev/config-hash"],
        b.pong
            .deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["pingpong.dev/config-hash"]
    );
    let password = fixed_postgres_password();
    for object in objects(&a) {
        if object["kind"] != "Secret" {
            assert!(
                !object.to_string().contains(password.expose()),
                "{}",
                kind_name(&object)
            );
        }
    }
}

#[test]
fn an_existing_postgres_secret_is_never_planned_again() {
    let v = validated(&stack_from_spec("s", POSTGRES));
    let existing = ExistingSecrets {
        credentials: true,
        erlang_cookie: true,
        postgres: true,
    };
    let inputs = PlanInputs::from_observed(
        &v,
        existing,
        ServedApis::default(),
        || panic!("broker credentials generated"),
        || panic!("PostgreSQL password generated although its Secret exists"),
    );
    let desired = build_desired(&v, &inputs);
    assert!(desired.postgres.as_ref().unwrap().secret.is_none());
    assert!(desired.postgres.is_some());

    let missing = PlanInputs::from_observed(
        &v,
        ExistingSecrets {
            postgres: false,
            ..existing
        },
        ServedApis::default(),
        || panic!("broker credentials generated"),
        fixed_postgres_password,
    );
    assert!(
        build_desired(&v, &missing)
            .postgres
            .is_some_and(|p| p.secret.is_some())
    );

    // Memory and external stores never get a generated password.
    for spec in [
        "  {}",
        "  pong:\n    store:\n      type: postgres\n      postgres:\n        external:\n          secretName: db",
    ] {
        let v = validated(&stack_from_spec("s", spec));
        let inputs = PlanInputs::from_observed(
            &v,
            existing,
            ServedApis::default(),
            || panic!("broker credentials generated"),
            || panic!("PostgreSQL password generated for {spec}"),
        );
        assert!(
            build_desired(&v, &inputs)
                .postgres
                .is_none_or(|p| p.secret.is_none())
        );
    }
}

fn validation_kind(spec: &str) -> String {
    validate(&stack_from_spec("s", spec), &Images::default())
        .unwrap_err()
        .kind()
        .to_owned()
}

#[test]
fn validation_mirrors_the_store_rules() {
    assert_eq!(
        validation_kind("  pong:\n    replicas: 2\n    store:\n      type: memory"),
        "InvalidReplicas"
    );
    let ok = format!("{POSTGRES}\n    replicas: 2");
    validate(&stack_from_spec("s", &ok), &Images::default()).unwrap();
    assert_eq!(
        validation_kind("  pong:\n    store:\n      postgres:\n        provisioned: {}"),
        "PostgresWithoutPostgresStore"
    );
    assert_eq!(
        validation_kind(
            "  pong:\n    store:\n      type: postgres\n      postgres:\n        external:\n          secretName: s-postgres-credentials"
        ),
        "SecretNameConflict"
    );
    assert_eq!(
        validation_kind(
            "  pong:\n    cache:\n      external:\n        secretName: s-rabbitmq-erlang-cookie"
        ),
        "SecretNameConflict"
    );
    assert_eq!(
        validation_kind(
            "  pong:\n    store:\n      type: postgres\n      postgres:\n        provisioned:\n          storage:\n            size: lots"
        ),
        "InvalidQuantity"
    );
    assert_eq!(
        validation_kind("  pong:\n    env:\n      - name: PGPASSWORD\n        value: x"),
        "ReservedEnv"
    );
    assert_eq!(
        validation_kind("  pong:\n    cache:\n      provisioned:\n        image: \"redis 7\""),
        "InvalidImage"
    );
}
