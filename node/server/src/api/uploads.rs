//! `/v2/<name>/blobs/uploads/[<id>]`: start (POST, with monolithic `?digest=` and
//! cross-repository `?mount=`), chunk (PATCH), status (GET), complete (PUT), cancel (DELETE).

use berth_types::{Algorithm, ContentRange, Digest, ErrorKind, OciError, RepoName};

use crate::app::App;
use crate::auth::policy::Action;
use crate::http::{Body, Method, Request, Response};
use crate::store::{index_error, UploadId};

fn location(repo: &RepoName, id: UploadId) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// The headers that tell a client where an upload stands: `Location`, `Range`, upload id.
fn with_progress(resp: Response, repo: &RepoName, id: UploadId, offset: u64) -> Response {
    resp.header("Location", location(repo, id))
        .header("Range", range(offset))
        .header("Docker-Upload-UUID", id.to_string())
}

fn accepted(app: &App, repo: &RepoName, id: UploadId, offset: u64) -> Response {
    let r = with_progress(Response::new(202), repo, id, offset);
    match app.cfg.uploads.chunk_min_length {
        0 => r,
        n => r.header("OCI-Chunk-Min-Length", n.to_string()),
    }
}

fn created(repo: &RepoName, digest: &Digest) -> Response {
    Response::new(201)
        .header("Location", format!("/v2/{repo}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest.to_string())
}

fn query_digest(req: &Request, key: &str) -> Result<Option<Digest>, OciError> {
    match req.query(key) {
        None => Ok(None),
        Some(s) => {
            s.parse().map(Some).map_err(|e| OciError::new(ErrorKind::DigestInvalid).msg(format!("invalid {key}: {e}")))
        }
    }
}

/// POST `/v2/<name>/blobs/uploads/`.
pub(super) async fn start(
    app: &App,
    req: &Request,
    body: &mut Body<'_>,
    repo: &RepoName,
    access: &super::Access<'_>,
    peer: Option<std::net::IpAddr>,
) -> Result<Response, OciError> {
    if req.method != Method::Post {
        return super::method_not_allowed("POST");
    }
    if let (Some(digest), Some(cn)) = (query_digest(req, "mount")?, &app.cluster) {
        if mount_clustered(app, cn, req, repo, &digest, access).await? {
            return Ok(created(repo, &digest));
        }
    } else if let Some(digest) = query_digest(req, "mount")? {
        // Serialised with GC's removal of this digest, and recorded as a use right away.
        let guard = app.blobs.lock(&digest);
        // A mount reads the source: only from a repository the caller may pull. Otherwise (and
        // when the blob is not there) it falls back to an upload, as the spec says, which
        // reveals nothing about other repositories.
        let linked = match req.query("from") {
            Some(from) => {
                let from: RepoName = from
                    .parse()
                    .map_err(|e| OciError::new(ErrorKind::NameInvalid).msg(format!("invalid from: {e}")))?;
                access.may(from.as_str(), Action::Pull)
                    && app.index.repo_has_blob(&from, &digest).map_err(index_error)?
                    && app.index.link_blob(repo, &digest).map_err(index_error)?
            }
            // Without `from`, mount from anywhere only where the caller may read everything
            // (auth off); with auth on this would be a read path and an existence oracle.
            None => access.unrestricted() && app.index.link_blob(repo, &digest).map_err(index_error)?,
        };
        if linked {
            crate::store::access::record_now(&app.index, &digest);
            return Ok(created(repo, &digest));
        }
        drop(guard);
        // Fall back to a regular upload session (spec: 202).
    } else if let Some(digest) = query_digest(req, "digest")? {
        app.uploads.monolithic(repo, &digest, body).await?;
        return Ok(created(repo, &digest));
    }
    let algorithm = match req.query("digest-algorithm") {
        None => Algorithm::Sha256,
        Some(a) => {
            a.parse().map_err(|e| OciError::new(ErrorKind::DigestInvalid).msg(format!("digest-algorithm: {e}")))?
        }
    };
    let owner = match (access.user(), peer) {
        (Some(u), _) => u.to_owned(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => "-".to_owned(),
    };
    let (id, session) = app.uploads.start(repo, algorithm, &owner)?;
    Ok(accepted(app, repo, id, session.offset))
}

/// A mount in a cluster: the source link as this node sees it (caught up on a miss), then a
/// link through the change log, refused if GC removed the blob meanwhile. False: upload it.
async fn mount_clustered(
    app: &App,
    cn: &crate::cluster::ClusterNode,
    req: &Request,
    repo: &RepoName,
    digest: &Digest,
    access: &super::Access<'_>,
) -> Result<bool, OciError> {
    let since = cn.cluster.applied();
    let source_ok = || -> Result<bool, OciError> {
        Ok(match req.query("from") {
            Some(from) => {
                let from: RepoName = from
                    .parse()
                    .map_err(|e| OciError::new(ErrorKind::NameInvalid).msg(format!("invalid from: {e}")))?;
                access.may(from.as_str(), Action::Pull)
                    && app.index.repo_has_blob(&from, digest).map_err(index_error)?
            }
            None => access.unrestricted() && app.index.blob(digest).map_err(index_error)?.is_some(),
        })
    };
    let mut ok = source_ok()?;
    if !ok {
        cn.catch_up().await?;
        ok = source_ok()?;
    }
    let Some(meta) = app.index.blob(digest).map_err(index_error)?.filter(|_| ok) else { return Ok(false) };
    if !cn.link_blob(repo, digest, meta.size, since).await? {
        return Ok(false);
    }
    crate::store::access::record_now(&app.index, digest);
    Ok(true)
}

/// Requests on an existing session. A 416 carries the session's current `Range` and
/// `Location`, so the client can resume from it.
pub(super) async fn handle(
    app: &App,
    req: &Request,
    body: &mut Body<'_>,
    repo: &RepoName,
    id: UploadId,
) -> Result<Response, OciError> {
    match on_session(app, req, body, repo, id).await {
        Err(e) if e.kind == ErrorKind::RangeInvalid => {
            let offset = app.uploads.session(repo, id).map(|s| s.offset).unwrap_or(0);
            Ok(with_progress(Response::from(e), repo, id, offset))
        }
        other => other,
    }
}

async fn on_session(
    app: &App,
    req: &Request,
    body: &mut Body<'_>,
    repo: &RepoName,
    id: UploadId,
) -> Result<Response, OciError> {
    match req.method {
        Method::Get => {
            let s = app.uploads.session(repo, id)?;
            Ok(with_progress(Response::new(204), repo, id, s.offset))
        }
        Method::Patch => patch(app, req, body, repo, id).await,
        Method::Put => {
            let digest = query_digest(req, "digest")?
                .ok_or_else(|| OciError::new(ErrorKind::DigestInvalid).msg("digest query parameter is required"))?;
            if let Some(cr) = req.header("content-range") {
                // A final chunk with a range must start where the upload stands.
                let cr: ContentRange = cr.parse().map_err(|_| bad_range())?;
                let s = app.uploads.session(repo, id)?;
                if cr.start != s.offset {
                    return Err(crate::store::range_error(s.offset));
                }
            }
            app.uploads.complete(repo, id, &digest, body).await?;
            Ok(created(repo, &digest))
        }
        Method::Delete => {
            app.uploads.cancel(repo, id)?;
            Ok(Response::new(204))
        }
        _ => super::method_not_allowed("GET, PATCH, PUT, DELETE"),
    }
}

fn bad_range() -> OciError {
    OciError::new(ErrorKind::RangeInvalid).msg("malformed Content-Range; expected <start>-<end>")
}

async fn patch(
    app: &App,
    req: &Request,
    body: &mut Body<'_>,
    repo: &RepoName,
    id: UploadId,
) -> Result<Response, OciError> {
    let start = match req.header("content-range") {
        None => None,
        Some(cr) => {
            let cr: ContentRange = cr.parse().map_err(|_| bad_range())?;
            if let Some(len) = body.declared_len() {
                if len != cr.len() {
                    return Err(OciError::new(ErrorKind::SizeInvalid)
                        .msg(format!("Content-Range covers {} bytes, Content-Length is {len}", cr.len())));
                }
            }
            Some(cr.start)
        }
    };
    let offset = app.uploads.append(repo, id, start, body).await?;
    Ok(accepted(app, repo, id, offset))
}
