//! `/v2/<name>/manifests/<reference>`: GET/HEAD the exact stored bytes, PUT with validation and
//! reference checks (plus `?tag=` for several tags at once), DELETE by tag or by digest.

use std::collections::HashMap;

use berth_types::{Algorithm, Digest, ErrorKind, OciError, Reference, RepoName, Tag};

use crate::app::App;
use crate::http::{Body, BodyError, Method, Request, Response};
use crate::manifest;
use crate::store::index_error;

pub(super) async fn handle(
    app: &App,
    req: &Request,
    body: &mut Body<'_>,
    repo: &RepoName,
    reference: &Reference,
    enforce_policy: bool,
) -> Result<Response, OciError> {
    match req.method {
        Method::Get | Method::Head => get(app, repo, reference, enforce_policy).await,
        Method::Put => put(app, req, body, repo, reference).await,
        Method::Delete => delete(app, repo, reference).await,
        _ => super::method_not_allowed("GET, HEAD, PUT, DELETE"),
    }
}

/// A reference that is neither a tag nor a digest: no manifest can exist under it.
pub(super) fn bad_reference(req: &Request, repo: &RepoName, raw: &str) -> Result<Response, OciError> {
    let detail = serde_json::json!({ "name": repo.as_str(), "reference": raw });
    match req.method {
        Method::Get | Method::Head | Method::Delete => Err(OciError::new(ErrorKind::ManifestUnknown).detail(detail)),
        Method::Put => Err(OciError::new(ErrorKind::TagInvalid)
            .msg(format!("{raw:?} is neither a valid tag nor a digest"))
            .detail(detail)),
        _ => super::method_not_allowed("GET, HEAD, PUT, DELETE"),
    }
}

fn unknown(app: &App, repo: &RepoName, reference: &Reference) -> OciError {
    let kind = match app.index.repo_exists(repo) {
        Ok(false) => ErrorKind::NameUnknown,
        _ => ErrorKind::ManifestUnknown,
    };
    OciError::new(kind).detail(serde_json::json!({ "name": repo.as_str(), "reference": reference.to_string() }))
}

fn resolve(app: &App, repo: &RepoName, reference: &Reference) -> Result<Digest, OciError> {
    match reference {
        Reference::Digest(d) => Ok(d.clone()),
        Reference::Tag(t) => app.index.tag(repo, t).map_err(index_error)?.ok_or_else(|| unknown(app, repo, reference)),
    }
}

async fn get(app: &App, repo: &RepoName, reference: &Reference, enforce_policy: bool) -> Result<Response, OciError> {
    let digest = match app.pull_through.as_ref().and_then(|pt| pt.route(repo).map(|r| (pt, r))) {
        // A cached upstream's namespace: fetched or revalidated as its age requires.
        Some((pt, route)) => {
            pt.manifest(app, &route, repo, reference).await?.ok_or_else(|| unknown(app, repo, reference))?
        }
        None => match resolve(app, repo, reference) {
            // A cluster node that has not applied a push made elsewhere yet: catch up, look again.
            Err(e) if crate::cluster::retry_after_catch_up(app).await? => {
                let _ = e;
                resolve(app, repo, reference)?
            }
            r => r?,
        },
    };
    // The pull policy, decided from the node's own scan records (no I/O: an in-memory map).
    if enforce_policy {
        if let Some(reason) = app.scans.as_ref().and_then(|b| b.denies(repo, &digest)) {
            app.metrics.policy_denials.inc();
            return Err(OciError::new(ErrorKind::Denied)
                .msg(reason)
                .detail(serde_json::json!({ "name": repo.as_str(), "digest": digest.to_string() })));
        }
    }
    let mut found = app.index.manifest(repo, &digest).map_err(index_error)?;
    if found.is_none() && crate::cluster::retry_after_catch_up(app).await? {
        found = app.index.manifest(repo, &digest).map_err(index_error)?;
    }
    let (record, bytes) = found.ok_or_else(|| unknown(app, repo, reference))?;
    Ok(Response::bytes(200, &record.media_type, bytes)
        .header("Docker-Content-Digest", digest.to_string())
        .header("ETag", format!("\"{digest}\"")))
}

