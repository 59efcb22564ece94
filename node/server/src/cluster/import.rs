//! A single node with content becoming a cluster's first node: what its index holds (blobs,
//! repository links, manifests with their tags, scan records, managed accounts) is published
//! into the change log once, so every other node learns of it, and its bytes are put into the
//! bucket first (`durability = "s3"`).
//!
//! Decided once, at the first start with `[cluster]`, and remembered in the index (cursor
//! [`MARKER`]): 1 = to publish (again after a crash part-way: publishing is idempotent), 2 =
//! nothing (left) to publish. A node that joined with an empty index never imports, even if a
//! crash during its first catch-up left content without a cursor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine;
use berth_cluster::Write;
use berth_index::{Index, ManifestRecord, TierState};
use berth_types::{Digest, RepoName, Tag};

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
    let mut report = Report::default();
    let durable = !cn.local_durability();

    let blobs = index.all_blobs().map_err(e)?;
    let mut sizes = HashMap::with_capacity(blobs.len());
    let mut writes = Vec::with_capacity(blobs.len());
    for (digest, meta) in &blobs {
        // Only on this disk: the bucket gets it before the log says the registry has it.
        if durable && meta.tier == TierState::Local {
            cn.tier.upload_now(digest, meta.size).await.map_err(|err| format!("putting {digest} into S3: {err}"))?;
            let _ = index.set_tier(digest, TierState::Local, TierState::LocalAndRemote);
            report.uploaded += 1;
        }
        sizes.insert(digest.clone(), meta.size);
        writes.push(Write::BlobCommitted { digest: digest.clone(), size: meta.size });
    }
    report.blobs = writes.len();
    commit_all(&cn, writes).await?;

    let mut writes = Vec::new();
    for (repo, digest) in index.all_links().map_err(e)? {
        // A link to a blob the index no longer has is not content (fsck reports it).
        let Some(&size) = sizes.get(&digest) else { continue };
        writes.push(Write::BlobLinked { repo, digest, size });
    }
    report.links = writes.len();
    commit_all(&cn, writes).await?;

    let mut tags: HashMap<(RepoName, Digest), Vec<Tag>> = HashMap::new();
    for (repo, tag, digest) in index.all_tags().map_err(e)? {
        tags.entry((repo, digest)).or_default().push(tag);
        report.tags += 1;
    }
    let mut writes = Vec::new();
    for (repo, digest, record) in children_first(index.all_manifests().map_err(e)?) {
        let Some((_, bytes)) = index.manifest(&repo, &digest).map_err(e)? else { continue };
        let tags = tags.remove(&(repo.clone(), digest.clone())).unwrap_or_default();
        if durable {
            cn.tier
                .put_manifest_now(&repo, &digest, bytes.to_vec(), record.media_type.clone(), tags.clone())
                .await
                .map_err(|err| format!("putting manifest {repo}@{digest} into S3: {err}"))?;
        }
        writes.push(Write::ManifestPut {
            repo,
            digest,
            record: Box::new(record),
            bytes: base64::engine::general_purpose::STANDARD.encode(&bytes),
            tags,
        });
    }
    report.manifests = writes.len();
    commit_all(&cn, writes).await?;

    let mut writes = Vec::new();
    for (digest, record) in index.all_scans().map_err(e)? {
        let value = serde_json::to_value(&record).map_err(|err| err.to_string())?;
        writes.push(Write::State { kind: berth_cluster::StateKind::Scan, key: digest.to_string(), value });
    }
    report.scans = writes.len();
    if let Some(value) = accounts {
        writes.push(Write::State { kind: berth_cluster::StateKind::Accounts, key: String::new(), value });
        report.accounts = true;
    }
    commit_all(&cn, writes).await?;
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

/// Manifests ordered so that an index comes after the manifests it lists: a node applying
/// the log records an index's reference to a child only if it has the child already.
fn children_first(mut all: Vec<(RepoName, Digest, ManifestRecord)>) -> Vec<(RepoName, Digest, ManifestRecord)> {
    let present: HashSet<(RepoName, Digest)> = all.iter().map(|(r, d, _)| (r.clone(), d.clone())).collect();
    let mut done: HashSet<(RepoName, Digest)> = HashSet::with_capacity(all.len());
    let mut out = Vec::with_capacity(all.len());
    while !all.is_empty() {
        let before = all.len();
        let (ready, waiting): (Vec<_>, Vec<_>) = all.into_iter().partition(|(repo, _, record)| {
            record.manifests.iter().all(|c| {
                let key = (repo.clone(), c.clone());
                done.contains(&key) || !present.contains(&key)
            })
        });
        done.extend(ready.iter().map(|(r, d, _)| (r.clone(), d.clone())));
        out.extend(ready);
        all = waiting;
        // A cycle cannot exist (a manifest names its children by their digests); should the
        // index hold one anyway, keep what is left in any order rather than loop.
        if all.len() == before {
            out.append(&mut all);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(children: &[&Digest]) -> ManifestRecord {
        ManifestRecord {
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            artifact_type: None,
            subject: None,
            blobs: Vec::new(),
            manifests: children.iter().map(|d| (*d).clone()).collect(),
            absent: Vec::new(),
            annotations: None,
            pushed_at_ms: 0,
        }
    }

    #[test]
    fn indexes_come_after_their_children() {
        let d = |b: &[u8]| Digest::of(berth_types::Algorithm::Sha256, b);
        let (leaf1, leaf2, mid, top) = (d(b"1"), d(b"2"), d(b"mid"), d(b"top"));
        let repo: RepoName = "a/b".parse().unwrap();
        let all = vec![
            (repo.clone(), top.clone(), record(&[&mid, &leaf1])),
            (repo.clone(), mid.clone(), record(&[&leaf2])),
            (repo.clone(), leaf1.clone(), record(&[])),
            (repo.clone(), leaf2.clone(), record(&[])),
        ];
        let order: Vec<Digest> = children_first(all).into_iter().map(|(_, d, _)| d).collect();
        let pos = |x: &Digest| order.iter().position(|d| d == x).unwrap();
        assert_eq!(order.len(), 4);
        assert!(pos(&leaf2) < pos(&mid) && pos(&mid) < pos(&top) && pos(&leaf1) < pos(&top));
    }
}
