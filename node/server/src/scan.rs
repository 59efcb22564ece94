//! Vulnerability scanning, the node's part: scan records pushed by the admin sidecar (which
//! drives Trivy) are kept in the index and mirrored in memory as compact verdict inputs, and
//! the pull policy is decided here, from the node's own data, on every manifest GET/HEAD of
//! the public listener. No call leaves the node on the pull path; with the sidecar or Trivy
//! down, the records already pushed keep being enforced.
//!
//! The policy (`[scan.policy]`) is configuration of the node, re-read on SIGHUP: a threshold
//! (`block_severity`, default `critical`), per-repository overrides (first matching glob
//! wins), an allowlist of vulnerability ids (each with repositories, a reason and an optional
//! expiry), and what to do with images not scanned yet (`block_unscanned`).
//!
//! Layering: `api` → `scan` → `berth-index`, `berth-internal-api`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use berth_index::Index;
use berth_internal_api::scan::{ScanRecord, ScanStatus, Severity, SeverityCounts};
use berth_types::{Digest, RepoName};
use serde::{Deserialize, Serialize};

/// `[scan]`: the registry API's scan endpoints and the pull policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// Turn scanning on: `…/manifests/<ref>/scan` and `…/scan/summary` answer, scan requests
    /// reach the sidecar, and the policy applies to pulls. Needs `berth-admin` with `[scan]`
    /// (a Trivy server) beside the node.
    pub enabled: bool,
    /// The pull policy.
    pub policy: PolicyConfig,
}

/// `[scan.policy]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Block pulls of images with a finding at or above this severity: `critical` (default),
    /// `high`, `medium`, `low`, `unknown`, or `none` (never block on findings).
    pub block_severity: String,
    /// Block pulls of images without a completed scan (queued, running, failed, never).
    pub block_unscanned: bool,
    /// Per-repository overrides; the first whose glob matches wins.
    pub repositories: Vec<RepoPolicyConfig>,
    /// Vulnerabilities that never block.
    pub allowlist: Vec<AllowConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            block_severity: "critical".into(),
            block_unscanned: false,
            repositories: Vec::new(),
            allowlist: Vec::new(),
        }
    }
}

/// `[[scan.policy.repositories]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoPolicyConfig {
    /// Repository glob (`*` matches across `/`), e.g. `prod/*`.
    pub repositories: String,
    /// Threshold for these repositories.
    #[serde(default)]
    pub block_severity: Option<String>,
    /// `block_unscanned` for these repositories.
    #[serde(default)]
    pub block_unscanned: Option<bool>,
}

/// `[[scan.policy.allowlist]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    /// Vulnerability id, e.g. `CVE-2024-1234`.
    pub cve: String,
    /// Repositories it applies to (glob; default all).
    #[serde(default = "all_repos")]
    pub repositories: String,
    /// Why it is accepted (kept for audits).
    pub reason: String,
    /// Until when (`2027-01-31` or RFC 3339); afterwards it blocks again.
    #[serde(default)]
    pub expires: Option<String>,
}

fn all_repos() -> String {
    "*".into()
}

fn threshold(s: &str, key: &str) -> Result<Option<Severity>, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|e| format!("{key}: {e} or none"))
}

fn pattern(s: &str, key: &str) -> Result<glob::Pattern, String> {
    glob::Pattern::new(s).map_err(|e| format!("{key} = {s:?}: {e}"))
}

