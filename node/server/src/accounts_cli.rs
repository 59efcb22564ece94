//! `berth user …` and `berth robot …`: manage the running node's users and robot accounts
//! through its internal API (found through the data directory, as `berth gc` finds it).

use std::time::Duration;

use berth_internal_api::accounts::{Accounts, CreatedRobot, NewRobot, SetPassword};
use berth_internal_api::InternalClient;

const TIMEOUT: Duration = Duration::from_secs(30);

fn call(
    c: &InternalClient,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let (status, v) = c.call(method, path, body, TIMEOUT).map_err(anyhow::Error::msg)?;
    if (200..300).contains(&status) {
        return Ok(v);
    }
    let msg = v["error"].as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    anyhow::bail!("{msg} (HTTP {status})")
}

/// `berth user add NAME` (prompted password) or password change.
pub fn user_set(c: &InternalClient, name: &str, password: String) -> anyhow::Result<()> {
    let body = serde_json::to_value(SetPassword { password })?;
    call(c, "PUT", &format!("/internal/v1/users/{name}"), Some(body))?;
    println!("user {name} set");
    Ok(())
}

/// `berth user rm NAME`.
pub fn user_rm(c: &InternalClient, name: &str) -> anyhow::Result<()> {
    call(c, "DELETE", &format!("/internal/v1/users/{name}"), None)?;
    println!("user {name} deleted");
    Ok(())
}

/// `berth robot add NAME`: prints the secret once.
pub fn robot_add(c: &InternalClient, r: NewRobot, json: bool) -> anyhow::Result<()> {
    let v = call(c, "POST", "/internal/v1/robots", Some(serde_json::to_value(r)?))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let created: CreatedRobot = serde_json::from_value(v)?;
    println!("robot {} created; log in as {:?} with this secret (it is not shown again):", created.name, created.login);
    println!("{}", created.secret);
    Ok(())
}

/// `berth robot rm NAME`.
pub fn robot_rm(c: &InternalClient, name: &str) -> anyhow::Result<()> {
    call(c, "DELETE", &format!("/internal/v1/robots/{name}"), None)?;
    println!("robot {name} revoked");
    Ok(())
}

/// `berth user list` / `berth robot list`.
pub fn list(c: &InternalClient, json: bool) -> anyhow::Result<()> {
    let v = call(c, "GET", "/internal/v1/accounts", None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let a: Accounts = serde_json::from_value(v)?;
    for u in &a.users {
        let src = match u.source {
            berth_internal_api::accounts::Source::Config => "config",
            berth_internal_api::accounts::Source::Managed => "managed",
        };
        println!("user   {:<24} {src:<8} groups: {}", u.name, u.groups.join(","));
    }
    for r in &a.robots {
        let exp = r.expires_at_ms.map_or("never".to_owned(), |ms| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        });
        println!("robot  {:<24} expires {exp}  {}", r.name, r.description);
    }
    println!("{} rules from the configuration, {} managed", a.config_rules.len(), a.rules.len());
    Ok(())
}
