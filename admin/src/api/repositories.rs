//! `GET /api/v1/repositories?n=100&last=<name>`: repositories with sizes (raw and
//! deduplicated), tag and manifest counts and last push, in name order; `Link` to the next page.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::LINK;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::extract::QueryParams;
use crate::{db, Sidecar};

#[derive(Deserialize)]
pub(super) struct Page {
    n: Option<i64>,
    last: Option<String>,
}

pub(super) async fn list(State(sc): State<Arc<Sidecar>>, QueryParams(p): QueryParams<Page>) -> Response {
    let n = p.n.unwrap_or(100).clamp(1, 1000);
    let last = p.last.unwrap_or_default();
    let c = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c,
        Err(e) => return super::db_error(e),
    };
    let q = "SELECT r.name, s.raw_bytes::bigint, s.dedup_bytes::bigint,
                    (SELECT count(*) FROM tags t WHERE t.repo = r.name),
                    (SELECT count(*) FROM manifests m WHERE m.repo = r.name),
                    (SELECT count(*) FROM repository_blobs b WHERE b.repo = r.name),
                    extract(epoch from r.last_push_at)::float8
             FROM repositories r JOIN repository_sizes s ON s.repo = r.name
             WHERE r.name > $1 ORDER BY r.name LIMIT $2";
    let rows = match c.query(q, &[&last, &(n + 1)]).await {
        Ok(r) => r,
        Err(e) => return super::db_error(e),
    };
    let more = rows.len() as i64 > n;
    let items: Vec<_> = rows
        .iter()
        .take(n as usize)
        .map(|r| {
            json!({
                "name": r.get::<_, String>(0), "raw_bytes": r.get::<_, i64>(1), "dedup_bytes": r.get::<_, i64>(2),
                "tags": r.get::<_, i64>(3), "manifests": r.get::<_, i64>(4), "blobs": r.get::<_, i64>(5),
                "last_push_ms": r.get::<_, Option<f64>>(6).map(|t| (t * 1000.0) as u64),
            })
        })
        .collect();
    let mut resp = Json(json!({ "repositories": items })).into_response();
    if more {
        if let Some(l) = items.last().and_then(|i| i["name"].as_str()) {
            if let Ok(v) = format!("</api/v1/repositories?n={n}&last={l}>; rel=\"next\"").parse() {
                resp.headers_mut().insert(LINK, v);
            }
        }
    }
    resp
}
