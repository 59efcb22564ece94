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

impl Cluster {
    /// The node that received `digest`'s bytes (the origin of its latest commit), when it is
    /// another live node of the cluster.
    pub fn origin_of(
        self: &Arc<Self>,
        digest: &berth_types::Digest,
    ) -> impl Future<Output = Option<NodeInfo>> + 'static {
        let (c, d) = (self.clone(), digest.to_string());
        let h = self.handle.spawn(async move {
            let client = c.pool.get().await.ok()?;
            let row = client
                .query_opt(
                    "SELECT origin FROM cluster_changes WHERE digest = $1 AND kind = 'blob_committed' ORDER BY seq DESC LIMIT 1",
                    &[&d],
                )
                .await
                .ok()??;
            let origin: String = row.get(0);
            let live_after = (c.cfg.heartbeat_secs * 3) as f64;
            c.nodes().into_iter().find(|n| n.name == origin && n.name != c.name && n.heartbeat_age_secs < live_after)
        });
        async move { h.await.ok().flatten() }
    }

    /// Stream `path` (a blob GET on the registry API) from `owner`'s internal listener: the
    /// bytes of a blob acknowledged with `durability = "local"` that S3 does not have yet.
    /// Resolves once the owner has answered 200 with the expected length.
    pub fn stream_from(
        self: &Arc<Self>,
        owner: &NodeInfo,
        path: &str,
        len: u64,
    ) -> impl Future<Output = Result<berth_tiering::RangeStream, String>> + 'static {
        let c = self.clone();
        let url = format!("{}{}", owner.internal_url.trim_end_matches('/'), path);
        let name = owner.name.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        self.handle.spawn(async move {
            let resp = match c.http.get(&url).bearer_auth(&c.internal_token).send().await {
                Ok(r) if r.status().as_u16() == 200 && r.content_length() == Some(len) => r,
                Ok(r) => {
                    let _ = started_tx.send(Err(format!("node {name} answered {} for {url}", r.status())));
                    return;
                }
                Err(e) => {
                    let _ = started_tx.send(Err(format!("node {name}: {e}")));
                    return;
                }
            };
            if started_tx.send(Ok(())).is_err() {
                return;
            }
            let mut body = resp.bytes_stream();
            while let Some(piece) = futures_util::StreamExt::next(&mut body).await {
                let piece = piece.map_err(|e| berth_tiering::TierError::S3 { op: "peer_get", reason: e.to_string() });
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    return;
                }
            }
        });
        async move {
            started_rx.await.unwrap_or_else(|_| Err("shutting down".into()))?;
            Ok(berth_tiering::RangeStream { len, chunks: rx })
        }
    }
}

impl Cluster {
    /// Whether each node's internal URL answers from here (`GET /healthz`, 3 s each, all at
    /// once): what forwarding an upload to it needs. By node name; `Err` says why not.
    pub fn probe_nodes(self: &Arc<Self>) -> impl Future<Output = Vec<(String, Result<(), String>)>> + 'static {
        let c = self.clone();
        let h = self.handle.spawn(async move {
            let probes = c.nodes().into_iter().map(|n| {
                let c = c.clone();
                async move {
                    let url = format!("{}/healthz", n.internal_url.trim_end_matches('/'));
                    let r = match c.http.get(&url).timeout(std::time::Duration::from_secs(3)).send().await {
                        Ok(resp) if resp.status().is_success() => Ok(()),
                        Ok(resp) => Err(format!("{url} answered {}", resp.status().as_u16())),
                        Err(e) => Err(format!("{url}: {e}")),
                    };
                    (n.name, r)
                }
            });
            futures_util::future::join_all(probes).await
        });
        async move { h.await.unwrap_or_default() }
    }
}
