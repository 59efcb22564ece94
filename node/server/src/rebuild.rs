//! Rebuild the index from the S3 bucket (`berth rebuild-index`, or automatically when a node
//! with S3 configured starts with an empty index).
//!
//! Blobs come back as `remote` (read through on first pull), manifests with their exact bytes
//! (each re-validated and its digest re-checked, exactly as a push would be, and each blob
//! descriptor's size checked against the object), then tags and repository links. The mirror's
//! cursor is moved to the end of the feed the import wrote, so nothing is uploaded again.
//!
//! The bucket is trusted as far as a push would be, no further: a link object is imported only
//! where a manifest of that repository refers to the blob (a planted link alone gives nobody
//! another tenant's blob), and a manifest whose descriptor sizes disagree with the stored
//! objects is skipped. Write access to the bucket is still write access to the registry
//! (docs/SECURITY.md). Scan records and managed accounts come back from `state/` (the tier
//! writes them there as they change), so a rebuilt node enforces the same verdicts and rules.

use std::fmt;
use std::sync::Arc;

use berth_index::{BlobMeta, Index, ManifestRecord, TierState};
use berth_tiering::Tiering;
use berth_types::Digest;

/// What a rebuild imported.
#[derive(Debug, Default, Clone)]
pub struct RebuildReport {
    /// Blobs imported.
    pub blobs: usize,
    /// Manifests imported.
    pub manifests: usize,
    /// Tags imported.
    pub tags: usize,
    /// Repository links imported.
    pub links: usize,
    /// Objects skipped: not ours, failing validation, or pointing at missing content.
    pub skipped: usize,
    /// Scan records restored.
    pub scans: usize,
    /// The managed accounts found in the bucket (for the caller to install).
    pub accounts: Option<crate::auth::accounts::Stored>,
}

impl RebuildReport {
    /// Whether nothing was imported.
    pub fn is_empty(&self) -> bool {
        self.blobs == 0 && self.manifests == 0
    }
}

impl fmt::Display for RebuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} blobs, {} manifests, {} tags, {} links, {} scan records{} imported; {} objects skipped",
            self.blobs,
            self.manifests,
            self.tags,
            self.links,
            self.scans,
            if self.accounts.is_some() { ", managed accounts" } else { "" },
            self.skipped
        )
    }
}

/// Import everything in the bucket into `index` (which should be empty; existing entries are
/// kept and win).
pub fn from_bucket(index: &Index, tier: &Arc<Tiering>) -> Result<RebuildReport, String> {
    let contents = tier.scan_bucket().map_err(|e| e.to_string())?;
    let mut report = RebuildReport { skipped: contents.foreign, ..Default::default() };
    let err = |e: berth_index::IndexError| e.to_string();
    for (digest, size, at) in &contents.blobs {
        let meta = BlobMeta { size: *size, created_at_ms: *at, tier: TierState::Remote };
        if index.import_blob(digest, &meta).map_err(err)? {
            report.blobs += 1;
        }
    }
    // Links only where a manifest of the repository refers to the blob (a push makes exactly
    // those links durable; one without a manifest is GC's to remove anyway).
    let mut referenced: std::collections::HashSet<(String, Digest)> = std::collections::HashSet::new();
    let mut parsed_ok = std::collections::HashMap::new();
    let sizes: std::collections::HashMap<&Digest, u64> = contents.blobs.iter().map(|(d, s, _)| (d, *s)).collect();
    for m in &contents.manifests {
        let computed = Digest::of(m.digest.algorithm(), &m.bytes);
        let Ok(p) = crate::manifest::parse(&m.bytes, m.media_type.as_deref()) else { continue };
        if computed != m.digest {
            continue;
        }
        // A descriptor's size must be the stored object's.
        if let Some(r) = p.blob_refs.iter().find(|r| sizes.get(&r.digest).is_some_and(|s| *s != r.size)) {
            tracing::warn!(repo = %m.repo, digest = %m.digest, blob = %r.digest, "a descriptor's size disagrees with the object in the bucket; manifest skipped");
            continue;
        }
        for b in &p.blobs {
            referenced.insert((m.repo.to_string(), b.clone()));
        }
        parsed_ok.insert((m.repo.to_string(), m.digest.clone()), p);
    }
    for (repo, digest) in &contents.links {
        if !referenced.contains(&(repo.to_string(), digest.clone())) {
            report.skipped += 1;
            continue;
        }
        if index.link_blob(repo, digest).map_err(err)? {
            report.links += 1;
        } else {
            report.skipped += 1;
        }
    }
    // Children of an index before the index (one level of nesting, as the OCI spec uses).
    let mut ordered: Vec<_> = contents.manifests.iter().collect();
    ordered.sort_by_key(|m| m.bytes.windows(11).any(|w| w == b"\"manifests\""));
    for m in ordered {
        let Some(parsed) = parsed_ok.remove(&(m.repo.to_string(), m.digest.clone())) else {
            tracing::warn!(repo = %m.repo, digest = %m.digest, "manifest in the bucket fails validation; skipped");
            report.skipped += 1;
            continue;
        };
        let tags: Vec<_> = contents
            .tags
            .iter()
            .filter(|(r, _, d)| r == &m.repo && d == &m.digest)
            .map(|(_, t, _)| t.clone())
            .collect();
        // A blob the repository's link was deleted for (`DELETE` of the blob) stays unlinked:
        // the manifest and its tags come back as they were served, with that reference absent.
        let mut absent = Vec::new();
        for b in &parsed.blobs {
            if !index.repo_has_blob(&m.repo, b).map_err(err)? {
                absent.push(b.clone());
            }
        }
        let record = ManifestRecord {
            absent,
            media_type: parsed.media_type.as_str().to_owned(),
            artifact_type: parsed.artifact_type,
            subject: parsed.subject,
            blobs: parsed.blobs,
            manifests: parsed.manifests,
            annotations: parsed.annotations,
            pushed_at_ms: m.modified_ms,
        };
        if let Some(missing) = index.put_manifest(&m.repo, &m.digest, &record, &m.bytes, &tags).map_err(err)?.missing {
            tracing::warn!(repo = %m.repo, digest = %m.digest, %missing, "manifest references content not in the bucket; skipped");
            report.skipped += 1;
            continue;
        }
        report.manifests += 1;
        report.tags += tags.len();
    }
    report.skipped += contents
        .tags
        .iter()
        .filter(|(r, _, d)| !contents.manifests.iter().any(|m| &m.repo == r && &m.digest == d))
        .count();
    // Registry state: scan records, managed accounts.
    for (rel, bytes) in tier.read_state().map_err(|e| e.to_string())? {
        if rel == "accounts.json" {
            match serde_json::from_slice(&bytes) {
                Ok(a) => report.accounts = Some(a),
                Err(e) => tracing::warn!(error = %e, "state/accounts.json in the bucket is unreadable; skipped"),
            }
        } else if let Some(d) = rel.strip_prefix("scans/").and_then(|r| r.strip_suffix(".json")) {
            let parsed = d.parse::<Digest>().ok().zip(serde_json::from_slice(&bytes).ok());
            match parsed {
                Some((digest, record)) => {
                    index.put_scan(&digest, &record).map_err(err)?;
                    report.scans += 1;
                }
                None => report.skipped += 1,
            }
        } else {
            report.skipped += 1;
        }
    }
    // Everything just written is already in the bucket.
    index.set_cursor(berth_tiering::MIRROR_CURSOR, index.next_sequence().saturating_sub(1)).map_err(err)?;
    Ok(report)
}
