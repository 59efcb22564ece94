//! Scale-out test fleets (tests/tests/cluster.rs): node processes on one Postgres and one moto
//! bucket, each behind its own fault proxies, HAProxy in front; registry helpers that take a
//! base URL (the balancer's or a node's); GC and fsck through a node's internal API.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::pg::Postgres;
use super::s3::{FaultProxy, Moto};
use super::*;

pub const BUCKET: &str = "berth-cluster";

/// One fleet at a time: each test runs 2–3 nodes, Postgres, moto and HAProxy, and several of
/// them measure time (failover bounds) that two fleets on 2 cores would blur.
pub static ONE_FLEET: Mutex<()> = Mutex::new(());

pub fn one_fleet() -> std::sync::MutexGuard<'static, ()> {
    ONE_FLEET.lock().unwrap_or_else(|p| p.into_inner())
}
pub const TOKEN: &str = "cluster-internal-token-0123456789";

/// HAProxy in front of the nodes: round robin per request, health-checked.
pub struct Balancer {
    pub port: u16,
    pub child: Child,
}

impl Balancer {
    pub fn start(dir: &std::path::Path, nodes: &[&Berth]) -> Balancer {
        let port = free_port();
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("  server n{i} {} check inter 300ms fall 2 rise 1\n", n.addr))
            .collect();
        let cfg = format!(
            "global\n  maxconn 2048\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 120s\n  \
             timeout server 120s\n  retries 2\n  option redispatch\nfrontend fe\n  bind 127.0.0.1:{port}\n  \
             default_backend be\nbackend be\n  balance roundrobin\n  option httpchk GET /healthz\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child =
            Command::new("haproxy").arg("-f").arg(&path).arg("-db").stdout(Stdio::null()).stderr(log).spawn().unwrap();
        wait_for("haproxy to listen", 10, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Balancer { port, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dropped in field order: balancer, nodes, the proxies, S3, Postgres, then their directory.
pub struct Fleet {
    pub lb: Option<Balancer>,
    pub nodes: Vec<Berth>,
    /// Each node's own way to S3 (so one node's S3 can be slowed or cut).
    pub s3: Vec<FaultProxy>,
    /// Each node's own way to Postgres (so one node can be cut off from it).
    pub pgs: Vec<FaultProxy>,
    pub _moto: Moto,
    pub pg: Postgres,
    pub tmp: tempfile::TempDir,
}

pub fn node_env(
    name: &str,
    pg: &FaultProxy,
    s3: &FaultProxy,
    extra: &[(&str, &str)],
    tls: bool,
) -> Vec<(String, String)> {
    let internal = free_port();
    let scheme = if tls { "https" } else { "http" };
    let mut env: Vec<(String, String)> = [
        ("BERTH_STORAGE__S3__BUCKET", BUCKET.to_string()),
        ("BERTH_STORAGE__S3__ENDPOINT", s3.endpoint()),
        ("BERTH_STORAGE__S3__PATH_STYLE", "true".into()),
        ("BERTH_STORAGE__S3__ACCESS_KEY_ID", "test".into()),
        ("BERTH_STORAGE__S3__SECRET_ACCESS_KEY", "test".into()),
        ("BERTH_STORAGE__S3__MAX_BACKOFF_SECS", "1".into()),
        ("BERTH_STORAGE__DELETE_ENABLED", "true".into()),
        ("BERTH_INTERNAL__LISTEN", format!("127.0.0.1:{internal}")),
        ("BERTH_INTERNAL__TOKEN", TOKEN.into()),
        ("BERTH_LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "0".into()),
        ("BERTH_CLUSTER__NODE", name.into()),
        ("BERTH_CLUSTER__POSTGRES_URL", format!("host=127.0.0.1 port={} user=postgres dbname=berth", pg.port)),
        ("BERTH_CLUSTER__INTERNAL_URL", format!("{scheme}://127.0.0.1:{internal}")),
        ("BERTH_CLUSTER__LEASE_TTL_SECS", "3".into()),
        ("BERTH_CLUSTER__HEARTBEAT_SECS", "1".into()),
        ("BERTH_CLUSTER__POSTGRES_TIMEOUT_MS", "2000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

impl Fleet {
    /// `n` nodes (a, b, c, …), and a balancer in front when `balanced`.
    pub fn start(n: usize, balanced: bool, extra: &[(&str, &str)]) -> Option<Fleet> {
        Self::start_with(n, balanced, extra, None)
    }

    /// `start`; with `tls_ca`, the nodes serve TLS (public and internal listeners) with a
    /// certificate of that CA.
    pub fn start_with(n: usize, balanced: bool, extra: &[(&str, &str)], tls_ca: Option<&str>) -> Option<Fleet> {
        if !have("haproxy") {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let pg = Postgres::start(tmp.path())?;
        let moto = Moto::start(&tmp.path().join("moto.log"))?;
        moto.create_bucket(BUCKET);
        let s3: Vec<FaultProxy> = (0..n).map(|_| FaultProxy::start(moto.port)).collect();
        let pgs: Vec<FaultProxy> = (0..n).map(|_| FaultProxy::start(pg.port)).collect();
        let nodes: Vec<Berth> = (0..n)
            .map(|i| {
                let name = ((b'a' + i as u8) as char).to_string();
                let env = node_env(&name, &pgs[i], &s3[i], extra, tls_ca.is_some());
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                match tls_ca {
                    None => Berth::start(&tmp.path().join(&name), &env),
                    Some(ca) => Berth::start_tls(&tmp.path().join(&name), &env, ca),
                }
            })
            .collect();
        let lb = balanced.then(|| Balancer::start(tmp.path(), &nodes.iter().collect::<Vec<_>>()));
        Some(Fleet { tmp, pg, _moto: moto, s3, pgs, nodes, lb })
    }

    pub fn lb(&self) -> &Balancer {
        self.lb.as_ref().unwrap()
    }
}

pub fn base(node: &Berth) -> String {
    format!("http://{}", node.addr)
}

pub fn push_blob_at(base: &str, repo: &str, data: &[u8]) -> Result<String, String> {
    let d = sha256(data);
    let r = try_http(&ureq::agent(), "POST", &format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"), &[], Some(data))?;
    if r.status != 201 {
        return Err(format!("blob push: {} {}", r.status, String::from_utf8_lossy(&r.body)));
    }
    Ok(d)
}

/// A small image: a config and `layers`; returns the manifest's digest.
pub fn push_image_at(base: &str, repo: &str, tag: &str, layers: &[Vec<u8>]) -> Result<String, String> {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}").into_bytes();
    let cd = push_blob_at(base, repo, &config)?;
    let mut descs = Vec::new();
    for l in layers {
        let d = push_blob_at(base, repo, l)?;
        descs.push(
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}),
        );
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let r = try_http(
        &ureq::agent(),
        "PUT",
        &format!("{base}/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        Some(&manifest),
    )?;
    if r.status != 201 {
        return Err(format!("manifest push: {} {}", r.status, String::from_utf8_lossy(&r.body)));
    }
    Ok(sha256(&manifest))
}

/// Pull an image completely (manifest by tag, then every blob, digests verified).
pub fn pull_image_at(base: &str, repo: &str, tag: &str) -> Result<String, String> {
    let agent = ureq::agent();
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let r = try_http(&agent, "GET", &format!("{base}/v2/{repo}/manifests/{tag}"), &accept, None)?;
    if r.status != 200 {
        return Err(format!("manifest {repo}:{tag}: {} {}", r.status, String::from_utf8_lossy(&r.body)));
    }
    let digest = sha256(&r.body);
    let m: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    for d in blobs {
        let r = try_http(&agent, "GET", &format!("{base}/v2/{repo}/blobs/{d}"), &[], None)?;
        if r.status != 200 || sha256(&r.body) != d {
            let text = if r.status == 200 { String::new() } else { String::from_utf8_lossy(&r.body).into_owned() };
            return Err(format!("blob {d} of {repo}:{tag}: {} ({} bytes) {text}", r.status, r.body.len()));
        }
    }
    Ok(digest)
}

pub fn upload_step(url: &str, method: &str, headers: &[(&str, &str)], body: Option<&[u8]>, want: u16) -> Resp {
    let r = http(method, url, headers, body);
    assert_eq!(r.status, want, "{method} {url}: {}", String::from_utf8_lossy(&r.body));
    r
}

/// Pull a Docker-format image (as docker pushes it) completely from one node.
pub fn pull_docker_image(base: &str, repo: &str, tag: &str) {
    let accept = [("Accept", "application/vnd.docker.distribution.manifest.v2+json")];
    let r = http("GET", &format!("{base}/v2/{repo}/manifests/{tag}"), &accept, None);
    assert_eq!(r.status, 200);
    let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    for d in blobs {
        let r = http("GET", &format!("{base}/v2/{repo}/blobs/{d}"), &[], None);
        assert_eq!((r.status, sha256(&r.body)), (200, d));
    }
}

/// Hold the change log's append lock for 2 s from a psql session (the constant is
/// `APPEND_LOCK` in node/cluster/src/log.rs): commits queue behind it in arrival order.
pub fn hold_append_lock(pg: &Postgres) -> Child {
    let child = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-d", "berth", "-c"])
        .arg("BEGIN; SELECT pg_advisory_xact_lock(284630864968); SELECT pg_sleep(2); COMMIT;")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    child
}

pub fn signal(pid: u32, sig: i32) {
    run(Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()));
}

/// The internal listener of a node (its token is the cluster's shared one).
pub fn internal_base(node: &Berth) -> String {
    node.internal_url("")
}

/// Start a GC run through a node's internal API: Ok(job id) on 202, Err(status, body) else.
pub fn start_gc(node: &Berth, grace_secs: u64) -> Result<String, (u16, String)> {
    let url = internal_base(node);
    let body =
        serde_json::to_vec(&serde_json::json!({"dry_run": false, "policy": {"grace_secs": grace_secs}})).unwrap();
    let auth = format!("Bearer {TOKEN}");
    let r = http("POST", &format!("{url}/internal/v1/gc"), &[("Authorization", &auth)], Some(&body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    match r.status {
        202 => Ok(v["id"].as_str().unwrap().to_string()),
        s => Err((s, String::from_utf8_lossy(&r.body).into_owned())),
    }
}

/// Wait for a GC job to end; its final view.
pub fn gc_job(node: &Berth, id: &str) -> serde_json::Value {
    let url = internal_base(node);
    let auth = format!("Bearer {TOKEN}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = http("GET", &format!("{url}/internal/v1/jobs/{id}"), &[("Authorization", &auth)], None);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if v["state"] != "running" {
            return v;
        }
        assert!(Instant::now() < deadline, "gc did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn fsck_clean(node: &mut Berth) {
    assert_eq!(node.terminate(), Some(0), "clean shutdown of {}", node.addr);
    let out = Command::new(berth_bin()).arg("fsck").arg("--data-dir").arg(&node.dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" 0 errors"),
        "fsck of {}: {text}{}",
        node.addr,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `curl -i` with the test CA: (status, response headers and body as text).
pub fn curl(ca: &str, method: &str, url: &str, headers: &[&str], body: Option<&std::path::Path>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--cacert", ca, "-X", method, url]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        cmd.arg("--data-binary").arg(format!("@{}", b.display()));
    }
    let text = run(&mut cmd);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

pub fn header_of(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Wait until each of `nodes` has applied the whole change log. Reads of tags and lists do
/// not need this (they ask the log first); checks of content-addressed state on another node
/// than the writer's (a blob GC removed) do: removals reach the others after the replication
/// lag.
pub fn converged(nodes: &[&Berth]) {
    for n in nodes {
        wait_for("the node to apply the whole log", 30, || {
            let v = cluster_view(n);
            v["applied_seq"].is_u64() && v["applied_seq"] == v["head_seq"]
        });
    }
}

/// `method path` on a node's internal API, with the fleet's token.
pub fn internal_call(node: &Berth, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    http(method, &format!("{}{path}", internal_base(node)), &headers, body)
}

/// The node's `GET /internal/v1/cluster` (`Null` when it does not answer with JSON).
pub fn cluster_view(node: &Berth) -> serde_json::Value {
    serde_json::from_slice(&internal_call(node, "GET", "/internal/v1/cluster", None).body).unwrap_or_default()
}
