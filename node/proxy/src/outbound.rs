//! Where an upstream's client may go: the one rule set every outbound request of the
//! pull-through cache passes (the upstream itself, its redirects, its token realm).
//!
//! - Its own origin: always (that is what was configured).
//! - A redirect to another origin (Docker Hub sends blobs to a CDN): only over `https`, never
//!   from `https` down to `http`, and never to a loopback, private, link-local or otherwise
//!   non-public address — literal, or what the name resolves to when the connection is made
//!   (so DNS cannot smuggle the node's own internal listener in) — unless that origin is listed
//!   in `redirect_origins`.
//! - Credentials (the configured user and password) go to the upstream's origin and to token
//!   realms in `token_realms` (default: `https://auth.docker.io` for Docker Hub) only; another
//!   realm is asked anonymously if it passes the redirect rules, and refused otherwise.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;

/// `scheme://host:port` of a URL, the unit of trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of `url`, if it has a host and an http(s) scheme.
    pub fn of(url: &Url) -> Option<Origin> {
        let scheme = url.scheme().to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        Some(Origin {
            host: url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(),
            port: url.port_or_known_default()?,
            scheme,
        })
    }

    /// Parse `text` (`https://auth.docker.io`).
    pub fn parse(text: &str) -> Result<Origin, String> {
        let url = Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
        Origin::of(&url).ok_or_else(|| format!("{text:?}: not an http(s) origin"))
    }

    /// Whether the host is a literal address that is not public, or `localhost`.
    fn is_private_literal(&self) -> bool {
        self.host == "localhost"
            || self.host.ends_with(".localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| !is_public(ip))
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Whether `ip` is a public unicast address (not loopback, private, link-local, CGNAT,
/// unspecified, multicast, documentation, or an IPv4-mapped one of those).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// An upstream's outbound rules.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The upstream's own origin.
    pub home: Origin,
    /// Other origins redirects may go to whatever their address (`redirect_origins`).
    redirect_origins: Vec<Origin>,
    /// Token realms that get the configured credentials (`token_realms`).
    realms: Vec<Origin>,
}

/// What the token realm of a challenge may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealmUse {
    /// The configured credentials.
    WithCredentials,
    /// Nothing but the request (an anonymous token).
    Anonymous,
}

impl Outbound {
    /// Rules for an upstream at `url`, with the configured extra redirect origins and realms
    /// (a Docker Hub upstream trusts `https://auth.docker.io` unless realms are configured).
    pub fn new(url: &str, redirect_origins: &[String], token_realms: &[String]) -> Result<Outbound, String> {
        let home = Origin::parse(url)?;
        let redirect_origins = redirect_origins.iter().map(|o| Origin::parse(o)).collect::<Result<_, _>>()?;
        let mut realms: Vec<Origin> = token_realms.iter().map(|o| Origin::parse(o)).collect::<Result<_, _>>()?;
        let docker_hub = matches!(home.host.as_str(), "registry-1.docker.io" | "index.docker.io" | "docker.io");
        if realms.is_empty() && docker_hub {
            realms.push(Origin::parse("https://auth.docker.io").expect("a valid origin"));
        }
        Ok(Outbound { home, redirect_origins, realms })
    }

    /// Whether a request to `url` may be made (a redirect from `from`, or a realm).
    pub fn may_visit(&self, from: Option<&Url>, url: &Url) -> Result<(), String> {
        let Some(o) = Origin::of(url) else { return Err(format!("{url}: not an http(s) URL")) };
        if from.is_some_and(|f| f.scheme() == "https") && o.scheme == "http" {
            return Err(format!("refused a downgrade from https to {o}"));
        }
        if o == self.home || self.redirect_origins.contains(&o) {
            return Ok(());
        }
        if o.scheme != "https" {
            return Err(format!("refused {o}: another origin than the upstream's, and not https"));
        }
        if o.is_private_literal() {
            return Err(format!("refused {o}: a non-public address (list it in redirect_origins to allow it)"));
        }
        Ok(())
    }

    /// Whether (and how) the realm at `url` may be asked for a token.
    pub fn realm_use(&self, url: &Url) -> Result<RealmUse, String> {
        let Some(o) = Origin::of(url) else { return Err(format!("token realm {url}: not an http(s) URL")) };
        if o == self.home || self.realms.contains(&o) {
            if self.home.scheme == "https" && o.scheme == "http" {
                return Err(format!("token realm {o}: refused a downgrade to http"));
            }
            return Ok(RealmUse::WithCredentials);
        }
        self.may_visit(None, url).map(|()| RealmUse::Anonymous)
    }

    /// Whether connections to `host` may land on a non-public address: the upstream's own
    /// host (it lives where it was configured) and listed redirect origins may; any other name
    /// must resolve to public addresses only.
    fn private_ok(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        host == self.home.host || self.redirect_origins.iter().any(|o| o.host == host)
    }

    /// The redirect policy of the upstream's client.
    pub fn redirect_policy(self: &Arc<Self>) -> reqwest::redirect::Policy {
        let rules = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error("more than 5 redirects");
            }
            let from = attempt.previous().last().cloned();
            match rules.may_visit(from.as_ref(), attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        })
    }

    /// A resolver that refuses non-public addresses for names other than the upstream's own.
    pub fn resolver(self: &Arc<Self>) -> Arc<Resolver> {
        Arc::new(Resolver(self.clone()))
    }
}

