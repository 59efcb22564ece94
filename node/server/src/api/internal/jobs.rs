//! `GET /internal/v1/jobs` (newest first) and `GET /internal/v1/jobs/<id>`: GC jobs with
//! progress and, when finished, their report.

use berth_types::{ErrorKind, OciError};

use crate::app::App;
use crate::http::Response;

pub(super) fn list(app: &App) -> Result<Response, OciError> {
    Ok(Response::json(200, &serde_json::json!({ "jobs": app.gc.list() })))
}

pub(super) fn get(app: &App, id: &str) -> Result<Response, OciError> {
    match app.gc.get(id) {
        Some(j) => Ok(Response::json(200, &serde_json::to_value(j).unwrap_or_default())),
        None => Err(OciError::new(ErrorKind::NotFound).msg(format!("no job {id}"))),
    }
}
