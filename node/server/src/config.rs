//! The node's configuration: one documented struct. Sources, later ones winning: built-in
//! defaults, a TOML file (`--config`), `BERTH_*` environment variables (nested keys with `__`,
//! e.g. `BERTH_AUTH__REALM`), then command-line flags. Unknown keys are rejected.

use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which monoio driver runs the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// io_uring when the kernel allows it, else epoll.
    Auto,
    /// io_uring only (fail to start without it).
    Iouring,
    /// epoll only.
    Epoll,
}

/// Complete node configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the registry listens on.
    pub listen: String,
    /// Where blobs, uploads and the index live.
    pub data_dir: PathBuf,
    /// Number of cores (threads) serving requests; 0 means one per available CPU.
    pub workers: usize,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `info,berth::access=warn`…); `RUST_LOG` overrides it.
    /// Reloaded on SIGHUP.
    pub log_level: String,
    /// I/O driver selection.
    pub io_driver: IoDriver,
    /// Storage behaviour.
    pub storage: StorageConfig,
    /// Upload sessions.
    pub uploads: UploadConfig,
    /// Request limits and timeouts.
    pub limits: LimitsConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Local cache budget (used when `storage.s3` is set).
    pub cache: berth_tiering::CacheConfig,
    /// The internal API for the admin sidecar and `berth gc`.
    pub internal: InternalConfig,
    /// Default garbage-collection policy (each run may override it).
    pub gc: crate::gc::GcPolicy,
    /// Change-feed retention.
    pub feed: FeedConfig,
    /// What a pushed manifest may leave out (sparse indexes, absent layers).
    pub validation: ValidationConfig,
    /// Vulnerability scanning: the registry API's scan endpoints and the pull policy.
    pub scan: crate::scan::ScanConfig,
    /// Where `/metrics` is served.
    pub metrics: MetricsConfig,
    /// TLS on the registry port: set `[tls]` (`cert`, `key`; `client_ca` for mTLS).
    pub tls: Option<crate::http::tls::TlsConfig>,
    /// Pull-through cache: `[[proxy.upstreams]]` (see `berth_proxy::ProxyConfig`).
    pub proxy: berth_proxy::ProxyConfig,
    /// Scale-out (`[cluster]`): many nodes on one Postgres and one S3 bucket. Absent: a
    /// single node, as always.
    #[serde(default)]
    pub cluster: Option<berth_cluster::ClusterConfig>,
}

/// Which children of a pushed index must already be in the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexChildren {
    /// Every child (the default, and what the distribution spec describes).
    All,
    /// None: a sparse index (a mirror of some platforms only) is accepted as it is.
    None,
    /// Those whose platform is listed in `index_platforms`; others may be absent.
    Platforms,
}

/// What a pushed manifest may leave out. Absent references are recorded as absent: GC, fsck
/// and the sidecar treat them as absent, not as errors, and a later push of one fills it in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// `all` (default), `none`, or `platforms`: which children of an index must exist.
    pub index_children: IndexChildren,
    /// With `index_children = "platforms"`: the platforms (`os/arch[/variant]`, e.g.
    /// `linux/amd64`) that must be present.
    pub index_platforms: Vec<String>,
    /// Accept image manifests whose layers are not in the repository (the config blob must
    /// still be there). Off by default.
    pub allow_absent_layers: bool,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { index_children: IndexChildren::All, index_platforms: Vec::new(), allow_absent_layers: false }
    }
}

impl ValidationConfig {
    /// Whether an absent index child with this platform is acceptable.
    pub fn child_may_be_absent(&self, platform: Option<&str>) -> bool {
        match self.index_children {
            IndexChildren::All => false,
            IndexChildren::None => true,
            IndexChildren::Platforms => !platform.is_some_and(|p| self.index_platforms.iter().any(|want| want == p)),
        }
    }
}

/// Change-feed retention: records are trimmed once every live consumer (the S3 mirror, an
/// admin sidecar) has applied them, keeping at least `retain_changes` recent ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Recent records always kept, consumed or not.
    pub retain_changes: u64,
    /// A consumer not seen for this long no longer holds records back (seconds). A sidecar
    /// that comes back later finds its position trimmed and resyncs by itself.
    pub consumer_timeout_secs: u64,
    /// How often the feed is trimmed (seconds).
    pub trim_interval_secs: u64,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig { retain_changes: 1_000_000, consumer_timeout_secs: 7 * 24 * 3600, trim_interval_secs: 300 }
    }
}

