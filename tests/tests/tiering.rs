//! S3 tiering against a real S3-compatible server (moto) through a fault proxy: tier, evict,
//! read-through (whole, ranged, concurrent), outages during pushes and cold pulls, kill -9
//! mid-upload, deletes, rebuild from the bucket, the cache budget, presigned redirects, and
//! skopeo pushing and pulling through an evicted cache.

mod common;

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::s3::{FaultProxy, Moto};
use common::*;

const BUCKET: &str = "berth-test";
const PREFIX: &str = "registry/";

struct Env {
    tmp: tempfile::TempDir,
    moto: Moto,
    proxy: FaultProxy,
    node: Berth,
}

fn s3_env(endpoint: &str, cache_max: u64, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("BERTH_STORAGE__S3__BUCKET", BUCKET),
        ("BERTH_STORAGE__S3__PREFIX", PREFIX),
        ("BERTH_STORAGE__S3__ENDPOINT", endpoint),
        ("BERTH_STORAGE__S3__PATH_STYLE", "true"),
        ("BERTH_STORAGE__S3__ACCESS_KEY_ID", "test"),
        ("BERTH_STORAGE__S3__SECRET_ACCESS_KEY", "test"),
        ("BERTH_STORAGE__S3__MULTIPART_THRESHOLD", "8388608"),
        ("BERTH_STORAGE__S3__PART_SIZE", "5242880"),
        ("BERTH_STORAGE__S3__MAX_BACKOFF_SECS", "1"),
        ("BERTH_CACHE__CHECK_INTERVAL_SECS", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.push(("BERTH_CACHE__MAX_BYTES".into(), cache_max.to_string()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// moto + proxy + node. `cache_max` 1 evicts everything that is safe in S3; 0 never evicts.
fn setup(cache_max: u64, extra: &[(&str, &str)]) -> Option<Env> {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start(&tmp.path().join("moto.log"))?;
    moto.create_bucket(BUCKET);
    let proxy = FaultProxy::start(moto.port);
    let env = s3_env(&proxy.endpoint(), cache_max, extra);
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Berth::start(&tmp.path().join("data"), &env_ref);
    Some(Env { tmp, moto, proxy, node })
}

fn wait_tiered(node: &Berth) {
    wait_for("tiering to finish", 60, || metric(node, "berth_tier_pending_blobs") == 0.0);
}

fn wait_evicted(node: &Berth) {
    wait_for("eviction", 60, || {
        metric(node, "berth_tier_pending_blobs") == 0.0 && metric(node, "berth_store_local_bytes") == 0.0
    });
}

/// Push an image (config + layers) tagged `tag`; returns (manifest digest, manifest bytes).
fn push_image(node: &Berth, repo: &str, tag: &str, layers: &[Vec<u8>]) -> (String, Vec<u8>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","repo":"{repo}","tag":"{tag}"}}"#).into_bytes();
    let cd = push_blob(node, repo, &config);
    let descs: Vec<_> = layers
        .iter()
        .map(|l| {
            let d = push_blob(node, repo, l);
            serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d,"size":l.len()})
        })
        .collect();
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":config.len()},
        "layers":descs
    }))
    .unwrap();
    let r = http(
        "PUT",
        &node.url(&format!("/v2/{repo}/manifests/{tag}")),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        Some(&m),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    (sha256(&m), m)
}

fn get_blob(node: &Berth, repo: &str, digest: &str) -> Resp {
    http("GET", &node.url(&format!("/v2/{repo}/blobs/{digest}")), &[], None)
}

fn blob_key(d: &str) -> String {
    format!("{PREFIX}blobs/sha256/{}", &d[7..])
}

fn fill_files(data: &std::path::Path) -> usize {
    std::fs::read_dir(data.join("uploads"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("fill-")).count())
        .unwrap_or(0)
}

