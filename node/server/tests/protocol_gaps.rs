//! Regression tests for the protocol gaps found against the newest distribution spec (issue
//! "The last protocol gaps"): each fails without its fix.

mod common;
use berth_node::config::IndexChildren;
use common::*;
use sha2::Digest as _;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

fn image(n: &TestNode, repo: &str, layer: &[u8], layer_size: Option<usize>) -> Vec<u8> {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = n.push_blob(repo, config);
    let ld = n.push_blob(repo, layer);
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer_size.unwrap_or(layer.len())}],
    }))
    .unwrap()
}

fn put(n: &TestNode, repo: &str, reference: &str, ct: &str, body: &[u8]) -> Resp {
    n.req("PUT", &format!("/v2/{repo}/manifests/{reference}"), &[("Content-Type", ct)], Some(body))
}

#[test]
fn invalid_reference_reads_are_404_manifest_unknown_and_puts_tag_invalid() {
    let n = TestNode::start();
    n.push_image("r", "v1", &[b"x"]);
    for m in ["GET", "HEAD"] {
        let r = n.req(m, "/v2/r/manifests/.INVALID_MANIFEST_NAME", &[], None);
        assert_eq!(r.status, 404, "{m}");
    }
    assert_eq!(n.get("/v2/r/manifests/.INVALID_MANIFEST_NAME").error_code(), "MANIFEST_UNKNOWN");
    let r = put(&n, "r", ".INVALID_MANIFEST_NAME", OCI_MANIFEST, &image(&n, "r", b"l", None));
    assert_eq!((r.status, r.error_code().as_str()), (400, "TAG_INVALID"));
}

#[test]
fn put_by_digest_with_tags_answers_one_oci_tag_header_per_tag() {
    let n = TestNode::start();
    let bytes = image(&n, "t", b"layer", None);
    let d = sha256(&bytes);
    let r = put(&n, "t", &format!("{d}?tag=a&tag=b"), OCI_MANIFEST, &bytes);
    assert_eq!(r.status, 201);
    let mut tags = r.headers_all("OCI-Tag");
    tags.sort();
    assert_eq!(tags, vec!["a", "b"]);
    // A push by tag names that tag.
    let r = put(&n, "t", "c", OCI_MANIFEST, &bytes);
    assert_eq!(r.headers_all("OCI-Tag"), vec!["c"]);
}

#[test]
fn sha512_manifests_are_stored_and_answered_under_sha512() {
    let n = TestNode::start();
    let bytes = image(&n, "s", b"layer512", None);
    let d = sha512(&bytes);
    for path in [d.clone(), format!("{d}?tag=five12")] {
        let r = put(&n, "s", &path, OCI_MANIFEST, &bytes);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
        assert_eq!(r.header("Location").unwrap(), format!("/v2/s/manifests/{d}"));
    }
    for reference in [d.as_str(), "five12"] {
        let g = n.get(&format!("/v2/s/manifests/{reference}"));
        assert_eq!(g.status, 200, "{reference}");
        assert_eq!(g.body, bytes);
        assert_eq!(g.header("Docker-Content-Digest"), Some(d.as_str()), "{reference}");
    }
    // Not under the sha256 of the same bytes: it was never pushed by that digest.
    assert_eq!(n.get(&format!("/v2/s/manifests/{}", sha256(&bytes))).status, 404);
}

#[test]
fn descriptor_size_must_match_the_stored_blob() {
    let n = TestNode::start();
    let bad = image(&n, "z", b"twelve bytes", Some(13));
    let r = put(&n, "z", "v1", OCI_MANIFEST, &bad);
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_INVALID"));
    let msg = r.json()["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("layers[0]") && msg.contains("13") && msg.contains("12"), "{msg}");
    // The config is checked too.
    let cd = n.push_blob("z", b"{}");
    let m = serde_json::json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":3},"layers":[]});
    let r = put(&n, "z", "v2", OCI_MANIFEST, &serde_json::to_vec(&m).unwrap());
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("config"));
    // An index child with a wrong size.
    let good = image(&n, "z", b"ok", None);
    assert_eq!(put(&n, "z", "good", OCI_MANIFEST, &good).status, 201);
    let idx = serde_json::json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[
        {"mediaType":OCI_MANIFEST,"digest":sha256(&good),"size":good.len() + 1,"platform":{"os":"linux","architecture":"amd64"}}]});
    let r = put(&n, "z", "idx", OCI_INDEX, &serde_json::to_vec(&idx).unwrap());
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_INVALID"));
}

