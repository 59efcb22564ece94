//! HTTP resources, one per file. `handle` authorises and dispatches; each resource matches on
//! the method and returns `Result<Response, OciError>`; statuses of errors come from the one
//! error table in `berth_types`.
//!
//! Layering: api → store/index; nothing below calls back up.

mod base;
mod blobs;
mod catalog;
mod forward;
pub mod internal;
mod manifests;
mod ops;
pub(crate) use ops::disk_space;
mod referrers;
mod scans;
mod tags;
mod token;
mod uploads;

use std::net::IpAddr;
use std::time::Duration;

use berth_types::{ErrorKind, OciError, RepoName};

use crate::app::App;
use crate::auth::policy::Action;
use crate::auth::{Auth, Identity, Refused};
use crate::config::MetricsExposure;
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

/// What the caller may do, once authorised: handlers that act on more than the request's own
/// repository (the catalog, cross-repository mounts) ask it.
pub struct Access<'a> {
    auth: Option<&'a Auth>,
    id: Identity,
}

impl Access<'_> {
    /// Everything allowed: auth off, or the internal listener.
    fn open() -> Access<'static> {
        Access { auth: None, id: Identity::Anonymous }
    }

    /// Whether every repository is open to the caller (no filtering needed).
    pub fn unrestricted(&self) -> bool {
        self.auth.is_none()
    }

    /// Whether the caller may take `action` on `repo`.
    pub fn may(&self, repo: &str, action: Action) -> bool {
        self.auth.is_none_or(|a| a.may(&self.id, repo, action))
    }

    /// Whether `repo` is listed in the caller's catalog: what it may pull. A token that grants
    /// `registry:catalog:*` carries no repository scopes for the repositories it lists, so it
    /// lists what its subject may pull under the rules in force (as the same user over Basic).
    pub fn may_list(&self, repo: &str) -> bool {
        let Some(a) = self.auth else { return true };
        match &self.id {
            Identity::Token(g) if g.catalog() => {
                let caller = if g.subject.is_empty() {
                    crate::auth::policy::Caller::Anonymous
                } else {
                    crate::auth::policy::Caller::Named(g.subject.clone())
                };
                a.policy().allowed(&caller, repo).has(Action::Pull) || g.actions(repo).has(Action::Pull)
            }
            id => a.may(id, repo, Action::Pull),
        }
    }

    /// Who, for logs and upload quotas: the user, or `None` when anonymous.
    pub fn user(&self) -> Option<&str> {
        match self.id.name() {
            "-" => None,
            n => Some(n),
        }
    }
}

/// The client as the connection knows it.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// Its address.
    pub addr: Option<IpAddr>,
    /// The common name of its verified TLS client certificate (mTLS), a user name.
    pub cert_user: Option<String>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Handle one request from `client` on the public listener. Returns the response and the
/// endpoint name for logs and metrics.
pub async fn handle(app: &App, req: &Request, body: &mut Body<'_>, client: &Client) -> (Response, &'static str) {
    handle_as(app, req, body, View::Public, client).await
}

