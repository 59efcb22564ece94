//! Test harness: a node started in-process on 127.0.0.1 with a temporary data directory, and
//! a small HTTP client that never treats a status as an error.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use berth_node::config::Config;
use sha2::{Digest as _, Sha256};

pub struct TestNode {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub node: Option<berth_node::server::Node>,
    pub dir: tempfile::TempDir,
    agent: ureq::Agent,
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or("").to_owned()
    }
}

/// An `Authorization: Basic` value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl TestNode {
    pub fn start() -> TestNode {
        Self::start_with(|_| {})
    }

    pub fn start_with(f: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, f)
    }

    pub fn start_in(dir: tempfile::TempDir, f: impl FnOnce(&mut Config)) -> TestNode {
        let mut cfg = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            workers: 2,
            ..Default::default()
        };
        cfg.storage.sync_index = false;
        f(&mut cfg);
        let app = berth_node::app::App::open(cfg).unwrap();
        let node = berth_node::server::start(app).unwrap();
        let addr = node.addr;
        let agent = ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(30)).build();
        TestNode { base: format!("http://{addr}"), addr, node: Some(node), dir, agent }
    }

    /// Stop the node and hand back its data directory (for restart tests).
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(n) = self.node.take() {
            n.shutdown(Duration::from_secs(5));
        }

        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{}", self.base, path) };
        let mut r = self.agent.request(method, &url);
        for (k, v) in headers {
            r = r.set(k, v);
        }
        let res = match body {
            Some(b) => r.send_bytes(b),
            None => r.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        // Every value of a repeated header (e.g. one `OCI-Tag` per tag).
        let mut names = resp.headers_names();
        names.dedup();
        let headers = names
            .into_iter()
            .flat_map(|n| resp.all(&n).into_iter().map(|v| (n.clone(), v.to_owned())).collect::<Vec<_>>())
            .collect();
        let mut body = Vec::new();
        resp.into_reader().read_to_end(&mut body).unwrap();
        Resp { status, headers, body }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[], None)
    }

    /// The internal listener's URL for `path` (metrics live there).
    pub fn internal_url(&self, path: &str) -> String {
        let addr = std::fs::read_to_string(self.dir.path().join("internal.addr")).unwrap();
        format!("http://{}{path}", addr.trim())
    }

    /// `method path` on the internal listener with the node's token (a JSON body if given).
    pub fn internal(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Resp {
        let token = std::fs::read_to_string(self.dir.path().join("internal.token")).unwrap();
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.req(
            method,
            &self.internal_url(path),
            &[("Authorization", &format!("Bearer {}", token.trim())), ("Content-Type", "application/json")],
            bytes.as_deref(),
        )
    }

    /// `/metrics`, from the internal listener.
    pub fn metrics(&self) -> String {
        String::from_utf8(self.get(&self.internal_url("/metrics")).body).unwrap()
    }

    /// Send raw bytes on a fresh connection and read until the server closes or `wait` passes.
    pub fn raw(&self, bytes: &[u8], wait: Duration) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                // Signals delivered to this test process can interrupt a blocking read.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Push a blob monolithically; returns its digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], Some(data));
        assert_eq!(r.status, 201, "push blob: {}", String::from_utf8_lossy(&r.body));
        d
    }

    /// Push an OCI image manifest with the given config and layers; returns (digest, bytes).
    pub fn push_image(&self, repo: &str, reference: &str, layers: &[&[u8]]) -> (String, Vec<u8>) {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{}}}", layers.len());
        let cd = self.push_blob(repo, config.as_bytes());
        let mut ls = Vec::new();
        for l in layers {
            let d = self.push_blob(repo, l);
            ls.push(serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":d,"size":l.len()}));
        }
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":config.len()},
            "layers": ls,
        });
        let bytes = serde_json::to_vec(&m).unwrap();
        let r = self.req(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            Some(&bytes),
        );
        assert_eq!(r.status, 201, "push manifest: {}", String::from_utf8_lossy(&r.body));
        (sha256(&bytes), bytes)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(n) = self.node.take() {
            n.shutdown(Duration::from_secs(5));
        }
    }
}
