//! Integrity: the bytes behind a digest are those bytes. A stored copy that fails its digest
//! is never served from the small-blob cache, and a verified push of the digest repairs a
//! missing or corrupt copy (integrity findings 5 and 10).

mod common;

use common::{sha256, TestNode};

fn blob_file(n: &TestNode, d: &str) -> std::path::PathBuf {
    let hex = d.strip_prefix("sha256:").unwrap();
    n.dir.path().join("blobs/sha256").join(&hex[..2]).join(hex)
}

fn flip(path: &std::path::Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x01;
    // The blob file is read-only by design: replace it as corruption on disk would look.
    let _ = std::fs::remove_file(path);
    std::fs::write(path, b).unwrap();
}

#[test]
fn damaged_copies_are_not_served_and_a_verified_push_repairs_them() {
    let n = TestNode::start();
    // A small blob (served from the per-core cache) with a flipped byte: refused, never 200.
    let small: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let ds = n.push_blob("a/one", &small);
    flip(&blob_file(&n, &ds), 10);
    for _ in 0..4 {
        let r = n.get(&format!("/v2/a/one/blobs/{ds}"));
        assert_ne!(r.status, 200, "a corrupt small blob was served");
        assert_eq!(r.status, 503);
    }
    // The same bytes pushed again (to another repository): verified, they replace the copy.
    n.push_blob("b/two", &small);
    let r = n.get(&format!("/v2/a/one/blobs/{ds}"));
    assert_eq!((r.status, r.body == small), (200, true), "the re-push did not repair the copy");
    // A larger blob (sendfile path), corrupted, then one whose file is gone: a re-push repairs both.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let db = n.push_blob("a/one", &big);
    flip(&blob_file(&n, &db), 50_000);
    n.push_blob("b/two", &big);
    let r = n.get(&format!("/v2/a/one/blobs/{db}"));
    assert_eq!((r.status, r.body == big), (200, true), "a corrupt copy stayed after a verified push");
    std::fs::remove_file(blob_file(&n, &db)).unwrap();
    n.push_blob("a/one", &big);
    let r = n.get(&format!("/v2/a/one/blobs/{db}"));
    assert_eq!((r.status, r.body == big), (200, true), "a lost copy stayed lost after a verified push");
    assert_eq!(sha256(&r.body), db);
}
