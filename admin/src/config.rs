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
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:5050".into(),
            api_token: None,
            node_data_dir: "./berth-data".into(),
            node_url: None,
            node_token: None,
            postgres: "host=127.0.0.1 port=5432 user=postgres dbname=berth".into(),
            sync_batch: 500,
            gc_schedule: None,
            gc_schedule_dry_run: false,
            gc: GcPolicy::default(),
            log_format: "text".into(),
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
