//! The bad-input matrix: every row is a hostile or malformed request with the status and OCI
//! error code it must get. None may produce a 500, a panic, a hang, or a file outside the data
//! directory. Rows are sent raw (no client-side URL normalisation).

mod common;
use std::time::Duration;

use common::*;

struct Case {
    what: String,
    request: Vec<u8>,
    status: u16,
    code: Option<&'static str>,
}

fn raw(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut v = r.into_bytes();
    v.extend_from_slice(body);
    v
}

fn case(what: impl Into<String>, request: Vec<u8>, status: u16, code: Option<&'static str>) -> Case {
    Case { what: what.into(), request, status, code }
}

fn parse(resp: &str) -> (u16, String) {
    let status = resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

#[test]
fn bad_input_matrix() {
    let outer = tempfile::tempdir().unwrap();
    let data_dir = outer.path().join("data");
    let n = TestNode::start_with(|c| {
        c.data_dir = data_dir.clone();
        c.limits.max_manifest_bytes = 64 * 1024;
        c.limits.max_head_bytes = 16 * 1024;
    });
    // Fixtures: a repository with a blob, a manifest and an open upload.
    let (md, mbytes) = n.push_image("ok/repo", "v1", &[b"layer"]);
    let blob = n.push_blob("ok/repo", b"blob");
    let up = n.req("POST", "/v2/ok/repo/blobs/uploads/", &[], None).header("Location").unwrap().to_owned();
    assert_eq!(n.req("PATCH", &up, &[("Content-Range", "0-3")], Some(b"abcd")).status, 202);
    let good_digest = sha256(b"anything");

    let mut cases = Vec::new();
    let bad_names = [
        "..",
        ".",
        "a/..",
        "a/../b",
        "%2e%2e",
        "a%2fb",
        "A",
        "Upper/case",
        "a//b",
        "/a",
        "a/",
        "a_",
        "_a",
        "a-",
        "-a",
        "a..b",
        "a.-b",
        "a___b",
        "a b",
        "a\tb",
        "é",
        "日本",
        "a;b",
        "a\\b",
        "a:b",
        "a@b",
        "a*",
        "a?x=1",
    ];
    let long = "a".repeat(256);
    let mut names: Vec<String> = bad_names.iter().map(|s| s.to_string()).collect();
    names.push(long.clone());
    for name in &names {
        for (ep, method) in [("tags/list", "GET"), ("manifests/latest", "GET"), ("blobs/uploads/", "POST")] {
            let path = format!("/v2/{name}/{ep}");
            let (status, code) = if name.contains('?') {
                // The query splits off the endpoint: the path no longer names a resource.
                (404, Some("NOT_FOUND"))
            } else if name.contains(' ') || name.contains('\t') {
                (400, None) // not even a valid request line
            } else {
                (400, Some("NAME_INVALID"))
            };
            cases.push(case(format!("{method} name {name:?} {ep}"), raw(method, &path, &[], b""), status, code));
        }
    }
    let bad_digests = [
        "sha256:",
        "sha256:abc",
        "sha256:ZZZZ",
        &format!("sha256:{}", "A".repeat(64)),
        &format!("sha256:{}", "0".repeat(63)),
        &format!("sha256:{}", "0".repeat(65)),
        &format!("sha512:{}", "0".repeat(64)),
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256",
        ":abc",
        "sha256:../../etc/passwd",
        "SHA256:0",
    ];
    for d in bad_digests {
        if d.contains('/') {
            // Slashes change the path's shape: no endpoint matches, nothing is opened.
            cases.push(case(
                format!("GET blob {d}"),
                raw("GET", &format!("/v2/ok/repo/blobs/{d}"), &[], b""),
                404,
                Some("NOT_FOUND"),
            ));
            continue;
        }
        cases.push(case(
            format!("GET blob {d}"),
            raw("GET", &format!("/v2/ok/repo/blobs/{d}"), &[], b""),
            400,
            Some("DIGEST_INVALID"),
        ));
        cases.push(case(
            format!("GET referrers {d}"),
            raw("GET", &format!("/v2/ok/repo/referrers/{d}"), &[], b""),
            400,
            Some("DIGEST_INVALID"),
        ));
        cases.push(case(
            format!("monolithic ?digest={d}"),
            raw("POST", &format!("/v2/ok/repo/blobs/uploads/?digest={d}"), &[], b"x"),
            400,
            Some("DIGEST_INVALID"),
        ));
        cases.push(case(
            format!("PUT upload ?digest={d}"),
            raw("PUT", &format!("{up}?digest={d}"), &[], b""),
            400,
            Some("DIGEST_INVALID"),
        ));
    }
    let more = vec![
        case("digest mismatch monolithic", raw("POST", &format!("/v2/ok/repo/blobs/uploads/?digest={good_digest}"), &[], b"other"), 400, Some("DIGEST_INVALID")),
        case("unknown blob", raw("GET", &format!("/v2/ok/repo/blobs/{good_digest}"), &[], b""), 404, Some("BLOB_UNKNOWN")),
        case("blob of another repo", raw("GET", &format!("/v2/other/blobs/{blob}"), &[], b""), 404, Some("BLOB_UNKNOWN")),
        case("range past end", raw("GET", &format!("/v2/ok/repo/blobs/{blob}"), &[("Range", "bytes=4-")], b""), 416, Some("RANGE_INVALID")),
        case("range suffix 0", raw("GET", &format!("/v2/ok/repo/blobs/{blob}"), &[("Range", "bytes=-0")], b""), 416, Some("RANGE_INVALID")),
        case("range garbage is ignored", raw("GET", &format!("/v2/ok/repo/blobs/{blob}"), &[("Range", "bytes=x-y")], b""), 200, None),
        case("range overflow is ignored", raw("GET", &format!("/v2/ok/repo/blobs/{blob}"), &[("Range", "bytes=99999999999999999999999-")], b""), 200, None),
        case("chunk overlap", raw("PATCH", &up, &[("Content-Range", "2-5")], b"xxxx"), 416, Some("BLOB_UPLOAD_INVALID")),
        case("chunk gap", raw("PATCH", &up, &[("Content-Range", "6-9")], b"xxxx"), 416, Some("BLOB_UPLOAD_INVALID")),
        case("chunk from 0 again", raw("PATCH", &up, &[("Content-Range", "0-3")], b"abcd"), 416, Some("BLOB_UPLOAD_INVALID")),
        case("content-range reversed", raw("PATCH", &up, &[("Content-Range", "9-4")], b"xxxx"), 416, Some("BLOB_UPLOAD_INVALID")),
        case("content-range garbage", raw("PATCH", &up, &[("Content-Range", "abc")], b"xxxx"), 416, Some("BLOB_UPLOAD_INVALID")),
        case("content-range negative", raw("PATCH", &up, &[("Content-Range", "-4-7")], b"xxxx"), 416, Some("BLOB_UPLOAD_INVALID")),
        case("content-range overflow", raw("PATCH", &up, &[("Content-Range", "4-99999999999999999999")], b"xxxx"), 416, Some("BLOB_UPLOAD_INVALID")),
        case("content-range length mismatch", raw("PATCH", &up, &[("Content-Range", "4-9")], b"xxxx"), 400, Some("SIZE_INVALID")),
        case("final PUT range mismatch", raw("PUT", &format!("{up}?digest={good_digest}"), &[("Content-Range", "9-12")], b"xxxx"), 416, Some("BLOB_UPLOAD_INVALID")),
        case("PUT without digest", raw("PUT", &up, &[], b""), 400, Some("DIGEST_INVALID")),
        case("upload id traversal", raw("PATCH", "/v2/ok/repo/blobs/uploads/../../x", &[], b"x"), 404, Some("NOT_FOUND")),
        case("upload id garbage", raw("GET", "/v2/ok/repo/blobs/uploads/zzzz", &[], b""), 404, Some("BLOB_UPLOAD_UNKNOWN")),
        case("unknown upload", raw("GET", "/v2/ok/repo/blobs/uploads/6f9619ff-8b86-d011-b42d-00c04fc964ff", &[], b""), 404, Some("BLOB_UPLOAD_UNKNOWN")),
        case("upload of another repo", raw("GET", &up.replace("ok/repo", "ok/other"), &[], b""), 404, Some("BLOB_UPLOAD_UNKNOWN")),
        case("bad digest-algorithm", raw("POST", "/v2/ok/repo/blobs/uploads/?digest-algorithm=crc32", &[], b""), 400, Some("DIGEST_INVALID")),
        case("bad mount digest", raw("POST", "/v2/ok/repo/blobs/uploads/?mount=xyz&from=ok/repo", &[], b""), 400, Some("DIGEST_INVALID")),
        case("bad mount from", raw("POST", &format!("/v2/ok/repo/blobs/uploads/?mount={blob}&from=BAD"), &[], b""), 400, Some("NAME_INVALID")),
        case("tags n negative", raw("GET", "/v2/ok/repo/tags/list?n=-1", &[], b""), 400, Some("BAD_REQUEST")),
        case("tags n overflow", raw("GET", "/v2/ok/repo/tags/list?n=184467440737095516160", &[], b""), 400, Some("BAD_REQUEST")),
        case("tags n text", raw("GET", "/v2/ok/repo/tags/list?n=ten", &[], b""), 400, Some("BAD_REQUEST")),
        case("catalog n negative", raw("GET", "/v2/_catalog?n=-5", &[], b""), 400, Some("BAD_REQUEST")),
        case("tags of unknown repo", raw("GET", "/v2/no/such/tags/list", &[], b""), 404, Some("NAME_UNKNOWN")),
        case("manifest unknown tag", raw("GET", "/v2/ok/repo/manifests/nope", &[], b""), 404, Some("MANIFEST_UNKNOWN")),
        // Nothing can exist under a reference that is neither tag nor digest: 404 on reads (as
        // the conformance tests expect), TAG_INVALID on a push.
        case("manifest bad tag", raw("GET", "/v2/ok/repo/manifests/-x", &[], b""), 404, Some("MANIFEST_UNKNOWN")),
        case("manifest invalid name (conformance)", raw("GET", "/v2/ok/repo/manifests/.INVALID_MANIFEST_NAME", &[], b""), 404, Some("MANIFEST_UNKNOWN")),
        case("manifest tag too long", raw("GET", &format!("/v2/ok/repo/manifests/{}", "t".repeat(129)), &[], b""), 404, Some("MANIFEST_UNKNOWN")),
        case("manifest delete bad tag", raw("DELETE", "/v2/ok/repo/manifests/-x", &[], b""), 404, Some("MANIFEST_UNKNOWN")),
        case("manifest put bad tag", raw("PUT", "/v2/ok/repo/manifests/.INVALID_MANIFEST_NAME", &[], br#"{"schemaVersion":2}"#), 400, Some("TAG_INVALID")),
        case("manifest invalid json", raw("PUT", "/v2/ok/repo/manifests/x", &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")], b"{"), 400, Some("MANIFEST_INVALID")),
        case("manifest json array", raw("PUT", "/v2/ok/repo/manifests/x", &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")], b"[1]"), 400, Some("MANIFEST_INVALID")),
        case("manifest not utf8", raw("PUT", "/v2/ok/repo/manifests/x", &[], &[0xff, 0xfe, 0x00]), 400, Some("MANIFEST_INVALID")),
        case("manifest schema 1", raw("PUT", "/v2/ok/repo/manifests/x", &[], br#"{"schemaVersion":1}"#), 400, Some("MANIFEST_INVALID")),
        case("manifest unknown media type", raw("PUT", "/v2/ok/repo/manifests/x", &[("Content-Type", "application/vnd.example+json")], br#"{"schemaVersion":2,"config":{"digest":"sha256:0","size":1},"layers":[]}"#), 400, Some("MANIFEST_INVALID")),
        case("manifest body media type unknown", raw("PUT", "/v2/ok/repo/manifests/x", &[], br#"{"schemaVersion":2,"mediaType":"text/plain"}"#), 400, Some("MANIFEST_INVALID")),
        case("manifest negative size", raw("PUT", "/v2/ok/repo/manifests/x", &[], format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"a/b","digest":"{blob}","size":-1}},"layers":[]}}"#).as_bytes()), 400, Some("MANIFEST_INVALID")),
        case("manifest bad layer digest", raw("PUT", "/v2/ok/repo/manifests/x", &[], format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"a/b","digest":"{blob}","size":4}},"layers":[{{"mediaType":"a/b","digest":"sha256:xyz","size":1}}]}}"#).as_bytes()), 400, Some("MANIFEST_INVALID")),
        case("manifest missing blob", raw("PUT", "/v2/ok/repo/manifests/x", &[], format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"a/b","digest":"{good_digest}","size":4}},"layers":[]}}"#).as_bytes()), 400, Some("MANIFEST_BLOB_UNKNOWN")),
        case("manifest digest mismatch", raw("PUT", &format!("/v2/ok/repo/manifests/{good_digest}"), &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")], &mbytes), 400, Some("DIGEST_INVALID")),
        case("manifest too large", raw("PUT", "/v2/ok/repo/manifests/x", &[], &vec![b' '; 65 * 1024]), 413, Some("SIZE_INVALID")),
        case("manifest bad ?tag", raw("PUT", &format!("/v2/ok/repo/manifests/{md}?tag=..."), &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")], &mbytes), 400, Some("MANIFEST_INVALID")),
        case("index with config", raw("PUT", "/v2/ok/repo/manifests/x", &[], br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"config":{"digest":"sha256:0","size":0}}"#), 400, Some("MANIFEST_INVALID")),
        case("delete unknown manifest", raw("DELETE", &format!("/v2/ok/repo/manifests/{good_digest}"), &[], b""), 404, Some("MANIFEST_UNKNOWN")),
        case("delete unknown blob", raw("DELETE", &format!("/v2/ok/repo/blobs/{good_digest}"), &[], b""), 404, Some("BLOB_UNKNOWN")),
        case("method not allowed on blob", raw("PUT", &format!("/v2/ok/repo/blobs/{blob}"), &[], b""), 405, Some("UNSUPPORTED")),
        case("method not allowed on tags", raw("DELETE", "/v2/ok/repo/tags/list", &[], b""), 405, Some("UNSUPPORTED")),
        case("method not allowed on catalog", raw("POST", "/v2/_catalog", &[], b""), 405, Some("UNSUPPORTED")),
        case("unknown method", raw("PROPFIND", "/v2/", &[], b""), 405, Some("UNSUPPORTED")),
        case("unknown v2 path", raw("GET", "/v2/ok/repo/nothing/here", &[], b""), 404, Some("NOT_FOUND")),
        case("path outside v2", raw("GET", "/../../etc/passwd", &[], b""), 404, Some("NOT_FOUND")),
        case("absolute-form target", raw("GET", "http://evil/v2/", &[], b""), 404, Some("NOT_FOUND")),
        case("NUL in path", b"GET /v2/a\0b/tags/list HTTP/1.1\r\n\r\n".to_vec(), 400, None),
        case("NUL in header", b"GET /v2/ HTTP/1.1\r\nX: a\0b\r\n\r\n".to_vec(), 400, None),
        case("huge header", raw("GET", "/v2/", &[("X-Big", &"x".repeat(20 * 1024))], b""), 431, None),
        case("bad content-length", b"POST /v2/ok/repo/blobs/uploads/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(), 400, None),
        case("content-length overflow", b"POST /v2/ok/repo/blobs/uploads/ HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(), 400, None),
        case("CL and TE", b"POST /v2/ok/repo/blobs/uploads/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400, None),
        case("bad chunk size", format!("POST /v2/ok/repo/blobs/uploads/?digest={good_digest} HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nffffffffffffffffff\r\n").into_bytes(), 400, None),
        case("body shorter than declared", format!("POST /v2/ok/repo/blobs/uploads/?digest={good_digest} HTTP/1.1\r\nContent-Length: 100\r\nConnection: close\r\n\r\nshort").into_bytes(), 0, None),
    ];
    cases.extend(more);
    assert!(cases.len() >= 100, "matrix has {} rows", cases.len());

    let mut failures = Vec::new();
    for c in &cases {
        // A request whose body never fully arrives gets no answer; the connection is closed
        // when the client half-closes or times out. Status 0 marks those rows.
        let wait = if c.status == 0 { Duration::from_millis(500) } else { Duration::from_secs(10) };
        let resp = n.raw(&c.request, wait);
        let (status, code) = parse(&resp);
        let ok = status == c.status && c.code.is_none_or(|want| code == want);
        if !ok || status >= 500 {
            failures.push(format!("{}: got {status} {code:?}, want {} {:?}", c.what, c.status, c.code));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // The node is healthy, the fixtures are intact, and nothing escaped the data directory.
    assert_eq!(n.get(&format!("/v2/ok/repo/blobs/{blob}")).body, b"blob");
    assert_eq!(n.get(&format!("/v2/ok/repo/manifests/{md}")).body, mbytes);
    let st = n.get(&up);
    assert_eq!(st.header("Range"), Some("0-3"), "the open upload was not disturbed");
    let entries: Vec<_> = std::fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("data")]);
    eprintln!("bad-input matrix: {} rows passed", cases.len());
}
