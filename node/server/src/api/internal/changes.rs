//! `GET /internal/v1/changes?from=N&limit=M&wait_ms=T`: change-feed records with sequence
//! `>= from`, in order, at most `limit` (default 1000). With `wait_ms`, waits up to that long
//! for the first one (long poll). With `consumer=NAME`, records that NAME has applied
//! everything before `from` (the feed is trimmed only below live consumers' positions).
//! Answer: `{"head": <last sequence>, "first": <oldest kept>, "changes": [...]}`; a consumer
//! whose `from` is below `first` missed trimmed changes and must resync.

use std::time::{Duration, Instant};

use berth_types::OciError;

use crate::app::App;
use crate::http::{Request, Response};
use crate::store::index_error;

fn num(req: &Request, name: &str, default: u64) -> Result<u64, OciError> {
    match req.query(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| super::bad(format!("{name} must be a non-negative integer"))),
    }
}

pub(super) async fn get(app: &App, req: &Request) -> Result<Response, OciError> {
    let from = num(req, "from", 1)?.max(1);
    let limit = num(req, "limit", 1000)?.clamp(1, 10_000) as usize;
    let wait = Duration::from_millis(num(req, "wait_ms", 0)?.min(60_000));
    if let Some(name) = req.query("consumer") {
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(super::bad("consumer must be 1-64 letters, digits, '-' or '_'"));
        }
        app.index.consumer_at(&format!("ext:{name}"), from - 1).map_err(index_error)?;
    }
    let deadline = Instant::now() + wait;
    let mut rx = app.feed_notify.subscribe();
    // Pushes signal the watch at once; other writers (GC, tiering) are seen within a second.
    while app.index.next_sequence() <= from && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
        let _ = monoio::time::timeout(left, rx.changed()).await;
        if app.shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
    }
    let changes = app.index.changes(from, limit).map_err(index_error)?;
    let head = app.index.next_sequence() - 1;
    let first = app.index.first_sequence().map_err(index_error)?;
    Ok(Response::json(200, &serde_json::json!({ "head": head, "first": first, "changes": changes })))
}
