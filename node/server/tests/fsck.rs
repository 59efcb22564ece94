//! `berth fsck`: detects index/file disagreements and repairs what can be repaired.

mod common;
use common::*;

#[test]
fn clean_store_has_no_findings() {
    let n = TestNode::start();
    n.push_image("a", "v1", &[b"one", b"two"]);
    let dir = n.stop();
    let r = berth_node::fsck::run(dir.path(), true, false).unwrap();
    assert_eq!((r.errors(), r.garbage()), (0, 0), "{r:?}");
    assert_eq!(r.blobs_checked, 3);
}

#[test]
fn finds_and_repairs_damage() {
    let n = TestNode::start();
    let (_, m) = n.push_image("a", "v1", &[b"layer-a"]);
    let kept = n.push_blob("b", b"kept");
    let lost = n.push_blob("b", b"will be lost");
    let bad = n.push_blob("b", b"will be corrupted");
    let loc = n.req("POST", "/v2/b/blobs/uploads/", &[], None).header("Location").unwrap().to_owned();
    n.req("PATCH", &loc, &[], Some(b"partial"));
    let dir = n.stop();
    let path = |d: &str| {
        let hex = d.strip_prefix("sha256:").unwrap();
        dir.path().join("blobs/sha256").join(&hex[..2]).join(hex)
    };
    std::fs::remove_file(path(&lost)).unwrap();
    std::fs::write(path(&bad), b"XXXX be corrupted").unwrap(); // same length, other bytes
    let orphan = sha256(b"orphan");
    std::fs::create_dir_all(path(&orphan).parent().unwrap()).unwrap();
    std::fs::write(path(&orphan), b"orphan").unwrap();
    std::fs::write(dir.path().join("uploads/stray"), b"stray").unwrap();
    // Remove the session's data file: the session is now garbage.
    let id = loc.rsplit('/').next().unwrap();
    std::fs::remove_file(dir.path().join("uploads").join(id)).unwrap();
    // Layer of the image lost too: the manifest is broken.
    let manifest: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    std::fs::remove_file(path(&layer)).unwrap();

    let r = berth_node::fsck::run(dir.path(), false, false).unwrap();
    assert_eq!(r.missing_files.len(), 2);
    assert!(r.corrupt_files.is_empty(), "no hashing without verify");
    assert_eq!(r.broken_manifests.len(), 1);
    assert_eq!(r.orphan_files.len(), 1);
    assert_eq!(r.orphan_upload_files.len(), 1);
    assert_eq!(r.sessions_without_file.len(), 1);
    let r = berth_node::fsck::run(dir.path(), true, false).unwrap();
    assert_eq!(r.corrupt_files.len(), 1);

    let r = berth_node::fsck::run(dir.path(), true, true).unwrap();
    assert!(r.repaired);
    let after = berth_node::fsck::run(dir.path(), true, false).unwrap();
    assert_eq!(after.garbage(), 0, "{after:?}");
    assert_eq!(after.missing_files.len() + after.corrupt_files.len() + after.dangling_tags.len(), 0, "{after:?}");
    assert_eq!(after.broken_manifests.len(), 1, "a manifest whose layer is gone stays reported");
    // The node serves what survived and 404s what was lost, never a short or wrong body.
    let n = TestNode::start_in(dir, |_| {});
    assert_eq!(n.get(&format!("/v2/b/blobs/{kept}")).body, b"kept");
    assert_eq!(n.get(&format!("/v2/b/blobs/{lost}")).status, 404);
    assert_eq!(n.get(&format!("/v2/b/blobs/{bad}")).status, 404);
}
