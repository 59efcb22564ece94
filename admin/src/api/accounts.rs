//! Users, robots, groups, rules (stored and enforced by the node; forwarded to its internal
//! API) and the audit trail (Postgres).
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/api/v1/accounts` | users (configured and managed), robots, groups, rules |
//! | PUT | `/api/v1/users/{name}` | `{"password": …}`: create or change a managed user |
//! | DELETE | `/api/v1/users/{name}` | |
//! | POST | `/api/v1/robots` | `{"name", "description", "expires_in_secs"}` → the secret, once |
//! | DELETE | `/api/v1/robots/{name}` | revoke |
//! | PUT, DELETE | `/api/v1/groups/{name}` | `{"members": […]}` |
//! | GET, PUT | `/api/v1/rules` | the managed rules (after the configured ones) |
//! | GET | `/api/v1/audit?event=&actor=&limit=` | newest first |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{JsonBody, NameParam, QueryParams};
use crate::{audit, db, Sidecar};

async fn forward(sc: &Sidecar, method: &'static str, path: &str, body: Option<Value>) -> Result<(u16, Value), String> {
    sc.node.call(method, path, body, Duration::from_secs(30)).await.map_err(|e| format!("node: {e}"))
}

fn node_unreachable(e: String) -> Response {
    super::error(StatusCode::BAD_GATEWAY, e)
}

fn relay((status, v): (u16, Value)) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if status == 204 {
        return code.into_response();
    }
    (code, Json(v)).into_response()
}

async fn change(
    sc: &Sidecar,
    method: &'static str,
    path: &str,
    body: Option<Value>,
    event: &str,
    subject: &str,
) -> Response {
    match forward(sc, method, path, body).await {
        Ok(answer) => {
            if (200..300).contains(&answer.0) {
                audit::record(sc, event, subject).await;
            }
            relay(answer)
        }
        Err(e) => node_unreachable(e),
    }
}

fn missing_body() -> Response {
    super::error(StatusCode::BAD_REQUEST, "a JSON body is required")
}

pub(super) async fn accounts(State(sc): State<Arc<Sidecar>>) -> Response {
    match forward(&sc, "GET", "/internal/v1/accounts", None).await {
        Ok(a) => relay(a),
        Err(e) => node_unreachable(e),
    }
}

pub(super) async fn put_user(
    State(sc): State<Arc<Sidecar>>,
    NameParam(name): NameParam,
    JsonBody(body): JsonBody<Value>,
) -> Response {
    match body {
        Some(b) => change(&sc, "PUT", &format!("/internal/v1/users/{name}"), Some(b), "user_set", name.as_str()).await,
        None => missing_body(),
    }
}

pub(super) async fn delete_user(State(sc): State<Arc<Sidecar>>, NameParam(name): NameParam) -> Response {
    change(&sc, "DELETE", &format!("/internal/v1/users/{name}"), None, "user_deleted", name.as_str()).await
}

pub(super) async fn post_robot(State(sc): State<Arc<Sidecar>>, JsonBody(body): JsonBody<Value>) -> Response {
    match body {
        Some(b) => {
            let name = b["name"].as_str().unwrap_or("").to_owned();
            change(&sc, "POST", "/internal/v1/robots", Some(b), "robot_created", &name).await
        }
        None => missing_body(),
    }
}

pub(super) async fn delete_robot(State(sc): State<Arc<Sidecar>>, NameParam(name): NameParam) -> Response {
    change(&sc, "DELETE", &format!("/internal/v1/robots/{name}"), None, "robot_deleted", name.as_str()).await
}

pub(super) async fn put_group(
    State(sc): State<Arc<Sidecar>>,
    NameParam(name): NameParam,
    JsonBody(body): JsonBody<Value>,
) -> Response {
    match body {
        Some(b) => {
            change(&sc, "PUT", &format!("/internal/v1/groups/{name}"), Some(b), "group_set", name.as_str()).await
        }
        None => missing_body(),
    }
}

pub(super) async fn delete_group(State(sc): State<Arc<Sidecar>>, NameParam(name): NameParam) -> Response {
    change(&sc, "DELETE", &format!("/internal/v1/groups/{name}"), None, "group_deleted", name.as_str()).await
}

pub(super) async fn get_rules(State(sc): State<Arc<Sidecar>>) -> Response {
    match forward(&sc, "GET", "/internal/v1/accounts", None).await {
        Ok((200, v)) => Json(json!({ "config_rules": v["config_rules"], "rules": v["rules"] })).into_response(),
        Ok(other) => relay(other),
        Err(e) => node_unreachable(e),
    }
}

pub(super) async fn put_rules(State(sc): State<Arc<Sidecar>>, JsonBody(body): JsonBody<Value>) -> Response {
    match body {
        Some(b) => {
            // `{"rules": [...]}` or the bare list.
            let rules = if b.is_array() { b } else { b["rules"].clone() };
            let n = rules.as_array().map_or(0, Vec::len);
            change(&sc, "PUT", "/internal/v1/rules", Some(rules), "rules_set", &format!("{n} rules")).await
        }
        None => missing_body(),
    }
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    event: Option<String>,
    actor: Option<String>,
    limit: Option<i64>,
}

pub(super) async fn audit_log(State(sc): State<Arc<Sidecar>>, QueryParams(q): QueryParams<AuditQuery>) -> Response {
    let c = match db::connect(&sc.cfg.postgres).await {
        Ok(c) => c,
        Err(e) => return super::db_error(e),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = c
        .query(
            "SELECT extract(epoch from at)::float8, source, event, actor, subject, peer, count FROM audit_log
             WHERE ($1::text IS NULL OR event = $1) AND ($2::text IS NULL OR actor = $2)
             ORDER BY at DESC, id DESC LIMIT $3",
            &[&q.event, &q.actor, &limit],
        )
        .await;
    match rows {
        Ok(rows) => {
            let events: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "at": r.get::<_, f64>(0),
                        "source": r.get::<_, String>(1),
                        "event": r.get::<_, String>(2),
                        "actor": r.get::<_, String>(3),
                        "subject": r.get::<_, String>(4),
                        "peer": r.get::<_, Option<String>>(5),
                        "count": r.get::<_, i64>(6),
                    })
                })
                .collect();
            Json(json!({ "events": events })).into_response()
        }
        Err(e) => super::db_error(e),
    }
}
