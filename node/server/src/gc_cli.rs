//! `berth gc`: run garbage collection on a running node through its internal API and print
//! what it deleted (or would delete), with a progress bar on a terminal.

use std::time::Duration;

use crate::gc::{human_bytes, GcPolicy, GcReport, JobView, RetentionRule};

/// Where the node's internal API is and how to authenticate (the shared client).
pub use berth_internal_api::InternalClient as Target;

/// The policy flags of `berth gc`; all unset means "the node's `[gc]` configuration".
#[derive(Default)]
pub struct PolicyFlags {
    /// `--grace`.
    pub grace: Option<Duration>,
    /// `--untagged-max-age`.
    pub untagged_max_age: Option<Duration>,
    /// `--no-keep-referrers`.
    pub no_keep_referrers: bool,
    /// `--keep-last`.
    pub keep_last: Option<usize>,
    /// `--keep-younger-than`.
    pub keep_younger_than: Option<Duration>,
    /// `--protect`.
    pub protect: Vec<String>,
    /// `--repositories`.
    pub repositories: Option<String>,
}

impl PolicyFlags {
    fn policy(&self) -> Option<GcPolicy> {
        let any = self.grace.is_some()
            || self.untagged_max_age.is_some()
            || self.no_keep_referrers
            || self.keep_last.is_some()
            || self.keep_younger_than.is_some()
            || !self.protect.is_empty()
            || self.repositories.is_some();
        if !any {
            return None;
        }
        let mut p = GcPolicy::default();
        if let Some(g) = self.grace {
            p.grace_secs = g.as_secs();
        }
        p.untagged_max_age_secs = self.untagged_max_age.map(|d| d.as_secs());
        p.keep_referrers = !self.no_keep_referrers;
        if self.keep_last.is_some() || self.keep_younger_than.is_some() {
            p.retention.push(RetentionRule {
                repositories: self.repositories.clone().unwrap_or_else(|| "*".into()),
                keep_last: self.keep_last,
                keep_younger_than_secs: self.keep_younger_than.map(|d| d.as_secs()),
                protect: self.protect.clone(),
            });
        }
        Some(p)
    }
}

/// Run a GC job and print its outcome. Returns the report.
pub fn run(target: &Target, delete: bool, flags: &PolicyFlags, verbose: bool, json: bool) -> anyhow::Result<GcReport> {
    let body = serde_json::json!({ "dry_run": !delete, "policy": flags.policy() });
    let (status, v) =
        target.call("POST", "/internal/v1/gc", Some(body), Duration::from_secs(30)).map_err(anyhow::Error::msg)?;
    let id = match status {
        202 => v["id"].as_str().unwrap_or_default().to_string(),
        409 => anyhow::bail!("a garbage collection is already running ({})", v["errors"][0]["detail"]["running"]),
        s => anyhow::bail!("the node refused the GC request ({s}): {v}"),
    };
    // A counted bar only for phases that know their size; a spinner while planning.
    let counted = indicatif::ProgressStyle::with_template("{spinner} {msg:<22} [{bar:30}] {pos}/{len}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    let spinner = indicatif::ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(spinner.clone());
        b
    });
    let job: JobView = loop {
        let (status, v) = target
            .call("GET", &format!("/internal/v1/jobs/{id}"), None, Duration::from_secs(30))
            .map_err(anyhow::Error::msg)?;
        if status != 200 {
            anyhow::bail!("job {id}: {status} {v}");
        }
        let state = v["state"].as_str().unwrap_or("");
        if let Some(b) = &bar {
            let total = v["total"].as_u64().unwrap_or(0);
            b.set_message(v["phase"].as_str().unwrap_or("").to_string());
            b.set_style(if total == 0 { spinner.clone() } else { counted.clone() });
            b.set_length(total);
            b.set_position(v["done"].as_u64().unwrap_or(0).min(total));
            b.tick();
        }
        if state != "running" {
            break serde_json::from_value(v).map_err(|e| anyhow::anyhow!("job {id}: unreadable answer: {e}"))?;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let Some(report) = job.report else {
        anyhow::bail!("garbage collection {id} failed: {}", job.error.unwrap_or_default());
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, verbose));
    }
    Ok(report)
}

