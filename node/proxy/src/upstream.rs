//! One upstream registry: its HTTP client (TLS settings, credentials) and the auth dance —
//! Basic, or a Bearer token fetched from the realm the upstream names, cached per scope until
//! it expires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use reqwest::{Method, StatusCode};

use crate::challenge::{self, Challenge, TokenResponse};
use crate::config::UpstreamConfig;
use crate::metrics::ProxyMetrics;
use crate::outbound::{Outbound, RealmUse};

/// Every manifest type a client may ask for: an upstream answers with what it has.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest taken from an upstream.
const MAX_MANIFEST: usize = 4 << 20;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused, reset, timed out, TLS failure.
    #[error("upstream {0} cannot be reached: {1}")]
    Unreachable(String, String),
    /// The upstream answered with an error status.
    #[error("upstream {0} answered {1}: {2}")]
    Status(String, u16, String),
    /// The upstream refused our credentials or token.
    #[error("upstream {0} refused access: {1}")]
    Denied(String, String),
    /// The upstream sent something that is not what it claims (digest, size, length).
    #[error("upstream {0} sent bad content: {1}")]
    Invalid(String, String),
}

impl UpstreamError {
    /// Whether a cached answer should be served instead (the upstream is down, overloaded or
    /// rate-limiting us): stale-if-error.
    pub fn is_unavailable(&self) -> bool {
        match self {
            UpstreamError::Unreachable(..) => true,
            UpstreamError::Status(_, s, _) => *s == 429 || *s >= 500,
            _ => false,
        }
    }

    /// A short reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable(..) => "unreachable",
            UpstreamError::Status(_, 429, _) => "rate_limited",
            UpstreamError::Status(_, s, _) if *s >= 500 => "server_error",
            UpstreamError::Status(..) => "status",
            UpstreamError::Denied(..) => "denied",
            UpstreamError::Invalid(..) => "invalid",
        }
    }
}

/// A manifest as the upstream describes it (HEAD) or sends it (GET).
#[derive(Debug, Clone)]
pub struct ManifestInfo {
    /// `Docker-Content-Digest`, when the upstream sent one.
    pub digest: Option<String>,
    /// `Content-Type`.
    pub media_type: String,
    /// The bytes (GET only).
    pub bytes: Option<Bytes>,
}

/// An upstream registry.
pub struct Upstream {
    /// Its configuration.
    pub cfg: UpstreamConfig,
    base: String,
    client: reqwest::Client,
    password: Option<String>,
    allow: Vec<glob::Pattern>,
    /// Where its requests, redirects and credentials may go.
    outbound: Arc<Outbound>,
    /// The upstream asked for Basic once: send it up front from then on.
    basic: AtomicBool,
    /// Bearer tokens by scope, with their expiry.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    metrics: ProxyMetrics,
}

fn read_file(name: &str, what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("proxy upstream {name:?}: cannot read {what} {}: {e}", path.display()))
}

