//! Scanning in the admin API:
//!
//! - `GET /api/v1/scans?repo=&status=&severity=&n=` — scans (newest first), filtered by a
//!   repository holding the image, status, and "has at least one finding of this severity";
//! - `GET /api/v1/scans/{digest}` — one scan with every finding and where the image is tagged;
//! - `POST /api/v1/scans` `{"repository": "a/b", "reference": "v1"}` — scan now (202);
//! - `POST /api/v1/scans/rescan` — rescan everything (from stored SBOMs where there are some);
//! - `GET /api/v1/vulnerabilities/{id}` — every image affected by a vulnerability, with its
//!   repositories and tags (the first question during an incident);
//! - `GET /api/v1/webhooks/deliveries` — the webhook delivery log.
//!
//! With `[scan]` unset they answer 409 saying scanning is off.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{DigestParam, JsonBody, QueryParams};
use crate::scan::queue;
use crate::{db, Sidecar};

fn off(sc: &Sidecar) -> Option<Response> {
    sc.cfg.scan.is_none().then(|| {
        super::error(
            StatusCode::CONFLICT,
            "scanning is off: configure [scan] (a Trivy server) in berth-admin's configuration",
        )
    })
}

const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "unknown"];

#[derive(Deserialize)]
pub(super) struct ListQuery {
    repo: Option<String>,
    status: Option<String>,
    severity: Option<String>,
    n: Option<i64>,
}

fn scan_json(r: &tokio_postgres::Row) -> Value {
    json!({
        "digest": r.get::<_, String>(0), "repository": r.get::<_, String>(1), "status": r.get::<_, String>(2),
        "db_version": r.get::<_, Option<String>>(3), "scanner": r.get::<_, Option<String>>(4),
        "scanned_at_ms": r.get::<_, Option<i64>>(5), "duration_ms": r.get::<_, Option<i64>>(6),
        "vulnerabilities": {"critical": r.get::<_, i32>(7), "high": r.get::<_, i32>(8), "medium": r.get::<_, i32>(9),
                            "low": r.get::<_, i32>(10), "unknown": r.get::<_, i32>(11)},
        "error": r.get::<_, Option<String>>(12),
        "media_type": r.get::<_, Option<String>>(13),
        "sbom_referrer": r.get::<_, Option<String>>(14), "report_referrer": r.get::<_, Option<String>>(15),
    })
}

const COLS: &str =
    "s.digest, s.repo, s.status, s.db_version, s.scanner, (extract(epoch from s.scanned_at) * 1000)::bigint,
                    s.duration_ms, s.critical, s.high, s.medium, s.low, s.unknown, s.error, s.media_type,
                    s.sbom_referrer, s.report_referrer";

pub(super) async fn list(State(sc): State<Arc<Sidecar>>, QueryParams(q): QueryParams<ListQuery>) -> Response {
    if let Some(r) = off(&sc) {
        return r;
    }
    if let Some(s) = &q.severity {
        if !SEVERITIES.contains(&s.as_str()) {
            return super::error(StatusCode::BAD_REQUEST, format!("severity must be one of {SEVERITIES:?}"));
        }
    }
    let c = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c,
        Err(e) => return super::db_error(e),
    };
    let sev = q.severity.clone().unwrap_or_default();
    let sql = format!(
        "SELECT {COLS} FROM scans s
         WHERE ($1::text IS NULL OR EXISTS (SELECT 1 FROM manifests m WHERE m.digest = s.digest AND m.repo = $1))
           AND ($2::text IS NULL OR s.status = $2)
           AND ($3 = '' OR ($3 = 'critical' AND s.critical > 0) OR ($3 = 'high' AND s.high > 0)
                OR ($3 = 'medium' AND s.medium > 0) OR ($3 = 'low' AND s.low > 0) OR ($3 = 'unknown' AND s.unknown > 0))
         ORDER BY s.updated_at DESC LIMIT $4"
    );
    let n = q.n.unwrap_or(100).clamp(1, 1000);
    match c.query(&sql, &[&q.repo, &q.status, &sev, &n]).await {
        Ok(rows) => {
            let queue = queue::counts(&c).await.unwrap_or_default();
            Json(json!({
                "scans": rows.iter().map(scan_json).collect::<Vec<_>>(),
                "queue": queue.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            }))
            .into_response()
        }
        Err(e) => super::db_error(e),
    }
}

