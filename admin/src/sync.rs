//! The feed follower: long-polls the node's change feed and applies it to Postgres, batch by
//! batch, each in one transaction with its position. Postgres down: wait and reconnect. Node
//! down: retry. Lag (sequences and seconds) is kept for metrics and the admin API.

use std::sync::Arc;
use std::time::Duration;

use berth_internal_api::feed::ChangeRecord;
use serde::Serialize;

use crate::db::{self, Applied};
use crate::Sidecar;

/// The follower's state, as `/api/v1/workers` and `/metrics` show it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncView {
    /// `idle`, `busy` or `backoff`.
    pub state: &'static str,
    /// Last sequence applied to Postgres.
    pub last_seq: u64,
    /// The node's last sequence, as of the last poll.
    pub head: u64,
    /// Changes not yet applied.
    pub lag_changes: u64,
    /// Age of the oldest change not yet applied (seconds; 0 when caught up).
    pub lag_seconds: f64,
    /// Changes applied since start.
    pub applied_total: u64,
    /// When a batch was last applied or the follower found itself caught up (unix ms).
    pub last_run_ms: u64,
    /// Last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// Whether the node's internal API answered the last poll.
    pub node_reachable: bool,
    /// When the node last answered a poll (unix ms; 0 never).
    pub last_contact_ms: u64,
}

impl SyncView {
    /// The node stopped answering: the head it last reported is stale, so the lag is at least
    /// the time since that answer (not the 0 a stale head would suggest).
    fn node_lost(&mut self) {
        self.node_reachable = false;
        if self.last_contact_ms > 0 {
            self.lag_seconds = self.lag_seconds.max(now_ms().saturating_sub(self.last_contact_ms) as f64 / 1000.0);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Follow the feed until the process ends.
pub async fn follow(sc: Arc<Sidecar>) {
    let mut failures = 0u32;
    let mut client = None;
    loop {
        if client.is_none() {
            match db::connect(&sc.cfg.postgres).await {
                Ok(c) => {
                    tracing::info!("feed sync connected to postgres");
                    client = Some(c);
                }
                Err(e) => {
                    backoff(&sc, &mut failures, format!("postgres: {e}")).await;
                    continue;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        let from = match db::last_seq(c).await {
            Ok(s) => s,
            Err(e) => {
                client = None;
                backoff(&sc, &mut failures, format!("postgres: {e}")).await;
                continue;
            }
        };
        let path =
            format!("/internal/v1/changes?from={}&limit={}&wait_ms=20000&consumer=admin", from + 1, sc.cfg.sync_batch);
        let answer = match sc.node.ok("GET", &path, None, Duration::from_secs(40)).await {
            Ok(v) => v,
            Err(e) => {
                sc.update_sync(SyncView::node_lost);
                backoff(&sc, &mut failures, e.to_string()).await;
                continue;
            }
        };
        sc.update_sync(|v| {
            v.node_reachable = true;
            v.last_contact_ms = now_ms();
        });
        let head = answer["head"].as_u64().unwrap_or(0);
        let first = answer["first"].as_u64().unwrap_or(1);
        if first > from + 1 {
            // The node trimmed changes we never applied (we were away longer than its consumer
            // timeout, or this database is new): start again from a snapshot.
            tracing::warn!(from, first, "the node's feed no longer has our position; resyncing from a snapshot");
            let res = match sc.node.ok("GET", "/internal/v1/export", None, Duration::from_secs(600)).await {
                Ok(ex) => db::resync(c, &ex).await.map_err(|e| format!("postgres: {e}")),
                Err(e) => Err(e.to_string()),
            };
            match res {
                Ok(seq) => {
                    tracing::info!(seq, "resynced from a node snapshot");
                    sc.update_sync(|v| v.last_seq = seq);
                }
                Err(e) => {
                    client = None;
                    backoff(&sc, &mut failures, e).await;
                }
            }
            continue;
        }
        let batch: Vec<ChangeRecord> = match serde_json::from_value(answer["changes"].clone()) {
            Ok(b) => b,
            Err(e) => {
                backoff(&sc, &mut failures, format!("unreadable feed: {e}")).await;
                continue;
            }
        };
        let oldest = batch.first().map(|c| c.at_ms);
        sc.update_sync(|v| {
            v.head = head;
            v.lag_changes = head.saturating_sub(from);
            v.lag_seconds = oldest.map(|at| now_ms().saturating_sub(at) as f64 / 1000.0).unwrap_or(0.0);
            v.state = if batch.is_empty() { "idle" } else { "busy" };
        });
        if batch.is_empty() {
            sc.update_sync(|v| {
                v.last_run_ms = now_ms();
                v.last_seq = from;
            });
            failures = 0;
            continue;
        }
        match db::apply_batch(c, &batch, sc.cfg.scan.is_some()).await {
            Ok(Applied::Through(seq)) => {
                failures = 0;
                let n = seq - from;
                sc.update_sync(|v| {
                    v.state = "idle";
                    v.last_seq = seq;
                    v.lag_changes = head.saturating_sub(seq);
                    v.lag_seconds = 0.0;
                    v.applied_total += n;
                    v.last_run_ms = now_ms();
                    v.last_error = None;
                });
                tracing::debug!(through = seq, changes = n, "applied feed batch");
                if sc.cfg.scan.is_some() {
                    sc.scan_wake.notify_waiters();
                }
            }
            Ok(Applied::Nothing) => {}
            Ok(Applied::Conflict) => {
                tracing::warn!("feed position moved underneath us (another sidecar?); re-reading");
            }
            Err(e) => {
                client = None;
                backoff(&sc, &mut failures, format!("postgres: {e}")).await;
            }
        }
    }
}

async fn backoff(sc: &Sidecar, failures: &mut u32, error: String) {
    *failures += 1;
    let wait = Duration::from_millis((250u64 << (*failures).min(6)).min(10_000));
    tracing::warn!(error = %error, retry_in_ms = wait.as_millis() as u64, "feed sync failed; will retry");
    sc.update_sync(|v| {
        v.state = "backoff";
        v.last_error = Some(error);
    });
    tokio::time::sleep(wait).await;
}
