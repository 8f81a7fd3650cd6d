//! The pong Deployment and Service (`<stack>-pong`, port 8002 behind Service port 80).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

use super::app::{AppParams, build_app_deployment, build_app_service};
use super::common::{PONG_PORT, env_value};
use crate::labels::Component;
use crate::reconcile::validate::ValidatedStack;

fn params(stack: &ValidatedStack) -> AppParams<'_> {
    AppParams {
        component: Component::Pong,
        name: &stack.names.pong,
        container: "pong",
        settings: &stack.pong,
        port: PONG_PORT,
        extra_env: vec![env_value(
            "PONG_MAX_MESSAGES",
            stack.pong_max_messages.to_string(),
        )],
        // The in-memory store allows a single consumer: replace the pod instead of running two
        // consumers side by side during a rollout.
        strategy: Some("Recreate"),
    }
}

/// The pong Deployment: `Recreate` rollouts (one in-memory consumer), restricted pods, probes
/// on /healthz and /readyz.
pub fn build_pong_deployment(stack: &ValidatedStack) -> Deployment {
    build_app_deployment(stack, &params(stack))
}

/// The pong Service.
pub fn build_pong_service(stack: &ValidatedStack) -> Service {
    build_app_service(stack, &params(stack))
}
