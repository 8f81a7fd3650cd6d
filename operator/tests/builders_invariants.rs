//! Invariants over every object of several stacks: selectors match pod labels, Service target
//! ports exist on the selected containers, owner references, name lengths, no `guest`
//! credentials, the Kubernetes "restricted" pod security profile, and references between
//! objects (Secrets, Services, ConfigMap) that resolve.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns panic on purpose

#[path = "fixtures/support.rs"]
mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::*;

/// Stacks the invariants run over: the fixtures plus a few edge shapes.
fn stacks() -> Vec<(String, Vec<Value>)> {
    let mut stacks: Vec<_> = FIXTURES
        .iter()
        .map(|name| {
            let (_, desired) = desired_for(&load_fixture(name));
            ((*name).to_owned(), objects(&desired))
        })
        .collect();
    for (name, spec) in [
        ("zero", "  ping:\n    replicas: 0\n  pong:\n    replicas: 0"),
        (
            "cluster",
            "  rabbitmq:\n    replicas: 5\n  ping:\n    replicas: 4",
        ),
        (
            "monitored",
            "  monitoring:\n    serviceMonitor: true\n  ingress:\n    host: x.example.com",
        ),
        (&"b".repeat(40), "  {}"),
        ("bare-pg", "  pong:\n    store:\n      type: postgres"),
        (
            "ephemeral-pg",
            "  pong:\n    replicas: 3\n    store:\n      type: postgres\n      postgres:\n        provisioned:\n          storage:\n            ephemeral: true\n    cache:\n      external:\n        secretName: user-redis",
        ),
        (
            "external-pg",
            "  pong:\n    store:\n      type: postgres\n      postgres:\n        external:\n          secretName: user-pg\n    cache:\n      provisioned: {}",
        ),
    ] {
        let (_, desired) = desired_for(&stack_from_spec(name, spec));
        stacks.push((name.to_owned(), objects(&desired)));
    }
    stacks
}

fn workloads(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .collect()
}

fn as_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    !small.is_empty() && small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// Workloads whose pod template labels contain `selector`.
fn selected<'a>(objects: &'a [Value], selector: &BTreeMap<String, String>) -> Vec<&'a Value> {
    workloads(objects)
        .into_iter()
        .filter(|w| {
            subset(
                selector,
                &as_map(&w["spec"]["template"]["metadata"]["labels"]),
            )
        })
        .collect()
}

#[test]
fn workload_selectors_are_subsets_of_pod_labels() {
    for (stack, objects) in stacks() {
        for w in workloads(&objects) {
            let selector = as_map(&w["spec"]["selector"]["matchLabels"]);
            let labels = as_map(&w["spec"]["template"]["metadata"]["labels"]);
            assert!(subset(&selector, &labels), "{stack}: {}", kind_name(w));
        }
    }
}

#[test]
fn every_selector_selects_exactly_one_workload() {
    for (stack, objects) in stacks() {
        for o in &objects {
            let selector = match o["kind"].as_str().unwrap() {
                "Service" => as_map(&o["spec"]["selector"]),
                "PodDisruptionBudget" => as_map(&o["spec"]["selector"]["matchLabels"]),
                "NetworkPolicy" => as_map(&o["spec"]["podSelector"]["matchLabels"]),
                _ => continue,
            };
            assert_eq!(
                selected(&objects, &selector).len(),
                1,
                "{stack}: {}",
                kind_name(o)
            );
        }
    }
}

