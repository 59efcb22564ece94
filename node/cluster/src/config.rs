//! `[cluster]`: this node's name and address, the shared Postgres, and the timings.

use serde::{Deserialize, Serialize};

/// When a push is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After S3 holds the blob (and the manifest and its tags) and Postgres holds the change:
    /// nothing acknowledged is lost with a node.
    #[default]
    S3,
    /// After the local fsync and the Postgres commit; the blob reaches S3 later (the tier's
    /// queue, `berth_tier_pending_bytes`). Lost with the node's disk until then; other nodes
    /// stream it from this one meanwhile (503 if it is down).
    Local,
}

/// Scale-out configuration (`[cluster]`). Present means cluster mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster: `[a-z0-9-]`, 1–63 characters.
    pub node: String,
    /// The shared Postgres (a libpq URL or key=value string).
    pub postgres_url: String,
    /// This node's internal listener as the other nodes reach it (`http://10.0.0.5:5001`):
    /// uploads owned by this node are forwarded there.
    pub internal_url: String,
    /// CA bundle (PEM) to trust for other nodes' `https://` internal URLs, when their
    /// certificates are not from a public CA.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// When pushes are acknowledged.
    #[serde(default)]
    pub durability: Durability,
    /// Lifetime of a single-writer lease (GC) without renewal; a dead holder is replaced
    /// after at most this long.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// How often a node writes its heartbeat and re-reads the node table.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Poll the change log this often even without a notification (a lost `NOTIFY`).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Connections to Postgres.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// Timeout of one Postgres operation (a commit, a catch-up); beyond it the request
    /// answers 503.
    #[serde(default = "default_pg_timeout")]
    pub postgres_timeout_ms: u64,
    /// Reads whose answer can change (a tag, a tag list, the catalog, referrers) first ask
    /// Postgres whether this node is behind — one indexed query, shared by concurrent
    /// requests — so a moved tag is seen moved on every node as soon as the push is
    /// acknowledged. `false` serves them from the local index alone (no Postgres on any pull;
    /// such reads may then lag other nodes' pushes by the replication lag, ~1 ms).
    /// Content-addressed reads (blobs, manifests by digest) never ask.
    #[serde(default = "default_true")]
    pub consistent_reads: bool,
    /// Commits of this node that may share one Postgres transaction (group commit: those
    /// queued while the previous transaction ran). 1 turns batching off.
    #[serde(default = "default_batch")]
    pub commit_batch_max: usize,
    /// Compact the change log when it holds more than this many entries after the latest
    /// snapshot: one node (under the `compact` lease) writes a snapshot of the registry's
    /// state, then entries every node has applied are deleted. New nodes start from the
    /// snapshot. 0: only on demand (`POST /internal/v1/cluster/compact`).
    #[serde(default = "default_compact_after")]
    pub compact_after_changes: u64,
    /// Entries younger than this are never trimmed (a commit's checks look back at most a
    /// few seconds; this leaves a wide margin).
    #[serde(default = "default_trim_keep")]
    pub trim_keep_secs: u64,
    /// A node not heard from for this long no longer holds trimming back; if it comes back
    /// after the log was trimmed past its position it refuses to serve (`/readyz` 503) until
    /// its data directory is emptied.
    #[serde(default = "default_forget")]
    pub forget_nodes_after_secs: u64,
}

fn default_batch() -> usize {
    64
}
fn default_compact_after() -> u64 {
    100_000
}
fn default_trim_keep() -> u64 {
    600
}
fn default_forget() -> u64 {
    7 * 24 * 3600
}

fn default_true() -> bool {
    true
}

fn default_lease_ttl() -> u64 {
    10
}
fn default_heartbeat() -> u64 {
    2
}
fn default_poll_ms() -> u64 {
    1000
}
fn default_pool() -> usize {
    8
}
fn default_pg_timeout() -> u64 {
    5000
}

impl ClusterConfig {
    /// Check the fields that can be checked without connecting.
    pub fn validate(&self) -> Result<(), String> {
        let ok = !self.node.is_empty()
            && self.node.len() <= 63
            && self.node.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!("cluster.node {:?}: use 1-63 characters of a-z, 0-9 and '-'", self.node));
        }
        if !(self.internal_url.starts_with("http://") || self.internal_url.starts_with("https://")) {
            return Err(format!("cluster.internal_url {:?} must be an http:// or https:// URL", self.internal_url));
        }
        if self.lease_ttl_secs < 2 {
            return Err("cluster.lease_ttl_secs must be at least 2".into());
        }
        if self.heartbeat_secs == 0 || self.poll_ms == 0 || self.pool_size < 2 {
            return Err("cluster.heartbeat_secs and poll_ms must be positive, pool_size at least 2".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(node: &str, url: &str) -> ClusterConfig {
        serde_json::from_value(serde_json::json!({
            "node": node, "postgres_url": "host=db", "internal_url": url
        }))
        .unwrap()
    }

    #[test]
    fn names_and_urls_are_checked() {
        assert!(cfg("node-1", "http://10.0.0.1:5001").validate().is_ok());
        assert_eq!(cfg("n", "http://x").durability, Durability::S3);
        assert!(cfg("Node_1", "http://x").validate().unwrap_err().contains("cluster.node"));
        assert!(cfg("", "http://x").validate().is_err());
        assert!(cfg("a", "10.0.0.1:5001").validate().unwrap_err().contains("internal_url"));
    }

    #[test]
    fn node_tags_are_stable() {
        // Upload ids in flight carry these: a change would orphan them across an upgrade.
        assert_eq!(crate::nodes::tag_of("a"), crate::nodes::tag_of("a"));
        assert_ne!(crate::nodes::tag_of("a"), crate::nodes::tag_of("b"));
    }
}
