//! The registry's state in the local index, as change-log writes: what a single node
//! publishes when it becomes a cluster's first node (`import`), and what a snapshot of the log
//! holds (`compact`). In dependency order: blobs, repository links, manifests (an index after
//! the manifests it lists) with their tags, then node state (scan records, managed accounts).

use std::collections::{HashMap, HashSet};

use base64::Engine;
use berth_cluster::{StateKind, Write};
use berth_index::{BlobMeta, Index, ManifestRecord};
use berth_types::{Digest, RepoName, Tag};

/// A manifest with its bytes and the tags pointing at it.
pub(crate) struct Manifest {
    pub repo: RepoName,
    pub digest: Digest,
    pub record: ManifestRecord,
    pub bytes: Vec<u8>,
    pub tags: Vec<Tag>,
}

/// Everything the index holds that the log carries.
pub(crate) struct State {
    pub blobs: Vec<(Digest, BlobMeta)>,
    pub links: Vec<Write>,
    pub manifests: Vec<Manifest>,
    pub scans: usize,
    pub accounts: bool,
    node_state: Vec<Write>,
}

/// Read the state. `accounts`: the managed accounts, whole, when there are any.
///
/// Read in reverse dependency order — manifests, then tags, links, blobs — so that while
/// writes go on (compaction reads a serving node's index) every reference of a manifest that
/// was read is read too: its blobs were linked and its children stored before it was, and
/// nothing removes what a manifest references. What appears between the reads (a blob or link
/// without its manifest yet) is harmless: the log after the snapshot adds the rest.
pub(crate) fn read(index: &Index, accounts: Option<serde_json::Value>) -> Result<State, String> {
    let e = |e: berth_index::IndexError| e.to_string();
    let records = children_first(index.all_manifests().map_err(e)?);
    let mut manifests = Vec::with_capacity(records.len());
    for (repo, digest, record) in records {
        let Some((_, bytes)) = index.manifest(&repo, &digest).map_err(e)? else { continue };
        manifests.push(Manifest { repo, digest, record, bytes: bytes.to_vec(), tags: Vec::new() });
    }
    let mut tags: HashMap<(RepoName, Digest), Vec<Tag>> = HashMap::new();
    for (repo, tag, digest) in index.all_tags().map_err(e)? {
        tags.entry((repo, digest)).or_default().push(tag);
    }
    for m in &mut manifests {
        // A tag moved to a manifest read after: the log after the snapshot sets it.
        m.tags = tags.remove(&(m.repo.clone(), m.digest.clone())).unwrap_or_default();
    }
    let links = index.all_links().map_err(e)?;
    let blobs = index.all_blobs().map_err(e)?;
    let sizes: HashMap<&Digest, u64> = blobs.iter().map(|(d, m)| (d, m.size)).collect();
    let links = links
        .into_iter()
        // A link to a blob the index no longer has is not content (removed meanwhile, or what
        // fsck reports).
        .filter_map(|(repo, digest)| sizes.get(&digest).map(|&size| Write::BlobLinked { repo, digest, size }))
        .collect();
    let mut node_state = Vec::new();
    for (digest, record) in index.all_scans().map_err(e)? {
        let value = serde_json::to_value(&record).map_err(|err| err.to_string())?;
        node_state.push(Write::State { kind: StateKind::Scan, key: digest.to_string(), value });
    }
    let scans = node_state.len();
    let has_accounts = accounts.is_some();
    if let Some(value) = accounts {
        node_state.push(Write::State { kind: StateKind::Accounts, key: String::new(), value });
    }
    Ok(State { blobs, links, manifests, scans, accounts: has_accounts, node_state })
}

impl State {
    /// The writes, in dependency order.
    pub(crate) fn into_writes(self) -> Vec<Write> {
        let mut out = Vec::with_capacity(self.blobs.len() + self.links.len() + self.manifests.len());
        out.extend(self.blobs.into_iter().map(|(digest, m)| Write::BlobCommitted { digest, size: m.size }));
        out.extend(self.links);
        out.extend(self.manifests.into_iter().map(|m| Write::ManifestPut {
            repo: m.repo,
            digest: m.digest,
            record: Box::new(m.record),
            bytes: base64::engine::general_purpose::STANDARD.encode(&m.bytes),
            tags: m.tags,
        }));
        out.extend(self.node_state);
        out
    }
}

/// Manifests ordered so that an index comes after the manifests it lists: a node applying
/// the writes records an index's reference to a child only if it has the child already.
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
