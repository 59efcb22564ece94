//! The real binary's start-up, signals, errors and CLI, as a new user meets them (issue "every
//! rough edge a new user hit"). Each test fails without its fix.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Run `berth serve` expecting it to fail at start; returns its stderr.
fn serve_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(berth_bin());
    cmd.arg("serve").args(args).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.spawn().unwrap().wait_with_output().unwrap();
    assert!(!out.status.success(), "berth serve {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("error")).collect()
}

#[test]
fn port_in_use_is_one_clear_line_and_leaves_no_data_dir() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let listen = format!("127.0.0.1:{port}");
    let err = serve_fails(&["--listen", &listen, "--data-dir", data.to_str().unwrap()], &[]);
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(&listen) && lines[0].contains("already in use"), "{err}");
    assert!(!data.exists(), "nothing may be created before the listener is bound");
}

#[test]
fn host_names_are_accepted_in_listen() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(berth_bin())
        .args(["serve", "--listen", &format!("localhost:{port}"), "--data-dir"])
        .arg(tmp.path().join("d"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("localhost listener", 20, || ureq::get(&format!("http://127.0.0.1:{port}/v2/")).call().is_ok());
    child.kill().unwrap();
    child.wait().unwrap();
    let err = serve_fails(&["--listen", "no-such-host.invalid:5000", "--data-dir", "/nonexistent/x"], &[]);
    assert!(err.contains("no-such-host.invalid:5000") && err.contains("not an address"), "{err}");
}

#[test]
fn second_node_on_the_same_data_dir_is_refused_once_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _first = Berth::start(&data, &[]);
    let port = free_port().to_string();
    let err = serve_fails(&["--listen", &format!("127.0.0.1:{port}"), "--data-dir", data.to_str().unwrap()], &[]);
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1, "one line, not the raw RocksDB error three times: {err}");
    assert!(lines[0].contains("in use by another berth process") && lines[0].contains(data.to_str().unwrap()), "{err}");
}

#[test]
fn missing_htpasswd_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port().to_string();
    let err = serve_fails(
        &["--listen", &format!("127.0.0.1:{port}"), "--data-dir", data.to_str().unwrap()],
        &[("BERTH_AUTH__HTPASSWD", "/nonexistent/htpasswd")],
    );
    assert!(err.contains("/nonexistent/htpasswd") && err.contains("No such file"), "{err}");
    assert!(!err.contains("opening the data directory"), "{err}");
    assert!(!data.exists());
}

#[test]
fn unwritable_data_dir_names_the_directory_and_the_fix() {
    if !have("setpriv") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("owned-by-root");
    std::fs::create_dir(&data).unwrap();
    let port = free_port().to_string();
    // As nobody, a root-owned 0755 directory is not writable.
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(berth_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Permission denied") && err.contains("berth") && !out.status.success() {
        assert!(err.contains(data.to_str().unwrap()), "{err}");
        assert!(err.contains("must be able to write it"), "{err}");
        assert_eq!(error_lines(&err).len(), 1, "{err}");
    } else {
        // setpriv itself could not run the binary here (e.g. its directory is not readable
        // by nobody): nothing to assert about Berth.
        assert!(!out.status.success() || err.is_empty(), "{err}");
    }
}

#[test]
fn other_commands_variables_do_not_stop_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(
        &tmp.path().join("data"),
        &[("BERTH_PASSWORD", "x"), ("BERTH_INTERNAL_URL", "http://127.0.0.1:1"), ("BERTH_INTERNAL_TOKEN", "t")],
    );
    assert_eq!(http("GET", &node.url("/v2/"), &[], None).status, 200);
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("BERTH_PASSWORD") && log.contains("not a `berth serve` setting"), "{log}");
}

#[test]
fn startup_line_says_what_is_on() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    // The cores answer before the line is written: wait for it.
    let mut log = String::new();
    wait_for("the start-up line", 10, || {
        log = std::fs::read_to_string(&node.log).unwrap();
        log.contains("berth node listening")
    });
    let line = log.lines().find(|l| l.contains("berth node listening")).expect("start-up line");
    assert!(
        line.contains("auth=off") && line.contains("s3_tiering=off") && line.contains("internal_api=127.0.0.1:"),
        "{line}"
    );
}

fn htpasswd(path: &Path, user: &str, pass: &str) {
    let out = run(Command::new(berth_bin())
        .args(["hash-password", "--cost", "4", "--user", user])
        .env("BERTH_PASSWORD", pass));
    std::fs::write(path, out).unwrap();
}

fn status_as(node: &Berth, user: &str, pass: &str) -> u16 {
    let auth = basic(user, pass);
    http("GET", &node.url("/v2/"), &[("Authorization", &auth)], None).status
}

