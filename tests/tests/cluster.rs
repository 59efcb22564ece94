//! Scale-out (#16): three node processes on one Postgres and one S3 bucket (moto, behind a
//! fault proxy), with HAProxy round-robin in front — every client request may land on any
//! node. Real clients (docker, skopeo, podman) push and pull through the balancer; chunked
//! uploads alternate nodes; a pull on one node of what was just pushed through another;
//! kill -9 of nodes (the GC lease holder included) during pushes and pulls; a paused GC
//! fenced off by its successor; Postgres and S3 outages.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fleet::*;
use common::*;

#[test]
fn three_nodes_behind_a_balancer_act_as_one_registry() {
    let _serial = one_fleet();
    let Some(f) = Fleet::start(3, true, &[]) else { return };
    let (a, b, c) = (&f.nodes[0], &f.nodes[1], &f.nodes[2]);
    // Reliability round 2, item 17: the schema's "already exists, skipping" NOTICEs of every
    // node after the first are not logged.
    for n in [a, b, c] {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        assert!(!log.contains("already exists, skipping"), "{log}");
    }

    // A chunked upload whose requests go to a, b, c, then b: forwarded to the owner.
    let data = noise(1, 3 << 20);
    let digest = sha256(&data);
    let r = upload_step(&a.url("/v2/team/chunked/blobs/uploads/"), "POST", &[], None, 202);
    let loc = r.header("location").unwrap().to_string();
    let third = data.len() / 3;
    let r = upload_step(
        &format!("{}{loc}", base(b)),
        "PATCH",
        &[("Content-Range", &format!("0-{}", third - 1)), ("Content-Type", "application/octet-stream")],
        Some(&data[..third]),
        202,
    );
    assert_eq!(r.header("range"), Some(format!("0-{}", third - 1).as_str()));
    let loc = r.header("location").unwrap().to_string();
    let r = upload_step(
        &format!("{}{loc}", base(c)),
        "PATCH",
        &[("Content-Range", &format!("{third}-{}", 2 * third - 1))],
        Some(&data[third..2 * third]),
        202,
    );
    let loc = r.header("location").unwrap().to_string();
    let r = upload_step(&format!("{}{loc}", base(c)), "GET", &[], None, 204);
    assert_eq!(r.header("range"), Some(format!("0-{}", 2 * third - 1).as_str()));
    upload_step(&format!("{}{loc}?digest={digest}", base(b)), "PUT", &[], Some(&data[2 * third..]), 201);
    for n in [a, b, c] {
        let r = http("GET", &n.url(&format!("/v2/team/chunked/blobs/{digest}")), &[], None);
        assert_eq!(r.status, 200, "blob on {}", n.addr);
        assert_eq!(sha256(&r.body), digest);
    }
    assert!(
        metric(b, "berth_cluster_forwarded_total{result=\"ok\"}")
            + metric(c, "berth_cluster_forwarded_total{result=\"ok\"}")
            >= 3.0
    );
    // The cluster as a node sees it: three live nodes, none behind after a moment.
    wait_for("every node to report its position", 10, || {
        let v = cluster_view(c);
        v["node"] == "c"
            && v["applied_seq"] == v["head_seq"]
            && v["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["live"] == true && n["behind"] == 0))
    });

    // Read-your-writes: a push acknowledged on one node is there on the others at once.
    for i in 0..30usize {
        let (w, r1, r2) = (&f.nodes[i % 3], &f.nodes[(i + 1) % 3], &f.nodes[(i + 2) % 3]);
        let tag = format!("t{i}");
        let pushed = push_image_at(&base(w), "team/ryw", &tag, &[noise(100 + i as u64, 4096)]).unwrap();
        for n in [r1, r2] {
            assert_eq!(pull_image_at(&base(n), "team/ryw", &tag).unwrap(), pushed, "{tag} on {}", n.addr);
        }
    }
    // A moved tag is seen moved everywhere.
    let moved = push_image_at(&base(a), "team/ryw", "t0", &[noise(999, 100)]).unwrap();
    for n in [b, c] {
        assert_eq!(pull_image_at(&base(n), "team/ryw", "t0").unwrap(), moved);
    }

    // Chunked pushes through the balancer (round robin: consecutive requests, other nodes).
    let lb = f.lb().url("");
    for i in 0..3u64 {
        let data = noise(50 + i, 1 << 20);
        let digest = sha256(&data);
        let r = upload_step(&f.lb().url("/v2/team/lb/blobs/uploads/"), "POST", &[], None, 202);
        let mut loc = r.header("location").unwrap().to_string();
        for (k, part) in data.chunks(256 << 10).enumerate() {
            let start = k * (256 << 10);
            let range = format!("{start}-{}", start + part.len() - 1);
            let r = upload_step(&format!("{lb}{loc}"), "PATCH", &[("Content-Range", &range)], Some(part), 202);
            loc = r.header("location").unwrap().to_string();
        }
        upload_step(&format!("{lb}{loc}?digest={digest}"), "PUT", &[], None, 201);
        for n in [a, b, c] {
            assert_eq!(sha256(&http("GET", &n.url(&format!("/v2/team/lb/blobs/{digest}")), &[], None).body), digest);
        }
    }

    // Real clients through the balancer: skopeo pushes, podman pulls, re-tags and pushes
    // (a cross-repository mount), docker pushes a big-layer image and pulls it back; every
    // node then serves every image.
    let lb_host = format!("127.0.0.1:{}", f.lb().port);
    let work = f.tmp.path().join("clients");
    let layout = work.join("layout");
    let layers = make_oci_layout(&layout, "v1", 3, 300_000);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{lb_host}/skopeo/app:v1")));
    for n in [a, b, c] {
        let out = work.join(format!("back-{}", n.port));
        run(Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/skopeo/app:v1", n.addr))
            .arg(format!("oci:{}:v1", out.display())));
        assert_layout_has(&out, &layers);
    }
    let p = work.join("podman");
    podman_ok(&p, &["pull", "--tls-verify=false", &format!("{lb_host}/skopeo/app:v1")]);
    podman_ok(&p, &["tag", &format!("{lb_host}/skopeo/app:v1"), &format!("{lb_host}/podman/app:v2")]);
    podman_ok(&p, &["push", "--tls-verify=false", &format!("{lb_host}/podman/app:v2")]);
    podman_ok(&p, &["rmi", "-a", "-f"]);
    podman_ok(&p, &["pull", "--tls-verify=false", &format!("{lb_host}/podman/app:v2")]);
    for n in [a, b, c] {
        for l in &layers {
            let r = http("GET", &n.url(&format!("/v2/podman/app/blobs/{}", sha256(l))), &[], None);
            assert_eq!(&r.body, l, "podman/app on {}", n.addr);
        }
    }
    let d = Dockerd::start(&work.join("docker"), &lb_host);
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("big.bin"), noise(7, 6 << 20)).unwrap();
    let tar = work.join("rootfs.tar");
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&rootfs).arg("."));
    d.ok(&["import", tar.to_str().unwrap(), "base:latest"]);
    let img = format!("{lb_host}/docker/app:v1");
    d.ok(&["tag", "base:latest", &img]);
    let pushed = d.ok(&["push", &img]);
    assert!(pushed.contains("v1: digest: sha256:"), "{pushed}");
    d.ok(&["rmi", &img, "base:latest"]);
    d.ok(&["pull", &img]);
    for n in [a, b, c] {
        let r = http("GET", &n.url("/v2/docker/app/tags/list"), &[], None);
        assert!(String::from_utf8_lossy(&r.body).contains("v1"), "{}", n.addr);
        pull_docker_image(&base(n), "docker/app", "v1");
    }
}