/// `handle` for a given view.
pub async fn handle_as(
    app: &App,
    req: &Request,
    body: &mut Body<'_>,
    view: View,
    client: &Client,
) -> (Response, &'static str) {
    let peer = client.addr;
    let mut ep = match route(&req.path) {
        Ok(ep) => ep,
        Err(e) => {
            let mut r = Response::from(e);
            if req.path.starts_with("/v2") {
                r = r.header(API_VERSION.0, API_VERSION.1);
            }
            return (r, "unknown");
        }
    };
    if let Some(pt) = &app.pull_through {
        if matches!(req.method, Method::Get | Method::Head) {
            // Mirror mode: containerd's `?ns=<upstream>`, Docker's registry-mirrors (plain names).
            if let Some(repo) = ep.read_repo_mut() {
                if let Some(local) = pt.local_name(repo, req.query("ns")) {
                    *repo = local;
                }
            }
        } else if let Some(msg) = ep.written_repo(req.method).and_then(|r| pt.mirror_refuses_write(r)) {
            return (
                Response::from(OciError::new(ErrorKind::Denied).msg(msg)).header(API_VERSION.0, API_VERSION.1),
                ep.name(),
            );
        } else if let Some(route) = ep.written_repo(req.method).and_then(|r| pt.route(r)) {
            if !route.upstream.cfg.allow_push {
                let msg = format!(
                    "this repository is a pull-through cache of upstream {}; pushes and deletes are refused here",
                    route.upstream.name()
                );
                return (
                    Response::from(OciError::new(ErrorKind::Denied).msg(msg)).header(API_VERSION.0, API_VERSION.1),
                    ep.name(),
                );
            }
        }
    }
    let name = ep.name();
    let registry_api = ep.is_registry_api();
    let access = match view {
        // The internal token was checked by the internal listener.
        View::Internal => Access::open(),
        View::Public => match authorize(app, req, &ep, client).await {
            Ok(a) => a,
            Err(r) => return (r, name),
        },
    };
    // An upload another cluster node owns: forwarded there (authorised here).
    if let (Some(cn), Endpoint::Upload(_, id)) = (&app.cluster, &ep) {
        if let Some(owner) = cn.cluster.owner(id.tag()) {
            let resp = forward::upload(cn, req, body, &owner).await.header(API_VERSION.0, API_VERSION.1);
            return (resp, name);
        }
    }
    // In a cluster, a tag or a list read sees every write acknowledged anywhere before it.
    if let Some(cn) = app.cluster.as_ref().filter(|_| ep.reads_changeable(req.method)) {
        cn.cluster.fresh().await;
    }
    let result = match ep {
        Endpoint::Base => base::handle(req),
        Endpoint::Catalog => catalog::handle(app, req, &access),
        Endpoint::Tags(repo) => tags::handle(app, req, &repo),
        Endpoint::Manifest(repo, reference) => {
            manifests::handle(app, req, body, &repo, &reference, view == View::Public).await
        }
        Endpoint::ManifestScan(repo, reference) => scans::manifest(app, req, &repo, &reference).await,
        Endpoint::ScanSummary(repo) => scans::summary(app, req, &repo),
        Endpoint::ManifestBadReference(repo, raw) => manifests::bad_reference(req, &repo, &raw),
        Endpoint::Blob(repo, digest) => blobs::handle(app, req, &repo, &digest).await,
        Endpoint::UploadStart(repo) => uploads::start(app, req, body, &repo, &access, peer).await,
        Endpoint::Upload(repo, id) => uploads::handle(app, req, body, &repo, id).await,
        Endpoint::Referrers(repo, digest) => referrers::handle(app, req, &repo, &digest),
        Endpoint::Token => token::handle(app, req, body, client).await,
        Endpoint::Jwks => token::jwks(app, req),
        Endpoint::Health | Endpoint::Ready | Endpoint::Metrics => ops::handle(app, req, &ep),
    };
    let mut resp = result.unwrap_or_else(Response::from);
    if registry_api {
        resp = resp.header(API_VERSION.0, API_VERSION.1);
    }
    if resp.user.is_none() {
        resp.user = access.user().map(str::to_owned);
    }
    (resp, name)
}

/// What a request needs from the caller.
enum Need<'a> {
    /// Nothing (health, token endpoint).
    Nothing,
    /// Any authenticated caller (`/v2/`, the ping clients log in with).
    Login,
    /// `registry:catalog:*`.
    Catalog,
    /// An action on a repository.
    Repo(&'a RepoName, Action),
}

fn need<'a>(app: &App, ep: &'a Endpoint, method: Method) -> Need<'a> {
    let by_method = |repo, read| {
        Need::Repo(
            repo,
            match method {
                Method::Delete => Action::Delete,
                Method::Get | Method::Head => Action::Pull,
                _ if read => Action::Pull,
                _ => Action::Push,
            },
        )
    };
    match ep {
        Endpoint::Base => Need::Login,
        Endpoint::Catalog => Need::Catalog,
        Endpoint::Manifest(r, _) | Endpoint::ManifestBadReference(r, _) => by_method(r, false),
        Endpoint::Blob(r, _) | Endpoint::Tags(r) | Endpoint::Referrers(r, _) | Endpoint::ScanSummary(r) => {
            by_method(r, true)
        }
        Endpoint::ManifestScan(r, _) => by_method(r, false),
        Endpoint::UploadStart(r) | Endpoint::Upload(r, _) => Need::Repo(r, Action::Push),
        Endpoint::Metrics => match app.cfg.metrics.public {
            MetricsExposure::Authenticated => Need::Login,
            MetricsExposure::Open | MetricsExposure::Off => Need::Nothing,
        },
        Endpoint::Health | Endpoint::Ready | Endpoint::Token | Endpoint::Jwks => Need::Nothing,
    }
}