/// The internal API: a separate listener, never the public port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InternalConfig {
    /// Address; port 0 picks a free port. The address in use is written to
    /// `<data_dir>/internal.addr` for `berth gc` and the sidecar.
    pub listen: String,
    /// Shared bearer token. Unset: a random one is generated once and kept in
    /// `<data_dir>/internal.token` (mode 0600).
    pub token: Option<String>,
    /// Serve the internal API over TLS with the `[tls]` certificate (for an internal listener
    /// on a network, not loopback). Clients trust it through their CA setting
    /// (`node_ca` of the sidecar, `--node-ca` of the CLI). The URL in use is written to
    /// `<data_dir>/internal.url`.
    pub tls: bool,
}

impl Default for InternalConfig {
    fn default() -> Self {
        InternalConfig { listen: "127.0.0.1:0".into(), token: None, tls: false }
    }
}

/// Storage behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Allow `DELETE` of blobs and manifests (405 `UNSUPPORTED` otherwise).
    pub delete_enabled: bool,
    /// Sync the index WAL on every acknowledged write (power-loss safety). Without it an
    /// acknowledged write still survives a process crash.
    pub sync_index: bool,
    /// S3 tiering: set `[storage.s3]` (at least `bucket`) to turn it on. Unset: purely local.
    pub s3: Option<berth_tiering::S3Config>,
    /// Blob uploads are refused (507) when they would leave less free space than this on the
    /// data directory's disk (at most a tenth of the disk): the index keeps room to write.
    pub min_free_bytes: u64,
    /// A file of this size (at most a twentieth of the disk) is kept in the data directory and
    /// released at start when the disk is full, so a node killed there can open its index.
    pub reserve_bytes: u64,
}

/// Upload sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// An upload with no activity for this many seconds expires and its data is removed.
    pub expire_after_secs: u64,
    /// How often expired uploads are looked for, in seconds.
    pub expiry_interval_secs: u64,
    /// Smallest chunk we ask clients for (`OCI-Chunk-Min-Length`); 0 leaves it unset.
    pub chunk_min_length: u64,
    /// Most concurrent upload sessions in one repository (429 beyond).
    pub max_sessions_per_repo: usize,
    /// Most concurrent upload sessions in the whole registry (429 beyond).
    pub max_sessions: usize,
    /// Most concurrent upload sessions one client (user, or address when anonymous) may hold.
    pub max_sessions_per_client: usize,
}

/// Request limits and timeouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest manifest accepted (413 beyond).
    pub max_manifest_bytes: u64,
    /// Most descriptors (config, layers, index children) one manifest may list
    /// (`MANIFEST_INVALID` beyond): bounds the reference checks a push asks for.
    pub max_manifest_descriptors: usize,
    /// Largest blob accepted (413 beyond); 0 means no limit.
    pub max_blob_bytes: u64,
    /// Largest request head (431 beyond).
    pub max_head_bytes: usize,
    /// Idle keep-alive connections are closed after this many seconds.
    pub idle_timeout_secs: u64,
    /// A request head must arrive within this many seconds of its first byte.
    pub head_timeout_secs: u64,
    /// Longest pause while receiving a body or sending a response, in seconds.
    pub io_timeout_secs: u64,
    /// Blobs up to this size are kept in memory after their first read (per core) and answered
    /// from there; 0 turns the cache off.
    pub small_blob_max_bytes: u64,
    /// Memory for those small blobs, over all cores.
    pub small_blob_cache_bytes: u64,
    /// Blob files kept open for reuse, over all cores (at most an eighth of the open-file
    /// limit); 0 opens every blob per request.
    pub open_blob_files: usize,
    /// Most open client connections over all cores; 0: three quarters of the open-file limit.
    /// Beyond it a few more are accepted for `/healthz` and `/readyz` only.
    pub max_connections: usize,
    /// Most open connections from one client address; 0: no per-address limit. Behind a load
    /// balancer or proxy every client has its address: raise this or set 0.
    pub max_connections_per_address: usize,
}

