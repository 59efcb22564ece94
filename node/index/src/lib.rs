//! The node's index: one RocksDB database with a column family per kind of record.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `blobs` | digest | [`BlobMeta`] (size, created-at, tier state) |
//! | `repo_blobs` | repo `\0` digest | empty: the repository may read this blob |
//! | `manifests` | repo `\0` digest | [`ManifestRecord`] header + the exact manifest bytes |
//! | `tags` | repo `\0` tag | digest |
//! | `referrers` | repo `\0` subject `\0` digest | [`Descriptor`] of the referrer |
//! | `uploads` | repo `\0` upload id | [`UploadSession`] |
//! | `repos` | repo | number of manifests and blob links it holds |
//! | `access` | digest | last access (unix ms), written in batches |
//! | `feed` | sequence (u64 big-endian) | [`Change`] |
//! | `stats` | `blob_count`, `blob_bytes`, `local_bytes`, `pending_*`, `cursor:*` | u64, kept exact in the same batches |
//! | `tier_pending` | digest | size: committed locally, not yet safe in S3 (the tiering queue) |
//! | `blob_repos` | digest `\0` repo | empty: the reverse of `repo_blobs` |
//! | `refs` | `b\0` digest / `m\0` repo `\0` digest | how many stored manifests reference a blob / a child manifest |
//!
//! Every mutation is one atomic `WriteBatch` that carries its change-feed entries, so the feed
//! is exactly the sequence of committed changes. Mutations are serialised by one mutex (they
//! are rare next to reads; reads take no lock). Writes that acknowledge a client are synced
//! to the WAL before returning.
//!
//! Layering: the index knows nothing about files or HTTP. The node's stores call it; it calls
//! nobody.

mod codec;
mod gc;
mod model;
mod retention;
mod scans;
mod tier;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use berth_types::{Digest, RepoName, Tag};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

pub use gc::{Export, ExportedManifest, Kept};
pub use model::{BlobMeta, Change, ChangeRecord, Descriptor, ManifestRecord, TierState, UploadSession};
pub use tier::{EvictionCandidate, TierTotals};

const CF_BLOBS: &str = "blobs";
const CF_REPO_BLOBS: &str = "repo_blobs";
const CF_MANIFESTS: &str = "manifests";
const CF_TAGS: &str = "tags";
const CF_REFERRERS: &str = "referrers";
const CF_UPLOADS: &str = "uploads";
const CF_REPOS: &str = "repos";
const CF_ACCESS: &str = "access";
const CF_FEED: &str = "feed";
const CF_STATS: &str = "stats";
const CF_PENDING: &str = "tier_pending";
const CF_REFS: &str = "refs";
const CF_BLOB_REPOS: &str = "blob_repos";
/// `repo \0 tag` → when the tag was last set to a new manifest (unix ms, big-endian u64).
const CF_TAG_TIMES: &str = "tag_times";
/// manifest digest → JSON scan record (see `scans.rs`).
const CF_SCANS: &str = "scans";
const ALL_CFS: [&str; 15] = [
    CF_TAG_TIMES,
    CF_SCANS,
    CF_BLOBS,
    CF_REPO_BLOBS,
    CF_MANIFESTS,
    CF_TAGS,
    CF_REFERRERS,
    CF_UPLOADS,
    CF_REPOS,
    CF_ACCESS,
    CF_FEED,
    CF_STATS,
    CF_PENDING,
    CF_REFS,
    CF_BLOB_REPOS,
];
const STAT_BLOB_COUNT: &str = "blob_count";
const STAT_BLOB_BYTES: &str = "blob_bytes";

/// Index failures. All of them are server-side: a client mistake never produces one.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    /// A stored value did not decode: corruption or a schema mismatch.
    #[error("corrupt index record in {cf}: {reason}")]
    Corrupt {
        /// Column family.
        cf: &'static str,
        /// What failed.
        reason: String,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, IndexError>;

/// When a write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the call returns (with `sync_index`).
    Synced,
    /// At the next synced write or [`Index::sync_wal`]: for bulk work (GC) that syncs once
    /// per batch of operations before acting on files.
    Deferred,
}

