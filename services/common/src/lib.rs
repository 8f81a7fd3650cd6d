//! Shared building blocks of the ping and pong services.
//!
//! This crate owns what both services need and nothing service-specific:
//! configuration parsing ([`config`]) and settings read from files
//! ([`credential`]), logging ([`telemetry`]), the Prometheus
//! registry helpers and HTTP metrics middleware ([`metrics`]), the AMQP
//! connection manager with failover ([`amqp`]), broker node addresses
//! ([`address`]), the shared queues and their arguments ([`topology`]), the
//! wire message ([`message`]), the HTTP error type, JSON extractor, health
//! handlers and shutdown signal ([`http`]), the HTTP/1.1 server with its
//! connection limits ([`server`]) and the OpenAPI pieces both services
//! document ([`openapi`]), the trace context on HTTP and AMQP headers
//! ([`trace`]) and the choice of tokio runtime ([`runtime`]).

pub mod address;
pub mod amqp;
pub mod config;
pub mod credential;
pub mod http;
pub mod message;
pub mod metrics;
pub mod openapi;
pub mod queue;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topology;
pub mod trace;

pub use address::{BrokerAddress, BrokerAddresses};
pub use config::{
    AmqpConfig, ConfigError, Env, LogConfig, LogFormat, Partitions, QueueName, Secret,
};
pub use credential::{Setting, SettingFile, SettingFileError};
pub use message::Message;
pub use topology::QueueType;
