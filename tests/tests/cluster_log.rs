//! Scale-out (#16), the change log's life: a single node with content becoming the first
//! cluster node, compaction into snapshots (new and returning nodes starting from one, a
//! snapshot taken while pushes land), group commit, node state in the log (managed accounts,
//! also changed on two nodes at once; scan verdicts and requests). Same fleet as `cluster.rs` (node processes, Postgres, moto, fault proxies).

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fleet::*;
use common::*;

#[test]
fn a_single_node_with_content_becomes_the_first_cluster_node() {
    let _serial = one_fleet();
    let Some(f) = Fleet::start(1, false, &[]) else { return };
    let b = &f.nodes[0];
    let solo_proxy = common::s3::FaultProxy::start(f.pg.port);
    let s3 = common::s3::FaultProxy::start(f._moto.port);
    let full = node_env("solo", &solo_proxy, &s3, &[], false);
    let single: Vec<(&str, &str)> =
        full.iter().filter(|(k, _)| !k.starts_with("BERTH_CLUSTER__")).map(|(k, v)| (k.as_str(), v.as_str())).collect();

    // A single node with S3, as run before scale-out: images, a multi-arch index, several
    // repositories; S3 cut off for the last pushes, so some blobs are only on its disk.
    let mut solo = Berth::start(&f.tmp.path().join("solo"), &single);
    let solo_url = base(&solo);
    let amd = push_image_at(&solo_url, "solo/app", "amd64", &[noise(80, 30_000)]).unwrap();
    let arm = push_image_at(&solo_url, "solo/app", "arm64", &[noise(81, 30_000)]).unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": manifest_size(&solo_url, "solo/app", &amd), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": manifest_size(&solo_url, "solo/app", &arm), "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let ct = ("Content-Type", "application/vnd.oci.image.index.v1+json");
    assert_eq!(http("PUT", &solo.url("/v2/solo/app/manifests/multi"), &[ct], Some(&index)).status, 201);
    s3.set_down(true);
    let offline = push_image_at(&solo_url, "solo/offline", "v1", &[noise(82, 50_000)]).unwrap();
    assert_eq!(solo.terminate(), Some(0));
    s3.set_down(false);

    // The same data directory with [cluster]: its content is published into the log before
    // it serves; the other node then has all of it.
    for (k, v) in full.iter().filter(|(k, _)| k.starts_with("BERTH_CLUSTER__")) {
        solo.set_env(k, v);
    }
    solo.restart();
    for n in [&base(b), &base(&solo)] {
        assert_eq!(pull_image_at(n, "solo/app", "amd64").unwrap(), amd, "on {n}");
        assert_eq!(pull_image_at(n, "solo/app", "arm64").unwrap(), arm, "on {n}");
        assert_eq!(pull_image_at(n, "solo/offline", "v1").unwrap(), offline, "on {n}");
        let r = http("GET", &format!("{n}/v2/solo/app/manifests/multi"), &[("Accept", ct.1)], None);
        assert_eq!((r.status, sha256(&r.body)), (200, sha256(&index)), "the index on {n}");
        let catalog = String::from_utf8(http("GET", &format!("{n}/v2/_catalog"), &[], None).body).unwrap();
        assert!(catalog.contains("solo/app") && catalog.contains("solo/offline"), "{catalog}");
    }
    let log = std::fs::read_to_string(&solo.log).unwrap();
    assert!(log.contains("published this node's content into the change log"), "{log}");
    // b's GC keeps every imported blob (the index's references were recorded, children first).
    let job = start_gc(b, 0).unwrap();
    assert_eq!(gc_job(b, &job)["state"], "succeeded");
    assert_eq!(pull_image_at(&base(b), "solo/app", "arm64").unwrap(), arm);
    // Published once: a restart does not publish again.
    solo.restart();
    assert_eq!(metric(&solo, "berth_cluster_commits_total"), 0.0);
    fsck_clean(&mut solo);

    // A second node with content of its own is refused: the log has the first one's.
    let late_dir = f.tmp.path().join("late");
    let late_env = node_env("late", &solo_proxy, &s3, &[], false);
    let late_single: Vec<(&str, &str)> = late_env
        .iter()
        .filter(|(k, _)| !k.starts_with("BERTH_CLUSTER__"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut late = Berth::start(&late_dir, &late_single);
    push_image_at(&base(&late), "late/app", "v1", &[noise(83, 1000)]).unwrap();
    assert_eq!(late.terminate(), Some(0));
    let out = Command::new(common::berth_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(&late_dir)
        .envs(late_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not in the cluster's change log") && err.contains("empty data directory"), "{err}");
    assert_eq!(http("GET", &b.url("/v2/late/app/tags/list"), &[], None).status, 404);
}

fn manifest_size(base: &str, repo: &str, digest: &str) -> usize {
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    http("GET", &format!("{base}/v2/{repo}/manifests/{digest}"), &accept, None).body.len()
}

#[test]
fn the_log_is_compacted_and_new_or_returning_nodes_start_from_its_snapshot() {
    let _serial = one_fleet();
    let extra = [
        ("BERTH_CLUSTER__TRIM_KEEP_SECS", "0"),
        ("BERTH_CLUSTER__FORGET_NODES_AFTER_SECS", "3"),
        ("BERTH_CLUSTER__COMPACT_AFTER_CHANGES", "0"),
    ];
    let Some(mut f) = Fleet::start(2, false, &extra) else { return };
    let a = base(&f.nodes[0]);

    // History worth compacting: pushes, a moved tag, a deleted image, a multi-arch index.
    let amd = push_image_at(&a, "snap/app", "amd64", &[noise(90, 5000)]).unwrap();
    let arm = push_image_at(&a, "snap/app", "arm64", &[noise(91, 5000)]).unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": manifest_size(&a, "snap/app", &amd)},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": manifest_size(&a, "snap/app", &arm)},
        ],
    }))
    .unwrap();
    let ct = ("Content-Type", "application/vnd.oci.image.index.v1+json");
    assert_eq!(http("PUT", &format!("{a}/v2/snap/app/manifests/multi"), &[ct], Some(&index)).status, 201);
    push_image_at(&a, "snap/app", "latest", &[noise(92, 5000)]).unwrap();
    let latest = push_image_at(&a, "snap/app", "latest", &[noise(93, 5000)]).unwrap();
    let gone = push_image_at(&a, "snap/gone", "v1", &[noise(94, 5000)]).unwrap();
    assert_eq!(http("DELETE", &format!("{a}/v2/snap/gone/manifests/{gone}"), &[], None).status, 202);

    // b goes away; the log moves on without it, and it is forgotten after 3 s.
    converged(&[&f.nodes[0], &f.nodes[1]]);
    f.nodes[1].kill9();
    let after = push_image_at(&a, "snap/after", "v1", &[noise(95, 5000)]).unwrap();
    std::thread::sleep(Duration::from_millis(4000));
    let r = internal_call(&f.nodes[0], "POST", "/internal/v1/cluster/compact", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let report: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(report["deleted"].as_u64().unwrap() > 10, "{report}");
    assert!(report["trimmed_upto"].as_u64().unwrap() >= report["at_seq"].as_u64().unwrap(), "{report}");
    assert_eq!(cluster_view(&f.nodes[0])["snapshot"]["at_seq"], report["at_seq"]);

    // A new node starts from the snapshot and follows the log after it.
    let (pg, s3) = (common::s3::FaultProxy::start(f.pg.port), common::s3::FaultProxy::start(f._moto.port));
    let env = node_env("c", &pg, &s3, &extra, false);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut c = Berth::start(&f.tmp.path().join("c"), &env);
    let check = |n: &str| {
        assert_eq!(pull_image_at(n, "snap/app", "amd64").unwrap(), amd, "on {n}");
        assert_eq!(pull_image_at(n, "snap/app", "latest").unwrap(), latest, "the moved tag on {n}");
        assert_eq!(pull_image_at(n, "snap/after", "v1").unwrap(), after, "on {n}");
        let r = http("GET", &format!("{n}/v2/snap/app/manifests/multi"), &[("Accept", ct.1)], None);
        assert_eq!((r.status, sha256(&r.body)), (200, sha256(&index)), "the index on {n}");
        let r = http("GET", &format!("{n}/v2/snap/gone/manifests/{gone}"), &[], None);
        assert_eq!(r.status, 404, "the deleted manifest on {n}");
    };
    check(&base(&c));
    assert!(std::fs::read_to_string(&c.log).unwrap().contains("loaded the log's snapshot"));
    let later = push_image_at(&a, "snap/later", "v1", &[noise(96, 5000)]).unwrap();
    assert_eq!(pull_image_at(&base(&c), "snap/later", "v1").unwrap(), later);

    // b comes back behind the trimmed part: it must not serve its stale view as current.
    f.nodes[1].restart();
    let b = &f.nodes[1];
    wait_for("b to find itself stranded", 20, || cluster_view(b)["stranded"] == true);
    assert_eq!(http("GET", &b.url("/readyz"), &[], None).status, 503);
    assert!(std::fs::read_to_string(&b.log).unwrap().contains("empty its data directory"));
    // Emptied, it is a new node: the snapshot, then the log.
    f.nodes[1].kill9();
    std::fs::remove_dir_all(&f.nodes[1].dir).unwrap();
    f.nodes[1].restart();
    let b = &f.nodes[1];
    assert_eq!(http("GET", &b.url("/readyz"), &[], None).status, 200);
    check(&base(b));
    assert_eq!(pull_image_at(&base(b), "snap/later", "v1").unwrap(), later);
    fsck_clean(&mut c);
}

