//! Upload sessions: streaming chunks to a per-upload file, hashing as bytes arrive, verifying
//! and publishing on completion.
//!
//! The session record (repository, offset, algorithm, last activity) lives in the index, so an
//! upload resumes after a restart. The running hash lives in memory as a cache: when it is
//! missing (restart, or the session's last chunk was handled on another core's failed request)
//! it is rebuilt by hashing the file's first `offset` bytes.

use std::collections::HashMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use berth_index::{Index, UploadSession};
use berth_types::{Algorithm, Digest, ErrorKind, Hasher, OciError, RepoName};

use super::BlobStore;
use crate::http::{Body, BodyError};

/// Size of the buffers bodies are read into and files are written from.
const IO_BUF: usize = 256 * 1024;
/// Free space is checked again after this many bytes of one request body.
const SPACE_CHECK_BYTES: u64 = 16 << 20;

/// An upload id: a UUID, only constructible by parsing or generating one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    /// A new random id; in a cluster its first 4 bytes are the owning node's tag.
    fn new(tag: Option<u32>) -> UploadId {
        let mut b = *uuid::Uuid::new_v4().as_bytes();
        if let Some(tag) = tag {
            b[..4].copy_from_slice(&tag.to_be_bytes());
        }
        UploadId(uuid::Uuid::from_bytes(b))
    }

    /// The owning node's tag (meaningful in a cluster only).
    pub fn tag(&self) -> u32 {
        let b = self.0.as_bytes();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl FromStr for UploadId {
    type Err = OciError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s)
            .map(UploadId)
            .map_err(|_| OciError::new(ErrorKind::BlobUploadUnknown).msg("malformed upload id"))
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

enum Slot {
    /// A request is reading into this upload right now.
    Busy,
    /// Running hash of the first `offset` bytes (boxed: a SHA-512 state is large, and the
    /// map holds one slot per open upload).
    Idle { offset: u64, hasher: Box<Hasher> },
}

/// Upload sessions of all cores.
pub struct Uploads {
    index: Arc<Index>,
    blobs: Arc<BlobStore>,
    slots: Mutex<HashMap<UploadId, Slot>>,
    expire_after_ms: u64,
    max_per_repo: usize,
    /// Most sessions in all (0: no cap), and per owner (0: no cap).
    caps: (usize, usize),
    max_blob_bytes: u64,
    /// Cluster mode: blobs are committed through the change log.
    cluster: Option<Arc<crate::cluster::ClusterNode>>,
    /// The free-space floor uploads keep.
    space: Arc<super::space::Space>,
}

/// Exclusive use of one upload session while a request reads into it. Dropping it without
/// [`Lease::release`] forgets the running hash (it will be rebuilt from the file).
struct Lease<'a> {
    uploads: &'a Uploads,
    id: UploadId,
    state: Option<(u64, Hasher)>,
}

