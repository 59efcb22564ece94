//! `/v2/<name>/tags/list`: tags in lexical order, paginated with `n`, `last` and `Link`.

use berth_types::{ErrorKind, OciError, RepoName};

use crate::app::App;
use crate::http::{Method, Request, Response};
use crate::store::index_error;

pub(super) fn handle(app: &App, req: &Request, repo: &RepoName) -> Result<Response, OciError> {
    if !matches!(req.method, Method::Get | Method::Head) {
        return super::method_not_allowed("GET, HEAD");
    }
    let (n, last) = super::pagination(req)?;
    if !app.index.repo_exists(repo).map_err(index_error)? {
        return Err(OciError::new(ErrorKind::NameUnknown).detail(serde_json::json!({ "name": repo.as_str() })));
    }
    let page = app.index.list_tags(repo, last.as_deref(), n).map_err(index_error)?;
    let mut resp = Response::json(200, &serde_json::json!({ "name": repo.as_str(), "tags": page.items }));
    if page.more {
        if let Some(l) = page.items.last() {
            resp = resp.header("Link", super::next_link(&format!("/v2/{repo}/tags/list"), n, l, ""));
        }
    }
    Ok(resp)
}
