//! Users, robots, groups and rules managed through the internal API (admin API, `berth user`,
//! `berth robot`), kept in `<data_dir>/accounts.json` (0600, written atomically). Configured
//! users, groups and rules (htpasswd, `[auth]`) are not in here and cannot be changed through
//! the API.
//!
//! Robot secrets are 256 random bits: stored as their SHA-256 (a slow hash adds nothing to a
//! secret that cannot be guessed), compared in constant time, never shown again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use berth_internal_api::accounts::{Rule, ROBOT_PREFIX};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// A managed user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredUser {
    /// bcrypt hash.
    pub bcrypt: String,
    /// Created (unix ms).
    pub created_at_ms: u64,
}

/// A robot account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRobot {
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// What it is for.
    pub description: String,
    /// Created (unix ms).
    pub created_at_ms: u64,
    /// Expires (unix ms).
    pub expires_at_ms: Option<u64>,
}

/// Everything managed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    /// Users by name.
    #[serde(default)]
    pub users: BTreeMap<String, StoredUser>,
    /// Robots by name (without the `robot$` prefix).
    #[serde(default)]
    pub robots: BTreeMap<String, StoredRobot>,
    /// Groups: name → members.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Rules, after the configured ones.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl Stored {
    /// Nothing managed (no users, robots, groups or rules).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.robots.is_empty() && self.groups.is_empty() && self.rules.is_empty()
    }
}

/// How a cluster node changes the managed accounts: through the change log, as a
/// compare-and-set of the whole state (see `crate::cluster::AccountsReplicator`).
pub trait Replicator: Send + Sync {
    /// Bring this node's view up to date with the log; the position it now reflects.
    fn base(&self) -> Result<u64, String>;
    /// Commit `next` unless the accounts were changed in the log after `base` (`Ok(false)`:
    /// read again and retry). Once this returns `Ok(true)` this node has installed `next`
    /// (and perhaps later changes) by applying the log.
    fn commit(&self, next: &Stored, base: u64) -> Result<bool, String>;
}

/// Why a change to the managed accounts was not made.
#[derive(Debug, Clone)]
pub enum UpdateError {
    /// The change itself was refused, or the file could not be written (the caller's mapping).
    Change(String),
    /// The cluster's change log is unreachable: nothing changed anywhere.
    Unavailable(String),
}

impl UpdateError {
    /// The caller's error for a refused change; 503 for an unreachable change log.
    pub fn or(self, f: impl FnOnce(String) -> super::AccountError) -> super::AccountError {
        match self {
            UpdateError::Change(m) => f(m),
            UpdateError::Unavailable(m) => super::AccountError::Unavailable(m),
        }
    }
}

/// Told the bytes of every state written.
pub type OnStore = Box<dyn Fn(&[u8]) + Send + Sync>;

/// The managed accounts and their file.
pub struct Managed {
    path: PathBuf,
    state: RwLock<Arc<Stored>>,
    /// Serialises writers (read-modify-write of the file).
    write: Mutex<()>,
    /// In a cluster: every change goes through the change log first.
    replicator: std::sync::OnceLock<Box<dyn Replicator>>,
    /// Told every state written (the S3 tier keeps a copy for rebuilds).
    on_store: std::sync::OnceLock<OnStore>,
}

/// Unix ms now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Managed {
    /// Read `<data_dir>/accounts.json` (absent: nothing managed yet).
    pub fn open(data_dir: &Path) -> Result<Managed, String> {
        let path = data_dir.join("accounts.json");
        let stored = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Managed {
            path,
            state: RwLock::new(Arc::new(stored)),
            write: Mutex::new(()),
            replicator: std::sync::OnceLock::new(),
            on_store: std::sync::OnceLock::new(),
        })
    }

    /// The current state.
    pub fn get(&self) -> Arc<Stored> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Change the state with `f` and write it durably; the change is visible only once written.
    /// In a cluster the new state is committed to the change log first, unless another node
    /// changed the accounts since this one read them: then `f` runs again on the new state
    /// (a few times at most). Every node, this one included, installs it from the log.
    pub fn update<T>(
        &self,
        mut f: impl FnMut(&mut Stored) -> Result<T, String>,
    ) -> Result<(T, Arc<Stored>), UpdateError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let Some(replicate) = self.replicator.get() else {
            let mut next = (*self.get()).clone();
            let out = f(&mut next).map_err(UpdateError::Change)?;
            return self.store(next).map(|next| (out, next)).map_err(UpdateError::Change);
        };
        for _ in 0..5 {
            let base = replicate.base().map_err(UpdateError::Unavailable)?;
            let mut next = (*self.get()).clone();
            let out = f(&mut next).map_err(UpdateError::Change)?;
            if replicate.commit(&next, base).map_err(UpdateError::Unavailable)? {
                // Installed by applying the log, with whatever followed it there: storing
                // `next` here again could undo a later change from another node.
                return Ok((out, self.get()));
            }
        }
        Err(UpdateError::Unavailable("the accounts keep changing on other nodes at the same time; retry".into()))
    }

    fn store(&self, next: Stored) -> Result<Arc<Stored>, String> {
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| e.to_string())?;
        crate::app::write_private(&self.path, &bytes).map_err(|e| format!("{}: {e}", self.path.display()))?;
        if let Some(f) = self.on_store.get() {
            f(&bytes);
        }
        let next = Arc::new(next);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        Ok(next)
    }

    /// Install a state another node (or this one) committed to the cluster's change log.
    /// Takes no writer lock: it runs while this node's own `update` waits for its commit.
    pub fn install(&self, next: Stored) -> Result<Arc<Stored>, String> {
        self.store(next)
    }

    /// Call `f` with every state written from now on, and once now with the current one
    /// (the S3 tier's copy for rebuilds; set once at start).
    pub fn set_on_store(&self, f: OnStore) {
        if let Ok(bytes) = serde_json::to_vec_pretty(&*self.get()) {
            f(&bytes);
        }
        let _ = self.on_store.set(f);
    }

    /// Route every later `update` through `replicate` (cluster mode; set once at start).
    pub fn set_replicator(&self, replicate: Box<dyn Replicator>) {
        let _ = self.replicator.set(replicate);
    }

    /// Whether `login` (`robot$name`) and `secret` are a live robot's.
    pub fn robot_valid(&self, login: &str, secret: &str) -> bool {
        let Some(name) = login.strip_prefix(ROBOT_PREFIX) else { return false };
        let state = self.get();
        let Some(r) = state.robots.get(name) else {
            // Same work as a known robot: no timing difference.
            let _ = hash_secret(secret).as_bytes().ct_eq(hash_secret("").as_bytes());
            return false;
        };
        let same: bool = hash_secret(secret).as_bytes().ct_eq(r.secret_sha256.as_bytes()).into();
        same && r.expires_at_ms.is_none_or(|e| now_ms() < e)
    }
}

/// SHA-256 of a robot secret, hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new robot secret: 256 random bits, URL-safe base64.
pub fn new_secret() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("system randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
