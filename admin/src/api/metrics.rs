//! `GET /metrics`: the sidecar's Prometheus metrics (feed lag in changes and seconds, changes
//! applied), rendered from the follower's state at scrape time.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Sidecar;

pub(super) async fn get(State(sc): State<Arc<Sidecar>>, headers: axum::http::HeaderMap) -> Response {
    let s = sc.sync_view();
    let mut r = Registry::with_prefix("berth_admin");
    let lag = Gauge::<i64>::default();
    lag.set(s.lag_changes as i64);
    r.register("feed_lag_changes", "Change-feed records not yet applied to Postgres", lag);
    let lag_s = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    lag_s.set(s.lag_seconds);
    r.register("feed_lag_seconds", "Age of the oldest change not yet applied to Postgres", lag_s);
    let up = Gauge::<i64>::default();
    up.set(i64::from(s.node_reachable));
    r.register("node_up", "Whether the node's internal API answered the feed follower's last poll", up);
    let last = Gauge::<i64>::default();
    last.set(s.last_seq as i64);
    r.register("feed_last_applied_sequence", "Last change-feed sequence applied to Postgres", last);
    let applied = Counter::<u64>::default();
    applied.inc_by(s.applied_total);
    r.register("feed_applied_changes", "Changes applied since start", applied);
    if sc.cfg.scan.is_some() {
        let v = sc.scan_view();
        let g = |val: i64| {
            let g = Gauge::<i64>::default();
            g.set(val);
            g
        };
        let c = |val: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(val);
            c
        };
        r.register("scan_queue_jobs", "Scan jobs waiting in the queue", g(v.queued as i64));
        r.register("scan_trivy_up", "Whether the Trivy server answered the last check", g(i64::from(v.trivy_up)));
        r.register("scans_completed", "Scans completed since start", c(v.completed_total));
        r.register("scans_failed", "Scans failed (attempts used up) since start", c(v.failed_total));
        r.register(
            "scan_sbom_rescans",
            "Rescans done from stored SBOMs (no layer read) since start",
            c(v.sbom_rescans_total),
        );
    }
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = berth_types::exposition::negotiate(accept, out);
    ([(CONTENT_TYPE, content_type)], body).into_response()
}