/// One user with a bcrypt password hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User name.
    pub name: String,
    /// bcrypt hash (`htpasswd -B` format).
    pub bcrypt: String,
}

/// Authentication and permissions. Off when none of `htpasswd`, `users`, `rules` and `token`
/// is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Turn auth on with no configured users (users and robots managed through the admin API
    /// or `berth user` / `berth robot`). Also on when any of the keys below is set.
    pub enabled: bool,
    /// Path of an htpasswd file with bcrypt entries.
    pub htpasswd: Option<PathBuf>,
    /// Users given inline.
    pub users: Vec<User>,
    /// Realm in Basic `WWW-Authenticate` challenges.
    pub realm: String,
    /// Let anyone pull every repository without credentials (a last rule after `rules`).
    pub anonymous_pull: bool,
    /// Groups of users, named in rules as `group:<name>`.
    pub groups: Vec<crate::auth::policy::GroupConfig>,
    /// Ordered permission rules; none: authenticated callers may do everything.
    pub rules: Vec<crate::auth::policy::RuleConfig>,
    /// Threads checking bcrypt passwords, off the serving cores; 0: half the CPUs (at least 1).
    pub verify_threads: usize,
    /// Password checks that may wait for a thread; beyond, logins get 429 at once.
    pub max_pending_verifications: usize,
    /// Failed-login limits per client address and per user (429 with `Retry-After`).
    pub failed_logins: crate::auth::limiter::FailedLoginLimits,
    /// The registry token protocol (`WWW-Authenticate: Bearer`, `/token`): set `[auth.token]`.
    pub token: Option<crate::auth::token::TokenConfig>,
}

/// Who may read `/metrics` on the public listener (the internal listener always serves it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsExposure {
    /// Not served on the public port (404).
    Off,
    /// Served to authenticated callers (any user) when auth is on; open when auth is off.
    Authenticated,
    /// Served to anyone.
    Open,
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `/metrics` on the public port: `off` (default), `authenticated` or `open`. Prometheus
    /// scrapes the internal listener (`internal.listen`, no token needed for `/metrics`).
    pub public: MetricsExposure,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { public: MetricsExposure::Off }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:5000".into(),
            data_dir: "./berth-data".into(),
            workers: 0,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            io_driver: IoDriver::Auto,
            storage: StorageConfig::default(),
            uploads: UploadConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            cache: berth_tiering::CacheConfig::default(),
            internal: InternalConfig::default(),
            gc: crate::gc::GcPolicy::default(),
            feed: FeedConfig::default(),
            validation: ValidationConfig::default(),
            scan: crate::scan::ScanConfig::default(),
            metrics: MetricsConfig::default(),
            tls: None,
            proxy: berth_proxy::ProxyConfig::default(),
            cluster: None,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            delete_enabled: true,
            sync_index: true,
            s3: None,
            min_free_bytes: 256 << 20,
            reserve_bytes: 64 << 20,
        }
    }
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            expire_after_secs: 3600,
            expiry_interval_secs: 60,
            chunk_min_length: 0,
            max_sessions_per_repo: 1000,
            max_sessions: 10_000,
            max_sessions_per_client: 1000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_manifest_descriptors: crate::manifest::DEFAULT_MAX_DESCRIPTORS,
            max_blob_bytes: 0,
            max_head_bytes: 64 * 1024,
            idle_timeout_secs: 75,
            head_timeout_secs: 30,
            io_timeout_secs: 60,
            small_blob_max_bytes: 16 * 1024,
            small_blob_cache_bytes: 64 * 1024 * 1024,
            open_blob_files: 1024,
            max_connections: 0,
            max_connections_per_address: 4096,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            htpasswd: None,
            users: Vec::new(),
            realm: "berth".into(),
            anonymous_pull: false,
            groups: Vec::new(),
            rules: Vec::new(),
            verify_threads: 0,
            max_pending_verifications: 64,
            failed_logins: Default::default(),
            token: None,
        }
    }
}

