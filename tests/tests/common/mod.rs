//! Process-level harness: the real `berth` binary, real clients, all on 127.0.0.1.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub mod fleet;
pub mod pg;
pub mod pki;
pub mod s3;
pub mod scripted;
pub mod trivy;

/// The berth binary built alongside the tests (`cargo test --workspace` builds it).
pub fn berth_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("berth");
    assert!(bin.exists(), "{} missing: run `cargo build --bin berth` (the README test command does)", bin.display());
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `len` reproducible pseudo-random bytes (xorshift from `seed`): blob content that does not
/// compress and differs per seed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Whether a client program is available. Under CI (`CI` set) a missing client fails the
/// test instead of skipping it, so a broken install step cannot pass silently.
/// Record that the running test is skipped (it returns early): `bash tests/run.sh` counts
/// these (`BERTH_SKIP_LOG`) and reports them as skipped, not passed.
pub fn skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    eprintln!("SKIP: {test}: {why}");
    if let Some(log) = std::env::var_os("BERTH_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = writeln!(f, "{test}\t{why}");
        }
    }
}

pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required under CI (install it in .ci/run)");
        }
        skip(&format!("{tool} not installed"));
    }
    ok
}

/// Run a command, assert success, return stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Berth {
    pub port: u16,
    pub addr: String,
    pub dir: PathBuf,
    child: Option<Child>,
    extra: Vec<(String, String)>,
    pub log: PathBuf,
    /// CA of the node's TLS certificate, when it serves TLS (health is then checked with curl).
    tls_ca: Option<String>,
}

impl Berth {
    /// Start the binary on a free port with its data in `dir` and extra environment.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Berth {
        Self::launch(dir, env, None)
    }

    /// `start` for a node that serves TLS with a certificate of `ca`.
    pub fn start_tls(dir: &Path, env: &[(&str, &str)], ca: &str) -> Berth {
        Self::launch(dir, env, Some(ca))
    }

    fn launch(dir: &Path, env: &[(&str, &str)], tls_ca: Option<&str>) -> Berth {
        let port = free_port();
        let mut b = Berth {
            port,
            addr: format!("127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            child: None,
            extra: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log: dir.with_extension("log"),
            tls_ca: tls_ca.map(str::to_owned),
        };
        b.spawn();
        b
    }

    fn healthy(&self) -> bool {
        match &self.tls_ca {
            None => ureq::get(&format!("http://{}/healthz", self.addr)).call().is_ok_and(|r| r.status() == 200),
            Some(ca) => {
                Command::new("curl")
                    .args(["-sf", "-m", "2", "--cacert", ca, &format!("https://{}/healthz", self.addr)])
                    .output()
                    .is_ok_and(|o| o.status.success())
                    // A node that requires client certificates: ask its internal listener.
                    || std::fs::read_to_string(self.dir.join("internal.addr")).is_ok_and(|a| {
                        ureq::get(&format!("http://{}/healthz", a.trim())).call().is_ok_and(|r| r.status() == 200)
                    })
            }
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(berth_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--workers")
            .arg("2")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn berth"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.healthy() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("berth exited at start ({st}): {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "berth did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The internal listener's URL for `path` (`/metrics` is served there).
    pub fn internal_url(&self, path: &str) -> String {
        let addr = std::fs::read_to_string(self.dir.join("internal.addr")).expect("internal.addr");
        format!("http://{}{path}", addr.trim())
    }

    /// Process id of the running node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Set (or replace) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra.retain(|(k, _)| k != key);
        self.extra.push((key.to_string(), value.to_string()));
    }

    /// Start again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: sending a signal to our own child process by its pid.
        unsafe { libc_kill(c.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Poll `cond` every 100 ms until it holds; fail the test after `secs`.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Descriptors the process `pid` holds on blob files that were deleted (a cache that kept a
/// removed file open would hold its disk space).
pub fn deleted_blob_fds(pid: u32, data_dir: &Path) -> Vec<String> {
    let blobs = data_dir.join("blobs").display().to_string();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .filter(|t| t.starts_with(&blobs) && t.ends_with("(deleted)"))
                .collect()
        })
        .unwrap_or_default()
}

/// Push a blob monolithically (`POST ?digest=`), asserting 201; returns its digest.
pub fn push_blob(node: &Berth, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = http("POST", &node.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")), &[], Some(data));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    d
}

/// A response with any status.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
    try_http(&ureq::agent(), method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// One request with any status; `Err` only when the transport failed (e.g. the node died).
pub fn try_http(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, String> {
    let mut r = agent.request(method, url);
    for (k, v) in headers {
        r = r.set(k, v);
    }
    let res = match body {
        Some(b) => r.send_bytes(b),
        None => r.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let headers =
        resp.headers_names().into_iter().map(|n| (n.clone(), resp.header(&n).unwrap_or("").to_owned())).collect();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).map_err(|e| e.to_string())?;
    Ok(Resp { status, headers, body })
}

/// Build an OCI image layout in `dir` with `layers` gzip tar layers made from files;
/// returns the layer blobs' bytes (what a registry must store exactly).
pub fn make_oci_layout(dir: &Path, tag: &str, layers: usize, layer_size: usize) -> Vec<Vec<u8>> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut layer_bytes = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let root = dir.join(format!("rootfs{i}"));
        std::fs::create_dir_all(root.join("data")).unwrap();
        let content: Vec<u8> = (0..layer_size).map(|j| ((j * 31 + i * 7) % 251) as u8).collect();
        std::fs::write(root.join(format!("data/file{i}")), &content).unwrap();
        let tar = dir.join(format!("layer{i}.tar.gz"));
        run(Command::new("tar").arg("-czf").arg(&tar).arg("-C").arg(&root).arg("."));
        let bytes = std::fs::read(&tar).unwrap();
        let d = sha256(&bytes);
        std::fs::write(blobs.join(&d[7..]), &bytes).unwrap();
        descs.push(serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d,"size":bytes.len()}));
        let raw = run(Command::new("sh").arg("-c").arg(format!("gzip -dc {} | sha256sum", tar.display())));
        diff_ids.push(format!("sha256:{}", &raw[..64]));
        layer_bytes.push(bytes);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture":"amd64","os":"linux","config":{},
        "rootfs":{"type":"layers","diff_ids":diff_ids}
    }))
    .unwrap();
    let cd = sha256(&config);
    std::fs::write(blobs.join(&cd[7..]), &config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":config.len()},
        "layers":descs
    }))
    .unwrap();
    let md = sha256(&manifest);
    std::fs::write(blobs.join(&md[7..]), &manifest).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion":2,
            "manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":md,"size":manifest.len(),
                          "annotations":{"org.opencontainers.image.ref.name":tag}}]
        }))
        .unwrap(),
    )
    .unwrap();
    layer_bytes
}

