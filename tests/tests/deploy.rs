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

/// `kubernetes-validate --strict` of `files` in `dir` against Kubernetes 1.37 (each must pass),
/// and the kustomization there lists every manifest a user applies.
fn validate_manifests(dir: &std::path::Path, files: &[&str], applied: &[&str]) {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.37.0"])
        .args(files.iter().map(|f| dir.join(f)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let documents: usize =
        files.iter().map(|f| std::fs::read_to_string(dir.join(f)).unwrap().matches("\nkind: ").count()).sum();
    assert_eq!(text.matches(" passed ").count(), documents, "{text}");
    let k = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for f in applied {
        assert!(k.contains(f), "{f} missing from kustomization.yaml");
    }
}

/// One key of a ConfigMap's `data`, written to a file in `tmp`.
fn configmap_value(configmap: &std::path::Path, key: &str, tmp: &std::path::Path) -> std::path::PathBuf {
    let script = format!("import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['data']['{key}'])");
    let text = run_cmd(Command::new("python3").args(["-c", &script]).arg(configmap));
    let p = tmp.join(key);
    std::fs::write(&p, text).unwrap();
    p
}

/// Every Kubernetes manifest passes schema validation for a current Kubernetes, and the
/// ConfigMap's configurations load in `berth serve --check-config` / `berth-admin check-config`.
#[test]
fn kubernetes_manifests_validate_and_their_configuration_loads() {
    if !have("kubernetes-validate") {
        return;
    }
    let dir = repo_root().join("deploy/kubernetes");
    validate_manifests(
        &dir,
        &["configmap.yaml", "statefulset.yaml", "service.yaml", "secret.example.yaml", "optional/ingress.yaml"],
        &["configmap.yaml", "statefulset.yaml", "service.yaml"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let node = configmap_value(&dir.join("configmap.yaml"), "berth.toml", tmp.path());
    let ok = run_cmd(Command::new(berth_bin()).args(["serve", "--check-config", "--config"]).arg(&node));
    assert!(ok.contains("configuration OK") && ok.contains("scanning on"), "{ok}");
    let admin = configmap_value(&dir.join("configmap.yaml"), "admin.toml", tmp.path());
    let ok = run_cmd(Command::new(common::pg::admin_bin()).arg("--config").arg(&admin).arg("check-config"));
    assert!(ok.contains("configuration OK") && ok.contains("trivy:4954"), "{ok}");
}

/// The scale-out manifests (deploy/kubernetes/cluster) validate too, and the nodes'
/// configuration loads with what the StatefulSet puts in the environment.
#[test]
fn kubernetes_cluster_manifests_validate_and_their_configuration_loads() {
    if !have("kubernetes-validate") {
        return;
    }
    let dir = repo_root().join("deploy/kubernetes/cluster");
    let applied = ["configmap.yaml", "statefulset.yaml", "service.yaml", "admin.yaml"];
    validate_manifests(&dir, &[&applied[..], &["secret.example.yaml"]].concat(), &applied);
    let tmp = tempfile::tempdir().unwrap();
    let node = configmap_value(&dir.join("configmap.yaml"), "berth.toml", tmp.path());
    let ok = run_cmd(
        Command::new(berth_bin())
            .args(["serve", "--check-config", "--config"])
            .arg(&node)
            .env("BERTH_CLUSTER__NODE", "berth-cluster-0")
            .env("BERTH_CLUSTER__INTERNAL_URL", "http://berth-cluster-0.berth-cluster-internal:5001")
            .env("BERTH_CLUSTER__POSTGRES_URL", "host=postgres dbname=berth_cluster")
            .env("BERTH_INTERNAL__TOKEN", "t"),
    );
    assert!(ok.contains("configuration OK") && ok.contains("cluster node berth-cluster-0"), "{ok}");
    let admin = configmap_value(&dir.join("configmap.yaml"), "admin.toml", tmp.path());
    let ok = run_cmd(
        Command::new(common::pg::admin_bin())
            .arg("--config")
            .arg(&admin)
            .arg("check-config")
            .env("BERTH_ADMIN_NODE_TOKEN", "t")
            .env("BERTH_ADMIN_API_TOKEN", "0123456789abcdef0123456789abcdef"),
    );
    assert!(ok.contains("configuration OK"), "{ok}");
}

/// The alert rules pass `promtool check rules`; every metric the rules and the Grafana
/// dashboard use is one the node or the sidecar exports (tiering's from its registrations).
#[test]
fn monitoring_rules_check_and_use_only_exported_metrics() {
    if !have("promtool") {
        return;
    }
    let dir = repo_root().join("deploy/monitoring");
    let out = run_cmd(Command::new("promtool").arg("check").arg("rules").arg(dir.join("berth-alerts.yaml")));
    assert!(out.contains("SUCCESS"), "{out}");
    let rules = std::fs::read_to_string(dir.join("berth-alerts.yaml")).unwrap();
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap()).unwrap();
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    exprs.push(rules);

    // What is exported: a node with scanning on, and a sidecar with scanning configured.
    let pgdir = tempfile::tempdir().unwrap();
    let Some(pg) = common::pg::Postgres::start(pgdir.path()) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("berth.toml");
    std::fs::write(&cfg, "[scan]\nenabled = true\n").unwrap();
    let node = Berth::start(&tmp.path().join("data"), &[("BERTH_CONFIG", cfg.to_str().unwrap())]);
    let admin = common::pg::Admin::start(
        &pg,
        &node.dir,
        tmp.path().join("admin.log"),
        &[
            ("BERTH_ADMIN_SCAN__SERVER", "http://127.0.0.1:9"),
            ("BERTH_ADMIN_SCAN__WORK_DIR", tmp.path().join("w").to_str().unwrap()),
        ],
    );
    let mut names = std::collections::BTreeSet::new();
    let mut add_exposition = |text: &str| {
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                let (name, kind) = (it.next().unwrap().to_string(), it.next().unwrap_or(""));
                match kind {
                    "counter" => {
                        names.insert(format!("{name}_total"));
                    }
                    "histogram" => {
                        for s in ["_bucket", "_sum", "_count"] {
                            names.insert(format!("{name}{s}"));
                        }
                    }
                    _ => {
                        names.insert(name);
                    }
                }
            }
        }
    };
    add_exposition(&String::from_utf8(http("GET", &node.internal_url("/metrics"), &[], None).body).unwrap());
    add_exposition(&ureq::get(&admin.url("/metrics")).call().unwrap().into_string().unwrap());
    // Tiering's metrics exist only with S3 configured: take them from their registrations.
    for src in ["tiering/src/metrics.rs", "node/server/src/metrics.rs"] {
        let text = std::fs::read_to_string(repo_root().join(src)).unwrap();
        for part in text.split("register(").skip(1) {
            if let Some(n) = part.trim_start().strip_prefix('"').and_then(|p| p.split('"').next()) {
                if n.starts_with("tier_") || n.starts_with("cache_") {
                    names.insert(format!("berth_{n}"));
                    names.insert(format!("berth_{n}_total"));
                }
            }
        }
    }
    // The cluster's exist only with [cluster]: from their registrations too.
    let text = std::fs::read_to_string(repo_root().join("node/cluster/src/metrics.rs")).unwrap();
    for part in text.split("r.register(").skip(1) {
        if let Some(n) = part.trim_start().strip_prefix('"').and_then(|p| p.split('"').next()) {
            for s in ["", "_total", "_bucket", "_sum", "_count"] {
                names.insert(format!("berth_cluster_{n}{s}"));
            }
        }
    }
    let mut missing = Vec::new();
    for e in &exprs {
        for (i, _) in e.match_indices("berth_") {
            let name: String = e[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if name.ends_with('_') || e[..i].ends_with(['"', '-', '/']) {
                continue; // a label value or a word in a description, not a metric
            }
            if !names.contains(&name) {
                missing.push(name);
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "not exported: {missing:?}\nexported: {names:?}");
    drop(admin);
}

/// `docker-compose up` of the whole stack on the host network: push an image, see it in
/// Postgres through the admin API, tiered to S3 and scanned; `down`, `up` again, pull.
/// Berth's images built from the host's binaries (the helpers are built by compose on the
/// same base), and a copy of deploy/compose with this machine's CA trusted during the helper
/// builds (package mirrors here sit behind a TLS-intercepting proxy).
fn compose_dir(d: &Dockerd, tmp: &Path) -> std::path::PathBuf {
    let target = berth_bin().parent().unwrap().to_path_buf();
    let mut c = Command::new("bash");
    c.arg(repo_root().join("deploy/docker/build.sh")).arg("dev").arg(&target).env("DOCKER_HOST", &d.host);
    run_cmd(&mut c);
    let dir = tmp.join("compose");
    run_cmd(Command::new("cp").arg("-r").arg(repo_root().join("deploy/compose")).arg(&dir));
    if Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        std::fs::copy("/etc/ssl/certs/ca-certificates.crt", dir.join("extra-ca/host.crt")).unwrap();
    }
    dir
}

#[test]
fn compose_cluster_three_nodes_behind_haproxy() {
    if !(have("dockerd") && have("docker-compose") && have("mmdebstrap")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..10).map(|_| free_port()).collect();
    let lb = format!("http://127.0.0.1:{}", ports[0]);
    let d = Dockerd::start(&tmp.path().join("docker"), &format!("127.0.0.1:{}", ports[0]));
    let dir = compose_dir(&d, tmp.path());
    let dotenv = dir.join("cluster.env");
    std::fs::write(
        &dotenv,
        format!(
            "BERTH_PORT={}\nNODE_A_PORT={}\nNODE_B_PORT={}\nNODE_C_PORT={}\nNODE_A_INTERNAL_PORT={}\n\
             NODE_B_INTERNAL_PORT={}\nNODE_C_INTERNAL_PORT={}\nBERTH_ADMIN_PORT={}\nPOSTGRES_PORT={}\nS3_PORT={}\n\
             BERTH_INTERNAL_TOKEN=t-internal-0123456789abcdef0123456789\nBERTH_ADMIN_API_TOKEN=t-admin-0123456789abcdef0123\n\
             POSTGRES_PASSWORD=t-pg\nS3_SECRET_KEY=t-s3\nBUILD_BASE=berth-base:bookworm\n",
            ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6], ports[7], ports[8], ports[9]
        ),
    )
    .unwrap();
    let project = format!("bc{}", ports[0]);
    let compose = |args: &[&str]| {
        let mut c = Command::new("docker-compose");
        c.args(["-p", &project, "-f"]).arg(dir.join("cluster.yaml")).arg("--env-file").arg(&dotenv).args(args);
        c.env("DOCKER_HOST", &d.host);
        run_cmd(&mut c)
    };
    compose(&["build", "-q", "postgres", "s3", "haproxy"]);
    compose(&["up", "-d"]);
    let node = |i: usize| format!("http://127.0.0.1:{}", ports[1 + i]);
    wait_for("the balancer and three ready nodes", 120, || {
        (0..3).all(|i| {
            try_http(&ureq::agent(), "GET", &format!("{}/readyz", node(i)), &[], None).is_ok_and(|r| r.status == 200)
        }) && try_http(&ureq::agent(), "GET", &format!("{lb}/v2/"), &[], None).is_ok_and(|r| r.status == 200)
    });
    // Pushed through the balancer (its requests spread over the nodes), pulled from each node.
    let mut pushed = Vec::new();
    for i in 0..3u64 {
        let tag = format!("v{i}");
        pushed.push((tag.clone(), common::fleet::push_image_at(&lb, "cl/app", &tag, &[noise(i, 40_000)]).unwrap()));
    }
    for i in 0..3 {
        for (tag, digest) in &pushed {
            assert_eq!(&common::fleet::pull_image_at(&node(i), "cl/app", tag).unwrap(), digest, "{tag} on node {i}");
        }
    }
    // One node stopped: the balancer drops it, pushes and pulls go on.
    compose(&["stop", "node-b"]);
    let mut next = None;
    wait_for("a push through the balancer without node b", 30, || {
        next = common::fleet::push_image_at(&lb, "cl/app", "after-stop", &[noise(9, 40_000)]).ok();
        next.is_some()
    });
    pushed.push(("after-stop".into(), next.unwrap()));
    for (tag, digest) in &pushed {
        match common::fleet::pull_image_at(&lb, "cl/app", tag) {
            Ok(d) => assert_eq!(&d, digest),
            Err(e) => panic!("{e}\n{}", compose(&["logs", "--no-color", "node-a", "node-c"])),
        }
    }
    // The sidecar (following node a) sees the whole cluster's pushes.
    let admin = format!("http://127.0.0.1:{}", ports[7]);
    wait_for("the sidecar to record the repository's 4 tags", 120, || {
        let Ok(r) = try_http(
            &ureq::agent(),
            "GET",
            &format!("{admin}/api/v1/repositories"),
            &[("Authorization", "Bearer t-admin-0123456789abcdef0123")],
            None,
        ) else {
            return false;
        };
        serde_json::from_slice::<serde_json::Value>(&r.body).is_ok_and(|v| {
            v["repositories"].as_array().is_some_and(|rs| rs.iter().any(|r| r["name"] == "cl/app" && r["tags"] == 4))
        })
    });
    // Every node and the balancer stopped and started again (moto, the stack's S3 server,
    // keeps objects in memory: it stays up): everything pulls from every node, b caught up.
    compose(&["stop", "haproxy", "admin", "node-a", "node-b", "node-c"]);
    compose(&["up", "-d"]);
    wait_for("three ready nodes again", 120, || {
        (0..3).all(|i| {
            try_http(&ureq::agent(), "GET", &format!("{}/readyz", node(i)), &[], None).is_ok_and(|r| r.status == 200)
        })
    });
    for i in 0..3 {
        for (tag, digest) in &pushed {
            assert_eq!(&common::fleet::pull_image_at(&node(i), "cl/app", tag).unwrap(), digest, "{tag} on node {i}");
        }
    }
    compose(&["down", "-v"]);
}

#[test]
fn compose_stack_up_push_down_up_pull() {
    if !(have("dockerd") && have("docker-compose") && have("mmdebstrap") && have("trivy") && have("go")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let reg = format!("127.0.0.1:{}", ports[0]);
    let d = Dockerd::start(&tmp.path().join("docker"), &reg);
    let env = |c: &mut Command| {
        c.env("DOCKER_HOST", &d.host);
    };
    let dir = compose_dir(&d, tmp.path());
    let dotenv = dir.join(".env");
    std::fs::write(
        &dotenv,
        format!(
            "BERTH_PORT={}\nBERTH_INTERNAL_PORT={}\nBERTH_ADMIN_PORT={}\nPOSTGRES_PORT={}\nS3_PORT={}\nTRIVY_PORT={}\n\
             BERTH_ADMIN_API_TOKEN=t-admin-0123456789abcdef0123\nPOSTGRES_PASSWORD=t-pg\nS3_SECRET_KEY=t-s3\nTRIVY_TOKEN=t-trivy\n\
             TRIVY_SKIP_DB_UPDATE=true\nBUILD_BASE=berth-base:bookworm\n",
            ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
        ),
    )
    .unwrap();
    let project = format!("bt{}", ports[0]);
    let compose = |args: &[&str]| {
        let mut c = Command::new("docker-compose");
        c.args(["-p", &project, "-f"]).arg(dir.join("compose.yaml")).arg("--env-file").arg(&dotenv).args(args);
        env(&mut c);
        run_cmd(&mut c)
    };
    compose(&["build", "-q", "postgres", "s3", "trivy"]);
    // Offline Trivy: the tests' vulnerability DB in the trivy volume.
    let db = tmp.path().join("trivydb");
    run_cmd(
        Command::new("python3")
            .arg(common::trivy::fixtures())
            .arg("db")
            .arg(&db)
            .env("BERTH_MKDB", common::trivy::mkdb()),
    );
    d.ok(&["volume", "create", &format!("{project}_trivy")]);
    d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &format!("{project}_trivy:/v"),
        "-v",
        &format!("{}:/src:ro", db.display()),
        "berth-base:bookworm",
        "sh",
        "-c",
        "mkdir -p /v/db && cp /src/db/trivy.db /src/db/metadata.json /v/db/ && chown -R 10001:10001 /v",
    ]);
    compose(&["up", "-d"]);
    let admin = format!("http://127.0.0.1:{}", ports[2]);
    let get_admin = |path: &str| -> serde_json::Value {
        let r =
            http("GET", &format!("{admin}{path}"), &[("Authorization", "Bearer t-admin-0123456789abcdef0123")], None);
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
    };
    wait_for("the admin API", 120, || ureq::get(&format!("{admin}/metrics")).call().is_ok());
    let (digest, _) = common::trivy::push_fixture(&format!("http://{reg}"), "stack/app", "v1", "debian", None);
    wait_for("the image in Postgres", 60, || {
        get_admin("/api/v1/repositories")["repositories"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["name"] == "stack/app"))
    });
    let metric = |name: &str| -> f64 {
        // Metrics are on the internal listener (BERTH_INTERNAL_PORT), not the registry port.
        let text =
            String::from_utf8(http("GET", &format!("http://127.0.0.1:{}/metrics", ports[1]), &[], None).body).unwrap();
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    wait_for("tiering to S3", 60, || {
        metric("berth_tier_uploads_total") >= 4.0 && metric("berth_tier_pending_blobs") == 0.0
    });
    wait_for("the scan", 120, || {
        let r = http("GET", &format!("http://{reg}/v2/stack/app/manifests/v1/scan"), &[], None);
        serde_json::from_slice::<serde_json::Value>(&r.body).is_ok_and(|v| v["status"] == "completed")
    });
    // down keeps the volumes; up again and pull what was pushed.
    compose(&["down"]);
    compose(&["up", "-d"]);
    wait_for("the node again", 120, || ureq::get(&format!("http://{reg}/v2/")).call().is_ok());
    let r = http("GET", &format!("http://{reg}/v2/stack/app/manifests/{digest}"), &[], None);
    assert_eq!(r.status, 403, "the scan verdict (critical) survived the restart");
    let (addr, token) = (
        d.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{project}_berth-data:/d:ro"),
            "berth-base:bookworm",
            "cat",
            "/d/internal.addr",
        ]),
        d.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{project}_berth-data:/d:ro"),
            "berth-base:bookworm",
            "cat",
            "/d/internal.token",
        ]),
    );
    let m = http(
        "GET",
        &format!("http://{}/v2/stack/app/manifests/{digest}", addr.trim()),
        &[("Authorization", &format!("Bearer {}", token.trim()))],
        None,
    );
    assert_eq!(m.status, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        let b = http("GET", &format!("http://{reg}/v2/stack/app/blobs/{}", l["digest"].as_str().unwrap()), &[], None);
        assert_eq!(b.status, 200);
        assert_eq!(sha256(&b.body), l["digest"].as_str().unwrap());
    }
    compose(&["down", "-v"]);
}
