//! The operator's integration tests, one binary: builders and goldens, the generated CRD, RBAC,
//! leader election, and reconciles against an in-memory API. Shared helpers live in
//! [`support`]; fixtures and goldens are data files beside this directory.
//!
//! Goldens are regenerated only with
//! `UPDATE_GOLDEN=1 cargo test -p pingpong-operator --test operator goldens`.

// Helpers outside #[test] fns panic on purpose: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod builders;
mod builders_alerts;
mod builders_definitions;
mod builders_invariants;
mod builders_keda;
mod builders_security;
mod builders_store;
mod crd_schema;
mod leader;
mod migrate;
mod ownership;
mod rbac;
mod reconcile;
mod reconcile_errors;
mod reconcile_store;
mod start;
mod support;
mod upgrade;
