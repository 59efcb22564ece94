//! Registry tokens (the Docker registry token protocol): JWTs signed with ES256 or EdDSA, with
//! the granted actions per repository in the `access` claim and the key id in the header.
//!
//! Keys are PKCS#8 PEM files in a directory (`<data_dir>/token-keys` unless `key_dir` is set;
//! one is generated at first start). The most recently written key signs; every key in the
//! directory verifies. Rotation: add a key (`berth token-key new`), send SIGHUP, and delete the
//! old file once its tokens have expired (`ttl_secs` + leeway). Tokens of configured external
//! issuers are verified with their public keys (JWKS file or URL).
//!
//! Verification does no I/O: a verified token is remembered per core (keyed by the whole
//! token string, so a valid signature cannot be replayed over another payload) until it expires.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::KeyPair as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::policy::Actions;

/// `[auth.token]`: turns the token protocol on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// The `service` of challenges and the `aud` of tokens.
    pub service: String,
    /// The `iss` of tokens this node issues.
    pub issuer: String,
    /// The token endpoint's URL in challenges. Unset: `http(s)://<Host header>/token`. Set it
    /// behind a proxy or load balancer, and in production.
    pub realm: Option<String>,
    /// Where signing keys live. Unset: `<data_dir>/token-keys`.
    pub key_dir: Option<PathBuf>,
    /// Algorithm of a key generated at first start: `ES256` or `EdDSA`.
    pub algorithm: KeyAlgorithm,
    /// Lifetime of access tokens, seconds.
    pub ttl_secs: u64,
    /// Lifetime of refresh tokens (`offline_token=true`, `access_type=offline`), seconds.
    pub refresh_ttl_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`, seconds. Tokens this node issues carry an
    /// `exp` this much earlier than `ttl_secs`, so none is accepted longer than `ttl_secs`.
    pub leeway_secs: u64,
    /// Bytes of verified tokens each serving core remembers (they skip the signature check);
    /// the cache is emptied when full.
    pub verified_cache_bytes: usize,
    /// Other token servers whose tokens this node accepts.
    pub trusted_issuers: Vec<TrustedIssuer>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            service: "berth".into(),
            issuer: "berth".into(),
            realm: None,
            key_dir: None,
            algorithm: KeyAlgorithm::Es256,
            ttl_secs: 300,
            refresh_ttl_secs: 30 * 24 * 3600,
            leeway_secs: 60,
            verified_cache_bytes: 4 << 20,
            trusted_issuers: Vec::new(),
        }
    }
}

/// An external token issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// Its `iss`.
    pub issuer: String,
    /// Its public keys, as a JWKS file…
    pub jwks_file: Option<PathBuf>,
    /// … or URL (fetched at start and on SIGHUP).
    pub jwks_url: Option<String>,
}

/// Signing algorithm of generated keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256.
    #[serde(rename = "ES256", alias = "es256")]
    Es256,
    /// Ed25519.
    #[serde(rename = "EdDSA", alias = "eddsa", alias = "ed25519")]
    EdDsa,
}

/// A repository's granted actions in a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceActions {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name, or `catalog`.
    pub name: String,
    /// Granted actions.
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    access: Vec<ResourceActions>,
    /// `refresh` on refresh tokens; they are refused where an access token is expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    berth_use: Option<String>,
    /// On refresh tokens: the credential stamp of the subject when it was issued
    /// (`Auth::credential_stamp`); a refresh is refused once the stamp moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    berth_cred: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IncomingClaims {
    #[serde(default)]
    sub: String,
    exp: u64,
    #[serde(default)]
    access: Vec<ResourceActions>,
    #[serde(default)]
    berth_use: Option<String>,
    #[serde(default)]
    berth_cred: Option<String>,
}

/// A verified refresh token: whom it was issued to, and that account's credential stamp then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// `sub`.
    pub subject: String,
    /// `berth_cred` (`None` in tokens from before stamps: refused).
    pub stamp: Option<String>,
}

/// What a verified access token grants.
#[derive(Debug)]
pub struct Grant {
    /// `sub` (empty for anonymous tokens).
    pub subject: String,
    /// `exp`, unix seconds.
    pub exp: u64,
    repos: HashMap<String, Actions>,
    catalog: bool,
}

impl Grant {
    /// About how many bytes the grant takes in memory (for the cache's byte budget).
    fn approx_bytes(&self) -> usize {
        128 + self.subject.len() + self.repos.keys().map(|k| k.len() + 64).sum::<usize>()
    }

    /// The actions granted on `repo`.
    pub fn actions(&self, repo: &str) -> Actions {
        self.repos.get(repo).copied().unwrap_or(Actions::NONE)
    }

    /// Whether `registry:catalog:*` was granted.
    pub fn catalog(&self) -> bool {
        self.catalog
    }
}

/// Longest bearer token considered (a token endpoint request is bounded to
/// [`MAX_SCOPES`] scopes, which stays well below): longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// Most scopes one token request may ask for (400 beyond).
pub const MAX_SCOPES: usize = 50;

/// Why a token was refused (said in logs and in the challenge's `error_description`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, wrong algorithm, unknown key, bad signature.
    Invalid,
    /// Past `exp` (with leeway).
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// `aud` is not this service, or `iss` not the key's issuer.
    WrongAudience,
    /// A refresh token where an access token is expected, or the other way round.
    WrongUse,
}

impl TokenError {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::Invalid => "invalid token",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::WrongAudience => "token for another service or issuer",
            TokenError::WrongUse => "refresh token used as access token (or the reverse)",
        }
    }
}

struct VerifyKey {
    key: DecodingKey,
    alg: Algorithm,
    issuer: String,
    /// One of this node's keys: its ES256 signatures are low-S (canonical) by construction,
    /// and a high-S twin is refused.
    own: bool,
}

struct Keys {
    signing: Option<(String, EncodingKey, Algorithm)>,
    verify: HashMap<String, VerifyKey>,
    jwks: serde_json::Value,
}

/// Issues and verifies tokens.
pub struct Tokens {
    /// Bytes held by the verified-token caches of all cores (`berth_auth_token_cache_bytes`).
    cache_bytes: Arc<AtomicU64>,
    /// Configuration in force.
    pub cfg: TokenConfig,
    key_dir: PathBuf,
    keys: RwLock<Arc<Keys>>,
    generation: AtomicU64,
}

/// Keys could not be loaded: names the file.
#[derive(Debug, thiserror::Error)]
#[error("auth.token: {0}")]
pub struct KeyError(pub String);

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Tokens {
    /// Load (or, in an empty key directory, generate) keys.
    pub fn new(cfg: &TokenConfig, data_dir: &Path) -> Result<Tokens, KeyError> {
        let key_dir = cfg.key_dir.clone().unwrap_or_else(|| data_dir.join("token-keys"));
        let keys = load_keys(cfg, &key_dir, true)?;
        Ok(Tokens::with_keys(cfg, key_dir, keys))
    }

    fn with_keys(cfg: &TokenConfig, key_dir: PathBuf, keys: Keys) -> Tokens {
        Tokens {
            cfg: cfg.clone(),
            key_dir,
            keys: RwLock::new(Arc::new(keys)),
            generation: AtomicU64::new(0),
            cache_bytes: Arc::default(),
        }
    }

    /// Load the keys of `cfg.key_dir` without generating any (CLI).
    pub fn load_only(cfg: &TokenConfig) -> Result<Tokens, KeyError> {
        let key_dir = cfg.key_dir.clone().ok_or_else(|| KeyError("no key directory".into()))?;
        let keys = load_keys(cfg, &key_dir, false)?;
        Ok(Tokens::with_keys(cfg, key_dir, keys))
    }

    /// Re-read keys and trusted issuers (SIGHUP). Returns how many keys verify.
    pub fn reload(&self) -> Result<usize, KeyError> {
        let keys = load_keys(&self.cfg, &self.key_dir, false)?;
        let n = keys.verify.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        // Tokens of a removed key must stop working: forget what the cores remember.
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }

    fn keys(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The public keys (JWKS), for `GET /token/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        self.keys().jwks.clone()
    }

    /// Sign an access token for `subject` (empty when anonymous) granting `access`. Returns the
    /// token and its lifetime in seconds.
    pub fn issue(&self, subject: &str, access: Vec<ResourceActions>) -> Result<(String, u64), KeyError> {
        self.sign(subject, access, None, self.cfg.ttl_secs)
    }

    /// Sign a refresh token for `subject`, bound to its credential `stamp`.
    pub fn issue_refresh(&self, subject: &str, stamp: &str) -> Result<String, KeyError> {
        self.sign_with(subject, Vec::new(), Some("refresh".into()), Some(stamp.to_owned()), self.cfg.refresh_ttl_secs)
            .map(|(t, _)| t)
    }

    fn sign(
        &self,
        subject: &str,
        access: Vec<ResourceActions>,
        berth_use: Option<String>,
        ttl: u64,
    ) -> Result<(String, u64), KeyError> {
        self.sign_with(subject, access, berth_use, None, ttl)
    }

    fn sign_with(
        &self,
        subject: &str,
        access: Vec<ResourceActions>,
        berth_use: Option<String>,
        berth_cred: Option<String>,
        ttl: u64,
    ) -> Result<(String, u64), KeyError> {
        let keys = self.keys();
        let Some((kid, key, alg)) = &keys.signing else {
            return Err(KeyError("no signing key".into()));
        };
        let now = now_secs();
        let claims = Claims {
            iss: self.cfg.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.cfg.service.clone(),
            // Accepted until `exp` + leeway: issued so that is at most `ttl` from now.
            exp: now + ttl.saturating_sub(self.cfg.leeway_secs),
            nbf: now.saturating_sub(1),
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
            berth_use,
            berth_cred,
        };
        let mut header = Header::new(*alg);
        header.kid = Some(kid.clone());
        let lifetime = claims.exp - now;
        let token = jsonwebtoken::encode(&header, &claims, key).map_err(|e| KeyError(e.to_string()))?;
        let token = if *alg == Algorithm::ES256 { super::es256::low_s(token) } else { token };
        Ok((token, lifetime))
    }

    /// Bytes held by the verified-token caches of all cores.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes.load(Ordering::Relaxed)
    }

    /// Verify an access token (cached per core, by the token's SHA-256, within
    /// `verified_cache_bytes`; refused tokens are never cached).
    pub fn verify(&self, token: &str) -> Result<Arc<Grant>, TokenError> {
        /// Verified tokens of one core: the key generation they were verified under, the
        /// grants by token hash, and the bytes they take.
        #[derive(Default)]
        struct Seen {
            generation: u64,
            grants: HashMap<[u8; 32], Arc<Grant>>,
            bytes: usize,
            /// The shared gauge this core's bytes are counted in.
            counted: Option<Arc<AtomicU64>>,
        }
        impl Seen {
            fn clear(&mut self) {
                if let Some(c) = &self.counted {
                    c.fetch_sub(self.bytes as u64, Ordering::Relaxed);
                }
                self.grants.clear();
                self.bytes = 0;
            }
        }
        thread_local! {
            static SEEN: RefCell<Seen> = RefCell::new(Seen::default());
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let generation = self.generation.load(Ordering::Relaxed);
        let now = now_secs();
        let hit = SEEN.with(|s| {
            let mut s = s.borrow_mut();
            if s.generation != generation {
                s.clear();
                s.generation = generation;
            }
            s.grants.get(&key).cloned()
        });
        if let Some(g) = hit {
            return if now <= g.exp + self.cfg.leeway_secs { Ok(g) } else { Err(TokenError::Expired) };
        }
        let claims = self.decode(token)?;
        if claims.berth_use.is_some() {
            return Err(TokenError::WrongUse);
        }
        let mut repos: HashMap<String, Actions> = HashMap::new();
        let mut catalog = false;
        for ra in &claims.access {
            let actions = Actions::from_names(ra.actions.iter().map(String::as_str));
            match ra.kind.as_str() {
                "repository" => {
                    let e = repos.entry(ra.name.clone()).or_default();
                    *e = Actions::from_names(e.names().into_iter().chain(actions.names()));
                }
                "registry" if ra.name == "catalog" && !ra.actions.is_empty() => catalog = true,
                _ => {}
            }
        }
        let grant = Arc::new(Grant { subject: claims.sub, exp: claims.exp, repos, catalog });
        let size = grant.approx_bytes();
        let budget = self.cfg.verified_cache_bytes;
        if size <= budget {
            SEEN.with(|s| {
                let mut s = s.borrow_mut();
                if s.counted.is_none() {
                    s.counted = Some(self.cache_bytes.clone());
                }
                if s.bytes + size > budget {
                    s.clear();
                }
                if s.grants.insert(key, grant.clone()).is_none() {
                    s.bytes += size;
                    self.cache_bytes.fetch_add(size as u64, Ordering::Relaxed);
                }
            });
        }
        Ok(grant)
    }

    /// Verify a refresh token; returns its subject and credential stamp (the caller compares
    /// the stamp with the account's current one).
    pub fn verify_refresh(&self, token: &str) -> Result<Refresh, TokenError> {
        let claims = self.decode(token)?;
        if claims.berth_use.as_deref() != Some("refresh") {
            return Err(TokenError::WrongUse);
        }
        Ok(Refresh { subject: claims.sub, stamp: claims.berth_cred })
    }

    fn decode(&self, token: &str) -> Result<IncomingClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let keys = self.keys();
        let kid = header.kid.as_deref().ok_or(TokenError::Invalid)?;
        let vk = keys.verify.get(kid).ok_or(TokenError::Invalid)?;
        if header.alg != vk.alg {
            return Err(TokenError::Invalid);
        }
        if vk.own && vk.alg == Algorithm::ES256 && super::es256::high_s(token) {
            return Err(TokenError::Invalid);
        }
        let mut v = Validation::new(vk.alg);
        v.leeway = self.cfg.leeway_secs;
        v.validate_nbf = true;
        v.set_audience(&[&self.cfg.service]);
        v.set_issuer(&[&vk.issuer]);
        v.set_required_spec_claims(&["exp", "aud", "iss"]);
        jsonwebtoken::decode::<IncomingClaims>(token, &vk.key, &v).map(|d| d.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidAudience | K::InvalidIssuer => TokenError::WrongAudience,
                _ => TokenError::Invalid,
            }
        })
    }
}

