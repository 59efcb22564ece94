//! `/v2/_catalog`: repositories that hold content, paginated.

use berth_types::OciError;

use crate::app::App;
use crate::http::{Method, Request, Response};
use crate::store::index_error;

pub(super) fn handle(app: &App, req: &Request) -> Result<Response, OciError> {
    if !matches!(req.method, Method::Get | Method::Head) {
        return super::method_not_allowed("GET, HEAD");
    }
    let (n, last) = super::pagination(req)?;
    let page = app.index.list_repos(last.as_deref(), n).map_err(index_error)?;
    let mut resp = Response::json(200, &serde_json::json!({ "repositories": page.items }));
    if page.more {
        if let Some(l) = page.items.last() {
            resp = resp.header("Link", super::next_link("/v2/_catalog", n, l, ""));
        }
    }
    Ok(resp)
}
