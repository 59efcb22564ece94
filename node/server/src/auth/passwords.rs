//! Password users (htpasswd file and inline `[[auth.users]]`, bcrypt) and their verification.
//!
//! bcrypt is deliberately slow (~50–100 ms at cost 10). It never runs on a serving core: checks
//! go to a small pool of low-priority threads through a bounded queue (full → the caller answers
//! 429), so a flood of wrong passwords cannot stall other requests. A successful check is cached
//! under the SHA-256 of the presented credentials for a few minutes: a pull of 20 layers costs
//! one bcrypt, not 20.
//!
//! Unknown users are checked against a dummy hash of the same cost as the real ones, so the
//! response time does not reveal which names exist.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;

const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 10_000;
/// bcrypt uses the first 72 bytes of a password and ignores the rest: a longer password would
/// let any suffix log in. Refused at login and by `berth hash-password`.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// The cost `berth hash-password` writes, and the dummy's cost when no hash is loaded.
pub const DEFAULT_COST: u32 = 10;

/// The outcome of a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Right password for this user.
    Valid,
    /// Unknown user, wrong password, or a password bcrypt cannot check.
    Invalid,
    /// Too many checks already queued: try again shortly.
    Busy,
}

/// Users and their bcrypt hashes, with the verification pool.
pub struct Passwords {
    table: RwLock<Arc<Table>>,
    verified: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    pool: Pool,
}

struct Table {
    users: HashMap<String, String>,
    /// A real bcrypt hash, of the cost most users have, checked for unknown users.
    dummy: String,
}

impl Table {
    fn new(users: HashMap<String, String>) -> Table {
        let cost = typical_cost(users.values()).unwrap_or(DEFAULT_COST);
        let dummy = bcrypt::hash("berth-dummy-password", cost).unwrap_or_default();
        Table { users, dummy }
    }
}

/// The most common cost among bcrypt hashes (`$2b$10$…` → 10).
fn typical_cost<'a>(hashes: impl Iterator<Item = &'a String>) -> Option<u32> {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for h in hashes {
        if let Some(c) = h.split('$').nth(2).and_then(|c| c.parse::<u32>().ok()) {
            *counts.entry(c).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(c, n)| (*n, *c)).map(|(c, _)| c)
}

impl Passwords {
    /// Load the users of `cfg` plus `extra` (managed users: name → bcrypt) and start the
    /// verification threads.
    pub fn new(cfg: &AuthConfig, extra: &HashMap<String, String>) -> Result<Passwords, AuthFileError> {
        let mut users = load_users(cfg)?;
        users.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        let threads = if cfg.verify_threads == 0 {
            (std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) / 2).max(1)
        } else {
            cfg.verify_threads
        };
        Ok(Passwords {
            table: RwLock::new(Arc::new(Table::new(users))),
            verified: Mutex::new(HashMap::new()),
            pool: Pool::start(threads, cfg.max_pending_verifications.max(1)),
        })
    }

    /// Whether any user is configured.
    pub fn is_empty(&self) -> bool {
        self.table().users.is_empty()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.table().users.len()
    }

    /// Whether `user` exists.
    pub fn contains(&self, user: &str) -> bool {
        self.table().users.contains_key(user)
    }

    /// The stored bcrypt hash of `user`: what a refresh token's credential stamp is derived
    /// from (a new password or a re-created user has a new salt, so a new stamp).
    pub fn stored_hash(&self, user: &str) -> Option<String> {
        self.table().users.get(user).cloned()
    }

    /// Hash a new password (bcrypt, cost [`DEFAULT_COST`]) off the calling thread. `None` when
    /// the queue is full.
    pub async fn hash(&self, password: &str) -> Option<String> {
        self.pool.run(Work::Hash(password.to_owned())).await.map(|r| r.unwrap_or_default())
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the user list (SIGHUP). Cached verifications are dropped, so a removed user or a
    /// changed password takes effect at once. Returns the number of users now known.
    pub fn reload(&self, cfg: &AuthConfig, extra: &HashMap<String, String>) -> Result<usize, AuthFileError> {
        let mut users = load_users(cfg)?;
        users.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        let table = Table::new(users);
        let n = table.users.len();
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(n)
    }

    /// A cached successful check of exactly these credentials, if any (no bcrypt).
    pub fn cached(&self, user: &str, password: &str) -> bool {
        let key = cache_key(user, password);
        let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up by a hash of the secret: the map's comparisons reveal nothing through timing.
        matches!(cache.get(&key), Some((u, at)) if u == user && at.elapsed() < CACHE_TTL)
    }

    /// Check a password, off the calling thread. Always runs one bcrypt verification (against
    /// the dummy hash for unknown users), unless the queue is full.
    pub async fn check(&self, user: &str, password: &str) -> Checked {
        if self.cached(user, password) {
            return Checked::Valid;
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Checked::Invalid;
        }
        let table = self.table();
        let (hash, known) = match table.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (table.dummy.clone(), false),
        };
        let Some(ok) = self.pool.run(Work::Verify { password: password.to_owned(), hash }).await else {
            return Checked::Busy;
        };
        let ok = ok.is_some();
        let ok: bool = (u8::from(ok) & u8::from(known)).ct_eq(&1).into();
        if !ok {
            return Checked::Invalid;
        }
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(cache_key(user, password), (user.to_owned(), Instant::now()));
        Checked::Valid
    }
}