#[test]
fn tiers_evicts_and_reads_through() {
    let Some(e) = setup(1, &[]) else { return };
    let layers = vec![noise(1, 1000), noise(2, 3 << 20), noise(3, 12 << 20)];
    let (md, mbytes) = push_image(&e.node, "team/app", "v1", &layers);
    wait_evicted(&e.node);

    // The bucket holds blobs by content address, the manifest by repository, tag and links.
    let keys = e.moto.keys(BUCKET, PREFIX);
    for l in &layers {
        let d = sha256(l);
        assert_eq!(e.moto.get(BUCKET, &blob_key(&d)).as_deref(), Some(&l[..]), "blob {d} in S3");
        assert!(keys.contains(&format!("{PREFIX}links/team/app/{d}")), "link of {d}: {keys:?}");
    }
    wait_for("manifest and tag mirrored", 20, || {
        e.moto.get(BUCKET, &format!("{PREFIX}manifests/team/app/{md}")).as_deref() == Some(&mbytes[..])
            && e.moto.get(BUCKET, &format!("{PREFIX}tags/team/app/v1")).as_deref() == Some(md.as_bytes())
    });

    // HEAD of a cold blob answers from the index, without fetching.
    let d2 = sha256(&layers[2]);
    let head = http("HEAD", &e.node.url(&format!("/v2/team/app/blobs/{d2}")), &[], None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some((12u64 << 20).to_string().as_str()));
    assert_eq!(metric(&e.node, "berth_tier_fills_total"), 0.0);

    // Whole-blob read-through: bytes equal, counted as misses, logged as such.
    for l in &layers {
        let r = get_blob(&e.node, "team/app", &sha256(l));
        assert_eq!(r.status, 200);
        assert!(r.body == *l, "read-through bytes of {}", sha256(l));
    }
    assert!(metric(&e.node, "berth_blob_reads_total{source=\"s3\"}") >= 3.0);
    let log = std::fs::read_to_string(&e.node.log).unwrap();
    assert!(log.contains("cache=\"miss\""), "access log marks misses");
    assert!(log.contains("read-through complete; cached"));

    // Ranged read of a cold blob streams the range from S3. (Clients have their bytes before
    // a fill is verified and published: wait for all three to finish, then for eviction.)
    wait_for("fills published", 30, || metric(&e.node, "berth_tier_fills_total{result=\"ok\"}") == 3.0);
    wait_evicted(&e.node);
    let r = http("GET", &e.node.url(&format!("/v2/team/app/blobs/{d2}")), &[("Range", "bytes=5000000-5000999")], None);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some(format!("bytes 5000000-5000999/{}", 12 << 20).as_str()));
    assert!(r.body == layers[2][5_000_000..5_001_000], "ranged bytes");
    assert_eq!(metric(&e.node, "berth_blob_reads_total{source=\"s3_range\"}"), 1.0);
    let r = http("GET", &e.node.url(&format!("/v2/team/app/blobs/{d2}")), &[("Range", "bytes=-10")], None);
    assert_eq!(r.status, 206);
    assert!(r.body == layers[2][layers[2].len() - 10..], "suffix range");
}

#[test]
fn concurrent_misses_share_one_fetch() {
    let Some(e) = setup(1, &[]) else { return };
    let blob = Arc::new(noise(7, 24 << 20));
    let d = push_blob(&e.node, "shared/one", &blob);
    wait_evicted(&e.node);
    // A slow S3 (8 MB/s: the fetch takes ~3 s) so every reader arrives while it runs.
    e.proxy.set_rate(8_000_000);
    let readers = 6;
    let barrier = Arc::new(Barrier::new(readers));
    let url = e.node.url(&format!("/v2/shared/one/blobs/{d}"));
    let threads: Vec<_> = (0..readers)
        .map(|_| {
            let (b, url, blob) = (barrier.clone(), url.clone(), blob.clone());
            std::thread::spawn(move || {
                b.wait();
                let start = Instant::now();
                let resp = ureq::get(&url).call().unwrap();
                let mut reader = resp.into_reader();
                let mut body = vec![0u8; 1];
                std::io::Read::read_exact(&mut reader, &mut body).unwrap();
                let first = start.elapsed();
                std::io::Read::read_to_end(&mut reader, &mut body).unwrap();
                let total = start.elapsed();
                assert!(body == *blob, "bytes equal");
                (first, total)
            })
        })
        .collect();
    let times: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Readers finish when the last byte is written; the fill is counted after it is verified
    // and published.
    wait_for("the fill to finish", 30, || metric(&e.node, "berth_tier_fills_total") >= 1.0);
    assert_eq!(metric(&e.node, "berth_tier_fills_total{result=\"ok\"}"), 1.0, "one S3 fetch for {readers} readers");
    assert!(metric(&e.node, "berth_tier_s3_read_bytes_total") < (2 * blob.len()) as f64);
    // Clients see bytes long before the fetch completes.
    for (first, total) in &times {
        assert!(first.as_secs_f64() < total.as_secs_f64() / 2.0, "first byte {first:?} of {total:?}");
    }
}

