//! Manifests, tags, catalog and referrers, from the OCI Distribution Spec.

mod common;
use common::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[test]
fn manifest_put_get_head_exact_bytes() {
    let n = TestNode::start();
    let (d, bytes) = n.push_image("my/app", "v1", &[b"layer one", b"layer two"]);
    for r in ["/v2/my/app/manifests/v1".to_string(), format!("/v2/my/app/manifests/{d}")] {
        let g = n.req("GET", &r, &[("Accept", OCI_MANIFEST)], None);
        assert_eq!(g.status, 200);
        assert_eq!(g.body, bytes);
        assert_eq!(g.header("Content-Type"), Some(OCI_MANIFEST));
        assert_eq!(g.header("Docker-Content-Digest"), Some(d.as_str()));
        assert_eq!(g.header("ETag").unwrap(), format!("\"{d}\""));
        let h = n.req("HEAD", &r, &[], None);
        assert_eq!(h.status, 200);
        assert_eq!(h.header("Content-Length").unwrap(), bytes.len().to_string());
    }
    let r = n.get("/v2/my/app/manifests/nope");
    assert_eq!((r.status, r.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let r = n.get("/v2/never/pushed/manifests/latest");
    assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"));
}

#[test]
fn unknown_fields_and_whitespace_are_kept_byte_for_byte() {
    let n = TestNode::start();
    let cd = n.push_blob("k", b"{}");
    let body = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{OCI_MANIFEST}\",\n  \"x-custom\": {{\"keep\": [1,2,3]}},\n  \"config\": {{\"mediaType\": \"application/vnd.oci.empty.v1+json\", \"digest\": \"{cd}\", \"size\": 2, \"data\": \"e30=\"}},\n  \"layers\": [],\n  \"annotations\": {{\"a\": \"b\"}}\n}}\n"
    );
    let r = n.req("PUT", "/v2/k/manifests/t", &[("Content-Type", OCI_MANIFEST)], Some(body.as_bytes()));
    assert_eq!(r.status, 201);
    assert_eq!(n.get("/v2/k/manifests/t").body, body.as_bytes());
}

#[test]
fn manifest_by_digest_and_multiple_tags() {
    let n = TestNode::start();
    let (_, bytes) = n.push_image("m", "first", &[b"l"]);
    let d = sha256(&bytes);
    let r = n.req(
        "PUT",
        &format!("/v2/m/manifests/{d}?tag=a&tag=b&tag=c"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&bytes),
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.header("Location").unwrap(), format!("/v2/m/manifests/{d}"));
    let tags = n.get("/v2/m/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["a", "b", "c", "first"]));
    // Digest in the path must match the content.
    let wrong = sha256(b"x");
    let r = n.req("PUT", &format!("/v2/m/manifests/{wrong}"), &[("Content-Type", OCI_MANIFEST)], Some(&bytes));
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    let r = n.req("PUT", &format!("/v2/m/manifests/{d}?tag=bad:tag"), &[("Content-Type", OCI_MANIFEST)], Some(&bytes));
    assert_eq!(r.status, 400);
}

#[test]
fn manifest_validation_errors() {
    let n = TestNode::start();
    let put = |body: &[u8], ct: &str| n.req("PUT", "/v2/v/manifests/t", &[("Content-Type", ct)], Some(body));
    let r = put(b"{not json", OCI_MANIFEST);
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_INVALID"));
    let r = put(br#"{"schemaVersion":1,"name":"x"}"#, "application/vnd.docker.distribution.manifest.v1+prettyjws");
    assert_eq!(r.error_code(), "MANIFEST_INVALID");
    let missing = sha256(b"missing");
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{missing}","size":7}},"layers":[]}}"#
    );
    let r = put(m.as_bytes(), OCI_MANIFEST);
    assert_eq!((r.status, r.error_code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    // Content-Type and mediaType disagree.
    let r = put(m.as_bytes(), OCI_INDEX);
    assert_eq!(r.error_code(), "MANIFEST_INVALID");
    // Oversize manifest.
    let small = TestNode::start_with(|c| c.limits.max_manifest_bytes = 1024);
    let big = vec![b' '; 2048];
    let r = small.req("PUT", "/v2/v/manifests/t", &[("Content-Type", OCI_MANIFEST)], Some(&big));
    assert_eq!(r.status, 413);
    let r = n.req("PUT", "/v2/v/manifests/-bad-tag", &[("Content-Type", OCI_MANIFEST)], Some(m.as_bytes()));
    assert_eq!(r.status, 400);
}

#[test]
fn non_distributable_layers_need_no_blob() {
    let n = TestNode::start();
    let cd = n.push_blob("nd", b"{}");
    let foreign = sha256(b"foreign layer");
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_V2}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{cd}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{foreign}","size":13,"urls":["https://example.invalid/layer"]}}]}}"#
    );
    let r = n.req("PUT", "/v2/nd/manifests/win", &[("Content-Type", DOCKER_V2)], Some(m.as_bytes()));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(n.get("/v2/nd/manifests/win").header("Content-Type"), Some(DOCKER_V2));
}

#[test]
fn index_and_manifest_list() {
    let n = TestNode::start();
    let (d1, b1) = n.push_image("multi", "amd64", &[b"a"]);
    let (d2, b2) = n.push_image("multi", "arm64", &[b"b"]);
    for (mt, tag) in [(OCI_INDEX, "oci"), (DOCKER_LIST, "docker")] {
        let idx = serde_json::json!({
            "schemaVersion": 2, "mediaType": mt,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d1, "size": b1.len(), "platform": {"architecture":"amd64","os":"linux"}},
                {"mediaType": OCI_MANIFEST, "digest": d2, "size": b2.len(), "platform": {"architecture":"arm64","os":"linux"}},
            ]
        });
        let bytes = serde_json::to_vec(&idx).unwrap();
        let r = n.req("PUT", &format!("/v2/multi/manifests/{tag}"), &[("Content-Type", mt)], Some(&bytes));
        assert_eq!(r.status, 201);
        assert_eq!(n.get(&format!("/v2/multi/manifests/{tag}")).header("Content-Type"), Some(mt));
    }
    // An index pointing to a manifest this repo lacks.
    let idx = serde_json::json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[{"mediaType":OCI_MANIFEST,"digest":sha256(b"nothing"),"size":1}]});
    let r = n.req(
        "PUT",
        "/v2/multi/manifests/bad",
        &[("Content-Type", OCI_INDEX)],
        Some(&serde_json::to_vec(&idx).unwrap()),
    );
    assert_eq!(r.error_code(), "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn delete_by_tag_and_by_digest() {
    let n = TestNode::start();
    let (d, bytes) = n.push_image("del", "t1", &[b"x"]);
    n.req("PUT", &format!("/v2/del/manifests/{d}?tag=t2"), &[("Content-Type", OCI_MANIFEST)], Some(&bytes));
    assert_eq!(n.req("DELETE", "/v2/del/manifests/t1", &[], None).status, 202);
    assert_eq!(n.get("/v2/del/manifests/t1").status, 404);
    assert_eq!(n.get(&format!("/v2/del/manifests/{d}")).status, 200, "tag delete keeps the manifest");
    assert_eq!(n.req("DELETE", &format!("/v2/del/manifests/{d}"), &[], None).status, 202);
    assert_eq!(n.get("/v2/del/manifests/t2").status, 404, "digest delete removes its tags");
    assert_eq!(n.get(&format!("/v2/del/manifests/{d}")).status, 404);
    assert_eq!(n.req("DELETE", &format!("/v2/del/manifests/{d}"), &[], None).status, 404);
    let off = TestNode::start_with(|c| c.storage.delete_enabled = false);
    off.push_image("del", "t", &[b"x"]);
    assert_eq!(off.req("DELETE", "/v2/del/manifests/t", &[], None).error_code(), "UNSUPPORTED");
}