async fn authorize<'a>(app: &'a App, req: &Request, ep: &Endpoint, client: &Client) -> Result<Access<'a>, Response> {
    let peer = client.addr;
    if matches!(ep, Endpoint::Metrics) && app.cfg.metrics.public == MetricsExposure::Off {
        return Err(Response::from(
            OciError::new(ErrorKind::NotFound)
                .msg("metrics are served on the internal listener (metrics.public = \"off\")"),
        ));
    }
    let Some(auth) = &app.auth else { return Ok(Access::open()) };
    let need = need(app, ep, req.method);
    if matches!(need, Need::Nothing) {
        return Ok(Access { auth: Some(auth), id: Identity::Anonymous });
    }
    let scope = match &need {
        Need::Repo(r, a) => Some(format!("repository:{}:{}", r.as_str(), scope_actions(*a))),
        Need::Catalog => Some("registry:catalog:*".to_owned()),
        Need::Nothing | Need::Login => None,
    };
    let host = req.header("host");
    let unauthorized = |insufficient: bool, msg: &str| {
        Response::from(OciError::new(ErrorKind::Unauthorized).msg(msg))
            .header("WWW-Authenticate", auth.challenge(host, client.tls, scope.as_deref(), insufficient))
            .header(API_VERSION.0, API_VERSION.1)
    };
    let id = match auth.authenticate(req.header("authorization"), peer, client.cert_user.as_deref()).await {
        Ok(id) => id,
        Err(Refused::Limited(wait)) => {
            return Err(too_many(wait, "too many failed logins from this address or for this user; try again later"))
        }
        Err(Refused::Busy) => {
            return Err(too_many(Duration::from_secs(1), "too many logins are being checked; try again shortly"))
        }
        Err(Refused::BadPassword) => return Err(unauthorized(false, "authentication required")),
        Err(Refused::BadToken(e)) => {
            auth.audit.record("token_refused", "-", e.as_str(), peer);
            return Err(unauthorized(false, e.as_str()));
        }
    };
    let allowed = match &need {
        Need::Nothing => true,
        Need::Login => !matches!(id, Identity::Anonymous),
        Need::Catalog => auth.may_list_catalog(&id),
        Need::Repo(r, a) => auth.may(&id, r.as_str(), *a),
    };
    if allowed {
        return Ok(Access { auth: Some(auth), id });
    }
    if !matches!(need, Need::Login) {
        let what = format!("{} {}", req.method.as_str(), scope.as_deref().unwrap_or(""));
        auth.audit.record("denied", id.name(), &what, peer);
    }
    let mut r = match id {
        Identity::Anonymous => unauthorized(false, "authentication required"),
        // A client holding a token without this scope fetches one that has it (or learns it cannot).
        Identity::Token(_) => unauthorized(true, "insufficient scope: the token does not grant this"),
        Identity::User(_) => Response::from(OciError::new(ErrorKind::Denied).msg(format!(
            "{} may not {}",
            id.name(),
            scope.as_deref().unwrap_or("do this")
        )))
        .header(API_VERSION.0, API_VERSION.1),
    };
    r.user = Some(id.name().to_owned());
    Err(r)
}

fn scope_actions(a: Action) -> &'static str {
    match a {
        // Clients ask for pull with push: a push reads too (HEAD of existing blobs).
        Action::Push => "pull,push",
        a => a.as_str(),
    }
}

/// 429 with `Retry-After` (whole seconds, at least 1).
pub(crate) fn too_many(wait: Duration, msg: &str) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Response::from(OciError::new(ErrorKind::TooManyRequests).msg(msg))
        .set_header("Retry-After", secs.max(1).to_string())
        .header(API_VERSION.0, API_VERSION.1)
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
