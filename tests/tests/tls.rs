//! TLS terminated by the node, with a CA the test makes: docker (certs.d), skopeo and podman
//! (cert dirs), containerd's ctr (--tlscacert), curl; token auth over it; client certificates
//! (mTLS) as users; certificate reload under traffic.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::pki::Pki;
use common::*;

/// TLS, client certificates optional, token auth, `ci` may push `team/**`.
fn tls_node(tmp: &Path, pki: &Pki) -> Berth {
    tls_node_with(tmp, pki, "")
}

/// `tls_node` with extra configuration appended.
fn tls_node_with(tmp: &Path, pki: &Pki, extra: &str) -> Berth {
    tls_node_full(tmp, pki, "", extra)
}

/// `tls_node_with`, with lines added to `[tls]` too.
fn tls_node_full(tmp: &Path, pki: &Pki, tls_extra: &str, extra: &str) -> Berth {
    let htpasswd = tmp.join("htpasswd");
    std::fs::write(&htpasswd, format!("ci:{}\n", bcrypt_hash("ci-pass"))).unwrap();
    let cfg = tmp.join("berth.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[tls]
cert = "{}"
key = "{}"
client_ca = "{}"
{}
[auth]
htpasswd = "{}"
[auth.token]
service = "berth-tls"
[[auth.rules]]
subjects = ["user:ci"]
repositories = ["team/**"]
actions = ["*"]
{}
"#,
            pki.path("srv.pem"),
            pki.path("srv.key"),
            pki.path("ca.pem"),
            tls_extra,
            htpasswd.display(),
            extra
        ),
    )
    .unwrap();
    Berth::start_tls(&tmp.join("data"), &[("BERTH_CONFIG", cfg.to_str().unwrap())], &pki.path("ca.pem"))
}

fn curl(pki: &Pki, args: &[&str]) -> String {
    run(Command::new("curl").args(["-s", "--cacert", &pki.path("ca.pem")]).args(args))
}

#[test]
fn tls_token_auth_and_client_certificates() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let b = tls_node(tmp.path(), &pki);
    let base = format!("https://{}", b.addr);
    // The challenge points at the HTTPS token endpoint.
    let head = curl(&pki, &["-D", "-", "-o", "/dev/null", &format!("{base}/v2/")]);
    assert!(head.contains(&format!("Bearer realm=\"https://{}/token\",service=\"berth-tls\"", b.addr)), "{head}");
    // A token over TLS.
    let tok: serde_json::Value = serde_json::from_str(&curl(
        &pki,
        &["-u", "ci:ci-pass", &format!("{base}/token?service=berth-tls&scope=repository:team/a:pull,push")],
    ))
    .unwrap();
    let bearer = format!("Authorization: Bearer {}", tok["token"].as_str().unwrap());
    let data = b"bytes over tls";
    std::fs::write(tmp.path().join("blob"), data).unwrap();
    let d = sha256(data);
    let code = curl(
        &pki,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &bearer,
            "--data-binary",
            &format!("@{}", tmp.path().join("blob").display()),
            &format!("{base}/v2/team/a/blobs/uploads/?digest={d}"),
        ],
    );
    assert_eq!(code, "201");
    assert_eq!(curl(&pki, &["-H", &bearer, &format!("{base}/v2/team/a/blobs/{d}")]).as_bytes(), data);
    // A client certificate (CN=ci) is user ci: no password needed, rules apply.
    let cert = ["--cert", &pki.path("cli.pem"), "--key", &pki.path("cli.key")];
    let code = curl(
        &pki,
        &[&cert[..], &["-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/v2/team/a/blobs/{d}")]].concat(),
    );
    assert_eq!(code, "200");
    let code = curl(
        &pki,
        &[&cert[..], &["-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/v2/other/x/tags/list")]].concat(),
    );
    assert_eq!(code, "403", "rules apply to certificate users");
    let tok: serde_json::Value = serde_json::from_str(&curl(
        &pki,
        &[&cert[..], &[&format!("{base}/token?service=berth-tls&scope=repository:team/a:pull")]].concat(),
    ))
    .unwrap();
    assert_eq!(tok["token"].as_str().map(|t| !t.is_empty()), Some(true), "mTLS logs in at the token endpoint too");
    // Plain HTTP on the TLS port: a 400 that says the port speaks TLS (as nginx answers), not a
    // closed connection that curl reports as "HTTP/0.9" (reliability round 2, item 15).
    let out = Command::new("curl").args(["-s", "-m", "10", "-i", &format!("http://{}/v2/", b.addr)]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("speaks TLS"), "{text}");
    // The access log names the certificate user.
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(log.contains("user=\"ci\""), "no user in the access log");
}

