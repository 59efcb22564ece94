//! Tier metrics (prometheus-client handles: cheap atomics, registered by the node).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Label: outcome of an operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Label: S3 operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// Operation name.
    pub op: &'static str,
}

/// Tier counters.
#[derive(Default)]
pub struct TierMetrics {
    /// Blob uploads to S3 by result.
    pub uploads: Family<ResultLabel, Counter>,
    /// Bytes uploaded to S3 (blobs).
    pub uploaded_bytes: Counter,
    /// Local copies evicted.
    pub evictions: Counter,
    /// Bytes evicted.
    pub evicted_bytes: Counter,
    /// Read-through fetches by result (one per cache miss, however many readers share it).
    pub fills: Family<ResultLabel, Counter>,
    /// Bytes read from S3 (read-through and ranged reads).
    pub s3_read_bytes: Counter,
    /// Failed S3 operations.
    pub s3_errors: Family<OpLabel, Counter>,
    /// Change-feed records mirrored to the bucket.
    pub mirrored: Counter,
}

impl TierMetrics {
    /// Count a failed S3 operation.
    pub fn s3_error(&self, op: &'static str) {
        self.s3_errors.get_or_create(&OpLabel { op }).inc();
    }

    /// Count an outcome.
    pub(crate) fn result(family: &Family<ResultLabel, Counter>, ok: bool) {
        family.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
    }

    /// Register into the node's registry (names get the registry's `berth_` prefix).
    pub fn register(&self, r: &mut Registry) {
        r.register("tier_uploads", "Blob uploads to S3 by result", self.uploads.clone());
        r.register("tier_uploaded_bytes", "Blob bytes uploaded to S3", self.uploaded_bytes.clone());
        r.register("tier_evictions", "Local copies evicted from the cache", self.evictions.clone());
        r.register("tier_evicted_bytes", "Bytes evicted from the cache", self.evicted_bytes.clone());
        r.register("tier_fills", "Read-through fetches from S3 by result", self.fills.clone());
        r.register("tier_s3_read_bytes", "Bytes read from S3", self.s3_read_bytes.clone());
        r.register("tier_s3_errors", "Failed S3 operations", self.s3_errors.clone());
        r.register("tier_mirrored_changes", "Change-feed records mirrored to the bucket", self.mirrored.clone());
    }
}