/// Regression: SIGHUP killed the node (exit 129) instead of reloading.
#[test]
fn sighup_reloads_users_and_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("htpasswd");
    htpasswd(&file, "alice", "one");
    let node = Berth::start(&tmp.path().join("data"), &[("BERTH_AUTH__HTPASSWD", file.to_str().unwrap())]);
    assert_eq!(status_as(&node, "alice", "one"), 200);
    assert_eq!(status_as(&node, "bob", "two"), 401);
    htpasswd(&file, "bob", "two");
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(node.pid() as i32, libc::SIGHUP) }, 0);
    wait_for("users reloaded", 10, || status_as(&node, "bob", "two") == 200);
    assert_eq!(status_as(&node, "alice", "one"), 401, "removed users lose access at once (cache dropped)");
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("SIGHUP: users, rules and token keys reloaded"), "{log}");
}

#[test]
fn hash_password_refuses_empty_passwords_and_colons() {
    let out = Command::new(berth_bin())
        .args(["hash-password", "--user", "admin"])
        .env("BERTH_PASSWORD", "")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty password"));
    let out = Command::new(berth_bin())
        .args(["hash-password", "--user", "ad:min"])
        .env("BERTH_PASSWORD", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot contain ':'"));
}

/// On a terminal: a prompt, no echo, asked twice.
#[test]
fn hash_password_prompts_without_echo_on_a_terminal() {
    let script = r#"
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.environ.pop("BERTH_PASSWORD", None)
    os.execv(sys.argv[1], [sys.argv[1], "hash-password", "--user", "admin", "--cost", "4"])
out = b""
def read_until(marker, secs=10):
    global out
    end = time.time() + secs
    while marker not in out and time.time() < end:
        try:
            out += os.read(fd, 1024)
        except OSError:
            break
# After each prompt, give the program a moment to turn echo off before "typing" (a person
# is slower than this script; typed-ahead input is echoed by the terminal before that).
read_until(b"Password: ")
time.sleep(0.3)
os.write(fd, b"s3cret-pw\n")
read_until(b"Repeat password: ")
time.sleep(0.3)
os.write(fd, b"s3cret-pw\n")
read_until(b"admin:$2")
time.sleep(0.3)
try:
    out += os.read(fd, 4096)
except OSError:
    pass
sys.stdout.write(out.decode("utf-8", "replace"))
"#;
    let out = run(Command::new("python3").args(["-c", script]).arg(berth_bin()));
    assert!(out.contains("Password: ") && out.contains("Repeat password: "), "{out}");
    assert!(out.contains("admin:$2"), "{out}");
    assert!(!out.contains("s3cret-pw"), "the password was echoed: {out}");
}

#[test]
fn version_names_the_binary() {
    let out = run(Command::new(berth_bin()).arg("--version"));
    assert!(out.starts_with("berth "), "{out}");
}

/// Regression: every `docker login` logged a scary "malformed request head" (docker probes TLS
/// first). A ClientHello is recognised, closed, and logged once.
#[test]
fn tls_probe_on_the_plain_port_is_logged_once_briefly() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(&node.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x50, 0x01, 0x00, 0x00, 0x4c, 0x03, 0x03]).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(buf.is_empty(), "no HTTP answer to a TLS client: {:?}", String::from_utf8_lossy(&buf));
    }
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(!log.contains("malformed request head"), "{log}");
    assert_eq!(log.matches("tried TLS on this plain-HTTP port").count(), 1, "{log}");
}

/// The sidecar's long polls filled the access log; internal API requests log at debug.
#[test]
fn internal_api_requests_stay_out_of_the_info_access_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let node = Berth::start(&data, &[]);
    let addr = std::fs::read_to_string(data.join("internal.addr")).unwrap();
    let token = std::fs::read_to_string(data.join("internal.token")).unwrap();
    let r = http(
        "GET",
        &format!("http://{}/internal/v1/changes?from=1&wait_ms=0", addr.trim()),
        &[("Authorization", &format!("Bearer {}", token.trim()))],
        None,
    );
    assert_eq!(r.status, 200);
    http("GET", &node.url("/v2/"), &[], None);
    // The access line is written after the response: wait for it.
    let mut log = String::new();
    wait_for("the access log line", 10, || {
        log = std::fs::read_to_string(&node.log).unwrap();
        log.contains("path=/v2/ ")
    });
    assert!(!log.contains("/internal/v1/changes"), "{log}");
}

/// Regression: the internal API moved to a new random port at every restart, and a sidecar
/// holding the old address never found the node again.
#[test]
fn internal_port_is_kept_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut node = Berth::start(&data, &[]);
    let before = std::fs::read_to_string(data.join("internal.addr")).unwrap();
    node.restart();
    let after = std::fs::read_to_string(data.join("internal.addr")).unwrap();
    assert_eq!(before, after);
}

