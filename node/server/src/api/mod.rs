//! HTTP resources, one per file. `handle` authorises and dispatches; each resource matches on
//! the method and returns `Result<Response, OciError>`; statuses of errors come from the one
//! error table in `berth_types`.
//!
//! Layering: api → store/index; nothing below calls back up.

mod base;
mod blobs;
mod catalog;
pub mod internal;
mod manifests;
mod ops;
pub(crate) use ops::disk_space;
mod referrers;
mod scans;
mod tags;
mod uploads;

use berth_types::{ErrorKind, OciError};

use crate::app::App;
use crate::auth::Verdict;
use crate::http::{Body, Method, Request, Response};
use crate::routes::{route, Endpoint};

/// Header every registry response carries.
pub const API_VERSION: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");

/// Who is asking: a client on the public listener (auth and the pull policy apply), or the
/// admin sidecar and its scanner through the internal listener (authenticated by the internal
/// token, exempt from the pull policy: the scanner must read an image to judge it, and the
/// sidecar pushes scan reports as referrers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The public registry API.
    Public,
    /// The registry API on the internal listener.
    Internal,
}

/// Handle one request. Returns the response and the endpoint name for logs and metrics.
pub async fn handle(app: &App, req: &Request, body: &mut Body<'_>) -> (Response, &'static str) {
    handle_as(app, req, body, View::Public).await
}

/// `handle` for a given view.
pub async fn handle_as(app: &App, req: &Request, body: &mut Body<'_>, view: View) -> (Response, &'static str) {
    let ep = match route(&req.path) {
        Ok(ep) => ep,
        Err(e) => {
            let mut r = Response::from(e);
            if req.path.starts_with("/v2") {
                r = r.header(API_VERSION.0, API_VERSION.1);
            }
            return (r, "unknown");
        }
    };
    let name = ep.name();
    if view == View::Internal {
        // The internal token was checked by the internal listener; ops endpoints stay public.
    } else if ep.is_registry_api() {
        if let Err(r) = authorize(app, req, &ep) {
            return (r, name);
        }
    }
    let result = match ep {
        Endpoint::Base => base::handle(req),
        Endpoint::Catalog => catalog::handle(app, req),
        Endpoint::Tags(repo) => tags::handle(app, req, &repo),
        Endpoint::Manifest(repo, reference) => {
            manifests::handle(app, req, body, &repo, &reference, view == View::Public).await
        }
        Endpoint::ManifestScan(repo, reference) => scans::manifest(app, req, &repo, &reference),
        Endpoint::ScanSummary(repo) => scans::summary(app, req, &repo),
        Endpoint::ManifestBadReference(repo, raw) => manifests::bad_reference(req, &repo, &raw),
        Endpoint::Blob(repo, digest) => blobs::handle(app, req, &repo, &digest).await,
        Endpoint::UploadStart(repo) => uploads::start(app, req, body, &repo).await,
        Endpoint::Upload(repo, id) => uploads::handle(app, req, body, &repo, id).await,
        Endpoint::Referrers(repo, digest) => referrers::handle(app, req, &repo, &digest),
        Endpoint::Health | Endpoint::Ready | Endpoint::Metrics => ops::handle(app, req, &ep),
    };
    let mut resp = result.unwrap_or_else(Response::from);
    if ep_is_api(name) {
        resp = resp.header(API_VERSION.0, API_VERSION.1);
    }
    (resp, name)
}

fn ep_is_api(name: &str) -> bool {
    !matches!(name, "healthz" | "readyz" | "metrics")
}

fn authorize(app: &App, req: &Request, ep: &Endpoint) -> Result<(), Response> {
    let Some(auth) = &app.auth else { return Ok(()) };
    let read_only = matches!(req.method, Method::Get | Method::Head);
    match auth.check(req.header("authorization")) {
        Verdict::User(_) => Ok(()),
        Verdict::Anonymous if auth.anonymous_pull && read_only && !matches!(ep, Endpoint::Base) => Ok(()),
        _ => Err(Response::from(OciError::new(ErrorKind::Unauthorized))
            .header("WWW-Authenticate", format!("Basic realm=\"{}\"", auth.realm))
            .header(API_VERSION.0, API_VERSION.1)),
    }
}

/// 405 for a method the resource does not serve.
pub(crate) fn method_not_allowed(allow: &'static str) -> Result<Response, OciError> {
    Ok(Response::from(OciError::new(ErrorKind::MethodNotAllowed)).header("Allow", allow))
}

/// 405 `UNSUPPORTED` when deletes are disabled.
pub(crate) fn check_deletes(app: &App) -> Result<(), OciError> {
    if app.cfg.storage.delete_enabled {
        Ok(())
    } else {
        Err(OciError::new(ErrorKind::Unsupported).msg("deletes are disabled on this registry"))
    }
}

/// Parse `n` and `last` pagination parameters. `n` absent means "everything", capped.
pub(crate) fn pagination(req: &Request) -> Result<(usize, Option<String>), OciError> {
    const MAX_PAGE: usize = 10_000;
    let n = match req.query("n") {
        None => MAX_PAGE,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| OciError::new(ErrorKind::BadRequest).msg("n must be a non-negative integer"))?
            .min(MAX_PAGE as u64) as usize,
    };
    Ok((n, req.query("last").map(str::to_owned)))
}

/// A `Link` header value for the next page.
pub(crate) fn next_link(path: &str, n: usize, last: &str, extra: &str) -> String {
    let enc: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    format!("<{path}?n={n}&last={enc}{extra}>; rel=\"next\"")
}
