//! A blocking client of a node's internal API (`berth gc`, the admin sidecar).
//!
//! The node writes its internal API address and token into its data directory
//! (`internal.addr`, `internal.token`). A client resolved from the data directory can
//! [`refresh`](InternalClient::refresh) itself: after a node restart the address may change,
//! and a long-running client (the sidecar) must follow it instead of retrying the old one.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the internal API's address or token could not be found.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source} (is a node running with data directory {data_dir}?)")]
pub struct ResolveError {
    /// The file that could not be read.
    pub path: String,
    /// The data directory it was looked for in.
    pub data_dir: String,
    /// The read error.
    pub source: std::io::Error,
}

/// Where the address and token came from.
#[derive(Debug, Clone)]
enum Source {
    /// Both given explicitly: never re-read.
    Explicit,
    /// At least one read from the node's data directory: re-read on `refresh`.
    DataDir { dir: PathBuf, url_given: bool, token_given: bool },
}

/// A raw answer: status, the headers asked for (in order), body.
pub type RawAnswer = (u16, Vec<Option<String>>, Vec<u8>);

/// A node's internal API: base URL and bearer token.
#[derive(Clone)]
pub struct InternalClient {
    url: String,
    token: String,
    source: Source,
    agent: ureq::Agent,
}

impl std::fmt::Debug for InternalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalClient").field("url", &self.url).field("source", &self.source).finish_non_exhaustive()
    }
}

/// The node's internal URL: `internal.url` (written by nodes that know their scheme), else
/// `http://` + `internal.addr`.
fn url_in(dir: &Path) -> Result<String, ResolveError> {
    match read(dir, "internal.url") {
        Ok(u) if !u.is_empty() => Ok(u),
        _ => Ok(format!("http://{}", read(dir, "internal.addr")?)),
    }
}

/// An agent; with the `tls` feature it speaks HTTPS with the ring provider, trusting `ca` (a
/// PEM bundle) or, without one, the system's bundle.
fn agent(ca: Option<&Path>) -> Result<ureq::Agent, String> {
    #[cfg(feature = "tls")]
    {
        use rustls_pki_types::pem::PemObject as _;
        let bundle = ca.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
        let mut roots = rustls::RootCertStore::empty();
        match rustls_pki_types::CertificateDer::pem_file_iter(&bundle) {
            Ok(certs) => {
                for c in certs {
                    let c = c.map_err(|e| format!("{}: {e}", bundle.display()))?;
                    let _ = roots.add(c);
                }
            }
            Err(e) if ca.is_some() => return Err(format!("{}: {e}", bundle.display())),
            Err(_) => {}
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ureq::AgentBuilder::new().tls_config(std::sync::Arc::new(cfg)).build())
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = ca;
        Ok(ureq::AgentBuilder::new().build())
    }
}

/// Refuse a request path that could name another endpoint than the one its builder meant:
/// dot segments (`.`, `..`, also percent-encoded), encoded separators (`%2F`, `%5C`), a
/// backslash, or anything outside printable ASCII. The URL parser would resolve `..` before
/// the request is sent, so a value pasted into a path (`users/..%2Fscans%2F…` once decoded)
/// could otherwise reach any internal endpoint. Callers build paths from parsed types; this is
/// the last line.
pub fn check_path(path: &str) -> Result<(), String> {
    let p = path.split_once('?').map_or(path, |(p, _)| p);
    if !p.starts_with('/') || p.bytes().any(|b| !(0x21..0x7f).contains(&b) || b == b'\\') {
        return Err(format!("refused internal API path {path:?}: not a plain absolute path"));
    }
    let lower = p.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(format!("refused internal API path {path:?}: encoded separator"));
    }
    for seg in lower.split('/') {
        let decoded = seg.replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(format!("refused internal API path {path:?}: dot segment"));
        }
    }
    Ok(())
}

fn read(dir: &Path, name: &str) -> Result<String, ResolveError> {
    let p = dir.join(name);
    std::fs::read_to_string(&p).map(|s| s.trim().to_string()).map_err(|source| ResolveError {
        path: p.display().to_string(),
        data_dir: dir.display().to_string(),
        source,
    })
}