#[test]
fn s3_outage_never_fails_pushes_or_cached_pulls() {
    let Some(e) = setup(0, &[]) else { return };
    e.proxy.set_down(true);
    let layers = vec![noise(11, 2 << 20), noise(12, 9 << 20)];
    let (md, _) = push_image(&e.node, "outage/app", "v1", &layers);
    for l in &layers {
        let r = get_blob(&e.node, "outage/app", &sha256(l));
        assert_eq!(r.status, 200);
        assert!(r.body == *l);
    }
    wait_for("failed S3 attempts", 30, || metric(&e.node, "berth_tier_s3_errors_total") > 0.0);
    assert_eq!(metric(&e.node, "berth_tier_pending_blobs"), 3.0, "backlog visible");
    assert!(metric(&e.node, "berth_tier_pending_bytes") >= (11 << 20) as f64);
    // S3 returns: the backlog drains by itself.
    e.proxy.set_down(false);
    wait_tiered(&e.node);
    for l in &layers {
        assert_eq!(e.moto.get(BUCKET, &blob_key(&sha256(l))).as_deref(), Some(&l[..]));
    }
    wait_for("manifest mirrored", 30, || e.moto.get(BUCKET, &format!("{PREFIX}manifests/outage/app/{md}")).is_some());
}

#[test]
fn s3_outage_during_cold_pull_is_a_clean_error() {
    let Some(e) = setup(1, &[]) else { return };
    let blob = noise(21, 10 << 20);
    let d = push_blob(&e.node, "cold/app", &blob);
    wait_evicted(&e.node);
    let data = e.tmp.path().join("data");

    // S3 down before the pull: 503 UNAVAILABLE, nothing cached.
    e.proxy.set_down(true);
    let r = get_blob(&e.node, "cold/app", &d);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // A short spec error with Retry-After; the S3 detail (endpoint, SDK text) only in the log.
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("UNAVAILABLE"), "{body}");
    assert!(body.len() < 250 && !body.contains("127.0.0.1") && !body.contains("dispatch"), "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok(), "complete JSON, not cut: {body}");
    assert_eq!(r.header("Retry-After"), Some("10"));
    assert_eq!(metric(&e.node, "berth_store_local_bytes"), 0.0);

    // S3 dies mid-stream: the response is cut short (never padded), nothing partial cached.
    e.proxy.set_down(false);
    e.proxy.set_rate(4_000_000);
    let url = e.node.url(&format!("/v2/cold/app/blobs/{d}"));
    let t = std::thread::spawn(move || {
        let mut body = Vec::new();
        let res = ureq::get(&url).call().map(|r| std::io::Read::read_to_end(&mut r.into_reader(), &mut body));
        (res.map(|r| r.is_ok()).unwrap_or(false), body.len())
    });
    std::thread::sleep(Duration::from_millis(800));
    e.proxy.set_down(true);
    let (complete, got) = t.join().unwrap();
    assert!(!complete || got < blob.len(), "a cut fetch must not look complete ({got} bytes)");
    wait_for("failed fill cleaned up", 20, || fill_files(&data) == 0);
    assert_eq!(metric(&e.node, "berth_store_local_bytes"), 0.0);
    assert!(metric(&e.node, "berth_tier_fills_total{result=\"error\"}") >= 1.0);

    // S3 back: the blob reads through completely.
    e.proxy.set_rate(0);
    e.proxy.set_down(false);
    let r = get_blob(&e.node, "cold/app", &d);
    assert_eq!(r.status, 200);
    assert!(r.body == blob);
}

