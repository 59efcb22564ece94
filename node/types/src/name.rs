//! Repository names, tags and references, validated against the OCI Distribution grammar.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Digest;

/// Longest repository name we accept. The spec caps host + name at 255 characters; we keep
/// room for a host name of reasonable length.
pub const MAX_NAME_LEN: usize = 255;

/// Why a name, tag or reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty input.
    #[error("must not be empty")]
    Empty,
    /// Over the length limit.
    #[error("longer than {0} characters")]
    TooLong(usize),
    /// Not matching the grammar.
    #[error("does not match the grammar {0}")]
    Grammar(&'static str),
}

const NAME_GRAMMAR: &str = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*";
const TAG_GRAMMAR: &str = "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}";

/// A validated repository name such as `library/alpine`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &[u8]) -> bool {
    let mut i = 0;
    let n = c.len();
    // leading alnum run
    if n == 0 || !is_alnum(c[0]) {
        return false;
    }
    while i < n && is_alnum(c[i]) {
        i += 1;
    }
    while i < n {
        // separator
        match c[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < n && c[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < n && c[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        // alnum run, at least one
        if i >= n || !is_alnum(c[i]) {
            return false;
        }
        while i < n && is_alnum(c[i]) {
            i += 1;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(MAX_NAME_LEN));
        }
        if !s.as_bytes().split(|&b| b == b'/').all(valid_component) {
            return Err(NameError::Grammar(NAME_GRAMMAR));
        }
        Ok(RepoName(s.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A validated tag such as `v1.2` or `latest`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.is_empty() {
            return Err(NameError::Empty);
        }
        if b.len() > 128 {
            return Err(NameError::TooLong(128));
        }
        let first_ok = b[0].is_ascii_alphanumeric() || b[0] == b'_';
        let rest_ok = b[1..].iter().all(|&c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
        if !(first_ok && rest_ok) {
            return Err(NameError::Grammar(TAG_GRAMMAR));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(RepoName);
serde_via_str!(Tag);

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// By tag.
    Tag(Tag),
    /// By digest.
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse::<Digest>().map(Reference::Digest).map_err(|_| NameError::Grammar("algorithm:hex"))
        } else {
            s.parse().map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        for ok in ["a", "library/alpine", "my-project/sub.dir/x__y", "a0/b-----c", "x.y_z"] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a//b", "/a", "a/", "..", "a/../b", "%2e%2e", "a_", "a___b", "-a", "a.-b", "a\0b", "ünï", "a b",
            "a/.b",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?}");
        }
        assert!("a".repeat(256).parse::<RepoName>().is_err());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d"] {
            assert!(ok.parse::<Tag>().is_ok());
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn valid_names_round_trip(s in "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,2}(/[a-z0-9]{1,8}((\\.|_|__|-)[a-z0-9]{1,8}){0,2}){0,3}") {
            let n: RepoName = s.parse().unwrap();
            prop_assert_eq!(n.to_string(), s);
        }

        #[test]
        fn arbitrary_input_never_panics_and_never_traverses(s in "\\PC*") {
            if let Ok(n) = s.parse::<RepoName>() {
                prop_assert!(!n.as_str().split('/').any(|c| c == ".." || c == "." || c.is_empty()));
            }
            let _ = s.parse::<Reference>();
        }

        #[test]
        fn valid_tags_round_trip(s in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
            let t: Tag = s.parse().unwrap();
            prop_assert_eq!(t.to_string(), s);
        }
    }
}
