//! At most N stacks roll to new default images at a time, across the cluster.
//!
//! A stack "rolls an upgrade" when an apply would change a component from one operator default
//! image to another (an operator upgrade under `upgradePolicy: Automatic`, or a switch to it),
//! or when it migrates its workloads to the unique selectors ([`super::migrate`]: the broker and
//! the database restart); a user's own image change never waits. Such a stack first asks the [`UpgradeGate`]: under
//! its lock (the leader is the only writer) it lists the stacks and counts those whose
//! `Upgrading` condition is True; below the operator's `PINGPONG_MAX_CONCURRENT_UPGRADES` it may
//! roll (and holds the lock until its status says `Upgrading`), else it keeps its recorded
//! images and says it waits. `Upgrading` turns False when the stack is Ready again, which frees
//! the slot. The pure parts ([`rolls_defaults`], [`is_upgrading`]) decide; [`UpgradeGate::admit`]
//! does the one list.

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::sync::{Mutex, MutexGuard};

use super::status::{condition_type, is_true};
use super::validate::{self, ValidatedStack};
use crate::crd::{ComponentImages, ImageSource, PingPongStack, UpgradePolicy};
use crate::error::Error;
use crate::images::Images;

/// Default of `PINGPONG_MAX_CONCURRENT_UPGRADES`.
pub const DEFAULT_MAX_CONCURRENT_UPGRADES: usize = 2;

/// Whether applying `next` changes a component from one operator default to another
/// (`recorded`: the images applied before; nothing recorded is a first apply, not an upgrade).
pub fn rolls_defaults(recorded: Option<&ComponentImages>, next: &ComponentImages) -> bool {
    let Some(recorded) = recorded else {
        return false;
    };
    let before = recorded.all();
    next.all().into_iter().any(|(component, image)| {
        image.source == ImageSource::OperatorDefault
            && before.iter().any(|(c, old)| {
                *c == component
                    && old.source == ImageSource::OperatorDefault
                    && old.image != image.image
            })
    })
}

/// Whether `stack`'s status says it is rolling new default images.
pub fn is_upgrading(stack: &PingPongStack) -> bool {
    stack
        .status
        .as_ref()
        .is_some_and(|s| is_true(&s.conditions, condition_type::UPGRADING))
}

/// The cluster-wide limit on stacks rolling new default images at once.
#[derive(Debug)]
pub struct UpgradeGate {
    max: usize,
    namespace: Option<String>,
    lock: Mutex<()>,
}

impl Default for UpgradeGate {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_CONCURRENT_UPGRADES, None)
    }
}

/// The answer of [`UpgradeGate::admit`].
pub enum Admission<'a> {
    /// Roll now; hold this until the stack's status says `Upgrading`.
    Admitted(MutexGuard<'a, ()>),
    /// Keep the recorded images; the message says why.
    Wait(String),
}

impl UpgradeGate {
    /// At most `max` stacks at a time, counted among the stacks of `namespace` (all: `None`).
    pub fn new(max: usize, namespace: Option<String>) -> Self {
        Self {
            max,
            namespace,
            lock: Mutex::new(()),
        }
    }

    /// Whether `stack` may start rolling now.
    pub async fn admit(
        &self,
        client: &Client,
        stack: &PingPongStack,
    ) -> Result<Admission<'_>, Error> {
        let guard = self.lock.lock().await;
        let api: Api<PingPongStack> = match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let stacks = api
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::List {
                kind: "PingPongStack",
                source,
            })?;
        let key = |s: &PingPongStack| (s.namespace(), s.name_any());
        let rolling: Vec<String> = stacks
            .items
            .iter()
            .filter(|s| key(s) != key(stack) && is_upgrading(s))
            .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
            .collect();
        if rolling.len() < self.max {
            return Ok(Admission::Admitted(guard));
        }
        Ok(Admission::Wait(format!(
            "waiting to roll (new default images or the selector migration): {} stacks are \
             rolling ({}), at most {} at a time (the operator's maxConcurrentUpgrades)",
            rolling.len(),
            rolling.join(", "),
            self.max
        )))
    }
}

/// A validated stack after the gate: what to apply, and its upgrade's state for status.
pub struct Gated<'a> {
    /// What to apply: the stack as validated, or with its recorded images while it waits.
    pub validated: ValidatedStack,
    /// The stack is rolling to new default images (`Upgrading`).
    pub upgrading: bool,
    /// Why it keeps its recorded images (`UpgradeAvailable`, `WaitingForUpgradeSlot`).
    pub waiting: Option<String>,
    /// Held until the status says `Upgrading`, so no other stack counts before it does.
    pub slot: Option<MutexGuard<'a, ()>>,
}

/// Lets `validated` (of `stack`, with the operator's `defaults`) roll to new default images, or
/// migrate its selectors (`selector_migration`: it needs to and opted in), only when the gate
/// has a slot; otherwise validates it again with its recorded images kept (and `upgrading`
/// false keeps its selectors).
pub async fn gate<'a>(
    gate: &'a UpgradeGate,
    client: &Client,
    stack: &PingPongStack,
    validated: ValidatedStack,
    defaults: &Images,
    selector_migration: bool,
) -> Result<Gated<'a>, Error> {
    let pass = |validated, upgrading| Gated {
        validated,
        upgrading,
        waiting: None,
        slot: None,
    };
    if validated.paused || is_upgrading(stack) {
        return Ok(pass(validated, is_upgrading(stack)));
    }
    let recorded = stack.status.as_ref().and_then(|s| s.images.as_ref());
    if !rolls_defaults(recorded, &validated.images) && !selector_migration {
        return Ok(pass(validated, false));
    }
    match gate.admit(client, stack).await? {
        Admission::Admitted(slot) => Ok(Gated {
            slot: Some(slot),
            ..pass(validated, true)
        }),
        Admission::Wait(message) => {
            let mut held = stack.clone();
            held.spec.upgrade_policy = UpgradePolicy::Manual;
            // The same spec with the images it validated with before: it validates again (if it
            // did not, rolling is the only thing left to do).
            let kept = validate::validate(&held, defaults).unwrap_or(validated);
            Ok(Gated {
                waiting: Some(message),
                ..pass(kept, false)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ResolvedImage;

    fn image(image: &str, source: ImageSource) -> ResolvedImage {
        ResolvedImage {
            image: image.to_owned(),
            source,
            available: None,
        }
    }

    fn images(rabbitmq: ResolvedImage) -> ComponentImages {
        ComponentImages {
            ping: image("ping:1", ImageSource::OperatorDefault),
            pong: image("pong:1", ImageSource::OperatorDefault),
            rabbitmq,
            ..ComponentImages::default()
        }
    }

    #[test]
    fn only_a_default_to_default_change_is_an_upgrade() {
        let old = images(image("rabbitmq:4.2", ImageSource::OperatorDefault));
        let new = images(image("rabbitmq:4.3", ImageSource::OperatorDefault));
        assert!(rolls_defaults(Some(&old), &new));
        assert!(!rolls_defaults(Some(&old), &old));
        assert!(!rolls_defaults(None, &new));
        // The user's own image, set or removed, never waits.
        let spec = images(image("rabbitmq:3.13", ImageSource::Spec));
        assert!(!rolls_defaults(Some(&old), &spec));
        assert!(!rolls_defaults(Some(&spec), &new));
    }
}
