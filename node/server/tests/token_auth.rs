//! The registry token protocol: challenges, the token endpoint (GET and OAuth2 POST), refresh
//! tokens, the deny and allow matrix, tampering, and key rotation under traffic.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use berth_node::auth::policy::{Effect, RuleConfig};
use berth_node::auth::token::TokenConfig;
use berth_node::config::User;
use common::{basic, sha256, TestNode};

fn rule(subjects: &[&str], repos: &[&str], actions: &[&str]) -> RuleConfig {
    RuleConfig {
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        repositories: repos.iter().map(|s| s.to_string()).collect(),
        actions: actions.iter().map(|s| s.to_string()).collect(),
        effect: Effect::Allow,
    }
}

/// Users `dev` (push/pull on `apps/**`), `viewer` (pull on `apps/**`), anonymous pull on
/// `public/**`; tokens on.
fn node(token: TokenConfig) -> TestNode {
    let hash = bcrypt::hash("pw", 4).unwrap();
    TestNode::start_with(|c| {
        c.auth.users =
            vec![User { name: "dev".into(), bcrypt: hash.clone() }, User { name: "viewer".into(), bcrypt: hash }];
        c.auth.rules = vec![
            rule(&["user:dev"], &["apps/**", "public/**"], &["pull", "push", "delete"]),
            rule(&["user:viewer"], &["apps/**"], &["pull"]),
            rule(&["anonymous"], &["public/**"], &["pull"]),
        ];
        c.auth.token = Some(token);
    })
}

fn token(n: &TestNode, auth: Option<&str>, scopes: &[&str]) -> (u16, serde_json::Value) {
    let mut q = String::from("/token?service=berth");
    for s in scopes {
        q.push_str(&format!("&scope={}", form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()));
    }
    let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
    let r = n.req("GET", &q, &headers, None);
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v)
}

fn bearer(t: &serde_json::Value) -> String {
    format!("Bearer {}", t["token"].as_str().unwrap())
}

fn claims(t: &str) -> serde_json::Value {
    let p = t.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

#[test]
fn challenge_login_and_scoped_access() {
    let n = node(TokenConfig::default());
    // The ping asks for a token, naming the realm and service.
    let r = n.get("/v2/");
    assert_eq!(r.status, 401);
    let ch = r.header("www-authenticate").unwrap();
    assert_eq!(ch, format!("Bearer realm=\"http://{}/token\",service=\"berth\"", n.addr));
    // A refused request names the scope it needed.
    let r = n.get("/v2/apps/web/manifests/v1");
    assert!(r.header("www-authenticate").unwrap().ends_with(",scope=\"repository:apps/web:pull\""));
    let r = n.req("POST", "/v2/apps/web/blobs/uploads/", &[], None);
    assert!(r.header("www-authenticate").unwrap().ends_with(",scope=\"repository:apps/web:pull,push\""));

    // docker login: a token without scopes opens /v2/.
    let (st, t) = token(&n, Some(&basic("dev", "pw")), &[]);
    assert_eq!(st, 200);
    assert!(t["expires_in"].as_u64().unwrap() == 240 && t["issued_at"].is_string() && t["access_token"] == t["token"]);
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &bearer(&t))], None).status, 200);
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t["token"].as_str().unwrap().split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].is_string());

    // Push with a push token, pull with a pull token.
    let (_, t) = token(&n, Some(&basic("dev", "pw")), &["repository:apps/web:pull,push"]);
    let c = claims(t["token"].as_str().unwrap());
    assert_eq!(c["sub"], "dev");
    assert_eq!(c["aud"], "berth");
    assert_eq!(c["access"], serde_json::json!([{"type":"repository","name":"apps/web","actions":["pull","push"]}]));
    let data = b"layer";
    let d = sha256(data);
    let auth = bearer(&t);
    let r = n.req("POST", &format!("/v2/apps/web/blobs/uploads/?digest={d}"), &[("Authorization", &auth)], Some(data));
    assert_eq!(r.status, 201);
    // The same token does not reach another repository: a new token is needed (insufficient_scope).
    let r = n.req("GET", &format!("/v2/apps/other/blobs/{d}"), &[("Authorization", &auth)], None);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("error=\"insufficient_scope\""));
    assert!(r.header("www-authenticate").unwrap().contains("scope=\"repository:apps/other:pull\""));

    // The viewer asks for push and gets pull only.
    let (_, t) = token(&n, Some(&basic("viewer", "pw")), &["repository:apps/web:pull,push,delete"]);
    assert_eq!(claims(t["token"].as_str().unwrap())["access"][0]["actions"], serde_json::json!(["pull"]));
    let auth = bearer(&t);
    assert_eq!(n.req("GET", &format!("/v2/apps/web/blobs/{d}"), &[("Authorization", &auth)], None).status, 200);
    let r = n.req("POST", "/v2/apps/web/blobs/uploads/", &[("Authorization", &auth)], None);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("insufficient_scope"));

    // Anonymous tokens: granted where anonymous may pull, empty elsewhere.
    let (st, t) = token(&n, None, &["repository:public/x:pull", "repository:apps/web:pull"]);
    assert_eq!(st, 200);
    let c = claims(t["token"].as_str().unwrap());
    assert_eq!(c["sub"], "");
    assert_eq!(c["access"], serde_json::json!([{"type":"repository","name":"public/x","actions":["pull"]}]));

    // Wrong password: 401 from the token endpoint.
    let (st, t) = token(&n, Some(&basic("dev", "nope")), &["repository:apps/web:pull"]);
    assert_eq!(st, 401);
    assert_eq!(t["errors"][0]["code"], "UNAUTHORIZED");
    // Basic credentials still work on the registry API.
    assert_eq!(
        n.req("GET", &format!("/v2/apps/web/blobs/{d}"), &[("Authorization", &basic("viewer", "pw"))], None).status,
        200
    );
    // The JWKS names the signing key.
    let jwks = n.get("/token/jwks.json").json();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
}