/// A bcrypt hash of `password` made by `berth hash-password` (cost 5: quick in tests).
pub fn bcrypt_hash(password: &str) -> String {
    run(Command::new(berth_bin()).args(["hash-password", "--cost", "5"]).env("BERTH_PASSWORD", password))
        .trim()
        .to_owned()
}

/// An `Authorization: Basic` value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Assert every layer is in the OCI layout at `dir`, byte for byte.
pub fn assert_layout_has(dir: &Path, layers: &[Vec<u8>]) {
    for l in layers {
        let d = sha256(l);
        let pulled = std::fs::read(dir.join("blobs/sha256").join(&d[7..]))
            .unwrap_or_else(|e| panic!("{e}: layer {d} not in the layout at {}", dir.display()));
        assert!(&pulled == l, "layer {d} differs");
    }
}

/// `podman` with its own vfs storage and auth file under `dir`.
pub fn podman(dir: &Path, args: &[&str]) -> std::process::Output {
    let auth = dir.join("auth.json");
    if !auth.exists() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&auth, r#"{"auths":{}}"#).unwrap();
    }
    Command::new("podman")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "vfs"])
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .args(args)
        .output()
        .unwrap()
}

/// `podman`, asserting success; returns stdout.
pub fn podman_ok(dir: &Path, args: &[&str]) -> String {
    let out = podman(dir, args);
    assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private containerd (own root, state and socket), stopped on drop.
pub struct Containerd {
    pub sock: PathBuf,
    child: Child,
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{0}/ctd.sock\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start containerd");
        let c = Containerd { sock: dir.join("ctd.sock"), child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    /// Run `ctr` against this daemon.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr").arg("-a").arg(&self.sock).args(args).output().unwrap()
    }

    /// `ctr`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private Docker daemon (own data, exec root and socket), stopped on drop.
pub struct Dockerd {
    pub host: String,
    pub config_dir: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl Dockerd {
    pub fn start(dir: &Path, insecure: &str) -> Dockerd {
        Self::start_with(dir, insecure, &[])
    }

    /// `start` with extra daemon flags (e.g. `--registry-mirror URL`).
    pub fn start_with(dir: &Path, insecure: &str, extra: &[&str]) -> Dockerd {
        std::fs::create_dir_all(dir).unwrap();
        let sock = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false", "--insecure-registry", insecure])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let host = format!("unix://{}", sock.display());
        let config_dir = dir.join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        let d = Dockerd { host, config_dir, dir: dir.to_path_buf(), child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config_dir)
            .output()
            .unwrap()
    }

    /// Run docker, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // dockerd leaves its network namespace mounted under the exec root: unmount what is
        // left below our directory and remove the daemon's data (GiBs per test otherwise stay
        // in /tmp, because the temp dir cannot be removed around a mount point).
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| Path::new(p).starts_with(&self.dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
        let _ = std::fs::remove_dir_all(self.dir.join("exec"));
    }
}

/// The node's internal API URL and token.
pub fn internal(node: &Berth) -> (String, String) {
    let addr = std::fs::read_to_string(node.dir.join("internal.addr")).unwrap();
    let token = std::fs::read_to_string(node.dir.join("internal.token")).unwrap();
    (format!("http://{}", addr.trim()), token.trim().to_string())
}

/// Run a GC through the internal API and return its report.
pub fn gc(node: &Berth, dry_run: bool, policy: serde_json::Value) -> serde_json::Value {
    let (url, token) = internal(node);
    let auth = format!("Bearer {token}");
    let body = serde_json::to_vec(&serde_json::json!({"dry_run": dry_run, "policy": policy})).unwrap();
    let r = http("POST", &format!("{url}/internal/v1/gc"), &[("Authorization", &auth)], Some(&body));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = http("GET", &format!("{url}/internal/v1/jobs/{id}"), &[("Authorization", &auth)], None);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        match v["state"].as_str() {
            Some("succeeded") => return v["report"].clone(),
            Some("running") => {}
            other => panic!("gc {other:?}: {v}"),
        }
        assert!(Instant::now() < deadline, "gc did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the first metric series named `series` (with labels, if given) on the node's
/// internal listener; 0 when absent.
pub fn metric(node: &Berth, series: &str) -> f64 {
    let text = http("GET", &node.internal_url("/metrics"), &[], None).body;
    let text = String::from_utf8(text).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{', '_']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
