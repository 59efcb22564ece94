//! The state every core shares: configuration, index, stores, auth and metrics.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use berth_index::Index;

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{BlobStore, Uploads};
use berth_tiering::Tiering;

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
    /// The S3 tier, when `storage.s3` is configured.
    pub tier: Option<Arc<Tiering>>,
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
    /// Rebuilding the index from the bucket failed.
    #[error("rebuild from S3: {0}")]
    Rebuild(String),
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
        let mut metrics = Metrics::new();
        let tier = match &cfg.storage.s3 {
            None => None,
            Some(s3) => {
                let local: Arc<dyn berth_tiering::LocalBlobs> = blobs.clone();
                let tier = Tiering::new(s3.clone(), cfg.cache.clone(), index.clone(), local)?;
                if s3.rebuild_on_empty_index && index.next_sequence() == 1 {
                    let report = crate::rebuild::from_bucket(&index, &tier).map_err(StartError::Rebuild)?;
                    if !report.is_empty() {
                        tracing::warn!(%report, "index was empty: rebuilt it from the bucket");
                    }
                }
                tier.metrics.register(metrics.registry_mut());
                tier.start_workers();
                Some(tier)
            }
        };
        Ok(App {
            cfg,
            index,
            blobs,
            uploads,
            auth,
            metrics,
            tier,
            shutting_down: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        })
    }
}
