//! The sources of pong's readiness: each component reports its own state
//! (the broker link, the consumer's [`Flag`], the store's
//! [`crate::MessageStore::is_ready`]) and `/readyz` asks them. The
//! `*_connected`/`*_running`/`*_ready` gauges only mirror these states for
//! dashboards; nothing reads a gauge to decide readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pingpong_common::amqp::BrokerLink;

/// Something `/readyz` can ask whether it is up.
pub trait Probe: Send + Sync {
    /// Whether the component currently works.
    fn is_up(&self) -> bool;

    /// Whether the component is stuck and only a restart helps (for
    /// `/healthz`). A component that cannot get stuck never is.
    fn is_stalled(&self) -> bool {
        false
    }
}

/// A shared up/down flag, set by the component that owns it (the consumer)
/// and read by `/readyz`. Clones share the state; a new flag is down.
#[derive(Debug, Clone, Default)]
pub struct Flag(Arc<AtomicBool>);

impl Flag {
    /// Sets the state.
    pub fn set(&self, up: bool) {
        self.0.store(up, Ordering::SeqCst);
    }

    /// The current state.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Probe for Flag {
    fn is_up(&self) -> bool {
        self.get()
    }
}

/// Up when every one of its flags is (the consumers of all partitions).
/// Clones share the flags.
#[derive(Debug, Clone)]
pub struct AllUp(Arc<[Flag]>);

impl AllUp {
    /// A probe over `flags`; without flags it is never up.
    pub fn new(flags: Vec<Flag>) -> Self {
        Self(flags.into())
    }

    /// Whether every flag is up (and there is at least one).
    pub fn all_up(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(Flag::get)
    }
}

impl Probe for AllUp {
    fn is_up(&self) -> bool {
        self.all_up()
    }
}

impl Probe for BrokerLink {
    fn is_up(&self) -> bool {
        self.is_connected()
    }

    fn is_stalled(&self) -> bool {
        BrokerLink::is_stalled(self)
    }
}
