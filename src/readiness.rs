//! What `/readyz` waits for.
//!
//! A leaf: the parts of the gateway that must finish something before it
//! takes traffic (a trusted issuer's first JWKS fetch) register a named
//! condition here at start-up and clear it when met; the admin listener
//! reads the set. Nothing here knows who waits or who answers.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// A set of named conditions, shared by clones.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    pending: Arc<Mutex<BTreeSet<String>>>,
}

impl Readiness {
    /// Adds a condition that must be met before the gateway is ready.
    pub fn wait_for(&self, what: impl Into<String>) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(what.into());
        }
    }

    /// Marks a condition as met.
    pub fn done(&self, what: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(what);
        }
    }

    /// The conditions not met yet; empty when ready.
    pub fn waiting_for(&self) -> Vec<String> {
        self.pending
            .lock()
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_else(|_| vec!["readiness state".into()])
    }
}
