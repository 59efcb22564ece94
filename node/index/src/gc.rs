//! What garbage collection needs of the index: reference counts kept in the same batches as the
//! manifests that hold them, and deletions that re-check, under the writer lock, that nothing
//! references what they delete.
//!
//! The safety argument (docs/ARCHITECTURE.md, "Garbage collection"): a manifest put checks its
//! references exist under the writer lock and records them (`refs`) in the same batch; a GC
//! deletion checks the reference count is zero under the same lock. Whichever comes first wins:
//! either the blob is gone and the push fails cleanly (`MANIFEST_BLOB_UNKNOWN`), or it is
//! referenced and GC skips it. No acknowledged manifest ever loses a blob.

use std::collections::HashMap;

use berth_types::{Digest, RepoName, Tag};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::{
    codec, key2, prefix, BlobMeta, Change, Durability, Index, ManifestRecord, Result, CF_ACCESS, CF_BLOBS,
    CF_BLOB_REPOS, CF_MANIFESTS, CF_REFS, CF_REPO_BLOBS, CF_TAGS, CF_TAG_TIMES,
};

fn blob_ref_key(d: &Digest) -> Vec<u8> {
    key2("b", &d.to_string())
}

fn manifest_ref_key(repo: &RepoName, d: &Digest) -> Vec<u8> {
    key2("m", &format!("{}\0{}", repo.as_str(), d))
}

/// Why a conditional GC deletion did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Already gone.
    Gone,
    /// Something references it now.
    Referenced,
    /// A tag points at it.
    Tagged,
    /// Its subject is still stored (a referrer lives as long as its subject).
    SubjectPresent,
    /// Used or pushed after the cutoff.
    Recent,
}

impl Index {
    fn count(&self, key: &[u8]) -> Result<u64> {
        Ok(self.db.get_pinned_cf(self.cf(CF_REFS), key)?.and_then(|v| codec::u64_from(&v)).unwrap_or(0))
    }

    /// Add (`sign` 1) or remove (-1) the references of a manifest. Caller holds the write lock.
    pub(crate) fn add_refs(
        &self,
        batch: &mut WriteBatch,
        repo: &RepoName,
        rec: &ManifestRecord,
        sign: i64,
    ) -> Result<()> {
        // Aggregate first: one put per key (a batch does not see its own earlier puts).
        let mut deltas: HashMap<Vec<u8>, i64> = HashMap::new();
        for b in &rec.blobs {
            *deltas.entry(blob_ref_key(b)).or_default() += sign;
        }
        for m in &rec.manifests {
            *deltas.entry(manifest_ref_key(repo, m)).or_default() += sign;
        }
        for (k, d) in deltas {
            let next = (self.count(&k)? as i64 + d).max(0) as u64;
            if next == 0 {
                batch.delete_cf(self.cf(CF_REFS), k);
            } else {
                batch.put_cf(self.cf(CF_REFS), k, next.to_be_bytes());
            }
        }
        Ok(())
    }

    /// Compute `refs` and `blob_repos` from scratch (migration of an index written before
    /// they existed). Caller holds the write lock.
    pub(crate) fn migrate_refs(&self, batch: &mut WriteBatch) -> Result<()> {
        let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
        for (repo, _, rec) in self.all_manifests()? {
            for b in &rec.blobs {
                *counts.entry(blob_ref_key(b)).or_default() += 1;
            }
            for m in &rec.manifests {
                *counts.entry(manifest_ref_key(&repo, m)).or_default() += 1;
            }
        }
        for (k, n) in counts {
            batch.put_cf(self.cf(CF_REFS), k, n.to_be_bytes());
        }
        for (repo, d) in self.all_links()? {
            batch.put_cf(self.cf(CF_BLOB_REPOS), key2(&d.to_string(), repo.as_str()), []);
        }
        Ok(())
    }

    /// How many stored manifests (in any repository) reference a blob.
    pub fn blob_refs(&self, digest: &Digest) -> Result<u64> {
        self.count(&blob_ref_key(digest))
    }