#[test]
fn deletes_reach_the_bucket() {
    let Some(e) = setup(0, &[]) else { return };
    let layer = noise(31, 100_000);
    let (md, _) = push_image(&e.node, "del/app", "v1", std::slice::from_ref(&layer));
    let r = http(
        "PUT",
        &e.node.url("/v2/del/app/manifests/v2"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        Some(&e.moto_manifest(&md)),
    );
    assert_eq!(r.status, 201);
    let tag = |t: &str| format!("{PREFIX}tags/del/app/{t}");
    let man = format!("{PREFIX}manifests/del/app/{md}");
    let link = format!("{PREFIX}links/del/app/{}", sha256(&layer));
    wait_for("mirror", 30, || {
        let k = e.moto.keys(BUCKET, PREFIX);
        k.contains(&tag("v1")) && k.contains(&tag("v2")) && k.contains(&man) && k.contains(&link)
    });
    // Tag delete, then manifest delete (with its remaining tag), then the blob link.
    assert_eq!(http("DELETE", &e.node.url("/v2/del/app/manifests/v2"), &[], None).status, 202);
    wait_for("tag deleted in S3", 30, || !e.moto.keys(BUCKET, PREFIX).contains(&tag("v2")));
    assert_eq!(http("DELETE", &e.node.url(&format!("/v2/del/app/manifests/{md}")), &[], None).status, 202);
    wait_for("manifest deleted in S3", 30, || {
        let k = e.moto.keys(BUCKET, PREFIX);
        !k.contains(&man) && !k.contains(&tag("v1"))
    });
    assert_eq!(http("DELETE", &e.node.url(&format!("/v2/del/app/blobs/{}", sha256(&layer))), &[], None).status, 202);
    wait_for("link deleted in S3", 30, || !e.moto.keys(BUCKET, PREFIX).contains(&link));
}

impl Env {
    /// The bytes of a manifest as the node serves them.
    fn moto_manifest(&self, digest: &str) -> Vec<u8> {
        let r = http(
            "GET",
            &self.node.url(&format!("/v2/del/app/manifests/{digest}")),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            None,
        );
        assert_eq!(r.status, 200);
        r.body
    }
}

#[test]
fn rebuild_from_bucket_after_disk_loss() {
    let Some(mut e) = setup(0, &[]) else { return };
    let layers = vec![noise(41, 500_000), noise(42, 9 << 20)];
    let (md, mbytes) = push_image(&e.node, "lost/disk", "v1", &layers);
    wait_tiered(&e.node);
    wait_for("mirror", 30, || e.moto.get(BUCKET, &format!("{PREFIX}tags/lost/disk/v1")).is_some());
    assert_eq!(e.node.terminate(), Some(0));

    // The disk is lost; `berth rebuild-index` brings the index back from the bucket.
    let data = e.tmp.path().join("data");
    std::fs::remove_dir_all(&data).unwrap();
    let env = s3_env(&e.proxy.endpoint(), 0, &[]);
    let out = run(Command::new(berth_bin()).arg("rebuild-index").arg("--data-dir").arg(&data).envs(env.clone()));
    assert!(out.contains("1 manifests") && out.contains("1 tags"), "{out}");
    // A second run refuses a non-empty index.
    let again = Command::new(berth_bin()).arg("rebuild-index").arg("--data-dir").arg(&data).envs(env).output().unwrap();
    assert!(!again.status.success());

    let check = |node: &Berth| {
        let r = http(
            "GET",
            &node.url("/v2/lost/disk/manifests/v1"),
            &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
            None,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body, mbytes);
        assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
        for l in &layers {
            let r = get_blob(node, "lost/disk", &sha256(l));
            assert_eq!(r.status, 200);
            assert!(r.body == *l);
        }
    };
    e.node.restart();
    check(&e.node);

    // Without the command: a node starting on an empty index rebuilds by itself.
    e.node.kill9();
    std::fs::remove_dir_all(&data).unwrap();
    e.node.restart();
    check(&e.node);
    let log = std::fs::read_to_string(&e.node.log).unwrap();
    assert!(log.contains("rebuilt it from the bucket"));
}

#[test]
fn kill9_mid_tiering_redoes_the_upload() {
    let Some(mut e) = setup(0, &[]) else { return };
    // Slow link: the 20 MiB multipart upload takes ~10 s.
    e.proxy.set_rate(2_000_000);
    let blob = noise(51, 20 << 20);
    let d = push_blob(&e.node, "crash/app", &blob);
    wait_for("multipart upload in progress", 30, || e.moto.multipart_uploads(BUCKET) > 0);
    std::thread::sleep(Duration::from_millis(500));
    e.node.kill9();
    assert!(e.moto.get(BUCKET, &blob_key(&d)).is_none(), "nothing complete in S3 yet");
    e.proxy.set_rate(0);
    e.node.restart();
    wait_tiered(&e.node);
    assert_eq!(e.moto.get(BUCKET, &blob_key(&d)).as_deref(), Some(&blob[..]), "upload redone after the crash");
    wait_for("stale multipart upload aborted", 30, || e.moto.multipart_uploads(BUCKET) == 0);
    let r = get_blob(&e.node, "crash/app", &d);
    assert!(r.status == 200 && r.body == blob);
}

#[test]
fn cache_budget_holds_under_a_large_push() {
    // 16 MiB budget: high watermark 14.4 MiB, low 12.8 MiB; push 48 MiB.
    let Some(e) = setup(16 << 20, &[]) else { return };
    let blobs: Vec<Vec<u8>> = (0..8).map(|i| noise(60 + i, 6 << 20)).collect();
    let digests: Vec<String> = blobs.iter().map(|b| push_blob(&e.node, "budget/app", b)).collect();
    wait_tiered(&e.node);
    let high = (16u64 << 20) as f64 * 0.9;
    wait_for("local bytes under the high watermark", 60, || metric(&e.node, "berth_store_local_bytes") <= high);
    for (b, d) in blobs.iter().zip(&digests) {
        let r = get_blob(&e.node, "budget/app", d);
        assert!(r.status == 200 && r.body == *b, "blob {d}");
    }
    assert!(metric(&e.node, "berth_blob_reads_total{source=\"s3\"}") >= 4.0, "most of it came back through S3");
    wait_for("budget restored after the pulls", 60, || metric(&e.node, "berth_store_local_bytes") <= high);
}

#[test]
fn presigned_redirect_for_cold_blobs() {
    let Some(e) = setup(1, &[("BERTH_STORAGE__S3__PRESIGN_REDIRECT", "true")]) else { return };
    let blob = noise(71, 300_000);
    let d = push_blob(&e.node, "redirect/app", &blob);
    wait_evicted(&e.node);
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let r = try_http(&agent, "GET", &e.node.url(&format!("/v2/redirect/app/blobs/{d}")), &[], None).unwrap();
    assert_eq!(r.status, 307);
    let location = r.header("location").unwrap().to_string();
    assert!(location.starts_with(&e.proxy.endpoint()) && location.contains("X-Amz-Signature"), "{location}");
    let direct = http("GET", &location, &[], None);
    assert!(direct.status == 200 && direct.body == blob);
}

#[test]
fn skopeo_push_evict_pull_through() {
    if !have("skopeo") {
        return;
    }
    let Some(e) = setup(1, &[]) else { return };
    let reg = e.node.addr.clone();
    let src = e.tmp.path().join("src");
    let layers = make_oci_layout(&src, "v1", 3, 400_000);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{reg}/tiered/img:v1")));
    wait_evicted(&e.node);
    let dst = e.tmp.path().join("dst");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reg}/tiered/img:v1"))
        .arg(format!("oci:{}:v1", dst.display())));
    for l in &layers {
        let d = sha256(l);
        assert_eq!(std::fs::read(dst.join("blobs/sha256").join(&d[7..])).unwrap(), *l, "layer {d}");
    }
    assert!(metric(&e.node, "berth_blob_reads_total{source=\"s3\"}") >= 3.0, "pulled through S3");
}

