//! Pull-through cache, node side: what is cached and when it is asked for again.
//!
//! Cached content lives in ordinary repositories named `<upstream>/<repository>`, so catalog,
//! tags, referrers, GC, tiering, scanning and the admin API all see it. Manifests by digest and
//! blobs are immutable: fetched once, then served like pushed content. A tag is served from the
//! cache for `tag_ttl_secs` after it was last checked; then one `HEAD` asks the upstream for its
//! digest (unchanged: served from the cache; moved: the new manifest is fetched). When the
//! upstream fails (unreachable, 429, 5xx) a cached tag is served anyway and the stale serve is
//! logged and counted. Manifests are stored sparse (their blobs and children are fetched when a
//! client asks for them). Concurrent requests for one tag wait for the first one's upstream
//! call; concurrent requests for one blob share one upstream fetch (`berth_proxy`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proxy::{Fetch, Proxy, Route, UpstreamError};
use berth_types::{Algorithm, Digest, ErrorKind, OciError, Reference, RepoName, Tag};

use crate::app::App;
use crate::manifest;
use crate::store::{index_error, BlobStore};

/// A cached tag: (repository, tag).
type TagKey = (String, String);

/// The pull-through cache's state on this node.
pub struct PullThrough {
    /// Upstreams and fills.
    pub proxy: Arc<Proxy>,
    /// When each cached tag (`repo`, `tag`) was last confirmed with its upstream.
    checked: Mutex<HashMap<TagKey, Instant>>,
    /// One upstream check at a time per tag: the others wait and find it fresh.
    tag_locks: Mutex<HashMap<TagKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// The client's answer to an upstream failure: the upstream's configured name and the kind of
/// failure, never its details (URLs, realms, addresses, upstream error texts: those are
/// logged, with the request id, for the operator).
fn upstream_error(e: UpstreamError) -> OciError {
    tracing::warn!(target: "berth::proxy", error = %e, "upstream request failed");
    match e {
        UpstreamError::Denied(u, _) => OciError::new(ErrorKind::Denied)
            .msg(format!("upstream {u} refused this registry's request (details in the registry's log)")),
        UpstreamError::Invalid(u, _) => OciError::new(ErrorKind::Unavailable)
            .msg(format!("upstream {u} sent an invalid answer; nothing was cached; retry later")),
        UpstreamError::Unreachable(u, _) | UpstreamError::Status(u, ..) => {
            OciError::new(ErrorKind::Unavailable).msg(format!("upstream {u} is unavailable; retry later"))
        }
    }
}

impl PullThrough {
    /// Wrap the upstreams.
    pub fn new(proxy: Arc<Proxy>) -> PullThrough {
        PullThrough { proxy, checked: Mutex::new(HashMap::new()), tag_locks: Mutex::new(HashMap::new()) }
    }

    /// In mirror mode, why a write to the plain name `repo` is refused: it is the mirror's.
    pub fn mirror_refuses_write(&self, repo: &RepoName) -> Option<String> {
        let d = self.proxy.default_upstream()?;
        if self.route(repo).is_some() || self.proxy.is_local_namespace(repo.as_str()) {
            return None;
        }
        Some(format!(
            "{repo} is a name of the mirror of upstream {d} here; push to one of this registry's own namespaces \
             (proxy.local_namespaces)"
        ))
    }

    /// The upstream of `repo`, if it is in a cached namespace.
    pub fn route(&self, repo: &RepoName) -> Option<Route> {
        self.proxy.route(repo.as_str())
    }

    /// The local name a read of `repo` is served under: containerd's `?ns=<upstream>` and the
    /// default upstream (Docker's `registry-mirrors`) put plain names into an upstream's
    /// namespace; `None` leaves the name as it is.
    pub fn local_name(&self, repo: &RepoName, ns: Option<&str>) -> Option<RepoName> {
        if self.route(repo).is_some() {
            return None;
        }
        let prefix = match ns {
            Some(ns) if self.proxy.upstream(ns).is_some() => ns,
            // Mirror mode: a plain name is the mirror's unless it is in a local namespace.
            // Whether a local repository of that name exists does not matter: a push can never
            // shadow the upstream's image, and a local name never falls through to the upstream.
            _ => match self.proxy.default_upstream() {
                Some(d) if !self.proxy.is_local_namespace(repo.as_str()) => d,
                _ => return None,
            },
        };
        format!("{prefix}/{repo}").parse().ok()
    }

