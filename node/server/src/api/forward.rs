//! Upload requests for an upload another cluster node owns (its id carries the owner's tag):
//! authorised here, then forwarded with the body streaming through to the owner's internal
//! listener, whose answer is relayed. The owner keeps the running hash and the data file, so
//! a chunked push whose requests a load balancer spreads over all nodes works unchanged.

use berth_cluster::NodeInfo;
use berth_types::{ErrorKind, OciError};
use bytes::Bytes;

use crate::cluster::ClusterNode;
use crate::http::{Body, Framing, Request, Response};

const PIECE: usize = 256 * 1024;

/// Forward `req` (with `body`) to `owner` and relay the answer.
pub(super) async fn upload(cn: &ClusterNode, req: &Request, body: &mut Body<'_>, owner: &NodeInfo) -> Response {
    let mut path = req.path.clone();
    if !req.query.is_empty() {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &req.query {
            q.append_pair(k, v);
        }
        path = format!("{path}?{}", q.finish());
    }
    let mut headers = Vec::new();
    for name in ["content-type", "content-range"] {
        if let Some(v) = req.header(name) {
            headers.push((name.to_owned(), v.to_owned()));
        }
    }
    if let Framing::Length(n) = req.framing {
        headers.push(("content-length".to_owned(), n.to_string()));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = req.has_body().then_some(rx);
    let answer = cn.cluster.forward(owner, req.method.as_str(), &path, headers, stream);
    if req.has_body() {
        let mut buf = Vec::with_capacity(PIECE);
        loop {
            let (r, b) = body.read(buf).await;
            buf = b;
            let piece = match r {
                Ok(0) => break,
                Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = piece.is_err();
            // The owner stopped reading (it answered early): stop sending.
            if tx.send(piece).await.is_err() || failed {
                break;
            }
        }
    }
    drop(tx);
    match answer.await {
        Ok(f) => {
            let mut resp = Response::new(f.status);
            let mut content_type = "application/json".to_owned();
            for (k, v) in f.headers {
                if k == "Content-Type" {
                    content_type = v;
                } else {
                    resp = resp.header(k, v);
                }
            }
            if !f.body.is_empty() {
                let mut with_body = Response::bytes(f.status, &content_type, f.body);
                with_body.headers = resp.headers;
                resp = with_body;
            }
            resp
        }
        Err(e) => {
            tracing::warn!(owner = %owner.name, error = %e, "cluster: forwarding an upload request failed");
            Response::from(OciError::new(ErrorKind::BlobUploadUnknown).msg(format!(
                "this upload belongs to node {}, which cannot be reached; start the upload again",
                owner.name
            )))
        }
    }
}
