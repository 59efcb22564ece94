//! `/v2/<name>/manifests/<reference>`: GET/HEAD the exact stored bytes, PUT with validation and
//! reference checks (plus `?tag=` for several tags at once), DELETE by tag or by digest.

use berth_index::ManifestRecord;
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
) -> Result<Response, OciError> {
    match req.method {
        Method::Get | Method::Head => get(app, repo, reference),
        Method::Put => put(app, req, body, repo, reference).await,
        Method::Delete => delete(app, repo, reference),
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

fn get(app: &App, repo: &RepoName, reference: &Reference) -> Result<Response, OciError> {
    let digest = resolve(app, repo, reference)?;
    let (record, bytes) =
        app.index.manifest(repo, &digest).map_err(index_error)?.ok_or_else(|| unknown(app, repo, reference))?;
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
    let parsed = manifest::parse(&bytes, req.header("content-type"))?;
    let digest = match reference {
        Reference::Digest(d) => {
            let computed = Digest::of(d.algorithm(), &bytes);
            if &computed != d {
                return Err(
                    OciError::new(ErrorKind::DigestInvalid).msg(format!("manifest digest is {computed}, not {d}"))
                );
            }
            computed
        }
        Reference::Tag(_) => Digest::of(Algorithm::Sha256, &bytes),
    };
    for b in &parsed.blobs {
        if !app.index.repo_has_blob(repo, b).map_err(index_error)? {
            return Err(OciError::new(ErrorKind::ManifestBlobUnknown)
                .msg(format!("blob {b} is not in repository {repo}"))
                .detail(serde_json::json!({ "digest": b.to_string() })));
        }
    }
    for m in &parsed.manifests {
        if !app.index.has_manifest(repo, m).map_err(index_error)? {
            return Err(OciError::new(ErrorKind::ManifestBlobUnknown)
                .msg(format!("manifest {m} is not in repository {repo}"))
                .detail(serde_json::json!({ "digest": m.to_string() })));
        }
    }
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
    let record = ManifestRecord {
        media_type: parsed.media_type.as_str().to_owned(),
        artifact_type: parsed.artifact_type.clone(),
        subject: parsed.subject.clone(),
        blobs: parsed.blobs.clone(),
        manifests: parsed.manifests.clone(),
        annotations: parsed.annotations.clone(),
        pushed_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    let outcome = app.index.put_manifest(repo, &digest, &record, &bytes, &tags).map_err(index_error)?;
    if let Some(m) = outcome.missing {
        // Removed by garbage collection between the check above and the commit.
        return Err(OciError::new(ErrorKind::ManifestBlobUnknown)
            .msg(format!("{m} is no longer in repository {repo}"))
            .detail(serde_json::json!({ "digest": m.to_string() })));
    }
    let mut resp = Response::new(201)
        .header("Location", format!("/v2/{repo}/manifests/{digest}"))
        .header("Docker-Content-Digest", digest.to_string());
    if let Some(s) = &parsed.subject {
        resp = resp.header("OCI-Subject", s.to_string());
    }
    Ok(resp)
}

fn delete(app: &App, repo: &RepoName, reference: &Reference) -> Result<Response, OciError> {
    super::check_deletes(app)?;
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
