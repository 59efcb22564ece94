//! `/v2/<name>/blobs/<digest>`: GET (with Range) and HEAD, DELETE unlinks the blob from the
//! repository.
//!
//! A blob with a local file (a cache hit) is sent with sendfile. With S3 tiering, a blob that
//! is only in S3 (a miss) is read through: one shared fetch fills the local cache while the
//! client receives the bytes; a ranged GET of such a blob is streamed from S3 without caching;
//! with `presign_redirect` the client gets a 307 to a presigned S3 URL instead.

use std::rc::Rc;
use std::sync::Arc;

use berth_index::TierState;
use berth_tiering::{TierError, Tiering};
use berth_types::{ByteRange, Digest, ErrorKind, OciError, RangeError, RepoName};

use crate::app::App;
use crate::http::{Method, Request, Response, ResponseBody};
use berth_proxy::Fetch;

use crate::store::open_files::{self, OpenBlob};
use crate::store::{index_error, io_error};

pub(super) async fn handle(app: &App, req: &Request, repo: &RepoName, digest: &Digest) -> Result<Response, OciError> {
    match req.method {
        Method::Get | Method::Head => get(app, req, repo, digest).await,
        Method::Delete => {
            super::check_deletes(app)?;
            if let Some(cn) = &app.cluster {
                let mut linked = app.index.repo_has_blob(repo, digest).map_err(index_error)?;
                if !linked {
                    cn.catch_up().await?;
                    linked = app.index.repo_has_blob(repo, digest).map_err(index_error)?;
                }
                if !linked {
                    return Err(OciError::new(ErrorKind::BlobUnknown));
                }
                cn.delete(berth_cluster::Write::BlobUnlinked { repo: repo.clone(), digest: digest.clone() }).await?;
                return Ok(Response::new(202).header("Docker-Content-Digest", digest.to_string()));
            }
            if app.index.unlink_blob(repo, digest).map_err(index_error)? {
                Ok(Response::new(202).header("Docker-Content-Digest", digest.to_string()))
            } else {
                Err(OciError::new(ErrorKind::BlobUnknown))
            }
        }
        _ => super::method_not_allowed("GET, HEAD, DELETE"),
    }
}

fn headers(digest: &Digest) -> Response {
    Response::new(200)
        .header("Content-Type", "application/octet-stream")
        .header("Docker-Content-Digest", digest.to_string())
        .header("ETag", format!("\"{digest}\""))
        .header("Accept-Ranges", "bytes")
        .header("Cache-Control", "max-age=31536000, immutable")
}

/// What a `Range` header asks of a blob of `size` bytes.
enum Wanted {
    Whole,
    Part(u64, u64),
}

fn wanted(req: &Request, size: u64) -> Result<Wanted, Response> {
    let Some(r) = req.header("range") else { return Ok(Wanted::Whole) };
    match r.parse::<ByteRange>().and_then(|br| br.resolve(size)) {
        Ok((offset, len)) => Ok(Wanted::Part(offset, len)),
        // RFC 9110 14.2: a syntactically invalid Range is ignored.
        Err(RangeError::Malformed) => Ok(Wanted::Whole),
        Err(RangeError::Unsatisfiable) => Err(Response::from(OciError::new(ErrorKind::RangeNotSatisfiable))
            .header("Content-Range", format!("bytes */{size}"))),
    }
}

fn partial(resp: Response, offset: u64, len: u64, size: u64) -> Response {
    let mut resp = resp.header("Content-Range", format!("bytes {}-{}/{}", offset, offset + len - 1, size));
    resp.status = 206;
    resp
}

/// A small blob from this core's memory: the repository link was checked by the caller.
fn serve_memory(app: &App, req: &Request, digest: &Digest, bytes: Rc<[u8]>) -> Response {
    let size = bytes.len() as u64;
    let mut resp = match wanted(req, size) {
        Err(r) => return r,
        Ok(Wanted::Whole) => headers(digest).with_body(ResponseBody::Shared { len: size as u32, bytes, offset: 0 }),
        Ok(Wanted::Part(offset, len)) => partial(
            headers(digest).with_body(ResponseBody::Shared { bytes, offset: offset as u32, len: len as u32 }),
            offset,
            len,
            size,
        ),
    };
    if req.method == Method::Get {
        app.metrics.blob_read("local", resp.body_len());
        app.metrics.small_blob_hits.inc();
        resp.source = Some("local");
    }
    resp
}

