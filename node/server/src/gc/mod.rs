//! Garbage collection: online mark-and-sweep over the node's own index.
//!
//! **Plan** (the same for a dry run and a real run, from one consistent index snapshot):
//! 1. retention rules pick tags to delete (never a protected one);
//! 2. roots: manifests with a remaining tag, and untagged manifests (all of them by default;
//!    with `untagged_max_age_secs`, only those pushed more recently);
//! 3. mark: from the roots, index children, and (with `keep_referrers`) every referrer of a
//!    marked manifest, transitively;
//! 4. unmarked manifests go; blobs no marked manifest references go once unused (not committed,
//!    mounted, pulled or HEADed) for the grace period; blob files the index does not know (a crash
//!    between rename and commit) go after the grace period.
//!
//! **Sweep**: every deletion re-checks, under the index's writer lock, that nothing references
//! what it deletes (`Index::delete_manifest_if_unused`, `Index::remove_blob_if_unused`), and the
//! manifest push path checks its references under the same lock. So pushes and pulls continue
//! during GC and no acknowledged manifest ever loses a blob; what became used meanwhile is kept
//! (`kept_in_use`). Index first, file second: a crash mid-GC leaves orphan files that the next
//! run removes. S3 copies are removed by the tier's mirror when it sees `blob_removed`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_index::{BlobMeta, Durability, Export, Index, Kept};
use berth_types::{Digest, RepoName, Tag};

use crate::store::BlobStore;

mod cluster;
use crate::cluster::renewal::LeaseRenewal;
use cluster::run_clustered;

pub use berth_internal_api::gc::{
    human_bytes, BlobItem, GcPolicy, GcReport, GcRequest, GraceHeld, JobState, JobView, LinkItem, ManifestItem,
    RepoTotals, RetentionRule, TagItem,
};

/// Progress of a running job.
#[derive(Debug, Default)]
pub struct Progress {
    /// 0 planning, 1 tags, 2 manifests, 3 blobs, 4 files, 5 stale links, 6 done.
    pub phase: AtomicU64,
    /// Items done in this phase.
    pub done: AtomicU64,
    /// Items in this phase.
    pub total: AtomicU64,
}

