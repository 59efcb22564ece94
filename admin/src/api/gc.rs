//! `POST /api/v1/gc` `{"dry_run": true, "policy": {…}}` → 202 `{"id": …}`; 409 while one runs.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::extract::JsonBody;
use serde::Deserialize;
use serde_json::Value;

use crate::Sidecar;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct GcBody {
    #[serde(default = "yes")]
    dry_run: bool,
    #[serde(default)]
    policy: Option<Value>,
}

fn yes() -> bool {
    true
}

pub(super) async fn post(State(sc): State<Arc<Sidecar>>, JsonBody(body): JsonBody<GcBody>) -> Response {
    let b = body.unwrap_or(GcBody { dry_run: true, policy: None });
    match crate::jobs::start(&sc, b.dry_run, b.policy, "api").await {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err((status, v)) => (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), Json(v)).into_response(),
    }
}
