//! The internal API: a separate listener (loopback, ephemeral port by default) for the admin
//! sidecar and `berth gc`, authenticated by a shared bearer token. Never on the public port.
//!
//! | method | path | file |
//! |---|---|---|
//! | GET | `/internal/v1/changes?from=N&limit=M&wait_ms=T` | `changes.rs` (long poll) |
//! | GET | `/internal/v1/export` | `export.rs` (consistent snapshot) |
//! | POST | `/internal/v1/gc` | `gc.rs` |
//! | GET | `/internal/v1/jobs`, `/internal/v1/jobs/<id>` | `jobs.rs` |
//! | GET | `/internal/v1/workers` | `workers.rs` |
//! | GET | `/internal/v1/stats` | `stats.rs` |
//! | GET | `/internal/v1/cluster[?probe=true]` | `cluster.rs` (nodes, log positions, leases, snapshot; with `probe`, each node's reachability) |
//! | POST | `/internal/v1/cluster/compact` | `cluster.rs` (snapshot the registry, trim the log) |
//! | GET, PUT | `/internal/v1/scans/<digest>` | `scans.rs` (scan records from the sidecar) |
//! | … | `/internal/v1/accounts`, `users/<n>`, `robots[/<n>]`, `groups/<n>`, `rules`, `audit` | `accounts.rs` (see `berth_internal_api::accounts`) |
//! | any | `/v2/…` | the registry API for the sidecar and its scanner, exempt from the pull policy (`/v2/` answers without a token, as a registry ping must) |

mod accounts;
mod changes;
mod cluster;
mod export;
mod gc;
mod jobs;
mod scans;
mod stats;
mod workers;

use berth_types::{ErrorKind, OciError};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::http::{Body, Method, Request, Response};

/// Handle one internal request. Returns the response and an endpoint name for logs.
pub async fn handle(app: &App, req: &Request, body: &mut Body<'_>) -> (Response, &'static str) {
    // The registry API for the scanner and the sidecar. The ping is anonymous: a registry client (Trivy)
    // sends its bearer token only after a ping that did not ask for a token exchange.
    // Operational endpoints: Prometheus scrapes `/metrics` here (no token: the listener is
    // loopback or a private network by configuration, and metrics carry no secrets).
    if matches!(req.path.as_str(), "/metrics" | "/healthz" | "/readyz") {
        return super::handle_as(app, req, body, super::View::Internal, &super::Client::default()).await;
    }
    if req.path == "/v2/" || req.path == "/v2" {
        return (
            Response::json(200, &serde_json::json!({})).header(super::API_VERSION.0, super::API_VERSION.1),
            "base",
        );
    }
    let given = req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(app.internal_token.as_bytes())) {
        let r = Response::from(OciError::new(ErrorKind::Unauthorized).msg("internal API: bad or missing bearer token"))
            .header("WWW-Authenticate", "Bearer realm=\"berth-internal\"");
        return (r, "internal");
    }
    if let Err(e) = berth_internal_api::client::check_path(&req.path) {
        // Dot segments and encoded separators name no internal endpoint (the sidecar's client
        // refuses to send them; this is the other side of the same rule).
        return (Response::from(bad(e)), "internal");
    }
    if req.path.starts_with("/v2/") {
        return super::handle_as(app, req, body, super::View::Internal, &super::Client::default()).await;
    }
    let path = req.path.strip_prefix("/internal/v1/").unwrap_or("");
    if let Some((name, result)) = accounts::handle(app, req, body, path).await {
        return (result.unwrap_or_else(Response::from), name);
    }
    let (name, result) = match (req.method, path) {
        (Method::Get, "changes") => ("internal_changes", changes::get(app, req).await),
        (Method::Get, "export") => ("internal_export", export::get(app)),
        (Method::Post, "gc") => ("internal_gc", gc::post(app, body).await),
        (Method::Get, "jobs") => ("internal_jobs", jobs::list(app)),
        (Method::Get, p) if p.starts_with("jobs/") => ("internal_job", jobs::get(app, &p[5..])),
        (Method::Get, "workers") => ("internal_workers", workers::get(app)),
        (Method::Get, "stats") => ("internal_stats", stats::get(app)),
        (Method::Get, "cluster") => ("internal_cluster", cluster::get(app, req).await),
        (Method::Post, "cluster/compact") => ("internal_cluster_compact", cluster::compact(app).await),
        (Method::Get, p) if p.starts_with("scans/") => ("internal_scan", scans::get(app, &p[6..])),
        (Method::Put, p) if p.starts_with("scans/") => ("internal_scan", scans::put(app, body, &p[6..]).await),
        (_, "changes" | "export" | "jobs" | "workers" | "stats" | "cluster") => {
            ("internal", super::method_not_allowed("GET"))
        }
        (_, "gc" | "cluster/compact") => ("internal", super::method_not_allowed("POST")),
        _ => ("internal", Err(OciError::new(ErrorKind::NotFound).msg("no such internal endpoint"))),
    };
    (result.unwrap_or_else(Response::from), name)
}

fn bad(msg: impl Into<String>) -> OciError {
    OciError::new(ErrorKind::BadRequest).msg(msg)
}
