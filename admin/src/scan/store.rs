//! Scan results in Postgres (`scans`, `findings`), on the node (`PUT /internal/v1/scans/…`,
//! which the pull policy reads), and in the registry as referrers of the image (the CycloneDX
//! SBOM and the Trivy JSON report, each an OCI artifact whose `subject` is the image; a newer
//! one replaces the older).

use std::collections::BTreeSet;
use std::time::Duration;

use berth_internal_api::scan::{sort_findings, Finding, ScanRecord, ScanStatus, SeverityCounts};
use serde_json::{json, Value};
use sha2::Digest as _;
use tokio_postgres::{Client, GenericClient};

use crate::node::{NodeClient, NodeError};

/// Artifact type of the SBOM referrer.
pub const SBOM_ARTIFACT: &str = "application/vnd.cyclonedx+json";
/// Artifact type of the report referrer: Trivy's own JSON report format.
pub const REPORT_ARTIFACT: &str = "application/vnd.aquasec.trivy.report.v1+json";

/// What the stored row says about a digest.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Status.
    pub status: ScanStatus,
    /// DB version of its findings.
    pub db_version: Option<String>,
    /// Its SBOM, when the image was analysed.
    pub sbom: Option<Value>,
    /// Referrer digests pushed last time (SBOM, report).
    pub referrers: (Option<String>, Option<String>),
}

fn status(s: &str) -> ScanStatus {
    match s {
        "queued" => ScanStatus::Queued,
        "running" => ScanStatus::Running,
        "completed" => ScanStatus::Completed,
        "unsupported" => ScanStatus::Unsupported,
        _ => ScanStatus::Failed,
    }
}

/// The stored scan of `digest`.
pub async fn stored(c: &Client, digest: &str) -> Result<Option<Stored>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "SELECT status, db_version, sbom, sbom_referrer, report_referrer FROM scans WHERE digest = $1",
            &[&digest],
        )
        .await?;
    Ok(row.map(|r| Stored {
        status: status(r.get(0)),
        db_version: r.get(1),
        sbom: r.get(2),
        referrers: (r.get(3), r.get(4)),
    }))
}

/// The stored findings of `digest` as a record (for roll-ups and re-pushes).
pub async fn record(c: &Client, digest: &str) -> Result<Option<ScanRecord>, tokio_postgres::Error> {
    let Some(row) = c
        .query_opt(
            "SELECT status, (extract(epoch from scanned_at) * 1000)::bigint, db_version, scanner, error FROM scans WHERE digest = $1",
            &[&digest],
        )
        .await?
    else {
        return Ok(None);
    };
    let rows = c
        .query(
            "SELECT cve, severity, package, installed_version, fixed_version, title, description, cvss_score,
                    cvss_vector, layer_digest, pkg_type, ecosystem FROM findings WHERE digest = $1",
            &[&digest],
        )
        .await?;
    let mut findings: Vec<Finding> = rows
        .iter()
        .map(|r| Finding {
            cve: r.get(0),
            severity: r.get::<_, String>(1).parse().unwrap_or(berth_internal_api::scan::Severity::Unknown),
            package: r.get(2),
            installed_version: r.get(3),
            fixed_version: r.get(4),
            title: r.get(5),
            description: r.get(6),
            cvss: r.get(7),
            cvss_vector: r.get(8),
            layer_digest: r.get(9),
            pkg_type: r.get::<_, Option<String>>(10).unwrap_or_default(),
            ecosystem: r.get::<_, Option<String>>(11).unwrap_or_default(),
        })
        .collect();
    sort_findings(&mut findings);
    let counts = SeverityCounts::of(&findings);
    Ok(Some(ScanRecord {
        status: status(row.get(0)),
        scanned_at_ms: row.get::<_, Option<i64>>(1).map(|v| v as u64),
        db_version: row.get(2),
        scanner: row.get(3),
        counts,
        findings,
        error: row.get(4),
    }))
}

