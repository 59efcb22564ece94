//! The audit trail in Postgres: the node's audit ring (`GET /internal/v1/audit`) copied into
//! `audit_log` (exactly once per event: unique on the node run's epoch and sequence), plus the
//! changes made through the admin API. A node restart starts a new epoch; events the ring
//! dropped while the sidecar was away are reported as a gap (they remain in the node's log).

use std::sync::Arc;
use std::time::Duration;

use berth_internal_api::accounts::AuditPage;

use crate::{db, Sidecar};

/// Follow the node's audit ring forever.
pub async fn follow(sc: Arc<Sidecar>) {
    let mut pos: Option<(String, u64)> = None;
    loop {
        match step(&sc, &mut pos).await {
            Ok(true) => continue, // more to read
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "audit follower: retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn step(sc: &Sidecar, pos: &mut Option<(String, u64)>) -> Result<bool, String> {
    let from = pos.as_ref().map_or(0, |(_, n)| *n);
    let (status, v) = sc
        .node
        .call("GET", &format!("/internal/v1/audit?from={from}&limit=1000"), None, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    if status == 409 {
        return Ok(false); // auth is off on the node: nothing to follow
    }
    if status != 200 {
        return Err(format!("audit: HTTP {status}"));
    }
    let page: AuditPage = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let c = db::connect(&sc.cfg.postgres).await.map_err(|e| e.to_string())?;
    // A new node run (or our first look): continue after what Postgres has of it.
    if pos.as_ref().is_none_or(|(epoch, _)| *epoch != page.epoch) {
        let row = c
            .query_one("SELECT coalesce(max(node_seq), 0) FROM audit_log WHERE node_epoch = $1", &[&page.epoch])
            .await
            .map_err(|e| e.to_string())?;
        let have: i64 = row.get(0);
        *pos = Some((page.epoch.clone(), have as u64 + 1));
        return Ok(true);
    }
    let next = pos.as_ref().map_or(1, |(_, n)| *n);
    if page.first > next {
        tracing::warn!(
            missed = page.first - next,
            "audit: the node dropped events before they were copied (the sidecar was away); they remain in the node's log"
        );
    }
    let mut last = next.saturating_sub(1);
    for e in &page.events {
        c.execute(
            "INSERT INTO audit_log (at, source, event, actor, subject, peer, node_epoch, node_seq)
             VALUES (to_timestamp($1::float8 / 1000), 'node', $2, $3, $4, $5, $6, $7)
             ON CONFLICT (node_epoch, node_seq) DO NOTHING",
            &[&(e.at_ms as f64), &e.event, &e.actor, &e.subject, &e.peer, &page.epoch, &(e.seq as i64)],
        )
        .await
        .map_err(|e| e.to_string())?;
        last = e.seq;
    }
    *pos = Some((page.epoch, last + 1));
    Ok(page.events.len() == 1000)
}

/// Record a change made through the admin API.
pub async fn record(sc: &Sidecar, event: &str, subject: &str) {
    let res = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c
            .execute(
                "INSERT INTO audit_log (at, source, event, actor, subject) VALUES (now(), 'admin-api', $1, 'admin-api', $2)",
                &[&event, &subject],
            )
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, event, subject, "audit row not written");
    }
}
