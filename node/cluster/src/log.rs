//! The cluster's change log: one Postgres table every node appends to and every node applies
//! in order. The only coordination between nodes (no consensus of our own): Postgres
//! serialises the writers, and a global advisory lock held by each appending transaction makes
//! commit order equal sequence order, so a reader that has applied sequence N has seen every
//! change committed before N (no gaps to wait for).

use berth_index::ManifestRecord;
use berth_types::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};

/// The advisory lock every appending transaction holds (an arbitrary constant: "BERTH").
pub(crate) const APPEND_LOCK: i64 = 0x0042_4552_5448;
/// The channel a commit notifies with its last sequence number.
pub(crate) const CHANNEL: &str = "berth_changes";

/// The schema, idempotent. Applied by every node at start (under an advisory lock).
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS cluster_changes (
    seq     bigserial PRIMARY KEY,
    origin  text        NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    kind    text        NOT NULL,
    repo    text,
    digest  text,
    refs    text[],
    body    jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS cluster_changes_digest ON cluster_changes (digest, seq);
CREATE TABLE IF NOT EXISTS cluster_nodes (
    name         text PRIMARY KEY,
    tag          bigint      NOT NULL,
    internal_url text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    applied_seq  bigint      NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cluster_leases (
    role       text PRIMARY KEY,
    holder     text        NOT NULL,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_snapshots (
    at_seq bigint NOT NULL,
    part   int    NOT NULL,
    body   jsonb  NOT NULL,
    PRIMARY KEY (at_seq, part)
);
CREATE TABLE IF NOT EXISTS cluster_snapshot_meta (
    at_seq  bigint PRIMARY KEY,
    parts   int         NOT NULL,
    writes  bigint      NOT NULL,
    made_by text        NOT NULL,
    made_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS cluster_log_state (
    id           int PRIMARY KEY CHECK (id = 1),
    trimmed_upto bigint NOT NULL DEFAULT 0
);
INSERT INTO cluster_log_state (id) VALUES (1) ON CONFLICT DO NOTHING;
"#;

/// One entry of the log: a metadata write, as the node that made it decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Write {
    /// A verified blob, now in S3 (`durability = "s3"`) or on the origin's disk.
    BlobCommitted {
        /// Digest.
        digest: Digest,
        /// Size.
        size: u64,
    },
    /// `repo` may read a blob (upload or mount). Carries the size so a node that has not seen
    /// the blob can record it.
    BlobLinked {
        /// Repository.
        repo: RepoName,
        /// Digest.
        digest: Digest,
        /// Size.
        size: u64,
    },
    /// `repo` lost access to a blob.
    BlobUnlinked {
        /// Repository.
        repo: RepoName,
        /// Digest.
        digest: Digest,
    },
    /// A blob left the registry (GC): every node drops its record, links and local file.
    BlobRemoved {
        /// Digest.
        digest: Digest,
    },
    /// A manifest with its exact bytes, and tags set to it.
    ManifestPut {
        /// Repository.
        repo: RepoName,
        /// Digest.
        digest: Digest,
        /// The index record the origin built (references, subject, media type).
        record: Box<ManifestRecord>,
        /// The exact bytes, base64.
        bytes: String,
        /// Tags pointing at it after this write.
        tags: Vec<Tag>,
    },
    /// A tag was deleted.
    TagDeleted {
        /// Repository.
        repo: RepoName,
        /// Tag.
        tag: Tag,
    },
    /// A manifest (and the tags pointing at it) was deleted.
    ManifestDeleted {
        /// Repository.
        repo: RepoName,
        /// Digest.
        digest: Digest,
    },
    /// A client asked for a (re)scan: every node records it in its change feed, so the
    /// sidecar following any one node queues it.
    ScanRequested {
        /// Repository.
        repo: RepoName,
        /// Manifest digest.
        digest: Digest,
    },
    /// Node state outside the index's registry data (scan verdicts, managed accounts),
    /// applied by the node through its [`crate::StateSink`].
    State {
        /// What it is.
        kind: StateKind,
        /// Which one (a manifest digest for a scan record; empty for the accounts).
        key: String,
        /// The new value, whole.
        value: serde_json::Value,
    },
}

/// Kinds of [`Write::State`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// A scan record (`berth_internal_api::scan::ScanRecord`) for a manifest digest.
    Scan,
    /// The managed users, robots, groups and rules, whole (committed with
    /// [`Check::StateUnchanged`]: a change made on an overtaken view is refused and redone).
    Accounts,
}

impl Write {
    /// The `kind` column.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Write::BlobCommitted { .. } => "blob_committed",
            Write::BlobLinked { .. } => "blob_linked",
            Write::BlobUnlinked { .. } => "blob_unlinked",
            Write::BlobRemoved { .. } => "blob_removed",
            Write::ManifestPut { .. } => "manifest_put",
            Write::TagDeleted { .. } => "tag_deleted",
            Write::ManifestDeleted { .. } => "manifest_deleted",
            Write::ScanRequested { .. } => "scan_requested",
            Write::State { .. } => "state",
        }
    }

    /// The `repo`, `digest` and `refs` columns (what the checks below search).
    pub(crate) fn columns(&self) -> (Option<String>, Option<String>, Option<Vec<String>>) {
        let s = |d: &Digest| d.to_string();
        match self {
            Write::BlobCommitted { digest, .. } | Write::BlobRemoved { digest } => (None, Some(s(digest)), None),
            Write::BlobLinked { repo, digest, .. }
            | Write::BlobUnlinked { repo, digest }
            | Write::ManifestDeleted { repo, digest } => (Some(repo.to_string()), Some(s(digest)), None),
            Write::ManifestPut { repo, digest, record, .. } => {
                let refs = record.blobs.iter().chain(&record.manifests).chain(&record.subject).map(s).collect();
                (Some(repo.to_string()), Some(s(digest)), Some(refs))
            }
            Write::TagDeleted { repo, .. } => (Some(repo.to_string()), None, None),
            Write::ScanRequested { repo, digest } => (Some(repo.to_string()), Some(s(digest)), None),
            Write::State { .. } => (None, None, None),
        }
    }
}

