//! `GET /api/v1/workers`: every background worker of the node (tiering, expiry, GC) and of
//! the sidecar (feed sync, GC schedule), with state, last run and backlog.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::Sidecar;

pub(super) async fn get(State(sc): State<Arc<Sidecar>>) -> Response {
    let mut workers: Vec<Value> = Vec::new();
    let node_ok = match sc.node.ok("GET", "/internal/v1/workers", None, Duration::from_secs(10)).await {
        Ok(v) => {
            for w in v["workers"].as_array().cloned().unwrap_or_default() {
                let mut w = w;
                w["process"] = json!("node");
                workers.push(w);
            }
            true
        }
        Err(_) => false,
    };
    let s = sc.sync_view();
    workers.push(json!({
        "process": "sidecar", "name": "feed-sync", "state": s.state, "last_run_ms": s.last_run_ms,
        "last_error": s.last_error, "backlog": s.lag_changes, "backlog_unit": "changes",
        "lag_seconds": s.lag_seconds, "last_seq": s.last_seq, "head": s.head,
        "node_reachable": s.node_reachable,
    }));
    workers.push(json!({
        "process": "sidecar", "name": "gc-schedule", "state": "idle",
        "schedule": sc.cfg.gc_schedule, "next_run_ms": sc.next_gc_ms(), "backlog": 0, "backlog_unit": "",
    }));
    if let Some(settings) = &sc.cfg.scan {
        let v = sc.scan_view();
        workers.push(json!({
            "process": "sidecar", "name": "scan", "state": if v.trivy_up { "idle" } else { "backoff" },
            "concurrency": settings.concurrency, "last_run_ms": v.last_run_ms, "last_error": v.last_error,
            "backlog": v.queued, "backlog_unit": "jobs", "trivy_up": v.trivy_up, "scanner": v.scanner,
            "db_version": v.db_version, "completed_total": v.completed_total, "failed_total": v.failed_total,
        }));
    }
    Json(json!({ "node_reachable": node_ok, "workers": workers })).into_response()
}
