//! `/v2/<name>/referrers/<digest>`: manifests whose `subject` is the digest, as an OCI index.

use berth_types::{Digest, OciError, RepoName};

use crate::app::App;
use crate::http::{Method, Request, Response};
use crate::store::index_error;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub(super) fn handle(app: &App, req: &Request, repo: &RepoName, subject: &Digest) -> Result<Response, OciError> {
    if !matches!(req.method, Method::Get | Method::Head) {
        return super::method_not_allowed("GET, HEAD");
    }
    let (n, last) = super::pagination(req)?;
    let filter = req.query("artifactType");
    let mut all = app.index.referrers(repo, subject).map_err(index_error)?;
    if let Some(t) = filter {
        all.retain(|d| d.artifact_type.as_deref() == Some(t));
    }
    if let Some(l) = &last {
        all.retain(|d| d.digest.to_string().as_str() > l.as_str());
    }
    let more = all.len() > n;
    all.truncate(n);
    let body = serde_json::json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": all });
    let mut resp = Response::bytes(200, INDEX, serde_json::to_vec(&body).unwrap_or_default());
    if filter.is_some() {
        resp = resp.header("OCI-Filters-Applied", "artifactType");
    }
    if more {
        if let Some(d) = all.last() {
            let extra = filter.map(|t| {
                let enc: String = form_urlencoded::byte_serialize(t.as_bytes()).collect();
                format!("&artifactType={enc}")
            });
            resp = resp.header(
                "Link",
                super::next_link(
                    &format!("/v2/{repo}/referrers/{subject}"),
                    n,
                    &d.digest.to_string(),
                    &extra.unwrap_or_default(),
                ),
            );
        }
    }
    Ok(resp)
}
