//! Records stored in the index.

use std::collections::BTreeMap;

use berth_types::{Algorithm, Digest, RepoName};

pub use berth_internal_api::feed::{Change, ChangeRecord, TierState};
use serde::{Deserialize, Serialize};

/// A committed blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// Size in bytes.
    pub size: u64,
    /// When it was first committed (unix ms).
    pub created_at_ms: u64,
    /// Where its bytes are.
    pub tier: TierState,
}

/// A resumable upload session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    /// Repository the upload belongs to.
    pub repo: RepoName,
    /// Bytes received and recorded so far.
    pub offset: u64,
    /// Digest algorithm the client asked for (sha256 unless `?digest-algorithm=`).
    pub algorithm: Algorithm,
    /// Creation time (unix ms).
    pub created_at_ms: u64,
    /// Last activity (unix ms); the session expires after a configured idle time.
    pub updated_at_ms: u64,
    /// Who opened it (user name, or client address when anonymous), for per-client caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The digest this session's own bytes were verified to have, recorded before its data
    /// file is moved into place or removed. A completion that finds the file gone (a crash or a
    /// failed commit in between) may finish under this digest only: never under one the client
    /// names afterwards (another tenant's blob of the same size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Digest>,
}

/// What the index keeps about a manifest besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    /// Media type it was pushed with.
    pub media_type: String,
    /// Artifact type (`artifactType`, or the config media type for image manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// `subject` digest, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// Blobs it references (config and layers), excluding non-distributable layers.
    #[serde(default)]
    pub blobs: Vec<Digest>,
    /// Manifests it references (children of an index).
    #[serde(default)]
    pub manifests: Vec<Digest>,
    /// References (in `blobs` or `manifests`) that were absent when the manifest was accepted
    /// under a sparse-manifest policy (`[validation]`): not errors for fsck or the commit check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<Digest>,
    /// Manifest annotations, kept for the referrers API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// When it was pushed (unix ms).
    pub pushed_at_ms: u64,
}

/// An OCI content descriptor as the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referrer manifest.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}