/// See [`Outbound::resolver`].
pub struct Resolver(Arc<Outbound>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rules = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok = rules.private_ok(&host);
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| ok || is_public(a.ip())).collect();
            if allowed.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves only to non-public addresses ({addrs:?}): refused").into();
                return Err(e);
            }
            let it: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "104.16.0.1", "2606:4700::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn redirects_and_realms() {
        let o = Outbound::new("http://127.0.0.1:5000", &[], &[]).unwrap();
        // Its own origin, whatever the address.
        assert!(o.may_visit(None, &url("http://127.0.0.1:5000/v2/x")).is_ok());
        // Another port on loopback (the node's internal listener, say): refused.
        assert!(o.may_visit(None, &url("http://127.0.0.1:5001/internal/v1/export")).is_err());
        assert!(o.may_visit(None, &url("https://127.0.0.1:5001/")).is_err());
        assert!(o.may_visit(None, &url("https://[::1]:5001/")).is_err());
        assert!(o.may_visit(None, &url("https://localhost:5001/")).is_err());
        assert!(o.may_visit(None, &url("https://169.254.169.254/latest/meta-data")).is_err());
        // A public CDN over https: followed; over http: refused; https → http: refused.
        assert!(o.may_visit(None, &url("https://cdn.example.com/blob")).is_ok());
        assert!(o.may_visit(None, &url("http://cdn.example.com/blob")).is_err());
        let hub = Outbound::new("https://registry-1.docker.io", &[], &[]).unwrap();
        assert!(hub
            .may_visit(Some(&url("https://registry-1.docker.io/v2/")), &url("http://registry-1.docker.io/v2/"))
            .is_err());
        // Realms: credentials only to the home origin and the allowed realms.
        assert_eq!(hub.realm_use(&url("https://auth.docker.io/token")), Ok(RealmUse::WithCredentials));
        assert_eq!(hub.realm_use(&url("https://registry-1.docker.io/token")), Ok(RealmUse::WithCredentials));
        assert_eq!(hub.realm_use(&url("https://evil.example.com/token")), Ok(RealmUse::Anonymous));
        assert!(o.realm_use(&url("http://127.0.0.1:6000/token")).is_err());
        assert_eq!(o.realm_use(&url("http://127.0.0.1:5000/token")), Ok(RealmUse::WithCredentials));
        // Configured exceptions.
        let lan =
            Outbound::new("http://10.0.0.5:5000", &["http://10.0.0.6:9000".into()], &["http://10.0.0.7:5001".into()])
                .unwrap();
        assert!(lan.may_visit(None, &url("http://10.0.0.6:9000/bucket/blob")).is_ok());
        assert_eq!(lan.realm_use(&url("http://10.0.0.7:5001/token")), Ok(RealmUse::WithCredentials));
    }
}