impl Progress {
    fn phase(&self, phase: u64, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }
    fn tick(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
    /// Name of the current phase.
    pub fn phase_name(&self) -> &'static str {
        match self.phase.load(Ordering::Relaxed) {
            0 => "planning",
            1 => "deleting tags",
            2 => "deleting manifests",
            3 => "deleting blobs",
            4 => "deleting orphan files",
            5 => "removing stale links",
            _ => "done",
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn glob(pattern: &str) -> Option<glob::Pattern> {
    glob::Pattern::new(pattern).ok()
}

/// The plan of a run.
struct Plan {
    tags: Vec<(RepoName, Tag, Digest)>,
    manifests: Vec<(RepoName, Digest, u64)>,
    blobs: Vec<(Digest, u64, String)>,
    orphans: Vec<(PathBuf, u64)>,
    blob_cutoff_ms: u64,
    start_ms: u64,
    held: GraceHeld,
    stale_links: Vec<(RepoName, Digest)>,
    links: HashMap<Digest, Vec<String>>,
    examined_blobs: u64,
    examined_manifests: u64,
}

fn retention_deletes(ex: &Export, policy: &GcPolicy, now: u64) -> Vec<(RepoName, Tag, Digest)> {
    let pushed: HashMap<(&RepoName, &Digest), u64> =
        ex.manifests.iter().map(|m| ((&m.repo, &m.digest), m.record.pushed_at_ms)).collect();
    let mut by_repo: BTreeMap<&RepoName, Vec<(&Tag, &Digest, u64)>> = BTreeMap::new();
    for (repo, tag, d) in &ex.tags {
        // When the tag was set (tags on one manifest do not tie on its push time); for tags
        // set before that was recorded, the manifest's push time.
        let at =
            ex.tag_times.get(&(repo.clone(), tag.clone())).or_else(|| pushed.get(&(repo, d))).copied().unwrap_or(0);
        by_repo.entry(repo).or_default().push((tag, d, at));
    }
    let mut out = Vec::new();
    for (repo, mut tags) in by_repo {
        // Newest first; ties by name for a stable order.
        tags.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.as_str().cmp(b.0.as_str())));
        let rules: Vec<&RetentionRule> = policy
            .retention
            .iter()
            .filter(|r| glob(&r.repositories).is_some_and(|p| p.matches(repo.as_str())))
            .filter(|r| r.keep_last.is_some() || r.keep_younger_than_secs.is_some())
            .collect();
        if rules.is_empty() {
            continue;
        }
        for rule in rules {
            let protect: Vec<glob::Pattern> = rule.protect.iter().filter_map(|p| glob(p)).collect();
            let mut rank = 0usize;
            for (tag, d, at) in &tags {
                if protect.iter().any(|p| p.matches(tag.as_str())) {
                    continue;
                }
                rank += 1;
                let by_count = rule.keep_last.is_some_and(|n| rank <= n);
                let by_age = rule.keep_younger_than_secs.is_some_and(|s| now.saturating_sub(*at) < s * 1000);
                let entry = ((*repo).clone(), (*tag).clone(), (*d).clone());
                if !by_count && !by_age && !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
    }
    out
}

fn make_plan(index: &Index, blobs: &BlobStore, policy: &GcPolicy) -> Result<Plan, String> {
    let start_ms = now_ms();
    let ex = index.export().map_err(|e| e.to_string())?;
    let tags = retention_deletes(&ex, policy, start_ms);
    let dropped: HashSet<(&RepoName, &Tag)> = tags.iter().map(|(r, t, _)| (r, t)).collect();
    let mut tagged: HashSet<(&RepoName, &Digest)> = HashSet::new();
    let mut live_tagged: HashSet<(&RepoName, &Digest)> = HashSet::new();
    for (repo, tag, d) in &ex.tags {
        tagged.insert((repo, d));
        if !dropped.contains(&(repo, tag)) {
            live_tagged.insert((repo, d));
        }
    }
    let untagged_cutoff = policy.untagged_max_age_secs.map(|s| start_ms.saturating_sub(s * 1000));
    let by_key: HashMap<(&RepoName, &Digest), usize> =
        ex.manifests.iter().enumerate().map(|(i, m)| ((&m.repo, &m.digest), i)).collect();
    let mut referrers: HashMap<(&RepoName, &Digest), Vec<usize>> = HashMap::new();
    for (i, m) in ex.manifests.iter().enumerate() {
        if let Some(s) = &m.record.subject {
            referrers.entry((&m.repo, s)).or_default().push(i);
        }
    }
    let mut marked = vec![false; ex.manifests.len()];
    let mut queue: VecDeque<usize> = VecDeque::new();
    for (i, m) in ex.manifests.iter().enumerate() {
        let key = (&m.repo, &m.digest);
        let root = live_tagged.contains(&key)
            || (!tagged.contains(&key)
                && match untagged_cutoff {
                    None => true,
                    Some(c) => m.record.pushed_at_ms >= c,
                });
        if root {
            marked[i] = true;
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        let m = &ex.manifests[i];
        let mut next: Vec<usize> =
            m.record.manifests.iter().filter_map(|c| by_key.get(&(&m.repo, c)).copied()).collect();
        if policy.keep_referrers {
            next.extend(referrers.get(&(&m.repo, &m.digest)).into_iter().flatten().copied());
        }
        for j in next {
            if !marked[j] {
                marked[j] = true;
                queue.push_back(j);
            }
        }
    }
    let mut used_blobs: HashSet<&Digest> = HashSet::new();
    let mut used_links: HashSet<(&RepoName, &Digest)> = HashSet::new();
    let mut manifests = Vec::new();
    for (i, m) in ex.manifests.iter().enumerate() {
        if marked[i] {
            used_blobs.extend(m.record.blobs.iter());
            used_links.extend(m.record.blobs.iter().map(|b| (&m.repo, b)));
        } else {
            manifests.push((m.repo.clone(), m.digest.clone(), m.size));
        }
    }
    let blob_cutoff_ms = start_ms.saturating_sub(policy.grace_secs * 1000);
    let mut plan_blobs = Vec::new();
    let mut held = GraceHeld::default();
    for (d, meta) in &ex.blobs {
        if used_blobs.contains(d) {
            continue;
        }
        let last_used = ex.access.get(d).copied().unwrap_or(0).max(meta.created_at_ms);
        if last_used < blob_cutoff_ms {
            plan_blobs.push((d.clone(), meta.size, meta.tier.as_str().to_string()));
        } else {
            let at = last_used + policy.grace_secs * 1000;
            held.blobs += 1;
            held.bytes += meta.size;
            held.next_collectable_ms = Some(held.next_collectable_ms.map_or(at, |n| n.min(at)));
            held.all_collectable_ms = Some(held.all_collectable_ms.map_or(at, |n| n.max(at)));
        }
    }
    let mut links: HashMap<Digest, Vec<String>> = HashMap::new();
    for (repo, d) in &ex.links {
        links.entry(d.clone()).or_default().push(repo.to_string());
    }
    // Links of blobs that stay (another repository uses them) but that no kept manifest of
    // this repository references, unused for the grace period.
    let going: HashSet<&Digest> = plan_blobs.iter().map(|(d, _, _)| d).collect();
    let metas: HashMap<&Digest, &berth_index::BlobMeta> = ex.blobs.iter().map(|(d, m)| (d, m)).collect();
    let stale_links: Vec<(RepoName, Digest)> = ex
        .links
        .iter()
        .filter(|(repo, d)| !going.contains(d) && !used_links.contains(&(repo, d)))
        .filter(|(_, d)| {
            let created = metas.get(d).map_or(0, |m| m.created_at_ms);
            ex.access.get(d).copied().unwrap_or(0).max(created) < blob_cutoff_ms
        })
        .cloned()
        .collect();
    let local: HashSet<&Digest> = ex.blobs.iter().filter(|(_, m)| m.tier.is_local()).map(|(d, _)| d).collect();
    let orphans = orphan_files(blobs, &local, blob_cutoff_ms);
    Ok(Plan {
        tags,
        manifests,
        blobs: plan_blobs,
        orphans,
        blob_cutoff_ms,
        start_ms,
        held,
        stale_links,
        links,
        examined_blobs: ex.blobs.len() as u64,
        examined_manifests: ex.manifests.len() as u64,
    })
}

/// Blob files whose digest has no local index entry, older than the cutoff.
fn orphan_files(blobs: &BlobStore, local: &HashSet<&Digest>, cutoff_ms: u64) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for alg in ["sha256", "sha512"] {
        let root = blobs.root().join("blobs").join(alg);
        for shard in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                let name = format!("{alg}:{}", f.file_name().to_string_lossy());
                if name.parse::<Digest>().ok().is_some_and(|d| local.contains(&d)) {
                    continue;
                }
                let Ok(meta) = f.metadata() else { continue };
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(u64::MAX);
                if mtime < cutoff_ms {
                    out.push((f.path(), meta.len()));
                }
            }
        }
    }
    out
}

/// Run GC: plan, and unless `dry_run`, sweep. Blocking (index scans, file deletes): run it on
/// its own thread, never on a serving core.
pub fn run(
    index: &Index,
    blobs: &BlobStore,
    policy: &GcPolicy,
    dry_run: bool,
    progress: &Progress,
) -> Result<GcReport, String> {
    sweep_with(index, blobs, policy, dry_run, progress, &LocalSweep(index))
}

/// How a run deletes what its plan found: in the local index (one node), or through the
/// cluster's change log (`ClusterSweep`). Each deletion re-checks that nothing uses what it
/// deletes, and says why it kept it otherwise.
trait Sweep {
    fn delete_tag_if(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> Result<bool, String>;
    fn delete_manifest(&self, repo: &RepoName, d: &Digest, cutoff_ms: u64) -> Result<Result<(), Kept>, String>;
    fn remove_blob(&self, d: &Digest, cutoff_ms: u64) -> Result<Result<BlobMeta, Kept>, String>;
    fn unlink(&self, repo: &RepoName, d: &Digest, cutoff_ms: u64) -> Result<Result<(), Kept>, String>;
    /// Whether the run removes blob files itself (one node), or each node's apply of the
    /// removal does (a cluster).
    fn removes_files(&self) -> bool;
    /// Whether a blob file the index does not know is about to be committed (a cluster node
    /// publishes the file, then commits through the log, then records it): not an orphan.
    fn committing(&self, _d: &Digest) -> bool {
        false
    }
}

struct LocalSweep<'a>(&'a Index);

impl Sweep for LocalSweep<'_> {
    fn delete_tag_if(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> Result<bool, String> {
        self.0.delete_tag_if(repo, tag, d).map_err(|e| e.to_string())
    }
    fn delete_manifest(&self, repo: &RepoName, d: &Digest, cutoff_ms: u64) -> Result<Result<(), Kept>, String> {
        self.0.delete_manifest_if_unused(repo, d, cutoff_ms, Durability::Deferred).map_err(|e| e.to_string())
    }
    fn remove_blob(&self, d: &Digest, cutoff_ms: u64) -> Result<Result<BlobMeta, Kept>, String> {
        self.0.remove_blob_if_unused(d, cutoff_ms, Durability::Deferred).map_err(|e| e.to_string())
    }
    fn unlink(&self, repo: &RepoName, d: &Digest, cutoff_ms: u64) -> Result<Result<(), Kept>, String> {
        self.0.unlink_blob_if_unused(repo, d, cutoff_ms, Durability::Deferred).map_err(|e| e.to_string())
    }
    fn removes_files(&self) -> bool {
        true
    }
}

fn sweep_with(
    index: &Index,
    blobs: &BlobStore,
    policy: &GcPolicy,
    dry_run: bool,
    progress: &Progress,
    sweep: &dyn Sweep,
) -> Result<GcReport, String> {
    progress.phase(0, 0);
    let plan = make_plan(index, blobs, policy)?;
    let mut r = GcReport {
        dry_run,
        examined_blobs: plan.examined_blobs,
        examined_manifests: plan.examined_manifests,
        held_by_grace: plan.held.clone(),
        ..Default::default()
    };
    // Tags.
    progress.phase(1, plan.tags.len() as u64);
    for (repo, tag, d) in &plan.tags {
        let deleted = dry_run || sweep.delete_tag_if(repo, tag, d)?;
        if deleted {
            r.tags.push(TagItem { repo: repo.to_string(), tag: tag.to_string(), digest: d.to_string() });
            r.per_repo.entry(repo.to_string()).or_default().tags += 1;
        } else {
            r.kept_in_use += 1;
        }
        progress.tick();
    }

    // Manifests: parents and subjects before children and referrers, in rounds.
    progress.phase(2, plan.manifests.len() as u64);
    if dry_run {
        for (repo, d, size) in &plan.manifests {
            r.manifests.push(ManifestItem { repo: repo.to_string(), digest: d.to_string(), size: *size });
            r.per_repo.entry(repo.to_string()).or_default().manifests += 1;
        }
    } else {
        let mut pending: Vec<&(RepoName, Digest, u64)> = plan.manifests.iter().collect();
        loop {
            let mut progressed = false;
            let mut retry = Vec::new();
            for item @ (repo, d, size) in pending {
                match sweep.delete_manifest(repo, d, plan.start_ms)? {
                    Ok(()) => {
                        progressed = true;
                        progress.tick();
                        r.manifests.push(ManifestItem { repo: repo.to_string(), digest: d.to_string(), size: *size });
                        r.per_repo.entry(repo.to_string()).or_default().manifests += 1;
                    }
                    Err(berth_index::Kept::Referenced | berth_index::Kept::SubjectPresent) => retry.push(item),
                    Err(berth_index::Kept::Gone) => progress.tick(),
                    Err(_) => {
                        r.kept_in_use += 1;
                        progress.tick();
                    }
                }
            }
            pending = retry;
            if pending.is_empty() || !progressed {
                r.kept_in_use += pending.len() as u64;
                break;
            }
        }
    }

    // Blobs, in chunks: index deletions of a chunk, one WAL sync, then the chunk's files (the
    // index never points at a deleted file, even after a power loss).
    progress.phase(3, plan.blobs.len() as u64);
    for chunk in plan.blobs.chunks(256) {
        let mut files = Vec::new();
        for (d, size, tier) in chunk {
            let repos = plan.links.get(d).cloned().unwrap_or_default();
            let deleted = if dry_run {
                true
            } else {
                let _g = blobs.lock(d);
                match sweep.remove_blob(d, plan.blob_cutoff_ms)? {
                    Ok(meta) => {
                        if meta.tier.is_local() && sweep.removes_files() {
                            files.push(d.clone());
                        }
                        true
                    }
                    Err(_) => false,
                }
            };
            if deleted {
                r.blob_bytes += size;
                for repo in &repos {
                    let t = r.per_repo.entry(repo.clone()).or_default();
                    t.blobs += 1;
                    t.bytes += size;
                    if repos.len() > 1 {
                        t.shared_blobs += 1;
                        t.shared_bytes += size;
                    }
                }
                r.blobs.push(BlobItem { digest: d.to_string(), size: *size, repos, tier: tier.clone() });
            } else {
                r.kept_in_use += 1;
            }
            progress.tick();
        }
        if !dry_run {
            index.sync_wal().map_err(|e| e.to_string())?;
            for d in files {
                // A push of the same digest may have published a fresh file since: only an
                // unowned file goes (checked under the lock publishing holds).
                let _g = blobs.lock(&d);
                if index.blob(&d).map_err(|e| e.to_string())?.is_some_and(|m| m.tier.is_local()) {
                    continue;
                }
                if let Err(e) = blobs.remove(&d) {
                    // The index no longer has it: the file is an orphan the next run removes.
                    tracing::warn!(path = %blobs.path(&d).display(), error = %e, "GC could not remove a blob file");
                }
            }
        }
    }
    if !dry_run {
        index.sync_wal().map_err(|e| e.to_string())?;
    }

    // Orphan files (re-checked: a publish may have claimed one since the plan).
    progress.phase(4, plan.orphans.len() as u64);
    for (path, size) in &plan.orphans {
        let digest = path
            .file_name()
            .and_then(|n| {
                path.parent()?.parent()?.file_name().map(|a| format!("{}:{}", a.to_string_lossy(), n.to_string_lossy()))
            })
            .and_then(|s| s.parse::<Digest>().ok());
        let _g = digest.as_ref().map(|d| blobs.lock(d));
        let still_orphan = digest
            .map(|d| !sweep.committing(&d) && index.blob(&d).ok().flatten().is_none_or(|m| !m.tier.is_local()))
            .unwrap_or(true);
        if !still_orphan {
            r.kept_in_use += 1;
            continue;
        }
        if !dry_run {
            if let Err(e) = blobs.remove_path(path) {
                tracing::warn!(path = %path.display(), error = %e, "GC could not remove an orphan file");
                continue;
            }
        }
        r.orphan_files.push(path.display().to_string());
        r.orphan_bytes += size;
        progress.tick();
    }

    // Stale links, each re-checked under the writer lock.
    progress.phase(5, plan.stale_links.len() as u64);
    for (repo, d) in &plan.stale_links {
        let removed = dry_run || sweep.unlink(repo, d, plan.blob_cutoff_ms)?.is_ok();
        if removed {
            r.links.push(LinkItem { repo: repo.to_string(), digest: d.to_string() });
        } else {
            r.kept_in_use += 1;
        }
        progress.tick();
    }
    if !dry_run {
        index.sync_wal().map_err(|e| e.to_string())?;
    }
    progress.phase(6, 0);
    Ok(r)
}

struct Job {
    id: String,
    dry_run: bool,
    started_at_ms: u64,
    finished_at_ms: Option<u64>,
    progress: Arc<Progress>,
    result: Option<Result<GcReport, String>>,
}

impl Job {
    fn view(&self) -> JobView {
        let (state, report, error) = match &self.result {
            None => (JobState::Running, None, None),
            Some(Ok(r)) => (JobState::Succeeded, Some(r.clone()), None),
            Some(Err(e)) => (JobState::Failed, None, Some(e.clone())),
        };
        JobView {
            id: self.id.clone(),
            kind: "gc".into(),
            dry_run: self.dry_run,
            state,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            phase: self.progress.phase_name().into(),
            done: self.progress.done.load(Ordering::Relaxed),
            total: self.progress.total.load(Ordering::Relaxed),
            report,
            error,
        }
    }
}

/// Label of a GC run metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RunLabels {
    /// `dry_run` or `delete`.
    pub mode: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// GC metrics (registered into the node's registry).
#[derive(Default)]
pub struct GcMetrics {
    /// Runs by mode and result.
    pub runs: prometheus_client::metrics::family::Family<RunLabels, prometheus_client::metrics::counter::Counter>,
    /// Blobs deleted by real runs.
    pub deleted_blobs: prometheus_client::metrics::counter::Counter,
    /// Manifests deleted by real runs.
    pub deleted_manifests: prometheus_client::metrics::counter::Counter,
    /// Bytes reclaimed by real runs (blobs and orphan files).
    pub reclaimed_bytes: prometheus_client::metrics::counter::Counter,
    /// Duration of the last run, seconds.
    pub last_duration: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl GcMetrics {
    /// Register into the node's registry.
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register("gc_runs", "Garbage-collection runs by mode and result", self.runs.clone());
        r.register("gc_deleted_blobs", "Blobs deleted by garbage collection", self.deleted_blobs.clone());
        r.register("gc_deleted_manifests", "Manifests deleted by garbage collection", self.deleted_manifests.clone());
        r.register("gc_reclaimed_bytes", "Bytes reclaimed by garbage collection", self.reclaimed_bytes.clone());
        r.register(
            "gc_last_duration_seconds",
            "Duration of the last garbage-collection run",
            self.last_duration.clone(),
        );
    }
}

/// Why a GC run did not start.
#[derive(Debug, Clone)]
pub enum Refused {
    /// A run is in progress on this node (its id).
    Running(String),
    /// Another cluster node holds the GC lease, or Postgres is unreachable.
    Lease(String),
}

/// GC jobs of this node: at most one runs at a time; the last 50 are remembered.
#[derive(Default)]
pub struct GcJobs {
    jobs: Mutex<Vec<Job>>,
    last_run_ms: AtomicU64,
    /// Metrics of the runs.
    pub metrics: GcMetrics,
}

impl GcJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a job on its own thread. Refused when one runs here, or (in a cluster, for a
    /// real run) when another node holds the GC lease.
    pub fn start(
        self: &Arc<Self>,
        index: Arc<Index>,
        blobs: Arc<BlobStore>,
        cluster: Option<Arc<crate::cluster::ClusterNode>>,
        policy: GcPolicy,
        dry_run: bool,
    ) -> Result<String, Refused> {
        let mut jobs = self.lock();
        if let Some(j) = jobs.iter().find(|j| j.result.is_none()) {
            return Err(Refused::Running(j.id.clone()));
        }
        let lease = match &cluster {
            Some(cn) if !dry_run => Some(cn.cluster.acquire("gc").map_err(|e| Refused::Lease(e.to_string()))?),
            _ => None,
        };
        let id = format!("gc-{}", uuid::Uuid::new_v4().simple());
        let progress = Arc::new(Progress::default());
        jobs.push(Job {
            id: id.clone(),
            dry_run,
            started_at_ms: now_ms(),
            finished_at_ms: None,
            progress: progress.clone(),
            result: None,
        });
        if jobs.len() > 50 {
            let drop_at = jobs.iter().position(|j| j.result.is_some()).unwrap_or(0);
            jobs.remove(drop_at);
        }
        drop(jobs);
        let (me, id2) = (self.clone(), id.clone());
        std::thread::Builder::new()
            .name("berth-gc".into())
            .spawn(move || {
                tracing::info!(job = %id2, dry_run, "garbage collection started");
                let started = std::time::Instant::now();
                let res = match (&cluster, lease) {
                    (Some(cn), Some(lease)) => {
                        let renewing = LeaseRenewal::start(cn.cluster.clone(), lease.clone());
                        let r = run_clustered(&index, &blobs, cn, lease.clone(), &policy, dry_run, &progress);
                        renewing.stop();
                        cn.cluster.release(&lease);
                        r
                    }
                    _ => run(&index, &blobs, &policy, dry_run, &progress),
                };
                let m = &me.metrics;
                m.last_duration.set(started.elapsed().as_secs_f64());
                let mode = if dry_run { "dry_run" } else { "delete" };
                m.runs.get_or_create(&RunLabels { mode, result: if res.is_ok() { "ok" } else { "error" } }).inc();
                if let (Ok(r), false) = (&res, dry_run) {
                    m.deleted_blobs.inc_by(r.blobs.len() as u64);
                    m.deleted_manifests.inc_by(r.manifests.len() as u64);
                    m.reclaimed_bytes.inc_by(r.blob_bytes + r.orphan_bytes);
                }
                match &res {
                    Ok(r) => tracing::info!(
                        job = %id2, dry_run, blobs = r.blobs.len(), bytes = r.blob_bytes, manifests = r.manifests.len(),
                        tags = r.tags.len(), orphan_files = r.orphan_files.len(), kept_in_use = r.kept_in_use,
                        "garbage collection finished"
                    ),
                    Err(e) => tracing::error!(job = %id2, error = %e, "garbage collection failed"),
                }
                me.last_run_ms.store(now_ms(), Ordering::Relaxed);
                // The plan's snapshot was large and is freed now: give the memory back.
                // SAFETY: glibc's malloc_trim has no preconditions.
                unsafe { libc::malloc_trim(0) };
                let mut jobs = me.lock();
                if let Some(j) = jobs.iter_mut().find(|j| j.id == id2) {
                    j.finished_at_ms = Some(now_ms());
                    j.result = Some(res);
                }
            })
            .map_err(|e| Refused::Running(format!("cannot start a GC thread: {e}")))?;
        Ok(id)
    }

    /// One job.
    pub fn get(&self, id: &str) -> Option<JobView> {
        self.lock().iter().find(|j| j.id == id).map(Job::view)
    }

    /// All remembered jobs, newest first.
    pub fn list(&self) -> Vec<JobView> {
        self.lock().iter().rev().map(Job::view).collect()
    }

    /// Whether a job runs, and when the last one finished (unix ms, 0 never).
    pub fn status(&self) -> (bool, u64) {
        (self.lock().iter().any(|j| j.result.is_none()), self.last_run_ms.load(Ordering::Relaxed))
    }
}
