//! Pre-loading the node's pull-through cache from the admin API.
//!
//! | method | path | |
//! |---|---|---|
//! | POST | `/api/v1/preload` | `{"images": ["registry.k8s.io/pause:3.9", …], "platforms": ["linux/amd64"] or "all", "parallel": 4}` → per-image outcome (200 when all loaded, 207 when some failed) |
//!
//! The images are pulled through the node's internal listener (`berth_internal_api::preload`,
//! the same code as `berth preload`), so the node caches them as for a client; the request
//! returns when every image is done.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_internal_api::preload::{self, ImageRef, Platforms};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use super::extract::JsonBody;
use crate::{audit, Sidecar};

/// Images one request may name: the request holds its connection until every one is loaded.
const MAX_IMAGES: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadRequest {
    images: Vec<String>,
    #[serde(default)]
    platforms: Option<serde_json::Value>,
    #[serde(default)]
    parallel: Option<usize>,
}

pub async fn post(State(sc): State<Arc<Sidecar>>, JsonBody(req): JsonBody<PreloadRequest>) -> Response {
    let Some(req) = req else { return super::error(StatusCode::BAD_REQUEST, "a JSON body with images is required") };
    if req.images.len() > MAX_IMAGES {
        return super::error(
            StatusCode::BAD_REQUEST,
            format!("images: {} named, at most {MAX_IMAGES} per request", req.images.len()),
        );
    }
    let images: Result<Vec<ImageRef>, String> = req.images.iter().map(|s| s.parse()).collect();
    let images = match images {
        Ok(i) if !i.is_empty() => i,
        Ok(_) => return super::error(StatusCode::BAD_REQUEST, "images: name at least one image"),
        Err(e) => return super::error(StatusCode::BAD_REQUEST, format!("images: {e}")),
    };
    let platforms = match req.platforms {
        None => Platforms::Only(vec!["linux/amd64".into()]),
        Some(serde_json::Value::String(s)) if s == "all" => Platforms::All,
        Some(v) => match serde_json::from_value::<Vec<String>>(v) {
            Ok(list) => Platforms::Only(list),
            Err(_) => return super::error(StatusCode::BAD_REQUEST, "platforms: a list of os/arch, or \"all\""),
        },
    };
    let parallel = req.parallel.unwrap_or(4).clamp(1, 32);
    let client = sc.node.snapshot();
    let report =
        tokio::task::spawn_blocking(move || preload::load_all(&client, &images, &platforms, parallel, &|_| {}))
            .await
            .unwrap_or_default();
    let failed = report.iter().filter(|o| o.error.is_some()).count();
    audit::record(&sc, "preload", &format!("{} images, {failed} failed", report.len())).await;
    let code = if failed == 0 { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    (code, Json(json!({ "loaded": report.len() - failed, "failed": failed, "images": report }))).into_response()
}
