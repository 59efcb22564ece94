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
    pub auth: Option<Arc<Auth>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Set when shutdown starts: stop accepting, close connections after their request.
    pub shutting_down: AtomicBool,
    /// Requests being handled right now, over all cores.
    pub in_flight: AtomicUsize,
    /// The S3 tier, when `storage.s3` is configured.
    pub tier: Option<Arc<Tiering>>,
    /// Garbage-collection jobs.
    pub gc: Arc<crate::gc::GcJobs>,
    /// Bearer token of the internal API.
    pub internal_token: String,
    /// Signalled with the feed head after writes, for long-polling feed readers.
    pub feed_notify: tokio::sync::watch::Sender<u64>,
    /// When upload expiry last ran (unix ms).
    pub expiry_last_run_ms: std::sync::atomic::AtomicU64,
    /// Scan records and the pull policy, when `[scan] enabled`.
    pub scans: Option<Arc<crate::scan::ScanBook>>,
    /// Open-connection caps (public listener).
    pub admission: Arc<crate::admission::Admission>,
    /// TLS on the public listener, when `[tls]` is set.
    pub tls: Option<crate::http::tls::Acceptor>,
    /// Blob files each core keeps open (`store::open_files`).
    pub open_files_per_core: usize,
    /// The pull-through cache, when `[[proxy.upstreams]]` are configured.
    pub pull_through: Option<crate::pull_through::PullThrough>,
    /// Scale-out membership, when `[cluster]` is configured.
    pub cluster: Option<Arc<crate::cluster::ClusterNode>>,
}

/// The internal API token: configured, or generated once and kept in the data directory
/// (mode 0600, written through a temp file of its own, so a stale or foreign temp file can
/// neither widen its mode nor be swapped in).
fn internal_token(cfg: &Config) -> std::io::Result<String> {
    if let Some(t) = &cfg.internal.token {
        return Ok(t.clone());
    }
    let path = cfg.data_dir.join("internal.token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            restrict_mode(&path, 0o600)?;
            return Ok(t.trim().to_string());
        }
        _ => {}
    }
    let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    write_private(&path, token.as_bytes())?;
    Ok(token)
}

/// Write `data` to `path` atomically with mode 0600: a fresh temp file (`create_new`, never an
/// existing one), fsync, rename, fsync the directory.
pub(crate) fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let written = f.write_all(data).and_then(|()| f.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
}

/// Narrow a file's or directory's mode to `mode` if it is wider (saying so).
fn restrict_mode(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        tracing::warn!(path = %path.display(), was = format!("{current:o}"), now = format!("{mode:o}"), "narrowed permissions");
    }
    Ok(())
}

/// The data directory is the node's alone: created 0700 (and narrowed to 0700 if an older
/// version left it open), so other local users cannot read blobs, the index or the token.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    // An empty directory (a fresh container volume, made 0755 by its runtime) is narrowed
    // quietly: there is nothing in it anyone could have read.
    if std::fs::read_dir(dir)?.next().is_none() {
        return std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    restrict_mode(dir, 0o700)
}

/// Keep the registry state a rebuild needs beside the content in the bucket: managed accounts
/// on every change (and now), scan records as they are stored (`api/internal/scans.rs`), and
/// once, the records stored before this was built. (In a cluster the change log holds them.)
fn keep_state_in_bucket(tier: &Arc<Tiering>, index: &Arc<Index>, auth: Option<&Auth>) {
    if let Some(a) = auth {
        let t = tier.clone();
        a.managed.set_on_store(Box::new(move |bytes| t.put_state("accounts.json", bytes.to_vec())));
    }
    const SYNCED: &str = "s3_state_scans_v1";
    if index.marker(SYNCED).unwrap_or(0) == 0 {
        if let Ok(all) = index.all_scans() {
            for (d, r) in all {
                tier.put_state(&format!("scans/{d}.json"), serde_json::to_vec(&r).unwrap_or_default());
            }
        }
        let _ = index.set_marker(SYNCED, 1);
    }
}

