//! Crash and restart behaviour of the real binary: kill -9 mid-upload and resume; everything
//! acknowledged survives kill -9; SIGTERM shuts down cleanly.

mod common;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

#[test]
fn kill9_mid_upload_then_resume_and_pull() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Berth::start(&tmp.path().join("data"), &[]);
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let r = http("POST", &b.url("/v2/resume/me/blobs/uploads/"), &[], None);
    assert_eq!(r.status, 202);
    let loc = r.header("Location").unwrap().to_owned();
    let first = 1024 * 1024;
    let r = http("PATCH", &b.url(&loc), &[("Content-Range", &format!("0-{}", first - 1))], Some(&data[..first]));
    assert_eq!(r.status, 202);
    // A second chunk that is cut off by the crash half-way.
    let mut s = TcpStream::connect(&b.addr).unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Range: {first}-{}\r\nContent-Length: {first}\r\n\r\n",
        2 * first - 1
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&data[first..first + 300_000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    b.kill9();
    drop(s);
    b.restart();
    // The session survived; its range says where to resume.
    let st = http("GET", &b.url(&loc), &[], None);
    assert_eq!(st.status, 204);
    let range = st.header("Range").unwrap().to_owned();
    let end: usize = range.split('-').nth(1).unwrap().parse().unwrap();
    let resume = end + 1;
    assert!(resume >= first && resume <= first + 300_000, "resume offset {resume}");
    let r = http(
        "PATCH",
        &b.url(&loc),
        &[("Content-Range", &format!("{resume}-{}", data.len() - 1))],
        Some(&data[resume..]),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let d = sha256(&data);
    let r = http("PUT", &b.url(&format!("{loc}?digest={d}")), &[], None);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let got = http("GET", &b.url(&format!("/v2/resume/me/blobs/{d}")), &[], None);
    assert_eq!(got.body, data);
}

#[test]
fn acknowledged_writes_survive_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Berth::start(&tmp.path().join("data"), &[]);
    let mut acked = Vec::new();
    for i in 0..20 {
        let layer = format!("layer {i} ").repeat(1000).into_bytes();
        let ld = sha256(&layer);
        assert_eq!(http("POST", &b.url(&format!("/v2/k/blobs/uploads/?digest={ld}")), &[], Some(&layer)).status, 201);
        let cfg = b"{}".to_vec();
        let cd = sha256(&cfg);
        http("POST", &b.url(&format!("/v2/k/blobs/uploads/?digest={cd}")), &[], Some(&cfg));
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":2},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":ld,"size":layer.len()}]
        }))
        .unwrap();
        let r = http(
            "PUT",
            &b.url(&format!("/v2/k/manifests/t{i}")),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            Some(&m),
        );
        assert_eq!(r.status, 201);
        acked.push((format!("t{i}"), sha256(&m), ld, layer));
    }
    b.kill9();
    b.restart();
    for (tag, md, ld, layer) in acked {
        let m = http("GET", &b.url(&format!("/v2/k/manifests/{tag}")), &[], None);
        assert_eq!(m.status, 200);
        assert_eq!(sha256(&m.body), md);
        let l = http("GET", &b.url(&format!("/v2/k/blobs/{ld}")), &[], None);
        assert_eq!(sha256(&l.body), ld);
        assert_eq!(l.body, layer);
    }
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Berth::start(&tmp.path().join("data"), &[]);
    let d = sha256(b"x");
    assert_eq!(http("POST", &b.url(&format!("/v2/t/blobs/uploads/?digest={d}")), &[], Some(b"x")).status, 201);
    assert_eq!(b.terminate(), Some(0));
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(log.contains("stopped"), "{log}");
    b.restart();
    assert_eq!(http("GET", &b.url(&format!("/v2/t/blobs/{d}")), &[], None).body, b"x");
}
