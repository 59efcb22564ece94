//! The sidecar's configuration: defaults < TOML file (`--config`) < `BERTH_ADMIN_*` environment
//! variables (nested keys with `__`). Unknown keys are rejected.

use std::path::PathBuf;

use berth_internal_api::gc::GcPolicy;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Complete sidecar configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin HTTP API.
    pub listen: String,
    /// Bearer token the admin API requires (`Authorization: Bearer …`). Required by `serve`.
    pub api_token: Option<String>,
    /// The node's data directory: its internal API address and token are read from there
    /// (`internal.addr`, `internal.token`) unless `node_url` / `node_token` are set.
    pub node_data_dir: PathBuf,
    /// The node's internal API URL (e.g. `http://127.0.0.1:5001`).
    pub node_url: Option<String>,
    /// The node's internal API token.
    pub node_token: Option<String>,
    /// CA bundle (PEM) to trust when the node serves its internal API over TLS
    /// (`internal.tls`); also handed to the Trivy client (`SSL_CERT_FILE`).
    pub node_ca: Option<PathBuf>,
    /// Postgres connection string (`host=… port=… user=… dbname=…` or a `postgres://` URL).
    pub postgres: String,
    /// Changes fetched and applied per transaction.
    pub sync_batch: usize,
    /// Cron expression for scheduled GC runs (`0 3 * * *`, 5 or 6 fields); unset: manual only.
    pub gc_schedule: Option<String>,
    /// Scheduled runs only report (dry run) instead of deleting.
    pub gc_schedule_dry_run: bool,
    /// Policy of scheduled runs and the default of API-triggered ones.
    pub gc: GcPolicy,
    /// `text` or `json` logs.
    pub log_format: String,
    /// Vulnerability scanning through a Trivy server; unset: off.
    pub scan: Option<ScanSettings>,
    /// Serve the admin API over TLS: set `[tls]` with `cert` and `key` (PEM); reloaded on SIGHUP.
    pub tls: Option<AdminTls>,
}

/// `[tls]` of the admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    /// Certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// `[scan]`: scanning through a Trivy server with the official Trivy client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanSettings {
    /// Trivy server URL (`trivy server --listen …`), e.g. `http://127.0.0.1:4954`.
    pub server: String,
    /// Trivy server token (`trivy server --token`).
    pub token: Option<String>,
    /// The Trivy client binary.
    pub trivy: PathBuf,
    /// Scans running at once.
    pub concurrency: usize,
    /// Attempts before a scan is marked failed (Trivy being down does not count).
    pub max_attempts: i32,
    /// Longest one Trivy run may take (seconds).
    pub timeout_secs: u64,
    /// A running job's lease (seconds), renewed while it runs: a job whose worker died is
    /// picked up again once its lease lapses.
    pub lease_secs: u64,
    /// How often the Trivy server's vulnerability-DB version is checked (seconds); a new
    /// version rescans every image from its stored SBOM.
    pub db_check_interval_secs: u64,
    /// Working directory for Trivy's client cache and temporary files.
    pub work_dir: PathBuf,
    /// Push each report and SBOM into the registry as referrers of the image.
    pub push_referrers: bool,
    /// Webhooks for new findings and failed scans.
    pub webhooks: Vec<WebhookSettings>,
}

impl Default for ScanSettings {
    fn default() -> Self {
        ScanSettings {
            server: "http://127.0.0.1:4954".into(),
            token: None,
            trivy: "trivy".into(),
            concurrency: 2,
            max_attempts: 5,
            timeout_secs: 600,
            lease_secs: 30,
            db_check_interval_secs: 60,
            work_dir: "./berth-admin-scan".into(),
            push_referrers: true,
            webhooks: Vec::new(),
        }
    }
}

/// `[[scan.webhooks]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where to POST the JSON event.
    pub url: String,
    /// HMAC-SHA256 key: the body's signature goes in `X-Berth-Signature-256: sha256=<hex>`.
    #[serde(default)]
    pub secret: Option<String>,
    /// Events to send (`vulnerabilities.found`, `scan.failed`); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Delivery attempts before giving up.
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: i32,
}

fn default_webhook_attempts() -> i32 {
    8
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:5050".into(),
            api_token: None,
            tls: None,
            node_data_dir: "./berth-data".into(),
            node_url: None,
            node_token: None,
            node_ca: None,
            postgres: "host=127.0.0.1 port=5432 user=postgres dbname=berth".into(),
            sync_batch: 500,
            gc_schedule: None,
            gc_schedule_dry_run: false,
            gc: GcPolicy::default(),
            log_format: "text".into(),
            scan: None,
        }
    }
}

impl AdminConfig {
    /// Load defaults, then the file (if any), then `BERTH_ADMIN_*` variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<AdminConfig, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(AdminConfig::default()));
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        fig.merge(Env::prefixed("BERTH_ADMIN_").split("__")).extract().map_err(Box::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/admin.example.toml");
        let cfg = AdminConfig::load(Some(&p)).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:5050");
        assert!(cfg.gc.keep_referrers);
        assert!(crate::scheduler::parse("0 3 * * *").is_ok());
        assert!(crate::scheduler::parse("*/5 * * * * *").is_ok());
        assert!(crate::scheduler::parse("not cron").is_err());
    }
}

/// Shortest admin API token accepted: the token can delete every tag (GC retention), so a
/// guessable one is refused at start.
pub const MIN_API_TOKEN_LEN: usize = 24;

/// Why an admin API token is too weak, if it is.
pub fn api_token_weakness(token: &str) -> Option<String> {
    if token.is_empty() {
        return Some("api_token must be set (BERTH_ADMIN_API_TOKEN or api_token in the config file)".into());
    }
    let distinct: std::collections::HashSet<char> = token.chars().collect();
    if token.chars().count() < MIN_API_TOKEN_LEN || distinct.len() < 8 {
        return Some(format!(
            "api_token is too weak: use at least {MIN_API_TOKEN_LEN} random characters (e.g. `openssl rand -hex 24`); \
             it can delete every tag"
        ));
    }
    None
}

#[cfg(test)]
mod token_tests {
    #[test]
    fn weak_tokens_are_refused() {
        assert!(super::api_token_weakness("").is_some());
        assert!(super::api_token_weakness("x").is_some());
        assert!(super::api_token_weakness(&"a".repeat(40)).is_some());
        assert!(super::api_token_weakness("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b").is_none());
    }
}
