//! `POST /internal/v1/gc` with a JSON [`GcRequest`] body (`{"dry_run": true, "policy": {…}}`,
//! both optional): starts a GC job and answers 202 `{"id": …}`; 409 with the running job's id
//! when one runs already (one GC at a time).

use berth_types::{ErrorKind, OciError};

use crate::app::App;
use crate::gc::GcRequest;
use crate::http::{Body, Response};

pub(super) async fn post(app: &App, body: &mut Body<'_>) -> Result<Response, OciError> {
    let bytes = body.read_to_end(1 << 20).await.map_err(|e| super::bad(format!("body: {e:?}")))?;
    let req: GcRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        GcRequest { dry_run: true, policy: None }
    } else {
        serde_json::from_slice(&bytes).map_err(|e| super::bad(format!("invalid GC request: {e}")))?
    };
    let policy = req.policy.unwrap_or_else(|| app.cfg.gc.clone());
    // With deletes disabled, nothing a user pushed may be removed: no tag retention, no
    // removal of untagged manifests (not even planned: a plan that can never run misleads).
    // Unreferenced blobs are still collected.
    let deletes_content = policy.untagged_max_age_secs.is_some()
        || policy.retention.iter().any(|r| r.keep_last.is_some() || r.keep_younger_than_secs.is_some());
    if deletes_content && !app.cfg.storage.delete_enabled {
        let mut r = Response::from(OciError::new(ErrorKind::Unsupported).msg(
            "deletes are disabled on this registry (storage.delete_enabled = false): tag retention and removal \
             of untagged manifests cannot run; drop them from the policy to collect unreferenced blobs",
        ));
        r.status = 409;
        return Ok(r);
    }
    match app.gc.start(app.index.clone(), app.blobs.clone(), app.cluster.clone(), policy, req.dry_run) {
        Ok(id) => Ok(Response::json(202, &serde_json::json!({ "id": id, "dry_run": req.dry_run }))
            .header("Location", format!("/internal/v1/jobs/{id}"))),
        Err(crate::gc::Refused::Lease(why)) => {
            let mut r = Response::from(
                OciError::new(ErrorKind::TooManyRequests).msg(format!("garbage collection runs elsewhere: {why}")),
            );
            r.status = 409;
            Ok(r)
        }
        Err(crate::gc::Refused::Running(running)) => {
            let mut r = Response::from(
                OciError::new(ErrorKind::TooManyRequests)
                    .msg(format!("garbage collection {running} is running; one at a time"))
                    .detail(serde_json::json!({ "running": running })),
            );
            r.status = 409;
            Ok(r)
        }
    }
}