fn expiry_ms(s: &str) -> Result<u64, String> {
    let full = if s.len() == 10 { format!("{s}T00:00:00Z") } else { s.to_owned() };
    let t = humantime::parse_rfc3339_weak(&full).map_err(|e| format!("allowlist expires = {s:?}: {e}"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    threshold: Option<Severity>,
    block_unscanned: bool,
}

#[derive(Debug)]
struct Allow {
    cve: String,
    repos: glob::Pattern,
    expires_ms: Option<u64>,
}

/// A compiled policy (globs and dates parsed once).
#[derive(Debug)]
pub struct Policy {
    default: Rule,
    overrides: Vec<(glob::Pattern, Option<Option<Severity>>, Option<bool>)>,
    allow: Vec<Allow>,
}

impl Policy {
    /// Compile `[scan.policy]`; the error names the key.
    pub fn compile(cfg: &PolicyConfig) -> Result<Policy, String> {
        let default = Rule {
            threshold: threshold(&cfg.block_severity, "scan.policy.block_severity")?,
            block_unscanned: cfg.block_unscanned,
        };
        let mut overrides = Vec::new();
        for r in &cfg.repositories {
            let t = match &r.block_severity {
                Some(s) => Some(threshold(s, "scan.policy.repositories.block_severity")?),
                None => None,
            };
            overrides.push((pattern(&r.repositories, "scan.policy.repositories.repositories")?, t, r.block_unscanned));
        }
        let mut allow = Vec::new();
        for a in &cfg.allowlist {
            allow.push(Allow {
                cve: a.cve.clone(),
                repos: pattern(&a.repositories, "scan.policy.allowlist.repositories")?,
                expires_ms: a.expires.as_deref().map(expiry_ms).transpose()?,
            });
        }
        Ok(Policy { default, overrides, allow })
    }

    fn rule(&self, repo: &RepoName) -> Rule {
        for (p, t, u) in &self.overrides {
            if p.matches(repo.as_str()) {
                return Rule {
                    threshold: t.unwrap_or(self.default.threshold),
                    block_unscanned: u.unwrap_or(self.default.block_unscanned),
                };
            }
        }
        self.default
    }

    fn allowed(&self, repo: &RepoName, cve: &str, now_ms: &impl Fn() -> u64) -> bool {
        self.allow
            .iter()
            .any(|a| a.cve == cve && a.repos.matches(repo.as_str()) && a.expires_ms.is_none_or(|e| now_ms() < e))
    }

    /// Why a pull of `repo@digest` is refused, or `None` when it is allowed. `now_ms` is asked
    /// only when an allowlist entry's expiry matters.
    pub fn denies(&self, repo: &RepoName, verdict: Option<&Verdict>, now_ms: impl Fn() -> u64) -> Option<String> {
        let rule = self.rule(repo);
        let completed = verdict.filter(|v| matches!(v.status, ScanStatus::Completed | ScanStatus::Unsupported));
        let Some(v) = completed else {
            if rule.block_unscanned {
                let state = verdict.map_or("not scanned", |v| v.status.as_str());
                return Some(format!(
                    "image blocked by the vulnerability policy: it has no completed scan yet ({state}) and this \
                     registry blocks unscanned images; retry once the scan is done"
                ));
            }
            return None;
        };
        let threshold = rule.threshold?;
        let mut blocking = SeverityCounts::default();
        let mut allowlisted = 0u64;
        for (sev, cve) in &v.findings {
            if *sev < threshold {
                break; // sorted, most severe first
            }
            if self.allowed(repo, cve, &now_ms) {
                allowlisted += 1;
            } else {
                blocking.add(*sev);
            }
        }
        if blocking.total() == 0 {
            return None;
        }
        let counts: Vec<String> = Severity::ALL
            .iter()
            .filter(|s| blocking.get(**s) > 0)
            .map(|s| format!("{} {s}", blocking.get(*s)))
            .collect();
        let allowed = if allowlisted > 0 { format!(" ({allowlisted} more allowlisted)") } else { String::new() };
        Some(format!(
            "image blocked by the vulnerability policy: {} vulnerabilities at or above the threshold ({threshold}){allowed}; \
             see GET /v2/{repo}/manifests/<ref>/scan",
            counts.join(", ")
        ))
    }
}

/// What the policy needs of one scan record: status and findings (severity, id), most severe
/// first.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Status.
    pub status: ScanStatus,
    /// Findings, most severe first.
    pub findings: Vec<(Severity, Box<str>)>,
}

impl From<&ScanRecord> for Verdict {
    fn from(r: &ScanRecord) -> Self {
        let mut findings: Vec<(Severity, Box<str>)> =
            r.findings.iter().map(|f| (f.severity, f.cve.clone().into_boxed_str())).collect();
        findings.sort_by_key(|f| std::cmp::Reverse(f.0));
        Verdict { status: r.status, findings }
    }
}

/// The node's scan state: every record's verdict in memory, and the policy in force.
///
/// The pull path reads it on every manifest GET, on every core: each core keeps its own memo
/// of the verdicts it looked up and of the policy (a thread-local), valid while the book's
/// generation is unchanged. A request costs one relaxed atomic load and a local map lookup —
/// no lock, no shared reference count. A stored record or a new policy bumps the generation
/// and every core starts a fresh memo.
pub struct ScanBook {
    id: u64,
    generation: AtomicU64,
    verdicts: RwLock<HashMap<Digest, Arc<Verdict>>>,
    policy: RwLock<Arc<Policy>>,
}

static BOOK_IDS: AtomicU64 = AtomicU64::new(1);

/// One core's memo of a book.
struct Memo {
    book: u64,
    generation: u64,
    policy: Arc<Policy>,
    verdicts: HashMap<Digest, Option<Arc<Verdict>>>,
}

thread_local! {
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

/// Most verdicts a core memoises before starting over.
const MEMO_MAX: usize = 50_000;

impl ScanBook {
    /// Load every record from the index and compile the policy.
    pub fn load(index: &Index, cfg: &ScanConfig) -> Result<ScanBook, String> {
        let policy = Policy::compile(&cfg.policy)?;
        let records = index.all_scans().map_err(|e| format!("reading scan records: {e}"))?;
        let verdicts = records.iter().map(|(d, r)| (d.clone(), Arc::new(Verdict::from(r)))).collect();
        Ok(ScanBook {
            id: BOOK_IDS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            verdicts: RwLock::new(verdicts),
            policy: RwLock::new(Arc::new(policy)),
        })
    }

    /// A record was stored.
    pub fn update(&self, digest: &Digest, record: &ScanRecord) {
        let v = Arc::new(Verdict::from(record));
        self.verdicts.write().unwrap_or_else(|p| p.into_inner()).insert(digest.clone(), v);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Replace the policy (SIGHUP).
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Why a pull of `repo@digest` is refused, if it is.
    pub fn denies(&self, repo: &RepoName, digest: &Digest) -> Option<String> {
        let generation = self.generation.load(Ordering::Acquire);
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        };
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            let fresh = matches!(&*m, Some(x) if x.book == self.id && x.generation == generation);
            if !fresh || m.as_ref().is_some_and(|x| x.verdicts.len() >= MEMO_MAX) {
                let policy = self.policy.read().unwrap_or_else(|p| p.into_inner()).clone();
                *m = Some(Memo { book: self.id, generation, policy, verdicts: HashMap::new() });
            }
            let memo = m.as_mut().expect("set above");
            if let Some(v) = memo.verdicts.get(digest) {
                return memo.policy.denies(repo, v.as_deref(), now);
            }
            let v = self.verdicts.read().unwrap_or_else(|p| p.into_inner()).get(digest).cloned();
            let answer = memo.policy.denies(repo, v.as_deref(), now);
            memo.verdicts.insert(digest.clone(), v);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(status: ScanStatus, f: &[(Severity, &str)]) -> Verdict {
        let mut findings: Vec<(Severity, Box<str>)> = f.iter().map(|(s, c)| (*s, (*c).into())).collect();
        findings.sort_by_key(|f| std::cmp::Reverse(f.0));
        Verdict { status, findings }
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn threshold_overrides_allowlist_expiry_and_unscanned() {
        let cfg: PolicyConfig = toml_like(
            r#"{"block_severity":"critical","block_unscanned":false,
                "repositories":[{"repositories":"prod/*","block_severity":"high","block_unscanned":true},
                                {"repositories":"lab/*","block_severity":"none"}],
                "allowlist":[{"cve":"CVE-1","reason":"not reachable"},
                             {"cve":"CVE-2","repositories":"prod/*","reason":"r","expires":"2020-01-01"}]}"#,
        );
        let p = Policy::compile(&cfg).unwrap();
        let now = 1_800_000_000_000;
        let v = verdict(
            ScanStatus::Completed,
            &[(Severity::Critical, "CVE-9"), (Severity::High, "CVE-2"), (Severity::Low, "CVE-3")],
        );
        let msg = p.denies(&repo("app/x"), Some(&v), || now).expect("critical blocks by default");
        assert!(msg.contains("1 critical") && msg.contains("threshold (critical)"), "{msg}");
        let msg = p.denies(&repo("prod/x"), Some(&v), || now).unwrap();
        assert!(msg.contains("1 critical, 1 high") && msg.contains("(high)"), "expired allowlist entry blocks: {msg}");
        assert!(p.denies(&repo("lab/x"), Some(&v), || now).is_none(), "threshold none");
        let only_allowed = verdict(ScanStatus::Completed, &[(Severity::Critical, "CVE-1")]);
        assert!(p.denies(&repo("app/x"), Some(&only_allowed), || now).is_none());
        // Unscanned: allowed by default, blocked where configured; artifacts are never blocked.
        assert!(p.denies(&repo("app/x"), None, || now).is_none());
        assert!(p.denies(&repo("prod/x"), None, || now).unwrap().contains("no completed scan"));
        let queued = verdict(ScanStatus::Queued, &[]);
        assert!(p.denies(&repo("prod/x"), Some(&queued), || now).unwrap().contains("queued"));
        assert!(p.denies(&repo("prod/x"), Some(&verdict(ScanStatus::Unsupported, &[])), || now).is_none());
        assert!(Policy::compile(&PolicyConfig { block_severity: "urgent".into(), ..Default::default() }).is_err());
    }

    fn toml_like(json: &str) -> PolicyConfig {
        serde_json::from_str(json).unwrap()
    }
}
