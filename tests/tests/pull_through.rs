//! Pull-through cache against real registries on loopback: Debian's docker-registry with
//! htpasswd over TLS (a CA the test makes), a second Berth with token auth (the Bearer dance),
//! and a plain-HTTP docker-registry behind a fault proxy that counts requests, goes down and
//! flips bytes. Clients: skopeo, podman, the Docker daemon (registry-mirrors), containerd
//! (hosts.toml, `?ns=`), and plain HTTP.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::s3::FaultProxy;
use common::scripted::{reply, Scripted, PAUSE};
use common::*;

/// Debian's docker-registry (CNCF Distribution) on a free port.
struct Registry {
    port: u16,
    child: Child,
}

impl Registry {
    fn start(dir: &Path, storage: &Path, htpasswd: Option<&Path>, tls: Option<(&Path, &Path)>) -> Option<Registry> {
        if !have("docker-registry") {
            skip("docker-registry not installed (apt install docker-registry)");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some((cert, key)) = tls {
            cfg += &format!("  tls: {{certificate: {}, key: {}}}\n", cert.display(), key.display());
        }
        if let Some(h) = htpasswd {
            cfg += &format!("auth: {{htpasswd: {{realm: test, path: {}}}}}\n", h.display());
        }
        let file = dir.join(format!("registry-{port}.yml"));
        std::fs::write(&file, cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&file)
            .env_remove("AWS_CA_BUNDLE")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("registry-{port}.log"))).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Registry { port, child })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI layout with `layers` layers of `size` bytes (content depends on `size`), pushed to
/// `dest` (a `docker://` reference) with skopeo. Returns the layers.
fn seed(tmp: &Path, name: &str, layers: usize, size: usize, dest: &str, creds: Option<&str>) -> Vec<Vec<u8>> {
    let layout = tmp.join(format!("layout-{name}"));
    let bytes = make_oci_layout(&layout, "v1", layers, size);
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    cmd.arg(format!("oci:{}:v1", layout.display())).arg(dest);
    run(&mut cmd);
    bytes
}

/// skopeo copy from the pull-through node into an OCI layout; returns the layout directory.
fn pull(tmp: &Path, node: &Berth, reference: &str, name: &str) -> PathBuf {
    let out = tmp.join(format!("pulled-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{reference}", node.addr))
        .arg(format!("oci:{}:v1", out.display())));
    out
}

/// GET a manifest through the node as an OCI image client asks for it.
fn get_manifest(node: &Berth, path: &str) -> Resp {
    http("GET", &node.url(path), &[("Accept", "application/vnd.oci.image.manifest.v1+json")], None)
}

