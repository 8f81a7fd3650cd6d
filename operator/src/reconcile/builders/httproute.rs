//! The Gateway API HTTPRoute `<stack>` (gateway.networking.k8s.io/v1): `/ping` and `/pong`
//! (PathPrefix) to the ping and pong Services, attached to the Gateway in `spec.gateway` or the
//! operator's default Gateway.
//!
//! k8s-openapi has no Gateway API types, so the route is built from the small typed structs
//! below and carried as a [`DynamicObject`] with the right apiVersion and kind.

use kube::api::{DynamicObject, TypeMeta};
use serde::Serialize;

use super::common::{HTTP_SERVICE_PORT, object_meta};
use crate::apis::{GATEWAY_GROUP, OptionalApi};
use crate::labels::Component;
use crate::reconcile::validate::ValidatedStack;

/// `HTTPRoute.spec`, the subset the operator sets.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpRouteSpec {
    parent_refs: Vec<ParentRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hostnames: Vec<String>,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ParentRef {
    group: &'static str,
    kind: &'static str,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    section_name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    matches: Vec<Match>,
    backend_refs: Vec<BackendRef>,
}

#[derive(Serialize)]
struct Match {
    path: PathMatch,
}

#[derive(Serialize)]
struct PathMatch {
    #[serde(rename = "type")]
    type_: &'static str,
    value: &'static str,
}

#[derive(Serialize)]
struct BackendRef {
    name: String,
    port: i32,
}

fn rule(prefix: &'static str, service: &str) -> Rule {
    Rule {
        matches: vec![Match {
            path: PathMatch {
                type_: "PathPrefix",
                value: prefix,
            },
        }],
        backend_refs: vec![BackendRef {
            name: service.to_owned(),
            port: HTTP_SERVICE_PORT,
        }],
    }
}

/// The HTTPRoute, when the stack has a Gateway (its own or the operator's default).
pub fn build_http_route(stack: &ValidatedStack) -> Option<DynamicObject> {
    let gateway = stack.gateway.as_ref()?;
    let spec = HttpRouteSpec {
        parent_refs: vec![ParentRef {
            group: GATEWAY_GROUP,
            kind: "Gateway",
            name: gateway.parent_ref.name.clone(),
            namespace: gateway.parent_ref.namespace.clone(),
            section_name: gateway.parent_ref.section_name.clone(),
        }],
        hostnames: gateway.hostname.iter().cloned().collect(),
        rules: vec![
            rule("/ping", &stack.names.ping),
            rule("/pong", &stack.names.pong),
        ],
    };
    let resource = OptionalApi::HttpRoute.resource();
    Some(DynamicObject {
        types: Some(TypeMeta {
            api_version: resource.api_version,
            kind: resource.kind,
        }),
        metadata: object_meta(stack, &stack.names.route, Component::Gateway),
        data: serde_json::json!({ "spec": spec }),
    })
}
