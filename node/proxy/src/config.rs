//! `[proxy]`: the upstream registries this node caches.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The pull-through cache.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Upstreams, each under its own first path component (`<name>/<repository>`).
    pub upstreams: Vec<UpstreamConfig>,
    /// Mirror mode for clients that send plain names (the Docker daemon's `registry-mirrors`
    /// for Docker Hub): reads of a repository that has no upstream prefix and does not exist
    /// here go to this upstream as `<default_upstream>/<name>`. Unset: plain names are local.
    pub default_upstream: Option<String>,
    /// With `default_upstream`: the repositories that are this registry's own (globs: `*` one
    /// path segment, `**` any number, e.g. `team/**`). Plain names outside them are the
    /// mirror's: always read from the upstream (a local push can never shadow them) and never
    /// pushed here; names inside them are local: never read from the upstream (no dependency
    /// confusion: a name nobody pushed here is 404, not the upstream's image of that name).
    pub local_namespaces: Vec<String>,
    /// Parallel image pulls of `berth preload`.
    pub preload_parallelism: usize,
}

/// One upstream registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The first path component its repositories live under here, e.g. `docker.io`,
    /// `registry.k8s.io`, `ghcr.io` (a valid repository path component: lower case, digits,
    /// `.`, `_`, `-`; no port). Also what containerd's `?ns=` names.
    pub name: String,
    /// Its base URL: `https://registry-1.docker.io`, `http://10.0.0.5:5000`.
    pub url: String,
    /// Basic credentials (also used for the token dance).
    pub username: Option<String>,
    /// Password, or…
    pub password: Option<String>,
    /// …a file holding it (first line).
    pub password_file: Option<PathBuf>,
    /// PEM bundle of CAs to trust for this upstream (in addition to the web's roots).
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM, with its chain) and key for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Private key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
    /// Accept any certificate (test and air-gapped setups only: the bytes are still verified
    /// against their digests, but tags could be spoofed).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Upstream repositories that may be pulled through (globs: `library/*`); empty: all.
    #[serde(default)]
    pub allow: Vec<String>,
    /// A cached tag is served without asking the upstream for this long; after it, one `HEAD`
    /// revalidates it (Docker Hub does not count HEADs against its pull limit).
    #[serde(default = "default_tag_ttl")]
    pub tag_ttl_secs: u64,
    /// Connect and first-byte timeout for upstream requests.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Allow pushes into this upstream's namespace here (refused by default: it is a cache).
    #[serde(default)]
    pub allow_push: bool,
    /// Origins (`scheme://host[:port]`) besides the upstream's own that its redirects may go to
    /// even at non-public addresses or over plain http (e.g. a LAN object store its blobs are
    /// redirected to). Public `https` origins need no entry.
    #[serde(default)]
    pub redirect_origins: Vec<String>,
    /// Token realms besides the upstream's own origin that receive its credentials. Empty: for
    /// Docker Hub, `https://auth.docker.io`; otherwise none. Other realms are asked anonymously
    /// (public https ones) or refused.
    #[serde(default)]
    pub token_realms: Vec<String>,
}

fn default_tag_ttl() -> u64 {
    300
}

fn default_timeout() -> u64 {
    30
}

impl ProxyConfig {
    /// Whether any upstream is configured.
    pub fn enabled(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// Check names, URLs and file settings; the message names the upstream and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for u in &self.upstreams {
            let valid = !u.name.is_empty()
                && u.name.split(['.', '_', '-']).all(|p| !p.is_empty())
                && u.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b));
            if !valid {
                return Err(format!(
                    "proxy upstream name {:?} must be one repository path component (lower case, digits, '.', '_', '-'; no port)",
                    u.name
                ));
            }
            if !seen.insert(u.name.as_str()) {
                return Err(format!("proxy upstream {:?} is configured twice", u.name));
            }
            if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
                return Err(format!("proxy upstream {:?}: url must start with http:// or https://", u.name));
            }
            if u.client_cert.is_some() != u.client_key.is_some() {
                return Err(format!("proxy upstream {:?}: client_cert and client_key go together", u.name));
            }
            if u.password.is_some() && u.password_file.is_some() {
                return Err(format!("proxy upstream {:?}: set password or password_file, not both", u.name));
            }
            for g in &u.allow {
                glob::Pattern::new(g).map_err(|e| format!("proxy upstream {:?}: allow pattern {g:?}: {e}", u.name))?;
            }
            crate::outbound::Outbound::new(&u.url, &u.redirect_origins, &u.token_realms)
                .map_err(|e| format!("proxy upstream {:?}: {e}", u.name))?;
        }
        for g in &self.local_namespaces {
            glob::Pattern::new(g).map_err(|e| format!("proxy.local_namespaces {g:?}: {e}"))?;
        }
        if let Some(d) = &self.default_upstream {
            if !self.upstreams.iter().any(|u| &u.name == d) {
                return Err(format!("proxy.default_upstream {d:?} is not one of the configured upstreams"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str, url: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            url: url.into(),
            username: None,
            password: None,
            password_file: None,
            ca: None,
            client_cert: None,
            client_key: None,
            insecure_skip_verify: false,
            allow: vec![],
            tag_ttl_secs: 300,
            timeout_secs: 30,
            allow_push: false,
            redirect_origins: vec![],
            token_realms: vec![],
        }
    }

    #[test]
    fn validates_names_and_urls() {
        let ok =
            ProxyConfig { upstreams: vec![up("registry.k8s.io", "https://registry.k8s.io")], ..Default::default() };
        assert!(ok.validate().is_ok());
        for bad in ["Docker.io", "localhost:5000", "a/b", "", "a..b"] {
            let c = ProxyConfig { upstreams: vec![up(bad, "https://x")], ..Default::default() };
            assert!(c.validate().is_err(), "{bad}");
        }
        let c = ProxyConfig { upstreams: vec![up("x", "ftp://x")], ..Default::default() };
        assert!(c.validate().unwrap_err().contains("http://"));
        let c = ProxyConfig {
            upstreams: vec![up("x", "http://x")],
            default_upstream: Some("y".into()),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("default_upstream"));
    }
}
