//! Operational endpoints outside the registry API: `/healthz`, `/readyz`, `/metrics`.

use std::sync::atomic::Ordering;

use berth_types::OciError;

use crate::app::App;
use crate::http::{Method, Request, Response};
use crate::routes::Endpoint;

pub(super) fn handle(app: &App, req: &Request, ep: &Endpoint) -> Result<Response, OciError> {
    if !matches!(req.method, Method::Get | Method::Head) {
        return super::method_not_allowed("GET, HEAD");
    }
    match ep {
        Endpoint::Health => Ok(Response::bytes(200, "text/plain", b"ok\n".to_vec())),
        Endpoint::Ready => {
            if app.shutting_down.load(Ordering::Relaxed) {
                Ok(Response::bytes(503, "text/plain", b"shutting down\n".to_vec()))
            } else if app.cluster.as_ref().is_some_and(|c| c.cluster.stranded()) {
                let msg = b"cannot catch up with the cluster's change log: empty this node's data directory and start it again\n";
                Ok(Response::bytes(503, "text/plain", msg.to_vec()))
            } else if app.cluster.as_ref().is_some_and(|c| c.cluster.loading()) {
                Ok(Response::bytes(503, "text/plain", b"loading the cluster's snapshot\n".to_vec()))
            } else {
                Ok(Response::bytes(200, "text/plain", b"ready\n".to_vec()))
            }
        }
        _ => {
            app.metrics.upload_sessions.set(app.uploads.open_sessions() as i64);
            if let Ok((count, bytes)) = app.index.store_totals() {
                app.metrics.blobs.set(count as i64);
                app.metrics.blob_bytes.set(bytes as i64);
            }
            if let (Some(_), Ok(t)) = (&app.tier, app.index.tier_totals()) {
                app.metrics.local_bytes.set(t.local_bytes as i64);
                app.metrics.tier_pending.set(t.pending_count as i64);
                app.metrics.tier_pending_bytes.set(t.pending_bytes as i64);
            }
            if let Some(auth) = &app.auth {
                let (denials, security) = auth.audit.dropped();
                let class = |class| crate::metrics::ClassLabels { class };
                app.metrics.audit_dropped.get_or_create(&class("denials")).set(denials as i64);
                app.metrics.audit_dropped.get_or_create(&class("security")).set(security as i64);
            }
            if let Some(t) = app.auth.as_ref().and_then(|a| a.tokens.as_ref()) {
                app.metrics.token_cache_bytes.set(t.cache_bytes() as i64);
            }
            if let Some((size, free)) = disk_space(&app.cfg.data_dir) {
                app.metrics.disk_size.set(size as i64);
                app.metrics.disk_free.set(free as i64);
            }
            let (content_type, body) = berth_types::exposition::negotiate(req.header("accept"), app.metrics.encode());
            Ok(Response::bytes(200, content_type, body.into_bytes()))
        }
    }
}

pub(crate) use crate::store::space::disk_space;