/// A private key file's key pair.
struct Loaded {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn kid_of(public: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(public)[..12])
}

fn load_pem(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let p = pem::parse(&text).map_err(|e| format!("not a PEM file: {e}"))?;
    if p.tag() != "PRIVATE KEY" {
        return Err(format!("expected a PKCS#8 \"PRIVATE KEY\", found {:?}", p.tag()));
    }
    let der = p.contents();
    let rng = ring::rand::SystemRandom::new();
    if let Ok(kp) =
        ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
    {
        let public = kp.public_key().as_ref();
        let kid = kid_of(public);
        let (x, y) = (&public[1..33], &public[33..65]);
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y),
            "kid": kid, "alg": "ES256", "use": "sig"});
        return Ok(Loaded { kid, alg: Algorithm::ES256, encoding: EncodingKey::from_ec_der(der), jwk });
    }
    if let Ok(kp) = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        let public = kp.public_key().as_ref();
        let kid = kid_of(public);
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(public),
            "kid": kid, "alg": "EdDSA", "use": "sig"});
        return Ok(Loaded { kid, alg: Algorithm::EdDSA, encoding: EncodingKey::from_ed_der(der), jwk });
    }
    Err("not a P-256 (ES256) or Ed25519 (EdDSA) private key".into())
}

/// Write a new private key into `dir` (mode 0600). Returns its path and key id.
pub fn generate_key(dir: &Path, alg: KeyAlgorithm) -> std::io::Result<(PathBuf, String)> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let rng = ring::rand::SystemRandom::new();
    let der = match alg {
        KeyAlgorithm::Es256 => {
            ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        }
        KeyAlgorithm::EdDsa => ring::signature::Ed25519KeyPair::generate_pkcs8(&rng),
    }
    .map_err(|_| std::io::Error::other("key generation failed"))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let text = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let path = dir.join(format!("{stamp}.pem"));
    let tmp = dir.join(format!(".{stamp}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    let kid = load_pem(&path).map_err(std::io::Error::other)?.kid;
    Ok((path, kid))
}

fn load_keys(cfg: &TokenConfig, dir: &Path, generate: bool) -> Result<Keys, KeyError> {
    let list = |dir: &Path| -> std::io::Result<Vec<(std::time::SystemTime, PathBuf)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pem") {
                out.push((e.metadata()?.modified()?, p));
            }
        }
        out.sort();
        Ok(out)
    };
    let err = |m: String| KeyError(format!("key directory {}: {m}", dir.display()));
    let mut files = match list(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(err(e.to_string())),
    };
    if files.is_empty() && generate {
        let (path, kid) = generate_key(dir, cfg.algorithm).map_err(|e| err(e.to_string()))?;
        tracing::info!(key = %path.display(), kid, "generated a token signing key");
        files = list(dir).map_err(|e| err(e.to_string()))?;
    }
    let mut signing = None;
    let mut verify = HashMap::new();
    let mut jwks = Vec::new();
    for (_, path) in &files {
        let l = load_pem(path).map_err(|m| KeyError(format!("{}: {m}", path.display())))?;
        verify.insert(
            l.kid.clone(),
            VerifyKey {
                key: DecodingKey::from_jwk(
                    &serde_json::from_value::<Jwk>(l.jwk.clone()).map_err(|e| err(e.to_string()))?,
                )
                .map_err(|e| err(e.to_string()))?,
                alg: l.alg,
                issuer: cfg.issuer.clone(),
                own: true,
            },
        );
        jwks.push(l.jwk);
        // Files are sorted oldest first: the newest signs.
        signing = Some((l.kid, l.encoding, l.alg));
    }
    if signing.is_none() {
        return Err(err("no .pem key (generate one with `berth token-key new`)".into()));
    }
    let mut seen_issuers = HashSet::new();
    for t in &cfg.trusted_issuers {
        if !seen_issuers.insert(t.issuer.clone()) {
            return Err(KeyError(format!("trusted issuer {:?} listed twice", t.issuer)));
        }
        let set = fetch_jwks(t).map_err(|m| KeyError(format!("trusted issuer {:?}: {m}", t.issuer)))?;
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let Some(alg) = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok()).or(
                match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Some(Algorithm::ES256),
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
                    _ => None,
                },
            ) else {
                continue;
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| KeyError(format!("trusted issuer key {kid}: {e}")))?;
            verify.insert(kid, VerifyKey { key, alg, issuer: t.issuer.clone(), own: false });
        }
    }
    Ok(Keys { signing, verify, jwks: serde_json::json!({ "keys": jwks }) })
}

