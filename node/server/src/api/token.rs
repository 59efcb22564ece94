//! `/token`: the registry token endpoint, and `/token/jwks.json`, its public keys.
//!
//! - `GET /token?service=S&scope=repository:NAME:pull,push&scope=…` with Basic credentials or
//!   none (anonymous), as docker, podman, skopeo, helm and oras ask; `offline_token=true`
//!   adds a refresh token.
//!   With mTLS, a verified client certificate without credentials is its common name's user.
//! - `POST /token` (OAuth2 form, as containerd and buildkit send): `grant_type=password`
//!   (`username`, `password`) or `grant_type=refresh_token` (`refresh_token`), with `scope`
//!   space-separated and `access_type=offline` for a refresh token.
//!
//! Each requested scope is granted only as far as the policy allows the caller; what is not
//! allowed is left out of the token (the registry then refuses the request it was for).

use std::net::IpAddr;

use berth_types::{ErrorKind, OciError, RepoName};

use crate::app::App;
use crate::auth::policy::{Actions, Caller};
use crate::auth::token::ResourceActions;
use crate::auth::{basic_credentials, Auth, Refused};
use crate::http::{Body, Method, Request, Response};

fn no_tokens() -> OciError {
    OciError::new(ErrorKind::NotFound).msg("token auth is not configured on this registry ([auth.token])")
}

/// `GET /token/jwks.json`.
pub(super) fn jwks(app: &App, req: &Request) -> Result<Response, OciError> {
    if !matches!(req.method, Method::Get | Method::Head) {
        return super::method_not_allowed("GET, HEAD");
    }
    let tokens = app.auth.as_ref().and_then(|a| a.tokens.as_ref()).ok_or_else(no_tokens)?;
    Ok(Response::json(200, &tokens.jwks()))
}

/// `GET` and `POST /token`.
pub(super) async fn handle(
    app: &App,
    req: &Request,
    body: &mut Body<'_>,
    client: &super::Client,
) -> Result<Response, OciError> {
    let auth = app.auth.as_ref().filter(|a| a.tokens.is_some()).ok_or_else(no_tokens)?;
    match req.method {
        Method::Get => get(auth, req, client).await,
        Method::Post => post(auth, body, client.addr).await,
        _ => super::method_not_allowed("GET, POST"),
    }
}

async fn get(auth: &Auth, req: &Request, client: &super::Client) -> Result<Response, OciError> {
    let peer = client.addr;
    check_service(auth, req.query("service"))?;
    let caller = match req.header("authorization") {
        // A verified client certificate (mTLS) logs its common name in.
        None => auth.cert_account(client.cert_user.as_deref(), peer).map_or(Caller::Anonymous, Caller::Named),
        Some(h) => {
            let Some((user, password)) = h
                .split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
                .and_then(|(_, b)| basic_credentials(b))
            else {
                return Err(OciError::new(ErrorKind::Unauthorized).msg("the token endpoint takes Basic credentials"));
            };
            login(auth, &user, &password, peer).await?;
            Caller::Named(user)
        }
    };
    let scopes: Vec<&str> = req.query_all("scope").flat_map(|s| s.split(' ')).filter(|s| !s.is_empty()).collect();
    let offline = req.query("offline_token") == Some("true");
    answer(auth, &caller, &scopes, offline, false)
}

