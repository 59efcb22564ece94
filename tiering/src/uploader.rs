//! The uploader: drains the index's `tier_pending` queue into the bucket.
//!
//! For each pending blob: stream the file to S3 (verified by checksum and size), then, under
//! the blob's lock, check the object is still there (a concurrent deletion of an earlier
//! incarnation of the same digest may have removed it) and move the blob
//! `local` → `local_and_remote` with a compare-and-set. A blob removed while it was being
//! uploaded leaves no object behind. Failures back off exponentially; pushes are never
//! affected, they only grow the queue (visible as the worker's backlog and in metrics).

use std::sync::Arc;
use std::time::Duration;

use berth_index::TierState;
use berth_types::Digest;

use crate::metrics::TierMetrics;
use crate::workers::WorkerState;
use crate::{now_ms, TierError, Tiering};

const NAME: &str = "tier-upload";

pub(crate) async fn run(t: Arc<Tiering>) {
    match t.remote.abort_own_stale_uploads().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(aborted = n, "aborted this node's multipart uploads interrupted by its last run"),
        Err(e) => tracing::debug!(error = %e, "could not list stale multipart uploads"),
    }
    let mut failures = 0u32;
    while !t.stopping() {
        let batch = match t.index.pending_tiering(None, 256) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "tier queue unreadable");
                t.nap(&t.wake_upload, Duration::from_secs(5)).await;
                continue;
            }
        };
        let totals = t.index.tier_totals().unwrap_or_default();
        t.workers.update(NAME, |w| {
            w.backlog = totals.pending_bytes;
            w.backlog_unit = "bytes";
        });
        if batch.is_empty() {
            t.workers.update(NAME, |w| w.state = WorkerState::Idle);
            t.nap(&t.wake_upload, Duration::from_secs(5)).await;
            continue;
        }
        t.workers.update(NAME, |w| w.state = WorkerState::Busy);
        tracing::info!(
            target: "berth::tier",
            pending_blobs = totals.pending_count,
            pending_bytes = totals.pending_bytes,
            "tiering backlog: uploading to S3"
        );
        let mut tasks = tokio::task::JoinSet::new();
        let mut last_error = None;
        let mut items = batch.into_iter();
        loop {
            while tasks.len() < t.cfg.upload_concurrency {
                let Some((digest, size)) = items.next() else { break };
                let t2 = t.clone();
                tasks.spawn(async move {
                    let r = upload_one(&t2, &digest, size).await;
                    (digest, size, r)
                });
            }
            let Some(done) = tasks.join_next().await else { break };
            let Ok((digest, size, r)) = done else { continue };
            TierMetrics::result(&t.metrics.uploads, r.is_ok());
            match r {
                Ok(true) => {
                    t.metrics.uploaded_bytes.inc_by(size);
                    tracing::info!(target: "berth::tier", %digest, size, "blob tiered to S3");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(target: "berth::tier", %digest, size, error = %e, "blob upload to S3 failed; will retry");
                    last_error = Some(e.to_string());
                }
            }
            if t.stopping() {
                return;
            }
        }
        // Uploaded blobs became evictable.
        t.wake_evict.notify_one();
        match last_error {
            None => {
                failures = 0;
                t.workers.update(NAME, |w| {
                    w.last_run_ms = now_ms();
                    w.last_error = None;
                });
            }
            Some(e) => {
                failures += 1;
                let wait = t.backoff(failures);
                t.workers.update(NAME, |w| {
                    w.state = WorkerState::Backoff;
                    w.last_error = Some(e);
                });
                // Pushes do not cut a backoff short (they would hammer a failing S3).
                t.pause(wait).await;
            }
        }
    }
}

/// Upload one blob. Ok(true): tiered now; Ok(false): nothing to do (gone or done already).
async fn upload_one(t: &Arc<Tiering>, digest: &Digest, size: u64) -> Result<bool, TierError> {
    match t.index.blob(digest)? {
        Some(m) if m.tier == TierState::Local => {}
        _ => return Ok(false),
    }
    let key = t.layout.blob(digest);
    let path = t.local.path(digest);
    if let Err(e) = t.remote.put_file(&key, &path, size, digest).await {
        t.metrics.s3_error("put_blob");
        return Err(e);
    }
    let _g = t.locks.lock(digest).await;
    // Re-check under the lock: a deletion of an earlier incarnation of this digest may have
    // removed the object between our upload and now.
    if t.remote.head(&key).await? != Some(size) {
        return Err(TierError::Verify(format!("{key} vanished after upload")));
    }
    if t.index.set_tier(digest, TierState::Local, TierState::LocalAndRemote)? {
        return Ok(true);
    }
    if t.index.blob(digest)?.is_none() {
        // Removed while we uploaded: leave nothing behind.
        t.remote.delete(&key).await?;
    }
    Ok(false)
}
