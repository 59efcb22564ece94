//! Reading the bucket back: everything a node needs to rebuild its index.

use berth_types::{Digest, RepoName, Tag};

use crate::layout::{Layout, Object};
use crate::remote::Remote;
use crate::TierError;

/// A manifest found in the bucket.
#[derive(Debug, Clone)]
pub struct BucketManifest {
    /// Repository.
    pub repo: RepoName,
    /// Digest (verified against the bytes by the caller).
    pub digest: Digest,
    /// Exact bytes.
    pub bytes: Vec<u8>,
    /// Media type stored as the object's `Content-Type`.
    pub media_type: Option<String>,
    /// Upload time (unix ms).
    pub modified_ms: u64,
}

/// Everything of ours in the bucket.
#[derive(Debug, Clone, Default)]
pub struct BucketContents {
    /// Blobs: digest, size, upload time (unix ms).
    pub blobs: Vec<(Digest, u64, u64)>,
    /// Manifests with their bytes.
    pub manifests: Vec<BucketManifest>,
    /// Tags.
    pub tags: Vec<(RepoName, Tag, Digest)>,
    /// Repository links.
    pub links: Vec<(RepoName, Digest)>,
    /// Keys under the prefix that are not ours (reported, ignored).
    pub foreign: usize,
}

impl BucketContents {
    /// Whether nothing of ours is in the bucket.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.manifests.is_empty()
    }
}

/// List and read the bucket.
pub(crate) async fn scan(remote: &Remote, layout: &Layout) -> Result<BucketContents, TierError> {
    let mut out = BucketContents::default();
    for o in remote.list(layout.prefix()).await? {
        if layout.is_state(&o.key) {
            continue;
        }
        match layout.parse(&o.key) {
            Some(Object::Blob(d)) => out.blobs.push((d, o.size, o.modified_ms)),
            Some(Object::Manifest(repo, digest)) => {
                let (bytes, media_type) = remote.get_bytes(&o.key).await?;
                out.manifests.push(BucketManifest { repo, digest, bytes, media_type, modified_ms: o.modified_ms });
            }
            Some(Object::Tag(repo, tag)) => {
                let (bytes, _) = remote.get_bytes(&o.key).await?;
                match std::str::from_utf8(&bytes).ok().and_then(|s| s.trim().parse().ok()) {
                    Some(d) => out.tags.push((repo, tag, d)),
                    None => out.foreign += 1,
                }
            }
            Some(Object::Link(repo, d)) => out.links.push((repo, d)),
            None => out.foreign += 1,
        }
    }
    Ok(out)
}
