//! The node's internal API, from the sidecar: change feed, export, GC jobs, workers, stats.
//! Blocking `ureq` calls on tokio's blocking pool: the sidecar makes a few calls a second.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_internal_api::InternalClient;
use serde_json::Value;

impl From<InternalClient> for NodeClient {
    fn from(c: InternalClient) -> Self {
        NodeClient { inner: Arc::new(RwLock::new(c)) }
    }
}

/// Why a node call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Unreachable or broken connection.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The node answered with an error status.
    #[error("node answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
    },
}

/// A client of one node's internal API (the shared blocking client, run on tokio's blocking
/// pool). When the node cannot be reached, the address and token are re-read from the node's
/// data directory and the call is tried once more: a restarted node listens elsewhere.
#[derive(Clone)]
pub struct NodeClient {
    inner: Arc<RwLock<InternalClient>>,
}

impl NodeClient {
    /// A client for `url` with `token`.
    pub fn new(url: String, token: String) -> NodeClient {
        NodeClient::from(InternalClient::new(url, token))
    }

    /// A snapshot of the client (URL and token in use now).
    pub fn snapshot(&self) -> InternalClient {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Send raw bytes to the node's internal listener (the registry API there).
    pub async fn raw(
        &self,
        method: &'static str,
        path: String,
        body: Option<(Vec<u8>, &'static str)>,
        want_headers: &'static [&'static str],
    ) -> Result<berth_internal_api::client::RawAnswer, NodeError> {
        let client = self.snapshot();
        tokio::task::spawn_blocking(move || {
            client.raw(
                method,
                &path,
                body.as_ref().map(|(b, ct)| (b.as_slice(), *ct)),
                want_headers,
                Duration::from_secs(60),
            )
        })
        .await
        .map_err(|e| NodeError::Unreachable(e.to_string()))?
        .map_err(NodeError::Unreachable)
    }

    /// The URL in use.
    pub fn url(&self) -> String {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).url().to_owned()
    }

    /// Call `method path` with an optional JSON body; returns the status and JSON answer.
    pub async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<(u16, Value), NodeError> {
        let inner = self.inner.clone();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || {
            let client = inner.read().unwrap_or_else(|p| p.into_inner()).clone();
            match client.call(method, &path, body.clone(), timeout) {
                Ok(answer) => Ok(answer),
                Err(e) => {
                    let mut w = inner.write().unwrap_or_else(|p| p.into_inner());
                    if w.refresh() {
                        tracing::info!(url = w.url(), "the node's internal API moved (node restarted); following it");
                        let client = w.clone();
                        drop(w);
                        client.call(method, &path, body, timeout)
                    } else {
                        Err(e)
                    }
                }
            }
        })
        .await
        .map_err(|e| NodeError::Unreachable(e.to_string()))?
        .map_err(NodeError::Unreachable)
    }

    /// `call`, requiring a 2xx answer.
    pub async fn ok(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, NodeError> {
        let (status, v) = self.call(method, path, body, timeout).await?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(NodeError::Status { status, body: v.to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Regression: exports over 10 MB failed with "response too big for into_string".
    #[tokio::test]
    async fn answers_larger_than_10_mb_are_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = serde_json::to_vec(&serde_json::json!({ "blobs": vec!["x".repeat(100); 120_000] })).unwrap();
        assert!(body.len() > 11 << 20);
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).unwrap();
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())
                .unwrap();
            s.write_all(&body).unwrap();
        });
        let c = NodeClient::new(format!("http://127.0.0.1:{port}"), "t".into());
        let v = c.ok("GET", "/internal/v1/export", None, Duration::from_secs(30)).await.unwrap();
        assert_eq!(v["blobs"].as_array().unwrap().len(), 120_000);
    }
}
