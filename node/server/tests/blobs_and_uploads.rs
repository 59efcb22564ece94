//! Blob and upload endpoints, from the OCI Distribution Spec: success and failure paths.

mod common;
use common::*;

#[test]
fn base_endpoint() {
    let n = TestNode::start();
    let r = n.get("/v2/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Docker-Distribution-API-Version"), Some("registry/2.0"));
    assert_eq!(n.get("/v2").status, 200);
    assert_eq!(n.req("POST", "/v2/", &[], Some(b"")).status, 405);
}

#[test]
fn monolithic_post_then_get_head_range() {
    let n = TestNode::start();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = n.push_blob("a/b", &data);
    let r = n.get(&format!("/v2/a/b/blobs/{d}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_eq!(r.header("Content-Length"), Some("100000"));
    let h = n.req("HEAD", &format!("/v2/a/b/blobs/{d}"), &[], None);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("Content-Length"), Some("100000"));
    assert!(h.body.is_empty());
    let r = n.req("GET", &format!("/v2/a/b/blobs/{d}"), &[("Range", "bytes=10-19")], None);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[10..20]);
    assert_eq!(r.header("Content-Range"), Some("bytes 10-19/100000"));
    let r = n.req("GET", &format!("/v2/a/b/blobs/{d}"), &[("Range", "bytes=-5")], None);
    assert_eq!(r.body, &data[99_995..]);
    let r = n.req("GET", &format!("/v2/a/b/blobs/{d}"), &[("Range", "bytes=100000-")], None);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */100000"));
    // Regression: last < first used to get the whole blob (200).
    let r = n.req("GET", &format!("/v2/a/b/blobs/{d}"), &[("Range", "bytes=500-0")], None);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */100000"));
    // Other repositories cannot read it without a link.
    assert_eq!(n.get(&format!("/v2/other/blobs/{d}")).status, 404);
    assert_eq!(n.get(&format!("/v2/other/blobs/{d}")).error_code(), "BLOB_UNKNOWN");
}

#[test]
fn unknown_and_invalid_blobs() {
    let n = TestNode::start();
    let r = n.get(&format!("/v2/a/blobs/{}", sha256(b"nope")));
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    let r = n.get("/v2/a/blobs/sha256:1234");
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    let r = n.get("/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    let r = n.get(&format!("/v2/A/blobs/{}", sha256(b"x")));
    assert_eq!((r.status, r.error_code().as_str()), (400, "NAME_INVALID"));
}

#[test]
fn monolithic_digest_mismatch_keeps_nothing() {
    let n = TestNode::start();
    let wrong = sha256(b"other");
    let r = n.req("POST", &format!("/v2/a/blobs/uploads/?digest={wrong}"), &[], Some(b"data"));
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(n.get(&format!("/v2/a/blobs/{wrong}")).status, 404);
    assert_eq!(n.get(&format!("/v2/a/blobs/{}", sha256(b"data"))).status, 404);
    let uploads = std::fs::read_dir(n.dir.path().join("uploads")).unwrap().count();
    assert_eq!(uploads, 0, "no temp file left behind");
}

fn start_session(n: &TestNode, repo: &str) -> String {
    let r = n.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], None);
    assert_eq!(r.status, 202);
    assert_eq!(r.header("Range"), Some("0-0"));
    assert!(r.header("Docker-Upload-UUID").is_some());
    r.header("Location").unwrap().to_owned()
}