/// A condition checked inside the appending transaction (under the append lock, so nothing
/// commits between the check and the append).
#[derive(Debug, Clone)]
pub enum Check {
    /// A manifest's references are still there: no removal of a referenced blob (or unlink
    /// from `repo`) and no deletion of a referenced manifest in `repo` after `since` (the
    /// sequence the writer's own validation saw).
    RefsPresent {
        /// Repository.
        repo: RepoName,
        /// Referenced blobs.
        blobs: Vec<Digest>,
        /// Referenced manifests.
        manifests: Vec<Digest>,
        /// Sequence the writer validated against.
        since: u64,
    },
    /// Nothing touched `digest` after `since` (GC's plan snapshot): no commit, link, manifest
    /// naming it, or reference to it — in `repo` only when given.
    Untouched {
        /// Digest.
        digest: Digest,
        /// Restrict to one repository (a manifest), or any (a blob).
        repo: Option<RepoName>,
        /// GC's snapshot.
        since: u64,
    },
    /// A blob was not removed after `since` (when its upload to S3 began): otherwise its
    /// object may be gone and the writer must upload it again ([`CommitError::Removed`]).
    NotRemovedSince {
        /// Digest.
        digest: Digest,
        /// When the writer's upload began (its applied sequence then).
        since: u64,
    },
    /// The writer still holds a lease (fencing): a holder that lost it cannot write.
    Fenced(crate::lease::Lease),
    /// No node state of this kind and key was committed after `since` (the position the
    /// writer's read of it reflected): a read-modify-write of the whole value (the managed
    /// accounts) does not undo another node's change.
    StateUnchanged {
        /// Kind.
        kind: StateKind,
        /// Key.
        key: String,
        /// The position the writer's read reflected.
        since: u64,
    },
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Postgres could not be reached or failed.
    #[error("postgres: {0}")]
    Unavailable(String),
    /// A reference was removed concurrently (the manifest push fails as if it were missing).
    #[error("{0} was removed by another node")]
    Missing(Digest),
    /// Something touched what GC wanted to delete: keep it.
    #[error("{0} is in use again")]
    InUse(Digest),
    /// The blob was removed after the writer's upload began: upload again, then retry.
    #[error("{0} was removed while it was uploaded")]
    Removed(Digest),
    /// The value was changed by another commit since the writer read it: read again, retry.
    #[error("{0} changed concurrently")]
    Changed(String),
    /// The lease was lost.
    #[error("the {0} lease is no longer held by this node")]
    Fenced(String),
    /// A side effect inside the transaction failed (an S3 delete).
    #[error("{0}")]
    Effect(String),
}

/// A log entry as read back.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Sequence.
    pub seq: u64,
    /// The node that appended it.
    pub origin: String,
    /// Commit time (unix ms).
    pub at_ms: u64,
    /// The write.
    pub write: Write,
}

fn unavailable(e: impl std::fmt::Display) -> CommitError {
    CommitError::Unavailable(e.to_string())
}

