//! `GET /api/v1/jobs` (recorded jobs, newest first, with the node's live progress for running
//! ones) and `GET /api/v1/jobs/{id}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::extract::JobIdParam;
use crate::{db, Sidecar};

fn row_json(r: &tokio_postgres::Row) -> Value {
    let ts = |i: usize| r.get::<_, Option<f64>>(i).map(|t| (t * 1000.0) as u64);
    json!({
        "id": r.get::<_, String>(0), "kind": "gc", "trigger": r.get::<_, String>(1), "dry_run": r.get::<_, bool>(2),
        "state": r.get::<_, String>(3), "started_at_ms": ts(4), "finished_at_ms": ts(5),
        "report": r.get::<_, Option<Value>>(6), "error": r.get::<_, Option<String>>(7),
    })
}

const COLS: &str = "id, trigger, dry_run, state, extract(epoch from started_at)::float8, extract(epoch from finished_at)::float8, report, error";

pub(super) async fn list(State(sc): State<Arc<Sidecar>>) -> Response {
    let c = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c,
        Err(e) => return super::db_error(e),
    };
    match c.query(&format!("SELECT {COLS} FROM gc_jobs ORDER BY started_at DESC LIMIT 100"), &[]).await {
        Ok(rows) => Json(json!({ "jobs": rows.iter().map(row_json).collect::<Vec<_>>() })).into_response(),
        Err(e) => super::db_error(e),
    }
}

pub(super) async fn get(State(sc): State<Arc<Sidecar>>, JobIdParam(id): JobIdParam) -> Response {
    // Live from the node while it remembers the job (progress), else the stored record.
    if let Ok((200, v)) = sc.node.call("GET", &format!("/internal/v1/jobs/{id}"), None, Duration::from_secs(10)).await {
        return Json(v).into_response();
    }
    let c = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c,
        Err(e) => return super::db_error(e),
    };
    match c.query_opt(&format!("SELECT {COLS} FROM gc_jobs WHERE id = $1"), &[&id]).await {
        Ok(Some(r)) => Json(row_json(&r)).into_response(),
        Ok(None) => super::error(StatusCode::NOT_FOUND, format!("no job {id}")),
        Err(e) => super::db_error(e),
    }
}
