//! `GET /internal/v1/cluster`: this node's view of the cluster — its name and applied log
//! position, the log's head, every node with its heartbeat age and applied position (lag), and
//! the leases. 404 on a single node; 503 when Postgres cannot be reached.

use berth_types::{ErrorKind, OciError};
use serde_json::json;

use crate::app::App;
use crate::http::Response;

pub(super) async fn get(app: &App) -> Result<Response, OciError> {
    let Some(cn) = &app.cluster else {
        return Err(OciError::new(ErrorKind::NotFound).msg("this node is not in a cluster ([cluster] is not set)"));
    };
    let c = &cn.cluster;
    let head = c.head().await.map_err(|e| crate::cluster::unavailable(&e))?;
    let leases = c.leases().await.map_err(|e| crate::cluster::unavailable(&e))?;
    let live_after = (c.config().heartbeat_secs * 3) as f64;
    let nodes: Vec<_> = c
        .nodes()
        .into_iter()
        .map(|n| {
            json!({
                "name": n.name, "internal_url": n.internal_url, "heartbeat_age_secs": n.heartbeat_age_secs,
                "live": n.heartbeat_age_secs < live_after, "applied_seq": n.applied_seq,
                "behind": head.saturating_sub(n.applied_seq),
            })
        })
        .collect();
    let leases: Vec<_> = leases
        .into_iter()
        .map(|(role, holder, epoch, secs)| json!({ "role": role, "holder": holder, "epoch": epoch, "expires_in_secs": secs }))
        .collect();
    Ok(Response::json(
        200,
        &json!({
            "node": c.node(), "applied_seq": c.applied(), "head_seq": head,
            "durability": c.config().durability, "nodes": nodes, "leases": leases,
        }),
    ))
}
