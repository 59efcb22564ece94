//! Authentication and authorisation of registry requests.
//!
//! - `passwords`: htpasswd / inline users, bcrypt checked off the serving cores.
//! - `limiter`: failed-login limits per client address and per user (429).
//! - `policy`: ordered rules (subject, repository glob, actions, allow/deny) and groups.
//! - `token`: the Docker registry token protocol (JWT, ES256/EdDSA, JWKS, rotation).
//!
//! A request presents nothing (anonymous), Basic credentials, or a bearer token. Basic callers
//! and anonymous ones are judged by the policy; token callers by their token's `access` claim
//! (which the token endpoint filled from the same policy).

pub mod accounts;
pub mod audit;
mod es256;
pub mod limiter;
mod manage;
pub mod passwords;
pub mod policy;
pub mod token;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;

pub use manage::AccountError;
pub use passwords::AuthFileError;
use passwords::{Checked, Passwords};
use policy::{Action, Actions, Caller, Policy};
use token::{Grant, TokenError, Tokens};

use crate::config::AuthConfig;

/// Who a request comes from, once its credentials are checked.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No credentials.
    Anonymous,
    /// A user whose password was checked.
    User(String),
    /// A bearer token.
    Token(Arc<Grant>),
}

impl Identity {
    /// The name for the access and audit logs (`-` when anonymous).
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "-",
            Identity::User(u) => u,
            Identity::Token(g) if g.subject.is_empty() => "-",
            Identity::Token(g) => &g.subject,
        }
    }
}

/// Why credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Wrong user or password, or unreadable credentials.
    BadPassword,
    /// A token that does not verify.
    BadToken(TokenError),
    /// Too many failed logins from this address or for this user: retry after this long.
    Limited(Duration),
    /// Too many password checks in progress: retry shortly.
    Busy,
}

/// Credentials as presented.
enum Presented<'a> {
    None,
    Basic { user: String, password: String },
    Bearer(&'a str),
    Unreadable,
}

fn presented(header: Option<&str>) -> Presented<'_> {
    let Some(h) = header else { return Presented::None };
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Presented::Bearer(rest.trim());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Presented::Unreadable;
    }
    basic_credentials(rest).map_or(Presented::Unreadable, |(user, password)| Presented::Basic { user, password })
}

