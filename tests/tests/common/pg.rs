//! A private Postgres cluster per test (initdb + pg_ctl on a free loopback port), and the
//! `berth-admin` sidecar process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, have};

fn pg_bin(name: &str) -> PathBuf {
    for dir in ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// Whether we run as root (initdb and the server must then run as the `postgres` user).
fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn as_pg(bin: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
}

impl Postgres {
    /// A fresh cluster with a `berth` database, or `None` without Postgres (outside CI).
    pub fn start(parent: &Path) -> Option<Postgres> {
        if !pg_bin("initdb").exists() && !have("initdb") {
            return None;
        }
        // The server runs as `postgres`: it must be able to reach its directory.
        let mut p = parent.to_path_buf();
        loop {
            let _ = std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755));
            if !p.pop() || p.as_os_str().len() <= 1 {
                break;
            }
        }
        let dir = parent.join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            super::run(Command::new("chown").arg("postgres").arg(&dir));
        }
        super::run(
            as_pg(pg_bin("initdb")).arg("-D").arg(&dir).args(["-A", "trust", "-U", "postgres"]).stdout(Stdio::null()),
        );
        let pg = Postgres { port: free_port(), dir };
        pg.start_server();
        super::run(Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-c",
            "CREATE DATABASE berth",
        ]));
        Some(pg)
    }

    pub fn start_server(&self) {
        let opts = format!("-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off", self.port, self.dir.display());
        super::run(
            as_pg(pg_bin("pg_ctl"))
                .arg("-D")
                .arg(&self.dir)
                .args(["-o", &opts, "-l"])
                .arg(self.dir.join("log"))
                .args(["-w", "start"])
                .stdout(Stdio::null()),
        );
    }

    pub fn stop_server(&self) {
        let _ = as_pg(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
    }

    pub fn conn(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=berth", self.port)
    }

    /// One value (or rows joined by newlines) from a query.
    pub fn query(&self, sql: &str) -> String {
        let out = super::run(Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "berth",
            "-At",
            "-c",
            sql,
        ]));
        out.trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// The berth-admin binary next to the tests.
pub fn admin_bin() -> PathBuf {
    let b = super::berth_bin().with_file_name("berth-admin");
    assert!(b.exists(), "{} missing: run `cargo build --bin berth-admin` (tests/run.sh does)", b.display());
    b
}

/// A running sidecar.
pub struct Admin {
    pub port: u16,
    pub token: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub log: PathBuf,
    /// CA of the admin API's TLS certificate, when it serves TLS.
    tls_ca: Option<String>,
}

impl Admin {
    pub fn start(pg: &Postgres, node_dir: &Path, log: PathBuf, extra: &[(&str, &str)]) -> Admin {
        Self::start_with_scheme(pg, node_dir, log, extra, None)
    }

    /// `start`, for an admin API serving TLS with a certificate of `tls_ca`.
    pub fn start_with_scheme(
        pg: &Postgres,
        node_dir: &Path,
        log: PathBuf,
        extra: &[(&str, &str)],
        tls_ca: Option<&str>,
    ) -> Admin {
        let port = free_port();
        let mut env: Vec<(String, String)> = vec![
            ("BERTH_ADMIN_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("BERTH_ADMIN_API_TOKEN".into(), "admin-secret-0123456789abcdef".into()),
            ("BERTH_ADMIN_POSTGRES".into(), pg.conn()),
            ("BERTH_ADMIN_NODE_DATA_DIR".into(), node_dir.display().to_string()),
            ("RUST_LOG".into(), "info".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut a = Admin {
            port,
            token: "admin-secret-0123456789abcdef".into(),
            env,
            child: None,
            log,
            tls_ca: tls_ca.map(str::to_owned),
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        self.child = Some(
            Command::new(admin_bin())
                .arg("serve")
                .envs(self.env.clone())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let up = |a: &Admin| match &a.tls_ca {
            None => ureq::get(&a.url("/metrics")).call().is_ok(),
            Some(ca) => Command::new("curl")
                .args(["-sf", "-m", "2", "--cacert", ca, &a.url("/metrics").replace("http://", "https://")])
                .output()
                .is_ok_and(|o| o.status.success()),
        };
        while !up(self) {
            assert!(
                Instant::now() < deadline,
                "berth-admin did not start: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Run a one-shot subcommand (`resync`, `check`) with the same settings.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(admin_bin()).args(args).envs(self.env.clone()).output().unwrap()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Any admin API request with the token and an optional JSON body; (status, JSON).
    pub fn send(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {}", self.token);
        let bytes = body.map(|b| b.to_string().into_bytes());
        let r = super::http(
            method,
            &self.url(path),
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            bytes.as_deref(),
        );
        (r.status, serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
    }

    /// GET an admin API path with the token; (status, JSON).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {}", self.token);
        let r = super::http("GET", &self.url(path), &[("Authorization", &auth)], None);
        (r.status, serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.kill9();
    }
}
