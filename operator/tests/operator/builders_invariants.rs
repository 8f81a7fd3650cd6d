//! Invariants over every object of several stacks: selectors match pod labels, Service target
//! ports exist on the selected containers, owner references, name lengths, references between
//! objects (Secrets, Services, ConfigMap) that resolve, and NetworkPolicies that admit only this
//! stack's clients (ping's and pong's egress matching what the servers admit). The pod security
//! checks are in `builders_security.rs`.

use crate::support::fixtures::*;
use crate::support::invariants::*;
use pingpong_operator::reconcile::names::ChildNames;
use serde_json::Value;

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
            let name = meta["name"].as_str().unwrap_or_default();
            if o["kind"] == "Secret" && name.ends_with("-postgres-credentials") {
                // Outlives the stack like the retained data volume it opens.
                assert!(
                    meta.get("ownerReferences").is_none(),
                    "{stack}: {}",
                    kind_name(o)
                );
                let labels = as_map(&meta["labels"]);
                assert_eq!(labels["app.kubernetes.io/managed-by"], "pingpong-operator");
                continue;
            }
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

/// Validation checks name lengths and the user's `credentialsSecret` against
/// `ChildNames::operator_owned`: a child named outside it would escape both checks.
#[test]
fn every_child_is_named_by_child_names() {
    for (stack, objects) in stacks() {
        for o in &objects {
            let owner = o["metadata"]["labels"]["app.kubernetes.io/instance"]
                .as_str()
                .unwrap();
            let names = ChildNames::new(owner, None);
            let name = o["metadata"]["name"].as_str().unwrap();
            assert!(
                names.operator_owned().any(|owned| owned == name),
                "{stack}: {} is not in ChildNames::operator_owned",
                kind_name(o)
            );
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
        // One policy per workload: the broker, ping, pong, and PostgreSQL and Redis when
        // provisioned.
        assert_eq!(policies.len(), workloads(&objects).len(), "{stack}");
        for policy in policies {
            let component = policy["spec"]["podSelector"]["matchLabels"]["pingpong.dev/role"]
                .as_str()
                .unwrap();
            if matches!(component, "ping" | "pong") {
                check_app_policy(&stack, &objects, policy);
            } else {
                check_policy(&stack, policy);
            }
        }
    }
}

/// Stacks whose pong reaches a store or cache outside the cluster's knowledge.
const EXTERNAL: [&str; 3] = ["full", "ephemeral-pg", "external-pg"];
/// Ports an egress rule without a destination may open: DNS.
const DNS: [i64; 2] = [53, 5353];

/// ping and pong: ingress only to the `http` container port, from anywhere; egress to DNS and
/// to this stack's servers, each of which admits this component on that port (so egress and
/// the servers' ingress agree), and to every server that admits it.
fn check_app_policy(stack: &str, objects: &[Value], policy: &Value) {
    let spec = &policy["spec"];
    let component = spec["podSelector"]["matchLabels"]["pingpong.dev/role"]
        .as_str()
        .unwrap();
    let workload = selected(objects, &as_map(&spec["podSelector"]["matchLabels"]))[0];
    let http = workload["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .unwrap()["containerPort"]
        .clone();
    assert_eq!(
        spec["ingress"],
        serde_json::json!([{"ports": [{"port": http, "protocol": "TCP"}]}]),
        "{stack}: {component}"
    );
    let types = spec["policyTypes"].as_array().unwrap();
    // Server ports that admit this component, as (server component, port).
    let mut admitted: Vec<(String, i64)> = Vec::new();
    for server in objects.iter().filter(|o| o["kind"] == "NetworkPolicy") {
        let server_component = server["spec"]["podSelector"]["matchLabels"]["pingpong.dev/role"]
            .as_str()
            .unwrap();
        for rule in server["spec"]["ingress"].as_array().unwrap() {
            let admits = rule["from"].as_array().is_some_and(|from| {
                from.iter().any(|peer| {
                    peer["podSelector"]["matchLabels"]["pingpong.dev/role"] == component
                })
            });
            if admits {
                for port in rule["ports"].as_array().unwrap() {
                    admitted.push((server_component.to_owned(), port["port"].as_i64().unwrap()));
                }
            }
        }
    }
    assert!(!admitted.is_empty(), "{stack}: nothing admits {component}");
    if component == "pong" && EXTERNAL.contains(&stack) {
        assert_eq!(
            types,
            &["Ingress"],
            "{stack}: external servers leave egress open"
        );
        assert!(spec.get("egress").is_none(), "{stack}");
        return;
    }
    assert_eq!(types, &["Ingress", "Egress"], "{stack}: {component}");
    let mut allowed: Vec<(String, i64)> = Vec::new();
    let mut dns: Vec<(i64, String)> = Vec::new();
    for rule in spec["egress"].as_array().unwrap() {
        let ports = rule["ports"].as_array().unwrap();
        let Some(to) = rule["to"].as_array() else {
            for port in ports {
                let number = port["port"].as_i64().unwrap();
                assert!(
                    DNS.contains(&number),
                    "{stack}: {component} opens {number} to all"
                );
                dns.push((number, port["protocol"].as_str().unwrap().to_owned()));
            }
            continue;
        };
        for peer in to {
            assert!(peer.get("namespaceSelector").is_none(), "{stack}");
            let labels = as_map(&peer["podSelector"]["matchLabels"]);
            assert_eq!(
                labels["pingpong.dev/stack"],
                policy["metadata"]["labels"]["app.kubernetes.io/instance"]
                    .as_str()
                    .unwrap(),
                "{stack}"
            );
            assert_eq!(selected(objects, &labels).len(), 1, "{stack}: {labels:?}");
            for port in ports {
                allowed.push((
                    labels["pingpong.dev/role"].clone(),
                    port["port"].as_i64().unwrap(),
                ));
            }
        }
    }
    dns.sort();
    assert_eq!(
        dns,
        [53, 53, 5353, 5353]
            .into_iter()
            .zip(["TCP", "UDP", "TCP", "UDP"].map(String::from))
            .collect::<Vec<_>>(),
        "{stack}: {component}"
    );
    allowed.sort();
    admitted.sort();
    assert_eq!(
        allowed, admitted,
        "{stack}: {component} egress vs server ingress"
    );
}

/// The client port of each guarded server admits exactly the listed components of this stack.
fn check_policy(stack: &str, policy: &Value) {
    let component = policy["spec"]["podSelector"]["matchLabels"]["pingpong.dev/role"]
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
                assert_eq!(labels["pingpong.dev/stack"], instance, "{stack}");
                assert!(peer.get("namespaceSelector").is_none());
                labels["pingpong.dev/role"].as_str().unwrap()
            })
            .collect();
        assert_eq!(components, clients, "{stack}: {component}");
    }
    assert!(
        guarded,
        "{stack}: no rule for {component} port {client_port}"
    );
}
