//! Security invariants over every object of the invariant stacks: no `guest` credentials,
//! passwords only as read-only Secret files (never variables), the Kubernetes "restricted" pod
//! security profile, and hardened, probed ping and pong containers.

use crate::support::fixtures::*;
use crate::support::invariants::*;
use serde_json::Value;

fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

#[test]
fn no_guest_credentials_anywhere() {
    for (stack, objects) in stacks() {
        for o in &objects {
            let mut all = Vec::new();
            strings(o, &mut all);
            for s in all {
                // The only mention allowed: the broker config line that restricts guest to
                // loopback (defence in depth; the user is never created).
                let cleaned = s.replace("loopback_users.guest = true", "");
                assert!(
                    !cleaned.to_lowercase().contains("guest"),
                    "{stack}: {} mentions guest: {s:?}",
                    kind_name(o)
                );
            }
            if o["kind"] == "Secret" {
                for value in o["data"].as_object().unwrap().values() {
                    let b64 = value.as_str().unwrap();
                    assert!(b64 != "Z3Vlc3Q=", "{stack}: Secret value is guest");
                }
            }
        }
        for w in workloads(&objects) {
            for c in w["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
            {
                for e in c["env"].as_array().into_iter().flatten() {
                    let name = e["name"].as_str().unwrap();
                    if matches!(
                        name,
                        "RABBITMQ_DEFAULT_USER"
                            | "RABBITMQ_DEFAULT_PASS"
                            | "RABBITMQ_ERLANG_COOKIE"
                            | "PGPASSWORD"
                            | "POSTGRES_PASSWORD"
                            | "DATA_SOURCE_PASS"
                    ) {
                        // Credentials are files (CKV_K8S_35), never variables of any kind.
                        panic!("{stack}: {name} is a variable in {}: {e}", kind_name(w));
                    }
                }
            }
        }
    }
}

#[test]
fn credential_files_are_read_only_secret_mounts_only_the_pod_group_reads() {
    let mut seen = 0;
    for (stack, objects) in stacks() {
        for w in workloads(&objects) {
            let pod = &w["spec"]["template"]["spec"];
            for c in pod["containers"].as_array().unwrap() {
                for e in c["env"].as_array().into_iter().flatten() {
                    let name = e["name"].as_str().unwrap();
                    let credential =
                        name.ends_with("_FILE") && (name.contains("PASS") || name.contains("USER"));
                    let Some(path) = e["value"].as_str().filter(|_| credential) else {
                        continue;
                    };
                    seen += 1;
                    let what = format!("{stack}: {} {name}", kind_name(w));
                    assert!(secret_file_source(pod, c, path).is_some(), "{what}");
                    let dir = path.rsplit_once('/').unwrap().0;
                    let mount = c["volumeMounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|m| m["mountPath"] == dir)
                        .unwrap();
                    let volume = pod["volumes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|v| v["name"] == mount["name"])
                        .unwrap();
                    assert_eq!(volume["secret"]["defaultMode"], 0o440, "{what}");
                    // 0440: root and the fsGroup; the containers' users must be in it.
                    assert!(pod["securityContext"]["fsGroup"].is_i64(), "{what}");
                }
            }
        }
    }
    assert!(
        seen >= 4,
        "the invariant stacks mount credential files: {seen}"
    );
}

/// The checks of the Kubernetes Pod Security Standard "restricted" (v1.32) for one pod spec.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[key] == true {
            v.push(format!("{key} is true"));
        }
    }
    let allowed_volumes = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        let kinds: Vec<&String> = volume
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "name")
            .collect();
        if !kinds.iter().all(|k| allowed_volumes.contains(&k.as_str())) {
            v.push(format!("volume type {kinds:?}"));
        }
    }
    let pod_sc = &pod["securityContext"];
    for c in pod_containers(pod) {
        let sc = &c["securityContext"];
        let name = c["name"].as_str().unwrap_or("?");
        if sc["privileged"] == true {
            v.push(format!("{name}: privileged"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            v.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if !(sc["runAsNonRoot"] == true
            || (pod_sc["runAsNonRoot"] == true && sc["runAsNonRoot"] != false))
        {
            v.push(format!("{name}: runAsNonRoot is not true"));
        }
        for sc in [sc, pod_sc] {
            if sc["runAsUser"] == 0 {
                v.push(format!("{name}: runAsUser 0"));
            }
        }
        let seccomp = sc["seccompProfile"]["type"]
            .as_str()
            .or(pod_sc["seccompProfile"]["type"].as_str());
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            v.push(format!("{name}: seccompProfile {seccomp:?}"));
        }
        let drop: Vec<&str> = sc["capabilities"]["drop"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !drop.contains(&"ALL") {
            v.push(format!("{name}: capabilities do not drop ALL"));
        }
        for add in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            if add != "NET_BIND_SERVICE" {
                v.push(format!("{name}: adds capability {add}"));
            }
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            if port.get("hostPort").is_some_and(|p| p != 0) {
                v.push(format!("{name}: hostPort"));
            }
        }
        if c["resources"]["requests"]
            .as_object()
            .is_none_or(|r| r.is_empty())
        {
            v.push(format!("{name}: no resource requests"));
        }
    }
    v
}

#[test]
fn every_pod_passes_the_restricted_profile() {
    for (stack, objects) in stacks() {
        for w in workloads(&objects) {
            let pod = &w["spec"]["template"]["spec"];
            let violations = restricted_violations(pod);
            assert!(
                violations.is_empty(),
                "{stack}: {} violates restricted: {violations:?}",
                kind_name(w)
            );
            let uid = pod["securityContext"]["runAsUser"].as_i64().unwrap();
            assert!(uid > 0, "numeric non-root user");
        }
    }
}

#[test]
fn the_restricted_check_catches_violations() {
    let pod = serde_json::json!({
        "hostNetwork": true,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]
    });
    let violations = restricted_violations(&pod);
    for expected in [
        "hostNetwork",
        "volume type",
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "seccompProfile",
        "drop ALL",
        "SYS_ADMIN",
        "no resource requests",
    ] {
        assert!(
            violations.iter().any(|v| v.contains(expected)),
            "missing {expected}: {violations:?}"
        );
    }
}

