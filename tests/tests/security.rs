//! Security with the real binary and real clients: token auth through docker, skopeo, podman
//! and containerd; what lands on disk (modes); what the CLI and the sidecar refuse; who the
//! access log names.

mod common;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// A node with token auth: `ci` may push and pull `team/**`, `reader` may pull it, anonymous
/// may pull `public/**`.
fn token_node(tmp: &Path) -> Berth {
    let htpasswd = tmp.join("htpasswd");
    std::fs::write(&htpasswd, format!("ci:{}\nreader:{}\n", bcrypt_hash("ci-pass"), bcrypt_hash("read-pass"))).unwrap();
    let cfg = tmp.join("berth.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[auth]
htpasswd = "{}"

[auth.token]
service = "berth-test"

[[auth.rules]]
subjects = ["user:ci"]
repositories = ["team/**", "public/**"]
actions = ["*"]

[[auth.rules]]
subjects = ["user:reader"]
repositories = ["team/**"]
actions = ["pull"]

[[auth.rules]]
subjects = ["anonymous"]
repositories = ["public/**"]
actions = ["pull"]
"#,
            htpasswd.display()
        ),
    )
    .unwrap();
    Berth::start(&tmp.join("data"), &[("BERTH_CONFIG", cfg.to_str().unwrap())])
}

#[test]
fn skopeo_podman_ctr_through_token_auth() {
    if !(have("skopeo") && have("podman") && have("ctr") && have("containerd")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let b = token_node(tmp.path());
    let reg = b.addr.clone();
    let src = tmp.path().join("src");
    let layers = make_oci_layout(&src, "v1", 2, 200_000);
    let copy = |args: &[&str], from: String, to: String| {
        let mut c = Command::new("skopeo");
        c.arg("copy").args(args).arg(from).arg(to);
        c.output().unwrap()
    };
    let out =
        copy(&["--dest-tls-verify=false"], format!("oci:{}:v1", src.display()), format!("docker://{reg}/team/app:v1"));
    assert!(!out.status.success(), "anonymous push must fail");
    let out = copy(
        &["--dest-tls-verify=false", "--dest-creds", "reader:read-pass"],
        format!("oci:{}:v1", src.display()),
        format!("docker://{reg}/team/app:v1"),
    );
    assert!(!out.status.success(), "a reader cannot push");
    let out = copy(
        &["--dest-tls-verify=false", "--dest-creds", "ci:ci-pass"],
        format!("oci:{}:v1", src.display()),
        format!("docker://{reg}/team/app:v1"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dst = tmp.path().join("dst");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--src-creds", "reader:read-pass"])
        .arg(format!("docker://{reg}/team/app:v1"))
        .arg(format!("oci:{}:v1", dst.display())));
    assert_layout_has(&dst, &layers);

    // podman: login, push into public/ (mount from team/ needs pull there: ci has it), anonymous pull.
    let p = tmp.path().join("podman");
    let podman = |args: &[&str]| podman(&p, args);
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(podman(&["login", "--tls-verify=false", "-u", "ci", "-p", "ci-pass", &reg]));
    ok(podman(&["pull", "--tls-verify=false", &format!("{reg}/team/app:v1")]));
    ok(podman(&["tag", &format!("{reg}/team/app:v1"), &format!("{reg}/public/app:v1")]));
    ok(podman(&["push", "--tls-verify=false", &format!("{reg}/public/app:v1")]));
    ok(podman(&["logout", &reg]));
    ok(podman(&["rmi", "-a", "-f"]));
    ok(podman(&["pull", "--tls-verify=false", &format!("{reg}/public/app:v1")]));
    let denied = podman(&["pull", "--tls-verify=false", &format!("{reg}/team/app:v1")]);
    assert!(!denied.status.success(), "anonymous pull of team/ must fail");

    // containerd: ctr with --user (it fetches tokens with the OAuth2 POST or GET).
    let ctd = Containerd::start(&tmp.path().join("ctd"));
    let ctr = |args: &[&str]| ctd.ctr(args);
    ok(ctr(&["images", "pull", "--plain-http", "--user", "reader:read-pass", &format!("{reg}/team/app:v1")]));
    ok(ctr(&["images", "tag", &format!("{reg}/team/app:v1"), &format!("{reg}/team/ctr:v2")]));
    let denied = ctr(&["images", "push", "--plain-http", "--user", "reader:read-pass", &format!("{reg}/team/ctr:v2")]);
    assert!(!denied.status.success(), "a reader cannot push with ctr");
    ok(ctr(&["images", "push", "--plain-http", "--user", "ci:ci-pass", &format!("{reg}/team/ctr:v2")]));
    drop(ctd);

    // The access log names who pushed.
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("method=\"PUT\"") && l.contains("team/ctr/manifests") && l.contains("user=\"ci\"")),
        "no access-log line naming the pusher"
    );
    assert!(!log.contains("ci-pass") && !log.contains("read-pass"), "a password reached the log");
}

