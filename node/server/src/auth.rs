//! Basic authentication against bcrypt hashes (htpasswd file or inline users).
//!
//! bcrypt is deliberately slow (~50–250 ms), so a successful check is cached under the SHA-256
//! of the presented header value for a few minutes: a pull of 20 layers costs one bcrypt, not 20.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;

const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 10_000;

/// Users and their bcrypt hashes.
pub struct Auth {
    users: RwLock<HashMap<String, String>>,
    /// Realm for `WWW-Authenticate`.
    pub realm: String,
    /// Whether GET/HEAD need no credentials.
    pub anonymous_pull: bool,
    verified: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    /// A real bcrypt hash checked for unknown users, so timing does not reveal user names.
    dummy: String,
}

/// Outcome of checking a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid credentials for this user.
    User(String),
    /// No credentials presented.
    Anonymous,
    /// Credentials presented and wrong.
    Invalid,
}

impl Auth {
    /// Build from configuration; `None` when auth is off.
    pub fn from_config(cfg: &AuthConfig) -> Result<Option<Auth>, AuthFileError> {
        let users = load_users(cfg)?;
        if users.is_empty() && cfg.htpasswd.is_none() {
            return Ok(None);
        }
        Ok(Some(Auth {
            users: RwLock::new(users),
            realm: cfg.realm.clone(),
            anonymous_pull: cfg.anonymous_pull,
            verified: Mutex::new(HashMap::new()),
            dummy: bcrypt::hash("berth-dummy-password", bcrypt::DEFAULT_COST).unwrap_or_default(),
        }))
    }

    /// Replace the user list (SIGHUP: the htpasswd file was edited). Cached verifications are
    /// dropped, so a removed user or a changed password takes effect at once. Returns the
    /// number of users now known.
    pub fn reload(&self, cfg: &AuthConfig) -> Result<usize, AuthFileError> {
        let users = load_users(cfg)?;
        let n = users.len();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = users;
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(n)
    }

    /// Check an `Authorization` header value.
    pub fn check(&self, header: Option<&str>) -> Verdict {
        let Some(h) = header else {
            return Verdict::Anonymous;
        };
        let key: [u8; 32] = Sha256::digest(h.as_bytes()).into();
        {
            let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            // Lookup by hash of the secret; the map's key comparison is on a hash, which
            // reveals nothing about the password through timing.
            if let Some((user, at)) = cache.get(&key) {
                if at.elapsed() < CACHE_TTL {
                    return Verdict::User(user.clone());
                }
            }
        }
        let Some(b64) = h.strip_prefix("Basic ").or_else(|| h.strip_prefix("basic ")) else {
            return Verdict::Invalid;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return Verdict::Invalid;
        };
        let Ok(text) = String::from_utf8(raw) else {
            return Verdict::Invalid;
        };
        let Some((user, pass)) = text.split_once(':') else {
            return Verdict::Invalid;
        };
        // Always run one bcrypt verification, against a dummy hash for unknown users, so the
        // response time does not reveal which user names exist.
        let (hash, known) = match self.users.read().unwrap_or_else(|p| p.into_inner()).get(user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let ok = bcrypt::verify(pass, &hash).unwrap_or(false);
        let ok: bool = (u8::from(ok) & u8::from(known)).ct_eq(&1).into();
        if !ok {
            return Verdict::Invalid;
        }
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (user.to_owned(), Instant::now()));
        Verdict::User(user.to_owned())
    }
}

/// The htpasswd file could not be read: names the file.
#[derive(Debug, thiserror::Error)]
#[error("auth.htpasswd {path}: {source}")]
pub struct AuthFileError {
    /// The file.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

fn load_users(cfg: &AuthConfig) -> Result<HashMap<String, String>, AuthFileError> {
    let mut users = HashMap::new();
    if let Some(path) = &cfg.htpasswd {
        users
            .extend(parse_htpasswd(path).map_err(|source| AuthFileError { path: path.display().to_string(), source })?);
    }
    for u in &cfg.users {
        users.insert(u.name.clone(), u.bcrypt.clone());
    }
    Ok(users)
}

fn parse_htpasswd(path: &Path) -> std::io::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = HashMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some((u, h)) = line.split_once(':') {
            if h.starts_with("$2") {
                out.insert(u.to_owned(), h.to_owned());
            } else {
                tracing::warn!(user = u, "htpasswd entry is not bcrypt; ignored");
            }
        }
    }
    Ok(out)
}