#[test]
fn ping_and_pong_are_hardened_and_probed() {
    for (stack, objects) in stacks() {
        let apps = objects.iter().filter(|o| {
            o["kind"] == "Deployment"
                && matches!(
                    o["metadata"]["labels"]["app.kubernetes.io/component"].as_str(),
                    Some("ping" | "pong")
                )
        });
        for d in apps {
            let pod = &d["spec"]["template"];
            let c = &pod["spec"]["containers"][0];
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"], true,
                "{stack}"
            );
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
            let annotations = as_map(&pod["metadata"]["annotations"]);
            assert_eq!(annotations["prometheus.io/scrape"], "true");
            assert_eq!(annotations["prometheus.io/path"], "/metrics");
            assert_eq!(annotations["pingpong.dev/config-hash"].len(), 64);
            let port = c["ports"][0]["containerPort"].to_string();
            assert_eq!(annotations["prometheus.io/port"], port);
            let env = as_map(&Value::Object(
                c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e.get("value")?.clone())))
                    .collect(),
            ));
            assert_eq!(env["LISTEN_ADDR"], format!("0.0.0.0:{port}"));
            assert!(env["RABBITMQ_HOST"].ends_with(".svc"));
        }
    }
}

/// Every container of every workload (the broker and its init container included) has a
/// read-only root filesystem, and whatever it may write is a volume: an emptyDir or a claim,
/// never a ConfigMap or Secret mounted writable. No pod gets a ServiceAccount token (none talks
/// to the API server; checkov's CKV_K8S_38 is skipped for the operator's own pod on that basis).
#[test]
fn every_container_has_a_read_only_root_and_writes_only_to_volumes() {
    for (stack, objects) in stacks() {
        for w in workloads(&objects) {
            let spec = &w["spec"]["template"]["spec"];
            assert_eq!(
                spec["automountServiceAccountToken"],
                false,
                "{stack}: {}",
                kind_name(w)
            );
            let claims: Vec<&Value> = w["spec"]["volumeClaimTemplates"]
                .as_array()
                .map(|c| c.iter().map(|c| &c["metadata"]["name"]).collect())
                .unwrap_or_default();
            let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
            assert!(spec["containers"].is_array(), "{stack}: {}", kind_name(w));
            for c in pod_containers(spec) {
                let what = format!("{stack}: {} container {}", kind_name(w), c["name"]);
                assert_eq!(
                    c["securityContext"]["readOnlyRootFilesystem"], true,
                    "{what}"
                );
                for m in c["volumeMounts"].as_array().into_iter().flatten() {
                    if m["readOnly"] == true {
                        continue;
                    }
                    let scratch = claims.contains(&&m["name"])
                        || volumes
                            .iter()
                            .any(|v| v["name"] == m["name"] && v.get("emptyDir").is_some());
                    assert!(scratch, "{what}: writable mount {m}");
                }
            }
        }
    }
}

/// No password reaches a container as an environment variable: every `secretKeyRef` variable of
/// every container is one of pong's settings of an external PostgreSQL or Redis taken from the
/// user's Secret (host, port, database, user, Redis URL). This is what checkov's CKV_K8S_35 skip
/// in tests/deploy/checkov.yaml relies on; passwords are mounted files (`*_FILE`).
#[test]
fn no_password_is_an_environment_variable() {
    const EXTERNAL_SETTINGS: [&str; 5] = ["PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "REDIS_URL"];
    for (stack, objects) in stacks() {
        for w in workloads(&objects) {
            let spec = &w["spec"]["template"]["spec"];
            assert!(spec["containers"].is_array(), "{stack}: {}", kind_name(w));
            for c in pod_containers(spec) {
                for e in c["env"].as_array().into_iter().flatten() {
                    if e["valueFrom"].get("secretKeyRef").is_none() {
                        continue;
                    }
                    let name = e["name"].as_str().unwrap();
                    assert!(
                        c["name"] == "pong" && EXTERNAL_SETTINGS.contains(&name),
                        "{stack}: {} container {} reads {name} from a Secret as a variable",
                        kind_name(w),
                        c["name"]
                    );
                }
            }
        }
    }
}