#[test]
fn docker_login_push_pull_with_tokens() {
    if !(have("dockerd") && have("docker")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let b = token_node(tmp.path());
    let reg = b.addr.clone();
    let d = Dockerd::start(&tmp.path().join("docker"), &reg);
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), b"hello through tokens\n").unwrap();
    let tar = tmp.path().join("rootfs.tar");
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&rootfs).arg("."));
    d.ok(&["import", tar.to_str().unwrap(), "base:latest"]);
    d.ok(&["tag", "base:latest", &format!("{reg}/team/img:v1")]);
    assert!(!d.docker(&["push", &format!("{reg}/team/img:v1")]).status.success(), "push before login");
    let wrong = d.docker(&["login", &reg, "-u", "ci", "-p", "wrong"]);
    assert!(!wrong.status.success());
    d.ok(&["login", &reg, "-u", "reader", "-p", "read-pass"]);
    let denied = d.docker(&["push", &format!("{reg}/team/img:v1")]);
    assert!(!denied.status.success(), "a reader cannot push");
    d.ok(&["login", &reg, "-u", "ci", "-p", "ci-pass"]);
    let pushed = d.ok(&["push", &format!("{reg}/team/img:v1")]);
    assert!(pushed.contains("v1: digest: sha256:"), "{pushed}");
    d.ok(&["rmi", &format!("{reg}/team/img:v1"), "base:latest"]);
    d.ok(&["logout", &reg]);
    assert!(!d.docker(&["pull", &format!("{reg}/team/img:v1")]).status.success(), "anonymous pull of team/");
    d.ok(&["login", &reg, "-u", "reader", "-p", "read-pass"]);
    let pulled = d.ok(&["pull", &format!("{reg}/team/img:v1")]);
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(!log.contains("ci-pass") && !log.contains("read-pass"), "a password reached the log");
}

/// The data directory was created world-readable (0755 dirs, 0644 blobs and index), and
/// `internal.token` kept a stale temp file's 0644.
#[test]
fn data_directory_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A stale temp file with a wide mode, as an interrupted older version could leave.
    std::fs::write(data.join("internal.tmp"), "stale").unwrap();
    std::fs::set_permissions(data.join("internal.tmp"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let b = Berth::start(&data, &[]);
    push_blob(&b, "private/x", b"some layer bytes");
    drop(b);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&data.join("internal.token")), 0o600, "internal.token");
    let mut open = Vec::new();
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p == data.join("internal.tmp") {
                continue; // ours to ignore, not written by the node
            }
            if p.is_dir() {
                stack.push(p.clone());
            }
            if mode(&p) & 0o077 != 0 {
                open.push(format!("{} {:o}", p.display(), mode(&p)));
            }
        }
    }
    assert!(open.is_empty(), "readable by others: {open:?}");
}

/// `hash-password` silently accepted passwords bcrypt cuts at 72 bytes.
#[test]
fn hash_password_refuses_what_bcrypt_would_cut() {
    let out = Command::new(berth_bin()).arg("hash-password").env("BERTH_PASSWORD", "p".repeat(73)).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("72 bytes"));
}

/// The admin API took a 1-character token (and that token can delete every tag).
#[test]
fn admin_api_refuses_weak_tokens() {
    let out = Command::new(common::pg::admin_bin())
        .arg("serve")
        .env("BERTH_ADMIN_API_TOKEN", "x")
        .env("BERTH_ADMIN_POSTGRES", "host=127.0.0.1 port=1")
        .env("BERTH_ADMIN_NODE_DATA_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too weak"), "{err}");
}

/// `berth token-key new` + SIGHUP rotates the signing key; the JWKS lists both keys.
#[test]
fn token_key_rotation_with_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let b = token_node(tmp.path());
    let jwks = || -> serde_json::Value {
        serde_json::from_slice(&http("GET", &b.url("/token/jwks.json"), &[], None).body).unwrap()
    };
    assert_eq!(jwks()["keys"].as_array().unwrap().len(), 1);
    let out = run(Command::new(berth_bin())
        .args(["token-key", "new", "--algorithm", "EdDSA", "--data-dir"])
        .arg(tmp.path().join("data")));
    assert!(out.contains("kid"), "{out}");
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(b.pid() as i32, libc::SIGHUP) };
    wait_for("the new key", 10, || jwks()["keys"].as_array().unwrap().len() == 2);
    let printed = run(Command::new(berth_bin()).args(["token-key", "jwks", "--data-dir"]).arg(tmp.path().join("data")));
    let printed: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(printed, jwks());
}

/// `berth user` and `berth robot` against the running node (embedded mode: no sidecar).
#[test]
fn user_and_robot_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"), &[("BERTH_AUTH__ENABLED", "true")]);
    let data = tmp.path().join("data");
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(berth_bin());
        c.args(args).arg("--data-dir").arg(&data);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = cli(&["user", "add", "fay"], &[("BERTH_PASSWORD", "fay-pw")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = |u: &str, p: &str| {
        let auth = basic(u, p);
        http("GET", &b.url("/v2/"), &[("Authorization", &auth)], None).status
    };
    assert_eq!(status("fay", "fay-pw"), 200);
    let out = cli(&["robot", "add", "deployer", "--expires", "30d", "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert_eq!(status("robot$deployer", secret), 200);
    let list = String::from_utf8(cli(&["user", "list"], &[]).stdout).unwrap();
    assert!(list.contains("fay") && list.contains("deployer") && !list.contains(secret), "{list}");
    assert!(cli(&["robot", "rm", "deployer"], &[]).status.success());
    assert_eq!(status("robot$deployer", secret), 401);
    assert!(cli(&["user", "rm", "fay"], &[]).status.success());
    assert_eq!(status("fay", "fay-pw"), 401);
    let out = cli(&["user", "rm", "nobody"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no managed user"));
}
