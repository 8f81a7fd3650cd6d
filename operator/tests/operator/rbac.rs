//! The installed RBAC grants exactly what the operator's code uses (`rbac::PERMISSIONS`).
//!
//! `manifests/install.yaml` is rendered from the Helm chart by `make generate`; its ClusterRole
//! (plus the leader-election Role) must grant every verb in the table, nothing else, and no
//! wildcard.

use pingpong_operator::rbac::PERMISSIONS;
use serde::Deserialize;
use std::collections::BTreeSet;

type Grant = (String, String, String);

fn granted_by_install_yaml() -> BTreeSet<Grant> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/install.yaml");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {path}: {e} (run `make generate`)"));
    let mut grants = BTreeSet::new();
    let mut roles = 0;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc).expect("install.yaml is valid YAML");
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        roles += 1;
        let rules = value
            .get("rules")
            .and_then(|r| r.as_sequence())
            .cloned()
            .unwrap_or_default();
        for rule in rules {
            let strings = |key: &str| -> Vec<String> {
                rule.get(key)
                    .and_then(|v| v.as_sequence())
                    .map(|s| {
                        s.iter()
                            .map(|v| v.as_str().expect("string").to_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            assert!(
                strings("nonResourceURLs").is_empty() && strings("resourceNames").is_empty(),
                "{kind}: unexpected rule shape {rule:?}"
            );
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        assert!(
                            group != "*" && resource != "*" && verb != "*",
                            "{kind} grants a wildcard: {group}/{resource} {verb}"
                        );
                        grants.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    assert!(roles > 0, "install.yaml has no ClusterRole or Role");
    grants
}

fn needed() -> BTreeSet<Grant> {
    PERMISSIONS
        .iter()
        .flat_map(|p| {
            p.verbs.iter().map(|v| {
                (
                    p.api_group.to_owned(),
                    p.resource.to_owned(),
                    (*v).to_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn install_yaml_grants_exactly_the_permissions_the_code_uses() {
    let granted = granted_by_install_yaml();
    let needed = needed();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "RBAC drift between operator/src/rbac.rs and the chart.\nmissing: {missing:#?}\nextra: {extra:#?}"
    );
}
