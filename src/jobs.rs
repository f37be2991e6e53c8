//! Long-running jobs of the daemon (backups, migrations), as `ctl status` lists them.
//! A job registers a reporter; the registry asks it for its state when asked itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Something a job shows of itself.
pub trait JobReport: Send + Sync {
    /// `{"id", "kind", "state", ...}`: free-form beyond those three.
    fn report(&self) -> Value;
    /// A finished job drops out of the list.
    fn finished(&self) -> bool;
}

#[derive(Default)]
pub struct Jobs {
    running: Mutex<BTreeMap<String, Arc<dyn JobReport>>>,
}

impl Jobs {
    pub fn add(&self, id: String, job: Arc<dyn JobReport>) {
        self.lock().insert(id, job);
    }

    /// The jobs not finished yet, oldest id first.
    pub fn list(&self) -> Vec<Value> {
        let mut running = self.lock();
        running.retain(|_, j| !j.finished());
        running.values().map(|j| j.report()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<dyn JobReport>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}
