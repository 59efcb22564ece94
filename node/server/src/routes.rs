//! Request paths parsed into a typed endpoint, once. Repository names contain `/`, so paths
//! are matched from the right.

use berth_types::{Digest, ErrorKind, OciError, Reference, RepoName};

use crate::store::UploadId;

/// Every resource the node serves.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/manifests/<x>` where `<x>` is neither a tag nor a digest: nothing can
    /// exist there (GET/HEAD/DELETE answer 404 `MANIFEST_UNKNOWN`, PUT 400 `TAG_INVALID`).
    ManifestBadReference(RepoName, String),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, UploadId),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
    /// `/v2/<name>/manifests/<reference>/scan`: a manifest's vulnerability scan (GET) or a
    /// request for one (POST).
    ManifestScan(RepoName, Reference),
    /// `/v2/<name>/scan/summary`: the repository's scan summary.
    ScanSummary(RepoName),
    /// `/token`: the registry token endpoint (GET with Basic or anonymous, OAuth2 POST form).
    Token,
    /// `/token/jwks.json`: the public keys tokens are signed with.
    Jwks,
    /// `/healthz`
    Health,
    /// `/readyz`
    Ready,
    /// `/metrics`
    Metrics,
}

impl Endpoint {
    /// The repository a read endpoint (GET/HEAD of manifests, blobs, tags, referrers) names:
    /// the pull-through cache may serve it under another name.
    pub fn read_repo_mut(&mut self) -> Option<&mut RepoName> {
        match self {
            Endpoint::Tags(r)
            | Endpoint::Manifest(r, _)
            | Endpoint::ManifestBadReference(r, _)
            | Endpoint::Blob(r, _)
            | Endpoint::Referrers(r, _) => Some(r),
            _ => None,
        }
    }

    /// The repository a write endpoint (uploads, manifest PUT, DELETE) changes, given `method`.
    pub fn written_repo(&self, method: crate::http::Method) -> Option<&RepoName> {
        use crate::http::Method;
        match (self, method) {
            (Endpoint::UploadStart(r) | Endpoint::Upload(r, _), _) => Some(r),
            (Endpoint::Manifest(r, _) | Endpoint::Blob(r, _), Method::Put | Method::Delete) => Some(r),
            _ => None,
        }
    }

    /// Whether this is a read whose answer another node's write can change (a tag, a list, a
    /// scan report): in a cluster it first sees every write acknowledged before it
    /// (`Cluster::fresh`). Content-addressed reads (blobs, manifests by digest) cannot change
    /// and never ask.
    pub fn reads_changeable(&self, method: crate::http::Method) -> bool {
        use crate::http::Method;
        if !matches!(method, Method::Get | Method::Head) {
            return false;
        }
        match self {
            Endpoint::Catalog
            | Endpoint::Tags(..)
            | Endpoint::Referrers(..)
            | Endpoint::ManifestScan(..)
            | Endpoint::ScanSummary(..) => true,
            Endpoint::Manifest(_, reference) => matches!(reference, Reference::Tag(_)),
            _ => false,
        }
    }

    /// Stable name for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Tags(..) => "tags",
            Endpoint::Manifest(..) | Endpoint::ManifestBadReference(..) => "manifest",
            Endpoint::Blob(..) => "blob",
            Endpoint::UploadStart(..) => "upload_start",
            Endpoint::Upload(..) => "upload",
            Endpoint::Referrers(..) => "referrers",
            Endpoint::ManifestScan(..) => "manifest_scan",
            Endpoint::ScanSummary(..) => "scan_summary",
            Endpoint::Token => "token",
            Endpoint::Jwks => "jwks",
            Endpoint::Health => "healthz",
            Endpoint::Ready => "readyz",
            Endpoint::Metrics => "metrics",
        }
    }

    /// Whether the endpoint is part of the registry API (`/v2/`), i.e. subject to auth.
    pub fn is_registry_api(&self) -> bool {
        !matches!(self, Endpoint::Health | Endpoint::Ready | Endpoint::Metrics | Endpoint::Token | Endpoint::Jwks)
    }
}

fn name(s: &str) -> Result<RepoName, OciError> {
    s.parse().map_err(|e| OciError::new(ErrorKind::NameInvalid).msg(format!("invalid repository name: {e}")))
}

fn digest(s: &str) -> Result<Digest, OciError> {
    s.parse().map_err(|e| OciError::new(ErrorKind::DigestInvalid).msg(format!("invalid digest: {e}")))
}

