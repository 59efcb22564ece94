//! GC jobs started by the sidecar (admin API or schedule): started on the node, recorded in
//! Postgres, and their reports stored when they finish.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{db, Sidecar};

/// Start a GC on the node and record it. `Err` carries (HTTP status, message).
pub async fn start(
    sc: &Arc<Sidecar>,
    dry_run: bool,
    policy: Option<Value>,
    trigger: &str,
) -> Result<Value, (u16, Value)> {
    let policy = policy.unwrap_or_else(|| serde_json::to_value(&sc.cfg.gc).unwrap_or(Value::Null));
    let body = json!({ "dry_run": dry_run, "policy": policy });
    let (status, v) = sc
        .node
        .call("POST", "/internal/v1/gc", Some(body), Duration::from_secs(30))
        .await
        .map_err(|e| (503, json!({ "error": e.to_string() })))?;
    if status != 202 {
        return Err((status, v));
    }
    let id = v["id"].as_str().unwrap_or_default().to_string();
    match db::connect(&sc.cfg.postgres).await {
        Ok(c) => {
            let r = c
                .execute(
                    "INSERT INTO gc_jobs (id, trigger, dry_run, state) VALUES ($1, $2, $3, 'running') ON CONFLICT (id) DO NOTHING",
                    &[&id, &trigger, &dry_run],
                )
                .await;
            if let Err(e) = r {
                tracing::warn!(job = %id, error = %e, "could not record the GC job in postgres");
            }
        }
        Err(e) => tracing::warn!(job = %id, error = %e, "postgres unavailable: GC job not recorded"),
    }
    tracing::info!(job = %id, dry_run, trigger, "garbage collection started on the node");
    Ok(json!({ "id": id, "dry_run": dry_run }))
}

/// Store reports of finished jobs (every second while any recorded job runs).
pub async fn watch(sc: Arc<Sidecar>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(c) = db::connect(&sc.cfg.postgres).await else { continue };
        let Ok(rows) = c.query("SELECT id FROM gc_jobs WHERE state = 'running'", &[]).await else { continue };
        for row in rows {
            let id: String = row.get(0);
            let v = match sc.node.call("GET", &format!("/internal/v1/jobs/{id}"), None, Duration::from_secs(10)).await {
                Ok((200, v)) => v,
                // The node restarted and forgot it: a crash mid-GC leaves a consistent store.
                Ok((404, _)) => {
                    json!({ "state": "failed", "error": "the node restarted during this job; rerun to finish" })
                }
                _ => continue,
            };
            let state = v["state"].as_str().unwrap_or("running").to_string();
            if state == "running" {
                continue;
            }
            let error = v["error"].as_str().map(str::to_owned);
            // Every job's end is logged with its results (scheduled runs included).
            let report = &v["report"];
            let count = |k: &str| report[k].as_array().map_or(0, Vec::len);
            match &error {
                None => tracing::info!(
                    job = %id,
                    state = %state,
                    dry_run = report["dry_run"].as_bool().unwrap_or(false),
                    tags = count("tags"),
                    manifests = count("manifests"),
                    blobs = count("blobs"),
                    blob_bytes = report["blob_bytes"].as_u64().unwrap_or(0),
                    kept_in_use = report["kept_in_use"].as_u64().unwrap_or(0),
                    "garbage collection finished"
                ),
                Some(e) => tracing::warn!(job = %id, state = %state, error = %e, "garbage collection failed"),
            }
            let r = c
                .execute(
                    "UPDATE gc_jobs SET state = $2, finished_at = now(), report = $3, error = $4 WHERE id = $1",
                    &[&id, &state, &v.get("report").cloned().filter(|r| !r.is_null()), &error],
                )
                .await;
            if let Err(e) = r {
                tracing::warn!(job = %id, error = %e, "could not store the GC report");
            }
        }
    }
}