#[test]
fn chunked_upload_in_order() {
    let n = TestNode::start();
    let loc = start_session(&n, "x/y");
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut off = 0;
    for chunk in data.chunks(1000) {
        let cr = format!("{}-{}", off, off + chunk.len() - 1);
        let r =
            n.req("PATCH", &loc, &[("Content-Range", &cr), ("Content-Type", "application/octet-stream")], Some(chunk));
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        off += chunk.len();
        assert_eq!(r.header("Range").unwrap(), format!("0-{}", off - 1));
    }
    let st = n.get(&loc);
    assert_eq!(st.status, 204);
    assert_eq!(st.header("Range"), Some("0-2999"));
    let d = sha256(&data);
    let r = n.req("PUT", &format!("{loc}?digest={d}"), &[], None);
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Location").unwrap(), format!("/v2/x/y/blobs/{d}"));
    assert_eq!(n.get(&format!("/v2/x/y/blobs/{d}")).body, data);
    // The session is gone.
    assert_eq!(n.get(&loc).status, 404);
    assert_eq!(n.get(&loc).error_code(), "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn out_of_order_chunk_gets_416_with_range() {
    let n = TestNode::start();
    let loc = start_session(&n, "x");
    assert_eq!(n.req("PATCH", &loc, &[("Content-Range", "0-3")], Some(b"abcd")).status, 202);
    for cr in ["0-3", "2-5", "5-8"] {
        let r = n.req("PATCH", &loc, &[("Content-Range", cr)], Some(b"efgh"));
        assert_eq!(r.status, 416, "{cr}");
        assert_eq!(r.header("Range"), Some("0-3"));
        assert!(r.header("Location").is_some());
    }
    // Content-Range that disagrees with the body length.
    let r = n.req("PATCH", &loc, &[("Content-Range", "4-10")], Some(b"efgh"));
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "SIZE_INVALID");
    assert_eq!(n.req("PATCH", &loc, &[("Content-Range", "4-7")], Some(b"efgh")).status, 202);
    let d = sha256(b"abcdefgh");
    assert_eq!(n.req("PUT", &format!("{loc}?digest={d}"), &[], None).status, 201);
}

#[test]
fn streamed_patch_and_put_with_final_chunk() {
    let n = TestNode::start();
    let loc = start_session(&n, "s");
    assert_eq!(n.req("PATCH", &loc, &[], Some(b"hello ")).status, 202);
    let r = n.req("PATCH", &loc, &[], Some(b"big "));
    assert_eq!(r.header("Range"), Some("0-9"));
    let d = sha256(b"hello big world");
    let r = n.req("PUT", &format!("{loc}?digest={d}"), &[("Content-Type", "application/octet-stream")], Some(b"world"));
    assert_eq!(r.status, 201);
    assert_eq!(n.get(&format!("/v2/s/blobs/{d}")).body, b"hello big world");
}

#[test]
fn put_with_wrong_digest_discards_upload() {
    let n = TestNode::start();
    let loc = start_session(&n, "s");
    n.req("PATCH", &loc, &[], Some(b"data"));
    let r = n.req("PUT", &format!("{loc}?digest={}", sha256(b"other")), &[], None);
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(n.get(&loc).status, 404);
    let r = n.req("PUT", &format!("{loc}?digest={}", sha256(b"data")), &[], None);
    assert_eq!(r.status, 404, "repeated PUT after failure");
    let r = n.req("PUT", &format!("{}?digest=sha256:bad", start_session(&n, "s")), &[], None);
    assert_eq!(r.error_code(), "DIGEST_INVALID");
    let r = n.req("PUT", &start_session(&n, "s"), &[], None);
    assert_eq!(r.error_code(), "DIGEST_INVALID", "missing digest");
}

#[test]
fn repeated_put_of_completed_upload_is_unknown() {
    let n = TestNode::start();
    let loc = start_session(&n, "s");
    let d = sha256(b"abc");
    assert_eq!(n.req("PUT", &format!("{loc}?digest={d}"), &[], Some(b"abc")).status, 201);
    let r = n.req("PUT", &format!("{loc}?digest={d}"), &[], Some(b"abc"));
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
}

#[test]
fn cancel_upload() {
    let n = TestNode::start();
    let loc = start_session(&n, "s");
    n.req("PATCH", &loc, &[], Some(b"data"));
    assert_eq!(n.req("DELETE", &loc, &[], None).status, 204);
    assert_eq!(n.get(&loc).status, 404);
    assert_eq!(n.req("DELETE", &loc, &[], None).status, 404);
    assert_eq!(std::fs::read_dir(n.dir.path().join("uploads")).unwrap().count(), 0);
}

#[test]
fn upload_ids_are_validated_and_scoped() {
    let n = TestNode::start();
    let r = n.get("/v2/s/blobs/uploads/not-a-uuid");
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
    let loc = start_session(&n, "s");
    let other = loc.replace("/v2/s/", "/v2/t/");
    assert_eq!(n.get(&other).status, 404, "a session belongs to its repository");
}

