//! The change feed's records, as the node writes them and its consumers (the S3 mirror, the
//! admin sidecar) read them over the internal API.

use berth_types::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};

/// Where a blob's bytes live. Transitions (see docs/ARCHITECTURE.md, "Tier states"):
/// `Local` → `LocalAndRemote` (uploaded to S3) → `Remote` (evicted) → `LocalAndRemote`
/// (read through and cached again). Without S3 every blob stays `Local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierState {
    /// Only on local disk.
    Local,
    /// On local disk and safely in S3: may be evicted.
    LocalAndRemote,
    /// Only in S3: reads go through to it.
    Remote,
}

impl TierState {
    /// Whether a local file holds the bytes.
    pub fn is_local(self) -> bool {
        matches!(self, TierState::Local | TierState::LocalAndRemote)
    }
    /// Whether S3 holds the bytes.
    pub fn is_remote(self) -> bool {
        matches!(self, TierState::LocalAndRemote | TierState::Remote)
    }
    /// Lower-case name, as in metrics and the change feed.
    pub fn as_str(self) -> &'static str {
        match self {
            TierState::Local => "local",
            TierState::LocalAndRemote => "local_and_remote",
            TierState::Remote => "remote",
        }
    }
}

/// One metadata change, as the change feed carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A new blob became visible in the store.
    BlobCommitted {
        /// Digest.
        digest: Digest,
        /// Size.
        size: u64,
    },
    /// A blob moved between tiers (uploaded to S3, evicted, cached again).
    BlobTier {
        /// Digest.
        digest: Digest,
        /// New state.
        tier: TierState,
    },
    /// A blob left the store (its data is gone).
    BlobRemoved {
        /// Digest.
        digest: Digest,
    },
    /// A repository gained access to a blob (upload or mount).
    BlobLinked {
        /// Repository.
        repo: RepoName,
        /// Digest.
        digest: Digest,
    },
    /// A repository lost access to a blob.
    BlobUnlinked {
        /// Repository.
        repo: RepoName,
        /// Digest.
        digest: Digest,
    },
    /// A manifest was stored.
    ManifestPut {
        /// Repository.
        repo: RepoName,
        /// Digest.
        digest: Digest,
        /// Media type.
        media_type: String,
        /// Size in bytes.
        size: u64,
        /// Artifact type.
        artifact_type: Option<String>,
        /// Subject.
        subject: Option<Digest>,
        /// Referenced blobs.
        blobs: Vec<Digest>,
        /// Referenced manifests.
        manifests: Vec<Digest>,
    },
    /// A manifest was deleted.
    ManifestDeleted {
        /// Repository.
        repo: RepoName,
        /// Digest.
        digest: Digest,
    },
    /// A tag was created or moved.
    TagSet {
        /// Repository.
        repo: RepoName,
        /// Tag.
        tag: Tag,
        /// Manifest it points to.
        digest: Digest,
    },
    /// A tag was deleted.
    TagDeleted {
        /// Repository.
        repo: RepoName,
        /// Tag.
        tag: Tag,
    },
    /// A client asked for a (re)scan of a manifest (`POST /v2/<name>/manifests/<ref>/scan`);
    /// the sidecar queues it. No metadata changed.
    ScanRequested {
        /// Repository.
        repo: RepoName,
        /// Manifest digest.
        digest: Digest,
    },
}

/// A change with its sequence number and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Monotonic sequence number, starting at 1, without gaps.
    pub seq: u64,
    /// Commit time (unix ms).
    pub at_ms: u64,
    /// The change.
    #[serde(flatten)]
    pub change: Change,
    /// Applied from the cluster's change log (scale-out) for a change another node made, or a
    /// blob removal whose S3 object the collecting node already deleted: the S3 mirror skips
    /// it (the node that made the change mirrors it). Always false on a single node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replica: bool,
}
