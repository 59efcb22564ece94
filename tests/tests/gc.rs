//! Garbage collection against the real binary: dry run equals the real run, references and the
//! grace period protect what they should, retention rules, untagged manifests and referrers,
//! a torture of concurrent pushes during repeated GCs, and kill -9 in the middle of a GC.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn digests(report: &Value, what: &str) -> BTreeSet<String> {
    report[what]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| match what {
            "manifests" => format!("{}@{}", x["repo"].as_str().unwrap(), x["digest"].as_str().unwrap()),
            "tags" => format!("{}:{}", x["repo"].as_str().unwrap(), x["tag"].as_str().unwrap()),
            _ => x["digest"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn manifest_bytes(
    config: &str,
    config_len: usize,
    layers: &[(String, usize)],
    subject: Option<(&str, usize)>,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":config,"size":config_len},
        "layers": layers.iter().map(|(d, n)| json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d,"size":n})).collect::<Vec<_>>()
    });
    if let Some((d, n)) = subject {
        m["subject"] = json!({"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":d,"size":n});
    }
    serde_json::to_vec(&m).unwrap()
}

/// Push config + layers + manifest at `reference` (a tag or, with None, by digest).
fn push_image(
    node: &Berth,
    repo: &str,
    tag: Option<&str>,
    layers: &[Vec<u8>],
    subject: Option<(&str, usize)>,
) -> (String, usize) {
    let config = format!(r#"{{"os":"linux","architecture":"amd64","n":{}}}"#, layers.len() + repo.len()).into_bytes();
    let cd = push_blob(node, repo, &config);
    let ls: Vec<(String, usize)> = layers.iter().map(|l| (push_blob(node, repo, l), l.len())).collect();
    let m = manifest_bytes(&cd, config.len(), &ls, subject);
    let md = sha256(&m);
    let reference = tag.map(str::to_owned).unwrap_or_else(|| md.clone());
    let r = http(
        "PUT",
        &node.url(&format!("/v2/{repo}/manifests/{reference}")),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        Some(&m),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    (md, m.len())
}

fn blob_status(node: &Berth, repo: &str, d: &str) -> u16 {
    http("HEAD", &node.url(&format!("/v2/{repo}/blobs/{d}")), &[], None).status
}

fn layer(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn dry_run_reports_exactly_what_delete_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    let shared = layer(1, 50_000);
    let (_a, _) = push_image(&node, "app/a", Some("v1"), &[layer(2, 40_000)], None);
    let (b, _) = push_image(&node, "app/b", Some("v1"), &[shared.clone(), layer(3, 30_000)], None);
    let (_c, _) = push_image(&node, "app/c", Some("v1"), std::slice::from_ref(&shared), None);
    let stray = push_blob(&node, "app/d", &layer(4, 1000));
    assert_eq!(http("DELETE", &node.url(&format!("/v2/app/b/manifests/{b}")), &[], None).status, 202);

    // Inside the grace period (default 1 h) nothing goes.
    let none = gc(&node, true, json!(null));
    assert!(digests(&none, "blobs").is_empty(), "{none}");

    let policy = json!({"grace_secs": 0});
    let dry = gc(&node, true, policy.clone());
    let expected: BTreeSet<String> =
        [sha256(&layer(3, 30_000)), stray.clone(), sha256(br#"{"os":"linux","architecture":"amd64","n":7}"#)].into();
    assert_eq!(digests(&dry, "blobs"), expected, "{dry}");
    // Nothing was deleted by the dry run.
    assert_eq!(blob_status(&node, "app/d", &stray), 200);
    let real = gc(&node, false, policy.clone());
    assert_eq!(digests(&real, "blobs"), digests(&dry, "blobs"));
    assert_eq!(digests(&real, "manifests"), digests(&dry, "manifests"));
    assert_eq!(real["blob_bytes"], dry["blob_bytes"]);
    for d in &expected {
        assert_eq!(blob_status(&node, "app/b", d), 404);
        assert_eq!(blob_status(&node, "app/d", d), 404);
    }
    // What is referenced stays, including the layer b shared with c.
    assert_eq!(blob_status(&node, "app/c", &sha256(&shared)), 200);
    assert_eq!(blob_status(&node, "app/a", &sha256(&layer(2, 40_000))), 200);
    // A second run finds nothing.
    let again = gc(&node, false, policy);
    assert!(digests(&again, "blobs").is_empty());
    // The CLI prints the seed's lines.
    let out = run(Command::new(berth_bin()).args(["gc", "--dry-run", "--data-dir"]).arg(&node.dir));
    assert!(out.starts_with("Would delete 0 unreferenced blobs (0 B)"), "{out}");
}

/// Regression: right after a delete, `berth gc --dry-run` said "Would delete 0 unreferenced
/// blobs (0 B)" with no word of what the grace period held back.
#[test]
fn dry_run_reports_what_the_grace_period_holds_back() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    let (d, _) = push_image(&node, "g/app", Some("v1"), &[layer(50, 300_000)], None);
    assert_eq!(http("DELETE", &node.url(&format!("/v2/g/app/manifests/{d}")), &[], None).status, 202);
    let report = gc(&node, true, json!(null));
    assert!(digests(&report, "blobs").is_empty());
    assert_eq!(report["held_by_grace"]["blobs"], 2, "{report}");
    assert!(report["held_by_grace"]["bytes"].as_u64().unwrap() > 300_000, "{report}");
    let at = report["held_by_grace"]["next_collectable_ms"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(at > now + 3_500_000 && at < now + 3_700_000, "collectable about an hour from now: {at} vs {now}");
    let out = run(Command::new(berth_bin()).args(["gc", "--dry-run", "--data-dir"]).arg(&node.dir));
    assert!(out.contains("Held back by the grace period: 2 blobs (300."), "{out}");
    assert!(out.contains("collectable from in 59m") || out.contains("collectable from in 1h"), "{out}");
}

/// Regression: `--keep-last 1` kept `dev1` and deleted the newer `dev2`/`dev3` because tags on
/// one manifest tied on its push time. Tags are ordered by when they were set.
#[test]
fn keep_last_orders_tags_by_when_they_were_set() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    let (d, _) = push_image(&node, "k/app", Some("dev1"), &[layer(60, 1000)], None);
    let bytes = http("GET", &node.url(&format!("/v2/k/app/manifests/{d}")), &[], None).body;
    for t in ["dev2", "dev3"] {
        std::thread::sleep(Duration::from_millis(20));
        let r = http(
            "PUT",
            &node.url(&format!("/v2/k/app/manifests/{t}")),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            Some(&bytes),
        );
        assert_eq!(r.status, 201);
    }
    let policy = json!({"grace_secs": 0, "retention": [{"repositories": "k/*", "keep_last": 1}]});
    let dry = gc(&node, true, policy);
    assert_eq!(digests(&dry, "tags"), BTreeSet::from(["k/app:dev1".to_string(), "k/app:dev2".to_string()]), "{dry}");
}

/// Per-repository lines say which bytes are shared with other repositories.
#[test]
fn per_repository_lines_name_shared_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    let shared = layer(70, 200_000);
    let d = push_blob(&node, "s/one", &shared);
    let r = http("POST", &node.url(&format!("/v2/s/two/blobs/uploads/?mount={d}&from=s/one")), &[], None);
    assert_eq!(r.status, 201);
    let out = run(Command::new(berth_bin()).args(["gc", "--dry-run", "--grace", "0s", "--data-dir"]).arg(&node.dir));
    assert!(out.contains("Would delete 1 unreferenced blob (200.0 kB)"), "{out}");
    assert!(
        out.contains("s/one: 1 blob (200.0 kB), of which 1 blob (200.0 kB) shared with other repositories"),
        "{out}"
    );
}

#[test]
fn cli_dry_run_then_delete_with_per_repository_breakdown() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    for i in 0..3u8 {
        push_blob(&node, "team/web", &layer(10 + i, 1_000_000));
    }
    push_blob(&node, "team/db", &layer(20, 500_000));
    let cli = |args: &[&str]| run(Command::new(berth_bin()).arg("gc").args(args).arg("--data-dir").arg(&node.dir));
    let dry = cli(&["--dry-run", "--grace", "0s", "--verbose"]);
    assert!(dry.contains("Would delete 4 unreferenced blobs (3.5 MB)"), "{dry}");
    assert!(dry.contains("team/web: 3 blobs (3.0 MB)") && dry.contains("team/db: 1 blob (500.0 kB)"), "{dry}");
    assert!(dry.contains(&sha256(&layer(20, 500_000))), "--verbose lists digests: {dry}");
    let del = cli(&["--delete", "--grace", "0s"]);
    assert!(del.starts_with("Deleted 4 blobs, reclaimed 3.5 MB"), "{del}");
    let metrics = String::from_utf8(http("GET", &node.internal_url("/metrics"), &[], None).body).unwrap();
    assert!(metrics.contains("berth_gc_deleted_blobs_total 4"), "{metrics}");
    assert!(metrics.contains("berth_gc_reclaimed_bytes_total 3500000"), "{metrics}");
    assert!(metrics.contains(r#"berth_gc_runs_total{mode="dry_run",result="ok"} 1"#), "{metrics}");
    assert!(cli(&["--dry-run", "--grace", "0s"]).starts_with("Would delete 0 unreferenced blobs"));
}

#[test]
fn retention_untagged_and_referrers() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    let mut tags = Vec::new();
    for i in 1..=5u8 {
        let (d, _) = push_image(&node, "ret/app", Some(&format!("v{i}")), &[layer(30 + i, 10_000)], None);
        tags.push(d);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Keep the last 2, protect v1: v2 and v3 go, with their manifests and layers.
    let policy = json!({"grace_secs": 0, "retention": [{"repositories": "ret/*", "keep_last": 2, "protect": ["v1"]}]});
    let dry = gc(&node, true, policy.clone());
    assert_eq!(digests(&dry, "tags"), BTreeSet::from(["ret/app:v2".to_string(), "ret/app:v3".to_string()]));
    let real = gc(&node, false, policy);
    assert_eq!(digests(&real, "tags"), digests(&dry, "tags"));
    assert_eq!(digests(&real, "manifests"), digests(&dry, "manifests"));
    assert_eq!(digests(&real, "blobs"), digests(&dry, "blobs"));
    let list: Value = serde_json::from_slice(&http("GET", &node.url("/v2/ret/app/tags/list"), &[], None).body).unwrap();
    assert_eq!(list["tags"], json!(["v1", "v4", "v5"]));
    assert_eq!(blob_status(&node, "ret/app", &sha256(&layer(32, 10_000))), 404);
    assert_eq!(blob_status(&node, "ret/app", &sha256(&layer(35, 10_000))), 200);

    // Untagged manifests are kept by default; a referrer of a kept manifest is kept with it.
    let (untagged, _) = push_image(&node, "ret/app", None, &[layer(40, 10_000)], None);
    let subject = tags[4].clone();
    let v5 = http(
        "GET",
        &node.url("/v2/ret/app/manifests/v5"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        None,
    );
    let (sig, _) = push_image(&node, "ret/app", None, &[layer(41, 100)], Some((&subject, v5.body.len())));
    let (orphan_sig, _) = push_image(&node, "ret/app", None, &[layer(42, 100)], Some((&untagged, 300)));
    let kept = gc(&node, false, json!({"grace_secs": 0}));
    assert!(digests(&kept, "manifests").is_empty(), "{kept}");
    // With an untagged age limit: the untagged image and its referrer go; v5's signature stays.
    let gone = gc(&node, false, json!({"grace_secs": 0, "untagged_max_age_secs": 0}));
    let m = digests(&gone, "manifests");
    assert!(m.contains(&format!("ret/app@{untagged}")) && m.contains(&format!("ret/app@{orphan_sig}")), "{gone}");
    assert!(!m.contains(&format!("ret/app@{sig}")), "referrer of a tagged manifest is kept: {gone}");
    let refs: Value =
        serde_json::from_slice(&http("GET", &node.url(&format!("/v2/ret/app/referrers/{subject}")), &[], None).body)
            .unwrap();
    assert_eq!(refs["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn concurrent_pushes_during_gc_never_lose_a_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Berth::start(&tmp.path().join("data"), &[]);
    let secs: u64 = std::env::var("GC_TORTURE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let pool: Arc<Vec<Vec<u8>>> = Arc::new((0..6u8).map(|i| layer(100 + i, 20_000)).collect());
    let base = node.url("");
    let mut threads = Vec::new();
    for t in 0..4usize {
        let (stop, acked, pool, base) = (stop.clone(), acked.clone(), pool.clone(), base.clone());
        threads.push(std::thread::spawn(move || {
            let agent = ureq::agent();
            let mut i = 0usize;
            let mut retries = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let repo = format!("torture/r{}", t % 2);
                let picks = [(t + i) % pool.len(), (t * 3 + i * 7) % pool.len()];
                let config = format!(r#"{{"t":{t},"i":{i}}}"#).into_bytes();
                let push = |data: &[u8]| {
                    let d = sha256(data);
                    let r = try_http(
                        &agent,
                        "POST",
                        &format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"),
                        &[],
                        Some(data),
                    )
                    .unwrap();
                    assert_eq!(r.status, 201);
                    (d, data.len())
                };
                let cd = push(&config);
                let ls: Vec<(String, usize)> = picks.iter().map(|&p| push(&pool[p])).collect();
                let m = manifest_bytes(&cd.0, cd.1, &ls, None);
                let tag = format!("t{t}-{}", i % 5);
                let r = try_http(
                    &agent,
                    "PUT",
                    &format!("{base}/v2/{repo}/manifests/{tag}"),
                    &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                    Some(&m),
                )
                .unwrap();
                match r.status {
                    201 => acked.lock().unwrap().push((repo, tag, sha256(&m))),
                    // GC removed a layer between our upload and the manifest: a clean, retryable error.
                    400 if String::from_utf8_lossy(&r.body).contains("MANIFEST_BLOB_UNKNOWN") => retries += 1,
                    s => panic!("manifest push: {s} {}", String::from_utf8_lossy(&r.body)),
                }
            }
            retries
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0;
    let mut deleted = 0;
    while Instant::now() < deadline {
        let r = gc(&node, false, json!({"grace_secs": 0, "untagged_max_age_secs": 0}));
        deleted += r["blobs"].as_array().unwrap().len() + r["manifests"].as_array().unwrap().len();
        runs += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let retries: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "gc torture: {runs} GC runs deleted {deleted} items; {} manifests acknowledged; {retries} clean retries",
        acked.len()
    );
    assert!(runs >= 3 && acked.len() >= 20, "too little happened");
    // Every tag's manifest pulls completely (tags may have moved on; the final target must be whole).
    let mut checked = 0;
    for repo in ["torture/r0", "torture/r1"] {
        let list: Value =
            serde_json::from_slice(&http("GET", &node.url(&format!("/v2/{repo}/tags/list")), &[], None).body).unwrap();
        for tag in list["tags"].as_array().unwrap() {
            let r = http(
                "GET",
                &node.url(&format!("/v2/{repo}/manifests/{}", tag.as_str().unwrap())),
                &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
                None,
            );
            assert_eq!(r.status, 200);
            let m: Value = serde_json::from_slice(&r.body).unwrap();
            let mut ds = vec![m["config"]["digest"].as_str().unwrap().to_string()];
            ds.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
            for d in ds {
                let b = http("GET", &node.url(&format!("/v2/{repo}/blobs/{d}")), &[], None);
                assert_eq!(b.status, 200, "{repo}:{tag} lost blob {d}");
                assert_eq!(sha256(&b.body), d);
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
    // And the store is consistent: every stored manifest has its blobs.
    assert_eq!(node.terminate(), Some(0));
    let out = Command::new(berth_bin()).args(["fsck", "--data-dir"]).arg(&node.dir).output().unwrap();
    assert!(out.status.success(), "fsck after the torture: {}", String::from_utf8_lossy(&out.stdout));
    node.restart();
}

#[test]
fn kill9_mid_gc_then_rerun_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Berth::start(&tmp.path().join("data"), &[]);
    let agent = ureq::agent();
    let n = 1500u32;
    for i in 0..n {
        let data = format!("unreferenced blob {i}").into_bytes();
        let d = sha256(&data);
        let r =
            try_http(&agent, "POST", &node.url(&format!("/v2/many/blobs/blobs/uploads/?digest={d}")), &[], Some(&data))
                .unwrap();
        assert_eq!(r.status, 201);
    }
    let (url, token) = internal(&node);
    let body = serde_json::to_vec(&json!({"dry_run": false, "policy": {"grace_secs": 0}})).unwrap();
    let auth = format!("Bearer {token}");
    let r = http("POST", &format!("{url}/internal/v1/gc"), &[("Authorization", &auth)], Some(&body));
    assert_eq!(r.status, 202);
    let id = serde_json::from_slice::<Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string();
    // Kill as soon as blob deletion has started (not after a fixed sleep: a slow machine may
    // still be planning).
    wait_for("blob deletion to start", 60, || {
        let v: Value = serde_json::from_slice(
            &http("GET", &format!("{url}/internal/v1/jobs/{id}"), &[("Authorization", &auth)], None).body,
        )
        .unwrap();
        v["phase"] == "deleting blobs" && v["done"].as_u64().unwrap_or(0) > 0 || v["state"] != "running"
    });
    node.kill9();
    let out = Command::new(berth_bin()).args(["fsck", "--data-dir"]).arg(&node.dir).output().unwrap();
    assert!(out.status.success(), "consistent after a crash mid-GC: {}", String::from_utf8_lossy(&out.stdout));
    node.restart();
    let rest = gc(&node, false, json!({"grace_secs": 0}));
    let removed = rest["blobs"].as_array().unwrap().len();
    assert!(removed < n as usize, "the first run had deleted some before the kill ({removed} left)");
    let after = gc(&node, true, json!({"grace_secs": 0}));
    assert!(digests(&after, "blobs").is_empty() && after["orphan_files"].as_array().unwrap().is_empty(), "{after}");
    let left = std::fs::read_dir(node.dir.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|s| std::fs::read_dir(s.path()).unwrap().count())
        .sum::<usize>();
    assert_eq!(left, 0, "no blob files left");
}

/// Regression: `_catalog` kept repositories emptied by delete + GC.
#[test]
fn catalog_drops_repositories_emptied_by_delete_and_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    let (d, _) = push_image(&node, "gone/app", Some("v1"), &[layer(80, 5000)], None);
    push_image(&node, "kept/app", Some("v1"), &[layer(81, 5000)], None);
    assert_eq!(http("DELETE", &node.url(&format!("/v2/gone/app/manifests/{d}")), &[], None).status, 202);
    gc(&node, false, json!({"grace_secs": 0, "untagged_max_age_secs": 0}));
    let cat: Value = serde_json::from_slice(&http("GET", &node.url("/v2/_catalog"), &[], None).body).unwrap();
    assert_eq!(cat["repositories"], json!(["kept/app"]), "{cat}");
}

/// The small-blob cache never answers for a blob the index no longer links: readers hammer a
/// cached small blob while it is unlinked and garbage-collected; once GC has run every GET is
/// 404, every 200 before carried the right bytes, and a re-push serves it again.
/// Four threads GETting `url` until `stop`: any answer but the whole `data` or 404 — or a 200
/// once `gone` is set (GC finished) — is recorded in `bad`.
fn race_readers(
    url: &str,
    data: &[u8],
    stop: &Arc<AtomicBool>,
    gone: &Arc<AtomicBool>,
    bad: &Arc<Mutex<Vec<String>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            let (stop, gone, bad, url, data) = (stop.clone(), gone.clone(), bad.clone(), url.to_owned(), data.to_vec());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let after_gc = gone.load(Ordering::SeqCst);
                    let r = http("GET", &url, &[], None);
                    match r.status {
                        200 if r.body != data => bad.lock().unwrap().push("wrong bytes".to_string()),
                        200 if after_gc => bad.lock().unwrap().push("served after GC".to_string()),
                        200 | 404 => {}
                        s => bad.lock().unwrap().push(format!("status {s}")),
                    }
                }
            })
        })
        .collect()
}

#[test]
fn small_blob_cache_races_delete_and_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    let data = layer(90, 3000);
    let d = push_blob(&node, "race/app", &data);
    let url = node.url(&format!("/v2/race/app/blobs/{d}"));
    for _ in 0..3 {
        let r = http("GET", &url, &[], None);
        assert_eq!((r.status, r.body == data), (200, true));
    }
    let m = String::from_utf8(http("GET", &node.internal_url("/metrics"), &[], None).body).unwrap();
    assert!(m.lines().any(|l| l.starts_with("berth_small_blob_cache_hits_total") && !l.ends_with(" 0")), "{m}");
    let r = http("GET", &url, &[("Range", "bytes=10-19")], None);
    assert_eq!((r.status, r.body.as_slice()), (206, &data[10..20]));

    let (stop, gone, bad) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::default());
    let readers = race_readers(&url, &data, &stop, &gone, &bad);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(http("DELETE", &url, &[], None).status, 202);
    let report = gc(&node, false, json!({"grace_secs": 0}));
    assert!(digests(&report, "blobs").contains(&d), "{report}");
    gone.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
    assert_eq!(http("GET", &url, &[], None).status, 404);
    // Pushed again: served again (from the cache or the new file, the same bytes).
    push_blob(&node, "race/app", &data);
    let r = http("GET", &url, &[], None);
    assert_eq!((r.status, r.body == data), (200, true));
}

/// Blobs above the small-blob limit are served from per-core cached descriptors: readers
/// racing a delete + GC and a re-push get the right bytes or 404 (never bytes after GC), and
/// once GC removed the file no core keeps it open (its disk space is freed).
#[test]
fn open_blob_files_race_delete_gc_and_repush() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let node = Berth::start(&data_dir, &[]);
    let data = layer(91, 256 * 1024);
    let d = push_blob(&node, "race/big", &data);
    let url = node.url(&format!("/v2/race/big/blobs/{d}"));
    for _ in 0..8 {
        let r = http("GET", &url, &[], None);
        assert_eq!((r.status, r.body == data), (200, true));
    }
    let r = http("GET", &url, &[("Range", "bytes=100000-100009")], None);
    assert_eq!((r.status, r.body.as_slice()), (206, &data[100000..100010]));

    let (stop, gone, bad) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::default());
    let readers = race_readers(&url, &data, &stop, &gone, &bad);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(http("DELETE", &url, &[], None).status, 202);
    let report = gc(&node, false, json!({"grace_secs": 0}));
    assert!(digests(&report, "blobs").contains(&d), "{report}");
    gone.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    // The file is gone from disk; no core may still hold it open.
    assert!(!data_dir.join("blobs/sha256").join(&d[7..9]).join(&d[7..]).exists());
    wait_for("cached descriptors of the removed file to close", 5, || {
        deleted_blob_fds(node.pid(), &data_dir).is_empty()
    });
    gone.store(false, Ordering::SeqCst);
    // Pushed again while readers run: they see 404 or the whole new file, never a partial one.
    push_blob(&node, "race/big", &data);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
    let r = http("GET", &url, &[], None);
    assert_eq!((r.status, r.body == data), (200, true));
}
