//! The S3 side: a thin, typed wrapper over `aws-sdk-s3` with the operations tiering needs.
//! Everything here runs on the tier's own tokio runtime.
//!
//! Uploads stream from the blob file: one `PutObject` below the multipart threshold, multipart
//! above it with `part_concurrency` parts in flight; every body is read from the file as it is
//! sent, so memory does not depend on blob or part size. Every object is verified: S3 checks the SHA-256 we send with
//! each request (for sha256 blobs the digest itself is the checksum), and a `HeadObject`
//! afterwards checks the stored size.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use base64::Engine;
use berth_types::{Algorithm, Digest};
use sha2::{Digest as _, Sha256};

use crate::{S3Config, TierError};

/// One object of a listing.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification (unix ms).
    pub modified_ms: u64,
}

/// A GET in progress: the object's length and its body.
pub struct Download {
    /// Bytes the body will carry.
    pub len: u64,
    /// The body.
    pub body: ByteStream,
}

/// The bucket.
#[derive(Clone)]
pub struct Remote {
    client: Client,
    bucket: String,
    cfg: Arc<S3Config>,
    /// A directory of this node's multipart uploads in flight (one file each: key, upload
    /// id), so a restart aborts its own crashed uploads and nobody else's.
    journal: std::sync::OnceLock<std::path::PathBuf>,
}

/// The journal entry of an upload id.
fn journal_name(upload_id: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(upload_id.as_bytes())[..16])
}

