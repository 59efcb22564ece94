//! Rebuild the index from the S3 bucket (`berth rebuild-index`, or automatically when a node
//! with S3 configured starts with an empty index).
//!
//! Blobs come back as `remote` (read through on first pull), manifests with their exact bytes
//! (each re-validated and its digest re-checked, exactly as a push would be), then tags and
//! repository links. The mirror's cursor is moved to the end of the feed the import wrote, so
//! nothing is uploaded again.

use std::fmt;
use std::sync::Arc;

use berth_index::{BlobMeta, Index, ManifestRecord, TierState};
use berth_tiering::Tiering;
use berth_types::Digest;

/// What a rebuild imported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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
            "{} blobs, {} manifests, {} tags, {} links imported; {} objects skipped",
            self.blobs, self.manifests, self.tags, self.links, self.skipped
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
    for (repo, digest) in &contents.links {
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
        let computed = Digest::of(m.digest.algorithm(), &m.bytes);
        let parsed = match crate::manifest::parse(&m.bytes, m.media_type.as_deref()) {
            Ok(p) if computed == m.digest => p,
            _ => {
                tracing::warn!(repo = %m.repo, digest = %m.digest, "manifest in the bucket fails validation; skipped");
                report.skipped += 1;
                continue;
            }
        };
        let tags: Vec<_> = contents
            .tags
            .iter()
            .filter(|(r, _, d)| r == &m.repo && d == &m.digest)
            .map(|(_, t, _)| t.clone())
            .collect();
        let record = ManifestRecord {
            absent: Vec::new(),
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
    // Everything just written is already in the bucket.
    index.set_cursor(berth_tiering::MIRROR_CURSOR, index.next_sequence().saturating_sub(1)).map_err(err)?;
    Ok(report)
}
