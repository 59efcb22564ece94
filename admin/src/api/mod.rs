//! The admin HTTP API (JSON, `Authorization: Bearer <api_token>`), one resource per file.
//! `/metrics` (Prometheus) is open, like the node's.

mod accounts;
mod extract;
mod gc;
mod jobs;
mod metrics;
mod preload;
mod repositories;
mod scans;
mod stats;
mod workers;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::Sidecar;

/// The router.
pub fn router(sc: Arc<Sidecar>) -> Router {
    let api = Router::new()
        .route("/api/v1/gc", post(gc::post))
        .route("/api/v1/jobs", get(jobs::list))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/api/v1/workers", get(workers::get))
        .route("/api/v1/repositories", get(repositories::list))
        .route("/api/v1/stats", get(stats::get))
        .route("/api/v1/scans", get(scans::list).post(scans::post))
        .route("/api/v1/scans/rescan", post(scans::rescan))
        .route("/api/v1/scans/{digest}", get(scans::get))
        .route("/api/v1/vulnerabilities/{id}", get(scans::vulnerability))
        .route("/api/v1/webhooks/deliveries", get(scans::deliveries))
        .route("/api/v1/accounts", get(accounts::accounts))
        .route("/api/v1/users/{name}", put(accounts::put_user).delete(accounts::delete_user))
        .route("/api/v1/robots", post(accounts::post_robot))
        .route("/api/v1/robots/{name}", axum::routing::delete(accounts::delete_robot))
        .route("/api/v1/groups/{name}", put(accounts::put_group).delete(accounts::delete_group))
        .route("/api/v1/rules", get(accounts::get_rules).put(accounts::put_rules))
        .route("/api/v1/audit", get(accounts::audit_log))
        .route("/api/v1/preload", post(preload::post))
        .route_layer(middleware::from_fn_with_state(sc.clone(), auth));
    api.route("/metrics", get(metrics::get))
        .fallback(not_found)
        .method_not_allowed_fallback(extract::method_not_allowed)
        .with_state(sc)
}

async fn auth(State(sc): State<Arc<Sidecar>>, req: Request, next: Next) -> Response {
    let want = sc.cfg.api_token.as_deref().unwrap_or_default();
    let given =
        req.headers().get("authorization").and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "));
    match given {
        Some(g) if !want.is_empty() && bool::from(g.as_bytes().ct_eq(want.as_bytes())) => next.run(req).await,
        _ => error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

/// A JSON error `{"error": msg}`.
pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// A Postgres failure as a 503.
pub(crate) fn db_error(e: impl std::fmt::Display) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, format!("postgres: {e}"))
}
