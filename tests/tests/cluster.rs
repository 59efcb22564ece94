//! Scale-out (#16): three node processes on one Postgres and one S3 bucket (moto, behind a
//! fault proxy), with HAProxy round-robin in front — every client request may land on any
//! node. Real clients (docker, skopeo, podman) push and pull through the balancer; chunked
//! uploads alternate nodes; a pull on one node of what was just pushed through another;
//! kill -9 of nodes (the GC lease holder included) during pushes and pulls; a paused GC
//! fenced off by its successor; Postgres and S3 outages.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::Postgres;
use common::s3::{FaultProxy, Moto};
use common::*;

const BUCKET: &str = "berth-cluster";
const TOKEN: &str = "cluster-internal-token-0123456789";

/// HAProxy in front of the nodes: round robin per request, health-checked.
struct Balancer {
    port: u16,
    child: Child,
}

impl Balancer {
    fn start(dir: &std::path::Path, nodes: &[&Berth]) -> Balancer {
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
        let child = Command::new("haproxy").arg("-f").arg(&path).arg("-db").stdout(Stdio::null()).stderr(log).spawn().unwrap();
        wait_for("haproxy to listen", 10, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Balancer { port, child }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fleet {
    tmp: tempfile::TempDir,
    pg: Postgres,
    _moto: Moto,
    s3: FaultProxy,
    nodes: Vec<Berth>,
    lb: Option<Balancer>,
}

fn node_env(name: &str, pg: &Postgres, s3: &FaultProxy, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let internal = free_port();
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
        ("BERTH_CLUSTER__POSTGRES_URL", pg.conn()),
        ("BERTH_CLUSTER__INTERNAL_URL", format!("http://127.0.0.1:{internal}")),
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
    fn start(n: usize, balanced: bool, extra: &[(&str, &str)]) -> Option<Fleet> {
        if !have("haproxy") {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let pg = Postgres::start(tmp.path())?;
        let moto = Moto::start(&tmp.path().join("moto.log"))?;
        moto.create_bucket(BUCKET);
        let s3 = FaultProxy::start(moto.port);
        let nodes: Vec<Berth> = (0..n)
            .map(|i| {
                let name = ((b'a' + i as u8) as char).to_string();
                let env = node_env(&name, &pg, &s3, extra);
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                Berth::start(&tmp.path().join(&name), &env)
            })
            .collect();
        let lb = balanced.then(|| Balancer::start(tmp.path(), &nodes.iter().collect::<Vec<_>>()));
        Some(Fleet { tmp, pg, _moto: moto, s3, nodes, lb })
    }

    fn lb(&self) -> &Balancer {
        self.lb.as_ref().unwrap()
    }
}

fn base(node: &Berth) -> String {
    format!("http://{}", node.addr)
}

fn push_blob_at(base: &str, repo: &str, data: &[u8]) -> Result<String, String> {
    let d = sha256(data);
    let r = try_http(&ureq::agent(), "POST", &format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"), &[], Some(data))?;
    if r.status != 201 {
        return Err(format!("blob push: {} {}", r.status, String::from_utf8_lossy(&r.body)));
    }
    Ok(d)
}

/// A small image: a config and `layers`; returns the manifest's digest.
fn push_image_at(base: &str, repo: &str, tag: &str, layers: &[Vec<u8>]) -> Result<String, String> {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}").into_bytes();
    let cd = push_blob_at(base, repo, &config)?;
    let mut descs = Vec::new();
    for l in layers {
        let d = push_blob_at(base, repo, l)?;
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
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
fn pull_image_at(base: &str, repo: &str, tag: &str) -> Result<String, String> {
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
            return Err(format!("blob {d} of {repo}:{tag}: {} ({} bytes)", r.status, r.body.len()));
        }
    }
    Ok(digest)
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
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

fn upload_step(url: &str, method: &str, headers: &[(&str, &str)], body: Option<&[u8]>, want: u16) -> Resp {
    let r = http(method, url, headers, body);
    assert_eq!(r.status, want, "{method} {url}: {}", String::from_utf8_lossy(&r.body));
    r
}

#[test]
fn three_nodes_behind_a_balancer_act_as_one_registry() {
    let Some(f) = Fleet::start(3, true, &[]) else { return };
    let (a, b, c) = (&f.nodes[0], &f.nodes[1], &f.nodes[2]);

    // A chunked upload whose requests go to a, b, c, then b: forwarded to the owner.
    let data = noise(1, 3 << 20);
    let digest = sha256(&data);
    let r = upload_step(&a.url("/v2/team/chunked/blobs/uploads/"), "POST", &[], None, 202);
    let loc = r.header("location").unwrap().to_string();
    let third = data.len() / 3;
    let r = upload_step(
        &format!("{}{loc}", base(b)),
        "PATCH",
        &[("Content-Range", &format!("0-{}", third - 1)), ("Content-Type", "application/octet-stream")],
        Some(&data[..third]),
        202,
    );
    assert_eq!(r.header("range"), Some(format!("0-{}", third - 1).as_str()));
    let loc = r.header("location").unwrap().to_string();
    let r = upload_step(
        &format!("{}{loc}", base(c)),
        "PATCH",
        &[("Content-Range", &format!("{third}-{}", 2 * third - 1))],
        Some(&data[third..2 * third]),
        202,
    );
    let loc = r.header("location").unwrap().to_string();
    let r = upload_step(&format!("{}{loc}", base(c)), "GET", &[], None, 204);
    assert_eq!(r.header("range"), Some(format!("0-{}", 2 * third - 1).as_str()));
    upload_step(&format!("{}{loc}?digest={digest}", base(b)), "PUT", &[], Some(&data[2 * third..]), 201);
    for n in [a, b, c] {
        let r = http("GET", &n.url(&format!("/v2/team/chunked/blobs/{digest}")), &[], None);
        assert_eq!(r.status, 200, "blob on {}", n.addr);
        assert_eq!(sha256(&r.body), digest);
    }
    assert!(metric(b, "berth_cluster_forwarded_total{result=\"ok\"}") + metric(c, "berth_cluster_forwarded_total{result=\"ok\"}") >= 3.0);

    // Read-your-writes: a push acknowledged on one node is there on the others at once.
    for i in 0..30usize {
        let (w, r1, r2) = (&f.nodes[i % 3], &f.nodes[(i + 1) % 3], &f.nodes[(i + 2) % 3]);
        let tag = format!("t{i}");
        let pushed = push_image_at(&base(w), "team/ryw", &tag, &[noise(100 + i as u64, 4096)]).unwrap();
        for n in [r1, r2] {
            assert_eq!(pull_image_at(&base(n), "team/ryw", &tag).unwrap(), pushed, "{tag} on {}", n.addr);
        }
    }
    // A moved tag is seen moved everywhere.
    let moved = push_image_at(&base(a), "team/ryw", "t0", &[noise(999, 100)]).unwrap();
    for n in [b, c] {
        assert_eq!(pull_image_at(&base(n), "team/ryw", "t0").unwrap(), moved);
    }

    // Chunked pushes through the balancer (round robin: consecutive requests, other nodes).
    let lb = f.lb().url("");
    for i in 0..3u64 {
        let data = noise(50 + i, 1 << 20);
        let digest = sha256(&data);
        let r = upload_step(&f.lb().url("/v2/team/lb/blobs/uploads/"), "POST", &[], None, 202);
        let mut loc = r.header("location").unwrap().to_string();
        for (k, part) in data.chunks(256 << 10).enumerate() {
            let start = k * (256 << 10);
            let range = format!("{start}-{}", start + part.len() - 1);
            let r = upload_step(&format!("{lb}{loc}"), "PATCH", &[("Content-Range", &range)], Some(part), 202);
            loc = r.header("location").unwrap().to_string();
        }
        upload_step(&format!("{lb}{loc}?digest={digest}"), "PUT", &[], None, 201);
        for n in [a, b, c] {
            assert_eq!(sha256(&http("GET", &n.url(&format!("/v2/team/lb/blobs/{digest}")), &[], None).body), digest);
        }
    }

    // Real clients through the balancer: skopeo pushes, podman pulls, re-tags and pushes
    // (a cross-repository mount), docker pushes a big-layer image and pulls it back; every
    // node then serves every image.
    let lb_host = format!("127.0.0.1:{}", f.lb().port);
    let work = f.tmp.path().join("clients");
    let layout = work.join("layout");
    let layers = make_oci_layout(&layout, "v1", 3, 300_000);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{lb_host}/skopeo/app:v1")));
    for n in [a, b, c] {
        let out = work.join(format!("back-{}", n.port));
        run(Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/skopeo/app:v1", n.addr))
            .arg(format!("oci:{}:v1", out.display())));
        assert_layout_has(&out, &layers);
    }
    let p = work.join("podman");
    podman_ok(&p, &["pull", "--tls-verify=false", &format!("{lb_host}/skopeo/app:v1")]);
    podman_ok(&p, &["tag", &format!("{lb_host}/skopeo/app:v1"), &format!("{lb_host}/podman/app:v2")]);
    podman_ok(&p, &["push", "--tls-verify=false", &format!("{lb_host}/podman/app:v2")]);
    podman_ok(&p, &["rmi", "-a", "-f"]);
    podman_ok(&p, &["pull", "--tls-verify=false", &format!("{lb_host}/podman/app:v2")]);
    for n in [a, b, c] {
        for l in &layers {
            let r = http("GET", &n.url(&format!("/v2/podman/app/blobs/{}", sha256(l))), &[], None);
            assert_eq!(&r.body, l, "podman/app on {}", n.addr);
        }
    }
    let d = Dockerd::start(&work.join("docker"), &lb_host);
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("big.bin"), noise(7, 6 << 20)).unwrap();
    let tar = work.join("rootfs.tar");
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&rootfs).arg("."));
    d.ok(&["import", tar.to_str().unwrap(), "base:latest"]);
    let img = format!("{lb_host}/docker/app:v1");
    d.ok(&["tag", "base:latest", &img]);
    let pushed = d.ok(&["push", &img]);
    assert!(pushed.contains("v1: digest: sha256:"), "{pushed}");
    d.ok(&["rmi", &img, "base:latest"]);
    d.ok(&["pull", &img]);
    for n in [a, b, c] {
        let r = http("GET", &n.url("/v2/docker/app/tags/list"), &[], None);
        assert!(String::from_utf8_lossy(&r.body).contains("v1"), "{}", n.addr);
        pull_docker_image(&base(n), "docker/app", "v1");
    }
}

/// Pull a Docker-format image (as docker pushes it) completely from one node.
fn pull_docker_image(base: &str, repo: &str, tag: &str) {
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
