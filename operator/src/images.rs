//! Default container images, stated in this one place.
//!
//! ping and pong are tagged with the operator's own crate version, so an operator release runs
//! the services of the same release. The three service images can be replaced per process
//! (`PINGPONG_*_IMAGE`, read by [`crate::config`]) and per stack (`spec.*.image`); the images of
//! a provisioned PostgreSQL, Redis and the exporter sidecar only per stack (or not at all).

/// Default ping image.
pub const PING: &str = concat!("ghcr.io/pingpong-operator/ping:", env!("CARGO_PKG_VERSION"));
/// Default pong image.
pub const PONG: &str = concat!("ghcr.io/pingpong-operator/pong:", env!("CARGO_PKG_VERSION"));
/// Default RabbitMQ image.
pub const RABBITMQ: &str = "rabbitmq:4.2-management";
/// Default image of a provisioned PostgreSQL.
pub const POSTGRES: &str = "postgres:17";
/// Default image of a provisioned Redis.
pub const REDIS: &str = "redis:7.4";
/// Image of the postgres-exporter sidecar (pinned).
pub const POSTGRES_EXPORTER: &str = "quay.io/prometheuscommunity/postgres-exporter:v0.17.1";

/// The images a stack gets when it does not name its own: the defaults above, or the operator's
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// Image of the ping service (`PINGPONG_PING_IMAGE`).
    pub ping: String,
    /// Image of the pong service (`PINGPONG_PONG_IMAGE`).
    pub pong: String,
    /// Image of the RabbitMQ broker (`PINGPONG_RABBITMQ_IMAGE`).
    pub rabbitmq: String,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            ping: PING.to_owned(),
            pong: PONG.to_owned(),
            rabbitmq: RABBITMQ.to_owned(),
        }
    }
}