async fn put(
    app: &App,
    req: &Request,
    body: &mut Body<'_>,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Response, OciError> {
    let limit = app.cfg.limits.max_manifest_bytes;
    let bytes = body.read_to_end(limit).await.map_err(|e| match e {
        BodyError::TooLarge(_) => OciError::new(ErrorKind::TooLarge).msg(format!("manifest larger than {limit} bytes")),
        BodyError::Malformed(m) => OciError::new(ErrorKind::BadRequest).msg(m),
        BodyError::Io(e) => OciError::new(ErrorKind::ManifestInvalid).msg(format!("manifest body: {e}")),
    })?;
    // Parse and digest: a large manifest (up to `max_manifest_bytes`) takes tens of
    // milliseconds of CPU, so it is validated off the serving core.
    let content_type = req.header("content-type").map(str::to_owned);
    let max = app.cfg.limits.max_manifest_descriptors;
    let algorithm = match reference {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => Algorithm::Sha256,
    };
    let validate = move |bytes: Vec<u8>| {
        let parsed = manifest::parse_limited(&bytes, content_type.as_deref(), max);
        let digest = Digest::of(algorithm, &bytes);
        (bytes, parsed, digest)
    };
    let (bytes, parsed, computed) = if bytes.len() <= crate::offload::INLINE_BYTES {
        validate(bytes)
    } else {
        crate::offload::run(move || validate(bytes)).await.ok_or_else(|| {
            OciError::new(ErrorKind::Unavailable).msg("too many large manifests being validated; retry")
        })?
    };
    let parsed = parsed?;
    let digest = match reference {
        Reference::Digest(d) => {
            if &computed != d {
                return Err(
                    OciError::new(ErrorKind::DigestInvalid).msg(format!("manifest digest is {computed}, not {d}"))
                );
            }
            computed
        }
        Reference::Tag(_) => computed,
    };
    // The log position this validation sees (cluster mode): removals committed after it are
    // checked again inside the commit.
    let since = app.cluster.as_ref().map_or(0, |c| c.cluster.applied());
    let absent = match check_references(app, repo, &parsed) {
        Err(e) if e.kind == ErrorKind::ManifestBlobUnknown && crate::cluster::retry_after_catch_up(app).await? => {
            check_references(app, repo, &parsed)?
        }
        r => r?,
    };
    let mut tags: Vec<Tag> = Vec::new();
    if let Reference::Tag(t) = reference {
        tags.push(t.clone());
    }
    for t in req.query_all("tag") {
        let t: Tag =
            t.parse().map_err(|e| OciError::new(ErrorKind::ManifestInvalid).msg(format!("invalid tag {t:?}: {e}")))?;
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let record = parsed.record(absent);
    if let Some(cn) = &app.cluster {
        cn.put_manifest(repo, &digest, &record, &bytes, &tags, since).await?;
        return Ok(created(repo, &digest, &parsed, &tags));
    }
    let outcome = app.index.put_manifest(repo, &digest, &record, &bytes, &tags).map_err(index_error)?;
    if let Some(m) = outcome.missing {
        // Removed by garbage collection between the check above and the commit.
        return Err(OciError::new(ErrorKind::ManifestBlobUnknown)
            .msg(format!("{m} is no longer in repository {repo}"))
            .detail(serde_json::json!({ "digest": m.to_string() })));
    }
    Ok(created(repo, &digest, &parsed, &tags))
}

fn created(repo: &RepoName, digest: &Digest, parsed: &manifest::ParsedManifest, tags: &[Tag]) -> Response {
    let mut resp = Response::new(201)
        .header("Location", format!("/v2/{repo}/manifests/{digest}"))
        .header("Docker-Content-Digest", digest.to_string());
    if let Some(s) = &parsed.subject {
        resp = resp.header("OCI-Subject", s.to_string());
    }
    for t in tags {
        resp = resp.header("OCI-Tag", t.to_string());
    }
    resp
}

fn blob_unknown(what: &str, label: &str, d: &Digest, repo: &RepoName) -> OciError {
    OciError::new(ErrorKind::ManifestBlobUnknown)
        .msg(format!("{label}: {what} {d} is not in repository {repo}"))
        .detail(serde_json::json!({ "digest": d.to_string(), "descriptor": label }))
}

fn size_mismatch(label: &str, d: &Digest, declared: u64, stored: u64) -> OciError {
    OciError::new(ErrorKind::ManifestInvalid)
        .msg(format!("{label}: descriptor size {declared} does not match the stored size {stored} of {d}"))
        .detail(serde_json::json!({ "descriptor": label, "digest": d.to_string(), "size": declared, "stored_size": stored }))
}

/// Every reference must exist in the repository with the declared size, except those the
/// `[validation]` policy lets be absent. Returns the absent ones.
fn check_references(app: &App, repo: &RepoName, parsed: &manifest::ParsedManifest) -> Result<Vec<Digest>, OciError> {
    let policy = &app.cfg.validation;
    let mut absent = Vec::new();
    // Each distinct target is looked up once (an index may list one child thousands of times);
    // later descriptors of it are checked against the remembered size.
    let mut blob_sizes: HashMap<&Digest, Option<u64>> = HashMap::new();
    for r in &parsed.blob_refs {
        let size = match blob_sizes.get(&r.digest) {
            Some(s) => *s,
            None => {
                let s = if app.index.repo_has_blob(repo, &r.digest).map_err(index_error)? {
                    app.index.blob(&r.digest).map_err(index_error)?.map(|m| m.size)
                } else {
                    None
                };
                blob_sizes.insert(&r.digest, s);
                s
            }
        };
        match size {
            Some(stored) if stored != r.size => return Err(size_mismatch(&r.label, &r.digest, r.size, stored)),
            Some(_) => {}
            None if policy.allow_absent_layers && r.label != "config" => absent.push(r.digest.clone()),
            None => return Err(blob_unknown("blob", &r.label, &r.digest, repo)),
        }
    }
    let mut manifest_sizes: HashMap<&Digest, Option<u64>> = HashMap::new();
    for r in &parsed.manifest_refs {
        let size = match manifest_sizes.get(&r.digest) {
            Some(s) => *s,
            None => {
                let s = app.index.manifest_size(repo, &r.digest).map_err(index_error)?;
                manifest_sizes.insert(&r.digest, s);
                s
            }
        };
        match size {
            Some(stored) if stored != r.size => return Err(size_mismatch(&r.label, &r.digest, r.size, stored)),
            Some(_) => {}
            None if policy.child_may_be_absent(r.platform.as_deref()) => absent.push(r.digest.clone()),
            None => {
                let what = match &r.platform {
                    Some(p) => format!("manifest ({p})"),
                    None => "manifest".to_owned(),
                };
                return Err(blob_unknown(&what, &r.label, &r.digest, repo));
            }
        }
    }
    absent.sort();
    absent.dedup();
    Ok(absent)
}

async fn delete(app: &App, repo: &RepoName, reference: &Reference) -> Result<Response, OciError> {
    super::check_deletes(app)?;
    if let Some(cn) = &app.cluster {
        let exists = || match reference {
            Reference::Tag(t) => app.index.tag(repo, t).map(|d| d.is_some()),
            Reference::Digest(d) => app.index.has_manifest(repo, d),
        };
        let mut found = exists().map_err(index_error)?;
        if !found {
            cn.catch_up().await?;
            found = exists().map_err(index_error)?;
        }
        if !found {
            return Err(unknown(app, repo, reference));
        }
        let write = match reference {
            Reference::Tag(t) => berth_cluster::Write::TagDeleted { repo: repo.clone(), tag: t.clone() },
            Reference::Digest(d) => berth_cluster::Write::ManifestDeleted { repo: repo.clone(), digest: d.clone() },
        };
        cn.delete(write).await?;
        return Ok(Response::new(202));
    }
    let found = match reference {
        Reference::Tag(t) => app.index.delete_tag(repo, t).map_err(index_error)?,
        Reference::Digest(d) => app.index.delete_manifest(repo, d).map_err(index_error)?,
    };
    if found {
        Ok(Response::new(202))
    } else {
        Err(unknown(app, repo, reference))
    }
}