fn s3_err<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    e: SdkError<E, HttpResponse>,
) -> TierError {
    let status = e.raw_response().map(|r| r.status().as_u16());
    if e.code() == Some("NoSuchBucket") {
        return TierError::NoSuchBucket;
    }
    if status == Some(404) || matches!(e.code(), Some("NoSuchKey" | "NotFound")) {
        return TierError::NotFound;
    }
    let reason = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => {
            let mut s = DisplayErrorContext(&e).to_string();
            if s.len() > 300 {
                let mut cut = 300;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                s.push('…');
            }
            s
        }
    };
    TierError::S3 {
        op,
        reason: match status {
            Some(code) => format!("HTTP {code}: {reason}"),
            None => reason,
        },
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Remote {
    /// Build the client (credentials from the config, else the AWS default chain).
    pub async fn connect(cfg: Arc<S3Config>) -> Remote {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(cfg.region.clone()));
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                cfg.session_token.clone(),
                None,
                "berth-config",
            ));
        }
        if let Some(e) = &cfg.endpoint {
            loader = loader.endpoint_url(e);
        }
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .read_timeout(Duration::from_secs(60))
            .build();
        let shared = loader.timeout_config(timeouts).load().await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            // We send our own SHA-256 checksums; no extra CRC pass over every byte.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // A slow client of a read-through legitimately pauses the S3 stream.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .build();
        Remote { client: Client::from_conf(conf), bucket: cfg.bucket.clone(), cfg, journal: Default::default() }
    }

    /// Keep the journal of this node's multipart uploads in `dir` (created if needed).
    pub fn set_journal(&self, dir: std::path::PathBuf) {
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = self.journal.set(dir);
        }
    }

    /// Upload the file at `path` (exactly `size` bytes, content `digest`) to `key`, verified.
    pub async fn put_file(&self, key: &str, path: &Path, size: u64, digest: &Digest) -> Result<(), TierError> {
        if size >= self.cfg.multipart_threshold {
            self.put_multipart(key, path, size).await?;
        } else {
            let body = ByteStream::read_from()
                .path(path)
                .length(aws_smithy_types::byte_stream::Length::Exact(size))
                .build()
                .await
                .map_err(|e| TierError::Io(std::io::Error::other(e.to_string())))?;
            let mut req = self.client.put_object().bucket(&self.bucket).key(key).body(body).content_length(size as i64);
            if digest.algorithm() == Algorithm::Sha256 {
                let raw = hex::decode(digest.hex()).unwrap_or_default();
                req = req.checksum_sha256(b64(&raw));
            }
            req.send().await.map_err(|e| s3_err("put_object", e))?;
        }
        match self.head(key).await? {
            Some(n) if n == size => Ok(()),
            Some(n) => Err(TierError::Verify(format!("{key}: S3 holds {n} bytes, expected {size}"))),
            None => Err(TierError::Verify(format!("{key}: missing right after upload"))),
        }
    }

    async fn put_multipart(&self, key: &str, path: &Path, size: u64) -> Result<(), TierError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(|e| s3_err("create_multipart_upload", e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let entry = self.journal.get().map(|dir| dir.join(journal_name(&upload_id)));
        if let Some(e) = &entry {
            if let Err(err) = std::fs::write(e, format!("{key}\n{upload_id}\n")) {
                tracing::warn!(error = %err, "cannot journal a multipart upload (a crash would leave it for a day)");
            }
        }
        let result = self.put_parts_and_complete(key, &upload_id, path, size).await;
        if let Some(e) = entry {
            let _ = std::fs::remove_file(e);
        }
        result
    }

    async fn put_parts_and_complete(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), TierError> {
        let upload_id = upload_id.to_owned();
        match self.upload_parts(key, &upload_id, path, size).await {
            Ok(parts) => {
                let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
                let res = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(done)
                    .send()
                    .await;
                match res {
                    Ok(_) => Ok(()),
                    // Some S3-compatible servers (moto 5) answer 200 with a differently named
                    // XML root that the SDK refuses to parse. The upload did complete; the
                    // HeadObject size check that follows every upload verifies it.
                    Err(e) if e.raw_response().is_some_and(|r| r.status().is_success()) => {
                        tracing::debug!(key, "multipart completion answered 2xx with an unparsable body; verifying");
                        Ok(())
                    }
                    Err(e) => {
                        self.abort(key, &upload_id).await;
                        Err(s3_err("complete_multipart_upload", e))
                    }
                }
            }
            Err(e) => {
                self.abort(key, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        let res = self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(upload_id).send().await;
        if let Err(e) = res {
            tracing::warn!(key, error = %s3_err("abort_multipart_upload", e), "abort of a failed multipart upload failed");
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> Result<Vec<CompletedPart>, TierError> {
        let part_size = self.cfg.part_size;
        let count = size.div_ceil(part_size);
        let mut parts = Vec::with_capacity(count as usize);
        let mut tasks = tokio::task::JoinSet::new();
        let mut next = 0u64;
        loop {
            while next < count && tasks.len() < self.cfg.part_concurrency {
                let (path, this, key, id) = (path.to_path_buf(), self.clone(), key.to_string(), upload_id.to_string());
                let offset = next * part_size;
                let len = part_size.min(size - offset);
                let number = (next + 1) as i32;
                tasks.spawn(async move { this.upload_part(path, &key, &id, number, offset, len).await });
                next += 1;
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok(Ok(part))) => parts.push(part),
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(TierError::S3 { op: "upload_part", reason: e.to_string() }),
            }
        }
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    async fn upload_part(
        &self,
        path: PathBuf,
        key: &str,
        upload_id: &str,
        number: i32,
        offset: u64,
        len: u64,
    ) -> Result<CompletedPart, TierError> {
        // Two streaming passes over the part instead of one buffer: hash it (S3 verifies the
        // checksum we send), then send it straight from the file. Memory stays a few small
        // buffers whatever the part size and however many parts a blob has; the second read
        // comes from the page cache.
        let p2 = path.clone();
        let sum = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let file = std::fs::File::open(&p2)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 256 << 10];
            let (mut at, end) = (offset, offset + len);
            while at < end {
                let n = ((end - at) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..n], at)?;
                h.update(&buf[..n]);
                at += n as u64;
            }
            Ok(b64(&h.finalize()))
        })
        .await
        .map_err(|e| TierError::Io(std::io::Error::other(e.to_string())))??;
        let body = ByteStream::read_from()
            .path(&path)
            .offset(offset)
            .length(aws_smithy_types::byte_stream::Length::Exact(len))
            .build()
            .await
            .map_err(|e| TierError::Io(std::io::Error::other(e.to_string())))?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(len as i64)
            .checksum_sha256(&sum)
            .body(body)
            .send()
            .await
            .map_err(|e| s3_err("upload_part", e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .checksum_sha256(out.checksum_sha256().map(str::to_owned).unwrap_or(sum))
            .build())
    }

    /// Size of an object, `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, TierError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => match s3_err("head_object", e) {
                TierError::NotFound => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Start a GET of `key`, whole or a byte range `[offset, offset + len)`.
    pub async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Download, TierError> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some((offset, len)) = range {
            req = req.range(format!("bytes={}-{}", offset, offset + len - 1));
        }
        let out = req.send().await.map_err(|e| s3_err("get_object", e))?;
        Ok(Download { len: out.content_length().unwrap_or(0).max(0) as u64, body: out.body })
    }

    /// A small object's bytes and content type.
    pub async fn get_bytes(&self, key: &str) -> Result<(Vec<u8>, Option<String>), TierError> {
        let out =
            self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(|e| s3_err("get_object", e))?;
        let ct = out.content_type().map(str::to_owned);
        let data = out.body.collect().await.map_err(|e| TierError::S3 { op: "get_object", reason: e.to_string() })?;
        Ok((data.into_bytes().to_vec(), ct))
    }

    /// Store a small object.
    pub async fn put_bytes(&self, key: &str, data: Vec<u8>, content_type: &str) -> Result<(), TierError> {
        let sum = b64(&Sha256::digest(&data));
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .checksum_sha256(sum)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| s3_err("put_object", e))?;
        Ok(())
    }

    /// Delete an object (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), TierError> {
        match self.client.delete_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(e) => match s3_err("delete_object", e) {
                TierError::NotFound => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, TierError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_err("list_objects_v2", e))?;
            for o in page.contents() {
                out.push(Listed {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified_ms: o.last_modified().and_then(|t| t.to_millis().ok()).unwrap_or(0).max(0) as u64,
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Abort this node's own multipart uploads that a crash interrupted (from its journal).
    /// Uploads of other nodes sharing the bucket are never touched (a restart of one node
    /// failed another's 400 MB push before); leftovers whose node lost its journal are for the
    /// bucket's lifecycle rule (`AbortIncompleteMultipartUpload`, docs/ARCHITECTURE.md).
    /// Returns how many were aborted.
    pub async fn abort_own_stale_uploads(&self) -> Result<usize, TierError> {
        let mut n = 0;
        if let Some(dir) = self.journal.get() {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                if let Some((key, id)) = text.trim_end().split_once('\n') {
                    self.abort(key, id).await;
                    n += 1;
                }
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(n)
    }

    /// A presigned GET URL for `key`.
    pub async fn presign_get(&self, key: &str) -> Result<String, TierError> {
        let conf = PresigningConfig::expires_in(Duration::from_secs(self.cfg.presign_expiry_secs))
            .map_err(|e| TierError::S3 { op: "presign", reason: e.to_string() })?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(conf)
            .await
            .map_err(|e| s3_err("presign", e))?;
        Ok(req.uri().to_string())
    }

    /// Whether the bucket answers (for readiness and tests).
    pub async fn reachable(&self) -> bool {
        self.client.head_bucket().bucket(&self.bucket).send().await.is_ok()
    }
}

/// A path for a temporary file next to the blob store (same filesystem, so rename works).
pub(crate) fn scratch_path(dir: &Path, what: &str, digest: &Digest) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("{what}-{}-{}-{n}", &digest.hex()[..16], std::process::id()))
}