impl Upstream {
    /// Build the client: CA bundle, client certificate, skip-verify, timeouts, password file.
    pub fn new(cfg: UpstreamConfig, metrics: ProxyMetrics) -> Result<Upstream, String> {
        let name = cfg.name.clone();
        let outbound = Arc::new(
            Outbound::new(&cfg.url, &cfg.redirect_origins, &cfg.token_realms)
                .map_err(|e| format!("proxy upstream {name:?}: {e}"))?,
        );
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(outbound.redirect_policy())
            .dns_resolver(outbound.resolver())
            .connect_timeout(Duration::from_secs(cfg.timeout_secs))
            .read_timeout(Duration::from_secs(cfg.timeout_secs))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION"), " (pull-through cache)"));
        if let Some(ca) = &cfg.ca {
            let pem = read_file(&name, "CA bundle", ca)?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("proxy upstream {name:?}: CA bundle {}: {e}", ca.display()))?
            {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
            let mut pem = read_file(&name, "client certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read_file(&name, "client key", key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("proxy upstream {name:?}: client certificate/key: {e}"))?;
            b = b.identity(id);
        }
        if cfg.insecure_skip_verify {
            tracing::warn!(upstream = %name, "proxy upstream certificates are not verified (insecure_skip_verify)");
            b = b.danger_accept_invalid_certs(true);
        }
        let client = b.build().map_err(|e| format!("proxy upstream {name:?}: {e}"))?;
        let password = match (&cfg.password, &cfg.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(f)) => {
                let text = String::from_utf8_lossy(&read_file(&name, "password file", f)?).into_owned();
                Some(text.lines().next().unwrap_or("").to_owned())
            }
            (None, None) => None,
        };
        let allow =
            cfg.allow.iter().map(|g| glob::Pattern::new(g).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
        Ok(Upstream {
            base: cfg.url.trim_end_matches('/').to_owned(),
            cfg,
            client,
            password,
            allow,
            outbound,
            basic: AtomicBool::new(false),
            tokens: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Its name (the path prefix here).
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Whether `repo` (the upstream's name for it) may be pulled through. Globs as in auth
    /// rules: `*` is one path segment, `**` any number (`library/*` is not `library/a/b`).
    pub fn allows(&self, repo: &str) -> bool {
        let opts = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
        self.allow.is_empty() || self.allow.iter().any(|p| p.matches_with(repo, opts))
    }

    fn basic_header(&self) -> Option<String> {
        let user = self.cfg.username.as_deref()?;
        let pass = self.password.as_deref().unwrap_or("");
        Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))))
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(scope).filter(|(_, exp)| *exp > Instant::now()).map(|(t, _)| t.clone())
    }

    fn unreachable(&self, e: reqwest::Error) -> UpstreamError {
        UpstreamError::Unreachable(self.cfg.name.clone(), e.to_string())
    }

    /// Fetch a token for `scope` from the realm.
    async fn token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String, UpstreamError> {
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| UpstreamError::Invalid(self.cfg.name.clone(), format!("token realm {realm:?}: {e}")))?;
        // Credentials only where they were meant for; an unknown public realm is asked
        // anonymously, anything else refused.
        let realm_use = self.outbound.realm_use(&url).map_err(|e| UpstreamError::Denied(self.cfg.name.clone(), e))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut req = self.client.get(url);
        if let (RealmUse::WithCredentials, Some(h)) = (realm_use, self.basic_header()) {
            req = req.header("Authorization", h);
        }
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        self.metrics.observe(&self.cfg.name, "token", started.elapsed());
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(UpstreamError::Denied(self.cfg.name.clone(), format!("the token realm answered {status}")));
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(self.cfg.name.clone(), status.as_u16(), "token realm".into()));
        }
        let body = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        let (token, ttl) = serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| UpstreamError::Invalid(self.cfg.name.clone(), "the token realm sent no token".into()))?;
        // Renew a little early: a token that expires in flight costs a 401 round trip.
        let exp = Instant::now() + Duration::from_secs(ttl.saturating_sub(ttl.min(10)).max(1));
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(scope.to_owned(), (token.clone(), exp));
        Ok(token)
    }

    /// Send a request for `repo` with what authenticated us last time; on a 401, answer the
    /// challenge (Basic, or a token for the scope) and retry once.
    async fn send(
        &self,
        method: Method,
        path: &str,
        repo: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let scope = format!("repository:{repo}:pull");
        let url = format!("{}/v2/{}", self.base, path);
        let build = |auth: Option<String>| {
            let mut r = self.client.request(method.clone(), &url);
            if let Some(a) = accept {
                r = r.header("Accept", a);
            }
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r
        };
        let first_auth = match self.cached_token(&scope) {
            Some(t) => Some(format!("Bearer {t}")),
            None if self.basic.load(Ordering::Relaxed) => self.basic_header(),
            None => None,
        };
        let resp = build(first_auth).send().await.map_err(|e| self.unreachable(e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let header = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let auth = match challenge::parse(&header) {
            Some(Challenge::Basic) => {
                self.basic.store(true, Ordering::Relaxed);
                self.basic_header().ok_or_else(|| {
                    UpstreamError::Denied(self.cfg.name.clone(), "it asks for a password and none is configured".into())
                })?
            }
            Some(Challenge::Bearer { realm, service, scope: asked }) => {
                // Ask for exactly what it named (it may want more than pull), else our scope.
                let s = asked.unwrap_or_else(|| scope.clone());
                let t = self.token(&realm, service.as_deref(), &s).await?;
                if s != scope {
                    self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(&s);
                }
                format!("Bearer {t}")
            }
            None => {
                return Err(UpstreamError::Denied(self.cfg.name.clone(), format!("401 with challenge {header:?}")));
            }
        };
        let resp = build(Some(auth)).send().await.map_err(|e| self.unreachable(e))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(UpstreamError::Denied(
                self.cfg.name.clone(),
                format!("{} after authenticating", resp.status()),
            ));
        }
        Ok(resp)
    }

    fn status_error(&self, status: StatusCode, what: &str) -> UpstreamError {
        if status == StatusCode::FORBIDDEN {
            return UpstreamError::Denied(self.cfg.name.clone(), format!("{what}: 403"));
        }
        UpstreamError::Status(self.cfg.name.clone(), status.as_u16(), what.to_owned())
    }

    /// `HEAD` (`get` false) or `GET` a manifest; `None` when the upstream has no such manifest.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        get: bool,
    ) -> Result<Option<ManifestInfo>, UpstreamError> {
        let started = Instant::now();
        let method = if get { Method::GET } else { Method::HEAD };
        let resp = self.send(method, &format!("{repo}/manifests/{reference}"), repo, Some(MANIFEST_ACCEPT)).await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                self.metrics.error(&self.cfg.name, e.reason());
                return Err(e);
            }
        };
        self.metrics.observe(&self.cfg.name, if get { "manifest_get" } else { "manifest_head" }, started.elapsed());
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let e = self.status_error(status, "manifest");
            self.metrics.error(&self.cfg.name, e.reason());
            return Err(e);
        }
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let digest = header("docker-content-digest");
        let media_type = header("content-type").unwrap_or_default();
        if !get {
            return Ok(Some(ManifestInfo { digest, media_type, bytes: None }));
        }
        if resp.content_length().is_some_and(|n| n > MAX_MANIFEST as u64) {
            return Err(UpstreamError::Invalid(self.cfg.name.clone(), "manifest larger than 4 MiB".into()));
        }
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        if bytes.len() > MAX_MANIFEST {
            return Err(UpstreamError::Invalid(self.cfg.name.clone(), "manifest larger than 4 MiB".into()));
        }
        self.metrics.fetched(&self.cfg.name, bytes.len() as u64);
        Ok(Some(ManifestInfo { digest, media_type, bytes: Some(bytes) }))
    }

    /// Start a blob download; `None` when the upstream has no such blob. The response's
    /// length is checked by the caller.
    pub async fn blob(&self, repo: &str, digest: &str) -> Result<Option<reqwest::Response>, UpstreamError> {
        let started = Instant::now();
        let resp = match self.send(Method::GET, &format!("{repo}/blobs/{digest}"), repo, None).await {
            Ok(r) => r,
            Err(e) => {
                self.metrics.error(&self.cfg.name, e.reason());
                return Err(e);
            }
        };
        self.metrics.observe(&self.cfg.name, "blob_get", started.elapsed());
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(resp)),
            s => {
                let e = self.status_error(s, "blob");
                self.metrics.error(&self.cfg.name, e.reason());
                Err(e)
            }
        }
    }
}
