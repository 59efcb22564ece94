//! Tiering configuration: `[storage.s3]` (where the bucket is) and `[cache]` (the local byte
//! budget). Both are plain serde structs embedded in the node's configuration.

use serde::{Deserialize, Serialize};

/// `[storage.s3]`: the bucket blobs are tiered to. Present = tiering on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (e.g. `registry/`); a `/` is added when missing.
    pub prefix: String,
    /// Region (signing region; any value works for most S3-compatible servers).
    pub region: String,
    /// Endpoint URL for S3-compatible servers (`http://127.0.0.1:9000`); unset means AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible servers.
    pub path_style: bool,
    /// Static access key. Unset: the AWS default chain (environment variables, shared
    /// profile files, web identity, ECS/EC2 instance metadata).
    pub access_key_id: Option<String>,
    /// Static secret key (with `access_key_id`).
    pub secret_access_key: Option<String>,
    /// Optional session token (with static keys).
    pub session_token: Option<String>,
    /// Blobs of at least this many bytes are uploaded in parts.
    pub multipart_threshold: u64,
    /// Part size for multipart uploads (S3 needs at least 5 MiB).
    pub part_size: u64,
    /// Parts of one blob uploaded in parallel.
    pub part_concurrency: usize,
    /// Blobs uploaded in parallel.
    pub upload_concurrency: usize,
    /// Answer GETs of blobs that are only in S3 with a 307 to a presigned URL instead of
    /// streaming them through the node (and caching them).
    pub presign_redirect: bool,
    /// Lifetime of presigned URLs, in seconds.
    pub presign_expiry_secs: u64,
    /// Longest wait between retries of a failing S3 operation, in seconds.
    pub max_backoff_secs: u64,
    /// Rebuild the index from the bucket when the node starts with an empty index.
    pub rebuild_on_empty_index: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            region: "us-east-1".into(),
            endpoint: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
            part_concurrency: 4,
            upload_concurrency: 2,
            presign_redirect: false,
            presign_expiry_secs: 900,
            max_backoff_secs: 30,
            rebuild_on_empty_index: true,
        }
    }
}

impl S3Config {
    /// Check values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket.is_empty() {
            return Err("storage.s3.bucket must be set".into());
        }
        if self.part_size < 5 << 20 {
            return Err("storage.s3.part_size must be at least 5 MiB (an S3 limit)".into());
        }
        if self.multipart_threshold < self.part_size {
            return Err("storage.s3.multipart_threshold must be at least part_size".into());
        }
        if self.part_concurrency == 0 || self.upload_concurrency == 0 {
            return Err("storage.s3 concurrencies must be at least 1".into());
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err("storage.s3.access_key_id and secret_access_key go together".into());
        }
        Ok(())
    }

    /// The prefix with exactly one trailing `/` (or empty).
    pub fn normalized_prefix(&self) -> String {
        let p = self.prefix.trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        }
    }
}

/// `[cache]`: the local disk budget when tiering is on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Byte budget for blob files on local disk; 0 means no budget (never evict).
    pub max_bytes: u64,
    /// Eviction starts when local bytes pass this fraction of `max_bytes`.
    pub high_watermark: f64,
    /// Eviction stops when local bytes fall to this fraction of `max_bytes`.
    pub low_watermark: f64,
    /// How often the budget is checked without a trigger, in seconds.
    pub check_interval_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { max_bytes: 0, high_watermark: 0.9, low_watermark: 0.8, check_interval_secs: 10 }
    }
}

impl CacheConfig {
    /// Check values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |f: f64| (0.0..=1.0).contains(&f);
        if !ok(self.high_watermark) || !ok(self.low_watermark) || self.low_watermark > self.high_watermark {
            return Err("cache watermarks must satisfy 0 <= low_watermark <= high_watermark <= 1".into());
        }
        Ok(())
    }

    /// (high, low) watermarks in bytes; `None` without a budget.
    pub fn thresholds(&self) -> Option<(u64, u64)> {
        (self.max_bytes > 0).then(|| {
            let b = self.max_bytes as f64;
            ((b * self.high_watermark) as u64, (b * self.low_watermark) as u64)
        })
    }
}
