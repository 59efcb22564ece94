//! The pull-through cache's upstream side: which upstream a repository name belongs to, the
//! upstream clients (credentials, TLS, the token dance), and single-flight blob fills that
//! stream upstream bytes to the first readers while they are written, hashed and verified —
//! the S3 tier's read-through machinery ([`berth_tiering::Fills`]), fed from another source.
//!
//! The node decides what to cache and when (tag TTL, stale-if-error, index records): see
//! `node/server/src/pull_through.rs` and docs/ARCHITECTURE.md, "Pull-through cache".

pub mod challenge;
pub mod config;
pub mod metrics;
pub mod outbound;
pub mod upstream;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_tiering::{Fill, Fills, TierError};
use berth_types::Digest;
use futures_util::StreamExt as _;

pub use config::{ProxyConfig, UpstreamConfig};
pub use metrics::ProxyMetrics;
pub use upstream::{ManifestInfo, Upstream, UpstreamError};

/// A repository name resolved to its upstream.
#[derive(Clone)]
pub struct Route {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// The repository's name at the upstream (`library/alpine`).
    pub upstream_repo: String,
}

/// The pull-through cache's upstreams and in-flight fills.
pub struct Proxy {
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    upstreams: HashMap<String, Arc<Upstream>>,
    default_upstream: Option<String>,
    local_namespaces: Vec<glob::Pattern>,
    fills: Arc<Fills>,
    /// One "is it running, else ask the upstream and start it" step at a time per digest, so
    /// concurrent cold requests for a blob make one upstream request.
    fill_locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Per-upstream metrics, registered into the node's registry.
    pub metrics: ProxyMetrics,
    /// `berth preload` parallelism.
    pub preload_parallelism: usize,
}

/// Called with a fully fetched, verified and synced blob file: publish it (or drop it if the
/// blob is already there) and link it where it belongs.
pub type Publish = Box<dyn FnOnce(&Path) -> Result<(), String> + Send>;

/// Whether the blob is already served locally (checked again once this request holds the
/// digest's fetch lock: a fetch that just finished leaves nothing to do).
pub type Have = Box<dyn Fn() -> bool + Send>;

/// Where a blob's bytes come from.
pub enum Fetch {
    /// A fill streaming from the upstream.
    Fill(Arc<Fill>),
    /// It is local now (a fetch finished meanwhile).
    Local,
    /// The upstream does not have it.
    Missing,
}

impl Proxy {
    /// Build the upstream clients (reads CA bundles, client certificates and password files:
    /// a bad one is an error naming it) and the runtime they run on.
    pub fn new(cfg: &ProxyConfig) -> Result<Arc<Proxy>, String> {
        cfg.validate()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("berth-proxy")
            .enable_all()
            .build()
            .map_err(|e| format!("proxy runtime: {e}"))?;
        let metrics = ProxyMetrics::default();
        let mut upstreams = HashMap::new();
        for u in &cfg.upstreams {
            let up = {
                let _g = rt.enter();
                Upstream::new(u.clone(), metrics.clone())?
            };
            upstreams.insert(u.name.clone(), Arc::new(up));
        }
        Ok(Arc::new(Proxy {
            handle: rt.handle().clone(),
            rt: Mutex::new(Some(rt)),
            upstreams,
            default_upstream: cfg.default_upstream.clone(),
            local_namespaces: cfg.local_namespaces.iter().filter_map(|g| glob::Pattern::new(g).ok()).collect(),
            fills: Arc::default(),
            fill_locks: Mutex::new(HashMap::new()),
            metrics,
            preload_parallelism: cfg.preload_parallelism.max(1),
        }))
    }

    /// The upstream whose namespace `repo` is in (`<name>/<upstream repo>`), if any.
    pub fn route(&self, repo: &str) -> Option<Route> {
        let (first, rest) = repo.split_once('/')?;
        let upstream = self.upstreams.get(first)?;
        Some(Route { upstream: upstream.clone(), upstream_repo: rest.to_owned() })
    }

    /// The upstream named `name` (containerd's `?ns=`, the default upstream).
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// The upstream plain names are read from in mirror mode.
    pub fn default_upstream(&self) -> Option<&str> {
        self.default_upstream.as_deref()
    }

    /// Whether `repo` (a plain name) is one of this registry's own repositories in mirror
    /// mode (`local_namespaces`).
    pub fn is_local_namespace(&self, repo: &str) -> bool {
        let opts = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
        self.local_namespaces.iter().any(|p| p.matches_with(repo, opts))
    }

