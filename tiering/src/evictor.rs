//! The evictor: keeps local blob bytes under the cache budget.
//!
//! When local bytes pass the high watermark it takes the blobs that are safe in S3
//! (`local_and_remote`), least recently pulled first, and for each one, under the blob's lock,
//! moves it to `remote` in the index (synced) and then unlinks the file, until local bytes
//! reach the low watermark. Index first, file second: a crash in between leaves an orphan file
//! (harmless, overwritten by the next read-through), never an index entry without its file.
//! A reader that opened the file before the unlink keeps reading it (Unix semantics); one that
//! looks after sees `remote` and reads through.
//!
//! Recency comes from the node's per-core access buffers, flushed to the index once a second
//! in one unsynced batch: a pull costs no index write on its path.

use std::sync::Arc;
use std::time::Duration;

use berth_index::TierState;

use crate::workers::WorkerState;
use crate::{now_ms, Tiering};

const NAME: &str = "tier-evict";

pub(crate) async fn run(t: Arc<Tiering>) {
    let every = Duration::from_secs(t.cache.check_interval_secs.max(1));
    while !t.stopping() {
        if let Some((high, low)) = t.cache.thresholds() {
            let local = t.index.tier_totals().map(|x| x.local_bytes).unwrap_or(0);
            t.workers.update(NAME, |w| {
                w.backlog = local.saturating_sub(high);
                w.backlog_unit = "bytes over the high watermark";
            });
            if local > high {
                t.workers.update(NAME, |w| w.state = WorkerState::Busy);
                let res = evict_down_to(&t, low).await;
                t.workers.update(NAME, |w| {
                    w.state = WorkerState::Idle;
                    w.last_run_ms = now_ms();
                    w.last_error = res.err();
                });
            }
        }
        t.nap(&t.wake_evict, every).await;
    }
}

async fn evict_down_to(t: &Arc<Tiering>, low: u64) -> Result<(), String> {
    let candidates = t.index.eviction_candidates().map_err(|e| e.to_string())?;
    let (mut n, mut bytes) = (0u64, 0u64);
    for c in candidates {
        let local = t.index.tier_totals().map_err(|e| e.to_string())?.local_bytes;
        if local <= low || t.stopping() {
            break;
        }
        let _g = t.locks.lock(&c.digest).await;
        if !t.index.set_tier(&c.digest, TierState::LocalAndRemote, TierState::Remote).map_err(|e| e.to_string())? {
            continue;
        }
        match t.local.remove(&c.digest) {
            Ok(()) => {}
            Err(e) => tracing::warn!(digest = %c.digest, error = %e, "evicted blob's file could not be removed"),
        }
        n += 1;
        bytes += c.size;
        t.metrics.evictions.inc();
        t.metrics.evicted_bytes.inc_by(c.size);
        tracing::debug!(target: "berth::tier", digest = %c.digest, size = c.size, "evicted from the local cache");
    }
    if n > 0 {
        tracing::info!(target: "berth::tier", blobs = n, bytes, "evicted least recently used blobs");
    }
    Ok(())
}