#[test]
fn sha512_uploads_and_digests() {
    let n = TestNode::start();
    let r = n.req("POST", "/v2/s/blobs/uploads/?digest-algorithm=sha512", &[], None);
    assert_eq!(r.status, 202);
    let loc = r.header("Location").unwrap().to_owned();
    use sha2::Digest as _;
    let d = format!("sha512:{}", hex::encode(sha2::Sha512::digest(b"sha512 data")));
    assert_eq!(n.req("PUT", &format!("{loc}?digest={d}"), &[], Some(b"sha512 data")).status, 201);
    assert_eq!(n.get(&format!("/v2/s/blobs/{d}")).body, b"sha512 data");
    // A sha256 session completed with a sha512 digest is rehashed correctly.
    let loc = start_session(&n, "s");
    let d2 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(b"xyz")));
    assert_eq!(n.req("PUT", &format!("{loc}?digest={d2}"), &[], Some(b"xyz")).status, 201);
    let r = n.req("POST", "/v2/s/blobs/uploads/?digest-algorithm=md5", &[], None);
    assert_eq!(r.error_code(), "DIGEST_INVALID");
}

#[test]
fn cross_repo_mount() {
    let n = TestNode::start();
    let d = n.push_blob("src", b"shared layer");
    let r = n.req("POST", &format!("/v2/dst/blobs/uploads/?mount={d}&from=src"), &[], None);
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Location").unwrap(), format!("/v2/dst/blobs/{d}"));
    assert_eq!(n.get(&format!("/v2/dst/blobs/{d}")).body, b"shared layer");
    // Mount from a repo that lacks it: fall back to an upload session.
    let r = n.req("POST", &format!("/v2/dst2/blobs/uploads/?mount={d}&from=nothere"), &[], None);
    assert_eq!(r.status, 202);
    // Mount without `from`: the blob exists somewhere.
    let r = n.req("POST", &format!("/v2/dst3/blobs/uploads/?mount={d}"), &[], None);
    assert_eq!(r.status, 201);
    // Unknown blob without from: 202.
    let r = n.req("POST", &format!("/v2/dst3/blobs/uploads/?mount={}", sha256(b"unknown")), &[], None);
    assert_eq!(r.status, 202);
    let r = n.req("POST", "/v2/dst3/blobs/uploads/?mount=bad", &[], None);
    assert_eq!(r.error_code(), "DIGEST_INVALID");
}

#[test]
fn blob_delete_and_deletes_disabled() {
    let n = TestNode::start();
    let d = n.push_blob("r", b"to delete");
    assert_eq!(n.req("DELETE", &format!("/v2/r/blobs/{d}"), &[], None).status, 202);
    assert_eq!(n.get(&format!("/v2/r/blobs/{d}")).status, 404);
    assert_eq!(n.req("DELETE", &format!("/v2/r/blobs/{d}"), &[], None).status, 404);
    let m = TestNode::start_with(|c| c.storage.delete_enabled = false);
    let d = m.push_blob("r", b"keep");
    let r = m.req("DELETE", &format!("/v2/r/blobs/{d}"), &[], None);
    assert_eq!((r.status, r.error_code().as_str()), (405, "UNSUPPORTED"));
}

#[test]
fn dedup_across_repositories() {
    let n = TestNode::start();
    let d1 = n.push_blob("one", b"same bytes");
    let d2 = n.push_blob("two", b"same bytes");
    assert_eq!(d1, d2);
    let hex = d1.strip_prefix("sha256:").unwrap();
    let path = n.dir.path().join("blobs/sha256").join(&hex[..2]).join(hex);
    assert_eq!(std::fs::read(path).unwrap(), b"same bytes");
}

#[test]
fn empty_blob() {
    let n = TestNode::start();
    let d = n.push_blob("e", b"");
    let r = n.get(&format!("/v2/e/blobs/{d}"));
    assert_eq!((r.status, r.body.len()), (200, 0));
}

#[test]
fn upload_session_limit_per_repo() {
    let n = TestNode::start_with(|c| c.uploads.max_sessions_per_repo = 2);
    start_session(&n, "lim");
    start_session(&n, "lim");
    let r = n.req("POST", "/v2/lim/blobs/uploads/", &[], None);
    assert_eq!((r.status, r.error_code().as_str()), (429, "TOOMANYREQUESTS"));
    start_session(&n, "other");
}

