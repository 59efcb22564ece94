//! A single node with content becoming a cluster's first node: what its index holds (blobs,
//! repository links, manifests with their tags, scan records, managed accounts) is published
//! into the change log once, so every other node learns of it, and its bytes are put into the
//! bucket first (`durability = "s3"`).
//!
//! Decided once, at the first start with `[cluster]`, and remembered in the index (cursor
//! [`MARKER`]): 1 = to publish (again after a crash part-way: publishing is idempotent), 2 =
//! nothing (left) to publish. A node that joined with an empty index never imports, even if a
//! crash during its first catch-up left content without a cursor.

use std::sync::Arc;

use berth_cluster::Write;
use berth_index::{Index, TierState};

use super::ClusterNode;

/// Index cursor: 0 = not decided yet, 1 = to publish, 2 = nothing to publish.
const MARKER: &str = "cluster_import";
/// Writes per commit (one transaction).
const BATCH: usize = 256;

/// Whether this data directory holds content the cluster's log does not have (decided at the
/// first start in cluster mode, before anything from the log is applied).
pub(crate) fn pending(index: &Index) -> Result<bool, String> {
    let e = |e: berth_index::IndexError| e.to_string();
    match index.cursor(MARKER).map_err(e)? {
        1 => Ok(true),
        2 => Ok(false),
        _ => {
            let joined = index.cursor(berth_cluster::APPLIED_CURSOR).map_err(e)? > 0;
            let content = index.next_sequence() > 1;
            let import = content && !joined;
            index.set_cursor(MARKER, if import { 1 } else { 2 }).map_err(e)?;
            Ok(import)
        }
    }
}

/// What was published.
#[derive(Debug, Default)]
pub(crate) struct Report {
    blobs: usize,
    uploaded: usize,
    links: usize,
    manifests: usize,
    tags: usize,
    scans: usize,
    accounts: bool,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} blobs ({} put into the bucket now), {} repository links, {} manifests, {} tags, {} scan records{}",
            self.blobs,
            self.uploaded,
            self.links,
            self.manifests,
            self.tags,
            self.scans,
            if self.accounts { ", managed accounts" } else { "" }
        )
    }
}

/// Publish everything the local index holds into the change log, then mark it done.
pub(crate) async fn publish(
    cn: Arc<ClusterNode>,
    index: Arc<Index>,
    accounts: Option<serde_json::Value>,
) -> Result<Report, String> {
    let e = |e: berth_index::IndexError| e.to_string();
    let durable = !cn.local_durability();
    let state = super::state::read(&index, accounts)?;
    let mut report = Report {
        blobs: state.blobs.len(),
        links: state.links.len(),
        manifests: state.manifests.len(),
        tags: state.manifests.iter().map(|m| m.tags.len()).sum(),
        scans: state.scans,
        accounts: state.accounts,
        ..Report::default()
    };
    // Only on this disk: the bucket gets it before the log says the registry has it.
    for (digest, meta) in &state.blobs {
        if durable && meta.tier == TierState::Local {
            cn.tier.upload_now(digest, meta.size).await.map_err(|err| format!("putting {digest} into S3: {err}"))?;
            let _ = index.set_tier(digest, TierState::Local, TierState::LocalAndRemote);
            report.uploaded += 1;
        }
    }
    if durable {
        for m in &state.manifests {
            cn.tier
                .put_manifest_now(&m.repo, &m.digest, m.bytes.clone(), m.record.media_type.clone(), m.tags.clone())
                .await
                .map_err(|err| format!("putting manifest {}@{} into S3: {err}", m.repo, m.digest))?;
        }
    }
    // In dependency order, a commit per batch: blobs, links, manifests (children first), state.
    commit_all(&cn, state.into_writes()).await?;
    index.set_cursor(MARKER, 2).map_err(e)?;
    Ok(report)
}

async fn commit_all(cn: &ClusterNode, mut writes: Vec<Write>) -> Result<(), String> {
    while !writes.is_empty() {
        let rest = writes.split_off(writes.len().min(BATCH));
        let batch = std::mem::replace(&mut writes, rest);
        cn.cluster.commit(batch, Vec::new(), None).await.map_err(|e| format!("publishing into the change log: {e}"))?;
    }
    Ok(())
}
