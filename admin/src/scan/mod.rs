//! Vulnerability scanning, driven by the sidecar (see docs/ARCHITECTURE.md, "Scanning").
//!
//! - Triggers: every manifest push and every client request (`POST …/scan`, a feed record)
//!   queue a job in the same transaction that applies the feed batch; the admin API queues
//!   manual scans and rescans; the DB watcher queues a rescan of everything when the Trivy
//!   server's vulnerability DB changes.
//! - Workers (`concurrency`) claim jobs from Postgres (`queue`), run the official Trivy client
//!   against the Trivy server (`trivy`), keep findings and SBOMs in Postgres, hand the record
//!   to the node (the pull policy), push report and SBOM as referrers (`store`), and queue
//!   webhooks (`webhooks`).
//! - Trivy down: no job is claimed (nothing is lost); a job that failed because Trivy went
//!   down is put back without using up an attempt.
//!
//! Layering: `api` → `scan` → `db`, `node`; `sync` pokes `scan` through `Sidecar::scan_wake`.

pub mod queue;
pub mod store;
pub mod trivy;
pub mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_internal_api::scan::{Finding, ScanRecord, ScanStatus};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::config::ScanSettings;
use crate::Sidecar;
use queue::Job;
use trivy::{ServerVersion, Trivy};

/// What the scan workers are doing, for `/api/v1/workers`, `/api/v1/stats` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanView {
    /// Whether the Trivy server answered the last check.
    pub trivy_up: bool,
    /// Its scanner version.
    pub scanner: Option<String>,
    /// Its vulnerability-DB version.
    pub db_version: Option<String>,
    /// Scans completed since start.
    pub completed_total: u64,
    /// Scans failed since start.
    pub failed_total: u64,
    /// Rescans done from stored SBOMs since start (no layer read).
    pub sbom_rescans_total: u64,
    /// Jobs queued (as of the last look).
    pub queued: u64,
    /// Last failure.
    pub last_error: Option<String>,
    /// When a job last finished (unix ms).
    pub last_run_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

const IMAGE_CONFIGS: [&str; 2] =
    ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];
const INDEXES: [&str; 2] =
    ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

/// What a manifest is, for scanning.
enum Kind {
    Image,
    Index(Vec<String>),
    Unsupported,
}

/// Start the workers, the DB watcher and the webhook sender (when `[scan]` is configured).
pub fn start(sc: &Arc<Sidecar>) {
    let Some(settings) = sc.cfg.scan.clone() else { return };
    tokio::spawn(watch_db(sc.clone(), settings.clone()));
    for n in 0..settings.concurrency.max(1) {
        tokio::spawn(worker(sc.clone(), settings.clone(), n));
    }
    tokio::spawn(webhooks::deliver(sc.clone()));
}

/// Poll the Trivy server's `/version`; a new DB version queues a rescan of every image.
async fn watch_db(sc: Arc<Sidecar>, settings: ScanSettings) {
    let mut client: Option<Client> = None;
    loop {
        let v = trivy::server_version(&settings.server).await;
        sc.update_scan(|s| {
            s.trivy_up = v.is_some();
            if let Some(v) = &v {
                s.scanner = Some(v.scanner.clone());
                s.db_version = Some(v.db_version.clone());
            }
        });
        if client.is_none() {
            client = crate::db::connect(&sc.cfg.postgres).await.ok();
        }
        let mut broken = false;
        if let (Some(v), Some(c)) = (&v, client.as_ref()) {
            match db_changed(c, v).await {
                Ok(Some(n)) => {
                    tracing::info!(db_version = %v.db_version, rescans = n, "the vulnerability DB changed: rescanning from stored SBOMs");
                    sc.scan_wake.notify_waiters();
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "scan DB watcher: postgres failed");
                    broken = true;
                }
            }
            if let Ok(counts) = queue::counts(c).await {
                let queued = counts.iter().filter(|(s, _)| s == "queued").map(|(_, n)| *n as u64).sum();
                sc.update_scan(|s| s.queued = queued);
            }
        }
        if broken {
            client = None;
        }
        tokio::time::sleep(Duration::from_secs(settings.db_check_interval_secs.max(1))).await;
    }
}

