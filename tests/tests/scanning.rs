//! Vulnerability scanning end to end (seed 004, ticket 3): a real node, a real Postgres, the
//! admin sidecar driving the official Trivy client against a real Trivy server with a test
//! vulnerability database, real registry clients (docker, skopeo) for the pull policy.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg::{Admin, Postgres};
use common::trivy::{push_fixture, push_index, TrivyServer, TOKEN};
use common::*;
use serde_json::{json, Value};

const WEBHOOK_SECRET: &str = "hook-secret";

struct Env {
    admin: Admin,
    node: Berth,
    trivy: TrivyServer,
    _pg: Postgres,
    tmp: tempfile::TempDir,
}

/// Node (scanning on, policy from `policy_toml`), Postgres, Trivy server, sidecar.
fn setup(policy_toml: &str, node_env: &[(&str, &str)], admin_env: &[(&str, &str)]) -> Option<Env> {
    let tmp = tempfile::tempdir().unwrap();
    let trivy = TrivyServer::start(&tmp.path().join("trivy"), 1)?;
    let pg = Postgres::start(tmp.path())?;
    let config = tmp.path().join("berth.toml");
    std::fs::write(&config, format!("[scan]\nenabled = true\n{policy_toml}")).unwrap();
    let mut env: Vec<(&str, &str)> = vec![("BERTH_CONFIG", config.to_str().unwrap())];
    env.extend_from_slice(node_env);
    let node = Berth::start(&tmp.path().join("data"), &env);
    let work = tmp.path().join("scan-work");
    let url = trivy.url();
    let mut aenv: Vec<(&str, &str)> = vec![
        ("BERTH_ADMIN_SCAN__SERVER", url.as_str()),
        ("BERTH_ADMIN_SCAN__TOKEN", TOKEN),
        ("BERTH_ADMIN_SCAN__WORK_DIR", work.to_str().unwrap()),
        ("BERTH_ADMIN_SCAN__DB_CHECK_INTERVAL_SECS", "1"),
        ("BERTH_ADMIN_SCAN__LEASE_SECS", "4"),
    ];
    aenv.extend_from_slice(admin_env);
    let admin = Admin::start(&pg, &node.dir, tmp.path().join("admin.log"), &aenv);
    Some(Env { admin, node, trivy, _pg: pg, tmp })
}

fn registry(node: &Berth) -> String {
    format!("http://{}", node.addr)
}

/// The node's internal listener and token (the scanner's way in, exempt from the policy).
fn internal(node: &Berth) -> (String, String) {
    let addr = std::fs::read_to_string(node.dir.join("internal.addr")).unwrap().trim().to_string();
    let token = std::fs::read_to_string(node.dir.join("internal.token")).unwrap().trim().to_string();
    (addr, token)
}