/// What a manifest put did, for the caller's response and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutManifestOutcome {
    /// Whether the manifest was new in this repository.
    pub created: bool,
    /// A reference that was not in the repository at commit time (a concurrent garbage
    /// collection may have removed it after the caller's check); nothing was written.
    pub missing: Option<Digest>,
}

/// One page of a sorted listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The items, sorted.
    pub items: Vec<String>,
    /// Whether more items follow the last one.
    pub more: bool,
}

/// The index. Cheap to share behind an `Arc`; every method is safe to call from any thread.
pub struct Index {
    db: DB,
    next_seq: AtomicU64,
    write_lock: Mutex<()>,
    sync: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn prefix(a: &str) -> Vec<u8> {
    let mut k = a.as_bytes().to_vec();
    k.push(0);
    k
}

impl Index {
    /// Open (creating if needed) the index at `path`. `sync` makes acknowledged writes wait for
    /// the WAL to reach the disk (power-loss safety); without it they survive a process kill.
    pub fn open(path: &Path, sync: bool) -> Result<Index> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_background_jobs(2);
        // Bound memtable memory: every family flushes at 4 MiB, and all of them together may
        // hold at most 16 MiB before the largest is flushed (a 10-minute soak grew to 109 MiB
        // RSS with RocksDB's 64 MiB-per-family default, mostly in the access-time family).
        opts.set_db_write_buffer_size(16 << 20);
        let cf_opts = || {
            let mut o = Options::default();
            o.set_write_buffer_size(4 << 20);
            o.set_max_write_buffer_number(2);
            o
        };
        let cfs = ALL_CFS.iter().map(|n| ColumnFamilyDescriptor::new(*n, cf_opts()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let last = {
            let cf = db.cf_handle(CF_FEED).expect("feed cf");
            let mut it = db.iterator_cf(cf, IteratorMode::End);
            match it.next() {
                Some(Ok((k, _))) => codec::seq_from_key(&k).unwrap_or(0),
                Some(Err(e)) => return Err(e.into()),
                None => 0,
            }
        };
        let index = Index { db, next_seq: AtomicU64::new(last + 1), write_lock: Mutex::new(()), sync };
        index.migrate()?;
        Ok(index)
    }

    fn cf(&self, name: &'static str) -> &rocksdb::ColumnFamily {
        // All families are created at open; absence is a programming error.
        self.db.cf_handle(name).expect("column family created at open")
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.write_durable(batch, Durability::Synced)
    }

    fn write_durable(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        if batch.is_empty() {
            // Nothing changed (e.g. a blob pushed again): no WAL write, no fsync.
            return Ok(());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync && durability == Durability::Synced);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Make every write so far durable (after `Durability::Deferred` writes). The WAL is
    /// sequential: syncing it persists all earlier writes.
    pub fn sync_wal(&self) -> Result<()> {
        if self.sync {
            self.db.flush_wal(true)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append change-feed entries to a batch. Caller holds the write lock.
    fn feed(&self, batch: &mut WriteBatch, changes: Vec<Change>) {
        let at = now_ms();
        let replica = REPLICA.with(|r| r.get());
        for change in changes {
            let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
            let rec = ChangeRecord { seq, at_ms: at, change, replica };
            batch.put_cf(self.cf(CF_FEED), seq.to_be_bytes(), codec::encode(&rec));
        }
    }

    /// Adjust a repository's content count inside a batch. Caller holds the write lock.
    fn bump_repo(&self, batch: &mut WriteBatch, repo: &RepoName, delta: i64) -> Result<()> {
        let cf = self.cf(CF_REPOS);
        let cur = match self.db.get_cf(cf, repo.as_str())? {
            Some(v) => codec::u64_from(&v).ok_or(IndexError::Corrupt { cf: CF_REPOS, reason: "count".into() })?,
            None => 0,
        };
        let next = (cur as i64 + delta).max(0) as u64;
        if next == 0 {
            batch.delete_cf(cf, repo.as_str());
        } else {
            batch.put_cf(cf, repo.as_str(), next.to_be_bytes());
        }
        Ok(())
    }

    /// Adjust the store totals inside a batch. Caller holds the write lock.
    fn bump_stats(&self, batch: &mut WriteBatch, count: i64, bytes: i64) -> Result<()> {
        let (c, b) = self.store_totals()?;
        batch.put_cf(self.cf(CF_STATS), STAT_BLOB_COUNT, ((c as i64 + count).max(0) as u64).to_be_bytes());
        batch.put_cf(self.cf(CF_STATS), STAT_BLOB_BYTES, ((b as i64 + bytes).max(0) as u64).to_be_bytes());
        Ok(())
    }

    /// Committed blobs in the store and their total size in bytes (exact; O(1)).
    pub fn store_totals(&self) -> Result<(u64, u64)> {
        let get = |k: &str| -> Result<u64> {
            Ok(self.db.get_pinned_cf(self.cf(CF_STATS), k)?.and_then(|v| codec::u64_from(&v)).unwrap_or(0))
        };
        Ok((get(STAT_BLOB_COUNT)?, get(STAT_BLOB_BYTES)?))
    }

    // ---------------------------------------------------------------- blobs

    /// Metadata of a committed blob, wherever it is linked.
    pub fn blob(&self, digest: &Digest) -> Result<Option<BlobMeta>> {
        match self.db.get_pinned_cf(self.cf(CF_BLOBS), digest.to_string())? {
            Some(v) => codec::decode(&v, CF_BLOBS).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `repo` may read `digest`.
    pub fn repo_has_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.cf(CF_REPO_BLOBS), key2(repo.as_str(), &digest.to_string()))?.is_some())
    }

    /// Record a verified, durable blob and link it into `repo`, removing the upload session
    /// `upload` if given. Idempotent: committing a blob that exists only adds the link.
    pub fn commit_blob(&self, repo: &RepoName, digest: &Digest, size: u64, upload: Option<&str>) -> Result<()> {
        let _g = self.lock();
        let mut batch = WriteBatch::default();
        let mut changes = Vec::new();
        let dkey = digest.to_string();
        if self.db.get_pinned_cf(self.cf(CF_BLOBS), &dkey)?.is_none() {
            let meta = BlobMeta { size, created_at_ms: now_ms(), tier: TierState::Local };
            batch.put_cf(self.cf(CF_BLOBS), &dkey, codec::encode(&meta));
            self.bump_stats(&mut batch, 1, size as i64)?;
            self.enter_tier(&mut batch, digest, size, TierState::Local)?;
            changes.push(Change::BlobCommitted { digest: digest.clone(), size });
        }
        self.link_in(&mut batch, &mut changes, repo, digest)?;
        if let Some(id) = upload {
            batch.delete_cf(self.cf(CF_UPLOADS), key2(repo.as_str(), id));
        }
        self.feed(&mut batch, changes);
        self.write(batch)
    }

    fn link_in(
        &self,
        batch: &mut WriteBatch,
        changes: &mut Vec<Change>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<()> {
        let lkey = key2(repo.as_str(), &digest.to_string());
        if self.db.get_pinned_cf(self.cf(CF_REPO_BLOBS), &lkey)?.is_none() {
            batch.put_cf(self.cf(CF_REPO_BLOBS), &lkey, []);
            batch.put_cf(self.cf(CF_BLOB_REPOS), key2(&digest.to_string(), repo.as_str()), []);
            self.bump_repo(batch, repo, 1)?;
            changes.push(Change::BlobLinked { repo: repo.clone(), digest: digest.clone() });
        }
        Ok(())
    }

    /// Link an existing blob into `repo` (cross-repository mount). Returns false when the blob
    /// is not in the store.
    pub fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let _g = self.lock();
        if self.db.get_pinned_cf(self.cf(CF_BLOBS), digest.to_string())?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        let mut changes = Vec::new();
        self.link_in(&mut batch, &mut changes, repo, digest)?;
        self.feed(&mut batch, changes);
        self.write(batch)?;
        Ok(true)
    }

    /// Remove `repo`'s link to a blob. The blob's data stays until garbage collection finds it
    /// unreferenced. Returns false when there was no link.
    pub fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let _g = self.lock();
        let lkey = key2(repo.as_str(), &digest.to_string());
        if self.db.get_pinned_cf(self.cf(CF_REPO_BLOBS), &lkey)?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_REPO_BLOBS), &lkey);
        batch.delete_cf(self.cf(CF_BLOB_REPOS), key2(&digest.to_string(), repo.as_str()));
        self.bump_repo(&mut batch, repo, -1)?;
        self.feed(&mut batch, vec![Change::BlobUnlinked { repo: repo.clone(), digest: digest.clone() }]);
        self.write(batch)?;
        Ok(true)
    }

