//! `GET /internal/v1/jobs` (newest first) and `GET /internal/v1/jobs/<id>`: GC jobs with
//! progress and, when finished, their report.

use berth_types::{ErrorKind, OciError};

use crate::app::App;
use crate::http::Response;

pub(super) fn list(app: &App) -> Result<Response, OciError> {
    #[derive(serde::Serialize)]
    struct Jobs {
        jobs: Vec<crate::gc::JobView>,
    }
    Ok(Response::bytes(200, "application/json", serde_json::to_vec(&Jobs { jobs: app.gc.list() }).unwrap_or_default()))
}

pub(super) fn get(app: &App, id: &str) -> Result<Response, OciError> {
    match app.gc.get(id) {
        // Straight to bytes: a report can list hundreds of thousands of items.
        Some(j) => Ok(Response::bytes(200, "application/json", serde_json::to_vec(&j).unwrap_or_default())),
        None => Err(OciError::new(ErrorKind::NotFound).msg(format!("no job {id}"))),
    }
}
