//! Running the official Trivy client against the Trivy server, and reading its reports.
//!
//! A first scan of an image is two runs: `trivy image --format cyclonedx` (the client pulls
//! the layers the server's cache does not have yet from the node's internal listener, analyses
//! them and writes the SBOM), then `trivy sbom --format json` (the server matches the SBOM's
//! packages against its DB). A rescan after a DB update is the second run alone, on the stored
//! SBOM: no layer is read again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_internal_api::scan::{Finding, Severity};
use serde_json::Value;
use tokio::process::Command;

use crate::config::ScanSettings;

/// Why a Trivy run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrivyError {
    /// The binary could not be started.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran longer than the timeout.
    #[error("trivy did not finish within {0} s")]
    Timeout(u64),
    /// It exited non-zero.
    #[error("trivy failed: {0}")]
    Failed(String),
    /// Its output was not what we expect.
    #[error("unreadable trivy output: {0}")]
    Output(String),
}

/// The Trivy server's version and vulnerability-DB version (`GET /version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    /// `trivy 0.76.0`.
    pub scanner: String,
    /// The DB's `UpdatedAt`: changes with every DB update.
    pub db_version: String,
}

/// Ask the Trivy server for its versions; `None` when it does not answer (down).
pub async fn server_version(server: &str) -> Option<ServerVersion> {
    let url = format!("{}/version", server.trim_end_matches('/'));
    let v: Value = tokio::task::spawn_blocking(move || {
        // The configured server only: a redirect elsewhere is not followed.
        ureq::AgentBuilder::new()
            .redirects(0)
            .build()
            .get(&url)
            .timeout(Duration::from_secs(5))
            .call()
            .ok()?
            .into_json()
            .ok()
    })
    .await
    .ok()??;
    Some(ServerVersion {
        scanner: format!("trivy {}", v["Version"].as_str().unwrap_or("?")),
        db_version: v["VulnerabilityDB"]["UpdatedAt"].as_str()?.to_string(),
    })
}

/// A Trivy client configured for one node.
pub struct Trivy {
    settings: ScanSettings,
    cache_dir: PathBuf,
    tmp_dir: PathBuf,
}

impl Trivy {
    /// Prepare the working directories.
    pub fn new(settings: &ScanSettings) -> std::io::Result<Trivy> {
        let cache_dir = settings.work_dir.join("cache");
        let tmp_dir = settings.work_dir.join("tmp");
        std::fs::create_dir_all(&cache_dir)?;
        std::fs::create_dir_all(&tmp_dir)?;
        Ok(Trivy { settings: settings.clone(), cache_dir, tmp_dir })
    }

    /// A scratch file path for one job.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.tmp_dir.join(name)
    }

    fn command(&self, sub: &str) -> Command {
        let mut c = Command::new(&self.settings.trivy);
        c.arg(sub)
            .arg("--server")
            .arg(&self.settings.server)
            .arg("--quiet")
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            // Offline: never reach for the internet (DB, Java DB, VEX, version checks).
            .env("TRIVY_NO_PROGRESS", "true")
            .env("TRIVY_SKIP_DB_UPDATE", "true")
            .env("TRIVY_SKIP_JAVA_DB_UPDATE", "true")
            .env("TRIVY_OFFLINE_SCAN", "true")
            .env("TRIVY_SKIP_CHECK_UPDATE", "true")
            .env("TRIVY_SKIP_VERSION_CHECK", "true")
            .env("TRIVY_DISABLE_TELEMETRY", "true")
            .env("TRIVY_SKIP_VEX_REPO_UPDATE", "true")
            .env("TMPDIR", &self.tmp_dir)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        if let Some(t) = &self.settings.token {
            // By environment, not argv: other users can read a process's arguments.
            c.env("TRIVY_TOKEN", t);
        }
        c
    }

    async fn run(&self, mut cmd: Command) -> Result<(), TrivyError> {
        let binary = self.settings.trivy.display().to_string();
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| TrivyError::Spawn { binary, source })?;
        let out = tokio::time::timeout(Duration::from_secs(self.settings.timeout_secs), child.wait_with_output())
            .await
            .map_err(|_| TrivyError::Timeout(self.settings.timeout_secs))?
            .map_err(|e| TrivyError::Failed(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String =
                err.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
            Err(TrivyError::Failed(format!("{} ({})", tail.chars().take(1500).collect::<String>(), out.status)))
        }
    }

    /// Analyse `registry/repo@digest` (pulled from the node's internal listener with its
    /// token) and write its CycloneDX SBOM to `out`.
    pub async fn sbom(
        &self,
        registry: &str,
        registry_token: &str,
        repo: &str,
        digest: &str,
        out: &Path,
    ) -> Result<(), TrivyError> {
        let mut c = self.command("image");
        c.arg("--image-src")
            .arg("remote")
            .arg("--insecure")
            .arg("--format")
            .arg("cyclonedx")
            .arg("--output")
            .arg(out)
            .env("TRIVY_REGISTRY_TOKEN", registry_token)
            .arg(format!("{registry}/{repo}@{digest}"));
        self.run(c).await
    }

    /// Match an SBOM against the server's DB; returns Trivy's JSON report.
    pub async fn scan_sbom(&self, sbom: &Path, out: &Path) -> Result<Value, TrivyError> {
        let mut c = self.command("sbom");
        c.arg("--format").arg("json").arg("--output").arg(out).arg(sbom);
        self.run(c).await?;
        let bytes = tokio::fs::read(out).await.map_err(|e| TrivyError::Output(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| TrivyError::Output(e.to_string()))
    }
}

