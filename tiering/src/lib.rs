//! Berth's S3 tier: a local-disk LRU cache in front of an S3 bucket.
//!
//! - **Uploader** (`uploader`): blobs committed locally wait in the index's `tier_pending`
//!   queue; a worker uploads them (streaming, multipart above a threshold, verified) and moves
//!   them `local` → `local_and_remote`. Pushes never wait for it.
//! - **Mirror** (`mirror`): follows the index's change feed and writes manifests, tags and
//!   repository links to the bucket, so the bucket alone can rebuild a node (`rebuild`).
//! - **Evictor** (`evictor`): above the high watermark, removes the local copies of the least
//!   recently pulled blobs that are safe in S3 (`local_and_remote` → `remote`) down to the low
//!   watermark. A blob not yet in S3 is never evicted.
//! - **Read-through** (`fill`): a GET of a `remote` blob starts one S3 fetch that writes a
//!   temp file; every concurrent reader streams from that file as it grows (first bytes reach
//!   the client before the fetch ends); the file is digest-verified before it is published and
//!   the blob becomes `local_and_remote` again.
//!
//! Threads: all S3 work runs on this crate's own tokio runtime (`berth-s3` threads). The node's
//! monoio cores only await runtime-agnostic futures (task handles, `tokio::sync` channels),
//! so a core never blocks on S3.
//!
//! Races between uploader, evictor, read-through and deletion of one blob are serialised by a
//! striped per-digest lock and compare-and-set tier transitions in the index (see
//! docs/ARCHITECTURE.md, "Tier states").
//!
//! Layering: the node calls this crate; this crate calls the index, the bucket and the local
//! blob files (through [`LocalBlobs`]), never the node's HTTP layer.

mod config;
mod evictor;
mod fill;
mod layout;
mod metrics;
mod mirror;
mod rebuild;
mod remote;
mod state;
mod uploader;
mod workers;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_index::Index;
use berth_types::Digest;
use bytes::Bytes;
use tokio::sync::Notify;

pub use config::{CacheConfig, S3Config};
pub use fill::{Fill, FillWriter, Fills};
pub use layout::{Layout, Object};
pub use metrics::TierMetrics;
pub use mirror::CURSOR as MIRROR_CURSOR;
pub use rebuild::{BucketContents, BucketManifest};
pub use remote::Remote;
pub use workers::{WorkerState, WorkerStatus, Workers};

/// Tiering failures.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// An S3 request failed.
    #[error("s3 {op}: {reason}")]
    S3 {
        /// Operation.
        op: &'static str,
        /// What the SDK said.
        reason: String,
    },
    /// The object does not exist.
    #[error("object not found in S3")]
    NotFound,
    /// The bucket itself does not exist.
    #[error("the bucket does not exist (create it, or correct storage.s3.bucket and storage.s3.endpoint)")]
    NoSuchBucket,
    /// Bytes did not match what they should be.
    #[error("verification failed: {0}")]
    Verify(String),
    /// Local filesystem.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Index.
    #[error("index: {0}")]
    Index(#[from] berth_index::IndexError),
    /// The tier is shutting down.
    #[error("tiering is shutting down")]
    Stopped,
}

/// What tiering needs of the node's local blob files.
pub trait LocalBlobs: Send + Sync + 'static {
    /// Final path of a blob's file.
    fn path(&self, digest: &Digest) -> PathBuf;
    /// A directory on the same filesystem for temp files.
    fn scratch_dir(&self) -> PathBuf;
    /// Atomically move a complete, synced temp file into place as `digest` (durable).
    fn publish(&self, tmp: &Path, digest: &Digest) -> std::io::Result<()>;
    /// Remove a blob's file (eviction); a missing file is not an error. The node's store uses
    /// this to drop its cached descriptors of the file.
    fn remove(&self, digest: &Digest) -> std::io::Result<()>;
}

/// Striped per-digest locks: uploader, evictor, read-through and deleter of one blob never
/// interleave their check-then-act steps.
struct Locks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Locks {
    fn new() -> Locks {
        Locks { stripes: (0..256).map(|_| tokio::sync::Mutex::new(())).collect() }
    }
    async fn lock(&self, d: &Digest) -> tokio::sync::MutexGuard<'_, ()> {
        let b = u8::from_str_radix(&d.hex()[..2], 16).unwrap_or(0);
        self.stripes[b as usize].lock().await
    }
}

