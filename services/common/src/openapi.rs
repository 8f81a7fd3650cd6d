//! What the OpenAPI documents of both services share: the schemas of the
//! health and readiness answers and the `GET /healthz`, `GET /metrics` and
//! `GET /openapi.json` operations. Each service lists these paths next to
//! its own in its `#[derive(utoipa::OpenApi)]` document; the error body is
//! [`crate::http::ErrorBody`]. Nothing here serves or routes anything.

use serde::Serialize;
use utoipa::ToSchema;

/// Body of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// Body of `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    #[schema(example = "ready")]
    pub status: String,
    /// The checks that fail (only when not ready).
    pub failing: Option<Vec<String>>,
    /// 0-based position in `RABBITMQ_ADDRESSES` of the broker node in use
    /// (only while connected).
    pub broker_address: Option<u32>,
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is alive", body = Health))
)]
pub fn healthz_doc() {}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"))
)]
pub fn metrics_doc() {}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object, content_type = "application/json"))
)]
pub fn openapi_doc() {}