pub(super) async fn get(State(sc): State<Arc<Sidecar>>, DigestParam(digest): DigestParam) -> Response {
    let digest = digest.to_string();
    if let Some(r) = off(&sc) {
        return r;
    }
    let c = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c,
        Err(e) => return super::db_error(e),
    };
    let row = match c.query_opt(&format!("SELECT {COLS} FROM scans s WHERE s.digest = $1"), &[&digest]).await {
        Ok(Some(r)) => r,
        Ok(None) => return super::error(StatusCode::NOT_FOUND, format!("no scan of {digest}")),
        Err(e) => return super::db_error(e),
    };
    let mut out = scan_json(&row);
    let findings = c
        .query(
            "SELECT cve, severity, package, installed_version, fixed_version, title, description, cvss_score, cvss_vector,
                    layer_digest, pkg_type, ecosystem FROM findings WHERE digest = $1
             ORDER BY array_position(ARRAY['critical','high','medium','low','unknown'], severity), cve, package",
            &[&digest],
        )
        .await;
    let tags = c
        .query("SELECT repo, tag FROM tags WHERE digest = $1 ORDER BY repo, tag", &[&digest])
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| json!({"repository": r.get::<_, String>(0), "tag": r.get::<_, String>(1)}))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    match findings {
        Ok(rows) => {
            out["findings"] = rows
                .iter()
                .map(|r| {
                    json!({
                        "cve": r.get::<_, String>(0), "severity": r.get::<_, String>(1), "package": r.get::<_, String>(2),
                        "installed_version": r.get::<_, String>(3), "fixed_version": r.get::<_, Option<String>>(4),
                        "title": r.get::<_, Option<String>>(5), "description": r.get::<_, Option<String>>(6),
                        "cvss": r.get::<_, Option<f64>>(7), "cvss_vector": r.get::<_, Option<String>>(8),
                        "layer_digest": r.get::<_, Option<String>>(9), "pkg_type": r.get::<_, Option<String>>(10),
                        "ecosystem": r.get::<_, Option<String>>(11),
                    })
                })
                .collect();
            out["tags"] = json!(tags);
            Json(out).into_response()
        }
        Err(e) => super::db_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScanRequest {
    repository: String,
    reference: String,
}

pub(super) async fn post(State(sc): State<Arc<Sidecar>>, JsonBody(body): JsonBody<ScanRequest>) -> Response {
    if let Some(r) = off(&sc) {
        return r;
    }
    let Some(b) = body else {
        return super::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "body must be {\"repository\": …, \"reference\": tag or digest}",
        );
    };
    let c = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c,
        Err(e) => return super::db_error(e),
    };
    let digest = if b.reference.contains(':') {
        Some(b.reference.clone())
    } else {
        match c.query_opt("SELECT digest FROM tags WHERE repo = $1 AND tag = $2", &[&b.repository, &b.reference]).await
        {
            Ok(r) => r.map(|r| r.get::<_, String>(0)),
            Err(e) => return super::db_error(e),
        }
    };
    let exists = match &digest {
        Some(d) => c
            .query_opt("SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2", &[&b.repository, d])
            .await
            .map(|r| r.is_some())
            .unwrap_or(false),
        None => false,
    };
    let (true, Some(d)) = (exists, digest) else {
        return super::error(
            StatusCode::NOT_FOUND,
            format!("no manifest {}:{} (as of the last feed sync)", b.repository, b.reference),
        );
    };
    if let Err(e) = queue::enqueue(&c, &d, &b.repository, "manual", true).await {
        return super::db_error(e);
    }
    sc.scan_wake.notify_waiters();
    (StatusCode::ACCEPTED, Json(json!({ "digest": d, "status": "queued" }))).into_response()
}