/// Set a status without findings (queued, running, unsupported, failed), keeping old results.
pub async fn set_status(
    c: &Client,
    digest: &str,
    repo: &str,
    media_type: Option<&str>,
    s: ScanStatus,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "INSERT INTO scans (digest, repo, media_type, status, error) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (digest) DO UPDATE SET status = EXCLUDED.status, error = EXCLUDED.error, updated_at = now()",
        &[&digest, &repo, &media_type, &s.as_str(), &error],
    )
    .await?;
    Ok(())
}

/// A completed scan to store.
pub struct Completed<'a> {
    /// Manifest digest.
    pub digest: &'a str,
    /// Repository it was read from.
    pub repo: &'a str,
    /// Its media type.
    pub media_type: &'a str,
    /// The record (findings sorted, counts filled in).
    pub record: &'a ScanRecord,
    /// How long it took.
    pub duration_ms: i64,
    /// The SBOM (images).
    pub sbom: Option<&'a Value>,
    /// Children (indexes).
    pub children: Option<Vec<String>>,
}

/// Store a completed scan and its findings in one transaction. Returns the findings that
/// were not in the previous result (`(id, package)` pairs), for the webhook.
pub async fn save(c: &mut Client, s: &Completed<'_>) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let tx = c.transaction().await?;
    let before: BTreeSet<(String, String)> = tx
        .query("SELECT cve, package FROM findings WHERE digest = $1", &[&s.digest])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let had_result =
        tx.query_opt("SELECT 1 FROM scans WHERE digest = $1 AND status = 'completed'", &[&s.digest]).await?.is_some();
    let r = s.record;
    let n = |v: u64| v as i32;
    tx.execute(
        "INSERT INTO scans (digest, repo, media_type, status, db_version, scanner, scanned_at, duration_ms,
                            critical, high, medium, low, unknown, error, sbom, children, updated_at)
         VALUES ($1, $2, $3, 'completed', $4, $5, now(), $6, $7, $8, $9, $10, $11, NULL, $12, $13, now())
         ON CONFLICT (digest) DO UPDATE SET repo = EXCLUDED.repo, media_type = EXCLUDED.media_type,
             status = 'completed', db_version = EXCLUDED.db_version, scanner = EXCLUDED.scanner,
             scanned_at = now(), duration_ms = EXCLUDED.duration_ms, critical = EXCLUDED.critical,
             high = EXCLUDED.high, medium = EXCLUDED.medium, low = EXCLUDED.low, unknown = EXCLUDED.unknown,
             error = NULL, sbom = COALESCE(EXCLUDED.sbom, scans.sbom), children = EXCLUDED.children, updated_at = now()",
        &[
            &s.digest,
            &s.repo,
            &s.media_type,
            &r.db_version,
            &r.scanner,
            &s.duration_ms,
            &n(r.counts.critical),
            &n(r.counts.high),
            &n(r.counts.medium),
            &n(r.counts.low),
            &n(r.counts.unknown),
            &s.sbom,
            &s.children,
        ],
    )
    .await?;
    tx.execute("DELETE FROM findings WHERE digest = $1", &[&s.digest]).await?;
    let col = |f: fn(&Finding) -> Option<String>| -> Vec<Option<String>> { r.findings.iter().map(f).collect() };
    let cves: Vec<String> = r.findings.iter().map(|f| f.cve.clone()).collect();
    let sev: Vec<String> = r.findings.iter().map(|f| f.severity.as_str().to_string()).collect();
    let pkg: Vec<String> = r.findings.iter().map(|f| f.package.clone()).collect();
    let inst: Vec<String> = r.findings.iter().map(|f| f.installed_version.clone()).collect();
    let score: Vec<Option<f64>> = r.findings.iter().map(|f| f.cvss).collect();
    tx.execute(
        "INSERT INTO findings (digest, cve, severity, package, installed_version, fixed_version, title, description,
                               cvss_score, cvss_vector, layer_digest, pkg_type, ecosystem)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                  $9::float8[], $10::text[], $11::text[], $12::text[], $13::text[])",
        &[
            &s.digest,
            &cves,
            &sev,
            &pkg,
            &inst,
            &col(|f| f.fixed_version.clone()),
            &col(|f| f.title.clone()),
            &col(|f| f.description.clone()),
            &score,
            &col(|f| f.cvss_vector.clone()),
            &col(|f| f.layer_digest.clone()),
            &col(|f| Some(f.pkg_type.clone())),
            &col(|f| Some(f.ecosystem.clone())),
        ],
    )
    .await?;
    tx.commit().await?;
    let new = if had_result {
        r.findings.iter().filter(|f| !before.contains(&(f.cve.clone(), f.package.clone()))).cloned().collect()
    } else {
        r.findings.clone()
    };
    Ok(new)
}