fn sparse_index(n: &TestNode, repo: &str) -> (Vec<u8>, String) {
    let amd = image(n, repo, b"amd64 layer", None);
    assert_eq!(put(n, repo, &sha256(&amd), OCI_MANIFEST, &amd).status, 201);
    let absent = format!("sha256:{}", "ab".repeat(32));
    let idx = serde_json::json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[
        {"mediaType":OCI_MANIFEST,"digest":sha256(&amd),"size":amd.len(),"platform":{"os":"linux","architecture":"amd64"}},
        {"mediaType":OCI_MANIFEST,"digest":absent,"size":500,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]});
    (serde_json::to_vec(&idx).unwrap(), absent)
}

#[test]
fn sparse_indexes_follow_the_configured_policy() {
    // Default: every child must be present.
    let n = TestNode::start();
    let (idx, absent) = sparse_index(&n, "m");
    let r = put(&n, "m", "all", OCI_INDEX, &idx);
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("linux/arm64/v8"));
    drop(n);

    // Accept all: stored, pulled back, and GC/fsck see the absent child as absent.
    let n = TestNode::start_with(|c| c.validation.index_children = IndexChildren::None);
    let (idx, absent2) = sparse_index(&n, "m");
    assert_eq!(absent, absent2);
    let r = put(&n, "m", "sparse", OCI_INDEX, &idx);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(n.get("/v2/m/manifests/sparse").body, idx);
    assert_eq!(n.get(&format!("/v2/m/manifests/{absent}")).status, 404);
    let dir = n.stop();
    let report = berth_node::fsck::run(dir.path(), false, false).unwrap();
    assert_eq!(report.errors(), 0, "an accepted absent child is not an fsck error: {:?}", report.broken_manifests);

    // Listed platforms: absent arm64 is fine when only amd64 is required, not when arm64 is.
    let n = TestNode::start_with(|c| {
        c.validation.index_children = IndexChildren::Platforms;
        c.validation.index_platforms = vec!["linux/amd64".into()];
    });
    let (idx, _) = sparse_index(&n, "p");
    assert_eq!(put(&n, "p", "ok", OCI_INDEX, &idx).status, 201);
    drop(n);
    let n = TestNode::start_with(|c| {
        c.validation.index_children = IndexChildren::Platforms;
        c.validation.index_platforms = vec!["linux/arm64/v8".into()];
    });
    let (idx, _) = sparse_index(&n, "p");
    assert_eq!(put(&n, "p", "no", OCI_INDEX, &idx).status, 400);
}

#[test]
fn absent_layers_are_rejected_by_default_and_accepted_when_configured() {
    let mk = |n: &TestNode| {
        let config = br#"{"os":"linux"}"#;
        let cd = n.push_blob("l", config);
        serde_json::to_vec(&serde_json::json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":config.len()},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":format!("sha256:{}", "cd".repeat(32)),"size":9}]}))
        .unwrap()
    };
    let n = TestNode::start();
    let r = put(&n, "l", "v1", OCI_MANIFEST, &mk(&n));
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    drop(n);
    let n = TestNode::start_with(|c| c.validation.allow_absent_layers = true);
    let m = mk(&n);
    assert_eq!(put(&n, "l", "v1", OCI_MANIFEST, &m).status, 201);
    // The config must still exist.
    let no_config =
        String::from_utf8(m).unwrap().replace(&sha256(br#"{"os":"linux"}"#), &format!("sha256:{}", "ef".repeat(32)));
    assert_eq!(put(&n, "l", "v2", OCI_MANIFEST, no_config.as_bytes()).status, 400);
}
