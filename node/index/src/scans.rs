//! Vulnerability scan records (`scans` family: manifest digest → JSON `ScanRecord`), written by
//! the admin sidecar through the internal API and read by the node's pull policy, and the
//! scan-request feed record a client's `POST …/scan` leaves for the sidecar.

use berth_internal_api::scan::ScanRecord;
use berth_types::{Digest, RepoName, Tag};
use rocksdb::{IteratorMode, WriteBatch};

use crate::{codec, key2, Change, Index, Result, CF_SCANS, CF_TAGS, CF_TAG_TIMES};

impl Index {
    /// Store the scan record of a manifest digest (replacing an older one).
    pub fn put_scan(&self, digest: &Digest, record: &ScanRecord) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_SCANS), digest.to_string(), codec::encode(record));
        self.write(batch)
    }

    /// The scan record of a manifest digest.
    pub fn scan(&self, digest: &Digest) -> Result<Option<ScanRecord>> {
        match self.db.get_pinned_cf(self.cf(CF_SCANS), digest.to_string())? {
            Some(v) => codec::decode(&v, CF_SCANS).map(Some),
            None => Ok(None),
        }
    }

    /// Every scan record (for loading the policy's verdicts at start).
    pub fn all_scans(&self) -> Result<Vec<(Digest, ScanRecord)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SCANS), IteratorMode::Start) {
            let (k, v) = item?;
            out.push((codec::parse_text(&k, CF_SCANS)?, codec::decode(&v, CF_SCANS)?));
        }
        Ok(out)
    }

    /// Record a client's scan request in the change feed (nothing else changes).
    pub fn request_scan(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let _g = self.lock();
        let mut batch = WriteBatch::default();
        self.feed(&mut batch, vec![Change::ScanRequested { repo: repo.clone(), digest: digest.clone() }]);
        self.write(batch)
    }

    /// Tags of `repo` with their digests and when they were set (unix ms; 0 when unknown).
    pub fn tags_with_times(&self, repo: &RepoName) -> Result<Vec<(Tag, Digest, u64)>> {
        let mut out = Vec::new();
        for (tag, digest) in self.scan_tags(repo)? {
            let at = self
                .db
                .get_pinned_cf(self.cf(CF_TAG_TIMES), key2(repo.as_str(), &tag))?
                .and_then(|v| codec::u64_from(&v))
                .unwrap_or(0);
            out.push((codec::parse_text(tag.as_bytes(), CF_TAGS)?, codec::parse_text(digest.as_bytes(), CF_TAGS)?, at));
        }
        Ok(out)
    }
}