/// Decode the value of a `Basic` authorization (after the scheme).
pub fn basic_credentials(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Authentication and authorisation state shared by every core.
pub struct Auth {
    /// Realm of Basic challenges.
    pub realm: String,
    /// The `[auth]` configuration in force (replaced on SIGHUP).
    cfg: RwLock<AuthConfig>,
    /// Users, robots, groups and rules managed through the internal API.
    pub managed: accounts::Managed,
    /// Audit events for the sidecar.
    pub audit: audit::Audit,
    passwords: Passwords,
    limiter: limiter::Limiter,
    policy: RwLock<Arc<Policy>>,
    /// Held while the managed state is compiled into `passwords` and `policy`, so the last to
    /// finish has compiled the latest state (see `apply_current`).
    applying: std::sync::Mutex<()>,
    /// The token protocol, when `[auth.token]` is set.
    pub tokens: Option<Tokens>,
}

/// Why auth could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The htpasswd file.
    #[error(transparent)]
    File(#[from] AuthFileError),
    /// Rules or groups.
    #[error("{0}")]
    Policy(String),
    /// Token keys.
    #[error(transparent)]
    Keys(#[from] token::KeyError),
    /// The managed accounts file.
    #[error("managed accounts: {0}")]
    Managed(String),
}

/// Managed users as name → bcrypt.
fn managed_users(s: &accounts::Stored) -> std::collections::HashMap<String, String> {
    s.users.iter().map(|(n, u)| (n.clone(), u.bcrypt.clone())).collect()
}

/// Configured rules, then managed ones; configured and managed groups.
fn compile_policy(cfg: &AuthConfig, s: &accounts::Stored) -> Result<Policy, String> {
    let mut groups = cfg.groups.clone();
    groups.extend(
        s.groups.iter().map(|(name, members)| policy::GroupConfig { name: name.clone(), members: members.clone() }),
    );
    Policy::compile_all(&[("auth.rules", &cfg.rules), ("managed rules", &s.rules)], &groups, cfg.anonymous_pull)
}

impl Auth {
    /// Whether `cfg` turns auth on: users, rules or tokens configured.
    pub fn is_configured(cfg: &AuthConfig) -> bool {
        cfg.enabled || cfg.htpasswd.is_some() || !cfg.users.is_empty() || cfg.token.is_some() || !cfg.rules.is_empty()
    }

    /// Build from configuration; `None` when auth is off. Token keys live under `data_dir`
    /// unless configured elsewhere (so this runs after the data directory exists).
    pub fn from_config(cfg: &AuthConfig, data_dir: &std::path::Path) -> Result<Option<Auth>, AuthError> {
        if !Self::is_configured(cfg) {
            return Ok(None);
        }
        let managed = accounts::Managed::open(data_dir).map_err(AuthError::Managed)?;
        let stored = managed.get();
        let policy = compile_policy(cfg, &stored).map_err(AuthError::Policy)?;
        let passwords = Passwords::new(cfg, &managed_users(&stored))?;
        let tokens = cfg.token.as_ref().map(|t| Tokens::new(t, data_dir)).transpose()?;
        Ok(Some(Auth {
            realm: cfg.realm.clone(),
            cfg: RwLock::new(cfg.clone()),
            managed,
            audit: audit::Audit::default(),
            passwords,
            limiter: limiter::Limiter::new(&cfg.failed_logins),
            policy: RwLock::new(Arc::new(policy)),
            applying: std::sync::Mutex::new(()),
            tokens,
        }))
    }

    /// Check what `cfg` would load, without starting anything (config checks).
    pub fn validate(cfg: &AuthConfig) -> Result<(), AuthError> {
        Policy::compile(&cfg.rules, &cfg.groups, cfg.anonymous_pull).map_err(AuthError::Policy)?;
        if let Some(path) = &cfg.htpasswd {
            std::fs::metadata(path).map_err(|error| AuthFileError { path: path.display().to_string(), error })?;
        }
        Ok(())
    }

    /// SIGHUP: users, rules, groups and token keys. Cached verifications are dropped. Returns
    /// the number of users.
    pub fn reload(&self, cfg: &AuthConfig) -> Result<usize, AuthError> {
        let stored = self.managed.get();
        let policy = compile_policy(cfg, &stored).map_err(AuthError::Policy)?;
        if let Some(t) = &self.tokens {
            t.reload()?;
        }
        let n = self.passwords.reload(cfg, &managed_users(&stored))?;
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = cfg.clone();
        Ok(n)
    }

    /// Compile the managed state in force into users (cached verifications dropped) and rules.
    /// Reads the state under the lock: in a cluster a change this node made and one applied
    /// from the log may finish in either order, and compiling a state each caller captured
    /// earlier could leave an older one in force (a user missing from logins though listed).
    fn apply_current(&self) -> Result<(), AccountError> {
        let _one = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let stored = self.managed.get();
        let stored = &*stored;
        let cfg = self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone();
        let policy = compile_policy(&cfg, stored).map_err(AccountError::Invalid)?;
        self.passwords.reload(&cfg, &managed_users(stored)).map_err(|e| AccountError::Io(e.to_string()))?;
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        Ok(())
    }

    /// Install managed accounts restored from the bucket by a rebuild (only when this node
    /// manages none: never over a live state).
    pub fn restore_managed(&self, stored: accounts::Stored) -> Result<bool, AccountError> {
        if !self.managed.get().is_empty() {
            return Ok(false);
        }
        self.managed.install(stored).map_err(AccountError::Io)?;
        self.apply_current()?;
        Ok(true)
    }

    /// The rules in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The credential stamp of a user or live robot: a digest of what it logs in with (the
    /// stored bcrypt hash or the robot's secret hash, with its creation time). It moves when
    /// the password changes, the account is deleted and re-created, or the robot is revoked and
    /// re-created; refresh tokens carry it and are refused once it moved. Derived from the
    /// replicated account state, so every node of a cluster computes the same stamp.
    /// `None` for names with no account (nothing to bind a refresh token to).
    pub fn credential_stamp(&self, user: &str) -> Option<String> {
        use sha2::Digest as _;
        let material = match user.strip_prefix(berth_internal_api::accounts::ROBOT_PREFIX) {
            Some(name) => {
                let stored = self.managed.get();
                let r = stored.robots.get(name).filter(|r| r.expires_at_ms.is_none_or(|e| accounts::now_ms() < e))?;
                format!("robot\0{name}\0{}\0{}", r.secret_sha256, r.created_at_ms)
            }
            None => format!("user\0{user}\0{}", self.passwords.stored_hash(user)?),
        };
        Some(hex::encode(&sha2::Sha256::digest(material.as_bytes())[..16]))
    }

    /// The account a verified client certificate logs in (its subject's common name), if that
    /// account exists: a certificate whose user was removed logs nobody in (it is anonymous;
    /// revoke the certificate itself with `tls.client_crl`).
    pub fn cert_account(&self, cert_user: Option<&str>, peer: Option<IpAddr>) -> Option<String> {
        let cn = cert_user?;
        if self.credential_stamp(cn).is_some() {
            return Some(cn.to_owned());
        }
        self.audit.record("cert_no_account", cn, "client certificate of no account", peer);
        None
    }

    /// Number of password users.
    pub fn user_count(&self) -> usize {
        self.passwords.len()
    }

    /// Check a user name and password: limits first, then bcrypt off the core.
    pub async fn login(&self, user: &str, password: &str, peer: Option<IpAddr>) -> Result<(), Refused> {
        // Credentials that already checked out are not limited: a logged-in user keeps working
        // while someone guesses at the same name.
        if self.passwords.cached(user, password) {
            return Ok(());
        }
        // Robot secrets are random and checked with one SHA-256: a right one is never limited
        // (CI keeps working while someone guesses), a wrong one counts like any failure.
        let robot = user.starts_with(berth_internal_api::accounts::ROBOT_PREFIX);
        if robot && self.managed.robot_valid(user, password) {
            return Ok(());
        }
        if let Some(wait) = self.limiter.wait(peer, Some(user)) {
            return Err(Refused::Limited(wait));
        }
        if robot {
            self.limiter.failed(peer, Some(user));
            self.audit.record("login_failed", user, "", peer);
            return Err(Refused::BadPassword);
        }
        match self.passwords.check(user, password).await {
            Checked::Valid => Ok(()),
            Checked::Busy => Err(Refused::Busy),
            Checked::Invalid => {
                self.limiter.failed(peer, Some(user));
                self.audit.record("login_failed", user, "", peer);
                Err(Refused::BadPassword)
            }
        }
    }

    /// Check a request's `Authorization` header; without one, a verified TLS client
    /// certificate's common name (`cert_user`) is the user.
    pub async fn authenticate(
        &self,
        header: Option<&str>,
        peer: Option<IpAddr>,
        cert_user: Option<&str>,
    ) -> Result<Identity, Refused> {
        match presented(header) {
            Presented::None => Ok(self.cert_account(cert_user, peer).map_or(Identity::Anonymous, Identity::User)),
            Presented::Basic { user, password } => {
                self.login(&user, &password, peer).await?;
                Ok(Identity::User(user))
            }
            Presented::Bearer(t) => match &self.tokens {
                Some(tokens) => tokens.verify(t).map(Identity::Token).map_err(Refused::BadToken),
                None => Err(Refused::BadToken(TokenError::Invalid)),
            },
            Presented::Unreadable => {
                if let Some(wait) = self.limiter.wait(peer, None) {
                    return Err(Refused::Limited(wait));
                }
                self.limiter.failed(peer, None);
                Err(Refused::BadPassword)
            }
        }
    }

    /// The actions `id` may take on `repo`.
    pub fn actions(&self, id: &Identity, repo: &str) -> Actions {
        match id {
            Identity::Anonymous => self.policy().allowed(&Caller::Anonymous, repo),
            Identity::User(u) => self.policy().allowed(&Caller::Named(u.clone()), repo),
            Identity::Token(g) => g.actions(repo),
        }
    }

    /// Whether `id` may take `action` on `repo`.
    pub fn may(&self, id: &Identity, repo: &str, action: Action) -> bool {
        self.actions(id, repo).has(action)
    }

    /// Whether `id` may list the catalog (filtered to what it may pull).
    pub fn may_list_catalog(&self, id: &Identity) -> bool {
        match id {
            Identity::Anonymous => self.policy().grants_anything(&Caller::Anonymous),
            Identity::User(_) => true,
            Identity::Token(g) => g.catalog(),
        }
    }

    /// The `WWW-Authenticate` value for a refused request. `host` is the request's Host
    /// header (for the default token realm), `scope` what the request needed, and
    /// `insufficient` whether the caller was authenticated but lacked it.
    pub fn challenge(&self, host: Option<&str>, https: bool, scope: Option<&str>, insufficient: bool) -> String {
        let Some(t) = &self.tokens else {
            return format!("Basic realm=\"{}\"", self.realm);
        };
        let realm = match &t.cfg.realm {
            Some(r) => r.clone(),
            // The Host header goes into a quoted header value: only a plain host[:port] does.
            None => {
                let host = host
                    .filter(|h| {
                        !h.is_empty()
                            && h.len() <= 261
                            && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
                    })
                    .unwrap_or("localhost");
                format!("{}://{host}/token", if https { "https" } else { "http" })
            }
        };
        let mut v = format!("Bearer realm=\"{realm}\",service=\"{}\"", t.cfg.service);
        if let Some(s) = scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        if insufficient {
            v.push_str(",error=\"insufficient_scope\"");
        }
        v
    }
}
