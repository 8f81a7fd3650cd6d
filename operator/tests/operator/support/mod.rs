//! Helpers shared by the test modules: fixtures and the desired state of a stack
//! ([`fixtures`]), the stacks the invariants run over ([`invariants`]), and the in-memory API
//! harness of the reconcile tests ([`api`]).

pub mod api;
pub mod fixtures;
pub mod invariants;