/// `in 59m (2026-11-29 21:43:00 UTC)`.
fn describe_time(ms: u64) -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    let secs = ms.saturating_sub(now) / 1000;
    let rel = humantime::format_duration(Duration::from_secs(if secs >= 60 { secs / 60 * 60 } else { secs }));
    format!("in {rel} ({})", humantime::format_rfc3339_seconds(at))
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The text report: the seed's lines first, then details.
pub fn render(r: &GcReport, verbose: bool) -> String {
    let mut out = String::new();
    let blobs = plural(r.blobs.len(), "blob", "blobs");
    if r.dry_run {
        out += &format!(
            "Would delete {} unreferenced {} ({})\n",
            r.blobs.len(),
            if r.blobs.len() == 1 { "blob" } else { "blobs" },
            human_bytes(r.blob_bytes)
        );
    } else {
        out += &format!("Deleted {blobs}, reclaimed {}\n", human_bytes(r.blob_bytes + r.orphan_bytes));
    }
    let verb = if r.dry_run { "Would also delete" } else { "Also deleted" };
    let mut extra = Vec::new();
    if !r.manifests.is_empty() {
        extra.push(plural(r.manifests.len(), "manifest", "manifests"));
    }
    if !r.tags.is_empty() {
        extra.push(plural(r.tags.len(), "tag (retention)", "tags (retention)"));
    }
    if !r.links.is_empty() {
        extra.push(plural(r.links.len(), "stale repository link", "stale repository links"));
    }
    if !r.orphan_files.is_empty() {
        extra.push(format!(
            "{} ({})",
            plural(r.orphan_files.len(), "orphan file", "orphan files"),
            human_bytes(r.orphan_bytes)
        ));
    }
    if !extra.is_empty() {
        out += &format!("{verb} {}\n", extra.join(", "));
    }
    let g = &r.held_by_grace;
    if g.blobs > 0 {
        let when = |ms: Option<u64>| ms.map(describe_time).unwrap_or_default();
        out += &format!(
            "Held back by the grace period: {} ({}), unreferenced but used recently; collectable from {}{}\n",
            plural(g.blobs as usize, "blob", "blobs"),
            human_bytes(g.bytes),
            when(g.next_collectable_ms),
            if g.all_collectable_ms != g.next_collectable_ms {
                format!(" (all by {})", when(g.all_collectable_ms))
            } else {
                String::new()
            }
        );
    }
    for (repo, t) in &r.per_repo {
        let mut parts = vec![format!("{} ({})", plural(t.blobs as usize, "blob", "blobs"), human_bytes(t.bytes))];
        if t.shared_blobs > 0 {
            parts[0] += &format!(
                ", of which {} ({}) shared with other repositories",
                plural(t.shared_blobs as usize, "blob", "blobs"),
                human_bytes(t.shared_bytes)
            );
        }
        if t.manifests > 0 {
            parts.push(plural(t.manifests as usize, "manifest", "manifests"));
        }
        if t.tags > 0 {
            parts.push(plural(t.tags as usize, "tag", "tags"));
        }
        out += &format!("  {repo}: {}\n", parts.join(", "));
    }
    if r.kept_in_use > 0 {
        out += &format!("Kept {} that became in use while GC ran\n", plural(r.kept_in_use as usize, "item", "items"));
    }
    if verbose {
        for t in &r.tags {
            out += &format!("  tag      {}:{} -> {}\n", t.repo, t.tag, t.digest);
        }
        for m in &r.manifests {
            out += &format!("  manifest {}@{} ({})\n", m.repo, m.digest, human_bytes(m.size));
        }
        for b in &r.blobs {
            out +=
                &format!("  blob     {} ({}, {}) in {}\n", b.digest, human_bytes(b.size), b.tier, b.repos.join(", "));
        }
        for f in &r.orphan_files {
            out += &format!("  file     {f}\n");
        }
    }
    out
}
