//! Real registry clients against the real binary: Docker (private daemon), skopeo, podman,
//! containerd's ctr and oras (Python SDK). Pulled bytes must equal pushed bytes.

mod common;
use std::process::Command;

use common::*;

#[test]
fn skopeo_podman_ctr_round_trip() {
    if !(have("skopeo") && have("podman") && have("ctr") && have("containerd")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"), &[]);
    let reg = b.addr.clone();
    // skopeo: OCI layout -> registry -> OCI layout, layers byte-identical.
    let src = tmp.path().join("src");
    let layers = make_oci_layout(&src, "v1", 3, 300_000);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{reg}/skopeo/img:v1")));
    let dst = tmp.path().join("dst");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reg}/skopeo/img:v1"))
        .arg(format!("oci:{}:v1", dst.display())));
    assert_layout_has(&dst, &layers);
    let tags =
        run(Command::new("skopeo").args(["list-tags", "--tls-verify=false"]).arg(format!("docker://{reg}/skopeo/img")));
    assert!(tags.contains("\"v1\""), "{tags}");

    // podman (vfs): pull, tag into another repository, push (cross-repo mount), pull again.
    let p = tmp.path().join("podman");
    let podman = |args: &[&str]| podman_ok(&p, args);
    podman(&["pull", "--tls-verify=false", &format!("{reg}/skopeo/img:v1")]);
    podman(&["tag", &format!("{reg}/skopeo/img:v1"), &format!("{reg}/podman/img:v2")]);
    podman(&["push", "--tls-verify=false", &format!("{reg}/podman/img:v2")]);
    podman(&["rmi", "-a", "-f"]);
    podman(&["pull", "--tls-verify=false", &format!("{reg}/podman/img:v2")]);

    // containerd: its own daemon, pull with ctr, push to a third repository.
    let ctd = Containerd::start(&tmp.path().join("ctd"));
    let ctr = |args: &[&str]| ctd.ok(args);
    ctr(&["images", "pull", "--plain-http", &format!("{reg}/podman/img:v2")]);
    ctr(&["images", "tag", &format!("{reg}/podman/img:v2"), &format!("{reg}/ctr/img:v3")]);
    ctr(&["images", "push", "--plain-http", &format!("{reg}/ctr/img:v3")]);
    drop(ctd);
    let cat: serde_json::Value = serde_json::from_slice(&http("GET", &b.url("/v2/_catalog"), &[], None).body).unwrap();
    assert_eq!(cat["repositories"], serde_json::json!(["ctr/img", "podman/img", "skopeo/img"]));
    // Every layer pushed by any client is byte-identical to the original.
    for repo in ["skopeo/img", "ctr/img"] {
        for l in &layers {
            let r = http("GET", &b.url(&format!("/v2/{repo}/blobs/{}", sha256(l))), &[], None);
            assert_eq!(&r.body, l, "{repo}");
        }
    }
}

#[test]
fn oras_artifacts_and_referrers() {
    if !have("python3") {
        return;
    }
    let ok = Command::new("python3").args(["-c", "import oras"]).status().unwrap().success();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "python oras is required under CI");
        skip("python oras not installed (pip install oras)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/oras_referrers.py");
    let out = run(Command::new("python3").arg(script).arg(&b.addr));
    assert!(out.contains("OK"), "{out}");
}

/// Seed 004, ticket 1: the demo script, with Basic auth on.
#[test]
fn docker_demo_script_with_login() {
    if !(have("dockerd") && have("docker") && have("curl")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hash = bcrypt_hash("secret");
    let htpasswd = tmp.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("admin:{hash}\n")).unwrap();
    let b = Berth::start(&tmp.path().join("data"), &[("BERTH_AUTH__HTPASSWD", htpasswd.to_str().unwrap())]);
    let reg = b.addr.clone();
    let d = Dockerd::start(&tmp.path().join("docker"), &reg);
    // An image made from a small root filesystem (no network here).
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), b"hello from berth\n").unwrap();
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(rootfs.join("big.bin"), &big).unwrap();
    let tar = tmp.path().join("rootfs.tar");
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&rootfs).arg("."));
    d.ok(&["import", tar.to_str().unwrap(), "alpine:latest"]);

    let out = d.docker(&["push", &format!("{reg}/myproject/alpine:v1")]);
    assert!(!out.status.success(), "push without login must fail");
    d.ok(&["login", &reg, "-u", "admin", "-p", "secret"]);
    d.ok(&["tag", "alpine:latest", &format!("{reg}/myproject/alpine:v1")]);
    d.ok(&["tag", "alpine:latest", &format!("{reg}/myproject/alpine:latest")]);
    let pushed = d.ok(&["push", &format!("{reg}/myproject/alpine:v1")]);
    assert!(pushed.contains("v1: digest: sha256:"), "{pushed}");
    d.ok(&["push", &format!("{reg}/myproject/alpine:latest")]);
    d.ok(&["rmi", &format!("{reg}/myproject/alpine:v1"), &format!("{reg}/myproject/alpine:latest"), "alpine:latest"]);
    let pulled = d.ok(&["pull", &format!("{reg}/myproject/alpine:v1")]);
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    // The pulled image's filesystem has the same bytes.
    d.ok(&["create", "--name", "c1", &format!("{reg}/myproject/alpine:v1"), "/none"]);
    let export = tmp.path().join("export.tar");
    d.ok(&["export", "-o", export.to_str().unwrap(), "c1"]);
    let x = tmp.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    run(Command::new("tar").arg("-xf").arg(&export).arg("-C").arg(&x));
    assert_eq!(std::fs::read(x.join("big.bin")).unwrap(), big);

    let curl = |args: &[&str]| run(Command::new("curl").args(["-s", "-u", "admin:secret"]).args(args));
    let cat: serde_json::Value = serde_json::from_str(&curl(&[&b.url("/v2/_catalog")])).unwrap();
    assert_eq!(cat, serde_json::json!({"repositories": ["myproject/alpine"]}));
    let tags: serde_json::Value = serde_json::from_str(&curl(&[&b.url("/v2/myproject/alpine/tags/list")])).unwrap();
    assert_eq!(tags, serde_json::json!({"name": "myproject/alpine", "tags": ["latest", "v1"]}));
    let m = curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &b.url("/v2/myproject/alpine/manifests/v1"),
    ]);
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert!(m["layers"].as_array().is_some_and(|l| !l.is_empty()));
    let unauth =
        run(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &b.url("/v2/_catalog")]));
    assert_eq!(unauth, "401");
}
