//! The admin sidecar with a real node and a real Postgres: the feed into Postgres in order,
//! the sidecar killed mid-stream, Postgres restarted mid-stream, resync and check, the admin
//! API (GC jobs, workers, repositories, stats, auth) and scheduled GC.

mod common;

use std::time::Duration;

use common::pg::{Admin, Postgres};
use common::*;
use serde_json::{json, Value};

fn push_image(node: &Berth, repo: &str, tag: &str, seed: u8) -> String {
    let config = format!(r#"{{"os":"linux","seed":{seed}}}"#).into_bytes();
    let layer: Vec<u8> = (0..5000u32).map(|i| (i as u8).wrapping_add(seed)).collect();
    let (cd, ld) = (push_blob(node, repo, &config), push_blob(node, repo, &layer));
    let m = serde_json::to_vec(&json!({
        "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":config.len()},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":ld,"size":layer.len()}]
    }))
    .unwrap();
    let r = http(
        "PUT",
        &node.url(&format!("/v2/{repo}/manifests/{tag}")),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        Some(&m),
    );
    assert_eq!(r.status, 201);
    sha256(&m)
}

fn node_head(node: &Berth) -> u64 {
    let addr = std::fs::read_to_string(node.dir.join("internal.addr")).unwrap();
    let token = std::fs::read_to_string(node.dir.join("internal.token")).unwrap();
    let r = http(
        "GET",
        &format!("http://{}/internal/v1/stats", addr.trim()),
        &[("Authorization", &format!("Bearer {}", token.trim()))],
        None,
    );
    serde_json::from_slice::<Value>(&r.body).unwrap()["feed_head"].as_u64().unwrap()
}

fn caught_up(pg: &Postgres, node: &Berth) -> bool {
    pg.query("SELECT last_seq FROM sync_state").parse::<u64>().unwrap_or(0) == node_head(node)
}