impl Config {
    /// Load defaults, then the file (if any), then `BERTH_*` variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, Box<figment::Error>> {
        Self::load_reporting(file).map(|(c, _)| c)
    }

    /// `load`, also returning the `BERTH_*` variables that were ignored because they are not
    /// settings of the node (`BERTH_PASSWORD`, `BERTH_INTERNAL_URL`… belong to other
    /// subcommands): the caller warns about them. Unknown keys in the file, and unknown nested
    /// keys of known sections (`BERTH_AUTH__BOGUS`), are still errors.
    pub fn load_reporting(file: Option<&std::path::Path>) -> Result<(Config, Vec<String>), Box<figment::Error>> {
        if let Some(f) = file {
            if let Err(e) = std::fs::metadata(f) {
                return Err(Box::new(figment::Error::from(format!("configuration file {}: {e}", f.display()))));
            }
        }
        let sections: Vec<String> = match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        // The first segment of `AUTH__REALM` (raw) or `auth.realm` (as figment maps it).
        let top = |key: &str| key.split("__").next().unwrap_or("").split('.').next().unwrap_or("").to_ascii_lowercase();
        // Variables of the command line itself (`--config`), not configuration keys.
        const FLAGS: [&str; 1] = ["config"];
        // Other programs' variables sharing the prefix: the sidecar's (`BERTH_ADMIN_*`) are not a
        // mistake and are not reported.
        let ignored: Vec<String> = std::env::vars()
            .filter_map(|(k, _)| k.strip_prefix("BERTH_").map(str::to_owned))
            .filter(|k| !k.starts_with("ADMIN_"))
            .filter(|k| !sections.contains(&top(k)) && !FLAGS.contains(&top(k).as_str()))
            .map(|k| format!("BERTH_{k}"))
            .collect();
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        let env = Env::prefixed("BERTH_")
            .split("__")
            .filter(move |k| sections.contains(&top(k.as_str())) && !FLAGS.contains(&top(k.as_str()).as_str()));
        fig = fig.merge(env);
        fig.extract().map(|c| (c, ignored)).map_err(Box::new)
    }

    /// Check everything that can be checked without starting: addresses, S3 and cache
    /// settings, the scan policy, the htpasswd file. Returns a one-line summary, or the first
    /// problem (naming the key).
    pub fn check(&self) -> Result<String, String> {
        let listen = crate::server::resolve("listen", &self.listen).map_err(|e| e.to_string())?;
        crate::server::resolve("internal.listen", &self.internal.listen).map_err(|e| e.to_string())?;
        if let Some(s3) = &self.storage.s3 {
            s3.validate().map_err(|e| format!("storage.s3: {e}"))?;
            self.cache.validate().map_err(|e| format!("cache: {e}"))?;
        }
        crate::scan::Policy::compile(&self.scan.policy)?;
        crate::auth::Auth::validate(&self.auth).map_err(|e| e.to_string())?;
        if let Some(t) = &self.tls {
            crate::http::tls::Acceptor::new(t).map_err(|e| e.to_string())?;
        }
        if self.internal.tls && self.tls.is_none() {
            return Err(
                "internal.tls = true needs [tls] (cert and key): the internal API uses the same certificate".into()
            );
        }
        self.check_cluster()?;
        if self.log_level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return Err(format!(
                "log_level = {:?} is not a log filter (e.g. info, debug, info,berth::access=warn)",
                self.log_level
            ));
        }
        Ok(format!(
            "configuration OK: listen {listen}, data_dir {}, auth {}, s3 {}, scanning {}, cluster {}",
            self.data_dir.display(),
            match (crate::auth::Auth::is_configured(&self.auth), &self.auth.token) {
                (false, _) => "off",
                (true, None) => "basic",
                (true, Some(_)) => "token",
            },
            self.storage.s3.as_ref().map_or("off".to_string(), |s| format!("s3://{}/{}", s.bucket, s.prefix)),
            if self.scan.enabled { "on" } else { "off" },
            self.cluster
                .as_ref()
                .map_or("off".to_string(), |c| format!("node {} ({:?} durability)", c.node, c.durability)),
        ))
    }

    /// `[cluster]` needs the shared bucket and a shared internal token (uploads are forwarded
    /// between nodes' internal listeners), and excludes what is still per node.
    pub fn check_cluster(&self) -> Result<(), String> {
        let Some(c) = &self.cluster else { return Ok(()) };
        c.validate()?;
        if self.storage.s3.is_none() {
            return Err("[cluster] needs storage.s3: the nodes share one bucket".into());
        }
        if self.internal.token.is_none() {
            return Err(
                "[cluster] needs internal.token, the same on every node (uploads are forwarded between nodes)".into()
            );
        }
        if self.proxy.enabled() {
            return Err(
                "[cluster] with [proxy] upstreams is not supported yet: the pull-through cache is per node".into()
            );
        }
        Ok(())
    }

    /// Number of serving cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config.example.toml");
        let cfg = Config::load(Some(&p)).unwrap();
        assert!(cfg.storage.s3.is_none(), "the example keeps S3 commented out");
        assert_eq!(cfg.internal.listen, "127.0.0.1:0");
        assert_eq!(cfg.gc.grace_secs, 3600);
    }

    #[test]
    fn the_example_cluster_section_parses_and_is_checked() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config.example.toml");
        let text = std::fs::read_to_string(p).unwrap();
        let start = text.find("# [cluster]").unwrap();
        let section: String =
            text[start..].lines().map(|l| l.strip_prefix("# ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, &section).unwrap();
        let mut cfg = Config::load(Some(&f)).unwrap();
        let c = cfg.cluster.clone().unwrap();
        assert_eq!((c.node.as_str(), c.lease_ttl_secs), ("a", 10));
        assert!(cfg.check_cluster().unwrap_err().contains("storage.s3"));
        cfg.storage.s3 = Some(berth_tiering::S3Config { bucket: "b".into(), ..Default::default() });
        assert!(cfg.check_cluster().unwrap_err().contains("internal.token"));
        cfg.internal.token = Some("t".into());
        assert!(cfg.check_cluster().is_ok());
    }

    /// Regression: `BERTH_PASSWORD` (documented for `hash-password`) made `berth serve` refuse
    /// to start with "unknown field".
    #[test]
    fn other_commands_variables_are_ignored_not_fatal() {
        std::env::set_var("BERTH_PASSWORD", "x");
        std::env::set_var("BERTH_INTERNAL_URL", "http://127.0.0.1:1");
        std::env::set_var("BERTH_AUTH__REALM", "from-env");
        std::env::set_var("BERTH_ADMIN_API_TOKEN", "the sidecar's");
        let (cfg, ignored) = Config::load_reporting(None).unwrap();
        std::env::remove_var("BERTH_ADMIN_API_TOKEN");
        assert!(
            !ignored.iter().any(|v| v.starts_with("BERTH_ADMIN_")),
            "the sidecar's variables are not reported: {ignored:?}"
        );
        std::env::remove_var("BERTH_AUTH__REALM");
        assert_eq!(cfg.listen, "127.0.0.1:5000");
        assert_eq!(cfg.auth.realm, "from-env", "nested settings still come from the environment");
        assert!(ignored.contains(&"BERTH_PASSWORD".to_string()), "{ignored:?}");
        assert!(ignored.contains(&"BERTH_INTERNAL_URL".to_string()), "{ignored:?}");
        std::env::remove_var("BERTH_PASSWORD");
        std::env::remove_var("BERTH_INTERNAL_URL");
    }

    #[test]
    fn check_names_the_problem() {
        assert!(Config::default().check().unwrap().starts_with("configuration OK"));
        let mut c = Config::default();
        c.scan.policy.block_severity = "urgent".into();
        assert!(c.check().unwrap_err().contains("scan.policy.block_severity"));
        let c = Config { listen: "nowhere".into(), ..Default::default() };
        assert!(c.check().unwrap_err().contains("listen"));
    }

    #[test]
    fn s3_section_from_toml() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[storage.s3]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9000\"\npath_style = true\n[cache]\nmax_bytes = 1000\n").unwrap();
        let cfg = Config::load(Some(&p)).unwrap();
        let s3 = cfg.storage.s3.unwrap();
        assert_eq!((s3.bucket.as_str(), s3.path_style, cfg.cache.max_bytes), ("b", true, 1000));
        assert!(s3.validate().is_ok());
        std::fs::write(&p, "[storage.s3]\nbucket = \"b\"\nbogus = 1\n").unwrap();
        assert!(Config::load(Some(&p)).is_err(), "unknown keys are rejected");
    }
}