pub(super) async fn rescan(State(sc): State<Arc<Sidecar>>) -> Response {
    if let Some(r) = off(&sc) {
        return r;
    }
    let c = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c,
        Err(e) => return super::db_error(e),
    };
    // Platform images first, indexes after (they roll up from their platforms).
    let q = "INSERT INTO scan_jobs (digest, repo, reason, force)
             SELECT digest, repo, 'rescan', false FROM scans
             WHERE status IN ('completed', 'failed') AND (children IS NULL) = $1
             ON CONFLICT (digest) WHERE state IN ('queued', 'running') DO NOTHING";
    let mut n = 0;
    for images in [true, false] {
        match c.execute(q, &[&images]).await {
            Ok(k) => n += k,
            Err(e) => return super::db_error(e),
        }
    }
    sc.scan_wake.notify_waiters();
    (StatusCode::ACCEPTED, Json(json!({ "queued": n }))).into_response()
}

pub(super) async fn vulnerability(State(sc): State<Arc<Sidecar>>, Path(id): Path<String>) -> Response {
    if let Some(r) = off(&sc) {
        return r;
    }
    let c = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c,
        Err(e) => return super::db_error(e),
    };
    let rows = c
        .query(
            "SELECT f.digest, f.severity, f.package, f.installed_version, f.fixed_version, m.repo,
                    COALESCE((SELECT array_agg(t.tag ORDER BY t.tag) FROM tags t WHERE t.repo = m.repo AND t.digest = f.digest), '{}'),
                    s.media_type
             FROM findings f JOIN manifests m ON m.digest = f.digest JOIN scans s ON s.digest = f.digest
             WHERE f.cve = $1 AND s.children IS NULL
             ORDER BY m.repo, f.digest, f.package",
            &[&id],
        )
        .await;
    match rows {
        Ok(rows) => {
            let images: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "digest": r.get::<_, String>(0), "severity": r.get::<_, String>(1), "package": r.get::<_, String>(2),
                        "installed_version": r.get::<_, String>(3), "fixed_version": r.get::<_, Option<String>>(4),
                        "repository": r.get::<_, String>(5), "tags": r.get::<_, Vec<String>>(6),
                    })
                })
                .collect();
            let repos: std::collections::BTreeSet<String> =
                images.iter().filter_map(|i| i["repository"].as_str().map(str::to_owned)).collect();
            Json(json!({ "vulnerability": id, "repositories": repos, "images": images })).into_response()
        }
        Err(e) => super::db_error(e),
    }
}

pub(super) async fn deliveries(State(sc): State<Arc<Sidecar>>) -> Response {
    let c = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c,
        Err(e) => return super::db_error(e),
    };
    match c
        .query(
            "SELECT id, url, event, state, attempts, response_status, last_error,
                    (extract(epoch from created_at) * 1000)::bigint, (extract(epoch from delivered_at) * 1000)::bigint, payload
             FROM webhook_deliveries ORDER BY id DESC LIMIT 200",
            &[],
        )
        .await
    {
        Ok(rows) => Json(json!({ "deliveries": rows.iter().map(|r| json!({
            "id": r.get::<_, i64>(0), "url": r.get::<_, String>(1), "event": r.get::<_, String>(2),
            "state": r.get::<_, String>(3), "attempts": r.get::<_, i32>(4), "response_status": r.get::<_, Option<i32>>(5),
            "last_error": r.get::<_, Option<String>>(6), "created_at_ms": r.get::<_, Option<i64>>(7),
            "delivered_at_ms": r.get::<_, Option<i64>>(8), "payload": r.get::<_, Value>(9),
        })).collect::<Vec<_>>() }))
        .into_response(),
        Err(e) => super::db_error(e),
    }
}
