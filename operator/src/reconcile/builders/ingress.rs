//! The Ingress `<stack>`: `/ping` and `/pong` (Prefix) to the ping and pong Services.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::common::{HTTP_PORT_NAME, object_meta};
use crate::labels::Component;
use crate::reconcile::validate::ValidatedStack;

fn path(prefix: &str, service: &str) -> HTTPIngressPath {
    HTTPIngressPath {
        path: Some(prefix.to_owned()),
        path_type: "Prefix".to_owned(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: service.to_owned(),
                port: Some(ServiceBackendPort {
                    name: Some(HTTP_PORT_NAME.to_owned()),
                    number: None,
                }),
            }),
            resource: None,
        },
    }
}

/// The Ingress, when the stack gets one (see `ValidatedStack::ingress`).
pub fn build_ingress(stack: &ValidatedStack) -> Option<Ingress> {
    let settings = stack.ingress.as_ref()?;
    Some(Ingress {
        metadata: object_meta(stack, &stack.names.route, Component::Gateway),
        spec: Some(IngressSpec {
            ingress_class_name: settings.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: settings.host.clone(),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![
                        path("/ping", &stack.names.ping),
                        path("/pong", &stack.names.pong),
                    ],
                }),
            }]),
            tls: settings.tls_secret.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: settings.host.clone().map(|host| vec![host]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    })
}
