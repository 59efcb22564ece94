//! `/v2/_catalog`: repositories that hold content, paginated, filtered to those the caller
//! may pull.

use berth_types::OciError;

use super::Access;
use crate::app::App;
use crate::http::{Method, Request, Response};
use crate::store::index_error;

pub(super) fn handle(app: &App, req: &Request, access: &Access<'_>) -> Result<Response, OciError> {
    if !matches!(req.method, Method::Get | Method::Head) {
        return super::method_not_allowed("GET, HEAD");
    }
    let (n, last) = super::pagination(req)?;
    let page = if access.unrestricted() {
        app.index.list_repos(last.as_deref(), n)
    } else {
        app.index.list_repos_where(last.as_deref(), n, |r| access.may_list(r))
    }
    .map_err(index_error)?;
    let mut resp = Response::json(200, &serde_json::json!({ "repositories": page.items }));
    if page.more {
        if let Some(l) = page.items.last() {
            resp = resp.header("Link", super::next_link("/v2/_catalog", n, l, ""));
        }
    }
    Ok(resp)
}
