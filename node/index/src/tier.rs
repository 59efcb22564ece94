//! Tier bookkeeping: the tiering queue (`tier_pending`), exact local and pending byte counts,
//! tier transitions as compare-and-set writes, eviction candidates in LRU order, named feed
//! cursors, and blob import for a rebuild from S3.
//!
//! Invariants kept in the same batch as every blob mutation:
//! - a blob is in `tier_pending` exactly when its tier is `Local`;
//! - `local_bytes` is the sum of sizes of blobs whose tier has a local file;
//! - `pending_count` / `pending_bytes` describe `tier_pending`.

use berth_types::Digest;
use rocksdb::{IteratorMode, WriteBatch};

use crate::{codec, BlobMeta, Change, Index, IndexError, Result, TierState, CF_ACCESS, CF_BLOBS, CF_PENDING, CF_STATS};

const STAT_LOCAL_BYTES: &str = "local_bytes";
const STAT_PENDING_COUNT: &str = "pending_count";
const STAT_PENDING_BYTES: &str = "pending_bytes";
const STAT_SCHEMA: &str = "schema";
const SCHEMA: u64 = 3;

/// Byte and blob counts by tier, exact and O(1) to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierTotals {
    /// Bytes with a local file (`local` and `local_and_remote`).
    pub local_bytes: u64,
    /// Blobs committed locally and not yet in S3.
    pub pending_count: u64,
    /// Their bytes.
    pub pending_bytes: u64,
}

/// A blob that may be evicted (it is safe in S3), with its last access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionCandidate {
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Last pull (unix ms), or the commit time when never pulled.
    pub last_used_ms: u64,
}

fn cursor_key(name: &str) -> String {
    format!("cursor:{name}")
}

impl Index {
    fn stat(&self, key: &str) -> Result<u64> {
        Ok(self.db.get_pinned_cf(self.cf(CF_STATS), key)?.and_then(|v| codec::u64_from(&v)).unwrap_or(0))
    }

    pub(crate) fn put_stat(&self, batch: &mut WriteBatch, key: &str, value: u64) {
        batch.put_cf(self.cf(CF_STATS), key, value.to_be_bytes());
    }

    /// Bring an index written before tiering existed up to date: fill the queue and the local
    /// byte count from the blob records. Runs once (at open), before anyone else writes.
    pub(crate) fn migrate(&self) -> Result<()> {
        let from = self.stat(STAT_SCHEMA)?;
        if from >= SCHEMA {
            return Ok(());
        }
        let _g = self.lock();
        let mut batch = WriteBatch::default();
        if from < 3 {
            self.migrate_refs(&mut batch)?;
        }
        if from >= 2 {
            self.put_stat(&mut batch, STAT_SCHEMA, SCHEMA);
            return self.write(batch);
        }
        let (mut local, mut pcount, mut pbytes) = (0u64, 0u64, 0u64);
        for (digest, meta) in self.all_blobs()? {
            if meta.tier.is_local() {
                local += meta.size;
            }
            if meta.tier == TierState::Local {
                batch.put_cf(self.cf(CF_PENDING), digest.to_string(), meta.size.to_be_bytes());
                pcount += 1;
                pbytes += meta.size;
            }
        }
        self.put_stat(&mut batch, STAT_LOCAL_BYTES, local);
        self.put_stat(&mut batch, STAT_PENDING_COUNT, pcount);
        self.put_stat(&mut batch, STAT_PENDING_BYTES, pbytes);
        self.put_stat(&mut batch, STAT_SCHEMA, SCHEMA);
        self.write(batch)
    }

    /// Account for a blob entering `tier` (new or imported). Caller holds the write lock.
    pub(crate) fn enter_tier(&self, batch: &mut WriteBatch, digest: &Digest, size: u64, tier: TierState) -> Result<()> {
        if tier.is_local() {
            self.put_stat(batch, STAT_LOCAL_BYTES, self.stat(STAT_LOCAL_BYTES)? + size);
        }
        if tier == TierState::Local {
            batch.put_cf(self.cf(CF_PENDING), digest.to_string(), size.to_be_bytes());
            self.put_stat(batch, STAT_PENDING_COUNT, self.stat(STAT_PENDING_COUNT)? + 1);
            self.put_stat(batch, STAT_PENDING_BYTES, self.stat(STAT_PENDING_BYTES)? + size);
        }
        Ok(())
    }

    /// Account for a blob leaving `tier` (removed). Caller holds the write lock.
    pub(crate) fn leave_tier(&self, batch: &mut WriteBatch, digest: &Digest, size: u64, tier: TierState) -> Result<()> {
        if tier.is_local() {
            self.put_stat(batch, STAT_LOCAL_BYTES, self.stat(STAT_LOCAL_BYTES)?.saturating_sub(size));
        }
        if tier == TierState::Local {
            batch.delete_cf(self.cf(CF_PENDING), digest.to_string());
            self.put_stat(batch, STAT_PENDING_COUNT, self.stat(STAT_PENDING_COUNT)?.saturating_sub(1));
            self.put_stat(batch, STAT_PENDING_BYTES, self.stat(STAT_PENDING_BYTES)?.saturating_sub(size));
        }
        Ok(())
    }

    /// Exact tier totals.
    pub fn tier_totals(&self) -> Result<TierTotals> {
        Ok(TierTotals {
            local_bytes: self.stat(STAT_LOCAL_BYTES)?,
            pending_count: self.stat(STAT_PENDING_COUNT)?,
            pending_bytes: self.stat(STAT_PENDING_BYTES)?,
        })
    }