    /// Every repository → blob link (for fsck, GC and resync).
    pub fn all_links(&self) -> Result<Vec<(RepoName, Digest)>> {
        self.pairs(CF_REPO_BLOBS)
    }

    /// Every tag as (repository, tag, manifest digest).
    pub fn all_tags(&self) -> Result<Vec<(RepoName, Tag, Digest)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_TAGS), IteratorMode::Start) {
            let (k, v) = item?;
            let (repo, tag) = codec::split_key(&k, CF_TAGS)?;
            let digest = codec::parse_text(&v, CF_TAGS)?;
            out.push((repo, tag, digest));
        }
        Ok(out)
    }

    fn pairs(&self, cf: &'static str) -> Result<Vec<(RepoName, Digest)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
            let (k, _) = item?;
            out.push(codec::split_key(&k, cf)?);
        }
        Ok(out)
    }

    /// Remove a blob whose data is gone: its record and every repository link, in one write,
    /// with feed records. Used by `fsck --repair`; garbage collection uses
    /// [`Index::remove_blob_if_unused`].
    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let _g = self.lock();
        self.remove_blob_locked(digest, Durability::Synced)
    }

    /// Every committed blob, in digest order (for fsck, GC and resync).
    pub fn all_blobs(&self) -> Result<Vec<(Digest, BlobMeta)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_BLOBS), IteratorMode::Start) {
            let (k, v) = item?;
            let d: Digest = codec::parse_text(&k, CF_BLOBS)?;
            out.push((d, codec::decode(&v, CF_BLOBS)?));
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- uploads

    /// Create or update an upload session of `repo`.
    ///
    /// Not synced: session progress is not an acknowledged blob. It survives a process crash
    /// (the WAL is in the page cache); after a power loss a session may be lost or point past
    /// its data, in which case resuming fails cleanly and the client starts over. Syncing here
    /// would, on ext4 (data=ordered), also force the chunk just written to disk on every PATCH.
    pub fn put_upload(&self, repo: &RepoName, id: &str, session: &UploadSession) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_UPLOADS), key2(repo.as_str(), id), codec::encode(session));
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Record that `tag` of `repo` was used now (its time is what GC retention's
    /// `keep_younger_than_secs` and `keep_last` order by). The pull-through cache calls this
    /// when it confirms a cached tag with its upstream, so retention prunes cached tags by last
    /// use. Unsynced: a lost update only makes a tag look older. No-op for an absent tag.
    pub fn touch_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        let tkey = key2(repo.as_str(), tag.as_str());
        if self.db.get_pinned_cf(self.cf(CF_TAGS), &tkey)?.is_none() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_TAG_TIMES), &tkey, now_ms().to_be_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Look up an upload session of `repo`.
    pub fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<UploadSession>> {
        match self.db.get_pinned_cf(self.cf(CF_UPLOADS), key2(repo.as_str(), id))? {
            Some(v) => codec::decode(&v, CF_UPLOADS).map(Some),
            None => Ok(None),
        }
    }

    /// Delete an upload session of `repo`.
    pub fn delete_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_UPLOADS), key2(repo.as_str(), id));
        self.write(batch)
    }

    /// Number of open upload sessions in `repo`.
    pub fn count_uploads(&self, repo: &RepoName) -> Result<usize> {
        let p = prefix(repo.as_str());
        let mut n = 0;
        for item in self.db.iterator_cf(self.cf(CF_UPLOADS), IteratorMode::From(&p, Direction::Forward)) {
            let (k, _) = item?;
            if !k.starts_with(&p) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// All upload sessions (for expiry and fsck).
    pub fn uploads(&self) -> Result<Vec<(String, UploadSession)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_UPLOADS), IteratorMode::Start) {
            let (k, v) = item?;
            let id = k.iter().rposition(|&b| b == 0).map(|p| &k[p + 1..]).unwrap_or(&k);
            out.push((String::from_utf8_lossy(id).into_owned(), codec::decode(&v, CF_UPLOADS)?));
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- manifests

    /// Store a manifest in `repo` with its exact bytes, point `tags` at it, and record it as a
    /// referrer of its subject, all in one atomic write.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        record: &ManifestRecord,
        bytes: &[u8],
        tags: &[Tag],
    ) -> Result<PutManifestOutcome> {
        let _g = self.lock();
        let mut batch = WriteBatch::default();
        let mut changes = Vec::new();
        let dkey = digest.to_string();
        let mkey = key2(repo.as_str(), &dkey);
        let created = self.db.get_pinned_cf(self.cf(CF_MANIFESTS), &mkey)?.is_none();
        if created {
            // Checked again under the write lock: garbage collection deletes only blobs and
            // manifests nothing references, under the same lock, so either it ran first (and
            // this push fails cleanly) or the references below protect what it would delete.
            for b in record.blobs.iter().filter(|b| !record.absent.contains(b)) {
                if !self.repo_has_blob(repo, b)? {
                    return Ok(PutManifestOutcome { created: false, missing: Some(b.clone()) });
                }
            }
            for m in record.manifests.iter().filter(|m| !record.absent.contains(m)) {
                if !self.has_manifest(repo, m)? {
                    return Ok(PutManifestOutcome { created: false, missing: Some(m.clone()) });
                }
            }
            batch.put_cf(self.cf(CF_MANIFESTS), &mkey, codec::encode_manifest(record, bytes));
            self.bump_repo(&mut batch, repo, 1)?;
            self.add_refs(&mut batch, repo, record, 1)?;
            if let Some(subject) = &record.subject {
                let desc = Descriptor {
                    media_type: record.media_type.clone(),
                    digest: digest.clone(),
                    size: bytes.len() as u64,
                    artifact_type: record.artifact_type.clone(),
                    annotations: record.annotations.clone(),
                };
                let rkey = key2(&key2_str(repo.as_str(), &subject.to_string()), &dkey);
                batch.put_cf(self.cf(CF_REFERRERS), rkey, codec::encode(&desc));
            }
            changes.push(Change::ManifestPut {
                repo: repo.clone(),
                digest: digest.clone(),
                media_type: record.media_type.clone(),
                size: bytes.len() as u64,
                artifact_type: record.artifact_type.clone(),
                subject: record.subject.clone(),
                blobs: record.blobs.clone(),
                manifests: record.manifests.clone(),
            });
        }
        for tag in tags {
            let tkey = key2(repo.as_str(), tag.as_str());
            let prev = self.db.get_pinned_cf(self.cf(CF_TAGS), &tkey)?;
            if prev.as_deref() != Some(dkey.as_bytes()) {
                batch.put_cf(self.cf(CF_TAGS), &tkey, dkey.as_bytes());
                batch.put_cf(self.cf(CF_TAG_TIMES), &tkey, now_ms().to_be_bytes());
                changes.push(Change::TagSet { repo: repo.clone(), tag: tag.clone(), digest: digest.clone() });
            }
        }
        self.feed(&mut batch, changes);
        self.write(batch)?;
        Ok(PutManifestOutcome { created, missing: None })
    }

    /// A manifest's record and exact bytes.
    pub fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<(ManifestRecord, Vec<u8>)>> {
        match self.db.get_pinned_cf(self.cf(CF_MANIFESTS), key2(repo.as_str(), &digest.to_string()))? {
            Some(v) => codec::decode_manifest(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The size of a manifest's bytes in `repo`, without copying or decoding them (reference
    /// checks of an index look at many children).
    pub fn manifest_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        match self.db.get_pinned_cf(self.cf(CF_MANIFESTS), key2(repo.as_str(), &digest.to_string()))? {
            Some(v) => codec::manifest_bytes_len(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Whether a manifest exists in `repo`.
    pub fn has_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.cf(CF_MANIFESTS), key2(repo.as_str(), &digest.to_string()))?.is_some())
    }

    /// Resolve a tag.
    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        match self.db.get_pinned_cf(self.cf(CF_TAGS), key2(repo.as_str(), tag.as_str()))? {
            Some(v) => codec::parse_text(&v, CF_TAGS).map(Some),
            None => Ok(None),
        }
    }

    /// Delete a tag (the manifest stays). Returns false when the tag did not exist.
    pub fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let _g = self.lock();
        let tkey = key2(repo.as_str(), tag.as_str());
        if self.db.get_pinned_cf(self.cf(CF_TAGS), &tkey)?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_TAGS), &tkey);
        batch.delete_cf(self.cf(CF_TAG_TIMES), &tkey);
        self.feed(&mut batch, vec![Change::TagDeleted { repo: repo.clone(), tag: tag.clone() }]);
        self.write(batch)?;
        Ok(true)
    }

    /// Delete a manifest from `repo`, with every tag pointing at it and its referrer entry.
    /// Returns false when it did not exist.
    pub fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let _g = self.lock();
        let Some(v) = self.db.get_pinned_cf(self.cf(CF_MANIFESTS), key2(repo.as_str(), &digest.to_string()))? else {
            return Ok(false);
        };
        let (record, _) = codec::decode_manifest(&v)?;
        self.delete_manifest_locked(repo, digest, &record, Durability::Synced)?;
        Ok(true)
    }

    /// Delete a stored manifest with its tags, referrer entry and references. Caller holds
    /// the write lock and has read `record`.
    fn delete_manifest_locked(
        &self,
        repo: &RepoName,
        digest: &Digest,
        record: &ManifestRecord,
        durability: Durability,
    ) -> Result<()> {
        let dkey = digest.to_string();
        let mkey = key2(repo.as_str(), &dkey);
        let mut batch = WriteBatch::default();
        let mut changes = Vec::new();
        for (tag, d) in self.scan_tags(repo)? {
            if d == dkey {
                batch.delete_cf(self.cf(CF_TAGS), key2(repo.as_str(), &tag));
                batch.delete_cf(self.cf(CF_TAG_TIMES), key2(repo.as_str(), &tag));
                if let Ok(tag) = tag.parse() {
                    changes.push(Change::TagDeleted { repo: repo.clone(), tag });
                }
            }
        }
        if let Some(subject) = &record.subject {
            batch.delete_cf(self.cf(CF_REFERRERS), key2(&key2_str(repo.as_str(), &subject.to_string()), &dkey));
        }
        batch.delete_cf(self.cf(CF_MANIFESTS), &mkey);
        self.bump_repo(&mut batch, repo, -1)?;
        self.add_refs(&mut batch, repo, record, -1)?;
        changes.push(Change::ManifestDeleted { repo: repo.clone(), digest: digest.clone() });
        self.feed(&mut batch, changes);
        self.write_durable(batch, durability)
    }

    fn scan_tags(&self, repo: &RepoName) -> Result<Vec<(String, String)>> {
        let p = prefix(repo.as_str());
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_TAGS), IteratorMode::From(&p, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&p) {
                break;
            }
            out.push((String::from_utf8_lossy(&k[p.len()..]).into_owned(), String::from_utf8_lossy(&v).into_owned()));
        }
        Ok(out)
    }

    /// Tags of `repo` in lexical order, after `last`, at most `n`.
    pub fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Page> {
        self.page(CF_TAGS, &prefix(repo.as_str()), last, n, |_| true)
    }

    /// Repositories that hold content, in lexical order, after `last`, at most `n`.
    pub fn list_repos(&self, last: Option<&str>, n: usize) -> Result<Page> {
        self.page(CF_REPOS, b"", last, n, |_| true)
    }

    /// `list_repos` of the repositories `keep` accepts (the catalog of a caller who may pull
    /// only some): pages stay full.
    pub fn list_repos_where(&self, last: Option<&str>, n: usize, keep: impl Fn(&str) -> bool) -> Result<Page> {
        self.page(CF_REPOS, b"", last, n, keep)
    }

    /// Whether `repo` holds anything (a manifest or a blob link).
    pub fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.cf(CF_REPOS), repo.as_str())?.is_some())
    }

    fn page(
        &self,
        cf: &'static str,
        pfx: &[u8],
        last: Option<&str>,
        n: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Page> {
        let mut start = pfx.to_vec();
        if let Some(l) = last {
            start.extend_from_slice(l.as_bytes());
            // The smallest key strictly after `last`.
            start.push(0);
        }
        let mut items = Vec::new();
        let mut more = false;
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::From(&start, Direction::Forward)) {
            let (k, _) = item?;
            if !k.starts_with(pfx) {
                break;
            }
            let item = String::from_utf8_lossy(&k[pfx.len()..]);
            if !keep(&item) {
                continue;
            }
            if items.len() == n {
                more = true;
                break;
            }
            items.push(item.into_owned());
        }
        Ok(Page { items, more })
    }

    /// Every manifest of every repository (for GC, fsck and resync).
    pub fn all_manifests(&self) -> Result<Vec<(RepoName, Digest, ManifestRecord)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_MANIFESTS), IteratorMode::Start) {
            let (k, v) = item?;
            let (repo, digest) = codec::split_key(&k, CF_MANIFESTS)?;
            let (record, _) = codec::decode_manifest(&v)?;
            out.push((repo, digest, record));
        }
        Ok(out)
    }

    /// Referrers of `subject` in `repo`, in digest order.
    pub fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>> {
        let p = prefix(&key2_str(repo.as_str(), &subject.to_string()));
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_REFERRERS), IteratorMode::From(&p, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&p) {
                break;
            }
            out.push(codec::decode(&v, CF_REFERRERS)?);
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- feed

    /// Change-feed records with sequence numbers `>= from`, at most `limit`, in order.
    pub fn changes(&self, from: u64, limit: usize) -> Result<Vec<ChangeRecord>> {
        let start = from.to_be_bytes();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_FEED), IteratorMode::From(&start, Direction::Forward)) {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item?;
            out.push(codec::decode(&v, CF_FEED)?);
        }
        Ok(out)
    }

    /// The sequence number the next change will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    /// Record last-access times for blobs (batched by the caller; not synced).
    pub fn record_access(&self, accesses: &[(Digest, u64)]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (d, at) in accesses {
            batch.put_cf(self.cf(CF_ACCESS), d.to_string(), at.to_be_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Last recorded access of a blob (unix ms).
    pub fn last_access(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.db.get_pinned_cf(self.cf(CF_ACCESS), digest.to_string())?.and_then(|v| codec::u64_from(&v)))
    }

    /// Flush memtables and the WAL to disk (graceful shutdown).
    pub fn flush(&self) -> Result<()> {
        self.db.flush_wal(true)?;
        for cf in ALL_CFS {
            self.db.flush_cf(self.cf(cf))?;
        }
        Ok(())
    }
}

thread_local! {
    static REPLICA: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with every feed record it writes on this thread marked `replica` (see
/// [`ChangeRecord::replica`]): how the cluster's apply loop writes changes other nodes made.
pub fn as_replica<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            REPLICA.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(REPLICA.with(|r| r.replace(true)));
    f()
}

fn key2_str(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len() + 1);
    s.push_str(a);
    s.push('\0');
    s.push_str(b);
    s
}

#[cfg(test)]
mod tests;
