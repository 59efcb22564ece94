//! `GET /internal/v1/workers`: every background worker of the node with its state, last run
//! and backlog (tiering's uploader, mirror and evictor; upload expiry; GC).

use berth_types::OciError;
use serde_json::json;

use crate::app::App;
use crate::http::Response;

pub(super) fn get(app: &App) -> Result<Response, OciError> {
    let mut workers: Vec<serde_json::Value> = Vec::new();
    if let Some(t) = &app.tier {
        workers.extend(t.workers.list().into_iter().filter_map(|w| serde_json::to_value(w).ok()));
    }
    let (running, last) = app.gc.status();
    workers.push(json!({
        "name": "gc", "state": if running { "busy" } else { "idle" }, "last_run_ms": last,
        "last_error": null, "backlog": 0, "backlog_unit": "",
    }));
    let sessions = app.uploads.open_sessions() as u64;
    workers.push(json!({
        "name": "upload-expiry", "state": "idle",
        "last_run_ms": app.expiry_last_run_ms.load(std::sync::atomic::Ordering::Relaxed),
        "last_error": null, "backlog": sessions, "backlog_unit": "open upload sessions",
    }));
    Ok(Response::json(200, &json!({ "workers": workers })))
}
