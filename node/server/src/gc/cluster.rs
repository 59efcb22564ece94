//! GC on a cluster node (`[cluster]`): the sweep that commits deletions through the change
//! log under the GC lease, and the lease's renewal while a run lasts. The plan is the same as on
//! one node (`super::make_plan`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use berth_index::{BlobMeta, Index, Kept};
use berth_types::{Digest, RepoName, Tag};

use super::{sweep_with, GcPolicy, GcReport, Progress, Sweep};
use crate::store::BlobStore;

/// A cluster's GC: checked against the local index (caught up with the log when the plan was
/// made), then committed through the change log with the GC lease as a fencing token and a
/// check that nothing touched the digest since the plan; a blob's S3 object is deleted inside
/// that transaction. Every node (this one included) applies the removals from the log.
struct ClusterSweep<'a> {
    index: &'a Index,
    node: &'a crate::cluster::ClusterNode,
    lease: berth_cluster::Lease,
    since: u64,
}

impl ClusterSweep<'_> {
    fn commit(
        &self,
        write: berth_cluster::Write,
        digest: &Digest,
        repo: Option<&RepoName>,
        effect: Option<berth_cluster::Effect>,
    ) -> Result<Result<(), Kept>, String> {
        self.try_commit(write, digest, repo, effect).map_err(|e| e.to_string())
    }

    fn try_commit(
        &self,
        write: berth_cluster::Write,
        digest: &Digest,
        repo: Option<&RepoName>,
        effect: Option<berth_cluster::Effect>,
    ) -> Result<Result<(), Kept>, berth_cluster::CommitError> {
        use berth_cluster::{Check, CommitError};
        let checks = vec![
            Check::Fenced(self.lease.clone()),
            Check::Untouched { digest: digest.clone(), repo: repo.cloned(), since: self.since },
        ];
        let c = &self.node.cluster;
        match c.block_on(c.commit(vec![write], checks, effect)) {
            Ok(_) => Ok(Ok(())),
            Err(CommitError::InUse(_)) => Ok(Err(Kept::Recent)),
            Err(e) => Err(e),
        }
    }
}

impl Sweep for ClusterSweep<'_> {
    fn delete_tag_if(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> Result<bool, String> {
        if self.index.tag(repo, tag).map_err(|e| e.to_string())?.as_ref() != Some(d) {
            return Ok(false);
        }
        let w = berth_cluster::Write::TagDeleted { repo: repo.clone(), tag: tag.clone() };
        Ok(self.commit(w, d, Some(repo), None)?.is_ok())
    }
    fn delete_manifest(&self, repo: &RepoName, d: &Digest, cutoff_ms: u64) -> Result<Result<(), Kept>, String> {
        if let Err(k) = self.index.manifest_deletable(repo, d, cutoff_ms).map_err(|e| e.to_string())? {
            return Ok(Err(k));
        }
        let w = berth_cluster::Write::ManifestDeleted { repo: repo.clone(), digest: d.clone() };
        self.commit(w, d, Some(repo), None)
    }
    fn remove_blob(&self, d: &Digest, cutoff_ms: u64) -> Result<Result<BlobMeta, Kept>, String> {
        let meta = match self.index.blob_removable(d, cutoff_ms).map_err(|e| e.to_string())? {
            Ok(m) => m,
            Err(k) => return Ok(Err(k)),
        };
        let repos = self.index.blob_repos(d).map_err(|e| e.to_string())?;
        let (tier, digest) = (self.node.tier.clone(), d.clone());
        let deleted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = deleted.clone();
        // S3 knows nothing of fencing: a node paused between this transaction's checks and its
        // S3 request, for longer than `postgres_timeout_ms`, deletes after losing the session
        // (docs/SCALE_OUT.md, "Limits").
        let effect: berth_cluster::Effect = Box::pin(async move {
            tier.delete_blob_objects(&digest, repos).await.map_err(|e| e.to_string())?;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        let w = berth_cluster::Write::BlobRemoved { digest: d.clone() };
        match self.commit(w.clone(), d, None, Some(effect)) {
            // The objects are gone but the removal was not recorded (Postgres failed between
            // the S3 delete and COMMIT): record it now, or the blob would stay known everywhere
            // without its bytes.
            Err(e) if deleted.load(Ordering::SeqCst) => {
                for attempt in 0..6u32 {
                    std::thread::sleep(std::time::Duration::from_millis(250 << attempt));
                    match self.try_commit(w.clone(), d, None, None) {
                        Ok(r) => {
                            if r.is_err() {
                                tracing::error!(digest = %d, "GC deleted a blob's S3 object, then the blob was used again before its removal was recorded: push it again");
                            }
                            return Ok(r.map(|()| meta));
                        }
                        // The lease is gone: its successor's run records it.
                        Err(berth_cluster::CommitError::Fenced(_)) => break,
                        Err(_) => {}
                    }
                }
                tracing::error!(digest = %d, error = %e, "GC deleted a blob's S3 object but could not record its removal; the next run records it");
                Err(e)
            }
            r => Ok(r?.map(|()| meta)),
        }
    }
    fn unlink(&self, repo: &RepoName, d: &Digest, cutoff_ms: u64) -> Result<Result<(), Kept>, String> {
        if let Err(k) = self.index.link_removable(repo, d, cutoff_ms).map_err(|e| e.to_string())? {
            return Ok(Err(k));
        }
        let w = berth_cluster::Write::BlobUnlinked { repo: repo.clone(), digest: d.clone() };
        self.commit(w, d, Some(repo), None)
    }
    fn removes_files(&self) -> bool {
        false
    }
    fn committing(&self, d: &Digest) -> bool {
        self.node.cluster.is_committing(d)
    }
}

/// Run GC on a cluster node holding the GC lease: catch up with the log, plan from the local
/// index, sweep through the log.
pub(super) fn run_clustered(
    index: &Index,
    blobs: &BlobStore,
    node: &crate::cluster::ClusterNode,
    lease: berth_cluster::Lease,
    policy: &GcPolicy,
    dry_run: bool,
    progress: &Progress,
) -> Result<GcReport, String> {
    let c = &node.cluster;
    let since = c.block_on(c.catch_up()).map_err(|e| e.to_string())?;
    sweep_with(index, blobs, policy, dry_run, progress, &ClusterSweep { index, node, lease, since })
}
