//! Scheduled GC: a cron expression (`gc_schedule`) starts runs with the configured policy.

use std::str::FromStr;
use std::sync::Arc;

use crate::Sidecar;

/// Parse a 5-field (minute-based, as crontab) or 6/7-field (with seconds) cron expression.
pub fn parse(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 { format!("0 {expr}") } else { expr.to_string() };
    cron::Schedule::from_str(&full).map_err(|e| format!("gc_schedule {expr:?}: {e}"))
}

/// Run GC at every time of the schedule until the process ends.
pub async fn run(sc: Arc<Sidecar>, schedule: cron::Schedule) {
    loop {
        let Some(next) = schedule.upcoming(chrono::Utc).next() else { return };
        sc.set_next_gc(next.timestamp_millis().max(0) as u64);
        let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        match crate::jobs::start(&sc, sc.cfg.gc_schedule_dry_run, None, "schedule").await {
            Ok(v) => tracing::info!(job = %v["id"], "scheduled garbage collection started"),
            Err((status, v)) => tracing::warn!(status, answer = %v, "scheduled garbage collection not started"),
        }
    }
}