/// Hand a record to the node (the pull policy sees it at once).
pub async fn push_to_node(node: &NodeClient, digest: &str, record: &ScanRecord) -> Result<(), NodeError> {
    let body = serde_json::to_value(record).unwrap_or_default();
    node.ok("PUT", &format!("/internal/v1/scans/{digest}"), Some(body), Duration::from_secs(30)).await.map(|_| ())
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

async fn push_blob(node: &NodeClient, repo: &str, bytes: Vec<u8>) -> Result<String, NodeError> {
    let d = sha256(&bytes);
    let (status, _, body) = node
        .raw("POST", format!("/v2/{repo}/blobs/uploads/?digest={d}"), Some((bytes, "application/octet-stream")), &[])
        .await?;
    if status != 201 {
        return Err(NodeError::Status { status, body: String::from_utf8_lossy(&body).into_owned() });
    }
    Ok(d)
}

/// Push `content` as an artifact of `artifact_type` whose subject is the image; returns its
/// manifest digest.
pub async fn push_referrer(
    node: &NodeClient,
    repo: &str,
    subject: (&str, &str, u64),
    artifact_type: &'static str,
    content: Vec<u8>,
    annotations: Value,
) -> Result<String, NodeError> {
    let empty = push_blob(node, repo, b"{}".to_vec()).await?;
    let size = content.len();
    let layer = push_blob(node, repo, content).await?;
    let (subject_digest, subject_type, subject_size) = subject;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2, "data": "e30="},
        "layers": [{"mediaType": artifact_type, "digest": layer, "size": size}],
        "subject": {"mediaType": subject_type, "digest": subject_digest, "size": subject_size},
        "annotations": annotations,
    });
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let d = sha256(&bytes);
    let (status, _, body) = node
        .raw(
            "PUT",
            format!("/v2/{repo}/manifests/{d}"),
            Some((bytes, "application/vnd.oci.image.manifest.v1+json")),
            &[],
        )
        .await?;
    if status != 201 {
        return Err(NodeError::Status { status, body: String::from_utf8_lossy(&body).into_owned() });
    }
    Ok(d)
}

/// Delete an older referrer (a newer report replaced it).
pub async fn delete_manifest(node: &NodeClient, repo: &str, digest: &str) -> Result<(), NodeError> {
    let (status, _, body) = node.raw("DELETE", format!("/v2/{repo}/manifests/{digest}"), None, &[]).await?;
    if status == 202 || status == 404 {
        Ok(())
    } else {
        Err(NodeError::Status { status, body: String::from_utf8_lossy(&body).into_owned() })
    }
}

/// Record the referrers now in the registry.
pub async fn set_referrers<C: GenericClient>(
    c: &C,
    digest: &str,
    sbom: Option<&str>,
    report: &str,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "UPDATE scans SET sbom_referrer = $2, report_referrer = $3 WHERE digest = $1",
        &[&digest, &sbom, &report],
    )
    .await?;
    Ok(())
}
