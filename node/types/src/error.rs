//! The one table of registry errors: each kind has its OCI code, HTTP status and default message.

use std::fmt;

/// Every error the registry can answer with. The status and code of each are declared once,
/// in [`ErrorKind::status`] and [`ErrorKind::code`]; handlers never choose a status inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Blob unknown to the registry (404).
    BlobUnknown,
    /// Blob upload invalid (400).
    BlobUploadInvalid,
    /// Upload session unknown or expired (404).
    BlobUploadUnknown,
    /// A chunk or range that does not line up with the upload (416).
    RangeInvalid,
    /// A `Range` that lies outside the blob (416).
    RangeNotSatisfiable,
    /// Digest did not match content, or is malformed (400).
    DigestInvalid,
    /// Manifest references a blob that does not exist in the repository (400).
    ManifestBlobUnknown,
    /// Manifest invalid (400).
    ManifestInvalid,
    /// Manifest unknown (404).
    ManifestUnknown,
    /// Invalid repository name (400).
    NameInvalid,
    /// A manifest PUT to a reference that is neither a valid tag nor a digest (400).
    TagInvalid,
    /// Repository not known (404).
    NameUnknown,
    /// Content length does not match (400).
    SizeInvalid,
    /// Body larger than allowed (413).
    TooLarge,
    /// Authentication required (401).
    Unauthorized,
    /// Access denied (403).
    Denied,
    /// Operation not supported (405).
    Unsupported,
    /// Method not allowed on this resource (405).
    MethodNotAllowed,
    /// Too many requests (429).
    TooManyRequests,
    /// Request path matches no endpoint (404).
    NotFound,
    /// Malformed request: bad query, header or framing (400).
    BadRequest,
    /// Request head too large (431).
    HeadersTooLarge,
    /// The server ran out of disk space (507).
    InsufficientStorage,
    /// A dependency is temporarily unavailable (503).
    Unavailable,
    /// Unexpected server-side failure (500). Never used for a client mistake.
    Internal,
}

impl ErrorKind {
    /// HTTP status code.
    pub fn status(self) -> u16 {
        use ErrorKind::*;
        match self {
            BlobUnknown | BlobUploadUnknown | ManifestUnknown | NameUnknown | NotFound => 404,
            BlobUploadInvalid | DigestInvalid | ManifestBlobUnknown | ManifestInvalid | NameInvalid | SizeInvalid
            | TagInvalid | BadRequest => 400,
            RangeInvalid | RangeNotSatisfiable => 416,
            TooLarge => 413,
            Unauthorized => 401,
            Denied => 403,
            Unsupported | MethodNotAllowed => 405,
            TooManyRequests => 429,
            HeadersTooLarge => 431,
            InsufficientStorage => 507,
            Unavailable => 503,
            Internal => 500,
        }
    }

    /// OCI error code string.
    pub fn code(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BlobUnknown => "BLOB_UNKNOWN",
            BlobUploadInvalid | RangeInvalid => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            RangeNotSatisfiable => "RANGE_INVALID",
            DigestInvalid => "DIGEST_INVALID",
            ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid => "MANIFEST_INVALID",
            ManifestUnknown => "MANIFEST_UNKNOWN",
            NameInvalid => "NAME_INVALID",
            TagInvalid => "TAG_INVALID",
            NameUnknown => "NAME_UNKNOWN",
            SizeInvalid | TooLarge => "SIZE_INVALID",
            Unauthorized => "UNAUTHORIZED",
            Denied => "DENIED",
            Unsupported | MethodNotAllowed => "UNSUPPORTED",
            TooManyRequests => "TOOMANYREQUESTS",
            NotFound => "NOT_FOUND",
            BadRequest | HeadersTooLarge => "BAD_REQUEST",
            InsufficientStorage => "INSUFFICIENT_STORAGE",
            Unavailable => "UNAVAILABLE",
            Internal => "UNKNOWN",
        }
    }

    /// Default human-readable message.
    pub fn message(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BlobUnknown => "blob unknown to registry",
            BlobUploadInvalid => "blob upload invalid",
            BlobUploadUnknown => "blob upload unknown to registry",
            RangeInvalid => "requested range does not match the upload's current offset",
            RangeNotSatisfiable => "requested range not satisfiable",
            DigestInvalid => "provided digest did not match uploaded content",
            ManifestBlobUnknown => "manifest references a blob unknown to this repository",
            ManifestInvalid => "manifest invalid",
            ManifestUnknown => "manifest unknown",
            NameInvalid => "invalid repository name",
            TagInvalid => "manifest tag did not match URI",
            NameUnknown => "repository name not known to registry",
            SizeInvalid => "provided length did not match content length",
            TooLarge => "request body too large",
            Unauthorized => "authentication required",
            Denied => "requested access to the resource is denied",
            Unsupported => "the operation is unsupported",
            MethodNotAllowed => "method not allowed for this resource",
            TooManyRequests => "too many requests",
            NotFound => "no such endpoint",
            BadRequest => "malformed request",
            HeadersTooLarge => "request header fields too large",
            InsufficientStorage => "the registry is out of storage space",
            Unavailable => "service temporarily unavailable",
            Internal => "internal server error",
        }
    }
}

/// A registry error: a kind from the table plus an optional specific message and detail.
#[derive(Debug, Clone)]
pub struct OciError {
    /// Which error.
    pub kind: ErrorKind,
    /// Specific message; the kind's default when `None`.
    pub message: Option<String>,
    /// Structured detail for the error body.
    pub detail: Option<serde_json::Value>,
}

impl OciError {
    /// An error with the default message.
    pub fn new(kind: ErrorKind) -> Self {
        OciError { kind, message: None, detail: None }
    }
    /// Replace the message.
    pub fn msg(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }
    /// Attach detail.
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = Some(d);
        self
    }
    /// The spec's JSON error body: `{"errors":[{"code","message","detail"}]}`.
    pub fn body(&self) -> Vec<u8> {
        let mut e = serde_json::json!({
            "code": self.kind.code(),
            "message": self.message.as_deref().unwrap_or(self.kind.message()),
        });
        if let Some(d) = &self.detail {
            e["detail"] = d.clone();
        }
        serde_json::to_vec(&serde_json::json!({ "errors": [e] })).unwrap_or_default()
    }
}

impl From<ErrorKind> for OciError {
    fn from(k: ErrorKind) -> Self {
        OciError::new(k)
    }
}

impl fmt::Display for OciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message.as_deref().unwrap_or(self.kind.message()))
    }
}

impl std::error::Error for OciError {}