#[test]
fn snapshots_taken_during_pushes_rebuild_the_same_registry() {
    let _serial = one_fleet();
    let extra = [("BERTH_CLUSTER__TRIM_KEEP_SECS", "0"), ("BERTH_CLUSTER__COMPACT_AFTER_CHANGES", "0")];
    let Some(f) = Fleet::start(2, false, &extra) else { return };
    let (a, b) = (base(&f.nodes[0]), &f.nodes[1]);

    // Pushes, tag moves and deletions on a while b (whose tail applies them meanwhile) takes
    // snapshots of its index: each snapshot is read while writes land.
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (stop, a) = (stop.clone(), a.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let repo = format!("fuzzy/r{}", i % 4);
                let d = push_image_at(&a, &repo, &format!("t{}", i % 7), &[noise(5000 + i, 1500)]).unwrap();
                if i.is_multiple_of(5) {
                    assert_eq!(http("DELETE", &format!("{a}/v2/{repo}/manifests/{d}"), &[], None).status, 202);
                }
                if i.is_multiple_of(9) {
                    let _ = http("DELETE", &format!("{a}/v2/{repo}/manifests/t{}", (i + 3) % 7), &[], None);
                }
            }
            i
        })
    };
    let mut snapshots = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let r = internal_call(b, "POST", "/internal/v1/cluster/compact", None);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        snapshots += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, Ordering::Relaxed);
    let pushes = pusher.join().unwrap();
    eprintln!("{pushes} pushes during {snapshots} snapshots");

    // A new node from the last snapshot plus the log after it has what a has.
    let (pg, s3) = (common::s3::FaultProxy::start(f.pg.port), common::s3::FaultProxy::start(f._moto.port));
    let env = node_env("c", &pg, &s3, &extra, false);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let c = Berth::start(&f.tmp.path().join("c"), &env);
    converged(&[&f.nodes[0], &c]);
    let view = |n: &str| -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let catalog: serde_json::Value =
            serde_json::from_slice(&http("GET", &format!("{n}/v2/_catalog?n=1000"), &[], None).body).unwrap();
        for repo in catalog["repositories"].as_array().unwrap() {
            let repo = repo.as_str().unwrap();
            let tags: serde_json::Value =
                serde_json::from_slice(&http("GET", &format!("{n}/v2/{repo}/tags/list"), &[], None).body).unwrap();
            for tag in tags["tags"].as_array().into_iter().flatten() {
                let tag = tag.as_str().unwrap();
                let r = http("HEAD", &format!("{n}/v2/{repo}/manifests/{tag}"), &[], None);
                out.push((repo.into(), tag.into(), r.header("docker-content-digest").unwrap_or("?").to_string()));
            }
        }
        out
    };
    let (on_a, on_c) = (view(&a), view(&base(&c)));
    assert!(on_a.len() >= 10, "{on_a:?}");
    assert_eq!(on_a, on_c, "c, built from a snapshot taken during pushes, differs from a");
    for (repo, tag, digest) in on_a.iter().take(12) {
        assert_eq!(&pull_image_at(&base(&c), repo, tag).unwrap(), digest);
    }
}

