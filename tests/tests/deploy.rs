//! The container images (issue "Deploy"): built here on a base image made by mmdebstrap from
//! Debian's mirror (no registry to pull from), run with a private Docker daemon on the host
//! network, pushed to and pulled from with docker and skopeo, stopped and started again.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn node_image_runs_as_non_root_keeps_data_and_stops_cleanly() {
    if !(have("dockerd") && have("docker") && have("mmdebstrap") && have("skopeo")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Dockerd::start(&tmp.path().join("docker"), &addr);
    // The base image (cached rootfs outside the clone), then the node image from our binary.
    let out = Command::new("bash")
        .arg(repo_root().join("deploy/docker/base.sh"))
        .arg("berth-base:bookworm")
        .env("DOCKER_HOST", &d.host)
        .output()
        .unwrap();
    assert!(out.status.success(), "base.sh: {}", String::from_utf8_lossy(&out.stderr));
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(berth_bin(), ctx.join("berth")).unwrap();
    let dockerfile = repo_root().join("deploy/docker/Dockerfile.node");
    d.ok(&[
        "build",
        "--network",
        "host",
        "-q",
        "-f",
        dockerfile.to_str().unwrap(),
        "--build-arg",
        "REVISION=test",
        "-t",
        "berth:test",
        ctx.to_str().unwrap(),
    ]);
    let labels = d.ok(&["image", "inspect", "-f", "{{json .Config.Labels}}", "berth:test"]);
    assert!(
        labels.contains("org.opencontainers.image.licenses")
            && labels.contains("\"org.opencontainers.image.revision\":\"test\""),
        "{labels}"
    );
    // --check-config in the image.
    let ok = d.ok(&["run", "--rm", "--network", "none", "berth:test", "serve", "--check-config"]);
    assert!(ok.starts_with("configuration OK"), "{ok}");

    d.ok(&["volume", "create", "berth-data"]);
    let run = |name: &str| {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "-e",
            &format!("BERTH_LISTEN={addr}"),
            "-e",
            &format!("BERTH_HEALTHCHECK_URL=http://{addr}/healthz"),
            "-v",
            "berth-data:/var/lib/berth",
            "berth:test",
        ]);
    };
    run("node");
    wait_for("the node in the container", 30, || ureq::get(&format!("http://{addr}/v2/")).call().is_ok());
    assert_eq!(d.ok(&["exec", "node", "id", "-u"]).trim(), "10001", "runs as non-root");
    wait_for("healthcheck healthy", 60, || {
        d.ok(&["inspect", "-f", "{{.State.Health.Status}}", "node"]).trim() == "healthy"
    });

    // docker and skopeo push; pull back.
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), b"hello from a container\n").unwrap();
    let tar = tmp.path().join("rootfs.tar");
    run_cmd(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&rootfs).arg("."));
    let image = format!("{addr}/deploy/hello:v1");
    d.ok(&["import", tar.to_str().unwrap(), &image]);
    d.ok(&["push", &image]);
    let layout = tmp.path().join("layout");
    let sk = |args: &[&str]| run_cmd(Command::new("skopeo").args(args));
    sk(&["copy", "--src-tls-verify=false", &format!("docker://{image}"), &format!("oci:{}:v1", layout.display())]);
    sk(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{addr}/deploy/copy:v1"),
    ]);

    // SIGTERM: exit 0, data kept in the volume; start again and pull.
    d.ok(&["stop", "-t", "30", "node"]);
    assert_eq!(d.ok(&["inspect", "-f", "{{.State.ExitCode}}", "node"]).trim(), "0");
    d.ok(&["rm", "node"]);
    run("node2");
    wait_for("the node again", 30, || ureq::get(&format!("http://{addr}/v2/")).call().is_ok());
    d.ok(&["rmi", &image]);
    d.ok(&["pull", &image]);
    sk(&["inspect", "--tls-verify=false", &format!("docker://{addr}/deploy/copy:v1")]);
    d.ok(&["rm", "-f", "node2"]);

    // The sidecar image carries the Trivy client (the real binary, not the pip shim).
    let actx = tmp.path().join("actx");
    std::fs::create_dir_all(&actx).unwrap();
    std::fs::copy(common::pg::admin_bin(), actx.join("berth-admin")).unwrap();
    let scripts =
        run_cmd(Command::new("python3").args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"]));
    let trivy = Path::new(scripts.trim()).join("trivy");
    if trivy.exists() {
        std::fs::copy(&trivy, actx.join("trivy")).unwrap();
        let adockerfile = repo_root().join("deploy/docker/Dockerfile.admin");
        d.ok(&[
            "build",
            "--network",
            "host",
            "-q",
            "-f",
            adockerfile.to_str().unwrap(),
            "-t",
            "berth-admin:test",
            actx.to_str().unwrap(),
        ]);
        let help = d.ok(&["run", "--rm", "--network", "none", "berth-admin:test", "--help"]);
        assert!(help.contains("admin sidecar"), "{help}");
        let v = d.ok(&["run", "--rm", "--network", "none", "--entrypoint", "trivy", "berth-admin:test", "--version"]);
        assert!(v.contains("Version:"), "{v}");
        assert_eq!(
            d.ok(&["run", "--rm", "--network", "none", "--entrypoint", "id", "berth-admin:test", "-u"]).trim(),
            "10001"
        );
    } else {
        assert!(std::env::var_os("CI").is_none(), "trivy is required under CI");
    }
    std::thread::sleep(Duration::from_millis(100));
}

fn run_cmd(cmd: &mut Command) -> String {
    run(cmd)
}

/// Every Kubernetes manifest passes schema validation for a current Kubernetes, and the
/// ConfigMap's configurations load in `berth serve --check-config` / `berth-admin check-config`.
#[test]
fn kubernetes_manifests_validate_and_their_configuration_loads() {
    if !have("kubernetes-validate") {
        return;
    }
    let dir = repo_root().join("deploy/kubernetes");
    let files = ["configmap.yaml", "statefulset.yaml", "service.yaml", "secret.example.yaml", "optional/ingress.yaml"];
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.37.0"])
        .args(files.iter().map(|f| dir.join(f)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed ").count(), 6, "{text}");
    // The kustomization lists exactly the manifests a user applies.
    let k = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for f in ["configmap.yaml", "statefulset.yaml", "service.yaml"] {
        assert!(k.contains(f), "{f} missing from kustomization.yaml");
    }
    let tmp = tempfile::tempdir().unwrap();
    let extract = |key: &str| {
        let script = format!("import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['data']['{key}'])");
        let text = run_cmd(Command::new("python3").args(["-c", &script]).arg(dir.join("configmap.yaml")));
        let p = tmp.path().join(key);
        std::fs::write(&p, text).unwrap();
        p
    };
    let node = extract("berth.toml");
    let ok = run_cmd(Command::new(berth_bin()).args(["serve", "--check-config", "--config"]).arg(&node));
    assert!(ok.contains("configuration OK") && ok.contains("scanning on"), "{ok}");
    let admin = extract("admin.toml");
    let ok = run_cmd(Command::new(common::pg::admin_bin()).arg("--config").arg(&admin).arg("check-config"));
    assert!(ok.contains("configuration OK") && ok.contains("trivy:4954"), "{ok}");
}