#[test]
fn metrics_content_type_matches_the_format() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    let plain = http("GET", &node.internal_url("/metrics"), &[], None);
    assert_eq!(plain.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = String::from_utf8(plain.body).unwrap();
    assert!(!text.contains("# EOF"), "the 0.0.4 text format has no EOF marker");
    assert!(!text.contains("berth_tier_pending_blobs"), "no tier backlog series with S3 off");
    let om = http(
        "GET",
        &node.internal_url("/metrics"),
        &[("Accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")],
        None,
    );
    assert_eq!(om.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    assert!(String::from_utf8(om.body).unwrap().ends_with("# EOF\n"));
}

fn doctor(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(berth_bin());
    cmd.arg("doctor").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `berth doctor`: all green on a healthy node; one clear FAIL line per broken dependency.
#[test]
fn doctor_reports_each_broken_dependency_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut node = Berth::start(&data, &[]);
    let listen = node.addr.clone();
    let args = ["--listen", listen.as_str(), "--data-dir", data.to_str().unwrap()];
    let (ok, out) = doctor(&args, &[]);
    assert!(ok, "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    for name in ["config", "data dir", "node", "internal api", "s3"] {
        assert!(out.lines().any(|l| l.starts_with("ok") && l.contains(name)), "{name}: {out}");
    }
    // S3 configured but unreachable.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (ok, out) = doctor(
        &args,
        &[
            ("BERTH_STORAGE__S3__BUCKET", "doctor-bucket"),
            ("BERTH_STORAGE__S3__ENDPOINT", dead.as_str()),
            ("BERTH_STORAGE__S3__PATH_STYLE", "true"),
            ("BERTH_STORAGE__S3__ACCESS_KEY_ID", "x"),
            ("BERTH_STORAGE__S3__SECRET_ACCESS_KEY", "y"),
            ("BERTH_STORAGE__S3__MAX_BACKOFF_SECS", "1"),
        ],
    );
    assert!(!ok);
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{out}");
    assert!(fails[0].contains("s3") && fails[0].contains("doctor-bucket") && fails[0].contains(&dead), "{out}");
    // The node stopped.
    node.terminate();
    let (ok, out) = doctor(&args, &[]);
    assert!(!ok);
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{out}");
    assert!(fails[0].contains("node") && fails[0].contains("berth serve"), "{out}");
    // A broken configuration.
    let (ok, out) = doctor(&args, &[("BERTH_SCAN__POLICY__BLOCK_SEVERITY", "urgent")]);
    assert!(!ok && out.lines().any(|l| l.starts_with("FAIL") && l.contains("block_severity")), "{out}");
}

/// Reliability round 2, item 17: every load-balancer probe was an INFO access line. Successful
/// `/healthz` and `/readyz` are logged at DEBUG; other requests as before.
#[test]
fn health_probes_stay_out_of_the_access_log() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[]);
    for _ in 0..5 {
        assert_eq!(http("GET", &node.url("/healthz"), &[], None).status, 200);
        assert_eq!(http("GET", &node.url("/readyz"), &[], None).status, 200);
    }
    assert_eq!(http("GET", &node.url("/v2/"), &[], None).status, 200);
    wait_for("the /v2/ access line", 10, || {
        std::fs::read_to_string(&node.log).is_ok_and(|l| l.contains("path=/v2/") || l.contains("path=\"/v2/\""))
    });
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(!log.contains("/healthz") && !log.contains("/readyz"), "{log}");
}

/// Reliability round 2, item 10: a fresh volume (an empty directory its runtime made 0755) is
/// made private without a warning; the healthcheck follows `BERTH_LISTEN`.
#[test]
fn a_fresh_volume_is_narrowed_quietly_and_the_healthcheck_follows_the_listen_address() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("volume");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = Berth::start(&data, &[]);
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(!log.contains("narrowed permissions"), "{log}");
    let check = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(berth_bin());
        cmd.arg("healthcheck").env_remove("BERTH_HEALTHCHECK_URL").env_remove("BERTH_LISTEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap().status.success()
    };
    let port = node.addr.rsplit(':').next().unwrap().to_owned();
    assert!(check(&[("BERTH_LISTEN", &format!("0.0.0.0:{port}"))]), "the healthcheck did not follow BERTH_LISTEN");
    assert!(!check(&[("BERTH_LISTEN", &format!("127.0.0.1:{}", free_port()))]));
}

/// Reliability round 2, item 16: a cause was printed twice ("No such file or directory (os
/// error 2): No such file or directory (os error 2)"): once in the message, once as the source.
#[test]
fn start_errors_name_their_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    for env in [vec![], vec![("BERTH_AUTH__HTPASSWD", "/nonexistent/htpasswd")]] {
        let mut cmd = std::process::Command::new(berth_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]);
        if env.is_empty() {
            cmd.arg("/proc/no-such-dir/data");
        } else {
            cmd.arg(tmp.path().join("data"));
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    }
}
