//! The state every core shares: configuration, index, stores, auth and metrics.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use berth_index::Index;

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{BlobStore, Uploads};

/// Shared node state. Built once at start; every core holds an `Arc` of it.
pub struct App {
    /// Configuration in force.
    pub cfg: Config,
    /// The index.
    pub index: Arc<Index>,
    /// Blob files.
    pub blobs: Arc<BlobStore>,
    /// Upload sessions.
    pub uploads: Uploads,
    /// Authentication, when configured.
    pub auth: Option<Auth>,
    /// Metrics.
    pub metrics: Metrics,
    /// Set when shutdown starts: stop accepting, close connections after their request.
    pub shutting_down: AtomicBool,
    /// Requests being handled right now, over all cores.
    pub in_flight: AtomicUsize,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Filesystem.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// Index.
    #[error("index: {0}")]
    Index(#[from] berth_index::IndexError),
}

impl App {
    /// Open the data directory and build the shared state.
    pub fn open(cfg: Config) -> Result<App, StartError> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let blobs = Arc::new(BlobStore::open(&cfg.data_dir)?);
        let index = Arc::new(Index::open(&cfg.data_dir.join("index"), cfg.storage.sync_index)?);
        let uploads = Uploads::new(
            index.clone(),
            blobs.clone(),
            cfg.uploads.expire_after_secs,
            cfg.uploads.max_sessions_per_repo,
            cfg.limits.max_blob_bytes,
        );
        let auth = Auth::from_config(&cfg.auth)?;
        Ok(App {
            cfg,
            index,
            blobs,
            uploads,
            auth,
            metrics: Metrics::new(),
            shutting_down: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        })
    }
}
