//! Responses: status, headers and a body that is empty, in memory, or a byte range of a file.

use std::fs::File;
use std::sync::Arc;

use berth_tiering::{Fill, RangeStream};

use berth_types::OciError;

/// What follows the head.
pub enum ResponseBody {
    /// Nothing (`Content-Length: 0` unless a length header was set, e.g. for HEAD).
    Empty,
    /// Bytes from memory.
    Bytes(Vec<u8>),
    /// `len` bytes from `offset` of a buffer shared with a cache (the small-blob cache): copied
    /// once, into the response head's write.
    Shared {
        /// The cached bytes.
        bytes: std::rc::Rc<[u8]>,
        /// Start offset (small blobs only: 32 bits keep the response small).
        offset: u32,
        /// Byte count.
        len: u32,
    },
    /// `len` bytes of `file` starting at `offset`, sent with `sendfile(2)`.
    File {
        /// Open file (shared with the per-core cache of open blob files).
        file: std::rc::Rc<File>,
        /// Start offset.
        offset: u64,
        /// Byte count.
        len: u64,
    },
    /// `len` bytes from `offset` of a blob being read through from S3: sent from the fill's
    /// file as far as it is written (zero-copy), waiting for more as needed.
    Fill {
        /// The shared fetch.
        fill: Arc<Fill>,
        /// Start offset.
        offset: u64,
        /// Byte count.
        len: u64,
    },
    /// Chunks streamed from S3 (ranged reads of cold blobs).
    Stream(RangeStream),
}

/// A response under construction.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (name, value).
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: ResponseBody,
    /// OCI error code, for logs and metrics.
    pub error: Option<&'static str>,
    /// For blob reads: where the bytes come from (`local`, `s3`, …), for the access log.
    pub source: Option<&'static str>,
    /// Who asked (user, robot or token subject), for the access log.
    pub user: Option<String>,
}

impl Response {
    /// An empty response with a status.
    pub fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: ResponseBody::Empty, error: None, source: None, user: None }
    }
    /// Add a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
    /// Set a header that may appear once (`Retry-After`), replacing any value already set.
    pub fn set_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value.into()));
        self
    }
    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::bytes(status, "application/json", serde_json::to_vec(value).unwrap_or_default())
    }
    /// A body from memory with a content type.
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response::new(status).header("Content-Type", content_type).with_body(ResponseBody::Bytes(body))
    }
    /// Replace the body.
    pub fn with_body(mut self, body: ResponseBody) -> Response {
        self.body = body;
        self
    }
    /// Body length as it goes into `Content-Length`.
    pub fn body_len(&self) -> u64 {
        match &self.body {
            ResponseBody::Empty => 0,
            ResponseBody::Bytes(b) => b.len() as u64,
            ResponseBody::Shared { len, .. } => u64::from(*len),
            ResponseBody::File { len, .. } | ResponseBody::Fill { len, .. } => *len,
            ResponseBody::Stream(s) => s.len,
        }
    }
    /// Whether a header is already set.
    pub fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

impl From<OciError> for Response {
    fn from(e: OciError) -> Response {
        let mut r = Response::bytes(e.kind.status(), "application/json", e.body());
        r.error = Some(e.kind.code());
        // A temporary condition: tell clients when to come back (RFC 9110 10.2.3).
        if matches!(e.kind, berth_types::ErrorKind::Unavailable | berth_types::ErrorKind::TooManyRequests) {
            r = r.header("Retry-After", "10");
        }
        r
    }
}

/// Reason phrase for a status.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}
