//! Named background workers and their state, for logs, metrics and the admin API.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Waiting for work.
    Idle,
    /// Working.
    Busy,
    /// Waiting after a failure before retrying.
    Backoff,
}

/// One worker's status.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    /// Name (`tier-upload`, `tier-evict`, `tier-mirror`, …).
    pub name: &'static str,
    /// State.
    pub state: WorkerState,
    /// Last time it finished a round of work (unix ms), 0 before the first.
    pub last_run_ms: u64,
    /// Last error, cleared by the next success.
    pub last_error: Option<String>,
    /// Work waiting (blobs, changes, bytes: the worker says which in `backlog_unit`).
    pub backlog: u64,
    /// What `backlog` counts.
    pub backlog_unit: &'static str,
}

/// The registry of workers.
#[derive(Default)]
pub struct Workers {
    map: Mutex<BTreeMap<&'static str, WorkerStatus>>,
}

impl Workers {
    /// Update (or create) a worker's entry.
    pub fn update(&self, name: &'static str, f: impl FnOnce(&mut WorkerStatus)) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(name).or_insert(WorkerStatus {
            name,
            state: WorkerState::Idle,
            last_run_ms: 0,
            last_error: None,
            backlog: 0,
            backlog_unit: "",
        });
        f(e);
    }

    /// Snapshot of every worker.
    pub fn list(&self) -> Vec<WorkerStatus> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}
