//! `berth`: the Berth registry binary.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_node::config::{Config, LogFormat};
use clap::{Parser, Subcommand};

/// Berth: an OCI container registry. `berth serve` runs it on local disk with no other
/// service needed.
#[derive(Parser)]
#[command(name = "berth", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (OCI Distribution API) until SIGTERM or SIGINT.
    ///
    /// With no options it listens on 127.0.0.1:5000 and stores everything under
    /// ./berth-data. Settings come from defaults, then --config FILE (TOML), then BERTH_*
    /// environment variables (BERTH_AUTH__REALM for nested keys), then these flags.
    Serve(ServeArgs),
    /// Check that the index and the blob files agree (run with the node stopped).
    ///
    /// Errors: the index promises data the disk lacks (missing or wrong-size files, dangling
    /// links and tags, manifests with missing blobs). Garbage: bytes nothing refers to (orphan
    /// blob files a crash can leave, stale upload files). Exit status 1 when errors remain.
    Fsck {
        /// Data directory of the node.
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
        data_dir: PathBuf,
        /// Also hash every blob and compare with its digest (reads everything).
        #[arg(long)]
        verify: bool,
        /// Remove garbage and drop index entries whose data is gone.
        #[arg(long)]
        repair: bool,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the index from the S3 bucket (run with the node stopped).
    ///
    /// For a node whose disk was lost: blobs come back as S3-only (read through on first
    /// pull), manifests, tags and repository links as they were last mirrored. Needs
    /// `[storage.s3]` in the configuration. Refuses a non-empty index unless --merge.
    RebuildIndex {
        /// TOML configuration file with `[storage.s3]`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory of the node (overrides the configuration).
        #[arg(long, env = "BERTH_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Import into an index that already has content (existing entries win).
        #[arg(long)]
        merge: bool,
    },
    /// Garbage collection on the running node: delete what nothing references.
    ///
    /// Roots are tagged manifests (and untagged ones unless --untagged-max-age); everything
    /// they reach is kept, with referrers. Unreferenced blobs go once unused for the grace
    /// period. Pushes and pulls continue meanwhile. Without --delete this is a dry run that
    /// prints exactly what a real run would delete. Policy flags replace the node's [gc]
    /// configuration for this run.
    Gc {
        /// Only report (the default).
        #[arg(long, conflicts_with = "delete")]
        dry_run: bool,
        /// Delete for real.
        #[arg(long)]
        delete: bool,
        /// List every digest.
        #[arg(long, short)]
        verbose: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Keep unreferenced blobs used (pushed, mounted, pulled) within this long, e.g. 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
        /// Delete untagged manifests older than this (e.g. 7d); default: keep untagged ones.
        #[arg(long, value_parser = humantime::parse_duration)]
        untagged_max_age: Option<Duration>,
        /// Do not keep referrers (signatures, SBOMs) of kept manifests.
        #[arg(long)]
        no_keep_referrers: bool,
        /// Retention: keep this many most recently pushed tags per repository.
        #[arg(long)]
        keep_last: Option<usize>,
        /// Retention: keep tags pushed within this long (e.g. 30d).
        #[arg(long, value_parser = humantime::parse_duration)]
        keep_younger_than: Option<Duration>,
        /// Retention: never delete tags matching this glob (repeatable), e.g. 'v*'.
        #[arg(long)]
        protect: Vec<String>,
        /// Retention applies to repositories matching this glob (default: all).
        #[arg(long)]
        repositories: Option<String>,
        /// Data directory of the running node (its internal API address and token are there).
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
        data_dir: PathBuf,
        /// Internal API URL instead of the one in the data directory.
        #[arg(long, env = "BERTH_INTERNAL_URL")]
        node: Option<String>,
        /// Internal API token instead of the one in the data directory.
        #[arg(long, env = "BERTH_INTERNAL_TOKEN")]
        token: Option<String>,
    },
    /// Check a node's setup and print what is wrong and how to fix it (exit 1 on a failure):
    /// configuration, data directory and free space, the running node and its internal API,
    /// S3 (reachable and writable, with a probe object) and the clock. Takes the same
    /// configuration sources as `serve`.
    Doctor(ServeArgs),
    /// Exit 0 when the node at URL answers its health check (for container HEALTHCHECKs and
    /// probes: no curl needed in the image).
    Healthcheck {
        /// Health endpoint. Default: `/healthz` at `BERTH_LISTEN` (a wildcard address asked on
        /// loopback), else `http://127.0.0.1:5000/healthz`.
        #[arg(long, env = "BERTH_HEALTHCHECK_URL")]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Print a bcrypt hash of a password for the htpasswd file or `[[auth.users]]`.
    ///
    /// The password is read from BERTH_PASSWORD; else, on a terminal, prompted for twice
    /// without echo; else from the first line of stdin. Empty passwords are refused.
    HashPassword {
        /// Print an htpasswd line `USER:HASH` instead of the bare hash.
        #[arg(long)]
        user: Option<String>,
        /// bcrypt cost (4-31); 10 takes ~0.1 s per check and is cached after the first.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
    },
    /// Token signing keys (`[auth.token]`).
    #[command(subcommand)]
    TokenKey(TokenKeyCommand),
    /// Users of the running node managed through its internal API (configured users, in the
    /// htpasswd file or `[[auth.users]]`, are edited there).
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Robot accounts of the running node: machine users with generated secrets that log in
    /// as `robot$<name>`.
    Robot {
        #[command(subcommand)]
        command: RobotCommand,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Pull a list of images into the running node's pull-through cache (air gaps, planned
    /// scale-ups): each is pulled through the internal listener (no registry credentials) and
    /// cached as for a client; the bytes are discarded here. Exit status 1 if any failed.
    ///
    /// FILE has one image per line, as named on this registry: `registry.k8s.io/pause:3.9`,
    /// `docker.io/library/alpine@sha256:…` (`#` comments).
    Preload {
        /// The list of images.
        #[arg(long, short)]
        file: PathBuf,
        /// Platforms of multi-platform images to load (`linux/amd64`, `linux/arm64/v8`; repeat),
        /// or `all`.
        #[arg(long, default_value = "linux/amd64")]
        platform: Vec<String>,
        /// Images pulled at the same time.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// How the CLI finds a running node.
#[derive(clap::Args)]
struct NodeArgs {
    /// Data directory of the running node (its internal API address and token are there).
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data", global = true)]
    data_dir: PathBuf,
    /// Internal API URL instead of the one in the data directory.
    #[arg(long, env = "BERTH_INTERNAL_URL", global = true)]
    node: Option<String>,
    /// Internal API token instead of the one in the data directory.
    #[arg(long, env = "BERTH_INTERNAL_TOKEN", global = true)]
    token: Option<String>,
    /// CA bundle (PEM) to trust for an internal API served over TLS (`internal.tls`).
    #[arg(long, env = "BERTH_INTERNAL_CA", global = true)]
    node_ca: Option<PathBuf>,
}

impl NodeArgs {
    fn client(self) -> anyhow::Result<berth_internal_api::InternalClient> {
        let c = berth_internal_api::InternalClient::resolve(&self.data_dir, self.node, self.token)
            .map_err(|e| anyhow::anyhow!("{e}; or pass --node and --token"))?;
        match self.node_ca {
            Some(ca) => c.with_ca(&ca).map_err(anyhow::Error::msg),
            None => Ok(c),
        }
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user, or set a user's password (read from BERTH_PASSWORD, else prompted twice
    /// without echo, else the first line of stdin).
    Add {
        /// User name.
        name: String,
    },
    /// Delete a user: their logins stop working at once.
    Rm {
        /// User name.
        name: String,
    },
    /// List users, robots, and the number of rules.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RobotCommand {
    /// Create a robot and print its secret (shown once, stored hashed).
    Add {
        /// Name; it logs in as robot$NAME.
        name: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime, e.g. 90d or 12h; default: until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a robot at once.
    Rm {
        /// Name.
        name: String,
    },
    /// List users and robots.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenKeyCommand {
    /// Write a new signing key into the key directory. After SIGHUP the node signs with it;
    /// tokens signed with older keys stay valid until those key files are removed (wait
    /// `ttl_secs` + `leeway_secs`, then delete them and send SIGHUP again).
    New {
        /// Key directory (default: `<data_dir>/token-keys`, or `auth.token.key_dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Data directory (when --dir is not given).
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
        data_dir: PathBuf,
        /// ES256 (ECDSA P-256) or EdDSA (Ed25519).
        #[arg(long, default_value = "ES256", value_parser = ["ES256", "EdDSA"])]
        algorithm: String,
    },
    /// Print the public keys (JWKS) of a key directory, for other services that verify
    /// Berth's tokens.
    Jwks {
        /// Key directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Data directory (when --dir is not given).
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see deploy/config.example.toml for every key).
    #[arg(long, short, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:5000.
    #[arg(long, env = "BERTH_LISTEN")]
    listen: Option<String>,
    /// Directory for blobs, uploads and the index.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Serving threads (cores); 0 = one per CPU.
    #[arg(long, env = "BERTH_WORKERS")]
    workers: Option<usize>,
    /// Log format: text or json.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Parse and validate the configuration (file, environment, flags), print a summary, and
    /// exit: 0 when it is valid, 1 with the problem otherwise. Nothing is started or written.
    #[arg(long)]
    check_config: bool,
}

type LogHandle = tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The log filter: `RUST_LOG` when set, else the configured `log_level`.
fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Install the log subscriber; the returned handle changes the filter (SIGHUP). Colours only
/// on a terminal.
fn init_logs(format: LogFormat, level: &str) -> LogHandle {
    use tracing_subscriber::prelude::*;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
        LogFormat::Text => registry.with(fmt).init(),
    }
    handle
}

/// Block SIGTERM, SIGINT and SIGHUP in every thread (inherited by the cores), to be taken by
/// sigwait.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a zeroed local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` was initialised by block_signals; `sig` is a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn load_config(args: &ServeArgs) -> anyhow::Result<(Config, Vec<String>)> {
    let (mut cfg, ignored) =
        Config::load_reporting(args.config.as_deref()).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    if let Some(l) = &args.listen {
        cfg.listen = l.clone();
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(w) = args.workers {
        cfg.workers = w;
    }
    if let Some(f) = &args.log_format {
        cfg.log_format = if f == "json" { LogFormat::Json } else { LogFormat::Text };
    }
    Ok((cfg, ignored))
}

/// SIGHUP: re-read the configuration and apply what can change while serving (the htpasswd
/// file and inline users, the log level); everything else needs a restart, and says so.
fn reload(args: &ServeArgs, app: &berth_node::app::App, logs: &LogHandle) {
    let cfg = match load_config(args) {
        Ok((c, _)) => c,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: configuration not reloaded; keeping the one in force");
            return;
        }
    };
    if let Err(e) = logs.modify(|f| *f = log_filter(&cfg.log_level)) {
        tracing::warn!(error = %e, "SIGHUP: log level not changed");
    }
    match (&app.auth, berth_node::auth::Auth::is_configured(&cfg.auth)) {
        (Some(auth), true) => match auth.reload(&cfg.auth) {
            Ok(n) => tracing::info!(users = n, "SIGHUP: users, rules and token keys reloaded"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: auth not reloaded; keeping the one in force"),
        },
        (None, true) | (Some(_), false) => {
            tracing::warn!("SIGHUP: turning authentication on or off needs a restart")
        }
        (None, false) => {}
    }
    if let Some(acceptor) = &app.tls {
        match acceptor.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded (new connections use them)"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS not reloaded; keeping the certificate in force"),
        }
    }
    if let Some(book) = &app.scans {
        match berth_node::scan::Policy::compile(&cfg.scan.policy) {
            Ok(p) => {
                book.set_policy(p);
                tracing::info!("SIGHUP: scan policy reloaded");
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: scan policy not reloaded; keeping the one in force"),
        }
    }
    tracing::info!(log_level = %cfg.log_level, "SIGHUP: configuration reloaded (listen, data_dir, storage and limits need a restart)");
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (cfg, ignored) = load_config(&args)?;
    if args.check_config {
        for var in &ignored {
            eprintln!("warning: ignoring {var}: not a `berth serve` setting");
        }
        println!("{}", cfg.check().map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    let logs = init_logs(cfg.log_format, &cfg.log_level);
    for var in ignored {
        tracing::warn!(variable = %var, "ignoring an environment variable that is not a `berth serve` setting");
    }
    let set = block_signals();
    // Everything the node writes is its own: blobs, index, keys, token (0600 files, 0700 dirs).
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    raise_fd_limit();
    // Listen first: a node that cannot bind its port writes nothing into the data directory.
    let listeners = berth_node::server::Listeners::bind(&cfg)?;
    let app = berth_node::app::App::open(cfg)?;
    let node = berth_node::server::start_on(app, listeners).context("starting the server")?;
    loop {
        let sig = wait_signal(&set);
        if sig == libc::SIGHUP {
            reload(&args, &node.app, &logs);
            continue;
        }
        tracing::info!(signal = sig, "shutting down: finishing in-flight requests");
        break;
    }
    node.shutdown(Duration::from_secs(30));
    tracing::info!("stopped");
    Ok(())
}

/// Raise the soft open-file limit to the hard one: every connection is a descriptor, and the
/// connection cap (`limits.max_connections`) is derived from this limit.
fn raise_fd_limit() {
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn rebuild_index(config: Option<PathBuf>, data_dir: Option<PathBuf>, merge: bool) -> anyhow::Result<()> {
    let mut cfg = Config::load(config.as_deref()).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    init_logs(cfg.log_format, &cfg.log_level);
    let s3 = cfg.storage.s3.clone().context("rebuild-index needs [storage.s3] in the configuration")?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let blobs = std::sync::Arc::new(berth_node::store::BlobStore::open(&cfg.data_dir)?);
    let index = std::sync::Arc::new(
        berth_index::Index::open(&cfg.data_dir.join("index"), true)
            .context("opening the index (is the node still running? stop it first)")?,
    );
    if index.next_sequence() > 1 && !merge {
        anyhow::bail!("the index at {} is not empty; pass --merge to import into it", cfg.data_dir.display());
    }
    let tier = berth_tiering::Tiering::new(s3, cfg.cache.clone(), index.clone(), blobs)?;
    let report = berth_node::rebuild::from_bucket(&index, &tier).map_err(|e| anyhow::anyhow!(e))?;
    tier.shutdown(Duration::from_secs(5));
    index.flush()?;
    println!(
        "rebuilt from s3://{}/{}: {report}",
        cfg.storage.s3.as_ref().map(|s| s.bucket.as_str()).unwrap_or(""),
        tier.layout().prefix()
    );
    Ok(())
}

/// `/healthz` at the node's listen address (`BERTH_LISTEN`): the container's HEALTHCHECK
/// follows the port the node was given. A wildcard address is asked on loopback.
fn default_health_url(listen: Option<&str>) -> String {
    let listen = listen.map(str::trim).filter(|l| !l.is_empty()).unwrap_or("127.0.0.1:5000");
    let addr = match listen.rsplit_once(':') {
        Some(("0.0.0.0" | "", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_owned(),
    };
    format!("http://{addr}/healthz")
}

/// Read the password: BERTH_PASSWORD, a no-echo prompt (twice) on a terminal, or stdin.
fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("BERTH_PASSWORD") {
        return Ok(p);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Repeat password: ")?;
        anyhow::ensure!(first == again, "the passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn hash_password(user: Option<String>, cost: u32) -> anyhow::Result<()> {
    if let Some(u) = &user {
        anyhow::ensure!(!u.is_empty(), "the user name is empty");
        anyhow::ensure!(!u.contains(':'), "user names cannot contain ':' (the htpasswd separator)");
        anyhow::ensure!(!u.chars().any(char::is_control), "user names cannot contain control characters");
    }
    let password = read_password()?;
    anyhow::ensure!(!password.is_empty(), "refusing an empty password (anyone could log in with it)");
    anyhow::ensure!(
        password.len() <= berth_node::auth::passwords::MAX_PASSWORD_BYTES,
        "refusing a password longer than {} bytes: bcrypt ignores everything after that, so any suffix would log in",
        berth_node::auth::passwords::MAX_PASSWORD_BYTES
    );
    let hash = bcrypt::hash(password, cost)?;
    match user {
        Some(u) => println!("{u}:{hash}"),
        None => println!("{hash}"),
    }
    Ok(())
}

fn main() {
    // One clear line per failure (no debug dump, no repeated cause chain).
    if let Err(e) = run() {
        eprintln!("berth: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => serve(a),
        Command::Fsck { data_dir, verify, repair, json } => {
            let r = berth_node::fsck::run(&data_dir, verify, repair)
                .context("fsck (is the node still running? stop it first: the index allows one process)")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "checked {} blobs: {} errors, {} garbage{}",
                    r.blobs_checked,
                    r.errors(),
                    r.garbage(),
                    if r.repaired { " (repaired)" } else { "" }
                );
                for d in &r.missing_files {
                    println!("error: blob {d}: file missing");
                }
                for d in &r.size_mismatches {
                    println!("error: blob {d}: file size differs from the index");
                }
                for d in &r.corrupt_files {
                    println!("error: blob {d}: content does not match its digest");
                }
                for (repo, d) in &r.dangling_links {
                    println!("error: {repo}: link to unknown blob {d}");
                }
                for (repo, t) in &r.dangling_tags {
                    println!("error: {repo}:{t}: tag points at a missing manifest");
                }
                for (repo, m, d) in &r.broken_manifests {
                    println!("error: {repo}@{m}: references missing {d}");
                }
                for p in r.orphan_files.iter().chain(&r.orphan_upload_files) {
                    println!("garbage: {}", p.display());
                }
                for id in &r.sessions_without_file {
                    println!("garbage: upload session {id} has no data file");
                }
            }
            let remaining = if r.repaired { r.broken_manifests.len() } else { r.errors() };
            if remaining > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::RebuildIndex { config, data_dir, merge } => rebuild_index(config, data_dir, merge),
        Command::Gc {
            dry_run: _,
            delete,
            verbose,
            json,
            grace,
            untagged_max_age,
            no_keep_referrers,
            keep_last,
            keep_younger_than,
            protect,
            repositories,
            data_dir,
            node,
            token,
        } => {
            let target = berth_node::gc_cli::Target::resolve(&data_dir, node, token)
                .map_err(|e| anyhow::anyhow!("{e}; or pass --node and --token"))?;
            let flags = berth_node::gc_cli::PolicyFlags {
                grace,
                untagged_max_age,
                no_keep_referrers,
                keep_last,
                keep_younger_than,
                protect,
                repositories,
            };
            berth_node::gc_cli::run(&target, delete, &flags, verbose, json)?;
            Ok(())
        }
        Command::HashPassword { user, cost } => hash_password(user, cost),
        Command::User { command, node } => {
            let c = node.client()?;
            match command {
                UserCommand::Add { name } => {
                    let password = read_password()?;
                    anyhow::ensure!(!password.is_empty(), "refusing an empty password");
                    berth_node::accounts_cli::user_set(&c, &name, password)
                }
                UserCommand::Rm { name } => berth_node::accounts_cli::user_rm(&c, &name),
                UserCommand::List { json } => berth_node::accounts_cli::list(&c, json),
            }
        }
        Command::Robot { command, node } => {
            let c = node.client()?;
            match command {
                RobotCommand::Add { name, description, expires, json } => {
                    let r = berth_internal_api::accounts::NewRobot {
                        name,
                        description,
                        expires_in_secs: expires.map(|d| d.as_secs()),
                    };
                    berth_node::accounts_cli::robot_add(&c, r, json)
                }
                RobotCommand::Rm { name } => berth_node::accounts_cli::robot_rm(&c, &name),
                RobotCommand::List { json } => berth_node::accounts_cli::list(&c, json),
            }
        }
        Command::Preload { file, platform, parallel, json, node } => {
            let c = node.client()?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            berth_node::preload_cli::run(&c, &text, &platform, parallel, json)
        }
        Command::TokenKey(TokenKeyCommand::New { dir, data_dir, algorithm }) => {
            use berth_node::auth::token::{generate_key, KeyAlgorithm};
            let alg = if algorithm == "EdDSA" { KeyAlgorithm::EdDsa } else { KeyAlgorithm::Es256 };
            let dir = dir.unwrap_or_else(|| data_dir.join("token-keys"));
            let (path, kid) =
                generate_key(&dir, alg).with_context(|| format!("writing a key into {}", dir.display()))?;
            println!("wrote {} (kid {kid}); send SIGHUP to the node to sign with it", path.display());
            Ok(())
        }
        Command::TokenKey(TokenKeyCommand::Jwks { dir, data_dir }) => {
            let dir = dir.unwrap_or_else(|| data_dir.join("token-keys"));
            let cfg = berth_node::auth::token::TokenConfig { key_dir: Some(dir), ..Default::default() };
            let tokens = berth_node::auth::token::Tokens::load_only(&cfg)?;
            println!("{}", serde_json::to_string_pretty(&tokens.jwks())?);
            Ok(())
        }
        Command::Doctor(args) => {
            let (cfg, ignored) = load_config(&args)?;
            for var in &ignored {
                println!("warn config       ignoring {var}: not a `berth serve` setting");
            }
            let checks = berth_node::doctor::run(&cfg);
            for c in &checks {
                println!("{c}");
            }
            if checks.iter().any(|c| matches!(c.outcome, berth_node::doctor::Outcome::Fail(_))) {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Healthcheck { url, timeout } => {
            let url = url.unwrap_or_else(|| default_health_url(std::env::var("BERTH_LISTEN").ok().as_deref()));
            let r = ureq::get(&url).timeout(Duration::from_secs(timeout)).call();
            match r {
                Ok(resp) if resp.status() == 200 => Ok(()),
                Ok(resp) => anyhow::bail!("{url} answered {}", resp.status()),
                Err(e) => anyhow::bail!("{url}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod health_url_tests {
    #[test]
    fn the_healthcheck_follows_berth_listen() {
        assert_eq!(super::default_health_url(None), "http://127.0.0.1:5000/healthz");
        assert_eq!(super::default_health_url(Some("0.0.0.0:8080")), "http://127.0.0.1:8080/healthz");
        assert_eq!(super::default_health_url(Some("[::]:5001")), "http://[::1]:5001/healthz");
        assert_eq!(super::default_health_url(Some("10.1.2.3:6000")), "http://10.1.2.3:6000/healthz");
        assert_eq!(super::default_health_url(Some(":7000")), "http://127.0.0.1:7000/healthz");
    }
}