#[test]
fn kill9_of_nodes_during_pushes_and_pulls_loses_nothing_acknowledged() {
    let _serial = one_fleet();
    let Some(mut f) = Fleet::start(3, true, &[]) else { return };
    let lb = f.lb().url("");
    let base_digest = push_image_at(&lb, "load/base", "v0", &[noise(1, 200_000), noise(2, 50_000)]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, String, Instant)>::new()));
    let pulls = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let mut threads = Vec::new();
    for t in 0..2u64 {
        let (stop, acked, lb) = (stop.clone(), acked.clone(), lb.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let tag = format!("p{t}-{i}");
                if let Ok(d) = push_image_at(&lb, "load/app", &tag, &[noise(t * 1_000_000 + i, 20_000)]) {
                    acked.lock().unwrap().push((tag, d, Instant::now()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }));
    }
    {
        let (stop, pulls, lb, want) = (stop.clone(), pulls.clone(), lb.clone(), base_digest.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match pull_image_at(&lb, "load/base", "v0") {
                    Ok(d) if d == want => pulls.0.fetch_add(1, Ordering::Relaxed),
                    _ => pulls.1.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let acked_since = |t: Instant| acked.lock().unwrap().iter().filter(|(_, _, at)| *at > t).count();
    let first_ack_after = |t: Instant| {
        let deadline = t + Duration::from_secs(20);
        loop {
            if let Some((_, _, at)) = acked.lock().unwrap().iter().find(|(_, _, at)| *at > t) {
                return at.duration_since(t);
            }
            assert!(Instant::now() < deadline, "pushes did not resume");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    std::thread::sleep(Duration::from_secs(2));
    // Each node in turn: kill -9 under load, check pushes go on, bring it back.
    let mut resumed = Vec::new();
    let mut pull_failures = Vec::new();
    for victim in [1usize, 2, 0] {
        let failed_before = pulls.1.load(Ordering::Relaxed);
        let killed = Instant::now();
        f.nodes[victim].kill9();
        resumed.push(first_ack_after(killed));
        std::thread::sleep(Duration::from_secs(2));
        assert!(acked_since(killed) > 5, "pushes go on without node {victim}");
        f.nodes[victim].restart();
        std::thread::sleep(Duration::from_secs(2));
        pull_failures.push(pulls.1.load(Ordering::Relaxed) - failed_before);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "acked pushes {}, pulls ok {} failed {:?}, first push acknowledged after each kill: {resumed:?}",
        acked.len(),
        pulls.0.load(Ordering::Relaxed),
        pull_failures
    );
    // Pulls went on through the others: at most the requests in flight on the victim failed.
    for n in &pull_failures {
        assert!(*n <= 3, "pull failures per kill: {pull_failures:?}");
    }
    for r in &resumed {
        assert!(*r < Duration::from_secs(5), "pushes resumed after {resumed:?}");
    }
    // Every acknowledged image pulls completely, with the acknowledged digest, from every node.
    for n in &f.nodes {
        for (tag, d, _) in &acked {
            assert_eq!(pull_image_at(&base(n), "load/app", tag).as_ref(), Ok(d), "{tag} on {}", n.addr);
        }
    }
    // The admin sidecar following node a sees every image; its check passes.
    // The sidecar reads the node's token from its data directory (here it is configured).
    std::fs::write(f.nodes[0].dir.join("internal.token"), TOKEN).unwrap();
    let admin = common::pg::Admin::start(&f.pg, &f.nodes[0].dir, f.tmp.path().join("admin.log"), &[]);
    // (A push in flight on a killed node may have committed without its answer: count the
    // node's tags, not the acknowledged pushes.)
    let tags = serde_json::from_slice::<serde_json::Value>(
        &http("GET", &f.nodes[0].url("/v2/load/app/tags/list"), &[], None).body,
    )
    .unwrap()["tags"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert!(tags >= acked.len() as u64);
    wait_for("the sidecar to sync every tag", 60, || {
        let (_, v) = admin.get("/api/v1/repositories");
        v["repositories"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["name"] == "load/app" && r["tags"].as_u64() == Some(tags)))
    });
    // `berth-admin check`: Postgres compared with the node's index, no difference.
    let out = admin.command(&["check"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    drop(admin);
    for n in f.nodes.iter_mut() {
        fsck_clean(n);
    }
}

#[test]
fn gc_lease_moves_on_when_its_holder_dies_and_a_paused_holder_is_fenced() {
    let _serial = one_fleet();
    let Some(mut f) = Fleet::start(2, false, &[]) else { return };
    let (a, b) = (base(&f.nodes[0]), base(&f.nodes[1]));
    let kept = push_image_at(&a, "gc/kept", "v1", &[noise(1, 10_000)]).unwrap();
    // Garbage: images whose manifests are deleted.
    let mut junk = Vec::new();
    for i in 0..60u64 {
        let d = push_image_at(
            if i % 2 == 0 { &a } else { &b },
            "gc/junk",
            &format!("j{i}"),
            &[noise(1000 + i, 2000), noise(5000 + i, 2000)],
        )
        .unwrap();
        junk.push(d);
    }
    for d in &junk {
        assert_eq!(http("DELETE", &format!("{b}/v2/gc/junk/manifests/{d}"), &[], None).status, 202);
    }

    // A paused holder: a runs GC and is stopped mid-run; b takes the lease once it expires.
    let s0 = f.pg.query("SELECT coalesce(max(seq), 0) FROM cluster_changes").trim().to_string();
    let job_a = start_gc(&f.nodes[0], 0).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let pid_a = f.nodes[0].pid();
    signal(pid_a, 19); // SIGSTOP
    let paused = Instant::now();
    let err = start_gc(&f.nodes[1], 0).unwrap_err();
    let job_b = if err.0 == 409 {
        assert!(err.1.contains("holds the gc lease"), "{err:?}");
        let mut job = None;
        wait_for("b to take the GC lease", 15, || {
            job = start_gc(&f.nodes[1], 0).ok();
            job.is_some()
        });
        job.unwrap()
    } else {
        panic!("{err:?}")
    };
    let failover = paused.elapsed();
    let report_b = gc_job(&f.nodes[1], &job_b);
    assert_eq!(report_b["state"], "succeeded", "{report_b}");
    signal(pid_a, 18); // SIGCONT
    let report_a = gc_job(&f.nodes[0], &job_a);
    eprintln!("GC lease failover after a paused holder: {failover:?}; a's run: {}", report_a["state"]);
    assert!(failover < Duration::from_secs(6), "{failover:?}");
    // The paused run, resumed, is fenced off (its lease is b's now) or its commit outlived the
    // commit timeout while it was paused; or it finds everything left already gone (b applied
    // it) and commits nothing more. Whatever it reports, it wrote nothing after b took over.
    if report_a["state"] != "succeeded" {
        let e = report_a["error"].as_str().unwrap_or_default();
        assert!(e.contains("lease") || e.contains("timed out") || e.contains("postgres"), "{report_a}");
    }
    let late = f.pg.query(&format!(
        "SELECT count(*) FROM cluster_changes WHERE origin = 'a' AND seq > {s0} AND seq > \
         (SELECT coalesce(min(seq), 0) FROM cluster_changes WHERE origin = 'b' AND seq > {s0})"
    ));
    let before = f.pg.query(&format!("SELECT count(*) FROM cluster_changes WHERE origin = 'a' AND seq > {s0}"));
    eprintln!("deletions the paused GC committed before it was paused: {}", before.trim());
    assert_eq!(late.trim(), "0", "the paused GC wrote after its successor started");

    // A dead holder: b runs GC, is killed; a takes over within the lease's lifetime.
    for i in 0..20u64 {
        let d = push_image_at(&a, "gc/junk2", &format!("k{i}"), &[noise(9000 + i, 2000)]).unwrap();
        assert_eq!(http("DELETE", &format!("{a}/v2/gc/junk2/manifests/{d}"), &[], None).status, 202);
    }
    let _ = start_gc(&f.nodes[1], 0).unwrap();
    f.nodes[1].kill9();
    let killed = Instant::now();
    let mut job = None;
    wait_for("a to take the GC lease", 15, || {
        job = start_gc(&f.nodes[0], 0).ok();
        job.is_some()
    });
    let failover = killed.elapsed();
    eprintln!("GC lease failover after kill -9 of its holder: {failover:?}");
    assert_eq!(gc_job(&f.nodes[0], &job.unwrap())["state"], "succeeded");
    f.nodes[1].restart();
    // Garbage is gone everywhere (once each node applied the removals), in S3 too; the kept
    // image pulls from both nodes.
    converged(&f.nodes.iter().collect::<Vec<_>>());
    for n in &f.nodes {
        assert_eq!(pull_image_at(&base(n), "gc/kept", "v1").unwrap(), kept);
        for i in 0..60u64 {
            let d = sha256(&noise(1000 + i, 2000));
            assert_eq!(http("GET", &n.url(&format!("/v2/gc/junk/blobs/{d}")), &[], None).status, 404);
        }
    }
    // Neither the blobs nor their repository links are left in the bucket.
    let keys = f._moto.keys(BUCKET, "");
    for i in 0..60u64 {
        let d = sha256(&noise(1000 + i, 2000));
        let left: Vec<_> = keys.iter().filter(|k| k.contains(d.trim_start_matches("sha256:"))).collect();
        assert!(left.is_empty(), "{d} still in S3: {left:?}");
    }
    for n in f.nodes.iter_mut() {
        fsck_clean(n);
    }
}

#[test]
fn gc_never_removes_what_another_node_just_received() {
    let _serial = one_fleet();
    let Some(mut f) = Fleet::start(3, false, &[]) else { return };
    let (a, b, c) = (base(&f.nodes[0]), base(&f.nodes[1]), base(&f.nodes[2]));
    // Deterministic first: GC's removal of a layer and c's push of the same layer queue on the
    // log's append lock (held here by the test) in that order; c found the S3 object before
    // GC deleted it. c must upload it again before its commit lands.
    let config_of =
        |tag: &str| sha256(format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}").as_bytes());
    let layer = (0..).map(|seed| noise(40_000 + seed, 30_000)).find(|l| sha256(l) < config_of("gone")).unwrap();
    let d = push_image_at(&a, "race/app", "gone", std::slice::from_ref(&layer)).unwrap();
    assert_eq!(http("DELETE", &format!("{a}/v2/race/app/manifests/{d}"), &[], None).status, 202);
    let mut holder = hold_append_lock(&f.pg);
    let gc_id = start_gc(&f.nodes[1], 0).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (c2, l2) = (c.clone(), layer.clone());
    let pusher = std::thread::spawn(move || push_blob_at(&c2, "race/again", &l2));
    holder.wait().unwrap();
    assert_eq!(gc_job(&f.nodes[1], &gc_id)["state"], "succeeded");
    let pushed = pusher.join().unwrap().unwrap();
    for n in [&a, &b, &c] {
        let r = http("GET", &format!("{n}/v2/race/again/blobs/{pushed}"), &[], None);
        assert_eq!((r.status, sha256(&r.body)), (200, pushed.clone()), "the re-pushed layer on {n}");
    }
    // The other order: c's push of a garbage layer commits first, GC (planned without it)
    // second: GC must see the layer was touched since its plan and keep it.
    let layer2 = noise(60_000, 30_000);
    let d = push_image_at(&a, "race/app", "gone2", std::slice::from_ref(&layer2)).unwrap();
    assert_eq!(http("DELETE", &format!("{a}/v2/race/app/manifests/{d}"), &[], None).status, 202);
    let mut holder = hold_append_lock(&f.pg);
    let (c2, l2) = (c.clone(), layer2.clone());
    let pusher = std::thread::spawn(move || push_blob_at(&c2, "race/again", &l2));
    std::thread::sleep(Duration::from_millis(500));
    let gc_id = start_gc(&f.nodes[1], 0).unwrap();
    holder.wait().unwrap();
    let report = gc_job(&f.nodes[1], &gc_id);
    assert_eq!(report["state"], "succeeded");
    let pushed = pusher.join().unwrap().unwrap();
    assert!(report["report"]["kept_in_use"].as_u64().unwrap() >= 1, "{report}");
    for n in [&a, &b, &c] {
        let r = http("GET", &format!("{n}/v2/race/again/blobs/{pushed}"), &[], None);
        assert_eq!((r.status, sha256(&r.body)), (200, pushed.clone()), "the pushed layer on {n}");
    }
    // A manifest validated on c against a layer GC removes before c's commit: refused, never
    // stored pointing at nothing.
    let layer3 = (0..).map(|seed| noise(80_000 + seed, 30_000)).find(|l| sha256(l) < config_of("gone3")).unwrap();
    let d = push_image_at(&a, "race/app", "gone3", std::slice::from_ref(&layer3)).unwrap();
    let old_manifest = http(
        "GET",
        &format!("{a}/v2/race/app/manifests/{d}"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        None,
    )
    .body;
    assert_eq!(http("DELETE", &format!("{a}/v2/race/app/manifests/{d}"), &[], None).status, 202);
    let mut holder = hold_append_lock(&f.pg);
    let gc_id = start_gc(&f.nodes[1], 0).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let c2 = c.clone();
    let pusher = std::thread::spawn(move || {
        http(
            "PUT",
            &format!("{c2}/v2/race/app/manifests/again3"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            Some(&old_manifest),
        )
    });
    holder.wait().unwrap();
    assert_eq!(gc_job(&f.nodes[1], &gc_id)["state"], "succeeded");
    let r = pusher.join().unwrap();
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("MANIFEST_BLOB_UNKNOWN"));

    let mut acked = Vec::new();
    // b's S3 requests are slow (its GC deletes objects while holding the log's append lock):
    // c's push of the same layer finds the object still there, then waits for that lock.
    // Without the re-upload check c's commit would land after the object was deleted.
    f.s3[1].set_rate(2000);
    for round in 0..6u64 {
        // An image whose manifest is deleted: its blobs are garbage...
        let shared = noise(700 + round, 30_000);
        let d = push_image_at(&a, "race/app", &format!("old{round}"), std::slice::from_ref(&shared)).unwrap();
        assert_eq!(http("DELETE", &format!("{a}/v2/race/app/manifests/{d}"), &[], None).status, 202);
        // ...while GC runs on b, c pushes an image made of the same layer.
        let gc = {
            let node_b = &f.nodes[1];
            let id = start_gc(node_b, 0).unwrap();
            let c2 = c.clone();
            let pusher = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                push_image_at(&c2, "race/app", &format!("new{round}"), &[shared])
            });
            let report = gc_job(node_b, &id);
            (report, pusher.join().unwrap())
        };
        assert_eq!(gc.0["state"], "succeeded", "{}", gc.0);
        eprintln!(
            "round {round}: GC removed {} blobs, kept {} in use; the racing push: {:?}",
            gc.0["report"]["blobs"].as_array().map_or(0, |b| b.len()),
            gc.0["report"]["kept_in_use"],
            gc.1.as_ref().map(|_| "acknowledged")
        );
        if let Ok(d) = gc.1 {
            acked.push((format!("new{round}"), d));
        }
    }
    assert!(!acked.is_empty());
    f.s3[1].set_rate(0);
    // A last GC with nothing racing it: every acknowledged image survives it, on every node.
    let id = start_gc(&f.nodes[0], 0).unwrap();
    assert_eq!(gc_job(&f.nodes[0], &id)["state"], "succeeded");
    for n in [&a, &b, &c] {
        for (tag, d) in &acked {
            assert_eq!(pull_image_at(n, "race/app", tag).as_ref(), Ok(d), "{tag} on {n}");
        }
    }
    for n in f.nodes.iter_mut() {
        fsck_clean(n);
    }
}

#[test]
fn postgres_or_s3_outages_degrade_as_documented_and_heal_by_themselves() {
    let _serial = one_fleet();
    let Some(mut f) = Fleet::start(2, false, &[]) else { return };
    let (a, b) = (base(&f.nodes[0]), base(&f.nodes[1]));
    let v1 = push_image_at(&a, "out/app", "v1", &[noise(1, 100_000)]).unwrap();
    assert_eq!(pull_image_at(&b, "out/app", "v1").unwrap(), v1);

    // Postgres down: known content still pulls on both nodes; writes and misses answer 503.
    f.pg.stop_server();
    for n in [&a, &b] {
        assert_eq!(pull_image_at(n, "out/app", "v1").unwrap(), v1);
    }
    let err = push_image_at(&a, "out/app", "v2", &[noise(2, 1000)]).unwrap_err();
    assert!(err.contains("503"), "{err}");
    let r = http("GET", &format!("{b}/v2/out/app/manifests/unknown"), &[], None);
    assert_eq!(r.status, 503, "a miss cannot be answered while the log is unreachable");
    assert!(r.header("retry-after").is_some());
    // A node restarted during the outage serves its last view instead of not starting.
    f.nodes[1].restart();
    assert_eq!(pull_image_at(&b, "out/app", "v1").unwrap(), v1);
    f.pg.start_server();
    let healed = Instant::now();
    let mut v2 = None;
    wait_for("pushes to work again after Postgres is back", 30, || {
        v2 = push_image_at(&a, "out/app", "v2", &[noise(2, 1000)]).ok();
        v2.is_some()
    });
    eprintln!("pushes acknowledged again {:?} after Postgres came back", healed.elapsed());
    assert_eq!(pull_image_at(&b, "out/app", "v2").unwrap(), v2.unwrap());

    // One node cut off from Postgres (the others are not): it serves what it knows and answers
    // 503 for the rest; the other node takes pushes meanwhile; reconnected, b catches up alone.
    f.pgs[1].set_down(true);
    assert_eq!(pull_image_at(&b, "out/app", "v1").unwrap(), v1);
    let during = push_image_at(&a, "out/app", "during", &[noise(4, 1000)]).unwrap();
    let r = http("GET", &format!("{b}/v2/out/app/manifests/during"), &[], None);
    assert_eq!(r.status, 503, "b cannot know about 'during' while cut off");
    assert!(push_image_at(&b, "out/app", "from-b", &[noise(5, 1000)]).unwrap_err().contains("503"));
    f.pgs[1].set_down(false);
    wait_for("b to catch up after the partition", 30, || {
        pull_image_at(&b, "out/app", "during").as_ref() == Ok(&during)
    });
    wait_for("b to take pushes again", 30, || push_image_at(&b, "out/app", "from-b", &[noise(5, 1000)]).is_ok());
    assert!(pull_image_at(&a, "out/app", "from-b").is_ok());

    // S3 down: with durability = "s3" a push is not acknowledged; local content still pulls.
    f.s3.iter().for_each(|p| p.set_down(true));
    let err = push_image_at(&b, "out/app", "v3", &[noise(3, 1000)]).unwrap_err();
    assert!(err.contains("503"), "{err}");
    assert_eq!(pull_image_at(&a, "out/app", "v1").unwrap(), v1);
    f.s3.iter().for_each(|p| p.set_down(false));
    let mut v3 = None;
    wait_for("pushes to work again after S3 is back", 30, || {
        v3 = push_image_at(&b, "out/app", "v3", &[noise(3, 1000)]).ok();
        v3.is_some()
    });
    assert_eq!(pull_image_at(&a, "out/app", "v3").unwrap(), v3.unwrap());
}

#[test]
fn durability_local_acknowledges_before_s3_and_reports_the_exposure() {
    let _serial = one_fleet();
    let Some(f) = Fleet::start(2, false, &[("BERTH_CLUSTER__DURABILITY", "local")]) else { return };
    let (a, b) = (base(&f.nodes[0]), base(&f.nodes[1]));
    // S3 unreachable from a: the push is still acknowledged (local fsync + Postgres commit).
    f.s3[0].set_down(true);
    let layer = noise(5, 200_000);
    let v1 = push_image_at(&a, "local/app", "v1", std::slice::from_ref(&layer)).unwrap();
    // The exposure: bytes acknowledged but only on a's disk.
    assert!(metric(&f.nodes[0], "berth_tier_pending_bytes") >= layer.len() as f64);
    // b knows the image (the log); S3 does not have the bytes yet: b streams them from a.
    assert_eq!(pull_image_at(&b, "local/app", "v1").unwrap(), v1);
    assert_eq!(pull_image_at(&a, "local/app", "v1").unwrap(), v1);
    // With a gone too, b cannot know the bytes: 503 and Retry-After, never 404.
    let mut f = f;
    f.nodes[0].kill9();
    let r = http("GET", &format!("{b}/v2/local/app/blobs/{}", sha256(&layer)), &[], None);
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    f.nodes[0].restart();
    // S3 back: a's queue drains by itself, then b serves it.
    f.s3[0].set_down(false);
    wait_for("a's tier queue to drain", 60, || metric(&f.nodes[0], "berth_tier_pending_bytes") == 0.0);
    assert_eq!(pull_image_at(&b, "local/app", "v1").unwrap(), v1);
}

#[test]
fn tags_and_lists_read_on_a_lagging_node_see_every_acknowledged_push() {
    let _serial = one_fleet();
    let Some(f) = Fleet::start(2, false, &[]) else { return };
    let (a, b) = (&f.nodes[0], &f.nodes[1]);
    let v1 = push_image_at(&base(a), "fresh/app", "latest", &[noise(70, 2000)]).unwrap();
    assert_eq!(pull_image_at(&base(b), "fresh/app", "latest").unwrap(), v1);

    // b hears of commits 50 ms late (each packet between b and Postgres is held that long):
    // without asking the log first, b would answer each read right after a push with its
    // stale view.
    f.pgs[1].set_delay(50);
    let started = Instant::now();
    let v2 = push_image_at(&base(a), "fresh/app", "latest", &[noise(71, 2000)]).unwrap();
    let r = http("HEAD", &b.url("/v2/fresh/app/manifests/latest"), &[], None);
    assert_eq!(r.header("docker-content-digest"), Some(v2.as_str()), "the moved tag on b");
    push_image_at(&base(a), "fresh/app", "second", &[noise(72, 2000)]).unwrap();
    let tags = http("GET", &b.url("/v2/fresh/app/tags/list"), &[], None);
    assert!(String::from_utf8_lossy(&tags.body).contains("\"second\""), "{}", String::from_utf8_lossy(&tags.body));
    push_image_at(&base(a), "fresh/new-repo", "v1", &[noise(73, 2000)]).unwrap();
    let r = http("GET", &b.url("/v2/fresh/new-repo/tags/list"), &[], None);
    assert_eq!(r.status, 200, "a repository created on a, listed on b");
    let catalog = http("GET", &b.url("/v2/_catalog"), &[], None);
    assert!(String::from_utf8_lossy(&catalog.body).contains("fresh/new-repo"));
    assert!(started.elapsed() < Duration::from_secs(10));
    let fresh = metric(b, "berth_cluster_fresh_reads_total{result=\"fresh\"}");
    assert!(fresh >= 4.0, "{fresh}: the reads did not all ask the log");
    // A deleted tag is gone on b too.
    let r = http("DELETE", &a.url("/v2/fresh/app/manifests/second"), &[], None);
    assert_eq!(r.status, 202);
    assert_eq!(http("GET", &b.url("/v2/fresh/app/manifests/second"), &[], None).status, 404);
    f.pgs[1].set_delay(0);

    // b cut off from Postgres: tag reads go on from b's own view (after at most one
    // postgres_timeout for the first), counted as stale; misses answer 503, not 404.
    f.pgs[1].set_down(true);
    let started = Instant::now();
    for _ in 0..5 {
        let r = http("HEAD", &b.url("/v2/fresh/app/manifests/latest"), &[], None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("docker-content-digest"), Some(v2.as_str()));
    }
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    assert!(metric(b, "berth_cluster_fresh_reads_total{result=\"stale\"}") >= 4.0);
    assert_eq!(http("GET", &b.url("/v2/fresh/app/manifests/nope"), &[], None).status, 503);
    // Back: fresh again without anyone's help.
    f.pgs[1].set_down(false);
    let v3 = push_image_at(&base(a), "fresh/app", "latest", &[noise(74, 2000)]).unwrap();
    wait_for("b to read through the log again", 30, || {
        http("HEAD", &b.url("/v2/fresh/app/manifests/latest"), &[], None).header("docker-content-digest")
            == Some(v3.as_str())
    });
}

#[test]
fn uploads_are_forwarded_between_nodes_over_tls() {
    let _serial = one_fleet();
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::new(&dir.path().join("pki"));
    let (ca, cert, key) = (pki.path("ca.pem"), pki.path("srv.pem"), pki.path("srv.key"));
    let extra = [
        ("BERTH_TLS__CERT", cert.as_str()),
        ("BERTH_TLS__KEY", key.as_str()),
        ("BERTH_INTERNAL__TLS", "true"),
        ("BERTH_CLUSTER__CA", ca.as_str()),
    ];
    let Some(f) = Fleet::start_with(2, false, &extra, Some(&ca)) else { return };
    let (a, b) = (format!("https://{}", f.nodes[0].addr), format!("https://{}", f.nodes[1].addr));
    let data = noise(11, 700_000);
    let digest = sha256(&data);
    let (half1, half2) = (dir.path().join("h1"), dir.path().join("h2"));
    std::fs::write(&half1, &data[..350_000]).unwrap();
    std::fs::write(&half2, &data[350_000..]).unwrap();
    let (st, text) = curl(&ca, "POST", &format!("{a}/v2/tls/app/blobs/uploads/"), &[], None);
    assert_eq!(st, 202, "{text}");
    let loc = header_of(&text, "location");
    // Both remaining requests land on b and are forwarded to a over the internal TLS listener.
    let (st, text) = curl(
        &ca,
        "PATCH",
        &format!("{b}{loc}"),
        &["Content-Range: 0-349999", "Content-Type: application/octet-stream"],
        Some(&half1),
    );
    assert_eq!(st, 202, "{text}");
    let loc = header_of(&text, "location");
    let (st, text) = curl(
        &ca,
        "PUT",
        &format!("{b}{loc}?digest={digest}"),
        &["Content-Type: application/octet-stream"],
        Some(&half2),
    );
    assert_eq!(st, 201, "{text}");
    for n in [&a, &b] {
        let out = Command::new("curl")
            .args(["-sf", "--cacert", &ca, &format!("{n}/v2/tls/app/blobs/{digest}")])
            .output()
            .unwrap();
        assert_eq!(sha256(&out.stdout), digest, "the blob on {n}");
    }
}

#[test]
fn gc_records_a_removal_whose_commit_failed_after_its_s3_delete() {
    let _serial = one_fleet();
    let Some(f) = Fleet::start(2, false, &[]) else { return };
    let (a, b) = (base(&f.nodes[0]), base(&f.nodes[1]));
    let mut junk = Vec::new();
    for i in 0..12u64 {
        let layer = noise(70_000 + i, 3000);
        let d = push_image_at(&a, "cut/junk", &format!("j{i}"), std::slice::from_ref(&layer)).unwrap();
        assert_eq!(http("DELETE", &format!("{a}/v2/cut/junk/manifests/{d}"), &[], None).status, 202);
        junk.push(sha256(&layer));
    }
    // b's S3 requests are slow, so its GC spends most of its time inside the S3 deletes that run
    // within each removal's transaction; b's Postgres connections are cut meanwhile.
    f.s3[1].set_delay(150);
    let id = start_gc(&f.nodes[1], 0).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    f.pgs[1].set_down(true);
    std::thread::sleep(Duration::from_millis(300));
    f.pgs[1].set_down(false);
    let first = gc_job(&f.nodes[1], &id);
    f.s3[1].set_delay(0);
    eprintln!("GC with Postgres cut mid-run: {}", first["state"]);
    // Whatever the run's outcome: no node knows a blob whose S3 object is gone.
    converged(&[&f.nodes[0], &f.nodes[1]]);
    let keys = f._moto.keys(BUCKET, "");
    let in_s3 =
        |d: &str| keys.iter().any(|k| k.ends_with(&format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))));
    for n in [&a, &b] {
        for d in &junk {
            let known = http("HEAD", &format!("{n}/v2/cut/junk/blobs/{d}"), &[], None).status != 404;
            assert!(!known || in_s3(d), "{n} knows {d}, whose S3 object is gone");
        }
    }
    // A second run finishes the job.
    let id = start_gc(&f.nodes[0], 0).unwrap();
    assert_eq!(gc_job(&f.nodes[0], &id)["state"], "succeeded");
    converged(&[&f.nodes[0], &f.nodes[1]]);
    for n in [&a, &b] {
        for d in &junk {
            assert_eq!(http("HEAD", &format!("{n}/v2/cut/junk/blobs/{d}"), &[], None).status, 404);
        }
    }
}

#[test]
fn doctor_reports_the_cluster_and_a_node_the_others_cannot_reach() {
    let _serial = one_fleet();
    let Some(f) = Fleet::start(2, false, &[]) else { return };
    let doctor = |n: &Berth, env: &[(String, String)]| -> (bool, String) {
        let out = Command::new(berth_bin())
            .args(["doctor", "--listen", &n.addr, "--data-dir"])
            .arg(&n.dir)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let env_a = node_env("a", &f.pgs[0], &f.s3[0], &[], false);
    let nodes_seen_by_a = || cluster_view(&f.nodes[0])["nodes"].as_array().map_or(0, |n| n.len());
    wait_for("a to see both nodes", 10, || nodes_seen_by_a() == 2);
    let (ok, out) = doctor(&f.nodes[0], &env_a);
    assert!(ok, "{out}");
    assert!(out.lines().any(|l| l.starts_with("ok   cluster ") && l.contains("2 of 2 nodes live")), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("ok   cluster node")).count(), 2, "{out}");

    // Node c advertises an internal URL nobody answers on (a classic: 127.0.0.1 in a pod).
    let wrong = format!("http://127.0.0.1:{}", free_port());
    let env = node_env("c", &f.pgs[0], &f.s3[0], &[("BERTH_CLUSTER__INTERNAL_URL", wrong.as_str())], false);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _c = Berth::start(&f.tmp.path().join("c"), &env);
    wait_for("c in a's node table", 10, || nodes_seen_by_a() == 3);
    let (ok, out) = doctor(&f.nodes[0], &env_a);
    assert!(!ok, "{out}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{out}");
    assert!(fails[0].contains("c:") && fails[0].contains(&wrong), "{out}");
}