#[test]
fn tags_pagination() {
    let n = TestNode::start();
    let (d, bytes) = n.push_image("p", "t00", &[b"x"]);
    let q: Vec<String> = (1..25).map(|i| format!("tag=t{i:02}")).collect();
    let r =
        n.req("PUT", &format!("/v2/p/manifests/{d}?{}", q.join("&")), &[("Content-Type", OCI_MANIFEST)], Some(&bytes));
    assert_eq!(r.status, 201);
    let all = n.get("/v2/p/tags/list").json();
    assert_eq!(all["tags"].as_array().unwrap().len(), 25);
    assert_eq!(all["name"], "p");
    let mut seen = Vec::new();
    let mut url = "/v2/p/tags/list?n=10".to_string();
    loop {
        let r = n.get(&url);
        assert_eq!(r.status, 200);
        seen.extend(r.json()["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()));
        match r.header("Link") {
            Some(l) => {
                assert!(l.ends_with("rel=\"next\""));
                url = l[1..l.find('>').unwrap()].to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(n.get("/v2/p/tags/list?n=0").json()["tags"], serde_json::json!([]));
    assert_eq!(n.get("/v2/p/tags/list?n=5&last=t20").json()["tags"], serde_json::json!(["t21", "t22", "t23", "t24"]));
    assert_eq!(n.get("/v2/p/tags/list?n=-1").status, 400);
    assert_eq!(n.get("/v2/p/tags/list?n=abc").status, 400);
    assert_eq!(n.get("/v2/p/tags/list?n=99999999999999999999999").status, 400);
    let r = n.get("/v2/nope/tags/list");
    assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"));
}

#[test]
fn catalog_pagination_and_emptying() {
    let n = TestNode::start();
    for r in ["b", "a", "c/d", "c"] {
        n.push_image(r, "latest", &[b"z"]);
    }
    assert_eq!(n.get("/v2/_catalog").json()["repositories"], serde_json::json!(["a", "b", "c", "c/d"]));
    let r = n.get("/v2/_catalog?n=2");
    assert_eq!(r.json()["repositories"], serde_json::json!(["a", "b"]));
    assert!(r.header("Link").unwrap().contains("last=b"));
    assert_eq!(n.get("/v2/_catalog?n=2&last=b").json()["repositories"], serde_json::json!(["c", "c/d"]));
    // Remove everything from "a": it leaves the catalog.
    let d = n.get("/v2/a/manifests/latest").header("Docker-Content-Digest").unwrap().to_owned();
    n.req("DELETE", &format!("/v2/a/manifests/{d}"), &[], None);
    let m: serde_json::Value = n.get("/v2/b/manifests/latest").json();
    n.req("DELETE", &format!("/v2/a/blobs/{}", m["config"]["digest"].as_str().unwrap()), &[], None);
    n.req("DELETE", &format!("/v2/a/blobs/{}", m["layers"][0]["digest"].as_str().unwrap()), &[], None);
    assert_eq!(n.get("/v2/_catalog").json()["repositories"], serde_json::json!(["b", "c", "c/d"]));
}

#[test]
fn referrers_api() {
    let n = TestNode::start();
    let (subject, sbytes) = n.push_image("ref", "v1", &[b"base"]);
    let empty = n.push_blob("ref", b"{}");
    let mut referrers = Vec::new();
    for (i, at) in ["application/vnd.example.sbom", "application/vnd.example.sig", "application/vnd.example.sbom"]
        .iter()
        .enumerate()
    {
        let blob = n.push_blob("ref", format!("artifact {i}").as_bytes());
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": at,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": blob, "size": format!("artifact {i}").len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": sbytes.len()},
            "annotations": {"n": i.to_string()}
        });
        let bytes = serde_json::to_vec(&m).unwrap();
        let d = sha256(&bytes);
        let r = n.req("PUT", &format!("/v2/ref/manifests/{d}"), &[("Content-Type", OCI_MANIFEST)], Some(&bytes));
        assert_eq!(r.status, 201);
        assert_eq!(r.header("OCI-Subject"), Some(subject.as_str()));
        referrers.push(d);
    }
    let r = n.get(&format!("/v2/ref/referrers/{subject}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some(OCI_INDEX));
    let idx = r.json();
    assert_eq!(idx["mediaType"], OCI_INDEX);
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 3);
    assert!(idx["manifests"][0]["annotations"]["n"].is_string());
    let r = n.get(&format!("/v2/ref/referrers/{subject}?artifactType=application/vnd.example.sbom"));
    assert_eq!(r.header("OCI-Filters-Applied"), Some("artifactType"));
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 2);
    // Unknown subject: an empty index, not a 404.
    let r = n.get(&format!("/v2/ref/referrers/{}", sha256(b"none")));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    assert_eq!(n.get("/v2/ref/referrers/sha256:bad").error_code(), "DIGEST_INVALID");
    // A referrer may be pushed before its subject exists.
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}, "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(b"future"), "size": 1}
    });
    let r = n.req(
        "PUT",
        "/v2/ref/manifests/early",
        &[("Content-Type", OCI_MANIFEST)],
        Some(&serde_json::to_vec(&m).unwrap()),
    );
    assert_eq!(r.status, 201);
    // Deleting a referrer removes it from the list.
    n.req("DELETE", &format!("/v2/ref/manifests/{}", referrers[0]), &[], None);
    assert_eq!(n.get(&format!("/v2/ref/referrers/{subject}")).json()["manifests"].as_array().unwrap().len(), 2);
    // Pagination.
    let r = n.get(&format!("/v2/ref/referrers/{subject}?n=1"));
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
    assert!(r.header("Link").is_some());
}