    fn fresh(&self, key: &TagKey, ttl: Duration) -> bool {
        self.checked.lock().unwrap_or_else(|p| p.into_inner()).get(key).is_some_and(|t| t.elapsed() < ttl)
    }

    fn mark(&self, key: TagKey) {
        self.checked.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Instant::now());
    }

    fn tag_lock(&self, key: &TagKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.tag_locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key.clone()).or_default().clone()
    }

    /// Make sure `reference` of `repo` is cached (fetching or revalidating it with the
    /// upstream as its age requires); returns its digest, or `None` when neither the cache nor
    /// the upstream has it.
    pub async fn manifest(
        &self,
        app: &App,
        route: &Route,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Digest>, OciError> {
        let up = &route.upstream;
        let name = up.name().to_owned();
        if !up.allows(&route.upstream_repo) {
            return Err(OciError::new(ErrorKind::Denied)
                .msg(format!("{} is not in the allow-list of upstream {name}", route.upstream_repo)));
        }
        let tag = match reference {
            Reference::Digest(d) => {
                if app.index.manifest(repo, d).map_err(index_error)?.is_some() {
                    self.proxy.metrics.outcome(&name, "hit");
                    return Ok(Some(d.clone()));
                }
                let fetched = self.fetch(route, &d.to_string()).await.map_err(upstream_error)?;
                let Some((bytes, media_type)) = fetched else { return Ok(None) };
                let got = Digest::of(d.algorithm(), &bytes);
                if &got != d {
                    return Err(OciError::new(ErrorKind::Unavailable)
                        .msg(format!("upstream {name} sent a manifest hashing to {got}, not {d}; nothing cached")));
                }
                store(app, repo, d, &bytes, &media_type, None)?;
                self.proxy.metrics.outcome(&name, "miss");
                return Ok(Some(d.clone()));
            }
            Reference::Tag(t) => t,
        };
        let key = (repo.as_str().to_owned(), tag.as_str().to_owned());
        let ttl = Duration::from_secs(up.cfg.tag_ttl_secs);
        let local = app.index.tag(repo, tag).map_err(index_error)?;
        if local.is_some() && self.fresh(&key, ttl) {
            self.proxy.metrics.outcome(&name, "hit");
            return Ok(local);
        }
        let lock = self.tag_lock(&key);
        let _g = lock.lock().await;
        // Someone checked while we waited.
        let local = app.index.tag(repo, tag).map_err(index_error)?;
        if local.is_some() && self.fresh(&key, ttl) {
            self.proxy.metrics.outcome(&name, "hit");
            return Ok(local);
        }
        let (up2, r2, t2) = (up.clone(), route.upstream_repo.clone(), tag.as_str().to_owned());
        let head = self.proxy.run(async move { up2.manifest(&r2, &t2, false).await }).await;
        let head = match head {
            Err(e) if e.is_unavailable() && local.is_some() => {
                self.proxy.metrics.outcome(&name, "stale");
                tracing::warn!(target: "berth::proxy", upstream = %name, repository = %repo, %tag, error = %e,
                    "upstream unavailable: serving the cached tag (stale)");
                return Ok(local);
            }
            Err(e) => return Err(upstream_error(e)),
            Ok(None) => return Ok(None),
            Ok(Some(h)) => h,
        };
        if let (Some(l), Some(d)) = (&local, &head.digest) {
            if &l.to_string() == d {
                // Last use, for GC retention (pruning cached tags nobody pulls any more).
                if let Err(e) = app.index.touch_tag(repo, tag) {
                    tracing::warn!(error = %e, "could not record a cached tag's use");
                }
                self.mark(key);
                self.proxy.metrics.outcome(&name, "revalidated");
                return Ok(local);
            }
        }
        // New or moved: fetch the manifest (by the digest the HEAD named, so tag and bytes agree).
        let want = head.digest.clone().unwrap_or_else(|| tag.as_str().to_owned());
        let fetched = match self.fetch(route, &want).await {
            Err(e) if e.is_unavailable() && local.is_some() => {
                self.proxy.metrics.outcome(&name, "stale");
                return Ok(local);
            }
            r => r.map_err(upstream_error)?,
        };
        let Some((bytes, media_type)) = fetched else { return Ok(None) };
        let digest = match head.digest.as_deref().and_then(|d| d.parse::<Digest>().ok()) {
            Some(d) => {
                let got = Digest::of(d.algorithm(), &bytes);
                if got != d {
                    return Err(OciError::new(ErrorKind::Unavailable)
                        .msg(format!("upstream {name} sent a manifest hashing to {got}, not {d}; nothing cached")));
                }
                d
            }
            None => Digest::of(Algorithm::Sha256, &bytes),
        };
        store(app, repo, &digest, &bytes, &media_type, Some(tag))?;
        self.mark(key);
        self.proxy.metrics.outcome(&name, if local.is_some() { "changed" } else { "miss" });
        tracing::info!(target: "berth::proxy", upstream = %name, repository = %repo, %tag, %digest, "tag cached");
        Ok(Some(digest))
    }

    async fn fetch(&self, route: &Route, reference: &str) -> Result<Option<(Vec<u8>, String)>, UpstreamError> {
        let (up, r, reference) = (route.upstream.clone(), route.upstream_repo.clone(), reference.to_owned());
        let got = self.proxy.run(async move { up.manifest(&r, &reference, true).await }).await?;
        Ok(got.and_then(|m| m.bytes.map(|b| (b.to_vec(), m.media_type))))
    }

    /// Blob `digest` of `repo` is not linked here: fetch it from the upstream (joining a fetch
    /// already running) and stream it.
    pub async fn blob(&self, app: &App, route: &Route, repo: &RepoName, digest: &Digest) -> Result<Fetch, OciError> {
        let name = route.upstream.name().to_owned();
        if !route.upstream.allows(&route.upstream_repo) {
            return Err(OciError::new(ErrorKind::Denied)
                .msg(format!("{} is not in the allow-list of upstream {name}", route.upstream_repo)));
        }
        let (blobs, index, r, d) = (app.blobs.clone(), app.index.clone(), repo.clone(), digest.clone());
        let (index2, r2, d2) = (app.index.clone(), repo.clone(), digest.clone());
        let have = Box::new(move || index2.repo_has_blob(&r2, &d2).unwrap_or(false));
        let publish = Box::new(move |tmp: &Path| publish(&blobs, &index, &r, &d, tmp));
        let fetched = self
            .proxy
            .fetch_blob(route.clone(), digest.clone(), app.blobs.uploads_dir(), have, publish)
            .await
            .map_err(upstream_error)?;
        if matches!(fetched, Fetch::Fill(_)) {
            self.proxy.metrics.outcome(&name, "miss");
        }
        Ok(fetched)
    }
}

