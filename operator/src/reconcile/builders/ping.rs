//! The ping Deployment and Service (`<stack>-ping`, port 8001 behind Service port 80).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

use super::app::{AppParams, build_app_deployment, build_app_service};
use super::common::PING_PORT;
use crate::labels::Component;
use crate::reconcile::validate::ValidatedStack;

fn params(stack: &ValidatedStack) -> AppParams<'_> {
    AppParams {
        component: Component::Ping,
        name: &stack.names.ping,
        container: "ping",
        settings: &stack.ping,
        port: PING_PORT,
        extra_env: Vec::new(),
        extra_files: Vec::new(),
        strategy: None,
    }
}

/// The ping Deployment: rolling updates, restricted pods, probes on /healthz and /readyz.
pub fn build_ping_deployment(stack: &ValidatedStack) -> Deployment {
    build_app_deployment(stack, &params(stack))
}

/// The ping Service.
pub fn build_ping_service(stack: &ValidatedStack) -> Service {
    build_app_service(stack, &params(stack))
}
