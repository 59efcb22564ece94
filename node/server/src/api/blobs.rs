//! `/v2/<name>/blobs/<digest>`: GET (with Range) and HEAD served from the file with
//! sendfile, DELETE unlinks the blob from the repository.

use berth_types::{ByteRange, Digest, ErrorKind, OciError, RangeError, RepoName};

use crate::app::App;
use crate::http::{Method, Request, Response, ResponseBody};
use crate::store::{index_error, io_error};

pub(super) fn handle(app: &App, req: &Request, repo: &RepoName, digest: &Digest) -> Result<Response, OciError> {
    match req.method {
        Method::Get | Method::Head => get(app, req, repo, digest),
        Method::Delete => {
            super::check_deletes(app)?;
            if app.index.unlink_blob(repo, digest).map_err(index_error)? {
                Ok(Response::new(202).header("Docker-Content-Digest", digest.to_string()))
            } else {
                Err(OciError::new(ErrorKind::BlobUnknown))
            }
        }
        _ => super::method_not_allowed("GET, HEAD, DELETE"),
    }
}

fn get(app: &App, req: &Request, repo: &RepoName, digest: &Digest) -> Result<Response, OciError> {
    let unknown = || OciError::new(ErrorKind::BlobUnknown).detail(serde_json::json!({ "digest": digest.to_string() }));
    if !app.index.repo_has_blob(repo, digest).map_err(index_error)? {
        return Err(unknown());
    }
    let meta = app.index.blob(digest).map_err(index_error)?.ok_or_else(unknown)?;
    let file = app.blobs.open_blob(digest).map_err(|e| io_error(e, "open blob"))?;
    if req.method == Method::Get && crate::store::access::touch(digest) {
        crate::store::access::flush(&app.index);
    }
    let size = meta.size;
    let base = Response::new(200)
        .header("Content-Type", "application/octet-stream")
        .header("Docker-Content-Digest", digest.to_string())
        .header("ETag", format!("\"{digest}\""))
        .header("Accept-Ranges", "bytes")
        .header("Cache-Control", "max-age=31536000, immutable");
    match req.header("range") {
        None => Ok(base.with_body(ResponseBody::File { file, offset: 0, len: size })),
        Some(r) => {
            let resolved = r.parse::<ByteRange>().and_then(|br| br.resolve(size));
            match resolved {
                Ok((offset, len)) => {
                    let mut resp = base.with_body(ResponseBody::File { file, offset, len });
                    resp.status = 206;
                    Ok(resp.header("Content-Range", format!("bytes {}-{}/{}", offset, offset + len - 1, size)))
                }
                // RFC 9110 14.2: a syntactically invalid Range is ignored.
                Err(RangeError::Malformed) => Ok(base.with_body(ResponseBody::File { file, offset: 0, len: size })),
                Err(RangeError::Unsatisfiable) => Ok(Response::from(OciError::new(ErrorKind::RangeNotSatisfiable))
                    .header("Content-Range", format!("bytes */{size}"))),
            }
        }
    }
}