fn cvss(v: &Value) -> (Option<f64>, Option<String>) {
    // The highest v3 score any source gives (NVD first on ties), with its vector.
    let mut best: Option<(f64, Option<String>)> = None;
    if let Some(m) = v["CVSS"].as_object() {
        let mut sources: Vec<(&String, &Value)> = m.iter().collect();
        sources.sort_by_key(|(k, _)| if k.as_str() == "nvd" { 0 } else { 1 });
        for (_, s) in sources {
            if let Some(score) = s["V3Score"].as_f64() {
                if best.as_ref().is_none_or(|(b, _)| score > *b) {
                    best = Some((score, s["V3Vector"].as_str().map(str::to_owned)));
                }
            }
        }
    }
    match best {
        Some((s, v)) => (Some(s), v),
        None => (None, None),
    }
}

/// Every finding of a Trivy JSON report, most severe first (then by id and package).
pub fn findings(report: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in report["Results"].as_array().into_iter().flatten() {
        let pkg_type = match r["Class"].as_str() {
            Some("os-pkgs") => "os",
            Some("lang-pkgs") => "library",
            Some(other) => other,
            None => "",
        };
        let ecosystem = r["Type"].as_str().unwrap_or("").to_string();
        for v in r["Vulnerabilities"].as_array().into_iter().flatten() {
            let (cvss, cvss_vector) = cvss(v);
            let text = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
            out.push(Finding {
                cve: v["VulnerabilityID"].as_str().unwrap_or("").to_string(),
                severity: v["Severity"].as_str().and_then(|s| s.parse().ok()).unwrap_or(Severity::Unknown),
                package: v["PkgName"].as_str().unwrap_or("").to_string(),
                installed_version: v["InstalledVersion"].as_str().unwrap_or("").to_string(),
                fixed_version: text("FixedVersion"),
                title: text("Title"),
                description: text("Description"),
                cvss,
                cvss_vector,
                layer_digest: v["Layer"]["Digest"].as_str().filter(|s| !s.is_empty()).map(str::to_owned),
                pkg_type: pkg_type.to_string(),
                ecosystem: ecosystem.clone(),
            });
        }
    }
    berth_internal_api::scan::sort_findings(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_from_a_report() {
        let report = serde_json::json!({"Results": [
            {"Target": "img (debian 12.7)", "Class": "os-pkgs", "Type": "debian", "Vulnerabilities": [
                {"VulnerabilityID": "CVE-1", "PkgName": "bash", "InstalledVersion": "5.2", "Severity": "LOW",
                 "CVSS": {"nvd": {"V3Score": 3.3, "V3Vector": "CVSS:3.1/AV:L"}}},
                {"VulnerabilityID": "CVE-2", "PkgName": "openssl", "InstalledVersion": "3.0.11", "FixedVersion": "3.0.99",
                 "Severity": "CRITICAL", "Title": "t", "Description": "d", "Layer": {"Digest": "sha256:aa"},
                 "CVSS": {"ghsa": {"V3Score": 9.9}, "nvd": {"V3Score": 9.8, "V3Vector": "v"}}}]},
            {"Target": "Python", "Class": "lang-pkgs", "Type": "python-pkg", "Vulnerabilities": [
                {"VulnerabilityID": "CVE-3", "PkgName": "requests", "InstalledVersion": "2.31.0", "Severity": "MEDIUM"}]},
            {"Target": "none", "Class": "os-pkgs"}
        ]});
        let f = findings(&report);
        assert_eq!(f.iter().map(|f| f.cve.as_str()).collect::<Vec<_>>(), ["CVE-2", "CVE-3", "CVE-1"]);
        assert_eq!(
            (f[0].cvss, f[0].fixed_version.as_deref(), f[0].pkg_type.as_str()),
            (Some(9.9), Some("3.0.99"), "os")
        );
        assert_eq!(
            (f[1].pkg_type.as_str(), f[1].ecosystem.as_str(), f[1].fixed_version.as_deref()),
            ("library", "python-pkg", None)
        );
    }
}
