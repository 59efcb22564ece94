//! `GET /internal/v1/export`: the whole index from one consistent snapshot, with the feed
//! sequence it corresponds to (for the sidecar's full resync and check). Built in memory:
//! about 200 bytes per blob, manifest, tag and link.

use berth_types::OciError;
use serde_json::json;

use crate::app::App;
use crate::http::Response;
use crate::store::index_error;

pub(super) fn get(app: &App) -> Result<Response, OciError> {
    let ex = app.index.export().map_err(index_error)?;
    let blobs: Vec<_> = ex
        .blobs
        .iter()
        .map(|(d, m)| {
            let last_used = ex.access.get(d).copied().unwrap_or(0).max(m.created_at_ms);
            json!({"digest": d, "size": m.size, "tier": m.tier, "created_at_ms": m.created_at_ms, "last_used_ms": last_used})
        })
        .collect();
    let manifests: Vec<_> = ex
        .manifests
        .iter()
        .map(|m| {
            json!({
                "repo": m.repo, "digest": m.digest, "size": m.size, "media_type": m.record.media_type,
                "artifact_type": m.record.artifact_type, "subject": m.record.subject, "blobs": m.record.blobs,
                "manifests": m.record.manifests, "pushed_at_ms": m.record.pushed_at_ms,
            })
        })
        .collect();
    let tags: Vec<_> = ex.tags.iter().map(|(r, t, d)| json!({"repo": r, "tag": t, "digest": d})).collect();
    let links: Vec<_> = ex.links.iter().map(|(r, d)| json!({"repo": r, "digest": d})).collect();
    Ok(Response::json(
        200,
        &json!({"seq": ex.seq, "blobs": blobs, "manifests": manifests, "tags": tags, "links": links}),
    ))
}