/// Put a fetched, verified blob file in place (unless the blob is already stored) and link it
/// into `repo` — under the digest's lock, as uploads publish.
fn publish(
    blobs: &BlobStore,
    index: &berth_index::Index,
    repo: &RepoName,
    digest: &Digest,
    tmp: &Path,
) -> Result<(), String> {
    let size = std::fs::metadata(tmp).map_err(|e| e.to_string())?.len();
    let _g = blobs.lock(digest);
    if index.blob(digest).map_err(|e| e.to_string())?.is_some_and(|m| m.tier.is_local()) {
        let _ = std::fs::remove_file(tmp);
    } else {
        blobs.publish(tmp, digest).map_err(|e| e.to_string())?;
    }
    index.commit_blob(repo, digest, size, None).map_err(|e| e.to_string())?;
    crate::store::access::record_now(index, digest);
    Ok(())
}

/// Store a manifest fetched from an upstream: sparse (whatever it references that is not here
/// yet is recorded as absent and fetched when asked for), tagged with `tag`.
fn store(
    app: &App,
    repo: &RepoName,
    digest: &Digest,
    bytes: &[u8],
    media_type: &str,
    tag: Option<&Tag>,
) -> Result<(), OciError> {
    let ct = (!media_type.is_empty()).then_some(media_type);
    let parsed = manifest::parse(bytes, ct)?;
    let mut absent = Vec::new();
    for r in &parsed.blob_refs {
        if !app.index.repo_has_blob(repo, &r.digest).map_err(index_error)? {
            absent.push(r.digest.clone());
        }
    }
    for r in &parsed.manifest_refs {
        if app.index.manifest(repo, &r.digest).map_err(index_error)?.is_none() {
            absent.push(r.digest.clone());
        }
    }
    absent.sort();
    absent.dedup();
    let record = parsed.record(absent);
    let tags: Vec<Tag> = tag.into_iter().cloned().collect();
    let outcome = app.index.put_manifest(repo, digest, &record, bytes, &tags).map_err(index_error)?;
    if let Some(m) = outcome.missing {
        return Err(OciError::new(ErrorKind::Unavailable).msg(format!("{m} was removed while caching; retry")));
    }
    Ok(())
}
