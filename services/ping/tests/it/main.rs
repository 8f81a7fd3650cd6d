//! ping's integration tests, one binary: handlers with a fake publisher
//! ([`handlers`]) and the real publisher against RabbitMQ ([`broker`]);
//! [`support`] holds what they share. Without a broker the broker tests are
//! skipped with a notice, or FAIL when `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker;
mod handlers;
mod support;