    /// Move a blob from tier `from` to tier `to`, only if it exists and is in `from` now
    /// (compare-and-set). Returns whether it moved. Synced like every acknowledged write: an
    /// eviction must never be remembered as "still local" after a crash.
    pub fn set_tier(&self, digest: &Digest, from: TierState, to: TierState) -> Result<bool> {
        let _g = self.lock();
        let dkey = digest.to_string();
        let Some(v) = self.db.get_pinned_cf(self.cf(CF_BLOBS), &dkey)? else {
            return Ok(false);
        };
        let mut meta: BlobMeta = codec::decode(&v, CF_BLOBS)?;
        if meta.tier != from || from == to {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        // Leave-then-enter on the same stat keys would overwrite each other inside one batch
        // (each reads the committed value), so apply the net change directly.
        let local = self.stat(STAT_LOCAL_BYTES)?;
        match (from.is_local(), to.is_local()) {
            (true, false) => self.put_stat(&mut batch, STAT_LOCAL_BYTES, local.saturating_sub(meta.size)),
            (false, true) => self.put_stat(&mut batch, STAT_LOCAL_BYTES, local + meta.size),
            _ => {}
        }
        if from == TierState::Local {
            batch.delete_cf(self.cf(CF_PENDING), &dkey);
            self.put_stat(&mut batch, STAT_PENDING_COUNT, self.stat(STAT_PENDING_COUNT)?.saturating_sub(1));
            self.put_stat(&mut batch, STAT_PENDING_BYTES, self.stat(STAT_PENDING_BYTES)?.saturating_sub(meta.size));
        }
        if to == TierState::Local {
            batch.put_cf(self.cf(CF_PENDING), &dkey, meta.size.to_be_bytes());
            self.put_stat(&mut batch, STAT_PENDING_COUNT, self.stat(STAT_PENDING_COUNT)? + 1);
            self.put_stat(&mut batch, STAT_PENDING_BYTES, self.stat(STAT_PENDING_BYTES)? + meta.size);
        }
        meta.tier = to;
        batch.put_cf(self.cf(CF_BLOBS), &dkey, codec::encode(&meta));
        self.feed(&mut batch, vec![Change::BlobTier { digest: digest.clone(), tier: to }]);
        self.write(batch)?;
        Ok(true)
    }

    /// Blobs waiting to be uploaded to S3, in digest order after `after`, at most `limit`.
    pub fn pending_tiering(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, u64)>> {
        let start = after.map(|d| {
            let mut k = d.to_string().into_bytes();
            k.push(0);
            k
        });
        let mode = match &start {
            Some(k) => IteratorMode::From(k, rocksdb::Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PENDING), mode) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let d: Digest = codec::parse_text(&k, CF_PENDING)?;
            let size = codec::u64_from(&v).ok_or(IndexError::Corrupt { cf: CF_PENDING, reason: "size".into() })?;
            out.push((d, size));
        }
        Ok(out)
    }

    /// Blobs that are safe in S3 and have a local copy, least recently used first. A full scan:
    /// eviction runs only when the cache passes its high watermark, not per request.
    pub fn eviction_candidates(&self) -> Result<Vec<EvictionCandidate>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_BLOBS), IteratorMode::Start) {
            let (k, v) = item?;
            let meta: BlobMeta = codec::decode(&v, CF_BLOBS)?;
            if meta.tier != TierState::LocalAndRemote {
                continue;
            }
            let digest: Digest = codec::parse_text(&k, CF_BLOBS)?;
            let accessed = self.db.get_pinned_cf(self.cf(CF_ACCESS), &k)?.and_then(|v| codec::u64_from(&v));
            let last_used_ms = accessed.unwrap_or(0).max(meta.created_at_ms);
            out.push(EvictionCandidate { digest, size: meta.size, last_used_ms });
        }
        out.sort_by(|a, b| a.last_used_ms.cmp(&b.last_used_ms).then_with(|| a.digest.cmp(&b.digest)));
        Ok(out)
    }

    /// Add a blob known to exist elsewhere (a rebuild from S3). No-op when it exists already.
    /// Not linked to any repository; links are imported separately.
    pub fn import_blob(&self, digest: &Digest, meta: &BlobMeta) -> Result<bool> {
        let _g = self.lock();
        let dkey = digest.to_string();
        if self.db.get_pinned_cf(self.cf(CF_BLOBS), &dkey)?.is_some() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_BLOBS), &dkey, codec::encode(meta));
        self.bump_stats(&mut batch, 1, meta.size as i64)?;
        self.enter_tier(&mut batch, digest, meta.size, meta.tier)?;
        let mut changes = vec![Change::BlobCommitted { digest: digest.clone(), size: meta.size }];
        // Feed consumers take a committed blob to be local: say where this one is.
        if meta.tier != TierState::Local {
            changes.push(Change::BlobTier { digest: digest.clone(), tier: meta.tier });
        }
        self.feed(&mut batch, changes);
        self.write(batch)?;
        Ok(true)
    }

    /// A named marker of this node (one-time jobs done, and the like); 0 when never set. Not a
    /// feed consumer: it holds nothing back.
    pub fn marker(&self, name: &str) -> Result<u64> {
        self.stat(&format!("marker/{name}"))
    }

    /// Set a marker (synced like any index write).
    pub fn set_marker(&self, name: &str, value: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put_stat(&mut batch, &format!("marker/{name}"), value);
        self.write(batch)
    }

    /// A named consumer's position in the change feed (the last sequence it applied; 0 for none).
    pub fn cursor(&self, name: &str) -> Result<u64> {
        self.stat(&cursor_key(name))
    }

    /// Record a consumer's position. Not synced: replaying a few changes after a crash is
    /// harmless for consumers that apply them idempotently.
    pub fn set_cursor(&self, name: &str, seq: u64) -> Result<()> {
        self.consumer_at(name, seq)
    }
}
