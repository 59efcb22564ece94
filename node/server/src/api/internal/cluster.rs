//! `GET /internal/v1/cluster`: this node's view of the cluster — its name and applied log
//! position, the log's head, every node with its heartbeat age and applied position (lag), the
//! leases and the latest snapshot; with `?probe=true` also whether each node's internal URL
//! answers from this node (a request to every node: `berth doctor` asks, monitoring polls need
//! not). `POST /internal/v1/cluster/compact`: snapshot the registry
//! and trim the log now (409 if another node is at it). 404 on a single node; 503 when
//! Postgres cannot be reached.

use berth_types::{ErrorKind, OciError};
use serde_json::json;

use crate::app::App;
use crate::http::{Request, Response};

pub(super) async fn get(app: &App, req: &Request) -> Result<Response, OciError> {
    let Some(cn) = &app.cluster else {
        return Err(OciError::new(ErrorKind::NotFound).msg("this node is not in a cluster ([cluster] is not set)"));
    };
    let c = &cn.cluster;
    let head = c.head().await.map_err(|e| crate::cluster::unavailable(&e))?;
    let leases = c.leases().await.map_err(|e| crate::cluster::unavailable(&e))?;
    let snapshot = c.latest_snapshot().await.map_err(|e| crate::cluster::unavailable(&e))?;
    let live_after = (c.config().heartbeat_secs * 3) as f64;
    // On request: whether this node can reach each node's internal URL (uploads are
    // forwarded there).
    let probes: Option<std::collections::HashMap<String, Result<(), String>>> = match req.query("probe") {
        Some("true" | "1") => Some(c.probe_nodes().await.into_iter().collect()),
        _ => None,
    };
    let nodes: Vec<_> = c
        .nodes()
        .into_iter()
        .map(|n| {
            let mut v = json!({
                "name": n.name, "internal_url": n.internal_url, "heartbeat_age_secs": n.heartbeat_age_secs,
                "live": n.heartbeat_age_secs < live_after, "applied_seq": n.applied_seq,
                "behind": head.saturating_sub(n.applied_seq),
            });
            if let Some(reach) = probes.as_ref().map(|p| p.get(&n.name)) {
                v["reachable"] = json!(reach.is_some_and(|r| r.is_ok()));
                v["unreachable_because"] = json!(reach.and_then(|r| r.as_ref().err()));
            }
            v
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
            "snapshot": snapshot, "stranded": c.stranded(),
        }),
    ))
}

pub(super) async fn compact(app: &App) -> Result<Response, OciError> {
    let Some(cn) = app.cluster.clone() else {
        return Err(OciError::new(ErrorKind::NotFound).msg("this node is not in a cluster ([cluster] is not set)"));
    };
    let (index, auth) = (app.index.clone(), app.auth.clone());
    let (reply, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-compact".into())
        .spawn(move || {
            let _ = reply.send(crate::cluster::compact::run(&cn, &index, auth.as_deref()));
        })
        .map_err(|e| OciError::new(ErrorKind::Unavailable).msg(format!("cannot start compaction: {e}")))?;
    match answer.await {
        Ok(Ok(report)) => Ok(Response::json(200, &serde_json::to_value(&report).unwrap_or_default())),
        Ok(Err(crate::cluster::compact::CompactError::Busy(m))) => {
            let mut r = Response::from(
                OciError::new(ErrorKind::TooManyRequests).msg(format!("compaction runs elsewhere: {m}")),
            );
            r.status = 409;
            Ok(r)
        }
        Ok(Err(e)) => Err(OciError::new(ErrorKind::Unavailable).msg(e.to_string())),
        Err(_) => Err(OciError::new(ErrorKind::Unavailable).msg("compaction stopped")),
    }
}