/// Read a small local blob whole, check its digest, and keep it in this core's cache. A copy
/// that fails the check is never cached nor served (each core would otherwise keep whatever it
/// read: two cores served different bytes for one digest); a verified push repairs it.
fn load_small(app: &App, digest: &Digest, file: &std::fs::File, size: u64) -> Result<Option<Rc<[u8]>>, OciError> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; size as usize];
    if file.read_exact_at(&mut buf, 0).is_err() {
        return Ok(None);
    }
    if &Digest::of(digest.algorithm(), &buf) != digest {
        tracing::error!(%digest, "the stored copy fails its digest check: not served (push it again to repair it)");
        return Err(OciError::new(ErrorKind::Unavailable)
            .msg(format!("the stored copy of {digest} is damaged; it is not served (a push of the blob repairs it)")));
    }
    let bytes: Rc<[u8]> = buf.into();
    let per_core = (app.cfg.limits.small_blob_cache_bytes / app.cfg.worker_count().max(1) as u64) as usize;
    crate::store::small::put(digest, bytes.clone(), per_core);
    Ok(Some(bytes))
}

async fn get(app: &App, req: &Request, repo: &RepoName, digest: &Digest) -> Result<Response, OciError> {
    let unknown = || OciError::new(ErrorKind::BlobUnknown).detail(serde_json::json!({ "digest": digest.to_string() }));
    // Read before any index read: a removal that starts after this keeps the file we may open
    // below out of the open-file cache (store::open_files).
    let generation = app.blobs.removal_generation();
    // The link decides whether the blob may be served (GC and deletes remove it); only then
    // may bytes come from anywhere, the caches included.
    let mut linked = app.index.repo_has_blob(repo, digest).map_err(index_error)?;
    // A cluster node that has not applied a push made elsewhere yet: catch up, look again.
    if !linked && crate::cluster::retry_after_catch_up(app).await? {
        linked = app.index.repo_has_blob(repo, digest).map_err(index_error)?;
    }
    if !linked {
        let Some((pt, route)) = app.pull_through.as_ref().and_then(|pt| pt.route(repo).map(|r| (pt, r))) else {
            return Err(unknown());
        };
        // A cached upstream's namespace: stream it from the upstream while caching it.
        match pt.blob(app, &route, repo, digest).await? {
            Fetch::Missing => return Err(unknown()),
            Fetch::Local => {}
            Fetch::Fill(fill) => return Ok(serve_fill(app, req, digest, fill, "upstream")),
        }
    }
    // GETs and HEADs both count as use: a client that HEADs a blob before pushing a manifest
    // that references it is protected by GC's grace period.
    if let Some(bytes) = crate::store::small::get(digest) {
        crate::store::access::used(&app.index, digest);
        return Ok(serve_memory(app, req, digest, bytes));
    }
    if let Some(open) = open_files::get(digest, generation) {
        crate::store::access::used(&app.index, digest);
        return Ok(serve_local(app, req, digest, open.size, open.file));
    }
    let mut meta = app.index.blob(digest).map_err(index_error)?.ok_or_else(unknown)?;
    crate::store::access::used(&app.index, digest);
    if meta.tier.is_local() {
        match app.blobs.open_blob(digest) {
            Ok(file)
                if meta.size <= app.cfg.limits.small_blob_max_bytes && app.cfg.limits.small_blob_cache_bytes > 0 =>
            {
                if let Some(bytes) = load_small(app, digest, &file, meta.size)? {
                    return Ok(serve_memory(app, req, digest, bytes));
                }
                return Ok(serve_local(app, req, digest, meta.size, Rc::new(file)));
            }
            Ok(file) => {
                let file = Rc::new(file);
                let open = OpenBlob { file: file.clone(), size: meta.size };
                open_files::put(digest, open, generation, app.blobs.removal_generation(), app.open_files_per_core);
                return Ok(serve_local(app, req, digest, meta.size, file));
            }
            // Evicted between our index read and the open: look again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && app.tier.is_some() => {
                meta = app.index.blob(digest).map_err(index_error)?.ok_or_else(unknown)?;
                if meta.tier.is_local() {
                    let file = app.blobs.open_blob(digest).map_err(|e| io_error(e, "open blob"))?;
                    return Ok(serve_local(app, req, digest, meta.size, Rc::new(file)));
                }
            }
            Err(e) => return Err(io_error(e, "open blob")),
        }
    }
    debug_assert_eq!(meta.tier, TierState::Remote);
    let Some(tier) = &app.tier else {
        return Err(OciError::new(ErrorKind::Unavailable).msg("blob is in S3 but storage.s3 is not configured"));
    };
    serve_remote(app, tier, req, repo, digest, meta.size).await
}

