//! `WWW-Authenticate` challenges of upstream registries (RFC 9110 11.6.1 auth-params), and the
//! token a realm hands out.

use std::collections::HashMap;

/// What an upstream asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`: send the configured credentials.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`: fetch a token from the realm.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` to ask for.
        service: Option<String>,
        /// `scope` the upstream wants (ours is used when it names none).
        scope: Option<String>,
    },
}

/// Parse the first challenge we understand out of a `WWW-Authenticate` value.
pub fn parse(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = auth_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key=value` and `key="quoted, value"` pairs separated by commas.
fn auth_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_ascii_lowercase();
        // RFC 9110 allows whitespace around '='.
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = r.char_indices();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &r[end.min(r.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.insert(key, value);
    }
    out
}

/// A token response (Docker's `token`, OAuth2's `access_token`).
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    /// Docker token field.
    #[serde(default)]
    pub token: Option<String>,
    /// OAuth2 field.
    #[serde(default)]
    pub access_token: Option<String>,
    /// Lifetime in seconds (60 when absent, as the spec says).
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token, whichever field carried it.
    pub fn into_token(self) -> Option<(String, u64)> {
        let ttl = self.expires_in.unwrap_or(60).max(1);
        self.token.or(self.access_token).filter(|t| !t.is_empty()).map(|t| (t, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
    }

    #[test]
    fn quoting_spacing_and_other_schemes() {
        let c =
            parse(r#"bearer  realm = "http://x/t?a=1" , scope="repository:a/b:pull,push",error="insufficient_scope""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://x/t?a=1".into(),
                service: None,
                scope: Some("repository:a/b:pull,push".into())
            })
        );
        assert_eq!(parse(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse("Negotiate abc"), None);
        assert_eq!(parse("Bearer service=x"), None, "no realm");
        assert_eq!(
            parse(r#"Bearer realm="a\"b""#),
            Some(Challenge::Bearer { realm: "a\"b".into(), service: None, scope: None })
        );
    }

    #[test]
    fn token_fields() {
        let t: TokenResponse = serde_json::from_str(r#"{"token":"a","expires_in":300}"#).unwrap();
        assert_eq!(t.into_token(), Some(("a".into(), 300)));
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"b"}"#).unwrap();
        assert_eq!(t.into_token(), Some(("b".into(), 60)));
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(t.into_token(), None);
    }
}