/// Why the node could not start. Each names what failed (file, directory, bucket) and,
/// where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be created or written.
    #[error("data directory {path}: {error}{hint}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why (in the message, not as a source: the chain would print it twice).
        error: std::io::Error,
        /// How to fix it.
        hint: &'static str,
    },
    /// The data directory's disk is too full to open the index.
    #[error("{0}")]
    DiskFull(String),
    /// Another process holds the index.
    #[error("data directory {0} is in use by another berth process (its index is locked); stop that process or choose another --data-dir")]
    InUse(String),
    /// Index.
    #[error("index in {path}: {error}")]
    Index {
        /// The index directory.
        path: String,
        /// Why (in the message only: as a source the chain would print it twice).
        error: berth_index::IndexError,
    },
    /// Users, rules or token keys.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The TLS certificate or key.
    #[error(transparent)]
    Tls(#[from] crate::http::tls::TlsError),
    /// `[scan.policy]` does not compile.
    #[error("{0}")]
    ScanPolicy(String),
    /// `[proxy]` is invalid (a name, a URL, an unreadable CA or certificate file).
    #[error("{0}")]
    Proxy(String),
    /// `[cluster]` is invalid, or Postgres cannot be reached at start.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The S3 tier could not be set up.
    #[error("storage.s3 (bucket {bucket:?}): {reason}")]
    S3 {
        /// The bucket.
        bucket: String,
        /// Why.
        reason: String,
    },
    /// Rebuilding the index from the bucket failed.
    #[error(
        "the index is empty and storage.s3.rebuild_on_empty_index is on, but bucket {bucket:?} could not be read ({reason}); \
         fix S3 access, or set rebuild_on_empty_index = false to start with an empty index"
    )]
    Rebuild {
        /// The bucket.
        bucket: String,
        /// Why.
        reason: String,
    },
}

