//! The node's internal API, from the sidecar: change feed, export, GC jobs, workers, stats.
//! Blocking `ureq` calls on tokio's blocking pool: the sidecar makes a few calls a second.

use std::time::Duration;

use berth_node::gc_cli::Target;
use serde_json::Value;

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

/// A client of one node's internal API (the same blocking client as `berth gc`, run on
/// tokio's blocking pool).
#[derive(Clone)]
pub struct NodeClient {
    target: Target,
}

impl NodeClient {
    /// A client for `url` with `token`.
    pub fn new(url: String, token: String) -> NodeClient {
        NodeClient { target: Target { url: url.trim_end_matches('/').to_string(), token } }
    }

    /// Call `method path` with an optional JSON body; returns the status and JSON answer.
    pub async fn call(&self, method: &'static str, path: &str, body: Option<Value>, timeout: Duration) -> Result<(u16, Value), NodeError> {
        let (target, path) = (self.target.clone(), path.to_string());
        tokio::task::spawn_blocking(move || target.call(method, &path, body, timeout))
            .await
            .map_err(|e| NodeError::Unreachable(e.to_string()))?
            .map_err(NodeError::Unreachable)
    }

    /// `call`, requiring a 2xx answer.
    pub async fn ok(&self, method: &'static str, path: &str, body: Option<Value>, timeout: Duration) -> Result<Value, NodeError> {
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
            write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
            s.write_all(&body).unwrap();
        });
        let c = NodeClient::new(format!("http://127.0.0.1:{port}"), "t".into());
        let v = c.ok("GET", "/internal/v1/export", None, Duration::from_secs(30)).await.unwrap();
        assert_eq!(v["blobs"].as_array().unwrap().len(), 120_000);
    }
}