#[test]
fn service_target_ports_match_container_ports() {
    for (stack, objects) in stacks() {
        for service in objects.iter().filter(|o| o["kind"] == "Service") {
            let workload = selected(&objects, &as_map(&service["spec"]["selector"]))[0];
            let containers = workload["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap();
            let ports: Vec<&Value> = containers
                .iter()
                .flat_map(|c| c["ports"].as_array().unwrap().iter())
                .collect();
            for port in service["spec"]["ports"].as_array().unwrap() {
                let target = &port["targetPort"];
                let found = ports.iter().any(|p| match target {
                    Value::String(name) => p["name"] == *name,
                    Value::Number(_) => p["containerPort"] == *target,
                    _ => false,
                });
                assert!(
                    found,
                    "{stack}: {} port {port} has no container port",
                    kind_name(service)
                );
            }
        }
    }
}

#[test]
fn every_object_has_a_controller_owner_reference_and_our_labels() {
    for (stack, objects) in stacks() {
        for o in &objects {
            let meta = &o["metadata"];
            let owners = meta["ownerReferences"]
                .as_array()
                .unwrap_or_else(|| panic!("{stack}: {} has no ownerReferences", kind_name(o)));
            assert_eq!(owners.len(), 1, "{stack}: {}", kind_name(o));
            let owner = &owners[0];
            assert_eq!(owner["apiVersion"], "pingpong.dev/v1alpha1");
            assert_eq!(owner["kind"], "PingPongStack");
            assert_eq!(owner["controller"], true);
            assert_eq!(owner["blockOwnerDeletion"], true);
            assert!(owner["uid"].as_str().is_some_and(|u| !u.is_empty()));
            let labels = as_map(&meta["labels"]);
            assert_eq!(labels["app.kubernetes.io/managed-by"], "pingpong-operator");
            assert_eq!(
                labels["app.kubernetes.io/instance"],
                owner["name"].as_str().unwrap()
            );
            assert!(meta["namespace"].is_string());
        }
    }
}

#[test]
fn names_fit_in_a_dns_label_and_are_unique_per_kind() {
    for (stack, objects) in stacks() {
        let mut seen = std::collections::BTreeSet::new();
        for o in &objects {
            let name = o["metadata"]["name"].as_str().unwrap();
            assert!(
                name.len() <= 63,
                "{stack}: {name} has {} characters",
                name.len()
            );
            assert!(
                seen.insert(kind_name(o)),
                "{stack}: duplicate {}",
                kind_name(o)
            );
        }
    }
}

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
                    if matches!(
                        e["name"].as_str(),
                        Some(
                            "RABBITMQ_DEFAULT_USER"
                                | "RABBITMQ_DEFAULT_PASS"
                                | "RABBITMQ_ERLANG_COOKIE"
                                | "PGPASSWORD"
                                | "POSTGRES_PASSWORD"
                                | "DATA_SOURCE_PASS"
                        )
                    ) {
                        assert!(e.get("value").is_none(), "{stack}: literal {e}");
                        assert!(e["valueFrom"]["secretKeyRef"]["name"].is_string());
                    }
                }
            }
        }
    }
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
    let containers = pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten();
    for c in containers {
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

/// Secrets the specs name that the user creates (never rendered).
const USER_SECRETS: [&str; 5] = [
    "demo-full-broker",
    "demo-full-postgres",
    "demo-full-redis",
    "user-pg",
    "user-redis",
];

#[test]
fn references_between_objects_resolve() {
    for (stack, objects) in stacks() {
        let find = |kind: &str, name: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        };
        for w in workloads(&objects) {
            let pod = &w["spec"]["template"]["spec"];
            for c in pod["containers"].as_array().unwrap() {
                for e in c["env"].as_array().into_iter().flatten() {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    let (Some(name), Some(key)) = (r["name"].as_str(), r["key"].as_str()) else {
                        continue;
                    };
                    // A user-supplied Secret is not rendered; generated ones must carry the key.
                    if let Some(secret) = find("Secret", name) {
                        assert!(
                            secret["data"][key].is_string(),
                            "{stack}: {name} lacks {key}"
                        );
                    } else {
                        assert!(
                            USER_SECRETS.contains(&name),
                            "{stack}: Secret {name} not rendered"
                        );
                    }
                }
            }
            for volume in pod["volumes"].as_array().into_iter().flatten() {
                if let Some(cm) = volume["configMap"]["name"].as_str() {
                    let config = find("ConfigMap", cm).unwrap_or_else(|| panic!("{stack}: {cm}"));
                    for item in volume["configMap"]["items"].as_array().unwrap() {
                        assert!(config["data"][item["key"].as_str().unwrap()].is_string());
                    }
                }
            }
        }
        let service_port = |name: &str| {
            find("Service", name)
                .unwrap_or_else(|| panic!("{stack}: Service {name} missing"))["spec"]["ports"]
                .as_array()
                .unwrap()
                .clone()
        };
        for ingress in objects.iter().filter(|o| o["kind"] == "Ingress") {
            for rule in ingress["spec"]["rules"].as_array().unwrap() {
                for path in rule["http"]["paths"].as_array().unwrap() {
                    let backend = &path["backend"]["service"];
                    let ports = service_port(backend["name"].as_str().unwrap());
                    assert!(ports.iter().any(|p| p["name"] == backend["port"]["name"]));
                }
            }
        }
        for route in objects.iter().filter(|o| o["kind"] == "HTTPRoute") {
            assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
            for rule in route["spec"]["rules"].as_array().unwrap() {
                let backend = &rule["backendRefs"][0];
                let ports = service_port(backend["name"].as_str().unwrap());
                assert!(ports.iter().any(|p| p["port"] == backend["port"]));
            }
        }
        for monitor in objects.iter().filter(|o| o["kind"] == "ServiceMonitor") {
            assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
            let selector = as_map(&monitor["spec"]["selector"]["matchLabels"]);
            let port = &monitor["spec"]["endpoints"][0]["port"];
            let matching: Vec<_> = objects
                .iter()
                .filter(|o| {
                    o["kind"] == "Service" && subset(&selector, &as_map(&o["metadata"]["labels"]))
                })
                .filter(|o| {
                    o["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == *port)
                })
                .collect();
            assert_eq!(matching.len(), 1, "{stack}: {}", kind_name(monitor));
        }
    }
}

#[test]
fn network_policies_admit_only_this_stacks_clients() {
    for (stack, objects) in stacks() {
        let policies: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .collect();
        // The broker always; PostgreSQL and Redis when provisioned: one policy per server.
        let servers = workloads(&objects)
            .iter()
            .filter(|w| {
                matches!(
                    w["metadata"]["labels"]["app.kubernetes.io/component"].as_str(),
                    Some("broker" | "database" | "cache")
                )
            })
            .count();
        assert_eq!(policies.len(), servers, "{stack}");
        for policy in policies {
            check_policy(&stack, policy);
        }
    }
}

/// The client port of each guarded server admits exactly the listed components of this stack.
fn check_policy(stack: &str, policy: &Value) {
    let component = policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        .as_str()
        .unwrap();
    let (client_port, clients): (i64, &[&str]) = match component {
        "broker" => (5672, &["ping", "pong"]),
        "database" => (5432, &["pong"]),
        "cache" => (6379, &["pong"]),
        other => panic!("{stack}: unexpected NetworkPolicy for {other}"),
    };
    let instance = policy["metadata"]["labels"]["app.kubernetes.io/instance"].clone();
    let mut guarded = false;
    for rule in policy["spec"]["ingress"].as_array().unwrap() {
        let opens = rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == client_port);
        if !opens {
            continue;
        }
        guarded = true;
        let from = rule["from"]
            .as_array()
            .expect("a client port must not be open to everyone");
        let components: Vec<&str> = from
            .iter()
            .map(|peer| {
                let labels = &peer["podSelector"]["matchLabels"];
                assert_eq!(labels["app.kubernetes.io/instance"], instance, "{stack}");
                assert!(peer.get("namespaceSelector").is_none());
                labels["app.kubernetes.io/component"].as_str().unwrap()
            })
            .collect();
        assert_eq!(components, clients, "{stack}: {component}");
    }
    assert!(
        guarded,
        "{stack}: no rule for {component} port {client_port}"
    );
}
