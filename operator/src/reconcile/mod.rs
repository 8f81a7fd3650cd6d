//! The reconcile driver: observe → plan → apply → report.

pub mod apply;
pub mod build;
pub mod events;
pub mod observe;
pub mod status;
pub mod validate;