async fn post(auth: &Auth, body: &mut Body<'_>, peer: Option<IpAddr>) -> Result<Response, OciError> {
    let form = body
        .read_to_end(64 * 1024)
        .await
        .map_err(|_| OciError::new(ErrorKind::BadRequest).msg("token request body too large or unreadable"))?;
    let form: Vec<(String, String)> = form_urlencoded::parse(&form).into_owned().collect();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    check_service(auth, field("service"))?;
    let tokens = auth.tokens.as_ref().ok_or_else(no_tokens)?;
    let caller = match field("grant_type") {
        Some("password") => {
            let (Some(user), Some(password)) = (field("username"), field("password")) else {
                return Err(invalid_request("grant_type=password needs username and password"));
            };
            login(auth, user, password, peer).await?;
            Caller::Named(user.to_owned())
        }
        Some("refresh_token") => {
            let t = field("refresh_token").ok_or_else(|| invalid_request("refresh_token missing"))?;
            let refresh = tokens.verify_refresh(t).map_err(|e| {
                auth.audit.record("token_refused", "-", e.as_str(), peer);
                OciError::new(ErrorKind::Unauthorized).msg(e.as_str())
            })?;
            // Bound to the credential it came from: a changed password, a deleted (even if
            // re-created) user, a revoked or re-created robot all move the stamp.
            let current = auth.credential_stamp(&refresh.subject);
            if current.is_none() || current != refresh.stamp {
                let why = if current.is_none() { "account gone" } else { "credential changed" };
                auth.audit.record("token_refused", &refresh.subject, why, peer);
                return Err(OciError::new(ErrorKind::Unauthorized).msg(
                    "the refresh token is no longer valid (its account's credentials changed or it was removed); \
                     log in again",
                ));
            }
            Caller::Named(refresh.subject)
        }
        other => return Err(invalid_request(&format!("unsupported grant_type {other:?} (password or refresh_token)"))),
    };
    let scopes: Vec<&str> =
        field("scope").map(|s| s.split(' ').filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    let offline = field("access_type") == Some("offline");
    answer(auth, &caller, &scopes, offline, true)
}

fn invalid_request(msg: &str) -> OciError {
    OciError::new(ErrorKind::BadRequest).msg(msg)
}

fn check_service(auth: &Auth, service: Option<&str>) -> Result<(), OciError> {
    let ours = auth.tokens.as_ref().map(|t| t.cfg.service.as_str()).unwrap_or("");
    match service {
        Some(s) if s != ours => {
            Err(OciError::new(ErrorKind::BadRequest).msg(format!("unknown service {s:?}; this registry is {ours:?}")))
        }
        _ => Ok(()),
    }
}

async fn login(auth: &Auth, user: &str, password: &str, peer: Option<IpAddr>) -> Result<(), OciError> {
    match auth.login(user, password, peer).await {
        Ok(()) => Ok(()),
        Err(Refused::Limited(w)) => Err(OciError::new(ErrorKind::TooManyRequests)
            .msg(format!("too many failed logins; retry in {} s", w.as_secs().max(1)))),
        Err(Refused::Busy) => {
            Err(OciError::new(ErrorKind::TooManyRequests).msg("too many logins being checked; retry"))
        }
        Err(_) => Err(OciError::new(ErrorKind::Unauthorized).msg("incorrect username or password")),
    }
}

/// Parse `repository:NAME:ACTIONS` / `registry:catalog:*`. Names may hold `:` (a registry
/// host with a port), so the type is before the first `:` and the actions after the last.
fn parse_scope(s: &str) -> Option<(&str, &str, Vec<&str>)> {
    let (kind, rest) = s.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    // `repository(plugin)` is a resource class: the type is what precedes it.
    let kind = kind.split('(').next().unwrap_or(kind);
    Some((kind, name, actions.split(',').collect()))
}

fn answer(auth: &Auth, caller: &Caller, scopes: &[&str], offline: bool, oauth: bool) -> Result<Response, OciError> {
    let tokens = auth.tokens.as_ref().ok_or_else(no_tokens)?;
    // Bounded: a token's size (and what verifying and caching it costs) follows its scopes.
    if scopes.len() > crate::auth::token::MAX_SCOPES {
        return Err(invalid_request(&format!(
            "{} scopes requested; at most {} per token request",
            scopes.len(),
            crate::auth::token::MAX_SCOPES
        )));
    }
    let id = match caller {
        Caller::Anonymous => crate::auth::Identity::Anonymous,
        Caller::Named(n) => crate::auth::Identity::User(n.clone()),
    };
    let mut access = Vec::new();
    for s in scopes {
        let Some((kind, name, actions)) = parse_scope(s) else { continue };
        match kind {
            "repository" => {
                if name.parse::<RepoName>().is_err() {
                    continue;
                }
                let granted = Actions::from_names(actions.iter().copied()).intersect(auth.actions(&id, name));
                if !granted.is_empty() {
                    access.push(ResourceActions {
                        kind: "repository".into(),
                        name: name.to_owned(),
                        actions: granted.names().into_iter().map(str::to_owned).collect(),
                    });
                }
            }
            "registry" if name == "catalog" && auth.may_list_catalog(&id) => access.push(ResourceActions {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            }),
            _ => {}
        }
    }
    let subject = match caller {
        Caller::Anonymous => "",
        Caller::Named(n) => n.as_str(),
    };
    let (token, ttl) =
        tokens.issue(subject, access).map_err(|e| OciError::new(ErrorKind::Unavailable).msg(e.to_string()))?;
    let issued_at = chrono_now();
    let mut out = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": ttl,
        "issued_at": issued_at,
    });
    if oauth {
        out["scope"] = scopes.join(" ").into();
        out["token_type"] = "Bearer".into();
    }
    // A refresh token only for an account it can be bound to (a certificate whose name has no
    // account gets access tokens, not a credential that would outlive its removal).
    if let Some(stamp) = (offline && !subject.is_empty()).then(|| auth.credential_stamp(subject)).flatten() {
        out["refresh_token"] = tokens
            .issue_refresh(subject, &stamp)
            .map_err(|e| OciError::new(ErrorKind::Unavailable).msg(e.to_string()))?
            .into();
    }
    Ok(Response::json(200, &out).header("Cache-Control", "no-store"))
}

/// RFC 3339 UTC timestamp.
fn chrono_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(parse_scope("repository:a/b:pull,push"), Some(("repository", "a/b", vec!["pull", "push"])));
        assert_eq!(
            parse_scope("repository:localhost:5000/x:pull"),
            Some(("repository", "localhost:5000/x", vec!["pull"]))
        );
        assert_eq!(parse_scope("repository(plugin):a:pull"), Some(("repository", "a", vec!["pull"])));
        assert_eq!(parse_scope("registry:catalog:*"), Some(("registry", "catalog", vec!["*"])));
        assert_eq!(parse_scope("junk"), None);
    }
}