fn cache_key(user: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    h.finalize().into()
}

/// bcrypt threads fed by a bounded queue. Each answers through a oneshot channel, which any
/// executor can await (the cores run monoio).
struct Pool {
    queue: std::sync::mpsc::SyncSender<Job>,
}

/// What a bcrypt thread does.
enum Work {
    /// Check a password: answers `Some(String::new())` when it matches, `None` otherwise.
    Verify { password: String, hash: String },
    /// Hash a password: answers the hash (`None` when bcrypt refuses it).
    Hash(String),
}

struct Job {
    work: Work,
    reply: tokio::sync::oneshot::Sender<Option<String>>,
}

impl Pool {
    fn start(threads: usize, pending: usize) -> Pool {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(pending);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("berth-bcrypt-{i}")).spawn(move || {
                // Below the serving cores: a login flood slows logins, not pulls.
                // SAFETY: setpriority on this thread (PRIO_PROCESS with the thread id).
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
                loop {
                    let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(j) => j,
                        Err(_) => return, // every sender gone: the node stopped
                    };
                    let answer = match job.work {
                        Work::Verify { password, hash } => {
                            bcrypt::verify(&password, &hash).unwrap_or(false).then(String::new)
                        }
                        Work::Hash(password) => bcrypt::hash(password, DEFAULT_COST).ok(),
                    };
                    let _ = job.reply.send(answer);
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        Pool { queue: tx }
    }

    /// Run `work` on a bcrypt thread. `None` when the queue is full (or the pool is gone).
    async fn run(&self, work: Work) -> Option<Option<String>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue.try_send(Job { work, reply }).ok()?;
        answer.await.ok()
    }
}

/// The htpasswd file could not be read: names the file.
#[derive(Debug, thiserror::Error)]
#[error("auth.htpasswd {path}: {error}")]
pub struct AuthFileError {
    /// The file.
    pub path: String,
    /// Why (in the message, not as a source: the chain would print it twice).
    pub error: std::io::Error,
}

fn load_users(cfg: &AuthConfig) -> Result<HashMap<String, String>, AuthFileError> {
    let mut users = HashMap::new();
    if let Some(path) = &cfg.htpasswd {
        users.extend(parse_htpasswd(path).map_err(|error| AuthFileError { path: path.display().to_string(), error })?);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The dummy hash had bcrypt's default cost (12) while users had 10: unknown users answered
    /// 4-5x slower, revealing which names exist.
    #[test]
    fn the_dummy_costs_what_users_cost() {
        for cost in [4, 6] {
            let users = [("a", cost), ("b", cost), ("c", 5)]
                .iter()
                .map(|(u, c)| (u.to_string(), bcrypt::hash("pw", *c).unwrap()))
                .collect();
            let t = Table::new(users);
            assert_eq!(t.dummy.split('$').nth(2).unwrap().parse::<u32>().unwrap(), cost);
        }
        assert_eq!(Table::new(HashMap::new()).dummy.split('$').nth(2).unwrap(), DEFAULT_COST.to_string());
    }

    #[test]
    fn typical_cost_is_the_most_common() {
        let hs: Vec<String> = ["$2b$10$x", "$2y$12$y", "$2b$10$z", "junk"].iter().map(|s| s.to_string()).collect();
        assert_eq!(typical_cost(hs.iter()), Some(10));
        assert_eq!(typical_cost([].iter()), None);
    }
}
