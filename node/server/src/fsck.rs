//! `berth fsck`: check that the index and the files agree, and optionally repair.
//!
//! Runs offline (the node must be stopped: RocksDB allows one process). Findings come in two
//! classes: **errors** — the index promises something the disk does not have (a blob record
//! without its file, a file of the wrong size or content, a tag pointing at a missing manifest,
//! a manifest whose blobs are gone) — and **garbage** — bytes on disk nothing refers to (blob
//! files the index does not know, which a crash between rename and index commit can leave;
//! upload files without a session; sessions without a file). A healthy store after any crash has
//! no errors; garbage is expected and harmless.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use berth_index::Index;
use berth_types::{Digest, RepoName, Tag};
use serde::Serialize;

use crate::store::BlobStore;

/// What fsck found (and, with repair, fixed).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Blob records checked.
    pub blobs_checked: usize,
    /// Index says present, file missing.
    pub missing_files: Vec<Digest>,
    /// File size differs from the index.
    pub size_mismatches: Vec<Digest>,
    /// Content does not hash to its name (only with `verify`).
    pub corrupt_files: Vec<Digest>,
    /// Repository links to blobs the store does not have.
    pub dangling_links: Vec<(RepoName, Digest)>,
    /// Tags pointing at manifests the repository does not have.
    pub dangling_tags: Vec<(RepoName, Tag)>,
    /// Manifests referencing blobs or manifests that are not in their repository.
    pub broken_manifests: Vec<(RepoName, Digest, Digest)>,
    /// Blob files the index does not know.
    pub orphan_files: Vec<PathBuf>,
    /// Upload files without a session.
    pub orphan_upload_files: Vec<PathBuf>,
    /// Sessions without an upload file.
    pub sessions_without_file: Vec<String>,
    /// Whether repairs were applied.
    pub repaired: bool,
}

impl Report {
    /// Number of errors (the index promises data the disk lacks).
    pub fn errors(&self) -> usize {
        self.missing_files.len()
            + self.size_mismatches.len()
            + self.corrupt_files.len()
            + self.dangling_links.len()
            + self.dangling_tags.len()
            + self.broken_manifests.len()
    }
    /// Number of garbage items (unreferenced bytes).
    pub fn garbage(&self) -> usize {
        self.orphan_files.len() + self.orphan_upload_files.len() + self.sessions_without_file.len()
    }
}

/// Check `data_dir`; with `verify`, hash every blob; with `repair`, fix what can be fixed:
/// remove garbage, drop index entries whose data is gone, drop dangling tags.
pub fn run(data_dir: &Path, verify: bool, repair: bool) -> anyhow::Result<Report> {
    let index = Index::open(&data_dir.join("index"), true)?;
    let blobs = BlobStore::open(data_dir)?;
    let mut r = Report::default();
    let all = index.all_blobs()?;
    r.blobs_checked = all.len();
    let mut known: HashSet<Digest> = HashSet::new();
    let mut lost: HashSet<Digest> = HashSet::new();
    // Blobs whose bytes should be in a local file; `remote` ones live in S3 only (tiering),
    // and a leftover file of theirs (a crash mid-eviction) is garbage.
    let mut local: HashSet<Digest> = HashSet::new();
    for (d, meta) in &all {
        known.insert(d.clone());
        if !meta.tier.is_local() {
            continue;
        }
        local.insert(d.clone());
        let path = blobs.path(d);
        match std::fs::metadata(&path) {
            Err(_) => {
                r.missing_files.push(d.clone());
                lost.insert(d.clone());
            }
            Ok(m) if m.len() != meta.size => {
                r.size_mismatches.push(d.clone());
                lost.insert(d.clone());
            }
            Ok(_) if verify => {
                if crate::store::hash_file(&path, d.algorithm()).ok().as_ref() != Some(d) {
                    r.corrupt_files.push(d.clone());
                    lost.insert(d.clone());
                }
            }
            Ok(_) => {}
        }
    }
    let links = index.all_links()?;
    let mut linked: HashMap<RepoName, HashSet<Digest>> = HashMap::new();
    for (repo, d) in links {
        if !known.contains(&d) {
            r.dangling_links.push((repo.clone(), d.clone()));
        }
        linked.entry(repo).or_default().insert(d);
    }
    let manifests = index.all_manifests()?;
    let mut have: HashSet<(RepoName, Digest)> = HashSet::new();
    for (repo, d, _) in &manifests {
        have.insert((repo.clone(), d.clone()));
    }
    for (repo, d, rec) in &manifests {
        let repo_blobs = linked.get(repo);
        for b in rec.blobs.iter().filter(|b| !rec.absent.contains(b)) {
            if !repo_blobs.is_some_and(|s| s.contains(b)) || lost.contains(b) {
                r.broken_manifests.push((repo.clone(), d.clone(), b.clone()));
            }
        }
        for m in rec.manifests.iter().filter(|m| !rec.absent.contains(m)) {
            if !have.contains(&(repo.clone(), m.clone())) {
                r.broken_manifests.push((repo.clone(), d.clone(), m.clone()));
            }
        }
    }
    for (repo, tag, d) in index.all_tags()? {
        if !have.contains(&(repo.clone(), d)) {
            r.dangling_tags.push((repo, tag));
        }
    }
    for alg in ["sha256", "sha512"] {
        let root = data_dir.join("blobs").join(alg);
        for shard in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                let name = format!("{alg}:{}", f.file_name().to_string_lossy());
                match name.parse::<Digest>() {
                    Ok(d) if local.contains(&d) => {}
                    _ => r.orphan_files.push(f.path()),
                }
            }
        }
    }
    let sessions = index.uploads()?;
    let session_ids: HashSet<&str> = sessions.iter().map(|(id, _)| id.as_str()).collect();
    for f in std::fs::read_dir(blobs.uploads_dir()).into_iter().flatten().flatten() {
        if !session_ids.contains(f.file_name().to_string_lossy().as_ref()) {
            r.orphan_upload_files.push(f.path());
        }
    }
    let mut stale_sessions = Vec::new();
    for (id, s) in &sessions {
        if !blobs.uploads_dir().join(id).exists() {
            r.sessions_without_file.push(id.clone());
            stale_sessions.push((s.repo.clone(), id.clone()));
        }
    }
    if repair {
        for p in r.orphan_files.iter().chain(r.orphan_upload_files.iter()) {
            let _ = std::fs::remove_file(p);
        }
        for (repo, id) in &stale_sessions {
            index.delete_upload(repo, id)?;
        }
        for d in &lost {
            let _ = std::fs::remove_file(blobs.path(d));
            index.remove_blob(d)?;
        }
        for (repo, d) in &r.dangling_links {
            index.unlink_blob(repo, d)?;
        }
        for (repo, tag) in &r.dangling_tags {
            index.delete_tag(repo, tag)?;
        }
        index.flush()?;
        r.repaired = true;
    }
    Ok(r)
}