fn serve_local(app: &App, req: &Request, digest: &Digest, size: u64, file: Rc<std::fs::File>) -> Response {
    let mut resp = match wanted(req, size) {
        Err(r) => return r,
        Ok(Wanted::Whole) => headers(digest).with_body(ResponseBody::File { file, offset: 0, len: size }),
        Ok(Wanted::Part(offset, len)) => {
            partial(headers(digest).with_body(ResponseBody::File { file, offset, len }), offset, len, size)
        }
    };
    if req.method == Method::Get {
        app.metrics.blob_read("local", resp.body_len());
        resp.source = Some("local");
    }
    resp
}

/// A blob being filled (read through from S3, or fetched from a pull-through upstream): the
/// whole blob or a range of it, from the fill's file as far as it is written.
fn serve_fill(
    app: &App,
    req: &Request,
    digest: &Digest,
    fill: Arc<berth_tiering::Fill>,
    source: &'static str,
) -> Response {
    let size = fill.size;
    let mut resp = match wanted(req, size) {
        Err(r) => return r,
        Ok(Wanted::Whole) => headers(digest).with_body(ResponseBody::Fill { fill, offset: 0, len: size }),
        Ok(Wanted::Part(offset, len)) => {
            partial(headers(digest).with_body(ResponseBody::Fill { fill, offset, len }), offset, len, size)
        }
    };
    if req.method == Method::Get {
        app.metrics.blob_read(source, resp.body_len());
        resp.source = Some(source);
    }
    resp
}

/// The blob is only in S3 and S3 failed: the detail (endpoint, SDK message) goes to the log,
/// the client gets a short spec error (and `Retry-After`, added for every 503).
fn s3_unavailable(digest: &Digest) -> impl FnOnce(TierError) -> OciError + '_ {
    move |e| {
        tracing::warn!(%digest, error = %e, "S3 read failed for a blob that is only in S3");
        OciError::new(ErrorKind::Unavailable)
            .msg("the blob is in the registry's S3 tier, which cannot be reached right now; retry later")
    }
}

async fn serve_remote(
    app: &App,
    tier: &Arc<Tiering>,
    req: &Request,
    repo: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<Response, OciError> {
    let want = match wanted(req, size) {
        Err(r) => return Ok(r),
        Ok(w) => w,
    };
    if req.method == Method::Head {
        let len = match want {
            Wanted::Whole => size,
            Wanted::Part(_, len) => len,
        };
        let resp = headers(digest).header("Content-Length", len.to_string());
        return Ok(match want {
            Wanted::Whole => resp,
            Wanted::Part(offset, len) => partial(resp, offset, len, size),
        });
    }
    if tier.config().presign_redirect {
        let url = tier.presign(digest).await.map_err(s3_unavailable(digest))?;
        app.metrics.blob_read("redirect", 0);
        let mut resp = Response::new(307).header("Location", url).header("Docker-Content-Digest", digest.to_string());
        resp.source = Some("redirect");
        return Ok(resp);
    }
    let mut resp = match want {
        Wanted::Whole => match tier.read_through(digest, size).await {
            Ok(fill) => return Ok(serve_fill(app, req, digest, fill, "s3")),
            // Acknowledged on another cluster node with `durability = "local"`, not in S3 yet:
            // stream it from that node (not cached here: S3 will have it soon).
            Err(TierError::NotFound) if app.cluster.as_ref().is_some_and(|c| c.local_durability()) => {
                let cn = app.cluster.as_ref().expect("checked");
                let stream = cn.stream_from_origin(repo, digest, size).await?;
                let mut r = headers(digest).with_body(ResponseBody::Stream(stream));
                r.source = Some("peer");
                r
            }
            Err(e) => return Err(s3_unavailable(digest)(e)),
        },
        Wanted::Part(offset, len) => {
            let stream = tier.read_range(digest, offset, len).await.map_err(s3_unavailable(digest))?;
            let mut r = partial(headers(digest).with_body(ResponseBody::Stream(stream)), offset, len, size);
            r.source = Some("s3_range");
            r
        }
    };
    app.metrics.blob_read(resp.source.unwrap_or("s3"), resp.body_len());
    resp.source = resp.source.or(Some("s3"));
    Ok(resp)
}
