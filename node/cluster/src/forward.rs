//! Forwarding an upload request to the node that owns the upload (its running hash and data
//! file live there). The receiving node has authorised the request; the owner's internal
//! listener trusts the shared internal token. The body streams through without buffering.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::metrics::ResultLabel;
use crate::{Cluster, NodeInfo};

/// A request body on its way to the owner, piece by piece.
pub type ForwardBody = tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>;

/// The owner's answer.
#[derive(Debug)]
pub struct Forwarded {
    /// Status.
    pub status: u16,
    /// Headers worth relaying (upload progress, digest, errors).
    pub headers: Vec<(&'static str, String)>,
    /// Body (a small JSON error, or empty).
    pub body: Vec<u8>,
}

const RELAYED: [&str; 8] = [
    "Location",
    "Range",
    "Docker-Upload-UUID",
    "Docker-Content-Digest",
    "OCI-Chunk-Min-Length",
    "Content-Type",
    "Retry-After",
    "Content-Range",
];

impl Cluster {
    /// Send `method path` with `headers` and `body` to `owner`'s internal listener.
    pub fn forward(
        self: &Arc<Self>,
        owner: &NodeInfo,
        method: &str,
        path_and_query: &str,
        headers: Vec<(String, String)>,
        body: Option<ForwardBody>,
    ) -> impl Future<Output = Result<Forwarded, String>> + 'static {
        let c = self.clone();
        let url = format!("{}{}", owner.internal_url.trim_end_matches('/'), path_and_query);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let owner = owner.name.clone();
        let h = self.handle.spawn(async move {
            let mut req = c.http.request(method, &url).bearer_auth(&c.internal_token);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(rx) = body {
                let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
                req = req.body(reqwest::Body::wrap_stream(stream));
            }
            let r = async {
                let resp = req.send().await.map_err(|e| format!("forwarding to node {owner}: {e}"))?;
                let status = resp.status().as_u16();
                let headers = RELAYED
                    .iter()
                    .filter_map(|&k| resp.headers().get(k).and_then(|v| v.to_str().ok()).map(|v| (k, v.to_owned())))
                    .collect();
                let body = resp.bytes().await.map_err(|e| format!("forwarding to node {owner}: {e}"))?.to_vec();
                Ok(Forwarded { status, headers, body })
            }
            .await;
            let label = if r.is_ok() { "ok" } else { "error" };
            c.metrics.forwarded.get_or_create(&ResultLabel { result: label.into() }).inc();
            r
        });
        async move { h.await.unwrap_or_else(|_| Err("shutting down".into())) }
    }
}
