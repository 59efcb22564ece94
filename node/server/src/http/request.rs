//! A parsed request head.

/// The methods the registry serves; anything else is `Other` and gets a 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// Anything else.
    Other,
}

impl Method {
    pub(crate) fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
    /// Name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Path without the query string, as sent (not percent-decoded: no valid registry path
    /// contains `%`, so an encoded path is simply rejected by the name grammar).
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Headers with lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body framing.
    pub framing: Framing,
    /// Client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Whether the connection may be reused after this request.
    pub keep_alive: bool,
}

impl Request {
    /// First value of a header (name in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    /// First value of a query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    /// All values of a query parameter.
    pub fn query_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    /// Whether the request declares a body.
    pub fn has_body(&self) -> bool {
        match self.framing {
            Framing::None => false,
            Framing::Length(n) => n > 0,
            Framing::Chunked => true,
        }
    }
}

/// Why a head could not be turned into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed head, framing or header value.
    Bad(&'static str),
    /// `Transfer-Encoding` other than chunked.
    UnsupportedEncoding,
}

/// Build a [`Request`] from a parsed head.
pub(crate) fn from_parsed(req: &httparse::Request<'_, '_>) -> Result<Request, HeadError> {
    let method = Method::parse(req.method.unwrap_or(""));
    let target = req.path.unwrap_or("/");
    let (path, qs) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let query = form_urlencoded::parse(qs.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let mut headers = Vec::with_capacity(req.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let version = req.version.unwrap_or(1);
    let mut keep_alive = version == 1;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Bad("header value is not UTF-8"))?.trim();
        match name.as_str() {
            "content-length" => {
                if !value.bytes().all(|b| b.is_ascii_digit()) || value.is_empty() || value.len() > 19 {
                    return Err(HeadError::Bad("invalid Content-Length"));
                }
                let n: u64 = value.parse().map_err(|_| HeadError::Bad("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Bad("conflicting Content-Length headers"));
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                if value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else if !value.eq_ignore_ascii_case("identity") {
                    return Err(HeadError::UnsupportedEncoding);
                }
            }
            "expect" => expect_continue = value.eq_ignore_ascii_case("100-continue"),
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        keep_alive = true;
                    }
                }
            }
            _ => {}
        }
        headers.push((name, value.to_owned()));
    }
    // RFC 9112 6.3: both present is a smuggling vector; refuse it.
    if chunked && length.is_some() {
        return Err(HeadError::Bad("both Transfer-Encoding and Content-Length"));
    }
    let framing = if chunked {
        Framing::Chunked
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::None,
        }
    };
    Ok(Request { method, path: path.to_owned(), query, headers, framing, expect_continue, keep_alive })
}
