//! `/v2/`: the API version check.

use berth_types::OciError;

use crate::http::{Method, Request, Response};

pub(super) fn handle(req: &Request) -> Result<Response, OciError> {
    match req.method {
        Method::Get | Method::Head => Ok(Response::json(200, &serde_json::json!({}))),
        _ => super::method_not_allowed("GET, HEAD"),
    }
}
