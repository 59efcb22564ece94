//! The mirror: applies the index's change feed to the bucket, in order, so that manifests,
//! tags and repository links exist in S3 next to the blobs (a rebuild needs nothing else).
//!
//! Its position is a named cursor in the index, advanced after each applied change. Every
//! change is applied idempotently (PUT and DELETE of whole objects), so replaying a few after
//! a crash is harmless. A failing change is retried with backoff; later changes wait for it
//! (the bucket never sees a tag before an older delete of it).

use std::sync::Arc;
use std::time::Duration;

use berth_index::{Change, ChangeRecord};

use crate::workers::WorkerState;
use crate::{now_ms, TierError, Tiering};

const NAME: &str = "tier-mirror";
/// The mirror's cursor in the index.
pub const CURSOR: &str = "s3_mirror";

pub(crate) async fn run(t: Arc<Tiering>) {
    let mut failures = 0u32;
    while !t.stopping() {
        let cursor = t.index.cursor(CURSOR).unwrap_or(0);
        // Heartbeat: a live mirror (even one blocked by an S3 outage) holds the feed back.
        let _ = t.index.set_cursor(CURSOR, cursor);
        let lag = t.index.next_sequence().saturating_sub(1).saturating_sub(cursor);
        t.workers.update(NAME, |w| {
            w.backlog = lag;
            w.backlog_unit = "changes";
        });
        let batch = match t.index.changes(cursor + 1, 256) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "change feed unreadable");
                t.pause(Duration::from_secs(5)).await;
                continue;
            }
        };
        if batch.is_empty() {
            t.workers.update(NAME, |w| {
                w.state = WorkerState::Idle;
                w.last_run_ms = now_ms();
            });
            t.nap(&t.wake_mirror, Duration::from_secs(2)).await;
            continue;
        }
        t.workers.update(NAME, |w| w.state = WorkerState::Busy);
        for rec in batch {
            if t.stopping() {
                return;
            }
            match apply(&t, &rec).await {
                Ok(()) => {
                    failures = 0;
                    t.metrics.mirrored.inc();
                    if let Err(e) = t.index.set_cursor(CURSOR, rec.seq) {
                        tracing::error!(error = %e, "cannot record the mirror cursor");
                    }
                    t.workers.update(NAME, |w| w.last_error = None);
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(target: "berth::tier", seq = rec.seq, error = %e, "mirroring a change to S3 failed; will retry");
                    t.workers.update(NAME, |w| {
                        w.state = WorkerState::Backoff;
                        w.last_error = Some(e.to_string());
                    });
                    t.pause(t.backoff(failures)).await;
                    break;
                }
            }
        }
    }
}

async fn apply(t: &Arc<Tiering>, rec: &ChangeRecord) -> Result<(), TierError> {
    if rec.replica {
        // Another node's change (it mirrors it), or a removal GC already made in S3.
        return Ok(());
    }
    let (r, l) = (&t.remote, &t.layout);
    let res = match &rec.change {
        Change::ManifestPut { repo, digest, media_type, .. } => match t.index.manifest(repo, digest)? {
            // Gone again already: the later ManifestDeleted will run the DELETE.
            None => Ok(()),
            Some((_, bytes)) => r.put_bytes(&l.manifest(repo, digest), bytes, media_type).await,
        },
        Change::ManifestDeleted { repo, digest } => r.delete(&l.manifest(repo, digest)).await,
        Change::TagSet { repo, tag, digest } => {
            r.put_bytes(&l.tag(repo, tag), digest.to_string().into_bytes(), "text/plain").await
        }
        Change::TagDeleted { repo, tag } => r.delete(&l.tag(repo, tag)).await,
        Change::BlobLinked { repo, digest } => r.put_bytes(&l.link(repo, digest), Vec::new(), "text/plain").await,
        Change::BlobUnlinked { repo, digest } => r.delete(&l.link(repo, digest)).await,
        Change::BlobRemoved { digest } => {
            let _g = t.locks.lock(digest).await;
            // Pushed again since: the new incarnation owns the object.
            if t.index.blob(digest)?.is_none() {
                r.delete(&l.blob(digest)).await
            } else {
                Ok(())
            }
        }
        Change::BlobCommitted { .. } | Change::BlobTier { .. } | Change::ScanRequested { .. } => Ok(()),
    };
    if res.is_err() {
        t.metrics.s3_error("mirror");
    }
    res
}