#[test]
fn the_deny_matrix() {
    let n = node(TokenConfig { ttl_secs: 1, leeway_secs: 0, ..TokenConfig::default() });
    let (_, dev) = token(&n, Some(&basic("dev", "pw")), &["repository:apps/web:pull,push,delete"]);
    let cfg = b"{}";
    let d = sha256(cfg);
    let put = n.req(
        "POST",
        &format!("/v2/apps/web/blobs/uploads/?digest={d}"),
        &[("Authorization", &bearer(&dev))],
        Some(cfg),
    );
    assert_eq!(put.status, 201);
    let (_, pull_only) = token(&n, Some(&basic("dev", "pw")), &["repository:apps/web:pull"]);
    let (_, other_repo) = token(&n, Some(&basic("dev", "pw")), &["repository:apps/api:pull,push,delete"]);
    let tampered = {
        let t = dev["token"].as_str().unwrap();
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut c = claims(t);
        c["sub"] = "root".into();
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string());
        format!("Bearer {}", parts.join("."))
    };
    let blob = format!("/v2/apps/web/blobs/{d}");
    let endpoints: Vec<(&str, String)> = vec![
        ("GET", blob.clone()),
        ("HEAD", blob.clone()),
        ("DELETE", blob.clone()),
        ("GET", "/v2/apps/web/tags/list".into()),
        ("GET", "/v2/apps/web/manifests/v1".into()),
        ("PUT", "/v2/apps/web/manifests/v1".into()),
        ("POST", "/v2/apps/web/blobs/uploads/".into()),
        ("GET", format!("/v2/apps/web/referrers/{d}")),
    ];
    let wants = |m: &str, scope: &str| -> bool {
        match scope {
            "pull" => matches!(m, "GET" | "HEAD"),
            _ => true,
        }
    };
    for (m, path) in &endpoints {
        let cases: Vec<(&str, Option<String>, u16, bool)> = vec![
            ("anonymous", None, 401, false),
            ("wrong password", Some(basic("dev", "nope")), 401, false),
            ("tampered token", Some(tampered.clone()), 401, false),
            ("token for another repository", Some(bearer(&other_repo)), 401, true),
            ("garbage token", Some("Bearer abc.def.ghi".into()), 401, false),
            ("basic user without the right", Some(basic("viewer", "pw")), 403, false),
        ];
        for (what, auth, status, insufficient) in cases {
            if what.starts_with("basic user") && matches!(*m, "GET" | "HEAD") {
                continue; // viewer may pull
            }
            let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("Authorization", a)]).unwrap_or_default();
            let r = n.req(m, path, &headers, Some(&b"x"[..]).filter(|_| *m == "PUT"));
            assert_eq!(r.status, status, "{what}: {m} {path}");
            if status == 401 {
                let ch = r.header("www-authenticate").unwrap_or_else(|| panic!("{what}: {m} {path}: no challenge"));
                assert!(ch.starts_with("Bearer realm="), "{ch}");
                assert_eq!(ch.contains("insufficient_scope"), insufficient, "{what}: {m} {path}: {ch}");
                if *m != "HEAD" {
                    assert_eq!(r.error_code(), "UNAUTHORIZED", "{what}: {m} {path}");
                }
            } else if *m != "HEAD" {
                assert_eq!(r.error_code(), "DENIED", "{what}: {m} {path}");
            }
        }
        // Pull-only tokens: allowed to read, refused (insufficient_scope) otherwise.
        let r = n.req(m, path, &[("Authorization", &bearer(&pull_only))], Some(&b"x"[..]).filter(|_| *m == "PUT"));
        if wants(m, "pull") {
            assert_ne!(r.status, 401, "pull token: {m} {path}");
        } else {
            assert_eq!(r.status, 401, "pull token: {m} {path}");
        }
    }
    // Expired (ttl 1 s, no leeway).
    std::thread::sleep(Duration::from_millis(2100));
    let r = n.req("GET", &blob, &[("Authorization", &bearer(&pull_only))], None);
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("expired"));
}