/// The tier: S3 client, workers and read-through state. Shared behind an `Arc`.
pub struct Tiering {
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    remote: Remote,
    layout: Layout,
    index: Arc<Index>,
    local: Arc<dyn LocalBlobs>,
    cfg: Arc<S3Config>,
    cache: CacheConfig,
    locks: Locks,
    fills: Arc<Fills>,
    state_writes: state::StateWrites,
    wake_upload: Notify,
    wake_evict: Notify,
    wake_mirror: Notify,
    stopping: AtomicBool,
    /// Counters and gauges, registered into the node's registry.
    pub metrics: TierMetrics,
    /// Background workers and their state.
    pub workers: Workers,
}

/// A ranged GET streamed from S3: the chunks arrive on `chunks`.
pub struct RangeStream {
    /// Bytes the stream will carry.
    pub len: u64,
    /// The body, in order; an `Err` ends it early.
    pub chunks: tokio::sync::mpsc::Receiver<Result<Bytes, TierError>>,
}

impl Tiering {
    /// Build the runtime and the client. Workers start with [`Tiering::start_workers`].
    pub fn new(
        cfg: S3Config,
        cache: CacheConfig,
        index: Arc<Index>,
        local: Arc<dyn LocalBlobs>,
    ) -> std::io::Result<Arc<Tiering>> {
        cfg.validate().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        cache.validate().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("berth-s3")
            .enable_all()
            .build()?;
        let cfg = Arc::new(cfg);
        let remote = rt.block_on(Remote::connect(cfg.clone()));
        remote.set_journal(local.scratch_dir().with_file_name("s3-multipart"));
        let layout = Layout::new(cfg.normalized_prefix());
        Ok(Arc::new(Tiering {
            handle: rt.handle().clone(),
            rt: Mutex::new(Some(rt)),
            remote,
            layout,
            index,
            local,
            cfg,
            cache,
            locks: Locks::new(),
            fills: Arc::default(),
            state_writes: Default::default(),
            wake_upload: Notify::new(),
            wake_evict: Notify::new(),
            wake_mirror: Notify::new(),
            stopping: AtomicBool::new(false),
            metrics: TierMetrics::default(),
            workers: Workers::default(),
        }))
    }

    /// Start the uploader, mirror and evictor.
    pub fn start_workers(self: &Arc<Self>) {
        self.handle.spawn(uploader::run(self.clone()));
        self.handle.spawn(mirror::run(self.clone()));
        self.handle.spawn(evictor::run(self.clone()));
    }

    /// Something changed in the index (a push, a delete): wake the uploader and the mirror.
    pub fn wake(&self) {
        self.wake_upload.notify_one();
        self.wake_mirror.notify_one();
    }

