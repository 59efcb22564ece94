#![no_main]
//! Repository names, tags and references: never panic; round-trip; no path traversal survives.
use berth_types::{Reference, RepoName, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(n) = s.parse::<RepoName>() {
            assert_eq!(n.as_str(), s);
            assert!(s.len() <= 255);
            assert!(!s.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
        }
        if let Ok(t) = s.parse::<Tag>() {
            assert_eq!(t.as_str(), s);
            assert!(!s.contains('/') && !s.starts_with('.') && !s.starts_with('-'));
        }
        if let Ok(r) = s.parse::<Reference>() {
            assert_eq!(r.to_string(), s);
        }
    }
});