#[test]
fn skopeo_podman_ctr_docker_over_tls() {
    if !(have("openssl") && have("skopeo") && have("podman") && have("ctr") && have("containerd")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let b = tls_node(tmp.path(), &pki);
    let reg = b.addr.clone();
    let certs = pki.cert_dir();
    let src = tmp.path().join("src");
    let layers = make_oci_layout(&src, "v1", 2, 300_000);
    run(Command::new("skopeo")
        .args(["copy", "--dest-cert-dir", &certs, "--dest-creds", "ci:ci-pass"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{reg}/team/app:v1")));
    let dst = tmp.path().join("dst");
    run(Command::new("skopeo")
        .args(["copy", "--src-cert-dir", &certs, "--src-creds", "ci:ci-pass"])
        .arg(format!("docker://{reg}/team/app:v1"))
        .arg(format!("oci:{}:v1", dst.display())));
    assert_layout_has(&dst, &layers);
    // podman with the CA directory.
    let p = tmp.path().join("podman");
    let podman = |args: &[&str]| podman_ok(&p, args);
    podman(&["login", "--cert-dir", &certs, "-u", "ci", "-p", "ci-pass", &reg]);
    podman(&["pull", "--cert-dir", &certs, &format!("{reg}/team/app:v1")]);
    podman(&["tag", &format!("{reg}/team/app:v1"), &format!("{reg}/team/podman:v1")]);
    podman(&["push", "--cert-dir", &certs, &format!("{reg}/team/podman:v1")]);
    // ctr with the CA.
    let c = tmp.path().join("ctd");
    let ctd = Containerd::start(&c);
    // containerd's hosts.toml names the CA (ctr treats 127.0.0.1 as plain HTTP otherwise).
    let hosts = c.join("hosts");
    std::fs::create_dir_all(hosts.join(&reg)).unwrap();
    std::fs::write(
        hosts.join(&reg).join("hosts.toml"),
        format!("[host.\"https://{reg}\"]\n  ca = \"{}\"\n", pki.path("ca.pem")),
    )
    .unwrap();
    let hosts = hosts.display().to_string();
    let ctr = |args: &[&str]| ctd.ok(args);
    ctr(&["images", "pull", "--hosts-dir", &hosts, "--user", "ci:ci-pass", &format!("{reg}/team/podman:v1")]);
    ctr(&["images", "tag", &format!("{reg}/team/podman:v1"), &format!("{reg}/team/ctr:v1")]);
    ctr(&["images", "push", "--hosts-dir", &hosts, "--user", "ci:ci-pass", &format!("{reg}/team/ctr:v1")]);
    drop(ctd);

    // docker: the daemon trusts the CA through certs.d (the registry is not marked insecure).
    if have("dockerd") && have("docker") {
        let certs_d = PathBuf::from(format!("/etc/docker/certs.d/{reg}"));
        std::fs::create_dir_all(&certs_d).unwrap();
        std::fs::copy(pki.dir.join("ca.pem"), certs_d.join("ca.crt")).unwrap();
        let d = Dockerd::start(&tmp.path().join("docker"), "127.0.0.2:1");
        d.ok(&["login", &reg, "-u", "ci", "-p", "ci-pass"]);
        d.ok(&["pull", &format!("{reg}/team/ctr:v1")]);
        d.ok(&["tag", &format!("{reg}/team/ctr:v1"), &format!("{reg}/team/docker:v1")]);
        let pushed = d.ok(&["push", &format!("{reg}/team/docker:v1")]);
        assert!(pushed.contains("v1: digest: sha256:"), "{pushed}");
        drop(d);
        let _ = std::fs::remove_dir_all(&certs_d);
    }
    let tags = run(Command::new("skopeo")
        .args(["list-tags", "--cert-dir", &certs, "--creds", "ci:ci-pass"])
        .arg(format!("docker://{reg}/team/ctr")));
    assert!(tags.contains("\"v1\""), "{tags}");
}

/// New certificate files + SIGHUP: new connections get the new certificate; no request fails.
#[test]
fn certificate_reload_under_traffic() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let b = tls_node(tmp.path(), &pki);
    let url = format!("https://{}/healthz", b.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, failures, done, url, ca) =
                (stop.clone(), failures.clone(), done.clone(), url.clone(), pki.path("ca.pem"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Several requests on one connection, then a new connection.
                    let out = Command::new("curl").args(["-s", "--cacert", &ca, &url, &url, &url]).output().unwrap();
                    if !out.status.success() || out.stdout != b"ok\nok\nok\n" {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    pki.server_cert("srv2", "registry two");
    std::fs::copy(pki.dir.join("srv2.pem"), pki.dir.join("srv.pem")).unwrap();
    std::fs::copy(pki.dir.join("srv2.key"), pki.dir.join("srv.key")).unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(b.pid() as i32, libc::SIGHUP) };
    let seen = || {
        let out = Command::new("curl").args(["-sv", "--cacert", &pki.path("ca.pem"), &url]).output().unwrap();
        String::from_utf8_lossy(&out.stderr).contains("O=registry two")
    };
    wait_for("the new certificate", 10, seen);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 5);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed during the reload");
}

/// The admin API over TLS (the sidecar's `[tls]`), with the same CA.
#[test]
fn admin_api_over_tls() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(pg) = common::pg::Postgres::start(tmp.path()) else { return };
    let pki = Pki::new(&tmp.path().join("pki"));
    let node = Berth::start(&tmp.path().join("data"), &[]);
    let admin = common::pg::Admin::start_with_scheme(
        &pg,
        &node.dir,
        tmp.path().join("admin.log"),
        &[("BERTH_ADMIN_TLS__CERT", &pki.path("srv.pem")), ("BERTH_ADMIN_TLS__KEY", &pki.path("srv.key"))],
        Some(&pki.path("ca.pem")),
    );
    let url = admin.url("/api/v1/stats").replace("http://", "https://");
    let out = curl(&pki, &["-H", &format!("Authorization: Bearer {}", admin.token), "-w", "\n%{http_code}", &url]);
    assert!(out.ends_with("\n200"), "{out}");
    let plain = Command::new("curl")
        .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", &admin.url("/metrics")])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200", "plain HTTP must not be served on the TLS port");
}

/// oras (the Python SDK) with token auth over TLS: login, push, pull back.
#[test]
fn oras_over_tls_with_tokens() {
    if !(have("openssl") && have("curl") && have("python3")) {
        return;
    }
    if !Command::new("python3").args(["-c", "import oras"]).status().is_ok_and(|s| s.success()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let b = tls_node(tmp.path(), &pki);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/oras_tls_token.py");
    let out = run(Command::new("python3").arg(script).arg(&b.addr).arg(pki.path("ca.pem")).arg("ci").arg("ci-pass"));
    assert!(out.contains("OK"), "{out}");
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(log.contains("endpoint=\"token\""), "oras did not use the token endpoint");
}

/// `internal.tls`: the internal API over TLS with the same certificate; the CLI and the
/// sidecar trust it through their CA setting.
#[test]
fn internal_api_over_tls() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    let b = tls_node_with(tmp.path(), &pki, "[internal]\ntls = true\n");
    let url = std::fs::read_to_string(b.dir.join("internal.url")).unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let cli = |ca: Option<&str>| {
        let mut c = Command::new(berth_bin());
        c.args(["user", "list", "--data-dir"]).arg(&b.dir);
        if let Some(ca) = ca {
            c.args(["--node-ca", ca]);
        }
        c.output().unwrap()
    };
    let out = cli(Some(&pki.path("ca.pem")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ci"));
    let out = cli(None);
    assert!(!out.status.success(), "a certificate of an unknown CA must not be trusted");
    // Plain HTTP to the internal port gets nowhere: a 400 saying the port speaks TLS.
    let plain = Command::new("curl")
        .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", &url.replace("https://", "http://")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "400");
    // The sidecar follows the node over TLS.
    let Some(pg) = common::pg::Postgres::start(tmp.path()) else { return };
    let admin = common::pg::Admin::start(
        &pg,
        &b.dir,
        tmp.path().join("admin.log"),
        &[("BERTH_ADMIN_NODE_CA", &pki.path("ca.pem"))],
    );
    let (st, accounts) = admin.get("/api/v1/accounts");
    assert_eq!(st, 200, "{accounts}");
    assert_eq!(accounts["users"][0]["name"], "ci");
    wait_for("the sidecar's sync", 30, || admin.get("/api/v1/stats").1["feed"]["node_reachable"] == true);
}

/// Security round 2, finding 9: a client certificate whose CN is a removed user still logged
/// in (and got offline tokens), and certificates could not be revoked. Certificates log in
/// only existing accounts, and `tls.client_crl` (re-read on SIGHUP) refuses revoked ones.
#[test]
fn client_certificates_of_removed_accounts_and_revoked_ones_log_nobody_in() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(&tmp.path().join("pki"));
    pki.client_cert("nobody", "nobody");
    let crl = pki.crl(&[]);
    let b = tls_node_full(tmp.path(), &pki, &format!("client_crl = \"{crl}\""), "");
    let base = format!("https://{}", b.addr);
    let status = |cert: &str| {
        let out = Command::new("curl")
            .args(["-s", "-m", "10", "--cacert", &pki.path("ca.pem"), "--cert", &pki.path(&format!("{cert}.pem"))])
            .args(["--key", &pki.path(&format!("{cert}.key")), "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{base}/v2/team/a/tags/list"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(status("cli"), "404", "ci's certificate logs ci in (no such repository yet)");
    assert_eq!(status("nobody"), "401", "a certificate of no account is anonymous");
    // Revoked: after SIGHUP the certificate gets no connection at all.
    pki.crl(&["cli.pem"]);
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(b.pid() as i32, libc::SIGHUP) }, 0);
    wait_for("the revocation list reloaded", 10, || status("cli") == "000");
    assert_eq!(status("nobody"), "401");
}
