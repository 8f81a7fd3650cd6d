//! pingpong-operator: reconciles a `PingPongStack` custom resource into a running ping/pong stack
//! over RabbitMQ.
//!
//! The pipeline is validate → observe → build → apply → report; [`reconcile`]'s module is the
//! driver that runs it. `main.rs` only parses the command line and calls into this library.

pub mod apis;
pub mod autoscale;
pub mod broker_check;
pub mod cli;
pub mod config;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod credentials;
pub mod error;
pub mod images;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod reconcile;
pub mod render;
pub mod server;
pub mod telemetry;