#[test]
fn gc_removes_s3_copies_and_local_files() {
    let Some(e) = setup(0, &[]) else { return };
    let kept = noise(81, 200_000);
    let (_md, _) = push_image(&e.node, "gc/app", "v1", std::slice::from_ref(&kept));
    let garbage = noise(82, 300_000);
    let g = push_blob(&e.node, "gc/app", &garbage);
    wait_tiered(&e.node);
    assert!(e.moto.get(BUCKET, &blob_key(&g)).is_some());
    let out = run(Command::new(berth_bin()).args(["gc", "--delete", "--grace", "0s", "--data-dir"]).arg(&e.node.dir));
    assert!(out.starts_with("Deleted 1 blob, reclaimed 300.0 kB"), "{out}");
    assert!(!e.node.dir.join("blobs/sha256").join(&g[7..9]).join(&g[7..]).exists(), "local file removed");
    wait_for("S3 copy removed", 30, || e.moto.get(BUCKET, &blob_key(&g)).is_none());
    wait_for("S3 link removed", 30, || !e.moto.keys(BUCKET, PREFIX).contains(&format!("{PREFIX}links/gc/app/{g}")));
    assert!(e.moto.get(BUCKET, &blob_key(&sha256(&kept))).is_some(), "referenced blob stays in S3");
    assert_eq!(get_blob(&e.node, "gc/app", &g).status, 404);
}

