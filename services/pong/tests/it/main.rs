//! pong's integration tests, one binary: handlers and the OpenAPI document
//! without a broker ([`handlers`]), configuration properties ([`config`]),
//! the consumer against RabbitMQ ([`broker`]), the memory store's byte bound
//! in the real binary ([`memory_bound`]), the PostgreSQL store
//! ([`postgres`]), the Redis cache ([`cache`]) and `pong::run` end to end
//! ([`run`]); [`support`] holds what they share. A missing server skips a
//! test with a notice, or FAILS it when `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker;
mod cache;
mod config;
mod handlers;
mod memory_bound;
mod postgres;
mod run;
mod support;