impl App {
    /// Open the data directory and build the shared state.
    pub fn open(cfg: Config) -> Result<App, StartError> {
        let dir = cfg.data_dir.display().to_string();
        let data_dir_err = |source: std::io::Error| {
            let hint = match source.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    "; the user running berth must be able to write it (chown it, or choose another --data-dir)"
                }
                std::io::ErrorKind::ReadOnlyFilesystem => "; choose a --data-dir on a writable filesystem",
                _ => "",
            };
            StartError::DataDir { path: dir.clone(), error: source, hint }
        };
        // Auth first: a wrong htpasswd path must not leave a half-created data directory.
        Auth::validate(&cfg.auth)?;
        cfg.check_cluster().map_err(StartError::Cluster)?;
        let tls = cfg.tls.as_ref().map(crate::http::tls::Acceptor::new).transpose()?;
        if cfg.internal.tls && tls.is_none() {
            return Err(StartError::Tls(crate::http::tls::TlsError(
                "internal.tls = true needs [tls] (cert and key): the internal API uses the same certificate".into(),
            )));
        }
        create_private_dir(&cfg.data_dir).map_err(data_dir_err)?;
        let auth = Auth::from_config(&cfg.auth, &cfg.data_dir)?.map(Arc::new);
        let blobs = Arc::new(BlobStore::open(&cfg.data_dir).map_err(data_dir_err)?);
        let space = Arc::new(crate::store::space::Space::new(&cfg.data_dir, cfg.storage.min_free_bytes));
        crate::store::space::before_open(&cfg.data_dir, space.floor()).map_err(StartError::DiskFull)?;
        let index_dir = cfg.data_dir.join("index");
        let index = Arc::new(Index::open(&index_dir, cfg.storage.sync_index).map_err(|source| {
            let text = source.to_string();
            if text.contains("LOCK") || text.contains("lock hold") || text.contains("Resource temporarily unavailable")
            {
                StartError::InUse(dir.clone())
            } else if text.contains("Permission denied") {
                data_dir_err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            } else {
                StartError::Index { path: index_dir.display().to_string(), error: source }
            }
        })?);
        crate::store::space::ensure_reserve(&cfg.data_dir, cfg.storage.reserve_bytes, space.floor());
        let internal_token = internal_token(&cfg).map_err(data_dir_err)?;
        let (feed_notify, _) = tokio::sync::watch::channel(index.next_sequence() - 1);
        let mut metrics = Metrics::new();
        let gc = Arc::new(crate::gc::GcJobs::default());
        gc.metrics.register(metrics.registry_mut());
        let tier = match &cfg.storage.s3 {
            None => None,
            Some(s3) => {
                let local: Arc<dyn berth_tiering::LocalBlobs> = blobs.clone();
                let tier = Tiering::new(s3.clone(), cfg.cache.clone(), index.clone(), local)
                    .map_err(|e| StartError::S3 { bucket: s3.bucket.clone(), reason: e.to_string() })?;
                // In a cluster the change log, not the bucket, rebuilds an empty index.
                if s3.rebuild_on_empty_index && index.next_sequence() == 1 && cfg.cluster.is_none() {
                    let mut report = crate::rebuild::from_bucket(&index, &tier)
                        .map_err(|reason| StartError::Rebuild { bucket: s3.bucket.clone(), reason })?;
                    if let (Some(a), Some(stored)) = (&auth, report.accounts.take()) {
                        match a.restore_managed(stored) {
                            Ok(true) => tracing::warn!("managed accounts restored from the bucket"),
                            Ok(false) => {}
                            Err(e) => tracing::error!(error = ?e, "managed accounts in the bucket not restored"),
                        }
                    }
                    if !report.is_empty() {
                        tracing::warn!(%report, "index was empty: rebuilt it from the bucket");
                    }
                }
                tier.metrics.register(metrics.registry_mut());
                metrics.register_tier_gauges(&cfg.cache);
                tier.start_workers();
                if cfg.cluster.is_none() {
                    keep_state_in_bucket(&tier, &index, auth.as_deref());
                }
                Some(tier)
            }
        };
        let scans = if cfg.scan.enabled {
            Some(Arc::new(crate::scan::ScanBook::load(&index, &cfg.scan).map_err(StartError::ScanPolicy)?))
        } else {
            None
        };
        let cluster = match (&cfg.cluster, &tier) {
            (Some(cc), Some(tier)) => {
                let local: Arc<dyn berth_tiering::LocalBlobs> = blobs.clone();
                let sink = crate::cluster::state_sink(index.clone(), scans.clone(), auth.clone());
                let importing = crate::cluster::import::pending(&index).map_err(StartError::Cluster)?;
                let c = berth_cluster::Cluster::start(
                    cc.clone(),
                    index.clone(),
                    local,
                    internal_token.clone(),
                    sink,
                    importing,
                )
                .map_err(StartError::Cluster)?;
                c.metrics.register(metrics.registry_mut());
                if let Some(auth) = &auth {
                    auth.managed.set_replicator(Box::new(crate::cluster::AccountsReplicator(c.clone())));
                }
                let cn = Arc::new(crate::cluster::ClusterNode { cluster: c.clone(), tier: tier.clone() });
                if importing {
                    // This node's own content becomes the cluster's, before it serves anything.
                    let accounts =
                        crate::cluster::compact::accounts_of(auth.as_deref()).map_err(StartError::Cluster)?;
                    tracing::warn!("cluster: this node's content is not in the change log yet; publishing it");
                    let report = c
                        .block_on(crate::cluster::import::publish(cn.clone(), index.clone(), accounts))
                        .map_err(|e| StartError::Cluster(format!("publishing this node's content: {e}")))?;
                    tracing::warn!(%report, "cluster: published this node's content into the change log");
                }
                crate::cluster::compact::start_schedule(cn.clone(), index.clone(), auth.clone());
                Some(cn)
            }
            _ => None,
        };
        let uploads = Uploads::new(
            index.clone(),
            blobs.clone(),
            &cfg.uploads,
            cfg.limits.max_blob_bytes,
            cluster.clone(),
            space.clone(),
        );
        let admission = Arc::new(crate::admission::Admission::new(
            cfg.limits.max_connections,
            cfg.limits.max_connections_per_address,
        ));
        let pull_through = if cfg.proxy.enabled() {
            let proxy = berth_proxy::Proxy::new(&cfg.proxy).map_err(StartError::Proxy)?;
            proxy.metrics.register(metrics.registry_mut());
            Some(crate::pull_through::PullThrough::new(proxy))
        } else {
            None
        };
        let open_files_per_core =
            cfg.limits.open_blob_files.min(crate::admission::fd_limit() / 8) / cfg.worker_count().max(1);
        Ok(App {
            cluster,
            pull_through,
            open_files_per_core,
            tls,
            admission,
            scans,
            cfg,
            index,
            blobs,
            uploads,
            auth,
            metrics,
            tier,
            gc,
            internal_token,
            feed_notify,
            expiry_last_run_ms: std::sync::atomic::AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        })
    }
}