#[test]
fn oauth2_post_and_refresh_tokens() {
    let n = node(TokenConfig::default());
    let form = "grant_type=password&username=dev&password=pw&service=berth&client_id=containerd&access_type=offline&scope=repository%3Aapps%2Fweb%3Apull%20repository%3Aapps%2Fapi%3Apull";
    let r = n.req("POST", "/token", &[("Content-Type", "application/x-www-form-urlencoded")], Some(form.as_bytes()));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(claims(t["access_token"].as_str().unwrap())["access"].as_array().unwrap().len(), 2);
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    // The refresh token is not an access token.
    let r = n.req("GET", "/v2/", &[("Authorization", &format!("Bearer {refresh}"))], None);
    assert_eq!(r.status, 401);
    // … but buys new access tokens.
    let form =
        format!("grant_type=refresh_token&refresh_token={refresh}&service=berth&scope=repository%3Aapps%2Fweb%3Apush");
    let r = n.req("POST", "/token", &[], Some(form.as_bytes()));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let access = &claims(r.json()["access_token"].as_str().unwrap())["access"];
    assert_eq!(access, &serde_json::json!([{"type":"repository","name":"apps/web","actions":["push"]}]));
    // GET with offline_token=true returns one too.
    let r = n.req(
        "GET",
        "/token?service=berth&offline_token=true&client_id=docker",
        &[("Authorization", &basic("dev", "pw"))],
        None,
    );
    assert!(r.json()["refresh_token"].is_string());
    // A wrong password, a garbage refresh token, an unknown grant.
    for (form, status) in [
        ("grant_type=password&username=dev&password=x&service=berth", 401),
        ("grant_type=refresh_token&refresh_token=abc&service=berth", 401),
        ("grant_type=client_credentials&service=berth", 400),
        ("grant_type=password&username=dev&password=pw&service=elsewhere", 400),
    ] {
        assert_eq!(n.req("POST", "/token", &[], Some(form.as_bytes())).status, status, "{form}");
    }
}

#[test]
fn catalog_scope_and_no_tokens_without_config() {
    let n = node(TokenConfig::default());
    let (_, t) = token(&n, Some(&basic("viewer", "pw")), &["registry:catalog:*"]);
    assert_eq!(n.req("GET", "/v2/_catalog", &[("Authorization", &bearer(&t))], None).status, 200);
    let (_, t) = token(&n, Some(&basic("viewer", "pw")), &[]);
    let r = n.req("GET", "/v2/_catalog", &[("Authorization", &bearer(&t))], None);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("scope=\"registry:catalog:*\""));
    let plain = TestNode::start();
    assert_eq!(plain.get("/token?service=berth").status, 404);
}