#[test]
fn expired_uploads_are_removed() {
    let n = TestNode::start_with(|c| {
        c.uploads.expire_after_secs = 1;
        c.uploads.expiry_interval_secs = 1;
    });
    let loc = start_session(&n, "exp");
    n.req("PATCH", &loc, &[], Some(b"partial"));
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let r = n.req("PATCH", &loc, &[], Some(b"more"));
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
    assert_eq!(std::fs::read_dir(n.dir.path().join("uploads")).unwrap().count(), 0, "partial data removed");
}

#[test]
fn max_blob_bytes_is_enforced() {
    let n = TestNode::start_with(|c| c.limits.max_blob_bytes = 1000);
    let big = vec![1u8; 1001];
    let r = n.req("POST", &format!("/v2/lim/blobs/uploads/?digest={}", sha256(&big)), &[], Some(&big));
    assert_eq!((r.status, r.error_code().as_str()), (413, "SIZE_INVALID"));
    let loc = start_session(&n, "lim");
    assert_eq!(n.req("PATCH", &loc, &[], Some(&[2u8; 600])).status, 202);
    let r = n.req("PATCH", &loc, &[], Some(&[2u8; 600]));
    assert_eq!(r.status, 413, "the sum of chunks counts");
    n.push_blob("lim", &[3u8; 1000]);
}

/// Regression (found by the kill -9 torture test): a crash after the verified upload file was
/// renamed into place but before the index commit left a session without a data file, and
/// completing it answered 500.
#[test]
fn regression_crash_between_publish_and_commit_completes_on_retry() {
    let n = TestNode::start();
    let loc = start_session(&n, "crash");
    let data = b"published but not committed".to_vec();
    assert_eq!(n.req("PATCH", &loc, &[], Some(&data)).status, 202);
    let id = loc.rsplit('/').next().unwrap().to_owned();
    let dir = n.stop();
    // What complete() and publish() do before the index commit: record the digest the bytes
    // verified to in the session, then move the file into place.
    let d = sha256(&data);
    {
        let index = berth_index::Index::open(&dir.path().join("index"), true).unwrap();
        let repo: berth_types::RepoName = "crash".parse().unwrap();
        let mut s = index.upload(&repo, &id).unwrap().expect("the session");
        s.verified = Some(d.parse().unwrap());
        index.put_upload(&repo, &id, &s).unwrap();
    }
    let hex = d.strip_prefix("sha256:").unwrap();
    let dest = dir.path().join("blobs/sha256").join(&hex[..2]);
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::rename(dir.path().join("uploads").join(&id), dest.join(hex)).unwrap();
    let n = TestNode::start_in(dir, |_| {});
    assert_eq!(n.get(&loc).status, 204, "the session survived");
    let r = n.req("PUT", &format!("{loc}?digest={d}"), &[], None);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(n.get(&format!("/v2/crash/blobs/{d}")).body, data);
    // A session whose data is simply gone answers 404 and is dropped.
    let loc2 = start_session(&n, "crash");
    let id2 = loc2.rsplit('/').next().unwrap().to_owned();
    std::fs::remove_file(n.dir.path().join("uploads").join(&id2)).unwrap();
    let r = n.req("PATCH", &loc2, &[], Some(b"x"));
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
}

/// Small blobs answered from the per-core memory cache: whole, ranged and HEAD, byte for byte
/// the same as from the file (the first GET fills the cache on its core; repeat to reach both).
#[test]
fn small_blobs_from_memory_whole_ranged_and_head() {
    let n = TestNode::start();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let d = n.push_blob("small", &data);
    for _ in 0..6 {
        let r = n.get(&format!("/v2/small/blobs/{d}"));
        assert_eq!(r.body, data);
        assert_eq!(r.header("content-length"), Some("10000"));
        let r = n.req("GET", &format!("/v2/small/blobs/{d}"), &[("Range", "bytes=100-199")], None);
        assert_eq!(r.status, 206);
        assert_eq!(r.body, &data[100..200]);
        assert_eq!(r.header("content-range"), Some("bytes 100-199/10000"));
        let r = n.req("HEAD", &format!("/v2/small/blobs/{d}"), &[], None);
        assert_eq!((r.status, r.body.len()), (200, 0));
        assert_eq!(r.header("content-length"), Some("10000"));
    }
    assert!(n.metrics().lines().any(|l| l.starts_with("berth_small_blob_cache_hits_total") && !l.ends_with(" 0")));
}