/// Regression: a missing bucket was reported as "object not found in S3".
#[test]
fn missing_bucket_is_named_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(moto) = Moto::start(&tmp.path().join("moto.log")) else { return };
    let env = s3_env(&format!("http://127.0.0.1:{}", moto.port), 0, &[("BERTH_STORAGE__S3__BUCKET", "no-such-bucket")]);
    let port = free_port();
    let out = std::process::Command::new(berth_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(tmp.path().join("data"))
        .envs(env)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no-such-bucket") && err.contains("bucket does not exist"), "{err}");
    assert!(!err.contains("object not found"), "{err}");
}

/// Readers of a blob served from cached descriptors while the evictor removes its file (a
/// 1-byte budget evicts it as soon as it is in S3, again after every read-through): every GET
/// gets the whole blob, and after the readers stop no core holds a removed file open.
#[test]
fn open_blob_files_race_eviction() {
    let Some(e) = setup(1, &[]) else { return };
    let data = noise(7, 300 * 1024);
    let d = push_blob(&e.node, "race/evict", &data);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, url, data) = (stop.clone(), e.node.url(&format!("/v2/race/evict/blobs/{d}")), data.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = http("GET", &url, &[], None);
                    assert_eq!((r.status, r.body.len(), r.body == data), (200, data.len(), true));
                    n += 1;
                }
                n
            })
        })
        .collect();
    wait_for("an eviction", 60, || metric(&e.node, "berth_tier_evictions_total") >= 1.0);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 10, "{reads}");
    wait_evicted(&e.node);
    let data_dir = e.tmp.path().join("data");
    wait_for("descriptors of evicted files to close", 5, || deleted_blob_fds(e.node.pid(), &data_dir).is_empty());
}

/// Integrity, finding 7: a starting node aborted every multipart upload in the shared bucket,
/// so restarting node b failed node a's 400 MB push. A node aborts its own crashed uploads
/// (journaled in its data directory) and others' only when more than a day old.
#[test]
fn a_restart_leaves_other_nodes_multipart_uploads_alone() {
    let Some(mut e) = setup(0, &[]) else { return };
    // Another node's push in progress: a multipart upload it just started.
    let auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request";
    let key = format!("{PREFIX}blobs/sha256/{}", "ab".repeat(32));
    let r = ureq::post(&e.moto.url(&format!("/{BUCKET}/{key}?uploads"))).set("Authorization", auth).call();
    assert_eq!(r.map(|r| r.status()).unwrap_or(0), 200);
    assert_eq!(e.moto.multipart_uploads(BUCKET), 1);
    e.node.restart();
    // The uploader has run (it aborts stale uploads first, then tiers this blob).
    push_blob(&e.node, "other/app", b"after the restart");
    wait_tiered(&e.node);
    assert_eq!(e.moto.multipart_uploads(BUCKET), 1, "another node's upload was aborted");
}

/// `method path` on a node's internal API, with its own token from the data directory.
fn internal_req(node: &Berth, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
    let (url, token) = internal(node);
    let auth = format!("Bearer {token}");
    http(method, &format!("{url}{path}"), &[("Authorization", &auth), ("Content-Type", "application/json")], body)
}