/// Record the DB version; when it changed, queue rescans of every completed scan. Returns how
/// many were queued.
async fn db_changed(c: &Client, v: &ServerVersion) -> Result<Option<u64>, tokio_postgres::Error> {
    let prev: Option<String> = c.query_one("SELECT db_version FROM scanner_state WHERE id = 1", &[]).await?.get(0);
    if prev.as_deref() == Some(v.db_version.as_str()) {
        return Ok(None);
    }
    c.execute(
        "UPDATE scanner_state SET db_version = $1, scanner = $2, checked_at = now() WHERE id = 1",
        &[&v.db_version, &v.scanner],
    )
    .await?;
    if prev.is_none() {
        return Ok(None);
    }
    let n = c
        .execute(
            "INSERT INTO scan_jobs (digest, repo, reason, force)
             SELECT digest, repo, 'rescan', false FROM scans WHERE status = 'completed' AND children IS NULL
             ON CONFLICT (digest) WHERE state IN ('queued', 'running') DO NOTHING",
            &[],
        )
        .await?;
    // Indexes roll up from their platforms: queue them after the platforms.
    let m = c
        .execute(
            "INSERT INTO scan_jobs (digest, repo, reason, force)
             SELECT digest, repo, 'rescan', false FROM scans WHERE status = 'completed' AND children IS NOT NULL
             ON CONFLICT (digest) WHERE state IN ('queued', 'running') DO NOTHING",
            &[],
        )
        .await?;
    Ok(Some(n + m))
}

