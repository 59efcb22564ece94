//! Garbage-collection requests, policies and reports, as the node's internal API carries them
//! (`berth gc`, the admin sidecar). GC itself runs in the node (`berth_node::gc`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a GC run may delete. Also the `[gc]` configuration (defaults for every run).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GcPolicy {
    /// A blob nothing references is deleted only when unused for this long (seconds).
    pub grace_secs: u64,
    /// Unset: untagged manifests are kept (they may be pulled by digest). Set: untagged manifests
    /// pushed longer ago than this (seconds) are deleted unless something reachable needs them.
    pub untagged_max_age_secs: Option<u64>,
    /// Keep referrers (signatures, SBOMs…) of every kept manifest.
    pub keep_referrers: bool,
    /// Tag retention rules.
    pub retention: Vec<RetentionRule>,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy { grace_secs: 3600, untagged_max_age_secs: None, keep_referrers: true, retention: Vec::new() }
    }
}

/// A tag retention rule. For the repositories it matches, a tag is kept when it is protected,
/// or among the `keep_last` most recently pushed, or younger than `keep_younger_than_secs`;
/// otherwise the rule deletes it. A rule with neither limit keeps everything. A tag's age is
/// the time it was last set (for tags set before Berth recorded that: the push time of the
/// manifest it points to).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionRule {
    /// Repository glob (`*` matches across `/`), e.g. `team/*`.
    pub repositories: String,
    /// Keep this many most recently pushed tags per repository.
    pub keep_last: Option<usize>,
    /// Keep tags pushed within this many seconds.
    pub keep_younger_than_secs: Option<u64>,
    /// Tag globs that are never deleted, e.g. `v*`, `latest`.
    pub protect: Vec<String>,
}

impl Default for RetentionRule {
    fn default() -> Self {
        RetentionRule { repositories: "*".into(), keep_last: None, keep_younger_than_secs: None, protect: Vec::new() }
    }
}

/// A request to run GC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Only report what would be deleted (default true).
    #[serde(default = "yes")]
    pub dry_run: bool,
    /// Policy for this run; unset fields take the node's `[gc]` configuration.
    #[serde(default)]
    pub policy: Option<GcPolicy>,
}

fn yes() -> bool {
    true
}

/// A tag in a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagItem {
    /// Repository.
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// Manifest it pointed to.
    pub digest: String,
}

/// A repository link in a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkItem {
    /// Repository.
    pub repo: String,
    /// Blob digest.
    pub digest: String,
}

/// A manifest in a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestItem {
    /// Repository.
    pub repo: String,
    /// Digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// A blob in a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobItem {
    /// Digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Repositories that linked it.
    pub repos: Vec<String>,
    /// Tier it was in (`local`, `local_and_remote`, `remote`).
    pub tier: String,
}

/// Per-repository totals in a report. A blob linked from several repositories counts in
/// each, and is counted again in `shared_blobs`/`shared_bytes`: summing `bytes` over
/// repositories overstates what is reclaimed by the shared bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepoTotals {
    /// Blobs.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Of those, blobs also linked from other repositories.
    #[serde(default)]
    pub shared_blobs: u64,
    /// Their bytes.
    #[serde(default)]
    pub shared_bytes: u64,
    /// Manifests.
    pub manifests: u64,
    /// Tags.
    pub tags: u64,
}

/// What a run deleted, or would delete (dry run).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcReport {
    /// Dry run: nothing was deleted.
    pub dry_run: bool,
    /// Tags deleted by retention rules.
    pub tags: Vec<TagItem>,
    /// Manifests deleted.
    pub manifests: Vec<ManifestItem>,
    /// Blobs deleted.
    pub blobs: Vec<BlobItem>,
    /// Bytes of those blobs.
    pub blob_bytes: u64,
    /// Blob files no index entry owns (crash leftovers), deleted.
    pub orphan_files: Vec<String>,
    /// Their bytes.
    pub orphan_bytes: u64,
    /// Candidates kept because they became used while GC ran.
    pub kept_in_use: u64,
    /// Per repository.
    pub per_repo: BTreeMap<String, RepoTotals>,
    /// Blobs and manifests examined.
    pub examined_blobs: u64,
    /// Manifests examined.
    pub examined_manifests: u64,
    /// Repository links removed: blobs that stay in the store (another repository's manifest
    /// uses them) but that nothing in this repository references any more. A repository
    /// left with no manifests and no links leaves the catalog.
    #[serde(default)]
    pub links: Vec<LinkItem>,
    /// Unreferenced blobs kept only because they were used within the grace period.
    #[serde(default)]
    pub held_by_grace: GraceHeld,
}

/// Unreferenced blobs the grace period keeps for now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GraceHeld {
    /// How many.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// When the first of them becomes collectable (unix ms), if any.
    pub next_collectable_ms: Option<u64>,
    /// When the last of them becomes collectable (unix ms), if any.
    pub all_collectable_ms: Option<u64>,
}

/// State of a GC job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Running.
    Running,
    /// Finished; `report` is set.
    Succeeded,
    /// Failed; `error` is set.
    Failed,
}

/// A GC job as the internal and admin APIs show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    /// Id.
    pub id: String,
    /// Kind (`gc`).
    pub kind: String,
    /// Dry run?
    pub dry_run: bool,
    /// State.
    pub state: JobState,
    /// Start (unix ms).
    pub started_at_ms: u64,
    /// End (unix ms).
    pub finished_at_ms: Option<u64>,
    /// Current phase.
    pub phase: String,
    /// Items done in the phase.
    pub done: u64,
    /// Items in the phase.
    pub total: u64,
    /// Result.
    pub report: Option<GcReport>,
    /// Failure.
    pub error: Option<String>,
}

/// Human-readable bytes (decimal units, as `docker` prints them).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
