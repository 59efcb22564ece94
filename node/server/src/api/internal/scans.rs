//! `PUT /internal/v1/scans/<digest>` with a JSON `ScanRecord`: the sidecar stores a scan's
//! status or results (the pull policy sees it at once); `GET` reads it back.

use berth_internal_api::scan::ScanRecord;
use berth_types::{Digest, OciError};

use crate::app::App;
use crate::http::{Body, Response};
use crate::store::index_error;

fn digest(s: &str) -> Result<Digest, OciError> {
    s.parse().map_err(|e| super::bad(format!("invalid digest {s:?}: {e}")))
}

pub(super) async fn put(app: &App, body: &mut Body<'_>, d: &str) -> Result<Response, OciError> {
    let digest = digest(d)?;
    // Findings of a large image run to a few MiB of JSON at most.
    let bytes = body.read_to_end(64 << 20).await.map_err(|e| super::bad(format!("body: {e:?}")))?;
    let record: ScanRecord =
        serde_json::from_slice(&bytes).map_err(|e| super::bad(format!("invalid scan record: {e}")))?;
    if let Some(cn) = &app.cluster {
        // Every node's pull policy sees it (the log's apply stores it on each).
        let value = serde_json::to_value(&record).map_err(|e| super::bad(e.to_string()))?;
        cn.put_state(berth_cluster::StateKind::Scan, digest.to_string(), value).await?;
        return Ok(Response::new(204));
    }
    app.index.put_scan(&digest, &record).map_err(index_error)?;
    if let Some(t) = &app.tier {
        // A rebuild from the bucket restores it (the verdict a pull is judged by).
        t.put_state(&format!("scans/{digest}.json"), bytes.to_vec());
    }
    if let Some(book) = &app.scans {
        book.update(&digest, &record);
    }
    Ok(Response::new(204))
}

pub(super) fn get(app: &App, d: &str) -> Result<Response, OciError> {
    let digest = digest(d)?;
    match app.index.scan(&digest).map_err(index_error)? {
        Some(r) => Ok(Response::json(200, &serde_json::to_value(r).unwrap_or_default())),
        None => Err(OciError::new(berth_types::ErrorKind::NotFound).msg(format!("no scan record for {digest}"))),
    }
}
