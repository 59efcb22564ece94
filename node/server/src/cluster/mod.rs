//! The node's side of scale-out (`[cluster]`; the log, tail, leases and forwarding are in the
//! `berth-cluster` crate). In cluster mode every metadata write goes through the change log
//! in Postgres before it is acknowledged, and is applied to the local index from there (by
//! this node as by every other); a miss catches up with the log before answering 404.
//! Without `[cluster]` nothing here runs and the index is written directly, as on one node.

use std::sync::Arc;

use base64::Engine;
use berth_cluster::{Check, Cluster, CommitError, Durability, StateKind, StateSink, Write};
use berth_index::{ManifestRecord, TierState};
use berth_tiering::Tiering;
use berth_types::{Digest, ErrorKind, OciError, RepoName, Tag};

use crate::app::App;

pub(crate) mod compact;
pub(crate) mod import;
pub(crate) mod renewal;
mod state;

/// A node in a cluster: its membership and the S3 tier every cluster node has.
pub struct ClusterNode {
    /// Membership, the log, leases.
    pub cluster: Arc<Cluster>,
    /// The shared bucket.
    pub tier: Arc<Tiering>,
}

/// What a client sees when the log cannot be reached: 503 with `Retry-After`.
pub(crate) fn unavailable(e: &CommitError) -> OciError {
    OciError::new(ErrorKind::Unavailable).msg(format!("the registry's metadata store is unreachable ({e}); retry"))
}

fn s3_unavailable(e: berth_tiering::TierError) -> OciError {
    tracing::warn!(error = %e, "cluster: S3 write failed; the push is not acknowledged");
    OciError::new(ErrorKind::Unavailable).msg("the blob store (S3) is unreachable; retry")
}

impl ClusterNode {
    fn s3_durable(&self) -> bool {
        self.cluster.config().durability == Durability::S3
    }

    /// Whether pushes are acknowledged before S3 has the bytes (`durability = "local"`).
    pub fn local_durability(&self) -> bool {
        self.cluster.config().durability == Durability::Local
    }

