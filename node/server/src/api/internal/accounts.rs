//! Account management for the sidecar and the CLI (see `berth_internal_api::accounts` for the
//! table of endpoints): users, robots, groups, rules, and the audit ring.

use berth_internal_api::accounts::{GroupSpec, NewRobot, Rule, SetPassword};
use berth_types::{ErrorKind, OciError};
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::auth::{AccountError, Auth};
use crate::http::{Body, Method, Request, Response};

/// Who the internal API acts for in the audit log.
const ACTOR: &str = "internal";

fn auth(app: &App) -> Result<&Auth, Response> {
    app.auth.as_deref().ok_or_else(|| {
        error(
            409,
            "authentication is off on this node: set [auth] (enabled = true, htpasswd, users, rules or token) \
             and restart it, then manage users and robots",
        )
    })
}

fn error(status: u16, msg: &str) -> Response {
    Response::json(status, &serde_json::json!({ "error": msg }))
}

fn answer(r: Result<(), AccountError>) -> Response {
    match r {
        Ok(()) => Response::new(204),
        Err(e) => {
            let (status, msg) = e.status();
            error(status, &msg)
        }
    }
}

async fn json<T: DeserializeOwned>(body: &mut Body<'_>) -> Result<T, Response> {
    let bytes = body.read_to_end(1 << 20).await.map_err(|e| error(400, &format!("body: {e:?}")))?;
    serde_json::from_slice(&bytes).map_err(|e| error(400, &format!("invalid JSON: {e}")))
}

/// Route `path` (after `/internal/v1/`) when it is an account endpoint.
pub(super) async fn handle(
    app: &App,
    req: &Request,
    body: &mut Body<'_>,
    path: &str,
) -> Option<(&'static str, Result<Response, OciError>)> {
    let (head, name) = path.split_once('/').map_or((path, None), |(h, n)| (h, Some(n)));
    let known = matches!(head, "accounts" | "users" | "robots" | "groups" | "rules" | "audit");
    if !known {
        return None;
    }
    let r = match serve(app, req, body, head, name).await {
        Ok(r) | Err(r) => r,
    };
    Some(("internal_accounts", Ok(r)))
}

async fn serve(
    app: &App,
    req: &Request,
    body: &mut Body<'_>,
    head: &str,
    name: Option<&str>,
) -> Result<Response, Response> {
    let auth = auth(app)?;
    Ok(match (req.method, head, name) {
        (Method::Get, "accounts", None) => {
            Response::json(200, &serde_json::to_value(auth.accounts()).unwrap_or_default())
        }
        (Method::Put, "users", Some(n)) => {
            let p: SetPassword = json(body).await?;
            answer(auth.set_user(n, &p.password, ACTOR).await)
        }
        (Method::Delete, "users", Some(n)) => answer(auth.delete_user(n, ACTOR)),
        (Method::Post, "robots", None) => {
            let r: NewRobot = json(body).await?;
            match auth.create_robot(&r, ACTOR) {
                Ok(created) => Response::json(201, &serde_json::to_value(created).unwrap_or_default()),
                Err(e) => answer(Err(e)),
            }
        }
        (Method::Delete, "robots", Some(n)) => answer(auth.delete_robot(n, ACTOR)),
        (Method::Put, "groups", Some(n)) => {
            let g: GroupSpec = json(body).await?;
            answer(auth.set_group(n, g.members, ACTOR))
        }
        (Method::Delete, "groups", Some(n)) => answer(auth.delete_group(n, ACTOR)),
        (Method::Put, "rules", None) => {
            let rules: Vec<Rule> = json(body).await?;
            answer(auth.set_rules(rules, ACTOR))
        }
        (Method::Get, "audit", None) => {
            let num = |k: &str, d: u64| req.query(k).and_then(|v| v.parse().ok()).unwrap_or(d);
            let page = auth.audit.page(num("from", 0), num("limit", 1000).min(10_000) as usize);
            Response::json(200, &serde_json::to_value(page).unwrap_or_default())
        }
        _ => Response::from(OciError::new(ErrorKind::MethodNotAllowed).msg("method not allowed here")),
    })
}