    /// Stop the workers; in-flight S3 requests get `grace` to finish. Interrupted uploads are
    /// redone at the next start (the queue is in the index).
    pub fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake_upload.notify_waiters();
        self.wake_evict.notify_waiters();
        self.wake_mirror.notify_waiters();
        let rt = self.rt.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rt) = rt {
            rt.shutdown_timeout(grace);
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Run `fut` on the tier's runtime and await it from any executor.
    pub fn run<F, T>(&self, fut: F) -> impl Future<Output = Result<T, TierError>> + 'static
    where
        F: Future<Output = Result<T, TierError>> + Send + 'static,
        T: Send + 'static,
    {
        let h = self.handle.spawn(fut);
        async move { h.await.unwrap_or(Err(TierError::Stopped)) }
    }

    /// Run `fut` on the tier's runtime and wait for it on this (non-async) thread.
    pub fn block_on<F, T>(&self, fut: F) -> Result<T, TierError>
    where
        F: Future<Output = Result<T, TierError>> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().unwrap_or(Err(TierError::Stopped))
    }

    /// The bucket.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The bucket's key layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The tiering configuration.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// The cache budget.
    pub fn cache(&self) -> &CacheConfig {
        &self.cache
    }

    /// Stream a `remote` blob to a client while caching it: joins the fetch already running
    /// for this digest, or starts one. Resolves once S3 has answered (so a failing S3 becomes
    /// a clean error before any byte is sent).
    pub async fn read_through(self: &Arc<Self>, digest: &Digest, size: u64) -> Result<Arc<Fill>, TierError> {
        let fill = fill::join_or_start(self, digest, size)?;
        fill.ready().await?;
        Ok(fill)
    }

    /// Stream `[offset, offset + len)` of a blob straight from S3 (ranged reads of cold
    /// blobs are not cached). Resolves once S3 has answered.
    pub async fn read_range(
        self: &Arc<Self>,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<RangeStream, TierError> {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let key = self.layout.blob(digest);
        let t = self.clone();
        self.handle.spawn(async move {
            let mut dl = match t.remote.get(&key, Some((offset, len))).await {
                Ok(dl) => dl,
                Err(e) => {
                    t.metrics.s3_error("get_object");
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            if started_tx.send(Ok(dl.len)).is_err() {
                return;
            }
            loop {
                match dl.body.try_next().await {
                    Ok(Some(chunk)) => {
                        t.metrics.s3_read_bytes.inc_by(chunk.len() as u64);
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(TierError::S3 { op: "get_object", reason: e.to_string() })).await;
                        return;
                    }
                }
            }
        });
        let got = started_rx.await.unwrap_or(Err(TierError::Stopped))?;
        if got != len {
            return Err(TierError::Verify(format!("S3 answered {got} bytes for a {len}-byte range")));
        }
        Ok(RangeStream { len, chunks: rx })
    }

    /// Put a local blob file into S3 now, verified as the uploader does (a cluster with
    /// `durability = "s3"` acknowledges a push only after this). An object of the right size
    /// already there is kept (content addressed).
    pub async fn upload_now(self: &Arc<Self>, digest: &Digest, size: u64) -> Result<(), TierError> {
        let (t, d) = (self.clone(), digest.clone());
        self.run(async move {
            let key = t.layout.blob(&d);
            if t.remote.head(&key).await? == Some(size) {
                return Ok(());
            }
            let r = t.remote.put_file(&key, &t.local.path(&d), size, &d).await;
            TierMetrics::result(&t.metrics.uploads, r.is_ok());
            match r {
                Ok(()) => {
                    t.metrics.uploaded_bytes.inc_by(size);
                    Ok(())
                }
                Err(e) => {
                    t.metrics.s3_error("put_blob");
                    Err(e)
                }
            }
        })
        .await
    }

    /// Put a manifest and the tags pointing at it into the bucket now (cluster
    /// `durability = "s3"`); the mirror writes the same objects again later, harmlessly.
    pub async fn put_manifest_now(
        self: &Arc<Self>,
        repo: &berth_types::RepoName,
        digest: &Digest,
        bytes: Vec<u8>,
        media_type: String,
        tags: Vec<berth_types::Tag>,
    ) -> Result<(), TierError> {
        let (t, repo, d) = (self.clone(), repo.clone(), digest.clone());
        self.run(async move {
            t.remote.put_bytes(&t.layout.manifest(&repo, &d), bytes, &media_type).await?;
            for tag in tags {
                t.remote.put_bytes(&t.layout.tag(&repo, &tag), d.to_string().into_bytes(), "text/plain").await?;
            }
            Ok(())
        })
        .await
        .inspect_err(|_| self.metrics.s3_error("mirror"))
    }

    /// Delete a blob's object and its repositories' link objects (cluster GC, inside its
    /// fenced transaction; the mirror does not see these removals).
    pub async fn delete_blob_objects(
        self: &Arc<Self>,
        digest: &Digest,
        repos: Vec<berth_types::RepoName>,
    ) -> Result<(), TierError> {
        let (t, d) = (self.clone(), digest.clone());
        self.run(async move {
            for repo in &repos {
                t.remote.delete(&t.layout.link(repo, &d)).await?;
            }
            t.remote.delete(&t.layout.blob(&d)).await
        })
        .await
        .inspect_err(|_| self.metrics.s3_error("delete_blob"))
    }

    /// A presigned URL for a blob in S3.
    pub async fn presign(self: &Arc<Self>, digest: &Digest) -> Result<String, TierError> {
        let (t, key) = (self.clone(), self.layout.blob(digest));
        self.run(async move { t.remote.presign_get(&key).await }).await
    }

    /// Read the whole bucket (for a rebuild of the index).
    pub fn scan_bucket(self: &Arc<Self>) -> Result<BucketContents, TierError> {
        let t = self.clone();
        self.block_on(async move { rebuild::scan(&t.remote, &t.layout).await })
    }

    /// Backoff for the `attempt`-th consecutive failure: 0.5 s doubling, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let ms = 500u64.saturating_mul(1 << attempt.min(16));
        Duration::from_millis(ms.min(self.cfg.max_backoff_secs.max(1) * 1000))
    }

    /// Sleep `d`, waking early only for shutdown.
    async fn pause(&self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while !self.stopping() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200).min(deadline - tokio::time::Instant::now())).await;
        }
    }

    /// Sleep `d` unless woken by `n` or shutdown.
    async fn nap(&self, n: &Notify, d: Duration) {
        if self.stopping() {
            return;
        }
        let _ = tokio::time::timeout(d, n.notified()).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
