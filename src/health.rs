//! Readiness: which started components are ready, and whether we are draining.
//!
//! Each component registers itself when it is spawned and flips its handle once it
//! can do its job. `/readyz` is green only when every registered component is ready
//! and no shutdown has begun. This module knows nothing of HTTP.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// What one component says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum ComponentState {
    Starting,
    Ready,
    NotReady(String),
}

#[derive(Debug, Default)]
struct Inner {
    components: Mutex<BTreeMap<&'static str, ComponentState>>,
    draining: AtomicBool,
}

/// Shared by the wiring (which registers components and starts the drain) and the
/// HTTP server (which reports it).
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

/// A snapshot of readiness, as `/readyz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ready: bool,
    pub draining: bool,
    pub components: BTreeMap<&'static str, ComponentState>,
}

impl Readiness {
    /// Adds a component in the `starting` state.
    pub fn register(&self, name: &'static str) -> ComponentHandle {
        self.set(name, ComponentState::Starting);
        ComponentHandle {
            name,
            readiness: self.clone(),
        }
    }

    /// From now on the process reports not ready, whatever its components say.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn report(&self) -> Report {
        let components = self
            .inner
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let draining = self.inner.draining.load(Ordering::SeqCst);
        let ready = !draining
            && !components.is_empty()
            && components.values().all(|s| *s == ComponentState::Ready);
        Report {
            ready,
            draining,
            components,
        }
    }

    fn set(&self, name: &'static str, state: ComponentState) {
        self.inner
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, state);
    }
}

/// A component's way to say how it is.
#[derive(Debug, Clone)]
pub struct ComponentHandle {
    name: &'static str,
    readiness: Readiness,
}

impl ComponentHandle {
    pub fn ready(&self) {
        self.readiness.set(self.name, ComponentState::Ready);
    }

    pub fn not_ready(&self, reason: impl Into<String>) {
        self.readiness
            .set(self.name, ComponentState::NotReady(reason.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is_and_not_draining() {
        let readiness = Readiness::default();
        assert!(!readiness.report().ready, "nothing registered yet");
        let http = readiness.register("http");
        let db = readiness.register("database");
        http.ready();
        assert!(!readiness.report().ready);
        db.not_ready("connection refused");
        assert!(!readiness.report().ready);
        db.ready();
        assert!(readiness.report().ready);
        readiness.start_draining();
        let report = readiness.report();
        assert!(!report.ready && report.draining);
    }
}