fn fetch_jwks(t: &TrustedIssuer) -> Result<JwkSet, String> {
    let text = match (&t.jwks_file, &t.jwks_url) {
        (Some(f), None) => std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?,
        (None, Some(u)) => ureq::get(u)
            .timeout(std::time::Duration::from_secs(10))
            .call()
            .map_err(|e| format!("{u}: {e}"))?
            .into_string()
            .map_err(|e| format!("{u}: {e}"))?,
        _ => return Err("set exactly one of jwks_file and jwks_url".into()),
    };
    serde_json::from_str(&text).map_err(|e| format!("not a JWKS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(dir: &Path, alg: KeyAlgorithm) -> Tokens {
        let cfg = TokenConfig { algorithm: alg, ..TokenConfig::default() };
        Tokens::new(&cfg, dir).unwrap()
    }

    fn access(name: &str, actions: &[&str]) -> Vec<ResourceActions> {
        vec![ResourceActions {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
        }]
    }

    #[test]
    fn issue_and_verify_both_algorithms() {
        for alg in [KeyAlgorithm::Es256, KeyAlgorithm::EdDsa] {
            let d = tempfile::tempdir().unwrap();
            let t = tokens(d.path(), alg);
            let (tok, ttl) = t.issue("alice", access("a/b", &["pull", "push"])).unwrap();
            // `expires_in` is ttl_secs less the leeway (accepted for ttl_secs in all).
            assert_eq!(ttl, 240);
            let g = t.verify(&tok).unwrap();
            assert_eq!(g.subject, "alice");
            assert_eq!(g.actions("a/b").names(), vec!["pull", "push"]);
            assert!(g.actions("a/c").is_empty());
            assert_eq!(t.jwks()["keys"].as_array().unwrap().len(), 1);
        }
    }

    #[test]
    fn tampering_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let t = tokens(d.path(), KeyAlgorithm::Es256);
        let (tok, _) = t.issue("alice", access("a", &["pull"])).unwrap();
        let parts: Vec<&str> = tok.split('.').collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // Changed claims, same signature.
        let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        claims["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"]);
        let forged = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
        assert_eq!(t.verify(&forged).unwrap_err(), TokenError::Invalid);
        // alg none.
        let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        let mut none = header.clone();
        none["alg"] = "none".into();
        assert_eq!(
            t.verify(&format!("{}.{}.", b64.encode(none.to_string()), parts[1])).unwrap_err(),
            TokenError::Invalid
        );
        // Another key with the same kid.
        let d2 = tempfile::tempdir().unwrap();
        let other = tokens(d2.path(), KeyAlgorithm::Es256);
        let (tok2, _) = other.issue("alice", access("a", &["pull"])).unwrap();
        let p2: Vec<&str> = tok2.split('.').collect();
        assert_eq!(t.verify(&format!("{}.{}.{}", parts[0], p2[1], p2[2])).unwrap_err(), TokenError::Invalid);
        assert_eq!(t.verify(&tok2).unwrap_err(), TokenError::Invalid, "unknown kid");
        // A refresh token is not an access token, and the reverse.
        let r = t.issue_refresh("alice", "stamp-1").unwrap();
        assert_eq!(t.verify(&r).unwrap_err(), TokenError::WrongUse);
        assert_eq!(t.verify_refresh(&tok).unwrap_err(), TokenError::WrongUse);
        assert_eq!(t.verify_refresh(&r).unwrap(), Refresh { subject: "alice".into(), stamp: Some("stamp-1".into()) });
    }

    /// Round 2 "what held": every header-borne forgery is refused. A token signed by another
    /// key that names our `kid` and carries its own key (`jwk`), a key URL (`jku`) or chain
    /// (`x5c`); HS256 with our public key as the secret; a path-like `kid`.
    #[test]
    fn header_borne_keys_and_algorithm_confusion_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let t = tokens(d.path(), KeyAlgorithm::Es256);
        let ours = t.keys().signing.as_ref().unwrap().0.clone();
        let d2 = tempfile::tempdir().unwrap();
        let attacker = tokens(d2.path(), KeyAlgorithm::Es256);
        let keys = attacker.keys();
        let (_, akey, _) = keys.signing.as_ref().unwrap();
        let now = now_secs();
        let claims = Claims {
            iss: "berth".into(),
            sub: "mallory".into(),
            aud: "berth".into(),
            exp: now + 60,
            nbf: now - 1,
            iat: now,
            jti: "x".into(),
            access: access("a", &["pull", "push"]),
            berth_use: None,
            berth_cred: None,
        };
        let attacker_jwk: Jwk = serde_json::from_value(attacker.jwks()["keys"][0].clone()).unwrap();
        for variant in 0..4 {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(ours.clone());
            match variant {
                0 => h.jwk = Some(attacker_jwk.clone()),
                1 => h.jku = Some("http://127.0.0.1:1/jwks.json".into()),
                2 => h.x5c = Some(vec!["MIIB".into()]),
                _ => h.kid = Some("../../../../etc/passwd".into()),
            }
            let forged = jsonwebtoken::encode(&h, &claims, akey).unwrap();
            assert_eq!(t.verify(&forged).unwrap_err(), TokenError::Invalid, "variant {variant}");
        }
        // HS256 with our public key (as published) as the HMAC secret.
        let public = t.jwks().to_string();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(ours);
        let forged = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(public.as_bytes())).unwrap();
        assert_eq!(t.verify(&forged).unwrap_err(), TokenError::Invalid);
    }

    /// Tokens of a configured external issuer are accepted (verified with its JWKS), with
    /// their own `iss`; a token claiming that issuer but signed by our key is not.
    #[test]
    fn trusted_external_issuer() {
        let ext_dir = tempfile::tempdir().unwrap();
        let external = Tokens::new(
            &TokenConfig {
                issuer: "https://auth.example".into(),
                algorithm: KeyAlgorithm::EdDsa,
                ..TokenConfig::default()
            },
            ext_dir.path(),
        )
        .unwrap();
        let jwks = ext_dir.path().join("issuer.jwks");
        std::fs::write(&jwks, external.jwks().to_string()).unwrap();
        let d = tempfile::tempdir().unwrap();
        let ours = Tokens::new(
            &TokenConfig {
                trusted_issuers: vec![TrustedIssuer {
                    issuer: "https://auth.example".into(),
                    jwks_file: Some(jwks),
                    jwks_url: None,
                }],
                ..TokenConfig::default()
            },
            d.path(),
        )
        .unwrap();
        let (t, _) = external.issue("svc", access("a/b", &["pull"])).unwrap();
        let g = ours.verify(&t).unwrap();
        assert_eq!(g.subject, "svc");
        assert_eq!(g.actions("a/b").names(), vec!["pull"]);
        // Our own key with the external issuer's name: the key's issuer must match.
        let impostor =
            Tokens::new(&TokenConfig { issuer: "https://auth.example".into(), ..TokenConfig::default() }, d.path())
                .unwrap();
        let (t, _) = impostor.issue("svc", access("a/b", &["push"])).unwrap();
        assert_eq!(ours.verify(&t).unwrap_err(), TokenError::WrongAudience);
    }

    #[test]
    fn accepted_no_longer_than_ttl_and_the_cache_is_bounded_by_bytes() {
        let d = tempfile::tempdir().unwrap();
        let cfg = TokenConfig { ttl_secs: 300, leeway_secs: 60, verified_cache_bytes: 64 * 1024, ..Default::default() };
        let t = Tokens::new(&cfg, d.path()).unwrap();
        // Security round 2, finding 12: exp + leeway is the promised lifetime, not more.
        let (tok, expires_in) = t.issue("a", vec![]).unwrap();
        let p = tok.split('.').nth(1).unwrap();
        use base64::Engine as _;
        let c: serde_json::Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
        let (exp, iat) = (c["exp"].as_u64().unwrap(), c["iat"].as_u64().unwrap());
        assert_eq!(exp + cfg.leeway_secs - iat, cfg.ttl_secs, "accepted for ttl_secs in all");
        assert_eq!(expires_in, exp - iat);
        // Finding 3: big tokens fill the cache only up to its byte budget, keyed by hash.
        let names: Vec<ResourceActions> = (0..50)
            .map(|i| ResourceActions {
                kind: "repository".into(),
                name: format!("{}{i}", "n".repeat(200)),
                actions: vec!["pull".into()],
            })
            .collect();
        for i in 0..200 {
            let (tok, _) = t.issue(&format!("user{i}"), names.clone()).unwrap();
            assert!(tok.len() > 10_000 && tok.len() < MAX_TOKEN_BYTES);
            t.verify(&tok).unwrap();
            assert!(t.cache_bytes() <= 64 * 1024, "{} cached bytes", t.cache_bytes());
        }
        assert!(t.cache_bytes() > 0);
        // Refused tokens are never cached; oversized ones are not even decoded.
        let before = t.cache_bytes();
        let (tok, _) = t.issue("z", vec![]).unwrap();
        let i = tok.len() - 20;
        let flipped = if &tok[i..=i] == "A" { "B" } else { "A" };
        let forged = format!("{}{flipped}{}", &tok[..i], &tok[i + 1..]);
        assert_eq!(t.verify(&forged).unwrap_err(), TokenError::Invalid);
        assert_eq!(t.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err(), TokenError::Invalid);
        assert_eq!(t.cache_bytes(), before);
    }

    #[test]
    fn expired_wrong_audience_and_rotation() {
        let d = tempfile::tempdir().unwrap();
        let cfg = TokenConfig { ttl_secs: 0, leeway_secs: 0, ..TokenConfig::default() };
        let t = Tokens::new(&cfg, d.path()).unwrap();
        let (tok, _) = t.issue("a", vec![]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(t.verify(&tok).unwrap_err(), TokenError::Expired);
        let other = Tokens::new(&TokenConfig { service: "elsewhere".into(), ..cfg.clone() }, d.path()).unwrap();
        let (tok, _) = other.issue("a", vec![]).unwrap();
        assert_eq!(t.verify(&tok).unwrap_err(), TokenError::WrongAudience);
        // Rotation: a new key signs, the old one still verifies until it is removed.
        let t = Tokens::new(&TokenConfig::default(), d.path()).unwrap();
        let (old, _) = t.issue("a", vec![]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let key_dir = d.path().join("token-keys");
        let (new_path, new_kid) = generate_key(&key_dir, KeyAlgorithm::EdDsa).unwrap();
        assert_eq!(t.reload().unwrap(), 2);
        let (new, _) = t.issue("a", vec![]).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&new).unwrap().kid.unwrap(), new_kid);
        assert!(t.verify(&old).is_ok() && t.verify(&new).is_ok());
        for e in std::fs::read_dir(&key_dir).unwrap() {
            let p = e.unwrap().path();
            if p != new_path {
                std::fs::remove_file(p).unwrap();
            }
        }
        t.reload().unwrap();
        assert_eq!(t.verify(&old).unwrap_err(), TokenError::Invalid, "removed key no longer verifies (cache dropped)");
        assert!(t.verify(&new).is_ok());
    }
}
