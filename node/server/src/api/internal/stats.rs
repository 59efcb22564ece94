//! `GET /internal/v1/stats`: exact store totals by tier and the feed head.

use berth_types::OciError;
use serde_json::json;

use crate::app::App;
use crate::http::Response;
use crate::store::index_error;

pub(super) fn get(app: &App) -> Result<Response, OciError> {
    let (blobs, bytes) = app.index.store_totals().map_err(index_error)?;
    let t = app.index.tier_totals().map_err(index_error)?;
    Ok(Response::json(
        200,
        &json!({
            "blobs": blobs,
            "blob_bytes": bytes,
            "local_bytes": t.local_bytes,
            "remote_only_bytes": bytes.saturating_sub(t.local_bytes),
            "pending_tier_blobs": t.pending_count,
            "pending_tier_bytes": t.pending_bytes,
            "tiering": app.tier.is_some(),
            "feed_head": app.index.next_sequence() - 1,
        }),
    ))
}