fn scan_of(node: &Berth, repo: &str, reference: &str) -> Value {
    let r = http("GET", &node.url(&format!("/v2/{repo}/manifests/{reference}/scan")), &[], None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

fn wait_scanned(node: &Berth, repo: &str, reference: &str, status: &str) -> Value {
    let mut v = Value::Null;
    wait_for(&format!("scan of {repo}:{reference} to be {status}"), 120, || {
        v = scan_of(node, repo, reference);
        v["status"] == status
    });
    v
}

type Key = (String, String, String, Option<String>, String);

fn keys_of_report(report: &Value) -> BTreeSet<Key> {
    let mut out = BTreeSet::new();
    for r in report["Results"].as_array().into_iter().flatten() {
        for v in r["Vulnerabilities"].as_array().into_iter().flatten() {
            out.insert((
                v["VulnerabilityID"].as_str().unwrap().to_string(),
                v["PkgName"].as_str().unwrap().to_string(),
                v["InstalledVersion"].as_str().unwrap().to_string(),
                v["FixedVersion"].as_str().filter(|s| !s.is_empty()).map(str::to_owned),
                v["Severity"].as_str().unwrap().to_lowercase(),
            ));
        }
    }
    out
}

fn keys_of_scan(scan: &Value) -> BTreeSet<Key> {
    scan["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["cve"].as_str().unwrap().to_string(),
                d["package"].as_str().unwrap().to_string(),
                d["installed_version"].as_str().unwrap().to_string(),
                d["fixed_version"].as_str().map(str::to_owned),
                d["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Blob GETs the node answered (both listeners), from its metrics.
fn blob_gets(node: &Berth) -> u64 {
    let text = String::from_utf8(http("GET", &node.internal_url("/metrics"), &[], None).body).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("berth_http_requests_total{")
                && l.contains("endpoint=\"blob\"")
                && l.contains("method=\"GET\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Requests a webhook receiver got: (lower-case headers, body).
type Received = Arc<Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

/// A webhook receiver on loopback: records (headers, body) of every POST, answers 200.
fn webhook_receiver() -> (String, Received) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                let t = line.trim_end();
                if t.is_empty() {
                    break;
                }
                if let Some((k, v)) = t.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let len: usize =
                headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse().unwrap()).unwrap_or(0);
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            g.lock().unwrap().push((headers, body));
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    // HMAC-SHA256 by its definition (RFC 2104), independent of the sidecar's implementation.
    use sha2::{Digest as _, Sha256};
    let mut key = secret.as_bytes().to_vec();
    if key.len() > 64 {
        key = Sha256::digest(&key).to_vec();
    }
    key.resize(64, 0);
    let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([ipad.as_slice(), body].concat());
    hex::encode(Sha256::digest([opad.as_slice(), inner.as_slice()].concat()))
}

/// Scan on push for OS (Debian, Alpine) and language (pip, npm) packages; Berth's findings
/// equal `trivy image --server` run directly; the API shapes of the seed; the policy blocks
/// the critical image's manifest (not its blobs); artifacts are `unsupported`; report and SBOM
/// are referrers; a multi-arch index rolls up; the webhook arrives signed; the admin API
/// answers "which images have CVE-X".
#[test]
fn scan_on_push_matches_trivy_and_feeds_policy_api_referrers_and_webhooks() {
    let (hook, received) = webhook_receiver();
    let hooks = format!(r#"[{{url="{hook}",secret="{WEBHOOK_SECRET}"}}]"#);
    let Some(e) = setup("", &[], &[("BERTH_ADMIN_SCAN__WEBHOOKS", hooks.as_str())]) else { return };
    let reg = registry(&e.node);
    let mut pushed = Vec::new();
    for kind in ["debian", "alpine", "python", "npm"] {
        pushed.push((kind, push_fixture(&reg, &format!("fx/{kind}"), "v1", kind, None)));
    }
    let (artifact, _) = push_fixture(&reg, "fx/chart", "1.0", "artifact", None);
    for (kind, _) in &pushed {
        let scan = wait_scanned(&e.node, &format!("fx/{kind}"), "v1", "completed");
        // The oracle: the same server and DB, Trivy run directly against the registry (through
        // the internal listener: the policy may block the public one already).
        let (addr, token) = internal(&e.node);
        let direct = e.trivy.scan_directly(&format!("{addr}/fx/{kind}:v1"), &["--registry-token", &token]);
        let want = keys_of_report(&direct);
        assert!(!want.is_empty(), "{kind}: the fixture must have findings");
        assert_eq!(keys_of_scan(&scan), want, "{kind}");
        assert!(scan["scanned_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            scan["vulnerabilities"]["critical"].as_u64().unwrap()
                + scan["vulnerabilities"]["high"].as_u64().unwrap()
                + scan["vulnerabilities"]["medium"].as_u64().unwrap()
                + scan["vulnerabilities"]["low"].as_u64().unwrap()
                + scan["vulnerabilities"]["unknown"].as_u64().unwrap(),
            want.len() as u64
        );
    }
    let deb = scan_of(&e.node, "fx/debian", "v1");
    assert_eq!(deb["vulnerabilities"], json!({"critical": 1, "high": 0, "medium": 0, "low": 1, "unknown": 0}));
    let openssl = deb["details"].as_array().unwrap().iter().find(|d| d["cve"] == "CVE-2099-0001").unwrap();
    assert_eq!(openssl["package"], "openssl");
    assert_eq!(openssl["installed_version"], "3.0.11-1~deb12u2");
    assert_eq!(openssl["fixed_version"], "3.0.99-1~deb12u1");
    assert_eq!(openssl["cvss"], 9.8);
    assert!(openssl["description"].as_str().unwrap().contains("openssl buffer overflow"));
    assert!(openssl["layer_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(deb["blocked"], true);
    let py = scan_of(&e.node, "fx/python", "v1");
    assert_eq!(py["details"][0]["pkg_type"], "library");
    assert_eq!(py["details"][0]["ecosystem"], "python-pkg");

    // Artifacts that are not images are `unsupported`, not failed.
    wait_scanned(&e.node, "fx/chart", &artifact, "unsupported");

    // Policy (default: block critical): the manifest is refused with the threshold and
    // counts; its blobs stay pullable; an image without critical findings pulls.
    let r = http("GET", &e.node.url("/v2/fx/debian/manifests/v1"), &[], None);
    assert_eq!(r.status, 403);
    let err: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(err["errors"][0]["code"], "DENIED");
    let msg = err["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("1 critical") && msg.contains("threshold (critical)"), "{msg}");
    assert_eq!(http("HEAD", &e.node.url("/v2/fx/debian/manifests/v1"), &[], None).status, 403);
    let (deb_digest, _) = pushed[0].1.clone();
    let (addr, token) = internal(&e.node);
    let bearer = format!("Bearer {token}");
    let m: Value = serde_json::from_slice(
        &http(
            "GET",
            &format!("http://{addr}/v2/fx/debian/manifests/{deb_digest}"),
            &[("Authorization", &bearer)],
            None,
        )
        .body,
    )
    .unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(http("GET", &e.node.url(&format!("/v2/fx/debian/blobs/{layer}")), &[], None).status, 200);
    assert_eq!(http("GET", &e.node.url("/v2/fx/alpine/manifests/v1"), &[], None).status, 200);

    // Summary.
    let s: Value =
        serde_json::from_slice(&http("GET", &e.node.url("/v2/fx/debian/scan/summary"), &[], None).body).unwrap();
    assert_eq!(s["latest_tag"], "v1");
    assert_eq!(s["total_vulnerabilities"], 2);
    assert_eq!(s["critical_count"], 1);
    assert!(s["last_scanned"].as_str().is_some());

    // Report and SBOM are referrers of the image.
    let refs: Value = serde_json::from_slice(
        &http("GET", &e.node.url(&format!("/v2/fx/debian/referrers/{deb_digest}")), &[], None).body,
    )
    .unwrap();
    let types: BTreeSet<&str> =
        refs["manifests"].as_array().unwrap().iter().filter_map(|m| m["artifactType"].as_str()).collect();
    assert_eq!(
        types,
        BTreeSet::from(["application/vnd.cyclonedx+json", "application/vnd.aquasec.trivy.report.v1+json"])
    );

    // A multi-arch index: each platform scanned, rolled up; blocked because one platform is.
    let children = vec![
        push_fixture(&reg, "fx/multi", "amd64", "debian", None),
        push_fixture(&reg, "fx/multi", "arm64", "alpine", None),
    ];
    assert_eq!(children[0], pushed[0].1, "same bytes, same digest");
    push_index(&reg, "fx/multi", "v1", &children);
    let multi = wait_scanned(&e.node, "fx/multi", "v1", "completed");
    let cves: BTreeSet<&str> =
        multi["details"].as_array().unwrap().iter().map(|d| d["cve"].as_str().unwrap()).collect();
    assert_eq!(cves, BTreeSet::from(["CVE-2099-0001", "CVE-2099-0002", "CVE-2099-0005"]));
    assert_eq!(http("GET", &e.node.url("/v2/fx/multi/manifests/v1"), &[], None).status, 403);

    // "Which images are affected by CVE-2099-0001?"
    let (s, v) = e.admin.get("/api/v1/vulnerabilities/CVE-2099-0001");
    assert_eq!(s, 200);
    let repos: BTreeSet<&str> = v["repositories"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(repos.contains("fx/debian") && repos.contains("fx/multi"), "{v}");
    let (_, list) = e.admin.get("/api/v1/scans?severity=critical");
    assert!(list["scans"].as_array().unwrap().iter().all(|s| s["vulnerabilities"]["critical"].as_i64().unwrap() > 0));
    let (_, one) = e.admin.get(&format!("/api/v1/scans/{deb_digest}"));
    assert_eq!(one["findings"].as_array().unwrap().len(), 2);

    // The webhook: one event per image with findings, signed over the exact body.
    wait_for("webhooks", 60, || received.lock().unwrap().len() >= 4);
    for (headers, body) in received.lock().unwrap().iter() {
        let sig = headers.iter().find(|(k, _)| k == "x-berth-signature-256").map(|(_, v)| v.clone()).expect("signed");
        assert_eq!(sig, format!("sha256={}", hmac_hex(WEBHOOK_SECRET, body)));
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["event"], "vulnerabilities.found");
        assert!(!v["new_findings"].as_array().unwrap().is_empty());
    }
    let (_, d) = e.admin.get("/api/v1/webhooks/deliveries");
    assert!(d["deliveries"].as_array().unwrap().iter().any(|x| x["state"] == "delivered"));
}

/// After a vulnerability-DB update every image is rescanned from its stored SBOM: no layer is
/// read from the node again. An image already scanned with the current DB is skipped. A layer
/// shared by two images is analysed (read) once.
#[test]
fn db_update_rescans_from_sboms_without_reading_layers() {
    let Some(mut e) = setup("", &[], &[]) else { return };
    let reg = registry(&e.node);
    push_fixture(&reg, "re/a", "v1", "shared-a", None);
    wait_scanned(&e.node, "re/a", "v1", "completed");
    let after_first = blob_gets(&e.node);
    assert!(after_first >= 4, "the first scan reads config and layers: {after_first}");
    push_fixture(&reg, "re/b", "v1", "shared-b", None);
    wait_scanned(&e.node, "re/b", "v1", "completed");
    let after_second = blob_gets(&e.node);
    // b shares two of its three layers with a: only its own layer and config are read.
    assert!(after_second - after_first <= 2, "shared layers were read again: {after_first} -> {after_second}");
    // The same image pushed to another repository: already scanned with this DB, skipped.
    let (d, _) = push_fixture(&reg, "re/c", "v1", "shared-a", None);
    wait_scanned(&e.node, "re/c", &d, "completed");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(blob_gets(&e.node), after_second, "a digest scanned with the current DB was scanned again");

    // The DB changes: a new advisory for zlib.
    e.trivy.write_db(2);
    e.trivy.restart();
    for repo in ["re/a", "re/b"] {
        let mut v = Value::Null;
        wait_for("rescan with the new DB", 120, || {
            v = scan_of(&e.node, repo, "v1");
            v["details"].as_array().is_some_and(|d| d.iter().any(|x| x["cve"] == "CVE-2099-0011"))
        });
        assert_eq!(v["db_version"], "2026-11-12T00:00:00Z");
    }
    assert_eq!(blob_gets(&e.node), after_second, "the rescan read layers from the node");
    // Rescan-all through the admin API: runs although every result is current, from SBOMs.
    let before = scan_of(&e.node, "re/a", "v1")["scanned_at"].clone();
    std::thread::sleep(Duration::from_millis(1100));
    let r = http(
        "POST",
        &e.admin.url("/api/v1/scans/rescan"),
        &[("Authorization", "Bearer admin-secret-0123456789abcdef")],
        None,
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert!(serde_json::from_slice::<Value>(&r.body).unwrap()["queued"].as_u64().unwrap() >= 2);
    wait_for("rescan-all", 120, || scan_of(&e.node, "re/a", "v1")["scanned_at"] != before);
    assert_eq!(scan_of(&e.node, "re/a", "v1")["db_version"], "2026-11-12T00:00:00Z", "the DB version is kept");
    assert_eq!(blob_gets(&e.node), after_second, "rescan-all read layers from the node");
    let m = ureq::get(&e.admin.url("/metrics")).call().unwrap().into_string().unwrap();
    assert!(m.lines().any(|l| l.starts_with("berth_admin_scan_sbom_rescans_total") && !l.ends_with(" 0")), "{m}");
    let _ = &e.tmp;
}

/// Trivy down while jobs queue: nothing is lost, they complete when it returns. The sidecar
/// killed mid-scan: the job is picked up again and finishes.
#[test]
fn trivy_outage_and_sidecar_kill9_lose_no_scan() {
    // A client that takes a while, so the kill lands mid-scan.
    let slow = tempfile::tempdir().unwrap();
    let wrapper = slow.path().join("slow-trivy");
    let real = String::from_utf8(Command::new("sh").args(["-c", "command -v trivy"]).output().unwrap().stdout).unwrap();
    std::fs::write(&wrapper, format!("#!/bin/sh\nsleep 2\nexec {} \"$@\"\n", real.trim())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let Some(mut e) = setup("", &[], &[("BERTH_ADMIN_SCAN__TRIVY", wrapper.to_str().unwrap())]) else { return };
    let reg = registry(&e.node);
    e.trivy.stop();
    push_fixture(&reg, "out/a", "v1", "debian", None);
    push_fixture(&reg, "out/b", "v1", "alpine", None);
    std::thread::sleep(Duration::from_secs(3));
    for repo in ["out/a", "out/b"] {
        let v = scan_of(&e.node, repo, "v1");
        assert_ne!(v["status"], "completed");
        assert_ne!(v["status"], "failed", "Trivy being down must not fail scans: {v}");
    }
    e.trivy.restart();
    wait_scanned(&e.node, "out/a", "v1", "completed");
    wait_scanned(&e.node, "out/b", "v1", "completed");

    // kill -9 mid-scan.
    push_fixture(&reg, "out/c", "v1", "python", None);
    wait_for("the scan to start", 60, || scan_of(&e.node, "out/c", "v1")["status"] == "running");
    e.admin.kill9();
    std::thread::sleep(Duration::from_millis(500));
    e.admin.restart();
    wait_scanned(&e.node, "out/c", "v1", "completed");
}

/// A scan that cannot succeed ends `failed` after its attempts (not stuck, not `completed`),
/// announces `scan.failed`, and counts as unscanned for `block_unscanned`.
#[test]
fn failed_scans_are_recorded_announced_and_unscanned_for_the_policy() {
    let (hook, received) = webhook_receiver();
    let hooks = format!(r#"[{{url="{hook}",events=["scan.failed"]}}]"#);
    let policy = "[scan.policy]\nblock_unscanned = true\n";
    let Some(e) =
        setup(policy, &[], &[("BERTH_ADMIN_SCAN__WEBHOOKS", hooks.as_str()), ("BERTH_ADMIN_SCAN__MAX_ATTEMPTS", "2")])
    else {
        return;
    };
    push_fixture(&registry(&e.node), "bad/app", "v1", "broken", None);
    let v = wait_scanned(&e.node, "bad/app", "v1", "failed");
    assert!(v["error"].as_str().is_some_and(|m| m.contains("trivy")), "{v}");
    let r = http("GET", &e.node.url("/v2/bad/app/manifests/v1"), &[], None);
    assert_eq!(r.status, 403, "a failed scan is not a pass under block_unscanned");
    wait_for("scan.failed webhook", 60, || !received.lock().unwrap().is_empty());
    let (headers, body) = received.lock().unwrap()[0].clone();
    assert!(headers.iter().any(|(k, v)| k == "x-berth-event" && v == "scan.failed"));
    assert!(!headers.iter().any(|(k, _)| k == "x-berth-signature-256"), "no secret, no signature");
    let ev: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((ev["event"].as_str(), ev["attempts"].as_i64()), (Some("scan.failed"), Some(2)));
}

fn policy_env() -> String {
    r#"
[scan.policy]
block_severity = "critical"
[[scan.policy.repositories]]
repositories = "strict/*"
block_severity = "high"
block_unscanned = true
[[scan.policy.allowlist]]
cve = "CVE-2099-0001"
repositories = "accepted/*"
reason = "openssl is not reachable in this image"
[[scan.policy.allowlist]]
cve = "CVE-2099-0001"
repositories = "expired/*"
reason = "was accepted until 2020"
expires = "2020-01-01"
"#
    .to_string()
}

/// The policy seen through real clients: per-repository threshold, allowlist, expired
/// allowlist entry, and manual (re)scan through the registry API, with skopeo.
#[test]
fn policy_overrides_and_allowlist_with_skopeo() {
    if !have("skopeo") {
        return;
    }
    let Some(e) = setup(&policy_env(), &[], &[]) else { return };
    let reg = registry(&e.node);
    for (repo, kind) in
        [("accepted/app", "debian"), ("expired/app", "debian"), ("strict/app", "alpine"), ("plain/app", "alpine")]
    {
        push_fixture(&reg, repo, "v1", kind, None);
        wait_scanned(&e.node, repo, "v1", "completed");
    }
    let copy = |repo: &str| {
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/{repo}:v1", e.node.addr))
            .arg(format!("oci:{}:v1", e.tmp.path().join(repo.replace('/', "-")).display()))
            .output()
            .unwrap()
    };
    assert!(copy("accepted/app").status.success(), "allowlisted");
    let out = copy("expired/app");
    assert!(!out.status.success(), "expired allowlist entry blocks");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("blocked by the vulnerability policy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!copy("strict/app").status.success(), "high blocks in strict/*");
    assert!(copy("plain/app").status.success(), "high is allowed elsewhere");
    // Manual scan through the registry API.
    let r = http("POST", &e.node.url("/v2/plain/app/manifests/v1/scan"), &[], None);
    assert_eq!(r.status, 202);
    // Unscanned images in strict/* are blocked until their scan completes.
    let mut trivy = e.trivy;
    trivy.stop();
    push_fixture(&reg, "strict/new", "v1", "python", None);
    std::thread::sleep(Duration::from_secs(1));
    let r = http("GET", &e.node.url("/v2/strict/new/manifests/v1"), &[], None);
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("no completed scan"));
    // Scanning off: the endpoints say so (not "no such endpoint").
    let off = Berth::start(&e.tmp.path().join("off"), &[]);
    let r = http("GET", &off.url("/v2/x/manifests/v1/scan"), &[], None);
    assert_eq!(r.status, 405);
    assert!(String::from_utf8_lossy(&r.body).contains("scanning is not enabled"));
}

/// Seed 004 ticket 3's demo script with docker and Basic auth: push triggers a scan, curl
/// shows it, the summary, and `docker pull` of the vulnerable image fails with the policy's
/// message.
#[test]
fn seed_demo_script_with_docker() {
    if !(have("dockerd") && have("docker") && have("curl")) {
        return;
    }
    let tmp0 = tempfile::tempdir().unwrap();
    let hash = run(Command::new(berth_bin()).args(["hash-password", "--cost", "4"]).env("BERTH_PASSWORD", "secret"));
    let htpasswd = tmp0.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("admin:{}\n", hash.trim())).unwrap();
    let Some(e) = setup("", &[("BERTH_AUTH__HTPASSWD", htpasswd.to_str().unwrap())], &[]) else { return };
    let reg = e.node.addr.clone();
    let d = Dockerd::start(&tmp0.path().join("docker"), &reg);
    d.ok(&["login", &reg, "-u", "admin", "-p", "secret"]);
    // Two images from root filesystems: one with a vulnerable openssl, one with only a
    // medium-severity Python package.
    let image = |name: &str, files: &[(&str, &[u8])]| {
        let root = tmp0.path().join(format!("rootfs-{name}"));
        for (p, data) in files {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, data).unwrap();
        }
        let tar = tmp0.path().join(format!("{name}.tar"));
        run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&root).arg("."));
        d.ok(&["import", tar.to_str().unwrap(), &format!("{reg}/myproject/{name}:v1")]);
    };
    let dpkg = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("trivy/dpkg-status")).unwrap();
    image(
        "vulnerable",
        &[
            ("etc/os-release", b"NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\n"),
            ("etc/debian_version", b"12.7\n"),
            ("var/lib/dpkg/status", dpkg.as_bytes()),
        ],
    );
    image(
        "app",
        &[(
            "usr/lib/python3/site-packages/requests-2.31.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\n",
        )],
    );
    for name in ["vulnerable", "app"] {
        d.ok(&["push", &format!("{reg}/myproject/{name}:v1")]);
    }
    let curl = |path: &str| -> Value {
        serde_json::from_str(&run(Command::new("curl").args(["-s", "-u", "admin:secret"]).arg(e.node.url(path))))
            .unwrap()
    };
    wait_for("scans", 120, || {
        curl("/v2/myproject/app/manifests/v1/scan")["status"] == "completed"
            && curl("/v2/myproject/vulnerable/manifests/v1/scan")["status"] == "completed"
    });
    let app = curl("/v2/myproject/app/manifests/v1/scan");
    assert_eq!(app["vulnerabilities"]["medium"], 1);
    assert_eq!(app["details"][0]["cve"], "CVE-2099-0003");
    let summary = curl("/v2/myproject/vulnerable/scan/summary");
    assert_eq!(summary["latest_tag"], "v1");
    assert_eq!(summary["critical_count"], 1);
    d.ok(&["rmi", &format!("{reg}/myproject/vulnerable:v1"), &format!("{reg}/myproject/app:v1")]);
    let out = d.docker(&["pull", &format!("{reg}/myproject/vulnerable:v1")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("blocked by the vulnerability policy") && err.contains("1 critical"), "{err}");
    d.ok(&["pull", &format!("{reg}/myproject/app:v1")]);
}
