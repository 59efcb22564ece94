//! Vulnerability scan results as the sidecar hands them to the node (`PUT
//! /internal/v1/scans/<digest>`) and the node serves them (`GET /v2/<name>/manifests/<ref>/scan`).
//! The node keeps one [`ScanRecord`] per manifest digest and decides pull policy from it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Severity of a finding, ordered: `Unknown < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Not rated.
    Unknown,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Every severity, most severe first.
    pub const ALL: [Severity; 5] =
        [Severity::Critical, Severity::High, Severity::Medium, Severity::Low, Severity::Unknown];

    /// Lower-case name (`critical`), as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    /// Case-insensitive (`CRITICAL` from Trivy, `critical` from configuration).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "unknown" => Ok(Severity::Unknown),
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(format!("unknown severity {other:?} (critical, high, medium, low, unknown)")),
        }
    }
}

/// Where a scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    /// Waiting in the queue.
    Queued,
    /// Being scanned.
    Running,
    /// Done: findings are current for `db_version`.
    Completed,
    /// Failed after retries (`error` says why).
    Failed,
    /// Not an image Trivy can analyse (helm chart, signature, SBOM…): nothing to scan.
    Unsupported,
}

impl ScanStatus {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Queued => "queued",
            ScanStatus::Running => "running",
            ScanStatus::Completed => "completed",
            ScanStatus::Failed => "failed",
            ScanStatus::Unsupported => "unsupported",
        }
    }
}

/// Findings counted by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCounts {
    /// Critical.
    pub critical: u64,
    /// High.
    pub high: u64,
    /// Medium.
    pub medium: u64,
    /// Low.
    pub low: u64,
    /// Unknown.
    pub unknown: u64,
}

impl SeverityCounts {
    /// The counts of `findings`.
    pub fn of(findings: &[Finding]) -> SeverityCounts {
        let mut c = SeverityCounts::default();
        findings.iter().for_each(|f| c.add(f.severity));
        c
    }

    /// Count one finding.
    pub fn add(&mut self, s: Severity) {
        *self.get_mut(s) += 1;
    }
    /// The count of one severity.
    pub fn get(&self, s: Severity) -> u64 {
        match s {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Unknown => self.unknown,
        }
    }
    fn get_mut(&mut self, s: Severity) -> &mut u64 {
        match s {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Unknown => &mut self.unknown,
        }
    }
    /// All findings.
    pub fn total(&self) -> u64 {
        self.critical + self.high + self.medium + self.low + self.unknown
    }
}

/// One vulnerability found in one package of an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Vulnerability id (`CVE-2024-1234`, `GHSA-…`).
    pub cve: String,
    /// Severity.
    pub severity: Severity,
    /// Package name.
    pub package: String,
    /// Installed version.
    pub installed_version: String,
    /// First fixed version, when there is one.
    #[serde(default)]
    pub fixed_version: Option<String>,
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// CVSS v3 base score (the highest any source gives).
    #[serde(default)]
    pub cvss: Option<f64>,
    /// CVSS v3 vector of that score.
    #[serde(default)]
    pub cvss_vector: Option<String>,
    /// Digest of the layer that installed the package.
    #[serde(default)]
    pub layer_digest: Option<String>,
    /// `os` (distribution packages) or `library` (language packages).
    #[serde(default)]
    pub pkg_type: String,
    /// Ecosystem: `debian`, `alpine`, `python-pkg`, `node-pkg`, …
    #[serde(default)]
    pub ecosystem: String,
}

/// Most severe first, then by id and package (the order records and APIs show).
pub fn sort_findings(f: &mut [Finding]) {
    f.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then_with(|| a.cve.cmp(&b.cve)).then_with(|| a.package.cmp(&b.package))
    });
}

/// The scan of one manifest digest (an image, or an index rolled up from its platforms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanRecord {
    /// Status.
    pub status: ScanStatus,
    /// When the findings were produced (unix ms), for completed scans.
    #[serde(default)]
    pub scanned_at_ms: Option<u64>,
    /// Vulnerability database version (its `UpdatedAt`) the findings are current for.
    #[serde(default)]
    pub db_version: Option<String>,
    /// Scanner version (`trivy 0.76.0`).
    #[serde(default)]
    pub scanner: Option<String>,
    /// Findings by severity.
    #[serde(default)]
    pub counts: SeverityCounts,
    /// Every finding, most severe first.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Why the scan failed (status `failed`).
    #[serde(default)]
    pub error: Option<String>,
}

impl ScanRecord {
    /// A completed scan of `findings` (sorted most severe first, counted here).
    pub fn completed(
        mut findings: Vec<Finding>,
        db_version: String,
        scanner: String,
        scanned_at_ms: u64,
    ) -> ScanRecord {
        sort_findings(&mut findings);
        let counts = SeverityCounts::of(&findings);
        ScanRecord {
            status: ScanStatus::Completed,
            scanned_at_ms: Some(scanned_at_ms),
            db_version: Some(db_version),
            scanner: Some(scanner),
            counts,
            findings,
            error: None,
        }
    }

    /// A record with only a status (queued, running, unsupported).
    pub fn with_status(status: ScanStatus) -> ScanRecord {
        ScanRecord {
            status,
            scanned_at_ms: None,
            db_version: None,
            scanner: None,
            counts: SeverityCounts::default(),
            findings: Vec::new(),
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Unknown);
        assert_eq!("CRITICAL".parse::<Severity>().unwrap(), Severity::Critical);
        assert!("urgent".parse::<Severity>().is_err());
        let mut c = SeverityCounts::default();
        c.add(Severity::High);
        c.add(Severity::High);
        assert_eq!((c.get(Severity::High), c.total()), (2, 2));
    }
}