fn write_config(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

/// Two protected upstreams (TLS + htpasswd Distribution; Berth with token auth), pulled
/// through with skopeo and podman: byte-for-byte the upstream's layers; the second pull makes
/// no upstream request; writes into the cached namespaces are refused.
#[test]
fn pulls_through_tls_basic_and_token_upstreams() {
    if !have("skopeo") || !have("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Upstream A: Distribution over TLS with htpasswd, seeded through a plain twin on the same storage.
    let pki = Pki::new(&t.join("pki"));
    let (ca, cert, key) = (pki.dir.join("ca.pem"), pki.dir.join("srv.pem"), pki.dir.join("srv.key"));
    let htpasswd = t.join("htpasswd");
    std::fs::write(&htpasswd, format!("alice:{}\n", bcrypt_hash("wonderland"))).unwrap();
    let Some(seed_a) = Registry::start(&t.join("a-seed"), &t.join("a-storage"), None, None) else { return };
    let layers_a = seed(t, "a", 2, 300_000, &format!("docker://127.0.0.1:{}/team/app:v1", seed_a.port), None);
    let a = Registry::start(&t.join("a"), &t.join("a-storage"), Some(&htpasswd), Some((&cert, &key))).unwrap();
    // Upstream B: a Berth with token auth.
    let b_cfg = write_config(
        &t.join("b.toml"),
        &format!(
            "[auth]\nenabled = true\n[[auth.users]]\nname = \"bob\"\nbcrypt = \"{}\"\n[auth.token]\nttl_secs = 300\n",
            bcrypt_hash("builder")
        ),
    );
    let b = Berth::start(&t.join("b-data"), &[("BERTH_CONFIG", &b_cfg)]);
    let layers_b = seed(t, "b", 3, 200_000, &format!("docker://{}/lib/tool:v1", b.addr), Some("bob:builder"));

    let cfg = write_config(
        &t.join("proxy.toml"),
        &format!(
            "[[proxy.upstreams]]\nname = \"upstream-a.example\"\nurl = \"https://127.0.0.1:{}\"\nusername = \"alice\"\npassword = \"wonderland\"\nca = \"{}\"\n\n[[proxy.upstreams]]\nname = \"upstream-b\"\nurl = \"http://{}\"\nusername = \"bob\"\npassword = \"builder\"\n",
            a.port,
            ca.display(),
            b.addr
        ),
    );
    let node = Berth::start(&t.join("proxy-data"), &[("BERTH_CONFIG", &cfg)]);
    let got = pull(t, &node, "upstream-a.example/team/app:v1", "a");
    assert_layout_has(&got, &layers_a);
    let got = pull(t, &node, "upstream-b/lib/tool:v1", "b");
    assert_layout_has(&got, &layers_b);
    assert!(metric(&node, "berth_proxy_cache_total{upstream=\"upstream-b\",what=\"miss\"}") >= 4.0);

    // Second pull: served here (the upstreams are gone).
    drop(a);
    drop(seed_a);
    let got = pull(t, &node, "upstream-a.example/team/app:v1", "a2");
    assert_layout_has(&got, &layers_a);
    // The cached content is an ordinary repository: in the catalog, with its tag.
    let cat = String::from_utf8(http("GET", &node.url("/v2/_catalog"), &[], None).body).unwrap();
    assert!(cat.contains("upstream-a.example/team/app") && cat.contains("upstream-b/lib/tool"), "{cat}");
    // podman pulls through too.
    let pdir = t.join("podman");
    podman_ok(&pdir, &["pull", "--tls-verify=false", &format!("{}/upstream-b/lib/tool:v1", node.addr)]);

    // Writes into a cached namespace are refused.
    let r = http("POST", &node.url("/v2/upstream-b/lib/tool/blobs/uploads/"), &[], None);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("pull-through cache"));
    let r = http("DELETE", &node.url("/v2/upstream-b/lib/tool/manifests/v1"), &[], None);
    assert_eq!(r.status, 403);
    // Wrong upstream credentials: a clear error, not a 500.
    let bad = write_config(
        &t.join("bad.toml"),
        &format!("[[proxy.upstreams]]\nname = \"upstream-b\"\nurl = \"http://{}\"\nusername = \"bob\"\npassword = \"nope\"\n", b.addr),
    );
    let node2 = Berth::start(&t.join("proxy2-data"), &[("BERTH_CONFIG", &bad)]);
    let r = http("GET", &node2.url("/v2/upstream-b/lib/tool/manifests/v1"), &[], None);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        String::from_utf8_lossy(&r.body).contains("upstream upstream-b refused"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

struct Plain {
    _tmp: tempfile::TempDir,
    _reg: Registry,
    fault: FaultProxy,
    node: Berth,
    reg_port: u16,
}

/// A plain-HTTP Distribution behind a fault proxy, seeded with `app:v1`, and a pull-through
/// node that calls it `up` (tag TTL `ttl` seconds; `extra` config lines).
fn plain(ttl: u64, extra: &str) -> Option<(Plain, Vec<Vec<u8>>)> {
    if !have("skopeo") {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), &tmp.path().join("storage"), None, None)?;
    let layers = seed(tmp.path(), "v1", 2, 400_000, &format!("docker://127.0.0.1:{}/app:v1", reg.port), None);
    let fault = FaultProxy::start(reg.port);
    let cfg = write_config(
        &tmp.path().join("proxy.toml"),
        &format!("{extra}\n[[proxy.upstreams]]\nname = \"up\"\nurl = \"{}\"\ntag_ttl_secs = {ttl}\n", fault.endpoint()),
    );
    let node = Berth::start(&tmp.path().join("data"), &[("BERTH_CONFIG", &cfg)]);
    let reg_port = reg.port;
    Some((Plain { _tmp: tmp, _reg: reg, fault, node, reg_port }, layers))
}

/// Tags: served from the cache within the TTL with no upstream call, revalidated after it (the
/// moved tag is seen), and served stale while the upstream is down.
#[test]
fn tags_revalidate_after_ttl_and_serve_stale_when_upstream_is_down() {
    let Some((p, layers)) = plain(5, "") else { return };
    let tmp = p._tmp.path();
    let got = pull(tmp, &p.node, "up/app:v1", "first");
    assert_layout_has(&got, &layers);
    let before = p.fault.requests();
    let got = pull(tmp, &p.node, "up/app:v1", "second");
    assert_layout_has(&got, &layers);
    assert_eq!(p.fault.requests(), before, "a pull within the TTL must not reach the upstream");

    // The tag moves upstream: the new image is served once the TTL is over. (The digest served
    // before the move is the reference; timing "still old within the TTL" would be flaky.)
    let old = get_manifest(&p.node, "/v2/up/app/manifests/v1");
    let moved = seed(tmp, "v2", 1, 123_457, &format!("docker://127.0.0.1:{}/app:v1", p.reg_port), None);
    std::thread::sleep(Duration::from_millis(5200));
    let got = pull(tmp, &p.node, "up/app:v1", "moved");
    assert_layout_has(&got, &moved);
    let new = get_manifest(&p.node, "/v2/up/app/manifests/v1");
    assert_ne!(old.header("docker-content-digest"), new.header("docker-content-digest"));
    assert!(metric(&p.node, "berth_proxy_cache_total{upstream=\"up\",what=\"changed\"}") >= 1.0);

    // The upstream goes down: the cached tag is still served (stale), after the TTL too.
    p.fault.set_down(true);
    std::thread::sleep(Duration::from_millis(5200));
    let got = pull(tmp, &p.node, "up/app:v1", "stale");
    assert_layout_has(&got, &moved);
    assert!(metric(&p.node, "berth_proxy_cache_total{upstream=\"up\",what=\"stale\"}") >= 1.0);
    // Something never cached: a clean 503 naming the upstream.
    let r = http("GET", &p.node.url("/v2/up/other/manifests/v1"), &[], None);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("up"));
}

/// Push `data` to a Distribution registry (POST, then PUT `?digest=` with the body).
fn push_upstream(port: u16, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = http("POST", &format!("http://127.0.0.1:{port}/v2/{repo}/blobs/uploads/"), &[], None);
    assert_eq!(r.status, 202);
    let loc = r.header("location").unwrap().to_owned();
    let loc = if loc.starts_with('/') { format!("http://127.0.0.1:{port}{loc}") } else { loc };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = http("PUT", &format!("{loc}{sep}digest={d}"), &[("Content-Type", "application/octet-stream")], Some(data));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    d
}

/// 20 concurrent cold GETs of each of three 4 MiB blobs (the upstream's bandwidth limited so
/// the fetches overlap): one upstream request per blob, every client gets the whole blob.
#[test]
fn concurrent_cold_pulls_share_one_upstream_fetch() {
    let Some((p, _)) = plain(300, "") else { return };
    let blobs: Vec<Vec<u8>> = (0..3u64).map(|s| noise(s, 4 << 20)).collect();
    let digests: Vec<String> = blobs.iter().map(|b| push_upstream(p.reg_port, "app", b)).collect();
    p.fault.set_rate(16 << 20);
    let before = p.fault.blob_requests();
    let barrier = Arc::new(Barrier::new(60));
    let threads: Vec<_> = (0..60)
        .map(|i| {
            let (barrier, url, want) =
                (barrier.clone(), p.node.url(&format!("/v2/up/app/blobs/{}", digests[i % 3])), blobs[i % 3].clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = http("GET", &url, &[], None);
                assert_eq!((r.status, r.body.len()), (200, want.len()));
                assert!(r.body == want, "bytes differ");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(p.fault.blob_requests() - before, 3, "one upstream GET per blob");
    // Cached: more GETs make no upstream request.
    for d in &digests {
        assert_eq!(http("GET", &p.node.url(&format!("/v2/up/app/blobs/{d}")), &[], None).status, 200);
    }
    assert_eq!(p.fault.blob_requests() - before, 3);
}

/// The upstream sends corrupted bytes: the pull fails, nothing is cached; once it is healthy
/// again the same pull succeeds.
#[test]
fn corrupted_upstream_blob_is_never_cached() {
    let Some((p, _)) = plain(300, "") else { return };
    // A 3 MiB incompressible blob, streamed slowly: every client joins the fill mid-way.
    let mut x = 0x9e3779b97f4a7c15u64;
    let big: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let d = push_upstream(p.reg_port, "app", &big);
    let url = p.node.url(&format!("/v2/up/app/blobs/{d}"));
    let layers = [big];
    p.fault.set_rate(4 << 20);
    p.fault.set_corrupt(true);
    // Fifteen clients at once (they share one fill): what each sees must tell it the body is
    // not the blob. A complete 200 (as long as its Content-Length) with other bytes is the
    // failure (integrity, finding 1: 10 of 15 got one); a cut connection or an error is right.
    let addr = p.node.addr.clone();
    let path = format!("/v2/up/app/blobs/{d}");
    let clients: Vec<_> = (0..15)
        .map(|_| {
            let (addr, path) = (addr.clone(), path.clone());
            std::thread::spawn(move || raw_get(&addr, &path))
        })
        .collect();
    let mut cut = 0;
    for c in clients {
        let (status, declared, body) = c.join().unwrap();
        if status == 200 {
            let declared = declared.expect("a 200 carries Content-Length");
            assert!(
                (body.len() as u64) < declared,
                "a complete {declared}-byte 200 with unverified bytes (equal to the blob: {})",
                body == layers[0]
            );
            cut += 1;
        } else {
            assert!(status == 503 || status == 502 || status == 0, "status {status}");
        }
    }
    eprintln!("{cut} of 15 responses were cut short, the rest refused");
    p.fault.set_corrupt(false);
    p.fault.set_rate(0);
    // Nothing cached: not linked, no file.
    wait_for("the failed fill to clean up", 10, || {
        !p.node.dir.join("blobs/sha256").join(&d[7..9]).join(&d[7..]).exists()
            && std::fs::read_dir(p.node.dir.join("uploads")).map(|d| d.count()).unwrap_or(0) == 0
    });
    assert!(metric(&p.node, "berth_proxy_upstream_errors_total{upstream=\"up\",what=\"invalid\"}") >= 1.0);
    let r = http("GET", &url, &[], None);
    assert_eq!((r.status, r.body == layers[0]), (200, true));
}

/// One GET on a fresh connection, read to EOF: (status, Content-Length, body bytes received).
/// A connection cut mid-body shows as a body shorter than its Content-Length.
fn raw_get(addr: &str, path: &str) -> (u16, Option<u64>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") else { return (0, None, Vec::new()) };
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse().ok());
    (status, len, all[end + 4..].to_vec())
}

/// Mirror modes: containerd's `?ns=` and Docker's registry-mirrors (plain names through a
/// default upstream), with the real clients.
#[test]
fn mirror_modes_for_containerd_and_docker() {
    let Some((p, layers)) = plain(300, "[proxy]\ndefault_upstream = \"up\"\nlocal_namespaces = [\"mine/**\"]") else {
        return;
    };
    let tmp = p._tmp.path();
    // Plain HTTP first: ?ns= and a plain name both land in `up/app`.
    let ns = get_manifest(&p.node, "/v2/app/manifests/v1?ns=up");
    assert_eq!(ns.status, 200, "{}", String::from_utf8_lossy(&ns.body));
    let plain = get_manifest(&p.node, "/v2/app/manifests/v1");
    assert_eq!(plain.status, 200);
    let got = pull(tmp, &p.node, "app:v1", "mirror");
    assert_layout_has(&got, &layers);
    // A repository pushed here stays local (the default upstream only serves unknown names).
    push_blob(&p.node, "mine/app", b"local");
    let r = http("GET", &p.node.url("/v2/mine/app/manifests/v1"), &[], None);
    assert_eq!(r.status, 404);
    // Integrity, finding 3: plain names outside the local namespaces are the mirror's. A push
    // there is refused (it would shadow the upstream's image for every mirror client)…
    let d = sha256(b"shadow");
    let r = http("POST", &p.node.url(&format!("/v2/library/app/blobs/uploads/?digest={d}")), &[], Some(b"shadow"));
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("local_namespaces"));
    // …and a local name nobody pushed never falls through to the upstream's image of that
    // name (dependency confusion), though the upstream has it.
    seed(tmp, "confused", 1, 1234, &format!("docker://127.0.0.1:{}/mine/newapp:v1", p.reg_port), None);
    let r = get_manifest(&p.node, "/v2/mine/newapp/manifests/v1");
    assert_eq!(r.status, 404, "a local name was served from the upstream");

    if have("containerd") && have("ctr") {
        let c = Containerd::start(&tmp.join("containerd"));
        let hosts = tmp.join("hosts.d/up");
        std::fs::create_dir_all(&hosts).unwrap();
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://127.0.0.1:1\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                p.node.addr
            ),
        )
        .unwrap();
        c.ok(&["images", "pull", "--hosts-dir", tmp.join("hosts.d").to_str().unwrap(), "up/app:v1"]);
    }
    if have("dockerd") && have("docker") {
        // Docker Hub names: `app` is `library/app` there.
        let lib = seed(tmp, "lib", 1, 222_222, &format!("docker://127.0.0.1:{}/library/app:v1", p.reg_port), None);
        let d = common::Dockerd::start_with(
            &tmp.join("docker"),
            &p.node.addr,
            &["--registry-mirror", &format!("http://{}", p.node.addr)],
        );
        // Docker asks mirrors only for Docker Hub names: with no internet, the pull succeeds
        // only through the mirror.
        d.ok(&["pull", "app:v1"]);
        // The in-path form too (seed 002's quick start: `docker pull <cache>/<upstream>/<repo>:<tag>`).
        d.ok(&["pull", &format!("{}/up/app:v1", p.node.addr)]);
        let cached = http("GET", &p.node.url(&format!("/v2/up/library/app/blobs/{}", sha256(&lib[0]))), &[], None);
        assert_eq!((cached.status, cached.body == lib[0]), (200, true));
    }
}

