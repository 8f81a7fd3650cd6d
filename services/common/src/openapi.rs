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
    /// `ok`, or `stalled` when a component is stuck.
    #[schema(example = "ok")]
    pub status: String,
    /// The stuck components (only when stalled): `broker`, the connection
    /// manager past its own bounded waits.
    pub failing: Option<Vec<String>>,
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

/// `GET /healthz`: the process is alive and makes progress.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The process is alive", body = Health),
        (status = 503, description = "A component is stuck past its own bounded waits (the broker connection manager): restart the process", body = Health),
    )
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

/// Adds what the router answers on every documented path to each of its
/// operations: 405 `{"error": ...}` with `Allow` for a method the path does
/// not serve (the document lists the methods it does), so a client checking
/// answers against the document finds every status it can get there.
/// Paths the document does not list answer 404 with the same body (see each
/// document's description).
#[derive(Debug, Clone, Copy, Default)]
pub struct RouterAnswers;

impl utoipa::Modify for RouterAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, Type};

        for item in doc.paths.paths.values_mut() {
            let mut allow: Vec<&str> = Vec::new();
            if item.get.is_some() {
                // axum answers HEAD for every GET route.
                allow.extend(["GET", "HEAD"]);
            }
            if item.post.is_some() {
                allow.push("POST");
            }
            let allow = allow.join(",");
            let response = ResponseBuilder::new()
                .description("The path does not serve this method")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .header(
                    "Allow",
                    HeaderBuilder::new()
                        .schema(Some(
                            utoipa::openapi::ObjectBuilder::new().schema_type(Type::String),
                        ))
                        .description(Some(format!("the methods the path serves: `{allow}`")))
                        .build(),
                )
                .build();
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                operation
                    .responses
                    .responses
                    .entry("405".to_owned())
                    .or_insert_with(|| response.clone().into());
            }
        }
    }
}
