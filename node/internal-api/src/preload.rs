//! Pre-loading a pull-through cache (air gaps, planned scale-ups): pull a list of images through
//! the node's registry API on the internal listener — no registry credentials needed — and
//! discard the bytes. The node fetches, verifies and caches everything on the way, exactly as
//! for a client's pull. Used by `berth preload` and the sidecar's `POST /api/v1/preload`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::InternalClient;

/// Every manifest type a pull may meet.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// One image to pull: `repository:tag` or `repository@digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// Repository as named here (`registry.k8s.io/pause`).
    pub repository: String,
    /// Tag or digest.
    pub reference: String,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.contains(':') { '@' } else { ':' };
        write!(f, "{}{sep}{}", self.repository, self.reference)
    }
}

impl std::str::FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (repository, reference) = if let Some((r, d)) = s.split_once('@') {
            (r, d)
        } else {
            match s.rsplit_once(':') {
                // A colon after the last slash is a tag (one before it would be a port: not a
                // valid repository name here anyway).
                Some((r, t)) if !t.contains('/') => (r, t),
                _ => (s, "latest"),
            }
        };
        if repository.is_empty() || reference.is_empty() || repository.contains(char::is_whitespace) {
            return Err(format!("{s:?} is not an image reference (repository:tag or repository@digest)"));
        }
        // Parsed here, at the edge: both go into internal API paths.
        repository.parse::<berth_types::RepoName>().map_err(|e| format!("{s:?}: repository: {e}"))?;
        reference.parse::<berth_types::Reference>().map_err(|e| format!("{s:?}: reference: {e}"))?;
        Ok(ImageRef { repository: repository.to_owned(), reference: reference.to_owned() })
    }
}

/// Image references, one per line (`#` comments and blank lines ignored). Errors name the line.
pub fn parse_list(text: &str) -> Result<Vec<ImageRef>, String> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| l.parse().map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// Which platforms of a multi-platform image to load.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Platforms {
    /// Every platform the index lists.
    All,
    /// These `os/architecture[/variant]` (e.g. `linux/amd64`, `linux/arm64/v8`).
    Only(Vec<String>),
}

impl Platforms {
    fn wants(&self, p: &serde_json::Value) -> bool {
        let Platforms::Only(list) = self else { return true };
        let os = p["os"].as_str().unwrap_or("");
        let arch = p["architecture"].as_str().unwrap_or("");
        let variant = p["variant"].as_str();
        list.iter().any(|w| {
            let mut parts = w.split('/');
            let (o, a, v) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
            o == os && a == arch && (v.is_none() || v == variant)
        })
    }
}

/// What loading one image did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// The image.
    pub image: String,
    /// `None` when everything was loaded.
    pub error: Option<String>,
    /// Manifests loaded (an index and its chosen platforms count separately).
    pub manifests: usize,
    /// Blobs loaded.
    pub blobs: usize,
    /// Bytes of those blobs.
    pub bytes: u64,
}

const TIMEOUT: Duration = Duration::from_secs(3600);

fn manifest(c: &InternalClient, repo: &str, reference: &str) -> Result<serde_json::Value, String> {
    let (status, _, body) = c.get_with_accept(&format!("/v2/{repo}/manifests/{reference}"), ACCEPT, TIMEOUT)?;
    if status != 200 {
        return Err(format!("manifest {repo}:{reference}: {status} {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| format!("manifest {repo}:{reference}: {e}"))
}

/// Load one image (with the chosen platforms of an index).
pub fn load(c: &InternalClient, image: &ImageRef, platforms: &Platforms) -> Outcome {
    let mut out = Outcome { image: image.to_string(), error: None, manifests: 0, blobs: 0, bytes: 0 };
    if let Err(e) = load_into(c, image, platforms, &mut out) {
        out.error = Some(e);
    }
    out
}

fn load_into(c: &InternalClient, image: &ImageRef, platforms: &Platforms, out: &mut Outcome) -> Result<(), String> {
    let repo = &image.repository;
    let top = manifest(c, repo, &image.reference)?;
    out.manifests += 1;
    let mut images = Vec::new();
    if let Some(children) = top["manifests"].as_array() {
        for m in children.iter().filter(|m| platforms.wants(&m["platform"])) {
            let d = m["digest"].as_str().ok_or("index entry without a digest")?;
            let d = d.parse::<berth_types::Digest>().map_err(|e| format!("index entry digest {d:?}: {e}"))?;
            let d = d.to_string();
            let d = d.as_str();
            images.push(manifest(c, repo, d)?);
            out.manifests += 1;
        }
        if images.is_empty() {
            return Err(format!("no platform of {image} matches {platforms:?}"));
        }
    } else {
        images.push(top);
    }
    for m in &images {
        let blobs = std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten());
        for b in blobs {
            let Some(d) = b["digest"].as_str() else { continue };
            let d = d.parse::<berth_types::Digest>().map_err(|e| format!("blob digest {d:?}: {e}"))?;
            let (status, n) = c.drain(&format!("/v2/{repo}/blobs/{d}"), TIMEOUT)?;
            if status != 200 {
                return Err(format!("blob {d}: {status}"));
            }
            out.blobs += 1;
            out.bytes += n;
        }
    }
    Ok(())
}

/// Load `images` with at most `parallel` at a time; `done` is called as each finishes.
pub fn load_all(
    c: &InternalClient,
    images: &[ImageRef],
    platforms: &Platforms,
    parallel: usize,
    done: &(dyn Fn(&Outcome) + Sync),
) -> Vec<Outcome> {
    let queue = Mutex::new(images.iter().cloned().enumerate().collect::<VecDeque<_>>());
    let results = Mutex::new(vec![None; images.len()]);
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, images.len().max(1)) {
            s.spawn(|| loop {
                let Some((i, img)) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else { return };
                let o = load(c, &img, platforms);
                done(&o);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(o);
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_lists() {
        let r: ImageRef = "registry.k8s.io/pause:3.9".parse().unwrap();
        assert_eq!((r.repository.as_str(), r.reference.as_str()), ("registry.k8s.io/pause", "3.9"));
        let r: ImageRef = "docker.io/library/alpine".parse().unwrap();
        assert_eq!(r.reference, "latest");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r: ImageRef = format!("a/b@{d}").parse().unwrap();
        assert_eq!((r.repository.as_str(), r.reference.as_str()), ("a/b", d));
        assert_eq!(r.to_string(), format!("a/b@{d}"));
        let list = parse_list(&format!("# images\nup/a:v1\n\n  up/b@{d}  # pinned\n")).unwrap();
        assert_eq!(list.len(), 2);
        // Parsed at the edge: both parts go into internal API paths.
        for bad in ["a/../../internal/v1/export:x", "a/b@sha256:abc", "A/b:v1", "a/b:..%2F"] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
        assert_eq!(list.len(), 2);
        assert!(parse_list("up/a:v1\nbad name:x\n").unwrap_err().starts_with("line 2"));
    }

    #[test]
    fn platform_filter() {
        let p = Platforms::Only(vec!["linux/amd64".into(), "linux/arm64/v8".into()]);
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert!(p.wants(&j(r#"{"os":"linux","architecture":"amd64"}"#)));
        assert!(p.wants(&j(r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#)));
        assert!(!p.wants(&j(r#"{"os":"linux","architecture":"arm64","variant":"v7"}"#)));
        assert!(!p.wants(&j(r#"{"os":"windows","architecture":"amd64"}"#)));
        assert!(Platforms::All.wants(&j("{}")));
    }
}
