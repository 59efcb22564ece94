//! `/v2/<name>/manifests/<reference>/scan` (GET/HEAD: the scan of that manifest; POST: ask for a
//! (re)scan, 202) and `/v2/<name>/scan/summary` (the latest tag's scan and the repository's
//! last scan time). Served from the node's own scan records; a POST leaves a request in the
//! change feed for the sidecar. With `[scan] enabled = false` they answer 405 UNSUPPORTED
//! saying how to turn scanning on.

use berth_internal_api::scan::{ScanRecord, ScanStatus};
use berth_types::{Digest, ErrorKind, OciError, Reference, RepoName};
use serde_json::{json, Value};

use crate::app::App;
use crate::http::{Method, Request, Response};
use crate::store::index_error;

fn disabled() -> OciError {
    OciError::new(ErrorKind::Unsupported).msg(
        "vulnerability scanning is not enabled on this registry: set [scan] enabled = true in the node's \
         configuration and run berth-admin with a Trivy server ([scan] in its configuration)",
    )
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

fn resolve(app: &App, repo: &RepoName, reference: &Reference) -> Result<Digest, OciError> {
    let unknown = || {
        OciError::new(ErrorKind::ManifestUnknown)
            .detail(json!({ "name": repo.as_str(), "reference": reference.to_string() }))
    };
    let digest = match reference {
        Reference::Digest(d) => d.clone(),
        Reference::Tag(t) => app.index.tag(repo, t).map_err(index_error)?.ok_or_else(unknown)?,
    };
    if !app.index.has_manifest(repo, &digest).map_err(index_error)? {
        return Err(unknown());
    }
    Ok(digest)
}

/// The seed's JSON shape, plus the policy's decision.
fn render(app: &App, repo: &RepoName, digest: &Digest, record: Option<&ScanRecord>) -> Value {
    let blocked = app.scans.as_ref().and_then(|b| b.denies(repo, digest));
    let Some(r) = record else {
        return json!({ "digest": digest.to_string(), "status": "not_scanned", "blocked": blocked.is_some(), "block_reason": blocked });
    };
    let details: Vec<Value> = r
        .findings
        .iter()
        .map(|f| {
            json!({
                "cve": f.cve, "severity": f.severity.as_str(), "package": f.package,
                "installed_version": f.installed_version, "fixed_version": f.fixed_version,
                "title": f.title, "description": f.description, "cvss": f.cvss, "cvss_vector": f.cvss_vector,
                "layer_digest": f.layer_digest, "pkg_type": f.pkg_type, "ecosystem": f.ecosystem,
            })
        })
        .collect();
    json!({
        "digest": digest.to_string(),
        "status": r.status.as_str(),
        "scanned_at": r.scanned_at_ms.map(rfc3339),
        "db_version": r.db_version,
        "scanner": r.scanner,
        "vulnerabilities": {
            "critical": r.counts.critical, "high": r.counts.high, "medium": r.counts.medium,
            "low": r.counts.low, "unknown": r.counts.unknown,
        },
        "total_vulnerabilities": r.counts.total(),
        "details": details,
        "error": r.error,
        "blocked": blocked.is_some(),
        "block_reason": blocked,
    })
}

/// `…/manifests/<ref>/scan`.
pub(super) async fn manifest(
    app: &App,
    req: &Request,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Response, OciError> {
    if app.scans.is_none() {
        return Err(disabled());
    }
    match req.method {
        Method::Get | Method::Head => {
            let digest = resolve(app, repo, reference)?;
            let record = app.index.scan(&digest).map_err(index_error)?;
            Ok(Response::json(200, &render(app, repo, &digest, record.as_ref())))
        }
        Method::Post => {
            let digest = resolve(app, repo, reference)?;
            match &app.cluster {
                Some(cn) => cn.request_scan(repo, &digest).await?,
                None => app.index.request_scan(repo, &digest).map_err(index_error)?,
            }
            Ok(Response::json(
                202,
                &json!({ "digest": digest.to_string(), "status": ScanStatus::Queued.as_str(),
                         "scan": format!("/v2/{repo}/manifests/{digest}/scan") }),
            )
            .header("Location", format!("/v2/{repo}/manifests/{digest}/scan")))
        }
        _ => super::method_not_allowed("GET, HEAD, POST"),
    }
}

/// `…/scan/summary`: the most recently set tag's scan, and when anything in the repository was
/// last scanned.
pub(super) fn summary(app: &App, req: &Request, repo: &RepoName) -> Result<Response, OciError> {
    if app.scans.is_none() {
        return Err(disabled());
    }
    if !matches!(req.method, Method::Get | Method::Head) {
        return super::method_not_allowed("GET, HEAD");
    }
    let tags = app.index.tags_with_times(repo).map_err(index_error)?;
    if tags.is_empty() && !app.index.repo_exists(repo).map_err(index_error)? {
        return Err(OciError::new(ErrorKind::NameUnknown).detail(json!({ "name": repo.as_str() })));
    }
    let latest = tags.iter().max_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.as_str().cmp(b.0.as_str())));
    let mut last_scanned: Option<u64> = None;
    let (mut scanned, mut blocked) = (0u64, 0u64);
    let mut seen = std::collections::HashSet::new();
    for (_, d, _) in &tags {
        if !seen.insert(d.clone()) {
            continue;
        }
        if let Some(r) = app.index.scan(d).map_err(index_error)? {
            if r.status == ScanStatus::Completed {
                scanned += 1;
            }
            last_scanned = last_scanned.max(r.scanned_at_ms);
        }
        if app.scans.as_ref().and_then(|b| b.denies(repo, d)).is_some() {
            blocked += 1;
        }
    }
    let mut out = json!({
        "repository": repo.as_str(),
        "latest_tag": latest.map(|t| t.0.to_string()),
        "last_scanned": last_scanned.map(rfc3339),
        "images_tagged": seen.len(),
        "images_scanned": scanned,
        "images_blocked": blocked,
    });
    if let Some((tag, digest, _)) = latest {
        let record = app.index.scan(digest).map_err(index_error)?;
        let c = record.as_ref().map(|r| r.counts).unwrap_or_default();
        out["latest_digest"] = json!(digest.to_string());
        out["status"] = json!(record.as_ref().map_or("not_scanned", |r| r.status.as_str()));
        out["total_vulnerabilities"] = json!(c.total());
        out["critical_count"] = json!(c.critical);
        out["high_count"] = json!(c.high);
        out["medium_count"] = json!(c.medium);
        out["low_count"] = json!(c.low);
        out["unknown_count"] = json!(c.unknown);
        let _ = tag;
    }
    Ok(Response::json(200, &out))
}