/// Security round 2, finding 10, and integrity, finding 6: a node rebuilt from the bucket lost
/// its scan verdicts (a blocked image became pullable) and its managed accounts (robots and
/// managed rules vanished), skipped tags whose blob links were deleted, and imported planted
/// link objects and descriptor sizes that disagree with the objects. Verdicts and accounts now
/// live beside the content in `state/`, and the rebuild applies a push's checks.
#[test]
fn a_rebuilt_node_keeps_verdicts_accounts_and_refuses_planted_links() {
    let Some(mut e) = setup(0, &[("BERTH_AUTH__ENABLED", "true"), ("BERTH_SCAN__ENABLED", "true")]) else {
        return;
    };
    // Managed accounts: a user with a managed rule, a robot.
    let r = internal_req(&e.node, "PUT", "/internal/v1/users/erin", Some(br#"{"password":"erin-pw-1"}"#));
    assert_eq!(r.status, 204);
    let r = internal_req(&e.node, "POST", "/internal/v1/robots", Some(br#"{"name":"ci"}"#));
    assert_eq!(r.status, 201);
    let secret = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["secret"].as_str().unwrap().to_owned();
    let rules = br#"[{"subjects":["user:erin","robot:ci"],"repositories":["team/**"],"actions":["pull","push"]}]"#;
    assert_eq!(internal_req(&e.node, "PUT", "/internal/v1/rules", Some(rules)).status, 204);
    let erin = basic("erin", "erin-pw-1");
    // An image in team/app, and one blob of alice/private nobody else may read.
    let (config, layer) = (b"{}".to_vec(), noise(71, 3000));
    let push = |repo: &str, data: &[u8]| {
        let r = http(
            "POST",
            &e.node.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(data))),
            &[("Authorization", &erin)],
            Some(data),
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    };
    push("team/app", &config);
    push("team/app", &layer);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let ct = ("Content-Type", "application/vnd.oci.image.manifest.v1+json");
    let r = http("PUT", &e.node.url("/v2/team/app/manifests/v1"), &[("Authorization", &erin), ct], Some(&manifest));
    assert_eq!(r.status, 201);
    let md = sha256(&manifest);
    let private = noise(72, 2000);
    let r = internal_req(
        &e.node,
        "POST",
        &format!("/v2/alice/private/blobs/uploads/?digest={}", sha256(&private)),
        Some(&private),
    );
    assert_eq!(r.status, 201);
    // The verdict: a critical finding blocks the pull.
    let record = serde_json::json!({
        "status": "completed", "scanned_at_ms": 1, "db_version": "test", "scanner": "test",
        "counts": {"critical": 1, "high": 0, "medium": 0, "low": 0, "unknown": 0},
        "findings": [{"cve": "CVE-2026-0001", "severity": "critical", "package": "libfoo", "installed_version": "1.0"}],
    });
    let r =
        internal_req(&e.node, "PUT", &format!("/internal/v1/scans/{md}"), Some(&serde_json::to_vec(&record).unwrap()));
    assert_eq!(r.status, 204);
    let pull = |node: &Berth, auth: &str| {
        http("GET", &node.url("/v2/team/app/manifests/v1"), &[("Authorization", auth)], None).status
    };
    assert_eq!(pull(&e.node, &erin), 403, "blocked by its verdict");
    wait_tiered(&e.node);
    wait_for("state in the bucket", 30, || {
        let keys = e.moto.keys(BUCKET, &format!("{PREFIX}state/"));
        keys.iter().any(|k| k.ends_with("accounts.json")) && keys.iter().any(|k| k.contains(&md))
    });
    wait_for("links mirrored", 30, || !e.moto.keys(BUCKET, &format!("{PREFIX}links/team/app/")).is_empty());
    // Planted: a link giving team/app alice's private blob (no manifest of team/app names it).
    let auth_hdr = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request";
    let planted = format!("{PREFIX}links/team/app/{}", sha256(&private));
    ureq::put(&e.moto.url(&format!("/{BUCKET}/{planted}"))).set("Authorization", auth_hdr).send_bytes(b"").unwrap();
    // Rebuild: the data directory is gone.
    e.node.kill9();
    std::fs::remove_dir_all(&e.node.dir).unwrap();
    e.node.restart();
    let log = std::fs::read_to_string(&e.node.log).unwrap();
    assert!(log.contains("rebuilt it from the bucket"), "{log}");
    // Accounts are back (managed user, rule, robot), and so is the verdict: still blocked.
    let robot = basic("robot$ci", &secret);
    assert_eq!(http("GET", &e.node.url("/v2/"), &[("Authorization", &erin)], None).status, 200, "managed user lost");
    assert_eq!(http("GET", &e.node.url("/v2/"), &[("Authorization", &robot)], None).status, 200, "robot lost");
    assert_eq!(pull(&e.node, &erin), 403, "the verdict was lost: a blocked image became pullable");
    let r =
        http("GET", &e.node.url(&format!("/v2/team/app/blobs/{}", sha256(&layer))), &[("Authorization", &erin)], None);
    assert_eq!(r.status, 200);
    // The planted link was not imported.
    let r = http(
        "GET",
        &e.node.url(&format!("/v2/team/app/blobs/{}", sha256(&private))),
        &[("Authorization", &erin)],
        None,
    );
    assert_eq!(r.status, 404, "a planted link gave team/app another tenant's blob");
}