impl InternalClient {
    /// From explicit values, else from the files the node writes into its data directory.
    pub fn resolve(data_dir: &Path, url: Option<String>, token: Option<String>) -> Result<Self, ResolveError> {
        let source = if url.is_some() && token.is_some() {
            Source::Explicit
        } else {
            Source::DataDir { dir: data_dir.to_path_buf(), url_given: url.is_some(), token_given: token.is_some() }
        };
        let url = match url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => url_in(data_dir)?,
        };
        let token = match token {
            Some(t) => t,
            None => read(data_dir, "internal.token")?,
        };
        Ok(InternalClient {
            url,
            token,
            source,
            agent: agent(None).unwrap_or_else(|_| ureq::AgentBuilder::new().build()),
        })
    }

    /// A client for an explicit URL and token.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        InternalClient {
            url: url.into().trim_end_matches('/').to_string(),
            token: token.into(),
            source: Source::Explicit,
            agent: agent(None).unwrap_or_else(|_| ureq::AgentBuilder::new().build()),
        }
    }

    /// Trust `ca` (PEM) for an `https://` internal API (the node's `internal.tls`).
    pub fn with_ca(mut self, ca: &Path) -> Result<Self, String> {
        self.agent = agent(Some(ca))?;
        Ok(self)
    }

    /// Base URL, e.g. `http://127.0.0.1:5001`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bearer token (the sidecar hands it to its scanner as a registry token for the
    /// internal listener's registry API).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Send raw bytes (`method path`, with a content type); returns the status, the headers
    /// asked for, and the body. For the registry API on the internal listener.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<(&[u8], &str)>,
        want_headers: &[&str],
        timeout: Duration,
    ) -> Result<RawAnswer, String> {
        check_path(path)?;
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(timeout);
        let res = match body {
            Some((b, ct)) => req.set("Content-Type", ct).send_bytes(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(format!("{}{path}: {e}", self.url)),
        };
        let status = resp.status();
        let headers = want_headers.iter().map(|h| resp.header(h).map(str::to_owned)).collect();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes)
            .map_err(|e| format!("{}{path}: {e}", self.url))?;
        Ok((status, headers, bytes))
    }

    /// `GET path` (with `accept`, if given) as the registry API wants it: any status is an
    /// answer, only a transport failure an error.
    fn get(&self, path: &str, accept: Option<&str>, timeout: Duration) -> Result<ureq::Response, String> {
        check_path(path)?;
        let mut req = self
            .agent
            .get(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(timeout);
        if let Some(a) = accept {
            req = req.set("Accept", a);
        }
        match req.call() {
            Ok(r) | Err(ureq::Error::Status(_, r)) => Ok(r),
            Err(e) => Err(format!("{}{path}: {e}", self.url)),
        }
    }

    /// `GET path` with an `Accept` header: status, `Content-Type`, body (manifests, at most
    /// 8 MiB read).
    pub fn get_with_accept(&self, path: &str, accept: &str, timeout: Duration) -> Result<RawAnswer, String> {
        let resp = self.get(path, Some(accept), timeout)?;
        let status = resp.status();
        let ct = vec![resp.header("content-type").map(str::to_owned)];
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(resp.into_reader(), 8 << 20), &mut bytes)
            .map_err(|e| format!("{}{path}: {e}", self.url))?;
        Ok((status, ct, bytes))
    }

    /// `GET path` and discard the body (a blob of any size, in constant memory); returns the
    /// status and the bytes read.
    pub fn drain(&self, path: &str, timeout: Duration) -> Result<(u16, u64), String> {
        let resp = self.get(path, None, timeout)?;
        let status = resp.status();
        let n = std::io::copy(&mut resp.into_reader(), &mut std::io::sink())
            .map_err(|e| format!("{}{path}: {e}", self.url))?;
        Ok((status, n))
    }

    /// Re-read what came from the data directory (a restarted node may listen elsewhere or
    /// have a new token). Returns whether anything changed.
    pub fn refresh(&mut self) -> bool {
        let Source::DataDir { dir, url_given, token_given } = &self.source else { return false };
        let mut changed = false;
        if !url_given {
            if let Ok(u) = url_in(dir) {
                changed |= u != self.url;
                self.url = u;
            }
        }
        if !token_given {
            if let Ok(t) = read(dir, "internal.token") {
                changed |= t != self.token;
                self.token = t;
            }
        }
        changed
    }

    /// Call `method path` with an optional JSON body; returns the status and the JSON answer
    /// (a non-JSON answer comes back as a JSON string). No size cap: an export of a large
    /// index is tens of megabytes. `Err` means no answer (unreachable, broken connection).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<(u16, serde_json::Value), String> {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap_or_default());
        let (status, _, bytes) =
            self.raw(method, path, body.as_deref().map(|b| (b, "application/json")), &[], timeout)?;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_their_endpoint_are_refused() {
        for ok in ["/internal/v1/users/alice", "/internal/v1/scans/sha256:ab", "/v2/a/b/manifests/v1?x=../y"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/internal/v1/users/../scans/sha256:ab",
            "/internal/v1/users/..%2Fscans",
            "/internal/v1/users/%2e%2E/export",
            "/internal/v1/users/.",
            "/internal/v1/users/a%2fb",
            "/internal/v1/users/a%5Cb",
            "/internal/v1/users/a\\b",
            "/internal/v1/users/a b",
            "internal/v1/users",
            "/internal/v1/users/\u{e9}",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        // The client refuses before anything is sent.
        let c = InternalClient::new("http://127.0.0.1:9", "t");
        let e = c.call("DELETE", "/internal/v1/users/../../../v2/r/manifests/v1", None, Duration::from_secs(1));
        assert!(e.unwrap_err().contains("dot segment"));
    }

    #[test]
    fn refresh_follows_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("internal.addr"), "127.0.0.1:1111\n").unwrap();
        std::fs::write(dir.path().join("internal.token"), "t1").unwrap();
        let mut c = InternalClient::resolve(dir.path(), None, None).unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:1111");
        assert!(!c.refresh());
        std::fs::write(dir.path().join("internal.addr"), "127.0.0.1:2222").unwrap();
        assert!(c.refresh());
        assert_eq!(c.url(), "http://127.0.0.1:2222");
        let mut explicit = InternalClient::resolve(dir.path(), Some("http://x:1/".into()), Some("t".into())).unwrap();
        assert!(!explicit.refresh());
        assert_eq!(explicit.url(), "http://x:1");
        let missing = InternalClient::resolve(&dir.path().join("nope"), None, None).unwrap_err().to_string();
        assert!(missing.contains("internal.addr") && missing.contains("is a node running"), "{missing}");
        assert!(!missing.contains("--node"), "no flags another program may not have: {missing}");
    }
}
