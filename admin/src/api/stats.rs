//! `GET /api/v1/stats`: store size by tier and blob counts (from the node), logical size and
//! dedup ratio (from Postgres), and the feed lag.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::{db, Sidecar};

pub(super) async fn get(State(sc): State<Arc<Sidecar>>) -> Response {
    let node = sc.node.ok("GET", "/internal/v1/stats", None, Duration::from_secs(10)).await.ok();
    let s = sc.sync_view();
    let mut out = json!({
        "node": node,
        "feed": {
            "last_seq": s.last_seq, "head": s.head, "lag_changes": s.lag_changes, "lag_seconds": s.lag_seconds,
            "node_reachable": s.node_reachable, "last_contact_ms": s.last_contact_ms,
        },
    });
    if let Ok(c) = db::connect(&sc.cfg.postgres).await {
        let q =
            "SELECT (SELECT count(*) FROM repositories), (SELECT count(*) FROM manifests), (SELECT count(*) FROM tags),
                        (SELECT count(*) FROM blobs), COALESCE((SELECT sum(size) FROM blobs), 0)::bigint,
                        COALESCE((SELECT sum(raw_bytes) FROM repository_sizes), 0)::bigint";
        if let Ok(r) = c.query_one(q, &[]).await {
            let stored: i64 = r.get(4);
            let logical: i64 = r.get(5);
            out["postgres"] = json!({
                "repositories": r.get::<_, i64>(0), "manifests": r.get::<_, i64>(1), "tags": r.get::<_, i64>(2),
                "blobs": r.get::<_, i64>(3), "blob_bytes": stored, "logical_bytes": logical,
                "dedup_ratio": if stored > 0 { logical as f64 / stored as f64 } else { 1.0 },
            });
        }
    }
    Json(out).into_response()
}