fn check_ok(admin: &Admin) {
    let out = admin.command(&["check"]);
    assert!(
        out.status.success(),
        "berth-admin check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// Fields drop in order: the sidecar and node stop before Postgres, the directory goes last.
struct Env {
    admin: Admin,
    node: Berth,
    pg: Postgres,
    _tmp: tempfile::TempDir,
}

fn setup(extra: &[(&str, &str)]) -> Option<Env> {
    setup_with(extra, &[])
}

fn setup_with(extra: &[(&str, &str)], node_env: &[(&str, &str)]) -> Option<Env> {
    let tmp = tempfile::tempdir().unwrap();
    let pg = Postgres::start(tmp.path())?;
    let node = Berth::start(&tmp.path().join("data"), node_env);
    let admin = Admin::start(&pg, &node.dir, tmp.path().join("admin.log"), extra);
    Some(Env { admin, node, pg, _tmp: tmp })
}

#[test]
fn feed_reaches_postgres_in_order() {
    let Some(e) = setup(&[]) else { return };
    let m1 = push_image(&e.node, "team/web", "v1", 1);
    let m2 = push_image(&e.node, "team/web", "v2", 2);
    push_image(&e.node, "team/db", "latest", 3);
    wait_for("sync", 30, || caught_up(&e.pg, &e.node));
    assert_eq!(e.pg.query("SELECT count(*) FROM manifests WHERE repo = 'team/web'"), "2");
    assert_eq!(e.pg.query("SELECT digest FROM tags WHERE repo = 'team/web' AND tag = 'v1'"), m1);
    assert_eq!(e.pg.query("SELECT count(*) FROM manifest_blobs WHERE repo = 'team/web'"), "4");
    assert_eq!(e.pg.query("SELECT string_agg(name, ',' ORDER BY name) FROM repositories"), "team/db,team/web");
    // Tag move, tag delete, manifest delete: all reflected, in order.
    let r = http(
        "GET",
        &e.node.url(&format!("/v2/team/web/manifests/{m2}")),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        None,
    );
    let put = http(
        "PUT",
        &e.node.url("/v2/team/web/manifests/v1"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        Some(&r.body),
    );
    assert_eq!(put.status, 201);
    assert_eq!(http("DELETE", &e.node.url("/v2/team/web/manifests/v2"), &[], None).status, 202);
    assert_eq!(http("DELETE", &e.node.url(&format!("/v2/team/web/manifests/{m1}")), &[], None).status, 202);
    wait_for("sync", 30, || caught_up(&e.pg, &e.node));
    assert_eq!(e.pg.query("SELECT tag || '=' || digest FROM tags WHERE repo = 'team/web'"), format!("v1={m2}"));
    assert_eq!(e.pg.query("SELECT count(*) FROM manifests WHERE repo = 'team/web'"), "1");
    assert_eq!(
        e.pg.query("SELECT count(*) FROM manifest_blobs WHERE manifest = '{m1}'".replace("{m1}", &m1).as_str()),
        "0"
    );
    // GC deletions reach Postgres too.
    let gc = std::process::Command::new(berth_bin())
        .args(["gc", "--delete", "--grace", "0s", "--data-dir"])
        .arg(&e.node.dir)
        .output()
        .unwrap();
    assert!(gc.status.success());
    wait_for("sync", 30, || caught_up(&e.pg, &e.node));
    check_ok(&e.admin);
    // Lag is a metric.
    let metrics = ureq::get(&e.admin.url("/metrics")).call().unwrap().into_string().unwrap();
    assert!(metrics.contains("berth_admin_feed_lag_changes 0"), "{metrics}");
    assert!(metrics.contains("berth_admin_feed_lag_seconds"));
}

#[test]
fn sidecar_killed_and_postgres_restarted_mid_stream() {
    let Some(mut e) = setup(&[("BERTH_ADMIN_SYNC_BATCH", "7")]) else { return };
    for round in 0..4u8 {
        for i in 0..10u8 {
            push_image(&e.node, &format!("kill/r{}", i % 3), &format!("t{round}-{i}"), round * 10 + i);
        }
        match round {
            0 | 2 => e.admin.restart(),
            1 => {
                e.pg.stop_server();
                for i in 0..5u8 {
                    push_image(&e.node, "kill/pgdown", &format!("p{i}"), 200 + i);
                }
                std::thread::sleep(Duration::from_millis(500));
                e.pg.start_server();
            }
            _ => {}
        }
    }
    wait_for("sync after the faults", 60, || caught_up(&e.pg, &e.node));
    // No missing and no duplicated effects: Postgres equals the node exactly.
    check_ok(&e.admin);
    assert_eq!(e.pg.query("SELECT count(*) FROM manifests"), "45");
    assert_eq!(e.pg.query("SELECT count(*) FROM tags"), "45");
}

#[test]
fn resync_repairs_a_damaged_database() {
    let Some(e) = setup(&[]) else { return };
    for i in 0..5u8 {
        push_image(&e.node, "resync/app", &format!("v{i}"), 50 + i);
    }
    wait_for("sync", 30, || caught_up(&e.pg, &e.node));
    e.pg.query("DELETE FROM tags WHERE tag = 'v3'; UPDATE blobs SET size = 1 WHERE digest IN (SELECT digest FROM blobs LIMIT 1)");
    let out = e.admin.command(&["check"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("missing in postgres: tags: resync/app v3"), "{text}");
    assert!(text.contains("extra in postgres:   blobs"), "{text}");
    let out = e.admin.command(&["resync"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 tags"));
    check_ok(&e.admin);
    // The follower continues from the snapshot's position.
    push_image(&e.node, "resync/app", "after", 60);
    wait_for("sync after resync", 30, || caught_up(&e.pg, &e.node));
    check_ok(&e.admin);
}

#[test]
fn admin_api_gc_jobs_workers_repositories_stats() {
    let Some(e) = setup(&[("BERTH_ADMIN_GC_SCHEDULE", "*/1 * * * * *"), ("BERTH_ADMIN_GC_SCHEDULE_DRY_RUN", "true")])
    else {
        return;
    };
    for i in 0..3u8 {
        push_image(&e.node, &format!("api/r{i}"), "v1", 70 + i);
    }
    push_blob(&e.node, "api/r0", b"garbage blob");
    wait_for("sync", 30, || caught_up(&e.pg, &e.node));

    // Auth.
    assert_eq!(http("GET", &e.admin.url("/api/v1/stats"), &[], None).status, 401);
    assert_eq!(http("GET", &e.admin.url("/api/v1/stats"), &[("Authorization", "Bearer wrong")], None).status, 401);

    // GC: dry run by default, then a real run; reports stored.
    let auth = "Bearer admin-secret-0123456789abcdef";
    let started = |body: &[u8]| -> String {
        loop {
            let r = http(
                "POST",
                &e.admin.url("/api/v1/gc"),
                &[("Authorization", auth), ("Content-Type", "application/json")],
                Some(body),
            );
            if r.status == 409 {
                // The schedule's dry run is running: one GC at a time.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
            return serde_json::from_slice::<Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string();
        }
    };
    let finished = |id: &str| -> Value {
        let mut v = Value::Null;
        wait_for("gc job", 60, || {
            v = e.admin.get(&format!("/api/v1/jobs/{id}")).1;
            v["state"] == "succeeded"
        });
        v
    };
    let dry = finished(&started(br#"{"policy": {"grace_secs": 0}}"#));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["report"]["blobs"].as_array().unwrap().len(), 1);
    let real = finished(&started(br#"{"dry_run": false, "policy": {"grace_secs": 0}}"#));
    assert_eq!(real["report"]["blobs"], dry["report"]["blobs"]);
    wait_for("job history in postgres", 30, || {
        let (_, v) = e.admin.get("/api/v1/jobs");
        v["jobs"].as_array().unwrap().iter().any(|j| {
            j["state"] == "succeeded"
                && j["dry_run"] == false
                && j["report"]["blobs"].as_array().is_some_and(|b| b.len() == 1)
        })
    });
    // The schedule (every second, dry run) has produced jobs too.
    wait_for("scheduled GC", 30, || {
        let (_, v) = e.admin.get("/api/v1/jobs");
        v["jobs"].as_array().unwrap().iter().any(|j| j["trigger"] == "schedule")
    });
    // Reliability round 2, item 19: a job's end is logged with its results, not only its start.
    wait_for("a finished job in the sidecar's log", 30, || {
        std::fs::read_to_string(&e.admin.log)
            .is_ok_and(|l| l.contains("garbage collection finished") && l.contains("blob_bytes"))
    });

    // Workers of both processes.
    let (s, w) = e.admin.get("/api/v1/workers");
    assert_eq!(s, 200);
    let names: Vec<&str> = w["workers"].as_array().unwrap().iter().filter_map(|x| x["name"].as_str()).collect();
    for n in ["gc", "upload-expiry", "feed-sync", "gc-schedule"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }

    // Repositories, paginated, with sizes.
    let r = http("GET", &e.admin.url("/api/v1/repositories?n=2"), &[("Authorization", auth)], None);
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["repositories"].as_array().unwrap().len(), 2);
    assert_eq!(v["repositories"][0]["name"], "api/r0");
    assert!(v["repositories"][0]["dedup_bytes"].as_i64().unwrap() > 5000);
    assert_eq!(v["repositories"][0]["tags"], 1);
    assert!(r.header("link").unwrap().contains("last=api/r1"));
    let (_, v) = e.admin.get("/api/v1/repositories?n=2&last=api/r1");
    assert_eq!(v["repositories"][0]["name"], "api/r2");

    // Stats: store by tier, counts, dedup ratio, lag.
    let (_, st) = e.admin.get("/api/v1/stats");
    assert_eq!(st["node"]["blobs"], 6);
    assert_eq!(st["postgres"]["manifests"], 3);
    assert!(st["postgres"]["dedup_ratio"].as_f64().unwrap() >= 1.0);
    assert!(st["feed"]["lag_changes"].is_u64());
    // Scanning is not configured on this sidecar: the scan endpoints say so.
    let r = http("GET", &e.admin.url("/api/v1/scans"), &[("Authorization", auth)], None);
    assert_eq!(r.status, 409);
    assert!(String::from_utf8_lossy(&r.body).contains("scanning is off"));
}

#[test]
fn one_batch_of_conflicting_changes_applies_in_order() {
    let Some(mut e) = setup(&[]) else { return };
    push_image(&e.node, "order/app", "seed", 90);
    wait_for("sync", 30, || caught_up(&e.pg, &e.node));
    // Build a backlog while the sidecar is down, so it arrives as one pipelined batch in which
    // the same rows are written, deleted and written again.
    e.admin.kill9();
    let m1 = push_image(&e.node, "order/app", "t", 91);
    assert_eq!(http("DELETE", &e.node.url("/v2/order/app/manifests/t"), &[], None).status, 202);
    let m2 = push_image(&e.node, "order/app", "t", 92);
    assert_eq!(http("DELETE", &e.node.url(&format!("/v2/order/app/manifests/{m1}")), &[], None).status, 202);
    let again = push_image(&e.node, "order/app", "t", 91);
    assert_eq!(again, m1);
    assert_eq!(http("DELETE", &e.node.url(&format!("/v2/order/app/manifests/{m2}")), &[], None).status, 202);
    e.admin.restart();
    wait_for("sync", 30, || caught_up(&e.pg, &e.node));
    assert_eq!(e.pg.query("SELECT digest FROM tags WHERE repo = 'order/app' AND tag = 't'"), m1);
    assert_eq!(e.pg.query(&format!("SELECT count(*) FROM manifests WHERE digest = '{m2}'")), "0");
    check_ok(&e.admin);
}

#[test]
fn sidecar_away_past_feed_retention_resyncs_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(pg) = Postgres::start(tmp.path()) else { return };
    let feed = [
        ("BERTH_FEED__RETAIN_CHANGES", "3"),
        ("BERTH_FEED__CONSUMER_TIMEOUT_SECS", "1"),
        ("BERTH_FEED__TRIM_INTERVAL_SECS", "1"),
    ];
    let node = Berth::start(&tmp.path().join("data"), &feed);
    let mut admin = Admin::start(&pg, &node.dir, tmp.path().join("admin.log"), &[]);
    push_image(&node, "trim/app", "v1", 100);
    wait_for("sync", 30, || caught_up(&pg, &node));
    // While the sidecar runs, its position holds the feed back.
    admin.kill9();
    for i in 0..10u8 {
        push_image(&node, "trim/app", &format!("t{i}"), 101 + i);
    }
    // Away longer than the consumer timeout: the feed is trimmed past its position.
    std::thread::sleep(Duration::from_millis(3500));
    admin.restart();
    wait_for("resync and catch up", 60, || caught_up(&pg, &node));
    check_ok(&admin);
    assert_eq!(pg.query("SELECT count(*) FROM tags WHERE repo = 'trim/app'"), "11");
    let log = std::fs::read_to_string(&admin.log).unwrap();
    assert!(log.contains("resyncing from a snapshot"), "{log}");
    drop(admin);
    drop(node);
}

/// Regression: after the node restarted on another internal API port, the sidecar retried the
/// old address forever while its lag metrics said 0.
#[test]
fn sidecar_follows_a_restarted_node_and_reports_lag_honestly() {
    let Some(mut e) = setup(&[]) else { return };
    push_image(&e.node, "restart/app", "v1", 100);
    wait_for("sync", 30, || caught_up(&e.pg, &e.node));
    e.node.kill9();
    // While the node is away: not reachable, and the lag grows instead of staying 0.
    wait_for("node reported down", 30, || {
        let m = ureq::get(&e.admin.url("/metrics")).call().unwrap().into_string().unwrap();
        let lag = m
            .lines()
            .find_map(|l| l.strip_prefix("berth_admin_feed_lag_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        m.contains("berth_admin_node_up 0") && lag >= 1.0
    });
    let (_, st) = e.admin.get("/api/v1/stats");
    assert_eq!(st["feed"]["node_reachable"], false, "{st}");
    // The node comes back elsewhere (a different internal port, as with a port-0 clash).
    e.node.set_env("BERTH_INTERNAL__LISTEN", &format!("127.0.0.1:{}", free_port()));
    e.node.restart();
    push_image(&e.node, "restart/app", "v2", 101);
    wait_for("sync after the node moved", 60, || caught_up(&e.pg, &e.node));
    let m = ureq::get(&e.admin.url("/metrics")).call().unwrap().into_string().unwrap();
    assert!(m.contains("berth_admin_node_up 1"), "{m}");
    let log = std::fs::read_to_string(&e.admin.log).unwrap();
    assert!(log.contains("internal API moved"), "{log}");
    check_ok(&e.admin);
}

/// Regression: the README's `curl -d '{"dry_run": false}'` got 415 (curl sends a form content
/// type), and errors were not the JSON the API documents.
#[test]
fn admin_api_takes_json_without_content_type_and_answers_json_errors() {
    let Some(e) = setup(&[]) else { return };
    let auth = ("Authorization", "Bearer admin-secret-0123456789abcdef");
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let r = http("POST", &e.admin.url("/api/v1/gc"), &[auth, form], Some(br#"{"dry_run": true}"#));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let json_error = |r: &Resp, status: u16| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&r.body)));
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    };
    // Wait for the dry run so the next request is judged on its body, not a 409.
    std::thread::sleep(Duration::from_millis(500));
    json_error(&http("POST", &e.admin.url("/api/v1/gc"), &[auth, form], Some(b"{not json")), 422);
    json_error(&http("POST", &e.admin.url("/api/v1/gc"), &[auth], Some(br#"{"dry_run": "maybe"}"#)), 422);
    json_error(&http("GET", &e.admin.url("/api/v1/repositories?n=many"), &[auth], None), 400);
    json_error(&http("DELETE", &e.admin.url("/api/v1/stats"), &[auth], None), 405);
    json_error(&http("GET", &e.admin.url("/api/v1/nothing"), &[auth], None), 404);
    // Logs written to a file carry no colour codes, and no NOTICE at every start.
    let mut admin = e.admin;
    admin.restart();
    let log = std::fs::read_to_string(&admin.log).unwrap();
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log file: {log}");
    assert!(!log.contains("schema_migrations"), "{log}");
}

/// Regression: a wrong node data directory failed only after the migrations had run, and the
/// message suggested `--node`/`--token` flags berth-admin does not have.
#[test]
fn wrong_node_data_dir_fails_before_any_migration() {
    let Some(e) = setup(&[]) else { return };
    e.pg.query("CREATE DATABASE fresh");
    let conn = e.pg.conn().replace("dbname=berth", "dbname=fresh");
    let out = std::process::Command::new(common::pg::admin_bin())
        .arg("serve")
        .env("BERTH_ADMIN_POSTGRES", &conn)
        .env("BERTH_ADMIN_API_TOKEN", "0123456789abcdef0123456789abcdef")
        .env("BERTH_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("BERTH_ADMIN_NODE_DATA_DIR", "/nonexistent/berth-data")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/berth-data") && err.contains("BERTH_ADMIN_NODE_DATA_DIR"), "{err}");
    assert!(!err.contains("--node"), "{err}");
    let tables = std::process::Command::new("psql")
        .args(["-At", "-c", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"])
        .arg(&conn)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tables.stdout).trim(), "0", "migrations ran before the node was found");
    // `check` prints plain text, no Rust debug tuples.
    let out = e.admin.command(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("postgres matches the node: blobs"), "{text}");
    assert!(!text.contains("(0, 0)") && !text.contains('{'), "{text}");
}

/// `berth-admin doctor`: green with node and Postgres up; one FAIL line for each that is down.
#[test]
fn doctor_names_the_broken_dependency() {
    let Some(mut e) = setup(&[]) else { return };
    let (conn, dir) = (e.pg.conn(), e.node.dir.clone());
    let run_doctor = |extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(common::pg::admin_bin());
        cmd.arg("doctor").env("BERTH_ADMIN_POSTGRES", &conn).env("BERTH_ADMIN_NODE_DATA_DIR", &dir);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, out) = run_doctor(&[]);
    assert!(ok && !out.contains("FAIL"), "{out}");
    assert!(out.contains("schema version 4"), "{out}");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (ok, out) =
        run_doctor(&[("BERTH_ADMIN_SCAN__SERVER", dead.as_str()), ("BERTH_ADMIN_SCAN__TRIVY", "/nonexistent/trivy")]);
    assert!(!ok);
    assert!(out.lines().any(|l| l.starts_with("FAIL") && l.contains("trivy ") && l.contains(&dead)), "{out}");
    assert!(out.lines().any(|l| l.starts_with("FAIL") && l.contains("/nonexistent/trivy")), "{out}");
    e.pg.stop_server();
    let (ok, out) = run_doctor(&[]);
    assert!(!ok);
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "{out}");
    assert!(fails[0].contains("postgres"), "{out}");
    e.pg.start_server();
    e.node.kill9();
    let (ok, out) = run_doctor(&[]);
    assert!(!ok);
    assert!(out.lines().any(|l| l.starts_with("FAIL") && l.contains("node")), "{out}");
}

/// Users, robots and rules through the admin API (the node stores and enforces them), and the
/// audit trail in Postgres: the API's changes and the node's denials and failed logins.
#[test]
fn accounts_and_audit_through_the_admin_api() {
    let Some(e) = setup_with(&[], &[("BERTH_AUTH__ENABLED", "true")]) else { return };
    let (st, _) = e.admin.send("PUT", "/api/v1/users/erin", Some(serde_json::json!({"password": "erin-pw"})));
    assert_eq!(st, 204);
    assert_eq!(http("GET", &e.node.url("/v2/"), &[("Authorization", &basic("erin", "erin-pw"))], None).status, 200);
    let (st, robot) =
        e.admin.send("POST", "/api/v1/robots", Some(serde_json::json!({"name": "builder", "expires_in_secs": 3600})));
    assert_eq!(st, 201, "{robot}");
    let secret = robot["secret"].as_str().unwrap().to_owned();
    let (st, _) = e.admin.send(
        "PUT",
        "/api/v1/rules",
        Some(serde_json::json!({"rules": [
            {"subjects": ["robot:builder"], "repositories": ["ci/**"], "actions": ["pull", "push"]},
            {"subjects": ["user:erin"], "repositories": ["**"], "actions": ["pull"]}
        ]})),
    );
    assert_eq!(st, 204);
    let (st, bad) = e.admin.send(
        "PUT",
        "/api/v1/rules",
        Some(serde_json::json!([{"subjects": ["x"], "repositories": ["**"], "actions": ["pull"]}])),
    );
    assert_eq!(st, 400, "{bad}");
    let d = sha256(b"ci-blob");
    let up = |auth: &str, repo: &str| {
        http(
            "POST",
            &e.node.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")),
            &[("Authorization", auth)],
            Some(b"ci-blob"),
        )
        .status
    };
    assert_eq!(up(&basic("robot$builder", &secret), "ci/app"), 201);
    assert_eq!(up(&basic("erin", "erin-pw"), "ci/app"), 403);
    assert_eq!(http("GET", &e.node.url("/v2/"), &[("Authorization", &basic("erin", "wrong"))], None).status, 401);
    let (_, accounts) = e.admin.get("/api/v1/accounts");
    assert_eq!(accounts["robots"][0]["name"], "builder");
    assert!(!accounts.to_string().contains(&secret));
    let (st, _) = e.admin.send("DELETE", "/api/v1/robots/builder", None);
    assert_eq!(st, 204);
    assert_eq!(up(&basic("robot$builder", &secret), "ci/app"), 401);
    // The trail in Postgres: API changes and node events.
    wait_for("audit rows", 30, || {
        let n =
            e.pg.query("SELECT count(*) FROM audit_log WHERE source = 'node' AND event IN ('denied', 'login_failed')");
        n.parse::<i64>().unwrap_or(0) >= 3
    });
    let (st, log) = e.admin.get("/api/v1/audit?limit=100");
    assert_eq!(st, 200);
    let events: Vec<(String, String, String)> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["source"].as_str().unwrap().into(),
                x["event"].as_str().unwrap().into(),
                x["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("admin-api", "user_set"),
        ("admin-api", "robot_created"),
        ("admin-api", "rules_set"),
        ("admin-api", "robot_deleted"),
        ("node", "denied"),
        ("node", "login_failed"),
    ] {
        assert!(events.iter().any(|(s, ev, _)| s == want.0 && ev == want.1), "{want:?} not in {events:?}");
    }
    assert!(events.iter().any(|(s, ev, a)| s == "node" && ev == "denied" && a == "erin"));
    // Exactly once: the follower does not copy an event twice.
    assert_eq!(e.pg.query("SELECT count(*) FROM (SELECT node_epoch, node_seq FROM audit_log WHERE source = 'node' GROUP BY 1, 2 HAVING count(*) > 1) d"), "0");
}

/// `POST /api/v1/preload`: the sidecar pulls a list of images into the node's pull-through
/// cache (the upstream is another Berth); a missing image is reported per image (207).
#[test]
fn preload_through_the_admin_api() {
    let tmp = tempfile::tempdir().unwrap();
    let upstream = Berth::start(&tmp.path().join("upstream"), &[]);
    let digest = push_image(&upstream, "team/app", "v1", 7);
    let cfg = tmp.path().join("proxy.toml");
    std::fs::write(&cfg, format!("[[proxy.upstreams]]\nname = \"up\"\nurl = \"http://{}\"\n", upstream.addr)).unwrap();
    let cfg = cfg.display().to_string();
    let Some(e) = setup_with(&[], &[("BERTH_CONFIG", &cfg)]) else { return };
    let (st, v) =
        e.admin.send("POST", "/api/v1/preload", Some(json!({"images": ["up/team/app:v1", "up/team/none:v1"]})));
    assert_eq!(st, 207, "{v}");
    assert_eq!((v["loaded"].as_u64(), v["failed"].as_u64()), (Some(1), Some(1)), "{v}");
    assert_eq!(v["images"][0]["blobs"].as_u64(), Some(2), "{v}");
    assert!(v["images"][1]["error"].as_str().unwrap().contains("404"), "{v}");
    // Cached: the node serves it with the upstream gone.
    drop(upstream);
    let r = http(
        "GET",
        &e.node.url("/v2/up/team/app/manifests/v1"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        None,
    );
    assert_eq!((r.status, r.header("docker-content-digest")), (200, Some(digest.as_str())));
    let (st, v) = e.admin.send("POST", "/api/v1/preload", Some(json!({"images": ["not an image"]})));
    assert_eq!(st, 400, "{v}");
}

/// Security round 2, finding 7: the admin API's path parameters (`{name}`, `{id}`,
/// `{digest}`) were percent-decoded and pasted into internal URLs, so `..%2F` reached any
/// internal endpoint (a forged scan record, a deleted manifest, the full export). Every route
/// with a parameter, with every encoding of a dot segment: 400, and nothing changed.
#[test]
fn admin_api_path_parameters_cannot_leave_their_segment() {
    let Some(e) = setup_with(&[], &[("BERTH_AUTH__ENABLED", "true")]) else { return };
    let send = |method: &str, path: &str, ct: &str, body: Option<&[u8]>| {
        let addr = std::fs::read_to_string(e.node.dir.join("internal.addr")).unwrap();
        let token = std::fs::read_to_string(e.node.dir.join("internal.token")).unwrap();
        http(
            method,
            &format!("http://{}{path}", addr.trim()),
            &[("Authorization", &format!("Bearer {}", token.trim())), ("Content-Type", ct)],
            body,
        )
    };
    let internal = |path: &str| send("GET", path, "application/json", None);
    // An image pushed through the internal listener (auth is on at the public one).
    let (config, layer) = (b"{}".as_slice(), b"layer".as_slice());
    for b in [config, layer] {
        let r = send(
            "POST",
            &format!("/v2/team/app/blobs/uploads/?digest={}", sha256(b)),
            "application/octet-stream",
            Some(b),
        );
        assert_eq!(r.status, 201);
    }
    let m = serde_json::to_vec(&json!({
        "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":sha256(config),"size":config.len()},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":sha256(layer),"size":layer.len()}]
    }))
    .unwrap();
    let ct = "application/vnd.oci.image.manifest.v1+json";
    assert_eq!(send("PUT", "/v2/team/app/manifests/v1", ct, Some(&m)).status, 201);
    let digest = sha256(&m);
    assert_eq!(internal(&format!("/internal/v1/scans/{digest}")).status, 404, "no scan record to begin with");
    let forged = json!({"password": "x", "status": "completed", "digest": digest});
    for dots in ["..", "%2e%2e", "%2E%2E", ".%2e"] {
        let cases: Vec<(&str, String, Option<Value>)> = vec![
            ("PUT", format!("/api/v1/users/{dots}%2Fscans%2F{digest}"), Some(forged.clone())),
            ("DELETE", format!("/api/v1/users/{dots}%2F{dots}%2F{dots}%2Fv2%2Fteam%2Fapp%2Fmanifests%2Fv1"), None),
            ("DELETE", format!("/api/v1/robots/{dots}%2F{dots}%2F{dots}%2Fv2%2Fteam%2Fapp%2Fmanifests%2Fv1"), None),
            ("PUT", format!("/api/v1/groups/{dots}%2Frules"), Some(json!({"members": []}))),
            ("DELETE", format!("/api/v1/groups/{dots}%2F{dots}%2F{dots}%2Fv2%2Fteam%2Fapp%2Fmanifests%2Fv1"), None),
            ("GET", format!("/api/v1/jobs/{dots}%2Fexport"), None),
            ("GET", format!("/api/v1/scans/{dots}%2F{dots}%2Fexport"), None),
        ];
        for (method, path, body) in cases {
            let (st, v) = e.admin.send(method, &path, body);
            assert_eq!(st, 400, "{method} {path}: {v}");
            assert!(v["error"].is_string(), "{method} {path}: a JSON error, got {v}");
            assert!(!v.to_string().contains("blobs"), "{method} {path} leaked the export: {v}");
        }
    }
    // A bare dot segment as the name (sent as written: an HTTP client library would resolve it).
    for dots in ["..", "%2e%2e", ".%2E"] {
        let url = e.admin.url("/");
        let host = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let mut s = std::net::TcpStream::connect(&host).unwrap();
        let body = r#"{"password":"x"}"#;
        use std::io::{Read, Write};
        write!(
            s,
            "PUT /api/v1/users/{dots} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            e.admin.token,
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 400") || out.starts_with("HTTP/1.1 404"), "PUT users/{dots}: {out}");
    }
    // Nothing moved: no scan record was forged, the manifest is still there, the rules are as
    // they were.
    assert_eq!(internal(&format!("/internal/v1/scans/{digest}")).status, 404, "a scan record was forged");
    assert_eq!(internal("/v2/team/app/manifests/v1").status, 200, "the manifest was deleted");
    let (_, accounts) = e.admin.get("/api/v1/accounts");
    assert_eq!(accounts["rules"], json!([]), "{accounts}");
    // The node's internal listener refuses such paths too (the other side of the same rule).
    assert_eq!(internal("/internal/v1/users/%2e%2e%2Fexport").status, 400);
    assert_eq!(internal("/internal/v1/jobs/..%2Fexport").status, 400);
    // Counts the caller chooses are bounded: a preload of 1,001 images is refused before any
    // is fetched (the request holds its connection until every one is done).
    let many: Vec<String> = (0..1001).map(|i| format!("up/app{i}:v1")).collect();
    let (st, v) = e.admin.send("POST", "/api/v1/preload", Some(json!({ "images": many })));
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("at most 1000"), "{v}");
    // Well-formed parameters still work.
    assert_eq!(e.admin.send("PUT", "/api/v1/users/dot.ted", Some(json!({"password": "pw-dotted"}))).0, 204);
    assert_eq!(e.admin.send("DELETE", "/api/v1/users/dot.ted", None).0, 204);
    assert_eq!(e.admin.get("/api/v1/jobs/gc-0123456789abcdef0123456789abcdef").0, 404);
}

/// Security round 2, finding 5: 215k anonymous denials in 20 s overflowed the node's audit
/// ring and a failed login made before them never reached Postgres. Denials are aggregated
/// (rows with a `count`) and cannot push security events out; every denial is accounted for.
#[test]
fn a_denial_flood_cannot_erase_the_audit_trail() {
    let Some(mut e) = setup_with(&[], &[("BERTH_AUTH__ENABLED", "true")]) else { return };
    e.admin.kill9(); // away while the flood happens
    let r = http("GET", &e.node.url("/v2/"), &[("Authorization", &basic("mallory", "guess"))], None);
    assert_eq!(r.status, 401);
    let (threads, each) = (4, 4_000);
    let url = e.node.url("/v2/private/app/tags/list");
    let flood: Vec<_> = (0..threads)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = ureq::agent();
                for _ in 0..each {
                    assert_eq!(try_http(&agent, "GET", &url, &[], None).unwrap().status, 401);
                }
            })
        })
        .collect();
    for f in flood {
        f.join().unwrap();
    }
    let sent = (threads * each) as i64;
    let log = e.admin.log.clone();
    e.admin = Admin::start(&e.pg, &e.node.dir, log, &[]);
    wait_for("the flood's denials in Postgres", 60, || {
        e.pg.query("SELECT coalesce(sum(count), 0) FROM audit_log WHERE event = 'denied'").parse::<i64>().unwrap_or(0)
            >= sent
    });
    assert_eq!(
        e.pg.query("SELECT count(*) FROM audit_log WHERE event = 'login_failed' AND actor = 'mallory'"),
        "1",
        "the failed login before the flood was lost"
    );
    let denied = e.pg.query("SELECT sum(count) FROM audit_log WHERE event = 'denied'").parse::<i64>().unwrap();
    assert_eq!(denied, sent, "every denial is counted once");
    let rows = e.pg.query("SELECT count(*) FROM audit_log WHERE event = 'denied'").parse::<i64>().unwrap();
    assert!(rows < sent / 10, "{rows} rows for {sent} denials: not aggregated");
    // Nothing was lost, so no loss is reported.
    assert_eq!(e.pg.query("SELECT count(*) FROM audit_log WHERE event = 'audit_events_dropped'"), "0");
}