/// Run one check inside the appending transaction.
pub(crate) async fn run_check(tx: &tokio_postgres::Transaction<'_>, check: &Check) -> Result<(), CommitError> {
    let strs = |v: &[Digest]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    match check {
        Check::RefsPresent { repo, blobs, manifests, since } => {
            let since = *since as i64;
            let repo = repo.to_string();
            if !blobs.is_empty() {
                let rows = tx
                    .query(
                        "SELECT digest FROM cluster_changes WHERE digest = ANY($1) AND seq > $2 \
                         AND (kind = 'blob_removed' OR (kind = 'blob_unlinked' AND repo = $3)) LIMIT 1",
                        &[&strs(blobs), &since, &repo],
                    )
                    .await
                    .map_err(unavailable)?;
                if let Some(d) = rows.first().and_then(|r| r.get::<_, String>(0).parse().ok()) {
                    return Err(CommitError::Missing(d));
                }
            }
            if !manifests.is_empty() {
                let rows = tx
                    .query(
                        "SELECT digest FROM cluster_changes WHERE digest = ANY($1) AND seq > $2 \
                         AND kind = 'manifest_deleted' AND repo = $3 LIMIT 1",
                        &[&strs(manifests), &since, &repo],
                    )
                    .await
                    .map_err(unavailable)?;
                if let Some(d) = rows.first().and_then(|r| r.get::<_, String>(0).parse().ok()) {
                    return Err(CommitError::Missing(d));
                }
            }
            Ok(())
        }
        Check::Untouched { digest, repo, since } => {
            let repo = repo.as_ref().map(|r| r.to_string());
            let d = digest.to_string();
            let rows = tx
                .query(
                    "SELECT 1 FROM cluster_changes WHERE seq > $1 \
                     AND kind IN ('blob_committed', 'blob_linked', 'manifest_put') \
                     AND (digest = $2 OR $2 = ANY(refs)) AND ($3::text IS NULL OR repo = $3) LIMIT 1",
                    &[&(*since as i64), &d, &repo],
                )
                .await
                .map_err(unavailable)?;
            if rows.is_empty() {
                Ok(())
            } else {
                Err(CommitError::InUse(digest.clone()))
            }
        }
        Check::NotRemovedSince { digest, since } => {
            let rows = tx
                .query(
                    "SELECT 1 FROM cluster_changes WHERE digest = $1 AND seq > $2 AND kind = 'blob_removed' LIMIT 1",
                    &[&digest.to_string(), &(*since as i64)],
                )
                .await
                .map_err(unavailable)?;
            if rows.is_empty() {
                Ok(())
            } else {
                Err(CommitError::Removed(digest.clone()))
            }
        }
        Check::Fenced(l) => crate::lease::check(tx, l).await,
        Check::StateUnchanged { kind, key, since } => {
            let kind = serde_json::to_value(kind).map_err(unavailable)?;
            let kind = kind.as_str().unwrap_or_default();
            let rows = tx
                .query(
                    "SELECT 1 FROM cluster_changes WHERE kind = 'state' AND seq > $1 \
                     AND body->>'kind' = $2 AND body->>'key' = $3 LIMIT 1",
                    &[&(*since as i64), &kind, key],
                )
                .await
                .map_err(unavailable)?;
            if rows.is_empty() {
                Ok(())
            } else {
                Err(CommitError::Changed(format!("{kind} {key:?}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    #[test]
    fn a_manifest_put_round_trips_and_lists_its_references() {
        let record = ManifestRecord {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject: Some(d('c')),
            blobs: vec![d('a')],
            manifests: vec![d('b')],
            absent: Vec::new(),
            annotations: None,
            pushed_at_ms: 1,
        };
        let w = Write::ManifestPut {
            repo: "x/y".parse().unwrap(),
            digest: d('e'),
            record: Box::new(record),
            bytes: "e30=".into(),
            tags: vec!["v1".parse().unwrap()],
        };
        let back: Write = serde_json::from_value(serde_json::to_value(&w).unwrap()).unwrap();
        assert_eq!(back, w);
        assert_eq!(w.kind(), "manifest_put");
        let (repo, digest, refs) = w.columns();
        assert_eq!((repo.as_deref(), digest), (Some("x/y"), Some(d('e').to_string())));
        assert_eq!(refs.unwrap(), vec![d('a').to_string(), d('b').to_string(), d('c').to_string()]);
    }

    #[test]
    fn blob_writes_name_their_digest() {
        let w = Write::BlobRemoved { digest: d('a') };
        assert_eq!((w.kind(), w.columns()), ("blob_removed", (None, Some(d('a').to_string()), None)));
        let w = Write::TagDeleted { repo: "r".parse().unwrap(), tag: "t".parse().unwrap() };
        assert_eq!(w.columns(), (Some("r".into()), None, None));
    }
}
