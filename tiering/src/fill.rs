//! Read-through: one S3 fetch per missing blob, shared by every reader.
//!
//! The fetch writes into a temp file next to the blob store and publishes progress on a
//! `watch` channel; readers send from the same file descriptor (`sendfile` at their own
//! offset) as far as it is written, so the first bytes reach clients before the fetch ends
//! and a slow reader never slows the fetch. At the end the file's size and digest are checked,
//! it is synced and renamed into place, and the blob moves `remote` → `local_and_remote`.
//! On any failure the temp file is removed and readers see the error: nothing partial is ever
//! cached.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use berth_index::TierState;
use berth_types::Digest;
use tokio::sync::watch;

use crate::metrics::TierMetrics;
use crate::remote::scratch_path;
use crate::{TierError, Tiering};

#[derive(Debug, Clone)]
enum FillState {
    /// Waiting for S3 to answer.
    Connecting,
    /// This many bytes are in the file.
    Streaming(u64),
    /// Complete and verified.
    Done,
    /// Failed; the file is gone.
    Failed(String),
}

/// A read-through in progress.
pub struct Fill {
    /// Blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    file: File,
    state: watch::Receiver<FillState>,
}

impl Fill {
    /// The file being filled; read it with positional reads only.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Wait until S3 has answered; an error means nothing can be served.
    pub async fn ready(&self) -> Result<(), TierError> {
        let mut rx = self.state.clone();
        let s = rx.wait_for(|s| !matches!(s, FillState::Connecting)).await.map_err(|_| TierError::Stopped)?.clone();
        match s {
            FillState::Failed(e) => Err(TierError::S3 { op: "read_through", reason: e }),
            _ => Ok(()),
        }
    }

    /// Wait until more than `sent` bytes are in the file; returns how many are (the blob's size
    /// once complete). An error means the fetch failed and the response must be cut short.
    pub async fn available(&self, sent: u64) -> Result<u64, TierError> {
        let mut rx = self.state.clone();
        let s = rx
            .wait_for(|s| match s {
                FillState::Connecting => false,
                FillState::Streaming(n) => *n > sent,
                FillState::Done | FillState::Failed(_) => true,
            })
            .await
            .map_err(|_| TierError::Stopped)?
            .clone();
        match s {
            FillState::Streaming(n) => Ok(n),
            FillState::Done => Ok(self.size),
            FillState::Failed(e) => Err(TierError::S3 { op: "read_through", reason: e }),
            FillState::Connecting => unreachable!("waited past it"),
        }
    }
}

/// Join the fetch running for `digest`, or start one.
pub(crate) fn join_or_start(t: &Arc<Tiering>, digest: &Digest, size: u64) -> Result<Arc<Fill>, TierError> {
    let mut fills = t.fills.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = fills.get(digest) {
        return Ok(f.clone());
    }
    let tmp = scratch_path(&t.local.scratch_dir(), "fill", digest);
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&tmp)?;
    let (tx, rx) = watch::channel(FillState::Connecting);
    let fill = Arc::new(Fill { digest: digest.clone(), size, file, state: rx });
    fills.insert(digest.clone(), fill.clone());
    drop(fills);
    let (t2, f2) = (t.clone(), fill.clone());
    t.handle.spawn(async move {
        let res = fetch(&t2, &f2, &tmp, &tx).await;
        TierMetrics::result(&t2.metrics.fills, res.is_ok());
        match res {
            Ok(()) => {
                tracing::info!(target: "berth::tier", digest = %f2.digest, size = f2.size, "read-through complete; cached");
                let _ = tx.send(FillState::Done);
            }
            Err(e) => {
                t2.metrics.s3_error("read_through");
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(target: "berth::tier", digest = %f2.digest, error = %e, "read-through failed; nothing cached");
                let _ = tx.send(FillState::Failed(e.to_string()));
            }
        }
        let mut fills = t2.fills.lock().unwrap_or_else(|p| p.into_inner());
        if fills.get(&f2.digest).is_some_and(|f| Arc::ptr_eq(f, &f2)) {
            fills.remove(&f2.digest);
        }
    });
    Ok(fill)
}

async fn fetch(t: &Arc<Tiering>, fill: &Fill, tmp: &PathBuf, tx: &watch::Sender<FillState>) -> Result<(), TierError> {
    let mut dl = t.remote.get(&t.layout.blob(&fill.digest), None).await?;
    if dl.len != fill.size {
        return Err(TierError::Verify(format!("S3 holds {} bytes, the index says {}", dl.len, fill.size)));
    }
    let _ = tx.send(FillState::Streaming(0));
    let mut hasher = fill.digest.algorithm().hasher();
    let mut off = 0u64;
    while let Some(chunk) =
        dl.body.try_next().await.map_err(|e| TierError::S3 { op: "get_object", reason: e.to_string() })?
    {
        if off + chunk.len() as u64 > fill.size {
            return Err(TierError::Verify("S3 sent more bytes than the blob has".into()));
        }
        fill.file.write_all_at(&chunk, off)?;
        hasher.update(&chunk);
        off += chunk.len() as u64;
        t.metrics.s3_read_bytes.inc_by(chunk.len() as u64);
        let _ = tx.send(FillState::Streaming(off));
    }
    if off != fill.size {
        return Err(TierError::Verify(format!("S3 sent {off} of {} bytes", fill.size)));
    }
    let got = hasher.finish();
    if got != fill.digest {
        return Err(TierError::Verify(format!("S3 copy hashes to {got}")));
    }
    let f = fill.file.try_clone()?;
    tokio::task::spawn_blocking(move || f.sync_all()).await.map_err(|e| TierError::Io(std::io::Error::other(e)))??;
    let _g = t.locks.lock(&fill.digest).await;
    match t.index.blob(&fill.digest)? {
        Some(m) if m.tier == TierState::Remote => {
            let (local, tmp2, d) = (t.local.clone(), tmp.clone(), fill.digest.clone());
            tokio::task::spawn_blocking(move || local.publish(&tmp2, &d))
                .await
                .map_err(|e| TierError::Io(std::io::Error::other(e)))??;
            t.index.set_tier(&fill.digest, TierState::Remote, TierState::LocalAndRemote)?;
            t.wake_evict.notify_one();
        }
        // Removed, or cached by someone else meanwhile: serve what we have, keep nothing.
        _ => {
            let _ = std::fs::remove_file(tmp);
        }
    }
    Ok(())
}