/// A new key signs after reload; tokens of the old key keep working while it is present; no
/// request fails during the rotation.
#[test]
fn key_rotation_mid_traffic() {
    let n = node(TokenConfig::default());
    let (_, t) = token(&n, Some(&basic("dev", "pw")), &["repository:apps/web:pull"]);
    let old = bearer(&t);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let base = n.base.clone();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, failures, done, base, old) =
                (stop.clone(), failures.clone(), done.clone(), base.clone(), old.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                while !stop.load(Ordering::Relaxed) {
                    // An old token, and a fresh one fetched each round.
                    let fresh = agent
                        .get(&format!("{base}/token?service=berth&scope=repository:apps/web:pull"))
                        .set("Authorization", &basic("dev", "pw"))
                        .call()
                        .ok()
                        .and_then(|r| r.into_json::<serde_json::Value>().ok())
                        .map(|v| bearer(&v));
                    for auth in [Some(old.clone()), fresh].into_iter().flatten() {
                        match agent.get(&format!("{base}/v2/apps/web/tags/list")).set("Authorization", &auth).call() {
                            Ok(_) | Err(ureq::Error::Status(404, _)) => {}
                            Err(_) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let dir = n.dir.path().join("token-keys");
    let (_, new_kid) =
        berth_node::auth::token::generate_key(&dir, berth_node::auth::token::KeyAlgorithm::EdDsa).unwrap();
    let app = &n.node.as_ref().unwrap().app;
    app.auth.as_ref().unwrap().reload(&app.cfg.auth).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 10);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed during the rotation");
    let (_, t) = token(&n, Some(&basic("dev", "pw")), &[]);
    let header = t["token"].as_str().unwrap().split('.').next().unwrap().to_owned();
    let header: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(n.get("/token/jwks.json").json()["keys"].as_array().unwrap().len(), 2);
}

fn internal(n: &TestNode, method: &str, path: &str, body: Option<serde_json::Value>) -> common::Resp {
    n.internal(method, path, body)
}

fn offline_token(n: &TestNode, user: &str, password: &str) -> String {
    let r = n.req(
        "GET",
        "/token?service=berth&offline_token=true&scope=repository%3Aapps%2Fweb%3Apull",
        &[("Authorization", &basic(user, password))],
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["refresh_token"].as_str().expect("a refresh token").to_owned()
}

fn refresh(n: &TestNode, refresh: &str) -> u16 {
    let form =
        format!("grant_type=refresh_token&refresh_token={refresh}&service=berth&scope=repository%3Aapps%2Fweb%3Apull");
    n.req("POST", "/token", &[], Some(form.as_bytes())).status
}

/// Security round 2, finding 1: a refresh token is bound to the credential it came from. It
/// stopped refreshing neither when the password changed nor when the account was deleted and
/// re-created (another person, another password); the same for robots.
#[test]
fn refresh_tokens_die_with_the_credential_they_came_from() {
    let n = node(TokenConfig::default());
    let set =
        |pw: &str| internal(&n, "PUT", "/internal/v1/users/erin", Some(serde_json::json!({"password": pw}))).status;
    assert_eq!(set("erin-pw-1"), 204);
    let t1 = offline_token(&n, "erin", "erin-pw-1");
    assert_eq!(refresh(&n, &t1), 200, "a fresh refresh token refreshes");
    // The password changes: the old refresh token is dead, a new one works.
    assert_eq!(set("erin-pw-2"), 204);
    assert_eq!(refresh(&n, &t1), 401, "refreshed after a password change");
    let t2 = offline_token(&n, "erin", "erin-pw-2");
    assert_eq!(refresh(&n, &t2), 200);
    // Deleted, then re-created with the same password: still dead (a new account).
    assert_eq!(internal(&n, "DELETE", "/internal/v1/users/erin", None).status, 204);
    assert_eq!(refresh(&n, &t2), 401, "refreshed for a deleted user");
    assert_eq!(set("erin-pw-2"), 204);
    assert_eq!(refresh(&n, &t2), 401, "refreshed for a re-created user");
    // Robots: revoked and re-created under the same name.
    let robot = |n: &TestNode| {
        let r = internal(n, "POST", "/internal/v1/robots", Some(serde_json::json!({"name": "ci"})));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()["secret"].as_str().unwrap().to_owned()
    };
    let s1 = robot(&n);
    let rt = offline_token(&n, "robot$ci", &s1);
    assert_eq!(refresh(&n, &rt), 200);
    assert_eq!(internal(&n, "DELETE", "/internal/v1/robots/ci", None).status, 204);
    assert_eq!(refresh(&n, &rt), 401, "refreshed for a revoked robot");
    let _s2 = robot(&n);
    assert_eq!(refresh(&n, &rt), 401, "refreshed for a re-created robot");
    // Configured users are unaffected while their hash stays.
    let dev = offline_token(&n, "dev", "pw");
    assert_eq!(refresh(&n, &dev), 200);
}

/// Security round 2, finding 3: anonymous token requests with many long scopes made tokens of
/// 60 KB, and presenting many of them grew the verified-token cache without a byte bound. The
/// request's scopes are capped (400), over-long bearer tokens are refused unread, and the
/// cache stays within its byte budget however many distinct big tokens arrive.
#[test]
fn token_requests_and_the_verified_cache_are_bounded() {
    let n = TestNode::start_with(|c| {
        c.auth.rules = vec![rule(&["anonymous"], &["public/**"], &["pull"])];
        c.auth.token = Some(TokenConfig { verified_cache_bytes: 256 * 1024, ..TokenConfig::default() });
    });
    let long = |i: usize| format!("repository:public/{}{i}:pull", "n".repeat(200));
    let too_many: Vec<String> = (0..51).map(long).collect();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let (st, v) = token(&n, None, &refs);
    assert_eq!(st, 400, "{v}");
    let huge = format!("Bearer {}", "e".repeat(40 * 1024));
    assert_eq!(n.req("GET", "/v2/public/x/tags/list", &[("Authorization", &huge)], None).status, 401);
    let gauge = |n: &TestNode| {
        let m = n.metrics();
        let line = m.lines().find(|l| l.starts_with("berth_auth_token_cache_bytes ")).expect("the gauge").to_owned();
        line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap()
    };
    for round in 0..300 {
        let scopes: Vec<String> = (0..50).map(|i| long(round * 100 + i)).collect();
        let refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let (st, t) = token(&n, None, &refs);
        assert_eq!(st, 200);
        assert!(t["token"].as_str().unwrap().len() > 10_000);
        let repo = format!("public/{}{}", "n".repeat(200), round * 100);
        let r = n.req("GET", &format!("/v2/{repo}/tags/list"), &[("Authorization", &bearer(&t))], None);
        assert_eq!(r.status, 404, "the token verified (no such repository)");
    }
    // Two serving cores, each within its budget (300 tokens of ~15 KB would be ~4.5 MB).
    let held = gauge(&n);
    assert!(held > 0.0 && held <= 2.0 * 256.0 * 1024.0, "{held} bytes cached");
}

/// Security round 2, finding 13 (and reliability round 2, item 3): a token for
/// `registry:catalog:*` listed nothing, because it carries no repository scopes; it lists what
/// its subject may pull, as the same user over Basic.
#[test]
fn a_catalog_token_lists_what_its_subject_may_pull() {
    let n = node(TokenConfig::default());
    let (_, t) = token(&n, Some(&basic("dev", "pw")), &["repository:apps/web:push,pull"]);
    let r = n.req(
        "POST",
        &format!("/v2/apps/web/blobs/uploads/?digest={}", sha256(b"x")),
        &[("Authorization", &bearer(&t))],
        Some(b"x"),
    );
    assert_eq!(r.status, 201);
    let (_, t) = token(&n, Some(&basic("dev", "pw")), &["repository:public/lib:push,pull"]);
    let r = n.req(
        "POST",
        &format!("/v2/public/lib/blobs/uploads/?digest={}", sha256(b"y")),
        &[("Authorization", &bearer(&t))],
        Some(b"y"),
    );
    assert_eq!(r.status, 201);
    let (st, t) = token(&n, Some(&basic("viewer", "pw")), &["registry:catalog:*"]);
    assert_eq!(st, 200);
    let r = n.req("GET", "/v2/_catalog", &[("Authorization", &bearer(&t))], None);
    assert_eq!(r.status, 200);
    // viewer pulls apps/**; anonymous (and so everyone) pulls public/**.
    assert_eq!(r.json()["repositories"], serde_json::json!(["apps/web", "public/lib"]));
    let basic_list = n.req("GET", "/v2/_catalog", &[("Authorization", &basic("viewer", "pw"))], None);
    assert_eq!(basic_list.json(), r.json(), "the same list over Basic");
}

/// Round 2 "what held": wildcard and dot-segment scopes grant nothing (names are parsed into
/// repository names before the rules are asked).
#[test]
fn wildcard_and_dot_scopes_grant_nothing() {
    let n = node(TokenConfig::default());
    for scope in
        ["repository:*:pull", "repository:**:pull", "repository:apps/../secret:pull", "repository:apps/*:pull,push"]
    {
        let (st, t) = token(&n, Some(&basic("dev", "pw")), &[scope]);
        assert_eq!(st, 200, "{scope}");
        let granted = claims(t["token"].as_str().unwrap())["access"].clone();
        assert!(granted.is_null() || granted == serde_json::json!([]), "{scope} granted {granted}");
    }
}