/// Parse a request path.
pub fn route(path: &str) -> Result<Endpoint, OciError> {
    match path {
        "/healthz" => return Ok(Endpoint::Health),
        "/readyz" => return Ok(Endpoint::Ready),
        "/metrics" => return Ok(Endpoint::Metrics),
        "/token" => return Ok(Endpoint::Token),
        "/token/jwks.json" => return Ok(Endpoint::Jwks),
        "/v2" | "/v2/" => return Ok(Endpoint::Base),
        "/v2/_catalog" => return Ok(Endpoint::Catalog),
        _ => {}
    }
    let not_found = || OciError::new(ErrorKind::NotFound);
    let rest = path.strip_prefix("/v2/").ok_or_else(not_found)?;
    let mut parts = rest.rsplitn(3, '/');
    let last = parts.next().ok_or_else(not_found)?;
    let kind = parts.next().ok_or_else(not_found)?;
    let repo = parts.next().ok_or_else(not_found)?;
    match kind {
        "manifests" => {
            let repo = name(repo)?;
            match last.parse() {
                Ok(r) => Ok(Endpoint::Manifest(repo, r)),
                Err(_) => Ok(Endpoint::ManifestBadReference(repo, last.to_owned())),
            }
        }
        "blobs" if last == "uploads" => Ok(Endpoint::UploadStart(name(repo)?)),
        "blobs" => Ok(Endpoint::Blob(name(repo)?, digest(last)?)),
        "uploads" => {
            let repo = repo.strip_suffix("/blobs").ok_or_else(not_found)?;
            if last.is_empty() {
                Ok(Endpoint::UploadStart(name(repo)?))
            } else {
                Ok(Endpoint::Upload(name(repo)?, last.parse()?))
            }
        }
        "tags" if last == "list" => Ok(Endpoint::Tags(name(repo)?)),
        "referrers" => Ok(Endpoint::Referrers(name(repo)?, digest(last)?)),
        "scan" if last == "summary" => Ok(Endpoint::ScanSummary(name(repo)?)),
        // `<name>/manifests/<ref>/scan` (the seed's path). A tag literally named `manifests`
        // makes the path ambiguous; the OCI reading (`manifests` arm above) wins.
        reference if last == "scan" => match repo.strip_suffix("/manifests") {
            Some(repo) => {
                let r = reference.parse().map_err(|_| {
                    OciError::new(ErrorKind::ManifestUnknown)
                        .msg(format!("{reference:?} is neither a valid tag nor a digest"))
                })?;
                Ok(Endpoint::ManifestScan(name(repo)?, r))
            }
            None => Err(not_found()),
        },
        _ => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(route("/v2/").unwrap(), Endpoint::Base));
        assert!(matches!(route("/v2/a/b/tags/list").unwrap(), Endpoint::Tags(r) if r.as_str() == "a/b"));
        assert!(
            matches!(route("/v2/a/manifests/manifests/latest").unwrap(), Endpoint::Manifest(r, _) if r.as_str() == "a/manifests")
        );
        assert!(matches!(route("/v2/x/blobs/uploads/").unwrap(), Endpoint::UploadStart(r) if r.as_str() == "x"));
        assert!(matches!(route("/v2/x/blobs/uploads").unwrap(), Endpoint::UploadStart(r) if r.as_str() == "x"));
        assert!(
            matches!(route("/v2/x/blobs/blobs/uploads/").unwrap(), Endpoint::UploadStart(r) if r.as_str() == "x/blobs")
        );
        let id = "0b0a4f0e-5a43-4c34-8e2e-0f4f0d8c7c11";
        assert!(
            matches!(route(&format!("/v2/x/y/blobs/uploads/{id}")).unwrap(), Endpoint::Upload(r, _) if r.as_str() == "x/y")
        );
        assert_eq!(route("/v2/../blobs/uploads/").unwrap_err().kind, ErrorKind::NameInvalid);
        assert_eq!(route("/v2/x/blobs/sha256:zz").unwrap_err().kind, ErrorKind::DigestInvalid);
        assert_eq!(route("/v2/x/unknown/y").unwrap_err().kind, ErrorKind::NotFound);
        assert!(matches!(
            route("/v2/x/manifests/.INVALID_MANIFEST_NAME").unwrap(),
            Endpoint::ManifestBadReference(r, s) if r.as_str() == "x" && s == ".INVALID_MANIFEST_NAME"
        ));
        assert!(
            matches!(route("/v2/my/app/manifests/v1/scan").unwrap(), Endpoint::ManifestScan(r, _) if r.as_str() == "my/app")
        );
        assert!(
            matches!(route("/v2/my/app/scan/summary").unwrap(), Endpoint::ScanSummary(r) if r.as_str() == "my/app")
        );
        // OCI wins where the path is ambiguous: tag "scan" of repository "a/manifests".
        assert!(
            matches!(route("/v2/a/manifests/manifests/scan").unwrap(), Endpoint::Manifest(r, _) if r.as_str() == "a/manifests")
        );
        assert_eq!(route("/v2/x/other/v1/scan").unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(route("/etc/passwd").unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(route("/v2/%2e%2e/tags/list").unwrap_err().kind, ErrorKind::NameInvalid);
    }
}