impl Lease<'_> {
    fn release(mut self, offset: u64, hasher: Hasher) {
        self.state = Some((offset, hasher));
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut slots = self.uploads.slots.lock().unwrap_or_else(|p| p.into_inner());
        match self.state.take() {
            Some((offset, hasher)) => {
                slots.insert(self.id, Slot::Idle { offset, hasher: Box::new(hasher) });
            }
            None => {
                slots.remove(&self.id);
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Map an I/O error to the registry error a client sees.
pub(crate) fn io_error(e: io::Error, what: &str) -> OciError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        return OciError::new(ErrorKind::InsufficientStorage);
    }
    tracing::error!(error = %e, "{what}");
    OciError::new(ErrorKind::Internal).msg(format!("{what}: storage error"))
}

pub(crate) fn index_error(e: berth_index::IndexError) -> OciError {
    let text = e.to_string();
    if text.contains("No space left") || text.contains("ENOSPC") {
        tracing::error!(error = %e, "index: out of disk space");
        return OciError::new(ErrorKind::InsufficientStorage);
    }
    tracing::error!(error = %e, "index failure");
    OciError::new(ErrorKind::Internal).msg("index failure")
}

fn body_error(e: BodyError) -> OciError {
    match e {
        BodyError::Io(e) => OciError::new(ErrorKind::BlobUploadInvalid).msg(format!("body read failed: {e}")),
        BodyError::Malformed(m) => OciError::new(ErrorKind::BadRequest).msg(m),
        BodyError::TooLarge(n) => OciError::new(ErrorKind::TooLarge).msg(format!("body larger than {n} bytes")),
    }
}

/// Outcome of streaming a body into an upload file.
struct Appended {
    offset: u64,
    hasher: Hasher,
    error: Option<OciError>,
}

impl Uploads {
    /// Create the session registry.
    pub fn new(
        index: Arc<Index>,
        blobs: Arc<BlobStore>,
        cfg: &crate::config::UploadConfig,
        max_blob_bytes: u64,
        cluster: Option<Arc<crate::cluster::ClusterNode>>,
        space: Arc<super::space::Space>,
    ) -> Uploads {
        Uploads {
            space,
            index,
            blobs,
            slots: Mutex::new(HashMap::new()),
            expire_after_ms: cfg.expire_after_secs.saturating_mul(1000),
            max_per_repo: cfg.max_sessions_per_repo,
            caps: (cfg.max_sessions, cfg.max_sessions_per_client),
            max_blob_bytes,
            cluster,
        }
    }

    fn new_id(&self) -> UploadId {
        UploadId::new(self.cluster.as_ref().map(|c| c.cluster.tag()))
    }

    fn path(&self, id: UploadId) -> std::path::PathBuf {
        self.blobs.uploads_dir().join(id.to_string())
    }

    fn lease(&self, id: UploadId) -> Result<Lease<'_>, OciError> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let state = match slots.insert(id, Slot::Busy) {
            Some(Slot::Busy) => {
                slots.insert(id, Slot::Busy);
                return Err(OciError::new(ErrorKind::BlobUploadInvalid)
                    .msg("another request is writing to this upload; retry after it completes"));
            }
            Some(Slot::Idle { offset, hasher }) => Some((offset, *hasher)),
            None => None,
        };
        Ok(Lease { uploads: self, id, state })
    }

    /// Start a session in `repo` for `owner` (a user name, or the client address).
    pub fn start(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
        owner: &str,
    ) -> Result<(UploadId, UploadSession), OciError> {
        let too_many = |m: &str| OciError::new(ErrorKind::TooManyRequests).msg(m.to_owned());
        if self.max_per_repo > 0 {
            let open = self.index.count_uploads(repo).map_err(index_error)?;
            if open >= self.max_per_repo {
                return Err(too_many("too many open uploads in this repository"));
            }
        }
        if self.caps.0 > 0 || self.caps.1 > 0 {
            let all = self.index.uploads().map_err(index_error)?;
            if self.caps.0 > 0 && all.len() >= self.caps.0 {
                return Err(too_many("too many open uploads in this registry; finish or cancel some, or retry later"));
            }
            let mine = all.iter().filter(|(_, s)| s.owner.as_deref() == Some(owner)).count();
            if self.caps.1 > 0 && mine >= self.caps.1 {
                return Err(too_many("you have too many open uploads; finish or cancel some first"));
            }
        }
        let id = self.new_id();
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(id))
            .map_err(|e| io_error(e, "create upload"))?;
        let now = now_ms();
        let session = UploadSession {
            repo: repo.clone(),
            offset: 0,
            algorithm,
            created_at_ms: now,
            updated_at_ms: now,
            owner: Some(owner.to_owned()),
            verified: None,
        };
        self.index.put_upload(repo, &id.to_string(), &session).map_err(index_error)?;
        Ok((id, session))
    }

    /// The live session `id` of `repo`, or `BLOB_UPLOAD_UNKNOWN`.
    pub fn session(&self, repo: &RepoName, id: UploadId) -> Result<UploadSession, OciError> {
        match self.index.upload(repo, &id.to_string()).map_err(index_error)? {
            Some(s) if &s.repo == repo && now_ms().saturating_sub(s.updated_at_ms) <= self.expire_after_ms => Ok(s),
            _ => Err(OciError::new(ErrorKind::BlobUploadUnknown)),
        }
    }

    /// Rebuild the running hash of the first `offset` bytes of the upload file.
    async fn rehash(&self, id: UploadId, offset: u64, algorithm: Algorithm) -> Result<Hasher, OciError> {
        let file = monoio::fs::File::open(self.path(id)).await.map_err(|e| io_error(e, "open upload"))?;
        let mut hasher = algorithm.hasher();
        let mut pos = 0u64;
        let mut buf = Vec::with_capacity(IO_BUF);
        while pos < offset {
            let want = (offset - pos).min(IO_BUF as u64) as usize;
            buf.clear();
            let (r, b) = file.read_at(buf, pos).await;
            buf = b;
            let n = r.map_err(|e| io_error(e, "read upload"))?;
            if n == 0 {
                return Err(
                    OciError::new(ErrorKind::BlobUploadInvalid).msg("upload data is shorter than its recorded offset")
                );
            }
            let n = n.min(want);
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(hasher)
    }

    async fn hasher_at(&self, lease: &mut Lease<'_>, s: &UploadSession) -> Result<Hasher, OciError> {
        match lease.state.take() {
            Some((off, h)) if off == s.offset && h.algorithm() == s.algorithm => Ok(h),
            _ => self.rehash(lease.id, s.offset, s.algorithm).await,
        }
    }

    /// Stream `body` into the upload file at `offset`.
    async fn append_body(&self, id: UploadId, mut offset: u64, mut hasher: Hasher, body: &mut Body<'_>) -> Appended {
        let file = match OpenOptions::new().write(true).open(self.path(id)) {
            Ok(f) => f,
            Err(e) => return Appended { offset, hasher, error: Some(io_error(e, "open upload")) },
        };
        let file = match monoio::fs::File::from_std(file) {
            Ok(f) => f,
            Err(e) => return Appended { offset, hasher, error: Some(io_error(e, "open upload")) },
        };
        let too_large = || {
            OciError::new(ErrorKind::TooLarge).msg(format!("blobs are limited to {} bytes here", self.max_blob_bytes))
        };
        if self.max_blob_bytes > 0 && body.declared_len().is_some_and(|n| offset + n > self.max_blob_bytes) {
            return Appended { offset, hasher, error: Some(too_large()) };
        }
        // Keep the floor free for the index: checked up front (with the announced length) and
        // again every `SPACE_CHECK_BYTES` written.
        if let Err(e) = self.space.check(body.declared_len().unwrap_or(0)) {
            return Appended { offset, hasher, error: Some(e) };
        }
        let mut since_check = 0u64;
        let mut buf = Vec::with_capacity(IO_BUF);
        loop {
            // Whole buffers, however the client framed its chunks (one write per 256 KiB).
            let (r, b) = body.read_full(buf).await;
            buf = b;
            // On a broken body, what arrived before the break is kept (resumable) as well.
            let n = buf.len();
            let read_error = r.err().map(body_error);
            if n == 0 {
                return Appended { offset, hasher, error: read_error };
            }
            if self.max_blob_bytes > 0 && offset + n as u64 > self.max_blob_bytes {
                return Appended { offset, hasher, error: Some(too_large()) };
            }
            since_check += n as u64;
            if since_check >= SPACE_CHECK_BYTES {
                since_check = 0;
                if let Err(e) = self.space.check(0) {
                    return Appended { offset, hasher, error: Some(e) };
                }
            }
            let (w, b) = file.write_all_at(buf, offset).await;
            buf = b;
            if let Err(e) = w {
                return Appended { offset, hasher, error: Some(io_error(e, "write upload")) };
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
            if read_error.is_some() {
                return Appended { offset, hasher, error: read_error };
            }
        }
    }

    /// Append a chunk (PATCH). `start` is the chunk's first offset from `Content-Range`, which
    /// must equal the session's offset. Returns the new offset.
    pub async fn append(
        &self,
        repo: &RepoName,
        id: UploadId,
        start: Option<u64>,
        body: &mut Body<'_>,
    ) -> Result<u64, OciError> {
        let mut lease = self.lease(id)?;
        let mut s = self.session(repo, id)?;
        if !self.path(id).exists() {
            // Its data is gone (see `recover_published`); the client must start over.
            self.discard(repo, id);
            lease.forget();
            return Err(
                OciError::new(ErrorKind::BlobUploadUnknown).msg("the upload's data is gone; start a new upload")
            );
        }
        if let Some(start) = start {
            if start != s.offset {
                lease.release_unchanged();
                return Err(range_error(s.offset));
            }
        }
        let hasher = self.hasher_at(&mut lease, &s).await?;
        let out = self.append_body(id, s.offset, hasher, body).await;
        s.offset = out.offset;
        s.updated_at_ms = now_ms();
        // Record progress even when the body broke off: what arrived is kept and resumable.
        self.index.put_upload(repo, &id.to_string(), &s).map_err(index_error)?;
        lease.release(out.offset, out.hasher);
        match out.error {
            Some(e) => Err(e),
            None => Ok(out.offset),
        }
    }

    /// Complete an upload (PUT ?digest=), with an optional final chunk in `body`. On success
    /// the blob is verified, durable and linked into `repo`; on a digest mismatch the upload is
    /// discarded.
    pub async fn complete(
        &self,
        repo: &RepoName,
        id: UploadId,
        digest: &Digest,
        body: &mut Body<'_>,
    ) -> Result<u64, OciError> {
        let mut lease = self.lease(id)?;
        let mut s = self.session(repo, id)?;
        if !self.path(id).exists() {
            let r = self.recover_published(repo, id, &s, digest).await;
            lease.forget();
            return r;
        }
        let mut hasher = self.hasher_at(&mut lease, &s).await?;
        if body.declared_len() != Some(0) {
            let out = self.append_body(id, s.offset, hasher, body).await;
            s.offset = out.offset;
            s.updated_at_ms = now_ms();
            if let Some(e) = out.error {
                self.index.put_upload(repo, &id.to_string(), &s).map_err(index_error)?;
                lease.release(out.offset, out.hasher);
                return Err(e);
            }
            hasher = out.hasher;
        }
        let computed = if hasher.algorithm() == digest.algorithm() {
            hasher.finish()
        } else {
            self.rehash(id, s.offset, digest.algorithm()).await?.finish()
        };
        if &computed != digest {
            self.discard(repo, id);
            lease.forget();
            return Err(OciError::new(ErrorKind::DigestInvalid)
                .msg(format!("content digest is {computed}, not {digest}; the upload was discarded")));
        }
        // The verified digest goes into the session before the file moves or goes (unsynced:
        // the commit's synced write carries it; a crash before that loses an unacknowledged
        // upload, never lets it finish under another digest).
        s.verified = Some(digest.clone());
        s.updated_at_ms = now_ms();
        self.index.put_upload(repo, &id.to_string(), &s).map_err(index_error)?;
        self.publish(repo, id, digest, s.offset).await?;
        lease.forget();
        Ok(s.offset)
    }

    /// A session whose data file is gone: a crash between moving the verified file into place
    /// and committing the index leaves exactly that (so does a commit that failed after the
    /// file moved, in a cluster). Only the digest this session's own bytes were verified to have
    /// (`verified`, recorded before the file moved) may be finished, and only if the published
    /// file is there and hashes to it; otherwise the data is lost and the session is dropped.
    async fn recover_published(
        &self,
        repo: &RepoName,
        id: UploadId,
        s: &UploadSession,
        digest: &Digest,
    ) -> Result<u64, OciError> {
        let sid = id.to_string();
        if s.verified.as_ref() != Some(digest) {
            // Never verified (its data is simply gone), or verified as something else: the
            // client's digest proves nothing about these bytes.
            self.discard(repo, id);
            return Err(match &s.verified {
                Some(_) => OciError::new(ErrorKind::DigestInvalid)
                    .msg("this upload was verified under another digest; the upload was discarded"),
                None => {
                    OciError::new(ErrorKind::BlobUploadUnknown).msg("the upload's data is gone; start a new upload")
                }
            });
        }
        if let Some(cn) = &self.cluster {
            let path = self.blobs.path(digest);
            let _committing = cn.cluster.committing(digest);
            let intact = std::fs::metadata(&path).is_ok_and(|m| m.len() == s.offset)
                && hash_file(&path, digest.algorithm()).ok().as_ref() == Some(digest);
            if !intact {
                self.discard(repo, id);
                return Err(
                    OciError::new(ErrorKind::BlobUploadUnknown).msg("the upload's data is gone; start a new upload")
                );
            }
            cn.commit_blob(&self.index, repo, digest, s.offset).await?;
            self.index.delete_upload(repo, &sid).map_err(index_error)?;
            super::access::record_now(&self.index, digest);
            return Ok(s.offset);
        }
        let _g = self.blobs.lock(digest);
        if self.index.blob(digest).map_err(index_error)?.is_some() {
            self.index.commit_blob(repo, digest, s.offset, Some(&sid)).map_err(index_error)?;
            super::access::record_now(&self.index, digest);
            return Ok(s.offset);
        }
        let path = self.blobs.path(digest);
        let intact = std::fs::metadata(&path).is_ok_and(|m| m.len() == s.offset)
            && hash_file(&path, digest.algorithm()).ok().as_ref() == Some(digest);
        if intact {
            tracing::info!(upload = %id, %digest, "finishing an upload whose commit was interrupted");
            self.index.commit_blob(repo, digest, s.offset, Some(&sid)).map_err(index_error)?;
            super::access::record_now(&self.index, digest);
            return Ok(s.offset);
        }
        self.discard(repo, id);
        Err(OciError::new(ErrorKind::BlobUploadUnknown).msg("the upload's data is gone; start a new upload"))
    }

    /// Make a verified upload file durable, move it into place, and commit it to the index.
    async fn publish(&self, repo: &RepoName, id: UploadId, digest: &Digest, size: u64) -> Result<(), OciError> {
        if let Some(cn) = &self.cluster {
            return self.publish_clustered(cn, repo, id, digest, size).await;
        }
        let path = self.path(id);
        let seen = self.index.blob(digest).map_err(index_error)?;
        // A verified push of a digest already stored repairs a bad copy: a local file that is
        // gone, truncated or corrupt (checked off the serving core), or a copy only in S3 (which
        // may be lost or corrupt: ours is kept and uploaded again).
        let mut repair = false;
        if let Some(meta) = &seen {
            repair = !meta.tier.is_local() || {
                let stored = self.blobs.path(digest);
                let d = digest.clone();
                let ok = crate::offload::run(move || {
                    std::fs::metadata(&stored).is_ok_and(|m| m.len() == size)
                        && hash_file(&stored, d.algorithm()).ok().as_ref() == Some(&d)
                })
                .await;
                ok == Some(false)
            };
        }
        let mut synced = false;
        if seen.is_none() || repair {
            let f = OpenOptions::new().write(true).open(&path).map_err(|e| io_error(e, "open upload"))?;
            // Drop anything past the verified length (left by an earlier broken chunk).
            f.set_len(size).map_err(|e| io_error(e, "truncate upload"))?;
            let f = monoio::fs::File::from_std(f).map_err(|e| io_error(e, "open upload"))?;
            f.sync_all().await.map_err(|e| io_error(e, "sync upload"))?;
            drop(f);
            synced = true;
        }
        // From here to the commit, no await: the stripe lock keeps GC from removing this
        // digest (index entry or file) between our check and our commit.
        let _g = self.blobs.lock(digest);
        match self.index.blob(digest).map_err(index_error)? {
            Some(meta) if repair => {
                tracing::warn!(%digest, tier = ?meta.tier, "the stored copy is missing or fails its digest: replaced by a verified push");
                // Removal first: open-file caches holding the bad copy drop it.
                let _ = self.blobs.remove(digest);
                self.blobs.publish(&path, digest).map_err(|e| io_error(e, "publish blob"))?;
                if meta.tier != berth_index::TierState::Local {
                    // Local again, and queued: the uploader puts the verified bytes to S3.
                    self.index.set_tier(digest, meta.tier, berth_index::TierState::Local).map_err(index_error)?;
                }
            }
            Some(_) => {
                let _ = std::fs::remove_file(&path);
            }
            None => {
                if !synced {
                    // It existed a moment ago and GC removed it since: publish ours after all.
                    let f = OpenOptions::new().write(true).open(&path).map_err(|e| io_error(e, "open upload"))?;
                    f.set_len(size).map_err(|e| io_error(e, "truncate upload"))?;
                    f.sync_all().map_err(|e| io_error(e, "sync upload"))?;
                }
                self.blobs.publish(&path, digest).map_err(|e| io_error(e, "publish blob"))?;
            }
        }
        self.index.commit_blob(repo, digest, size, Some(&id.to_string())).map_err(index_error)?;
        super::access::record_now(&self.index, digest);
        Ok(())
    }

    /// `publish` in a cluster: the file goes into place (kept from a concurrent GC removal
    /// by `committing`), then the commit goes through the change log (after S3 has the bytes,
    /// with `durability = "s3"`), which also records it in this node's index.
    async fn publish_clustered(
        &self,
        cn: &crate::cluster::ClusterNode,
        repo: &RepoName,
        id: UploadId,
        digest: &Digest,
        size: u64,
    ) -> Result<(), OciError> {
        let path = self.path(id);
        let _committing = cn.cluster.committing(digest);
        let here = std::fs::metadata(self.blobs.path(digest)).is_ok_and(|m| m.len() == size);
        if here {
            let _ = std::fs::remove_file(&path);
        } else {
            let f = OpenOptions::new().write(true).open(&path).map_err(|e| io_error(e, "open upload"))?;
            f.set_len(size).map_err(|e| io_error(e, "truncate upload"))?;
            let f = monoio::fs::File::from_std(f).map_err(|e| io_error(e, "open upload"))?;
            f.sync_all().await.map_err(|e| io_error(e, "sync upload"))?;
            drop(f);
            let _g = self.blobs.lock(digest);
            self.blobs.publish(&path, digest).map_err(|e| io_error(e, "publish blob"))?;
        }
        cn.commit_blob(&self.index, repo, digest, size).await?;
        let sid = id.to_string();
        if self.index.upload(repo, &sid).map_err(index_error)?.is_some() {
            self.index.delete_upload(repo, &sid).map_err(index_error)?;
        }
        super::access::record_now(&self.index, digest);
        Ok(())
    }

    /// A whole blob in one request (POST ?digest=): no session is recorded; a crash leaves only
    /// a temp file that startup removes.
    pub async fn monolithic(&self, repo: &RepoName, digest: &Digest, body: &mut Body<'_>) -> Result<u64, OciError> {
        let id = self.new_id();
        let path = self.path(id);
        OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| io_error(e, "create upload"))?;
        let out = self.append_body(id, 0, digest.algorithm().hasher(), body).await;
        if let Some(e) = out.error {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let computed = out.hasher.finish();
        if &computed != digest {
            let _ = std::fs::remove_file(&path);
            return Err(
                OciError::new(ErrorKind::DigestInvalid).msg(format!("content digest is {computed}, not {digest}"))
            );
        }
        let r = self.publish(repo, id, digest, out.offset).await;
        if r.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        r.map(|_| out.offset)
    }

    /// Cancel a session (DELETE) and remove its data.
    pub fn cancel(&self, repo: &RepoName, id: UploadId) -> Result<(), OciError> {
        let lease = self.lease(id)?;
        self.session(repo, id)?;
        self.discard(repo, id);
        lease.forget();
        Ok(())
    }

    fn discard(&self, repo: &RepoName, id: UploadId) {
        let _ = std::fs::remove_file(self.path(id));
        if let Err(e) = self.index.delete_upload(repo, &id.to_string()) {
            tracing::error!(error = %e, upload = %id, "could not delete upload session");
        }
    }

    /// Remove sessions idle past the expiry time, and upload files with no session (left by a
    /// crash during a monolithic upload). Returns how many were removed.
    pub fn expire(&self) -> usize {
        let now = now_ms();
        let mut removed = 0;
        let sessions = match self.index.uploads() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "upload expiry: cannot list sessions");
                return 0;
            }
        };
        let mut live = std::collections::HashSet::new();
        for (id, s) in sessions {
            let Ok(uid) = id.parse::<UploadId>() else {
                continue;
            };
            if now.saturating_sub(s.updated_at_ms) > self.expire_after_ms {
                if let Ok(lease) = self.lease(uid) {
                    self.discard(&s.repo, uid);
                    lease.forget();
                    removed += 1;
                    tracing::info!(upload = %uid, repo = %s.repo, bytes = s.offset, "upload expired");
                    continue;
                }
            }
            live.insert(id);
        }
        if let Ok(dir) = std::fs::read_dir(self.blobs.uploads_dir()) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let busy = name
                    .parse::<UploadId>()
                    .ok()
                    .is_some_and(|u| self.slots.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&u));
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_millis() as u64 > self.expire_after_ms);
                if !live.contains(&name) && !busy && old {
                    let _ = std::fs::remove_file(entry.path());
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Number of open sessions.
    pub fn open_sessions(&self) -> usize {
        self.index.uploads().map(|u| u.len()).unwrap_or(0)
    }
}

impl Lease<'_> {
    /// Keep whatever hash state was there before this lease.
    fn release_unchanged(&mut self) {}
    /// End the lease and drop the session's hash state (the session is gone).
    fn forget(mut self) {
        self.state = None;
    }
}

/// Hash a whole file (recovery and fsck; uploads hash as bytes arrive).
pub(crate) fn hash_file(path: &std::path::Path, algorithm: Algorithm) -> io::Result<Digest> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = algorithm.hasher();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// The 416 answer for a chunk that does not start at the session's offset.
pub(crate) fn range_error(offset: u64) -> OciError {
    OciError::new(ErrorKind::RangeInvalid)
        .msg(format!("chunk must start at offset {offset}"))
        .detail(serde_json::json!({ "offset": offset }))
}