    /// How many manifests of `repo` reference manifest `digest` (as an index child).
    pub fn manifest_refs(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.count(&manifest_ref_key(repo, digest))
    }

    /// Repositories linked to a blob.
    pub fn blob_repos(&self, digest: &Digest) -> Result<Vec<RepoName>> {
        let p = prefix(&digest.to_string());
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_BLOB_REPOS), IteratorMode::From(&p, Direction::Forward)) {
            let (k, _) = item?;
            if !k.starts_with(&p) {
                break;
            }
            out.push(codec::parse_text(&k[p.len()..], CF_BLOB_REPOS)?);
        }
        Ok(out)
    }

    /// When a blob was last committed, mounted or pulled (unix ms).
    pub fn blob_last_used(&self, digest: &Digest, meta: &BlobMeta) -> Result<u64> {
        Ok(self.last_access(digest)?.unwrap_or(0).max(meta.created_at_ms))
    }

    /// Remove a blob and every link to it. Caller holds the write lock.
    pub(crate) fn remove_blob_locked(&self, digest: &Digest, durability: Durability) -> Result<()> {
        let mut batch = WriteBatch::default();
        let mut changes = Vec::new();
        let dkey = digest.to_string();
        for repo in self.blob_repos(digest)? {
            batch.delete_cf(self.cf(CF_REPO_BLOBS), key2(repo.as_str(), &dkey));
            batch.delete_cf(self.cf(CF_BLOB_REPOS), key2(&dkey, repo.as_str()));
            self.bump_repo(&mut batch, &repo, -1)?;
            changes.push(Change::BlobUnlinked { repo, digest: digest.clone() });
        }
        if let Some(meta) = self.blob(digest)? {
            self.bump_stats(&mut batch, -1, -(meta.size as i64))?;
            self.leave_tier(&mut batch, digest, meta.size, meta.tier)?;
        }
        batch.delete_cf(self.cf(CF_BLOBS), &dkey);
        batch.delete_cf(self.cf(CF_ACCESS), &dkey);
        changes.push(Change::BlobRemoved { digest: digest.clone() });
        self.feed(&mut batch, changes);
        self.write_durable(batch, durability)
    }

    /// Garbage collection's blob deletion: remove the blob only if no manifest references it
    /// and it was last committed, mounted or pulled before `cutoff_ms`, all checked under the
    /// writer lock. Returns the removed blob's record (its tier says where its bytes were).
    /// With `Durability::Deferred`, call [`Index::sync_wal`] before deleting the blob's file.
    pub fn remove_blob_if_unused(
        &self,
        digest: &Digest,
        cutoff_ms: u64,
        durability: Durability,
    ) -> Result<std::result::Result<BlobMeta, Kept>> {
        let _g = self.lock();
        let meta = match self.blob_removable(digest, cutoff_ms)? {
            Ok(m) => m,
            Err(k) => return Ok(Err(k)),
        };
        self.remove_blob_locked(digest, durability)?;
        Ok(Ok(meta))
    }

    /// Whether GC may remove a blob (see [`Index::remove_blob_if_unused`]), without removing
    /// it: a cluster's GC checks here, then commits the removal through the change log.
    pub fn blob_removable(&self, digest: &Digest, cutoff_ms: u64) -> Result<std::result::Result<BlobMeta, Kept>> {
        let Some(meta) = self.blob(digest)? else { return Ok(Err(Kept::Gone)) };
        if self.blob_refs(digest)? > 0 {
            return Ok(Err(Kept::Referenced));
        }
        if self.blob_last_used(digest, &meta)? >= cutoff_ms {
            return Ok(Err(Kept::Recent));
        }
        Ok(Ok(meta))
    }

    /// Garbage collection's link deletion: remove `repo`'s link to `digest` only if no manifest
    /// of `repo` references it and the blob was last used before `cutoff_ms`, checked under the
    /// writer lock (a manifest push re-checks its links under the same lock). A repository left
    /// with no manifests and no links leaves the catalog.
    pub fn unlink_blob_if_unused(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff_ms: u64,
        durability: Durability,
    ) -> Result<std::result::Result<(), Kept>> {
        let _g = self.lock();
        if let Err(k) = self.link_removable(repo, digest, cutoff_ms)? {
            return Ok(Err(k));
        }
        let dkey = digest.to_string();
        let lkey = key2(repo.as_str(), &dkey);
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_REPO_BLOBS), &lkey);
        batch.delete_cf(self.cf(CF_BLOB_REPOS), key2(&dkey, repo.as_str()));
        self.bump_repo(&mut batch, repo, -1)?;
        self.feed(&mut batch, vec![Change::BlobUnlinked { repo: repo.clone(), digest: digest.clone() }]);
        self.write_durable(batch, durability)?;
        Ok(Ok(()))
    }

    /// Whether GC may remove `repo`'s link to a blob (see [`Index::unlink_blob_if_unused`]).
    pub fn link_removable(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff_ms: u64,
    ) -> Result<std::result::Result<(), Kept>> {
        let lkey = key2(repo.as_str(), &digest.to_string());
        if self.db.get_pinned_cf(self.cf(CF_REPO_BLOBS), &lkey)?.is_none() {
            return Ok(Err(Kept::Gone));
        }
        if let Some(meta) = self.blob(digest)? {
            if self.blob_last_used(digest, &meta)? >= cutoff_ms {
                return Ok(Err(Kept::Recent));
            }
        }
        let p = crate::prefix(repo.as_str());
        for item in self.db.iterator_cf(self.cf(CF_MANIFESTS), IteratorMode::From(&p, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(&p) {
                break;
            }
            let (record, _) = codec::decode_manifest(&v)?;
            if record.blobs.contains(digest) {
                return Ok(Err(Kept::Referenced));
            }
        }
        Ok(Ok(()))
    }

    /// Garbage collection's manifest deletion: delete only if no tag points at it, no index in
    /// the repository references it, its subject (if any) is gone, and it was pushed before
    /// `cutoff_ms`, all checked under the writer lock.
    pub fn delete_manifest_if_unused(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff_ms: u64,
        durability: Durability,
    ) -> Result<std::result::Result<(), Kept>> {
        let _g = self.lock();
        let record = match self.manifest_deletable(repo, digest, cutoff_ms)? {
            Ok(r) => r,
            Err(k) => return Ok(Err(k)),
        };
        self.delete_manifest_locked(repo, digest, &record, durability)?;
        Ok(Ok(()))
    }

    /// Whether GC may delete a manifest (see [`Index::delete_manifest_if_unused`]); its record
    /// when it may.
    pub fn manifest_deletable(
        &self,
        repo: &RepoName,
        digest: &Digest,
        cutoff_ms: u64,
    ) -> Result<std::result::Result<ManifestRecord, Kept>> {
        let dkey = digest.to_string();
        let Some(v) = self.db.get_pinned_cf(self.cf(CF_MANIFESTS), key2(repo.as_str(), &dkey))? else {
            return Ok(Err(Kept::Gone));
        };
        let (record, _) = codec::decode_manifest(&v)?;
        if self.scan_tags(repo)?.iter().any(|(_, d)| d == &dkey) {
            return Ok(Err(Kept::Tagged));
        }
        if self.manifest_refs(repo, digest)? > 0 {
            return Ok(Err(Kept::Referenced));
        }
        if let Some(s) = &record.subject {
            if self.has_manifest(repo, s)? {
                return Ok(Err(Kept::SubjectPresent));
            }
        }
        if record.pushed_at_ms >= cutoff_ms {
            return Ok(Err(Kept::Recent));
        }
        Ok(Ok(record))
    }

    /// Delete a tag only if it still points at `digest` (retention policies).
    pub fn delete_tag_if(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<bool> {
        let _g = self.lock();
        let tkey = key2(repo.as_str(), tag.as_str());
        match self.db.get_pinned_cf(self.cf(CF_TAGS), &tkey)? {
            Some(v) if v.as_ref() == digest.to_string().as_bytes() => {}
            _ => return Ok(false),
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_TAGS), &tkey);
        batch.delete_cf(self.cf(CF_TAG_TIMES), &tkey);
        self.feed(&mut batch, vec![Change::TagDeleted { repo: repo.clone(), tag: tag.clone() }]);
        self.write(batch)?;
        Ok(true)
    }

    /// A consistent copy of everything GC and the admin sidecar's resync need, read from one
    /// RocksDB snapshot, with the feed position it corresponds to.
    pub fn export(&self) -> Result<Export> {
        // Hold the writer lock while taking the snapshot so `next_seq` matches it exactly.
        let (snap, seq) = {
            let _g = self.lock();
            (self.db.snapshot(), self.next_sequence() - 1)
        };
        let mut ex = Export { seq, ..Default::default() };
        for item in snap.iterator_cf(self.cf(CF_BLOBS), IteratorMode::Start) {
            let (k, v) = item?;
            ex.blobs.push((codec::parse_text(&k, CF_BLOBS)?, codec::decode(&v, CF_BLOBS)?));
        }
        for item in snap.iterator_cf(self.cf(CF_MANIFESTS), IteratorMode::Start) {
            let (k, v) = item?;
            let (repo, digest) = codec::split_key(&k, CF_MANIFESTS)?;
            let (record, bytes) = codec::decode_manifest(&v)?;
            ex.manifests.push(ExportedManifest { repo, digest, size: bytes.len() as u64, record });
        }
        for item in snap.iterator_cf(self.cf(CF_TAGS), IteratorMode::Start) {
            let (k, v) = item?;
            let (repo, tag) = codec::split_key(&k, CF_TAGS)?;
            ex.tags.push((repo, tag, codec::parse_text(&v, CF_TAGS)?));
        }
        for item in snap.iterator_cf(self.cf(CF_REPO_BLOBS), IteratorMode::Start) {
            let (k, _) = item?;
            ex.links.push(codec::split_key(&k, CF_REPO_BLOBS)?);
        }
        for item in snap.iterator_cf(self.cf(CF_ACCESS), IteratorMode::Start) {
            let (k, v) = item?;
            if let (Ok(d), Some(t)) = (codec::parse_text::<Digest>(&k, CF_ACCESS), codec::u64_from(&v)) {
                ex.access.insert(d, t);
            }
        }
        for item in snap.iterator_cf(self.cf(CF_TAG_TIMES), IteratorMode::Start) {
            let (k, v) = item?;
            if let (Ok(key), Some(t)) = (codec::split_key::<RepoName, Tag>(&k, CF_TAG_TIMES), codec::u64_from(&v)) {
                ex.tag_times.insert(key, t);
            }
        }
        Ok(ex)
    }
}

/// A manifest in an [`Export`].
#[derive(Debug, Clone)]
pub struct ExportedManifest {
    /// Repository.
    pub repo: RepoName,
    /// Digest.
    pub digest: Digest,
    /// Size of its bytes.
    pub size: u64,
    /// Its record.
    pub record: ManifestRecord,
}

/// The whole index at one feed position.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// Last change-feed sequence included (0: none).
    pub seq: u64,
    /// Blobs.
    pub blobs: Vec<(Digest, BlobMeta)>,
    /// Manifests.
    pub manifests: Vec<ExportedManifest>,
    /// Tags.
    pub tags: Vec<(RepoName, Tag, Digest)>,
    /// Repository links.
    pub links: Vec<(RepoName, Digest)>,
    /// Last access per blob (unix ms).
    pub access: HashMap<Digest, u64>,
    /// When each tag was last set (unix ms); absent for tags set before this was recorded.
    pub tag_times: HashMap<(RepoName, Tag), u64>,
}