    /// A blob S3 does not have yet, streamed from the node that received it (503 when that
    /// node is gone or cannot serve it: the bytes are only there until its upload finishes).
    pub async fn stream_from_origin(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<berth_tiering::RangeStream, OciError> {
        let gone = || {
            OciError::new(ErrorKind::Unavailable)
                .msg("the blob is not in S3 yet and the node that received it cannot serve it; retry")
        };
        let owner = self.cluster.origin_of(digest).await.ok_or_else(gone)?;
        self.cluster.stream_from(&owner, &format!("/v2/{repo}/blobs/{digest}"), size).await.map_err(|e| {
            tracing::warn!(%digest, error = %e, "cluster: fetching a blob from the node that received it failed");
            gone()
        })
    }

    /// Catch up with the log (a miss). Errors as 503: the node cannot know the name is absent.
    pub async fn catch_up(&self) -> Result<(), OciError> {
        self.cluster.catch_up().await.map(|_| ()).map_err(|e| unavailable(&e))
    }

    /// Commit a blob whose verified file is in place on this node, linked into `repo`. With
    /// `durability = "s3"` the bytes reach S3 first. The caller holds
    /// [`Cluster::committing`] for `digest` from before the file was published.
    pub async fn commit_blob(
        &self,
        index: &berth_index::Index,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), OciError> {
        let mut since = self.cluster.applied();
        for _ in 0..3 {
            if self.s3_durable() {
                self.tier.upload_now(digest, size).await.map_err(s3_unavailable)?;
            }
            let writes = vec![
                Write::BlobCommitted { digest: digest.clone(), size },
                Write::BlobLinked { repo: repo.clone(), digest: digest.clone(), size },
            ];
            let check = vec![Check::NotRemovedSince { digest: digest.clone(), since }];
            match self.cluster.commit(writes, check, None).await {
                Ok(_) => {
                    // Known before as remote only (evicted here): the file is back.
                    if self.s3_durable() {
                        let _ = index.set_tier(digest, TierState::Remote, TierState::LocalAndRemote);
                    }
                    return Ok(());
                }
                // GC removed this digest (and its object) while we uploaded: upload again.
                Err(CommitError::Removed(_)) => {
                    since = self.cluster.head().await.map_err(|e| unavailable(&e))?;
                }
                Err(e) => return Err(unavailable(&e)),
            }
        }
        Err(OciError::new(ErrorKind::Unavailable).msg("garbage collection keeps removing this blob; retry"))
    }

    /// Mount: link a blob this node's view has into `repo`. False when it was removed
    /// meanwhile (the client then uploads it).
    pub async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64, since: u64) -> Result<bool, OciError> {
        let writes = vec![Write::BlobLinked { repo: repo.clone(), digest: digest.clone(), size }];
        let check = vec![Check::NotRemovedSince { digest: digest.clone(), since }];
        match self.cluster.commit(writes, check, None).await {
            Ok(_) => Ok(true),
            Err(CommitError::Removed(_)) => Ok(false),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Store a manifest and set `tags`, its references checked against removals committed
    /// after `since` (the sequence the caller's validation saw).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        record: &ManifestRecord,
        bytes: &[u8],
        tags: &[Tag],
        since: u64,
    ) -> Result<(), OciError> {
        if self.s3_durable() {
            self.tier
                .put_manifest_now(repo, digest, bytes.to_vec(), record.media_type.clone(), tags.to_vec())
                .await
                .map_err(s3_unavailable)?;
        }
        let present = |v: &[Digest]| v.iter().filter(|d| !record.absent.contains(d)).cloned().collect();
        let check = Check::RefsPresent {
            repo: repo.clone(),
            blobs: present(&record.blobs),
            manifests: present(&record.manifests),
            since,
        };
        let write = Write::ManifestPut {
            repo: repo.clone(),
            digest: digest.clone(),
            record: Box::new(record.clone()),
            bytes: base64::engine::general_purpose::STANDARD.encode(bytes),
            tags: tags.to_vec(),
        };
        match self.cluster.commit(vec![write], vec![check], None).await {
            Ok(_) => Ok(()),
            Err(CommitError::Missing(m)) => Err(OciError::new(ErrorKind::ManifestBlobUnknown)
                .msg(format!("{m} was removed from repository {repo} meanwhile"))
                .detail(serde_json::json!({ "digest": m.to_string() }))),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Commit one deletion (a tag, a manifest, a blob link).
    pub async fn delete(&self, write: Write) -> Result<(), OciError> {
        self.cluster.commit(vec![write], Vec::new(), None).await.map(|_| ()).map_err(|e| unavailable(&e))
    }
}

/// On a miss in cluster mode, catch up with the log and return true (look again); false on a
/// single node (the miss is final).
pub(crate) async fn retry_after_catch_up(app: &App) -> Result<bool, OciError> {
    match &app.cluster {
        None => Ok(false),
        Some(c) => c.catch_up().await.map(|()| true),
    }
}

/// How this node applies node state from the change log: scan records into the index and the
/// pull policy's in-memory book, managed accounts into the auth layer.
pub(crate) fn state_sink(
    index: Arc<berth_index::Index>,
    scans: Option<Arc<crate::scan::ScanBook>>,
    auth: Option<Arc<crate::auth::Auth>>,
) -> StateSink {
    Box::new(move |kind, key, value| match kind {
        StateKind::Scan => {
            let digest: Digest = key.parse().map_err(|e| format!("scan record key {key:?}: {e}"))?;
            let record: berth_internal_api::scan::ScanRecord =
                serde_json::from_value(value.clone()).map_err(|e| format!("scan record: {e}"))?;
            index.put_scan(&digest, &record).map_err(|e| e.to_string())?;
            if let Some(book) = &scans {
                book.update(&digest, &record);
            }
            Ok(())
        }
        StateKind::Accounts => {
            let Some(auth) = &auth else { return Ok(()) };
            let stored: crate::auth::accounts::Stored =
                serde_json::from_value(value.clone()).map_err(|e| format!("accounts: {e}"))?;
            auth.install_managed(stored).map_err(|e| e.status().1)
        }
    })
}

/// Managed-account changes go through the change log (every node installs them from there),
/// as a compare-and-set of the whole state: a change made on a view another node's change has
/// overtaken is refused in the commit and made again on the new view. Blocks the calling
/// thread for a catch-up and a commit: account changes are rare administrative calls.
pub(crate) struct AccountsReplicator(pub Arc<Cluster>);

impl crate::auth::accounts::Replicator for AccountsReplicator {
    fn base(&self) -> Result<u64, String> {
        let c = &self.0;
        c.block_on(c.catch_up()).map_err(|e| e.to_string())
    }

    fn commit(&self, next: &crate::auth::accounts::Stored, base: u64) -> Result<bool, String> {
        let c = &self.0;
        let value = serde_json::to_value(next).map_err(|e| e.to_string())?;
        let write = Write::State { kind: StateKind::Accounts, key: String::new(), value };
        let check = Check::StateUnchanged { kind: StateKind::Accounts, key: String::new(), since: base };
        match c.block_on(c.commit(vec![write], vec![check], None)) {
            Ok(_) => Ok(true),
            Err(CommitError::Changed(_)) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl ClusterNode {
    /// Commit node state (a scan record) through the log; every node applies it.
    pub async fn put_state(&self, kind: StateKind, key: String, value: serde_json::Value) -> Result<(), OciError> {
        let write = Write::State { kind, key, value };
        self.cluster.commit(vec![write], Vec::new(), None).await.map(|_| ()).map_err(|e| unavailable(&e))
    }

    /// A scan request, recorded in every node's change feed (the sidecar follows one).
    pub async fn request_scan(&self, repo: &RepoName, digest: &Digest) -> Result<(), OciError> {
        let write = Write::ScanRequested { repo: repo.clone(), digest: digest.clone() };
        self.cluster.commit(vec![write], Vec::new(), None).await.map(|_| ()).map_err(|e| unavailable(&e))
    }
}
