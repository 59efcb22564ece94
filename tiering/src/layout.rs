//! Where things live in the bucket, under the configured prefix:
//!
//! | key | body |
//! |---|---|
//! | `blobs/<alg>/<hex>` | the blob's bytes (content-addressed, shared by every repository) |
//! | `manifests/<repo>/<alg>:<hex>` | the manifest's exact bytes; `Content-Type` is its media type |
//! | `tags/<repo>/<tag>` | the digest the tag points to |
//! | `links/<repo>/<alg>:<hex>` | empty: the repository may read this blob |
//! | `state/accounts.json`, `state/scans/<alg>:<hex>.json` | registry state a rebuild restores (`state.rs`) |
//!
//! Manifests are stored per repository (not only by digest) because a manifest's existence is
//! per repository in the OCI API, and so a deleted manifest in one repository is one DELETE.
//! Keys are parsed from the right (repository names contain `/`), into the same validated types
//! the API uses, so a foreign object in the bucket can never become a bad index entry.

use berth_types::{Digest, RepoName, Tag};

/// Key builder/parser for one bucket prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

/// An object of the bucket, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A blob.
    Blob(Digest),
    /// A manifest of a repository.
    Manifest(RepoName, Digest),
    /// A tag of a repository.
    Tag(RepoName, Tag),
    /// A repository's link to a blob.
    Link(RepoName, Digest),
}

impl Layout {
    /// Layout under `prefix` (already normalised: empty or ending in `/`).
    pub fn new(prefix: String) -> Layout {
        Layout { prefix }
    }
    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Key of a blob.
    pub fn blob(&self, d: &Digest) -> String {
        format!("{}blobs/{}/{}", self.prefix, d.algorithm().as_str(), d.hex())
    }
    /// Key of a manifest.
    pub fn manifest(&self, repo: &RepoName, d: &Digest) -> String {
        format!("{}manifests/{}/{}", self.prefix, repo, d)
    }
    /// Key of a tag.
    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> String {
        format!("{}tags/{}/{}", self.prefix, repo, tag.as_str())
    }
    /// Key of a link.
    pub fn link(&self, repo: &RepoName, d: &Digest) -> String {
        format!("{}links/{}/{}", self.prefix, repo, d)
    }

    /// Key of a registry state object (`accounts.json`, `scans/<digest>.json`).
    pub fn state(&self, rel: &str) -> String {
        format!("{}state/{rel}", self.prefix)
    }

    /// Whether `key` is a registry state object (read by `Tiering::read_state`, not `scan`).
    pub fn is_state(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix.as_str()).is_some_and(|r| r.starts_with("state/"))
    }

    /// Understand a key of the bucket; `None` for anything that is not ours.
    pub fn parse(&self, key: &str) -> Option<Object> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let (kind, rest) = rest.split_once('/')?;
        let (left, last) = rest.rsplit_once('/')?;
        match kind {
            "blobs" => format!("{left}:{last}").parse().ok().map(Object::Blob),
            "manifests" => Some(Object::Manifest(left.parse().ok()?, last.parse().ok()?)),
            "tags" => Some(Object::Tag(left.parse().ok()?, last.parse().ok()?)),
            "links" => Some(Object::Link(left.parse().ok()?, last.parse().ok()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::Algorithm;

    #[test]
    fn keys_round_trip() {
        let l = Layout::new("registry/".into());
        let d = Digest::of(Algorithm::Sha256, b"x");
        let r: RepoName = "team/app/web".parse().unwrap();
        let t: Tag = "v1.0".parse().unwrap();
        assert_eq!(l.blob(&d), format!("registry/blobs/sha256/{}", d.hex()));
        assert_eq!(l.parse(&l.blob(&d)), Some(Object::Blob(d.clone())));
        assert_eq!(l.parse(&l.manifest(&r, &d)), Some(Object::Manifest(r.clone(), d.clone())));
        assert_eq!(l.parse(&l.tag(&r, &t)), Some(Object::Tag(r.clone(), t)));
        assert_eq!(l.parse(&l.link(&r, &d)), Some(Object::Link(r, d)));
    }

    #[test]
    fn foreign_keys_are_ignored() {
        let l = Layout::new("registry/".into());
        for k in
            ["other/blobs/sha256/00", "registry/blobs/sha256/zz", "registry/tags/UPPER/x", "registry/x", "registry/"]
        {
            assert_eq!(l.parse(k), None, "{k}");
        }
    }
}