async fn worker(sc: Arc<Sidecar>, settings: ScanSettings, n: usize) {
    let trivy = match Trivy::new(&settings) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            tracing::error!(error = %e, dir = %settings.work_dir.display(), "scan worker cannot prepare its working directory");
            return;
        }
    };
    let mut client: Option<Client> = None;
    loop {
        // Trivy down: claim nothing, so nothing is lost or used up.
        let Some(version) = trivy::server_version(&settings.server).await else {
            sc.update_scan(|s| {
                s.trivy_up = false;
                s.last_error = Some(format!("trivy server {} is not answering", settings.server));
            });
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        };
        if client.is_none() {
            match crate::db::connect(&sc.cfg.postgres).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    tracing::warn!(worker = n, error = %e, "scan worker: postgres unavailable");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        let job = match queue::claim(c, settings.lease_secs).await {
            Ok(Some(j)) => j,
            Ok(None) => {
                tokio::select! {
                    _ = sc.scan_wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(worker = n, error = %e, "scan worker: claiming a job failed");
                client = None;
                continue;
            }
        };
        let started = Instant::now();
        // Keep the lease while the job runs (a killed worker's lease lapses instead).
        let lease = {
            let (pg, id, secs) = (sc.cfg.postgres.clone(), job.id, settings.lease_secs);
            tokio::spawn(async move {
                if let Ok(c) = crate::db::connect(&pg).await {
                    loop {
                        tokio::time::sleep(Duration::from_secs((secs / 3).max(1))).await;
                        if queue::renew(&c, id, secs).await.is_err() {
                            break;
                        }
                    }
                }
            })
        };
        let res = run_job(&sc, &settings, &trivy, c, &job, &version).await;
        lease.abort();
        let outcome = match res {
            Ok(()) => queue::finish(c, job.id).await,
            Err(e) => {
                let trivy_down = trivy::server_version(&settings.server).await.is_none();
                sc.update_scan(|s| s.last_error = Some(e.clone()));
                if trivy_down {
                    tracing::warn!(job = job.id, digest = %job.digest, error = %e, "scan interrupted: the trivy server went away; will retry");
                    queue::retry(c, job.id, 5, &e, false).await
                } else if job.attempts >= settings.max_attempts {
                    tracing::error!(job = job.id, digest = %job.digest, attempts = job.attempts, error = %e, "scan failed");
                    failed(&sc, &settings, c, &job, &e).await;
                    queue::fail(c, job.id, &e).await
                } else {
                    let delay = (2u64 << job.attempts.clamp(0, 8)).min(300);
                    tracing::warn!(job = job.id, digest = %job.digest, attempt = job.attempts, retry_in_s = delay, error = %e, "scan failed; will retry");
                    queue::retry(c, job.id, delay, &e, true).await
                }
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(worker = n, error = %e, "scan worker: recording the outcome failed");
            client = None;
        }
        tracing::debug!(job = job.id, elapsed_ms = started.elapsed().as_millis() as u64, "scan job done");
        sc.update_scan(|s| s.last_run_ms = now_ms());
    }
}

async fn manifest_kind(c: &Client, repo: &str, digest: &str) -> Result<Option<(Kind, String, u64)>, String> {
    let row = c
        .query_opt(
            "SELECT media_type, artifact_type, size FROM manifests WHERE repo = $1 AND digest = $2",
            &[&repo, &digest],
        )
        .await
        .map_err(|e| format!("postgres: {e}"))?;
    let Some(row) = row else { return Ok(None) };
    let (media_type, artifact_type, size): (String, Option<String>, i64) = (row.get(0), row.get(1), row.get(2));
    let kind = if INDEXES.contains(&media_type.as_str()) {
        let children: Vec<String> = c
            .query(
                "SELECT mm.child FROM manifest_manifests mm
                 JOIN manifests m ON m.repo = mm.repo AND m.digest = mm.child
                 WHERE mm.repo = $1 AND mm.parent = $2 ORDER BY mm.position",
                &[&repo, &digest],
            )
            .await
            .map_err(|e| format!("postgres: {e}"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Kind::Index(children)
    } else if artifact_type.as_deref().is_some_and(|t| IMAGE_CONFIGS.contains(&t)) {
        Kind::Image
    } else {
        Kind::Unsupported
    };
    Ok(Some((kind, media_type, size as u64)))
}

/// Scan (or skip) one job's manifest. `Err` is retried.
async fn run_job(
    sc: &Sidecar,
    settings: &ScanSettings,
    trivy: &Trivy,
    c: &mut Client,
    job: &Job,
    version: &ServerVersion,
) -> Result<(), String> {
    let pg = |e: tokio_postgres::Error| format!("postgres: {e}");
    let Some((kind, media_type, size)) = manifest_kind(c, &job.repo, &job.digest).await? else {
        tracing::debug!(digest = %job.digest, repo = %job.repo, "manifest gone before its scan; skipped");
        return Ok(());
    };
    match kind {
        Kind::Unsupported => {
            store::set_status(c, &job.digest, &job.repo, Some(&media_type), ScanStatus::Unsupported, None)
                .await
                .map_err(pg)?;
            store::push_to_node(&sc.node, &job.digest, &ScanRecord::with_status(ScanStatus::Unsupported))
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        Kind::Image => {
            scan_image(sc, settings, trivy, c, job, &job.digest, &media_type, size, version).await.map(|_| ())
        }
        Kind::Index(children) => {
            let started = Instant::now();
            let mut records = Vec::new();
            for child in &children {
                let Some((ck, cmt, csize)) = manifest_kind(c, &job.repo, child).await? else { continue };
                let r = match ck {
                    Kind::Image => scan_image(sc, settings, trivy, c, job, child, &cmt, csize, version).await?,
                    _ => ScanRecord::with_status(ScanStatus::Unsupported),
                };
                records.push(r);
            }
            let record = roll_up(&records, version);
            if record.status == ScanStatus::Unsupported {
                store::set_status(c, &job.digest, &job.repo, Some(&media_type), ScanStatus::Unsupported, None)
                    .await
                    .map_err(pg)?;
            } else {
                let done = store::Completed {
                    digest: &job.digest,
                    repo: &job.repo,
                    media_type: &media_type,
                    record: &record,
                    duration_ms: started.elapsed().as_millis() as i64,
                    sbom: None,
                    children: Some(children.clone()),
                };
                store::save(c, &done).await.map_err(pg)?;
            }
            store::push_to_node(&sc.node, &job.digest, &record).await.map_err(|e| e.to_string())?;
            sc.update_scan(|s| s.completed_total += 1);
            Ok(())
        }
    }
}

/// An index's record: its platforms' findings together (each (id, package, version) once).
fn roll_up(children: &[ScanRecord], version: &ServerVersion) -> ScanRecord {
    let scanned: Vec<&ScanRecord> = children.iter().filter(|r| r.status == ScanStatus::Completed).collect();
    if scanned.is_empty() {
        return ScanRecord::with_status(ScanStatus::Unsupported);
    }
    let mut seen = std::collections::HashSet::new();
    let mut findings: Vec<Finding> = Vec::new();
    for r in &scanned {
        for f in &r.findings {
            if seen.insert((f.cve.clone(), f.package.clone(), f.installed_version.clone())) {
                findings.push(f.clone());
            }
        }
    }
    ScanRecord::completed(findings, version.db_version.clone(), version.scanner.clone(), now_ms())
}

/// Scan one image manifest, or reuse a result current for this DB. Returns its record.
#[allow(clippy::too_many_arguments)]
async fn scan_image(
    sc: &Sidecar,
    settings: &ScanSettings,
    trivy: &Trivy,
    c: &mut Client,
    job: &Job,
    digest: &str,
    media_type: &str,
    size: u64,
    version: &ServerVersion,
) -> Result<ScanRecord, String> {
    let pg = |e: tokio_postgres::Error| format!("postgres: {e}");
    let prev = store::stored(c, digest).await.map_err(pg)?;
    let current = prev.as_ref().is_some_and(|p| {
        p.status == ScanStatus::Completed && p.db_version.as_deref() == Some(version.db_version.as_str())
    });
    // An explicit rescan (admin API) runs even when current, from the stored SBOM.
    if current && !job.force && job.reason != "rescan" {
        // Already scanned with this DB: skip (the node has the record; hand it over again in
        // case the node lost it).
        let record = store::record(c, digest)
            .await
            .map_err(pg)?
            .unwrap_or_else(|| ScanRecord::with_status(ScanStatus::Completed));
        store::push_to_node(&sc.node, digest, &record).await.map_err(|e| e.to_string())?;
        tracing::debug!(%digest, "already scanned with the current DB; skipped");
        return Ok(record);
    }
    let fresh = prev.as_ref().is_none_or(|p| p.status != ScanStatus::Completed);
    if fresh {
        // Shown as queued/running only while there is no earlier result (a rescan keeps the
        // old findings, and their verdict, until the new ones replace them).
        store::set_status(c, digest, &job.repo, Some(media_type), ScanStatus::Running, None).await.map_err(pg)?;
        let _ = store::push_to_node(&sc.node, digest, &ScanRecord::with_status(ScanStatus::Running)).await;
    }
    let started = Instant::now();
    let tag = format!("{}-{}", job.id, &digest[digest.len().saturating_sub(12)..]);
    let sbom_path = trivy.scratch(&format!("{tag}.cdx.json"));
    let report_path = trivy.scratch(&format!("{tag}.report.json"));
    let reuse_sbom = !job.force && prev.as_ref().and_then(|p| p.sbom.as_ref()).is_some();
    let sbom: Value = if reuse_sbom {
        let s = prev.as_ref().and_then(|p| p.sbom.clone()).unwrap_or_default();
        tokio::fs::write(&sbom_path, serde_json::to_vec(&s).unwrap_or_default()).await.map_err(|e| e.to_string())?;
        s
    } else {
        let node = sc.node.snapshot();
        let registry = node.url().trim_start_matches("http://").trim_start_matches("https://").to_string();
        trivy.sbom(&registry, node.token(), &job.repo, digest, &sbom_path).await.map_err(|e| e.to_string())?;
        let bytes = tokio::fs::read(&sbom_path).await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("unreadable SBOM: {e}"))?
    };
    let report = trivy.scan_sbom(&sbom_path, &report_path).await.map_err(|e| e.to_string());
    let _ = tokio::fs::remove_file(&sbom_path).await;
    let _ = tokio::fs::remove_file(&report_path).await;
    let report = report?;
    let record =
        ScanRecord::completed(trivy::findings(&report), version.db_version.clone(), version.scanner.clone(), now_ms());
    let counts = record.counts;
    let done = store::Completed {
        digest,
        repo: &job.repo,
        media_type,
        record: &record,
        duration_ms: started.elapsed().as_millis() as i64,
        sbom: Some(&sbom),
        children: None,
    };
    let new = store::save(c, &done).await.map_err(pg)?;
    store::push_to_node(&sc.node, digest, &record).await.map_err(|e| e.to_string())?;
    if reuse_sbom {
        sc.update_scan(|s| s.sbom_rescans_total += 1);
    }
    sc.update_scan(|s| {
        s.completed_total += 1;
        s.last_error = None;
    });
    tracing::info!(%digest, repo = %job.repo, reason = %job.reason, from_sbom = reuse_sbom,
        critical = counts.critical, high = counts.high, medium = counts.medium, low = counts.low,
        elapsed_ms = started.elapsed().as_millis() as u64, "scan completed");
    if settings.push_referrers {
        if let Err(e) =
            push_referrers(sc, c, &job.repo, digest, media_type, size, &sbom, &report, prev.as_ref(), &record).await
        {
            tracing::warn!(%digest, error = %e, "scan stored, but pushing its report as a referrer failed");
        }
    }
    if !new.is_empty() && !settings.webhooks.is_empty() {
        let payload = json!({
            "event": "vulnerabilities.found",
            "repository": job.repo,
            "digest": digest,
            "scanned_at_ms": record.scanned_at_ms,
            "db_version": record.db_version,
            "vulnerabilities": record.counts,
            "new_findings": new,
        });
        webhooks::enqueue(c, &settings.webhooks, "vulnerabilities.found", &payload).await.map_err(pg)?;
        sc.webhook_wake.notify_waiters();
    }
    Ok(record)
}

#[allow(clippy::too_many_arguments)]
async fn push_referrers(
    sc: &Sidecar,
    c: &Client,
    repo: &str,
    digest: &str,
    media_type: &str,
    size: u64,
    sbom: &Value,
    report: &Value,
    prev: Option<&store::Stored>,
    record: &ScanRecord,
) -> Result<(), String> {
    let annotations = json!({
        "org.opencontainers.image.created": humantime_now(),
        "dev.berth.scan.db-version": record.db_version,
        "dev.berth.scan.scanner": record.scanner,
    });
    let subject = (digest, media_type, size);
    let sbom_bytes = serde_json::to_vec(sbom).unwrap_or_default();
    let report_bytes = serde_json::to_vec(report).unwrap_or_default();
    let s = store::push_referrer(&sc.node, repo, subject, store::SBOM_ARTIFACT, sbom_bytes, annotations.clone())
        .await
        .map_err(|e| e.to_string())?;
    let r = store::push_referrer(&sc.node, repo, subject, store::REPORT_ARTIFACT, report_bytes, annotations)
        .await
        .map_err(|e| e.to_string())?;
    store::set_referrers(c, digest, Some(&s), &r).await.map_err(|e| e.to_string())?;
    if let Some(p) = prev {
        for old in [&p.referrers.0, &p.referrers.1].into_iter().flatten() {
            if old != &s && old != &r {
                store::delete_manifest(&sc.node, repo, old).await.map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

fn humantime_now() -> String {
    let secs = now_ms() / 1000;
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A job that used up its attempts: record the failure (keeping an older result), tell the
/// node when it has no result, and send `scan.failed`.
async fn failed(sc: &Sidecar, settings: &ScanSettings, c: &Client, job: &Job, error: &str) {
    let prev = store::stored(c, &job.digest).await.ok().flatten();
    let had_result = prev.as_ref().is_some_and(|p| p.status == ScanStatus::Completed);
    if !had_result {
        let _ = store::set_status(c, &job.digest, &job.repo, None, ScanStatus::Failed, Some(error)).await;
        let mut r = ScanRecord::with_status(ScanStatus::Failed);
        r.error = Some(error.to_string());
        let _ = store::push_to_node(&sc.node, &job.digest, &r).await;
    }
    sc.update_scan(|s| s.failed_total += 1);
    if !settings.webhooks.is_empty() {
        let payload = json!({
            "event": "scan.failed", "repository": job.repo, "digest": job.digest,
            "attempts": job.attempts, "error": error,
        });
        if webhooks::enqueue(c, &settings.webhooks, "scan.failed", &payload).await.is_ok() {
            sc.webhook_wake.notify_waiters();
        }
    }
}