#[test]
fn commits_queued_on_a_node_share_one_transaction() {
    let _serial = one_fleet();
    let Some(f) = Fleet::start(2, false, &[]) else { return };
    let (a, b) = (base(&f.nodes[0]), base(&f.nodes[1]));
    push_blob_at(&a, "group/warm", b"warm").unwrap();
    let tx0 = metric(&f.nodes[0], "berth_cluster_commit_transactions_total");
    // The append lock held from psql for 2 s: a's commits queue meanwhile, then go together.
    let mut holder = hold_append_lock(&f.pg);
    let pushes: Vec<_> = (0..12u64)
        .map(|i| {
            let a = a.clone();
            std::thread::spawn(move || push_blob_at(&a, "group/app", &noise(7000 + i, 700)))
        })
        .collect();
    let digests: Vec<String> = pushes.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
    holder.wait().unwrap();
    let transactions = metric(&f.nodes[0], "berth_cluster_commit_transactions_total") - tx0;
    assert!(transactions < 12.0, "12 commits took {transactions} transactions: none were grouped");
    // Each acknowledged blob is in the log (every node has it) with its own sequence.
    for d in &digests {
        let r = http("HEAD", &format!("{b}/v2/group/app/blobs/{d}"), &[], None);
        assert_eq!(r.status, 200, "{d} on b");
    }
    let feed = internal_call(&f.nodes[1], "GET", "/internal/v1/changes?from=1&limit=1000", None);
    let text = String::from_utf8_lossy(&feed.body);
    for d in &digests {
        assert!(text.contains(d.as_str()), "{d} missing from b's change feed");
    }
}