    /// Run `fut` on the proxy's runtime and await it from any executor.
    pub fn run<F, T>(&self, fut: F) -> impl Future<Output = Result<T, UpstreamError>> + 'static
    where
        F: Future<Output = Result<T, UpstreamError>> + Send + 'static,
        T: Send + 'static,
    {
        let h = self.handle.spawn(fut);
        async move { h.await.unwrap_or_else(|e| Err(UpstreamError::Unreachable("proxy".into(), format!("stopped: {e}")))) }
    }

    /// Stop the runtime; in-flight fetches get `grace`.
    pub fn shutdown(&self, grace: Duration) {
        if let Some(rt) = self.rt.lock().unwrap_or_else(|p| p.into_inner()).take() {
            rt.shutdown_timeout(grace);
        }
    }

    /// Stream blob `digest` of `route` from its upstream into a fill (joining the one already
    /// running for the digest): resolves once the upstream has answered with the blob's
    /// length, so a missing blob or a failing upstream is a clean error before any byte is sent.
    /// `Ok(None)`: the upstream has no such blob. After the last byte the file is verified and
    /// synced, then handed to `publish`; a digest mismatch fails the fill and caches nothing.
    pub async fn fetch_blob(
        self: &Arc<Self>,
        route: Route,
        digest: Digest,
        scratch: PathBuf,
        have: Have,
        publish: Publish,
    ) -> Result<Fetch, UpstreamError> {
        let this = self.clone();
        let name = route.upstream.name().to_owned();
        let started = self
            .run(async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let task = this.clone();
                tokio::spawn(async move { task.fill(route, digest, scratch, have, publish, tx).await });
                rx.await.unwrap_or_else(|_| Err(UpstreamError::Unreachable("proxy".into(), "fill stopped".into())))
            })
            .await?;
        if let Fetch::Fill(fill) = &started {
            fill.ready().await.map_err(|e| UpstreamError::Unreachable(name, e.to_string()))?;
        }
        Ok(started)
    }

    fn fill_lock(&self, digest: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.fill_locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(digest.clone()).or_default().clone()
    }

    async fn fill(
        self: Arc<Self>,
        route: Route,
        digest: Digest,
        scratch: PathBuf,
        have: Have,
        publish: Publish,
        started: tokio::sync::oneshot::Sender<Result<Fetch, UpstreamError>>,
    ) {
        let up = route.upstream.clone();
        let name = up.name().to_owned();
        // A fill is shared only with requests for the same upstream repository: bytes from
        // another upstream, or a fill another user's route made, never answer this one.
        let source = format!("{name}/{}", route.upstream_repo);
        let lock = self.fill_lock(&digest);
        let guard = lock.lock().await;
        if let Some(f) = self.fills.running(&source, &digest) {
            let _ = started.send(Ok(Fetch::Fill(f)));
            return;
        }
        if have() {
            let _ = started.send(Ok(Fetch::Local));
            return;
        }
        let resp = match up.blob(&route.upstream_repo, &digest.to_string()).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                let _ = started.send(Ok(Fetch::Missing));
                return;
            }
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let Some(len) = resp.content_length() else {
            let _ = started.send(Err(UpstreamError::Invalid(name, "blob response without Content-Length".into())));
            return;
        };
        let (fill, writer) = match self.fills.join_or_start(&scratch, &source, &digest, len) {
            Ok(x) => x,
            Err(e) => {
                let _ = started.send(Err(UpstreamError::Unreachable(name, format!("scratch file: {e}"))));
                return;
            }
        };
        drop(guard);
        // Someone started the same blob of the same source meanwhile: join theirs.
        let Some(mut w) = writer else {
            let _ = started.send(Ok(Fetch::Fill(fill)));
            return;
        };
        w.started();
        let _ = started.send(Ok(Fetch::Fill(fill)));
        let mut body = resp.bytes_stream();
        let mut fetched = 0u64;
        let res: Result<(), TierError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| TierError::S3 { op: "upstream blob", reason: e.to_string() })?;
                fetched += chunk.len() as u64;
                w.write(&chunk)?;
            }
            let tmp = w.verify().await?;
            tokio::task::spawn_blocking(move || publish(&tmp))
                .await
                .map_err(|e| TierError::Io(std::io::Error::other(e)))?
                .map_err(|e| TierError::Io(std::io::Error::other(e)))
        }
        .await;
        match &res {
            Ok(()) => {
                tracing::info!(target: "berth::proxy", upstream = %name, %digest, size = len, "blob fetched, verified and cached")
            }
            Err(e) => {
                self.metrics.error(&name, if matches!(e, TierError::Verify(_)) { "invalid" } else { "blob_stream" });
                tracing::warn!(target: "berth::proxy", upstream = %name, %digest, error = %e, "blob fetch failed; nothing cached");
            }
        }
        w.done(&res);
    }
}
