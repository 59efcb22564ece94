//! The audit trail in Postgres: the node's audit ring (`GET /internal/v1/audit`) copied into
//! `audit_log` (exactly once per event: unique on the node run's epoch and sequence), plus the
//! changes made through the admin API. A node restart starts a new epoch. The node aggregates
//! repeated denials (a row's `count`) and keeps security events ahead of them; whatever its ring
//! still lost is recorded here as an `audit_events_dropped` row with the node's own counts.

use std::sync::Arc;
use std::time::Duration;

use berth_internal_api::accounts::AuditPage;

use crate::{db, Sidecar};

/// Follow the node's audit ring forever.
pub async fn follow(sc: Arc<Sidecar>) {
    let mut pos: Option<Position> = None;
    loop {
        match step(&sc, &mut pos).await {
            Ok(true) => continue, // more to read
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "audit follower: retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Where the follower is in a node run: epoch, next sequence, and the loss counts it has
/// recorded.
struct Position {
    epoch: String,
    next: u64,
    dropped: (u64, u64),
}

async fn step(sc: &Sidecar, pos: &mut Option<Position>) -> Result<bool, String> {
    let from = pos.as_ref().map_or(0, |p| p.next);
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
    if pos.as_ref().is_none_or(|p| p.epoch != page.epoch) {
        let row = c
            .query_one("SELECT coalesce(max(node_seq), 0) FROM audit_log WHERE node_epoch = $1", &[&page.epoch])
            .await
            .map_err(|e| e.to_string())?;
        let have: i64 = row.get(0);
        // Losses already recorded for this run (the sidecar restarted): only new ones count.
        let row = c
            .query_one(
                "SELECT coalesce(max((regexp_match(subject, 'denials=([0-9]+)'))[1]::bigint), 0),
                        coalesce(max((regexp_match(subject, 'security=([0-9]+)'))[1]::bigint), 0)
                 FROM audit_log WHERE event = 'audit_events_dropped' AND node_epoch = $1",
                &[&page.epoch],
            )
            .await
            .map_err(|e| e.to_string())?;
        let dropped = (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64);
        *pos = Some(Position { epoch: page.epoch.clone(), next: have as u64 + 1, dropped });
        return Ok(true);
    }
    let (next, recorded) = pos.as_ref().map_or((1, (0, 0)), |p| (p.next, p.dropped));
    let now = (page.dropped_denials, page.dropped_security);
    if now != recorded && (now.0 > recorded.0 || now.1 > recorded.1) {
        tracing::warn!(
            denials = now.0 - recorded.0.min(now.0),
            security = now.1 - recorded.1.min(now.1),
            "audit: the node's ring overflowed before these were copied (see berth_audit_events_dropped); \
             they remain in the node's log (target berth::audit)"
        );
        c.execute(
            "INSERT INTO audit_log (at, source, event, actor, subject, node_epoch)
             VALUES (now(), 'node', 'audit_events_dropped', '-', $1, $2)",
            &[&format!("denials={} security={} (totals since the node started)", now.0, now.1), &page.epoch],
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let mut last = next.saturating_sub(1);
    for e in &page.events {
        c.execute(
            "INSERT INTO audit_log (at, source, event, actor, subject, peer, node_epoch, node_seq, count)
             VALUES (to_timestamp($1::float8 / 1000), 'node', $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (node_epoch, node_seq) DO NOTHING",
            &[
                &(e.at_ms as f64),
                &e.event,
                &e.actor,
                &e.subject,
                &e.peer,
                &page.epoch,
                &(e.seq as i64),
                &(e.count as i64),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
        last = e.seq;
    }
    *pos = Some(Position { epoch: page.epoch, next: last + 1, dropped: now });
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