/// Pruning through GC retention: a cached tag's time is its last confirmation with the
/// upstream, so `keep_younger_than_secs` on the upstream's namespace prunes what nobody pulls
/// (dry run first, then for real); a pull afterwards fetches it again.
#[test]
fn unused_cached_tags_are_pruned_by_gc_retention() {
    let Some((p, layers)) = plain(1, "") else { return };
    let tmp = p._tmp.path();
    pull(tmp, &p.node, "up/app:v1", "cached");
    let policy = serde_json::json!({
        "grace_secs": 0,
        "retention": [{"repositories": "up/**", "keep_younger_than_secs": 2}]
    });
    let tags = |r: &serde_json::Value| -> Vec<String> {
        r["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| format!("{}:{}", t["repo"].as_str().unwrap(), t["tag"].as_str().unwrap()))
            .collect()
    };
    std::thread::sleep(Duration::from_millis(2500));
    let report = gc(&p.node, true, policy.clone());
    assert_eq!(tags(&report), vec!["up/app:v1"], "{report}");
    // Pulled again (the TTL of 1 s is over: one HEAD confirms it): in use, kept.
    pull(tmp, &p.node, "up/app:v1", "again");
    let report = gc(&p.node, true, policy.clone());
    assert!(tags(&report).is_empty(), "{report}");
    std::thread::sleep(Duration::from_millis(2500));
    let report = gc(&p.node, false, policy);
    assert_eq!(tags(&report), vec!["up/app:v1"], "{report}");
    assert!(!report["blobs"].as_array().unwrap().is_empty(), "its blobs go too: {report}");
    let misses = metric(&p.node, "berth_proxy_cache_total{upstream=\"up\",what=\"miss\"}");
    let got = pull(tmp, &p.node, "up/app:v1", "refetched");
    assert_layout_has(&got, &layers);
    assert!(metric(&p.node, "berth_proxy_cache_total{upstream=\"up\",what=\"miss\"}") > misses);
}

/// `berth preload`: a list of images pulled into the cache through the internal listener; a
/// missing one is reported and the exit status says so; afterwards the images pull with the
/// upstream down.
#[test]
fn preload_fills_the_cache_for_an_air_gap() {
    let Some((p, layers)) = plain(300, "") else { return };
    let tmp = p._tmp.path();
    let tool = seed(tmp, "tool", 3, 50_000, &format!("docker://127.0.0.1:{}/tools/tool:v2", p.reg_port), None);
    let list = tmp.join("images.txt");
    std::fs::write(&list, "# for the air gap\nup/app:v1\nup/tools/tool:v2\nup/nothing:here\n").unwrap();
    let out = Command::new(berth_bin())
        .args(["preload", "--file"])
        .arg(&list)
        .arg("--data-dir")
        .arg(&p.node.dir)
        .args(["--parallel", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a failed image must fail the command: {stdout}");
    assert!(stdout.contains("ok      up/app:v1") && stdout.contains("ok      up/tools/tool:v2"), "{stdout}");
    assert!(stdout.contains("FAILED  up/nothing:here"), "{stdout}");
    assert!(stdout.contains("2 of 3 images loaded"), "{stdout}");
    p.fault.set_down(true);
    assert_layout_has(&pull(tmp, &p.node, "up/app:v1", "air-a"), &layers);
    assert_layout_has(&pull(tmp, &p.node, "up/tools/tool:v2", "air-b"), &tool);
}

/// An upstream that requires a client certificate (a Berth with `client_auth = "required"`):
/// pulled through with the configured certificate; without it the pull fails cleanly (503).
#[test]
fn mutual_tls_upstream() {
    if !have("skopeo") || !have("openssl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pki = Pki::new(&t.join("pki")).dir;
    let (ca, cert, key) = (pki.join("ca.pem"), pki.join("srv.pem"), pki.join("srv.key"));
    let up_cfg = write_config(
        &t.join("up.toml"),
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nclient_auth = \"required\"\n",
            cert.display(),
            key.display(),
            ca.display()
        ),
    );
    let up = Berth::start_tls(&t.join("up-data"), &[("BERTH_CONFIG", &up_cfg)], ca.to_str().unwrap());
    // skopeo's certificate directory: the CA and our client certificate.
    let certs = t.join("skopeo-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    std::fs::copy(pki.join("cli.pem"), certs.join("client.cert")).unwrap();
    std::fs::copy(pki.join("cli.key"), certs.join("client.key")).unwrap();
    let layout = t.join("layout");
    let layers = make_oci_layout(&layout, "v1", 2, 100_000);
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-cert-dir"])
        .arg(&certs)
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/secure/app:v1", up.addr)));
    let cfg = write_config(
        &t.join("proxy.toml"),
        &format!(
            "[[proxy.upstreams]]\nname = \"secure\"\nurl = \"https://{}\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\n[[proxy.upstreams]]\nname = \"nocert\"\nurl = \"https://{}\"\nca = \"{}\"\n",
            up.addr,
            ca.display(),
            pki.join("cli.pem").display(),
            pki.join("cli.key").display(),
            up.addr,
            ca.display()
        ),
    );
    let node = Berth::start(&t.join("proxy-data"), &[("BERTH_CONFIG", &cfg)]);
    assert_layout_has(&pull(t, &node, "secure/secure/app:v1", "mtls"), &layers);
    let r = http("GET", &node.url("/v2/nocert/secure/app/manifests/v1"), &[], None);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
}

/// A multi-platform index: the index is cached, platform manifests and blobs only when asked
/// for (with the upstream gone, the platform that was pulled still pulls; the other does not);
/// `berth preload --platform` loads the chosen platform.
#[test]
fn multi_arch_index_is_cached_sparsely() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let up = Berth::start(&t.join("up-data"), &[]);
    let mut children = Vec::new();
    for (arch, seed) in [("amd64", 1u8), ("arm64", 2u8)] {
        let config = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).into_bytes();
        let layer: Vec<u8> = (0..70_000u32).map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed)).collect();
        let (cd, ld) = (push_blob(&up, "multi/app", &config), push_blob(&up, "multi/app", &layer));
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer.len()}]
        }))
        .unwrap();
        let md = sha256(&m);
        let r = http(
            "PUT",
            &up.url(&format!("/v2/multi/app/manifests/{md}")),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            Some(&m),
        );
        assert_eq!(r.status, 201);
        children.push((arch, md, m.len(), layer));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children.iter().map(|(arch, d, n, _)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": n,
            "platform": {"os": "linux", "architecture": arch}})).collect::<Vec<_>>()
    }))
    .unwrap();
    let r = http(
        "PUT",
        &up.url("/v2/multi/app/manifests/v1"),
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        Some(&index),
    );
    assert_eq!(r.status, 201);
    let cfg = write_config(
        &t.join("proxy.toml"),
        &format!("[[proxy.upstreams]]\nname = \"up\"\nurl = \"http://{}\"\n", up.addr),
    );
    let node = Berth::start(&t.join("proxy-data"), &[("BERTH_CONFIG", &cfg)]);
    let accept = [("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")];
    let r = http("GET", &node.url("/v2/up/multi/app/manifests/v1"), &accept, None);
    assert_eq!((r.status, r.body == index), (200, true));
    // A client picks amd64 from the index, then its manifest and layer.
    let r = http("GET", &node.url(&format!("/v2/up/multi/app/manifests/{}", children[0].1)), &accept, None);
    assert_eq!(r.status, 200);
    let r = http("GET", &node.url(&format!("/v2/up/multi/app/blobs/{}", sha256(&children[0].3))), &[], None);
    assert_eq!((r.status, r.body == children[0].3), (200, true));
    // Sparse: the other platform's layer was not fetched.
    let arm = sha256(&children[1].3);
    assert!(
        !node.dir.join("blobs/sha256").join(&arm[7..9]).join(&arm[7..]).exists(),
        "arm64 fetched without being asked for"
    );
    // arm64 through preload.
    let list = t.join("images.txt");
    std::fs::write(&list, "up/multi/app:v1\n").unwrap();
    let out = Command::new(berth_bin())
        .args(["preload", "--platform", "linux/arm64", "--file"])
        .arg(&list)
        .arg("--data-dir")
        .arg(&node.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(2 manifests, 2 blobs"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(up);
    for (arch, d, _, layer) in &children {
        let r = http("GET", &node.url(&format!("/v2/up/multi/app/manifests/{d}")), &accept, None);
        assert_eq!(r.status, 200, "{arch}");
        let r = http("GET", &node.url(&format!("/v2/up/multi/app/blobs/{}", sha256(layer))), &[], None);
        assert_eq!((r.status, r.body == *layer), (200, true), "{arch}");
    }
}

/// Security round 2, findings 6 and 11: an upstream that answers 401 with a realm at another
/// port got the upstream's configured password sent there; a 302 to another port (the node's
/// internal listener) was followed; upstream details (realm URLs, addresses) were echoed to
/// clients; `allow = ["lib/*"]` also let `lib/a/b` through.
#[test]
fn hostile_upstreams_get_no_credentials_no_inward_redirects_and_no_echo() {
    let tmp = tempfile::tempdir().unwrap();
    // The thief: a "token realm" that records what it is sent, and any redirect target.
    let thief = Scripted::start(|_| reply("200 OK", &[("Content-Type", "application/json")], r#"{"token":"t"}"#));
    let realm = format!("{}/token", thief.url());
    let challenger = Scripted::start(move |head| {
        if head.to_ascii_lowercase().contains("authorization: bearer t") {
            reply("404 Not Found", &[], "")
        } else {
            reply(
                "401 Unauthorized",
                &[("WWW-Authenticate", &format!("Bearer realm=\"{realm}\",service=\"evil\""))],
                "",
            )
        }
    });
    let to = format!("{}/internal/v1/export", thief.url());
    let redirector = Scripted::start(move |_| reply("302 Found", &[("Location", &to)], ""));
    let globbed = Scripted::start(|_| reply("404 Not Found", &[], ""));
    let cfg = write_config(
        &tmp.path().join("proxy.toml"),
        &format!(
            "[[proxy.upstreams]]\nname = \"evil\"\nurl = \"{}\"\nusername = \"mirror\"\npassword = \"upstream-secret\"\n\
             [[proxy.upstreams]]\nname = \"redir\"\nurl = \"{}\"\nusername = \"mirror\"\npassword = \"upstream-secret\"\n\
             [[proxy.upstreams]]\nname = \"globbed\"\nurl = \"{}\"\nallow = [\"lib/*\"]\n",
            challenger.url(),
            redirector.url(),
            globbed.url()
        ),
    );
    let node = Berth::start(&tmp.path().join("data"), &[("BERTH_CONFIG", &cfg)]);
    let leaked = |body: &[u8]| {
        let b = String::from_utf8_lossy(body).into_owned();
        assert!(
            !b.contains("127.0.0.1") && !b.contains(&thief.port.to_string()) && !b.contains("realm"),
            "echoed: {b}"
        );
    };
    // The realm at another origin is never sent the credentials (nor asked at all: it is not
    // public and not listed in token_realms).
    let r = get_manifest(&node, "/v2/evil/lib/app/manifests/v1");
    assert!(r.status >= 400, "{}", r.status);
    leaked(&r.body);
    let r = http(
        "GET",
        &node.url("/v2/evil/lib/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000"),
        &[],
        None,
    );
    assert!(r.status >= 400);
    leaked(&r.body);
    assert!(!challenger.heads().is_empty(), "the upstream was asked");
    for h in thief.heads() {
        assert!(!h.to_ascii_lowercase().contains("authorization"), "credentials sent to the realm: {h}");
    }
    // A redirect inward (another port on loopback) is not followed.
    let before = thief.heads().len();
    let r = get_manifest(&node, "/v2/redir/lib/app/manifests/v1");
    assert!(r.status >= 400, "{}", r.status);
    leaked(&r.body);
    assert!(!redirector.heads().is_empty());
    assert_eq!(thief.heads().len(), before, "the redirect to another port was followed");
    // One glob meaning: `lib/*` is one segment.
    let r = get_manifest(&node, "/v2/globbed/lib/a/b/manifests/v1");
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(globbed.heads().is_empty(), "lib/a/b reached the upstream");
    let r = get_manifest(&node, "/v2/globbed/lib/a/manifests/v1");
    assert_eq!(r.status, 404);
    assert_eq!(globbed.heads().len(), 1);
}

/// Integrity, finding 4: a request for a digest joined any fill running for it, whichever
/// upstream started it: a user of `evil/**`, whose upstream does not have the blob, got the
/// bytes of another user's fill of it from another upstream. Fills are shared only between
/// requests of the same upstream repository.
#[test]
fn a_fill_is_never_shared_with_another_upstreams_route() {
    let tmp = tempfile::tempdir().unwrap();
    let body = "private layer bytes ".repeat(100);
    let d = sha256(body.as_bytes());
    let served = body.clone();
    // The trusted upstream sends the headers at once and the body after a pause.
    let good = Scripted::start(move |_| {
        let half = served.len() / 2;
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n{}{PAUSE}{}",
            served.len(),
            &served[..half],
            &served[half..]
        )
    });
    let evil = Scripted::start(|_| reply("404 Not Found", &[], ""));
    let cfg = write_config(
        &tmp.path().join("proxy.toml"),
        &format!(
            "[[proxy.upstreams]]\nname = \"good\"\nurl = \"{}\"\n[[proxy.upstreams]]\nname = \"evil\"\nurl = \"{}\"\n",
            good.url(),
            evil.url()
        ),
    );
    let node = Berth::start(&tmp.path().join("data"), &[("BERTH_CONFIG", &cfg)]);
    let addr = node.addr.clone();
    let path = format!("/v2/good/lib/app/blobs/{d}");
    let first = std::thread::spawn(move || raw_get(&addr, &path));
    wait_for("the trusted fill to start", 10, || !good.heads().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    // While it runs: the same digest through the other upstream's route.
    let r = http("GET", &node.url(&format!("/v2/evil/lib/app/blobs/{d}")), &[], None);
    assert_eq!(r.status, 404, "joined another upstream's fill: {}", String::from_utf8_lossy(&r.body));
    assert!(!evil.heads().is_empty(), "the evil upstream was asked for its own answer");
    let (status, _, got) = first.join().unwrap();
    assert_eq!((status, got == body.as_bytes()), (200, true));
}
