//! Users, robots, groups and rules managed through the internal API: stored by the node,
//! applied at once, kept across restarts, audited.

mod common;

use berth_node::config::User;
use common::{basic, sha256, TestNode};

fn internal(n: &TestNode, method: &str, path: &str, body: Option<serde_json::Value>) -> common::Resp {
    n.internal(method, path, body)
}

fn with_admin() -> TestNode {
    let hash = bcrypt::hash("admin-pw", 4).unwrap();
    TestNode::start_with(|c| c.auth.users = vec![User { name: "admin".into(), bcrypt: hash }])
}

#[test]
fn managed_users_log_in_and_are_removed_at_once() {
    let n = with_admin();
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &basic("dana", "pw-1"))], None).status, 401);
    let r = internal(&n, "PUT", "/internal/v1/users/dana", Some(serde_json::json!({"password": "pw-1"})));
    assert_eq!(r.status, 204, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &basic("dana", "pw-1"))], None).status, 200);
    // A password change takes effect at once (the cached login is dropped).
    internal(&n, "PUT", "/internal/v1/users/dana", Some(serde_json::json!({"password": "pw-2"})));
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &basic("dana", "pw-1"))], None).status, 401);
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &basic("dana", "pw-2"))], None).status, 200);
    // Configured users are not managed here; bad names and long passwords are refused.
    let r = internal(&n, "PUT", "/internal/v1/users/admin", Some(serde_json::json!({"password": "x"})));
    assert_eq!(r.status, 409);
    assert!(r.json()["error"].as_str().unwrap().contains("configuration"));
    assert_eq!(internal(&n, "PUT", "/internal/v1/users/a:b", Some(serde_json::json!({"password": "x"}))).status, 400);
    let long = "p".repeat(73);
    assert_eq!(internal(&n, "PUT", "/internal/v1/users/e", Some(serde_json::json!({"password": long}))).status, 400);
    let a = internal(&n, "GET", "/internal/v1/accounts", None).json();
    let users: Vec<(String, String)> = a["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap().to_owned(), u["source"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(users, vec![("admin".into(), "config".into()), ("dana".into(), "managed".into())]);
    assert!(!String::from_utf8_lossy(&internal(&n, "GET", "/internal/v1/accounts", None).body).contains("$2"));
    // Kept across a restart; the file is private.
    let dir = n.stop();
    let n = TestNode::start_in(dir, |c| {
        c.auth.users = vec![User { name: "admin".into(), bcrypt: bcrypt::hash("admin-pw", 4).unwrap() }]
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(n.dir.path().join("accounts.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &basic("dana", "pw-2"))], None).status, 200);
    assert_eq!(internal(&n, "DELETE", "/internal/v1/users/dana", None).status, 204);
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &basic("dana", "pw-2"))], None).status, 401);
    assert_eq!(internal(&n, "DELETE", "/internal/v1/users/dana", None).status, 404);
}

#[test]
fn robots_secrets_expiry_revocation() {
    let n = with_admin();
    let r =
        internal(&n, "POST", "/internal/v1/robots", Some(serde_json::json!({"name": "ci", "description": "builds"})));
    assert_eq!(r.status, 201);
    let created = r.json();
    assert_eq!(created["login"], "robot$ci");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 43, "256 bits");
    let auth = basic("robot$ci", &secret);
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &auth)], None).status, 200);
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &basic("robot$ci", "guess"))], None).status, 401);
    // Stored hashed: the secret is nowhere on disk.
    let stored = std::fs::read_to_string(n.dir.path().join("accounts.json")).unwrap();
    assert!(!stored.contains(&secret));
    assert!(!String::from_utf8_lossy(&internal(&n, "GET", "/internal/v1/accounts", None).body).contains(&secret));
    // Same name again: refused (delete first).
    assert_eq!(internal(&n, "POST", "/internal/v1/robots", Some(serde_json::json!({"name": "ci"}))).status, 409);
    // Revoked at once.
    assert_eq!(internal(&n, "DELETE", "/internal/v1/robots/ci", None).status, 204);
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &auth)], None).status, 401);
    // Expiry.
    let r =
        internal(&n, "POST", "/internal/v1/robots", Some(serde_json::json!({"name": "short", "expires_in_secs": 1})));
    let s = r.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &basic("robot$short", &s))], None).status, 200);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &basic("robot$short", &s))], None).status, 401);
}

#[test]
fn groups_and_rules_through_the_api() {
    let n = with_admin();
    internal(&n, "PUT", "/internal/v1/users/dev", Some(serde_json::json!({"password": "pw"})));
    let r = internal(&n, "POST", "/internal/v1/robots", Some(serde_json::json!({"name": "deploy"})));
    let robot = basic("robot$deploy", r.json()["secret"].as_str().unwrap());
    let dev = basic("dev", "pw");
    let admin = basic("admin", "admin-pw");
    // No rules yet: every authenticated caller may push.
    let data = b"cfg";
    let d = sha256(data);
    let push = |auth: &str, repo: &str| {
        n.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[("Authorization", auth)], Some(data)).status
    };
    assert_eq!(push(&dev, "apps/a"), 201);
    assert_eq!(
        internal(&n, "PUT", "/internal/v1/groups/team", Some(serde_json::json!({"members": ["dev", "robot$deploy"]})))
            .status,
        204
    );
    let rules = serde_json::json!([
        {"subjects": ["user:admin"], "repositories": ["**"], "actions": ["*"]},
        {"subjects": ["group:team"], "repositories": ["apps/**"], "actions": ["pull", "push"]},
        {"subjects": ["robot:deploy"], "repositories": ["apps/**"], "actions": ["push"], "effect": "deny"}
    ]);
    assert_eq!(internal(&n, "PUT", "/internal/v1/rules", Some(rules)).status, 204);
    assert_eq!(push(&dev, "apps/a"), 201);
    assert_eq!(push(&dev, "other/a"), 403);
    assert_eq!(push(&admin, "other/a"), 201);
    // The robot is in the group, but the deny rule comes… after the group rule: the group wins.
    assert_eq!(push(&robot, "apps/b"), 201);
    assert_eq!(n.req("GET", &format!("/v2/apps/a/blobs/{d}"), &[("Authorization", &robot)], None).status, 200);
    // Bad rules are refused before anything is stored.
    let bad = serde_json::json!([{"subjects": ["role:x"], "repositories": ["**"], "actions": ["pull"]}]);
    let r = internal(&n, "PUT", "/internal/v1/rules", Some(bad));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("managed rules[0]"));
    assert_eq!(push(&dev, "apps/a"), 201, "the previous rules still apply");
    // The audit ring has the changes and the denial.
    let page = internal(&n, "GET", "/internal/v1/audit?from=0", None).json();
    let events: Vec<&str> = page["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    for want in ["user_set", "robot_created", "group_set", "rules_set", "denied"] {
        assert!(events.contains(&want), "{want} missing from {events:?}");
    }
    let denied = page["events"].as_array().unwrap().iter().find(|e| e["event"] == "denied").unwrap();
    assert_eq!(denied["actor"], "dev");
    assert!(denied["subject"].as_str().unwrap().contains("repository:other/a:pull,push"));
    assert!(page["epoch"].as_str().unwrap().len() > 8);
    // Without auth on the node, accounts cannot be managed.
    let plain = TestNode::start();
    assert_eq!(internal(&plain, "PUT", "/internal/v1/users/x", Some(serde_json::json!({"password": "p"}))).status, 409);
}