#[test]
fn account_changes_made_on_two_nodes_at_once_both_stick() {
    let _serial = one_fleet();
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("root:{}\n", bcrypt_hash("rootpw"))).unwrap();
    let extra = [("BERTH_AUTH__HTPASSWD", htpasswd.to_str().unwrap())];
    let Some(f) = Fleet::start(2, false, &extra) else { return };
    let put_user = |n: &Berth, name: &str| {
        let body = format!(r#"{{"password":"{name}-pw-123456"}}"#);
        internal_call(n, "PUT", &format!("/internal/v1/users/{name}"), Some(body.as_bytes())).status
    };
    let ping = |n: &Berth, user: &str| {
        let pw = format!("{user}-pw-123456");
        http("GET", &n.url("/v2/"), &[("Authorization", &basic(user, &pw))], None).status
    };
    // Both nodes read the accounts before either commits (the append lock is held), so each
    // change is made on a view without the other: the second commit must not undo the first.
    for round in 0..2 {
        let mut holder = hold_append_lock(&f.pg);
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        let statuses = std::thread::scope(|s| {
            let h1 = s.spawn(|| put_user(&f.nodes[0], &x));
            let h2 = s.spawn(|| put_user(&f.nodes[1], &y));
            (h1.join().unwrap(), h2.join().unwrap())
        });
        holder.wait().unwrap();
        assert!(matches!(statuses, (200..=204, 200..=204)), "{statuses:?}");
        // Logins see both at once on each node once the log reached it (a node compiling an
        // older state after a newer one left a listed user unable to log in, then 429).
        for n in &f.nodes {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !(ping(n, &x) == 200 && ping(n, &y) == 200) {
                let statuses = (ping(n, &x), ping(n, &y));
                assert!(Instant::now() < deadline, "round {round}: logins of {x}, {y} on {}: {statuses:?}", n.addr);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn accounts_scan_verdicts_and_scan_requests_reach_every_node() {
    let _serial = one_fleet();
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("root:{}\n", bcrypt_hash("rootpw"))).unwrap();
    let extra = [
        ("BERTH_AUTH__HTPASSWD", htpasswd.to_str().unwrap()),
        ("BERTH_SCAN__ENABLED", "true"),
        ("BERTH_SCAN__POLICY__BLOCK_SEVERITY", "critical"),
    ];
    let Some(f) = Fleet::start(2, false, &extra) else { return };
    let (a, b) = (&f.nodes[0], &f.nodes[1]);
    let internal = internal_call;
    let ping = |n: &Berth, user: &str, pw: &str| {
        http("GET", &n.url("/v2/"), &[("Authorization", &basic(user, pw))], None).status
    };

    // A user created through node a's internal API (as the sidecar does) logs in on b once
    // the change reaches it (logins read the local view: the replication lag, ~1 ms), and at
    // once on a.
    assert_eq!(ping(b, "dev", "devpw-123456"), 401);
    let r = internal(a, "PUT", "/internal/v1/users/dev", Some(br#"{"password":"devpw-123456"}"#));
    assert!(r.status == 204 || r.status == 201, "{} {}", r.status, String::from_utf8_lossy(&r.body));
    assert_eq!(ping(a, "dev", "devpw-123456"), 200);
    wait_for("the user on b", 10, || ping(b, "dev", "devpw-123456") == 200);
    // Deleted through b: refused on b at once, on a after the lag.
    assert_eq!(internal(b, "DELETE", "/internal/v1/users/dev", None).status, 204);
    assert_eq!(ping(b, "dev", "devpw-123456"), 401);
    wait_for("the deletion on a", 10, || ping(a, "dev", "devpw-123456") == 401);

    // A scan verdict stored through a blocks the pull on b (the pull policy is per node).
    let root = basic("root", "rootpw");
    let auth = [("Authorization", root.as_str())];
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = noise(3, 1000);
    for blob in [&config, &layer] {
        let d = sha256(blob);
        let r = http("POST", &a.url(&format!("/v2/scan/app/blobs/uploads/?digest={d}")), &auth, Some(blob));
        assert_eq!(r.status, 201);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let ct = ("Content-Type", "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(http("PUT", &a.url("/v2/scan/app/manifests/v1"), &[auth[0], ct], Some(&manifest)).status, 201);
    let md = sha256(&manifest);
    assert_eq!(http("GET", &b.url("/v2/scan/app/manifests/v1"), &auth, None).status, 200);
    let record = serde_json::json!({
        "status": "completed", "scanned_at_ms": 1, "db_version": "test", "scanner": "test",
        "counts": {"critical": 1, "high": 0, "medium": 0, "low": 0, "unknown": 0},
        "findings": [{"cve": "CVE-2026-0001", "severity": "critical", "package": "libfoo", "installed_version": "1.0"}],
    });
    let r = internal(a, "PUT", &format!("/internal/v1/scans/{md}"), Some(&serde_json::to_vec(&record).unwrap()));
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    // At once on both: a pull by tag first sees every acknowledged change (consistent reads).
    for n in [a, b] {
        let r = http("GET", &n.url("/v2/scan/app/manifests/v1"), &auth, None);
        assert_eq!(r.status, 403, "the verdict on {}: {}", n.addr, String::from_utf8_lossy(&r.body));
    }
    // A rescan asked of b shows in a's change feed (the sidecar may follow either).
    assert_eq!(http("POST", &b.url("/v2/scan/app/manifests/v1/scan"), &auth, None).status, 202);
    wait_for("the scan request in a's feed", 10, || {
        let feed = internal(a, "GET", "/internal/v1/changes?from=1&limit=1000", None);
        String::from_utf8_lossy(&feed.body).contains("scan_requested")
    });

    // Accounts and verdicts travel in the log's snapshot: a node started after a compaction
    // (from the snapshot) knows the user and blocks the pull.
    let r = internal(a, "PUT", "/internal/v1/users/ops", Some(br#"{"password":"opspw-123456"}"#));
    assert!(r.status == 204 || r.status == 201);
    assert_eq!(internal(a, "POST", "/internal/v1/cluster/compact", None).status, 200);
    let (pg, s3) = (common::s3::FaultProxy::start(f.pg.port), common::s3::FaultProxy::start(f._moto.port));
    let env = node_env("c", &pg, &s3, &extra, false);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let c = Berth::start(&f.tmp.path().join("c"), &env);
    assert!(std::fs::read_to_string(&c.log).unwrap().contains("loaded the log's snapshot"));
    assert_eq!(ping(&c, "ops", "opspw-123456"), 200);
    assert_eq!(http("GET", &c.url("/v2/scan/app/manifests/v1"), &auth, None).status, 403);
}
