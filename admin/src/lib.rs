//! Berth's admin sidecar (`berth-admin`), the control plane beside a node:
//!
//! - `sync`: follows the node's change feed into Postgres (exactly-once effect per batch);
//! - `db`: schema migrations, change application, full resync and the node ↔ Postgres check;
//! - `jobs` / `scheduler`: GC runs on the node, manual (admin API) or by cron schedule, with
//!   their reports kept in Postgres;
//! - `scan`: vulnerability scanning through a Trivy server (queue, workers, results, referrers,
//!   webhooks);
//! - `api`: the admin HTTP API (JSON, bearer token), documented in `docs/ADMIN_API.md`.
//!
//! A separate binary, not a `berth` subcommand: the sidecar's dependencies (Postgres client,
//! HTTP framework, cron) are never needed by the storage node, so they stay out of its binary
//! and its attack surface; both are built from this workspace and share the node's types
//! (`berth_internal_api`: feed records, GC types, the client) as a library, and talk over the node's
//! internal API. GC itself runs inside the node, whose index is the authority.
//!
//! Layering: `api` and `scheduler` → `jobs`, `db`, `node`; `sync` → `db`, `node`.

pub mod api;
pub mod audit;
pub mod config;
pub mod db;
pub mod jobs;
pub mod node;
pub mod scan;
pub mod scheduler;
pub mod sync;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use config::AdminConfig;
use node::NodeClient;
use sync::SyncView;

/// Shared sidecar state.
pub struct Sidecar {
    /// Configuration.
    pub cfg: AdminConfig,
    /// The node's internal API.
    pub node: NodeClient,
    sync: Mutex<SyncView>,
    next_gc_ms: AtomicU64,
    scan: Mutex<scan::ScanView>,
    /// Poked when scan jobs may have been queued (feed batches, API calls).
    pub scan_wake: tokio::sync::Notify,
    /// Poked when webhook deliveries were queued.
    pub webhook_wake: tokio::sync::Notify,
}

impl Sidecar {
    /// Build from configuration (resolving the node's internal API address and token).
    pub fn new(cfg: AdminConfig) -> anyhow::Result<Sidecar> {
        let target = berth_internal_api::InternalClient::resolve(
            &cfg.node_data_dir,
            cfg.node_url.clone(),
            cfg.node_token.clone(),
        )
        .map_err(|e| {
            anyhow::anyhow!("{e}; set node_data_dir (BERTH_ADMIN_NODE_DATA_DIR), or node_url and node_token")
        })?;
        let target = match &cfg.node_ca {
            Some(ca) => target.with_ca(ca).map_err(|e| anyhow::anyhow!("node_ca: {e}"))?,
            None => target,
        };
        Ok(Sidecar {
            node: NodeClient::from(target),
            cfg,
            sync: Mutex::new(SyncView { state: "idle", ..Default::default() }),
            next_gc_ms: AtomicU64::new(0),
            scan: Mutex::new(scan::ScanView::default()),
            scan_wake: tokio::sync::Notify::new(),
            webhook_wake: tokio::sync::Notify::new(),
        })
    }

    /// Update the follower's view.
    pub fn update_sync(&self, f: impl FnOnce(&mut SyncView)) {
        f(&mut self.sync.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The follower's view.
    pub fn sync_view(&self) -> SyncView {
        self.sync.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Update the scan workers' view.
    pub fn update_scan(&self, f: impl FnOnce(&mut scan::ScanView)) {
        f(&mut self.scan.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The scan workers' view.
    pub fn scan_view(&self) -> scan::ScanView {
        self.scan.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_next_gc(&self, ms: u64) {
        self.next_gc_ms.store(ms, Ordering::Relaxed);
    }

    /// Next scheduled GC (unix ms; 0 none).
    pub fn next_gc_ms(&self) -> u64 {
        self.next_gc_ms.load(Ordering::Relaxed)
    }
}
