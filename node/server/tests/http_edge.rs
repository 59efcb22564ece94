//! The HTTP layer under odd and hostile input: framing, pipelining, limits, slow clients, auth.

mod common;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn pipelined_requests_on_one_connection() {
    let n = TestNode::start();
    let d = n.push_blob("pipe", b"0123456789");
    let one = format!("GET /v2/pipe/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n");
    let req = format!("{one}{one}GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let out = n.raw(req.as_bytes(), Duration::from_secs(5));
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
    assert_eq!(out.matches("0123456789").count(), 2);
}

#[test]
fn chunked_transfer_encoding_upload() {
    let n = TestNode::start();
    let d = sha256(b"hello chunked world");
    let body = "5\r\nhello\r\n9;ext=1\r\n chunked \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n";
    let req = format!(
        "POST /v2/te/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
    );
    let out = n.raw(req.as_bytes(), Duration::from_secs(5));
    assert_eq!(status_of(&out), 201, "{out}");
    assert_eq!(n.get(&format!("/v2/te/blobs/{d}")).body, b"hello chunked world");
}

#[test]
fn malformed_chunked_body_is_400_and_nothing_kept() {
    let n = TestNode::start();
    let d = sha256(b"x");
    let req = format!(
        "POST /v2/te/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nx\r\n0\r\n\r\n"
    );
    let out = n.raw(req.as_bytes(), Duration::from_secs(5));
    assert_eq!(status_of(&out), 400, "{out}");
    assert_eq!(n.get(&format!("/v2/te/blobs/{d}")).status, 404);
}

#[test]
fn expect_100_continue() {
    let n = TestNode::start();
    let d = sha256(b"body after continue");
    let mut s = TcpStream::connect(n.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "POST /v2/ex/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\nExpect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    let k = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..k]).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(b"body after continue").unwrap();
    let k = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..k]).starts_with("HTTP/1.1 201"));
}

#[test]
fn malformed_heads() {
    let n = TestNode::start();
    let cases: &[(&[u8], u16)] = &[
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v2/ HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"GET /v2/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /v2/x/blobs/uploads/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /v2/x/blobs/uploads/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"GET /v2/\0/tags/list HTTP/1.1\r\n\r\n", 400),
        (b"GET /v2/../../etc/passwd HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
        (b"GET /v2/a/../b/tags/list HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        (b"GET /v2/%2e%2e/tags/list HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        (b"GET /v2/a//b/tags/list HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        (b"GET /v2/UPPER/tags/list HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        ("GET /v2/\u{e9}t\u{e9}/tags/list HTTP/1.1\r\nConnection: close\r\n\r\n".as_bytes(), 400),
        (b"BREW /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n", 405),
        (b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
    ];
    for (req, want) in cases {
        let out = n.raw(req, Duration::from_secs(5));
        assert_eq!(status_of(&out), *want, "{:?} -> {out}", String::from_utf8_lossy(req));
    }
    // Nothing was created outside the data directory, and the node still serves.
    assert_eq!(n.get("/v2/").status, 200);
}

#[test]
fn oversize_head_gets_431() {
    let n = TestNode::start_with(|c| c.limits.max_head_bytes = 8 * 1024);
    let big = "x".repeat(16 * 1024);
    let out = n.raw(format!("GET /v2/ HTTP/1.1\r\nX-Big: {big}\r\n\r\n").as_bytes(), Duration::from_secs(5));
    assert_eq!(status_of(&out), 431, "{out}");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let out = n.raw(format!("GET /v2/ HTTP/1.1\r\n{many}\r\n").as_bytes(), Duration::from_secs(5));
    assert_eq!(status_of(&out), 431, "{out}");
}

#[test]
fn slow_client_is_cut_off_and_others_are_served() {
    let n = TestNode::start_with(|c| {
        c.limits.head_timeout_secs = 1;
        c.limits.io_timeout_secs = 1;
    });
    // Slowloris: a head that never completes.
    let mut slow = TcpStream::connect(n.addr).unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nX-Slow: ").unwrap();
    // A body that stalls.
    let mut stall = TcpStream::connect(n.addr).unwrap();
    stall
        .write_all(
            format!("POST /v2/s/blobs/uploads/?digest={} HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc", sha256(b"x"))
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(n.get("/v2/").status, 200, "other clients are served meanwhile");
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(8), "slow head closed by the server");
    stall.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let _ = stall.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(8), "stalled body closed by the server");
    assert_eq!(std::fs::read_dir(n.dir.path().join("uploads")).unwrap().count(), 0);
}

#[test]
fn idle_keepalive_connection_is_closed() {
    let n = TestNode::start_with(|c| c.limits.idle_timeout_secs = 1);
    let mut s = TcpStream::connect(n.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn health_ready_metrics() {
    let n = TestNode::start();
    assert_eq!(n.get("/healthz").status, 200);
    assert_eq!(n.get("/readyz").status, 200);
    n.get("/v2/");
    let m = n.metrics();
    assert!(m.contains("berth_http_requests_total{endpoint=\"base\",method=\"GET\",status=\"200\"}"), "{m}");
    assert!(m.contains("berth_http_request_duration_seconds_bucket"));
    assert!(m.contains("berth_upload_sessions"));
    n.push_blob("m", b"12345");
    let m = n.metrics();
    // Not on the public port by default.
    assert_eq!(n.get("/metrics").status, 404);
    assert!(m.contains("berth_store_blobs 1\n"), "{m}");
    assert!(m.contains("berth_store_blob_bytes 5\n"), "{m}");
}

#[test]
fn http10_closes_and_request_ids_are_returned() {
    let n = TestNode::start();
    let out = n.raw(b"GET /v2/ HTTP/1.0\r\n\r\n", Duration::from_secs(5));
    assert!(out.contains("Connection: close"), "{out}");
    assert!(out.contains("X-Request-Id: "));
}

// --------------------------------------------------------------------- auth

fn with_auth(anon: bool) -> TestNode {
    let hash = bcrypt::hash("secret", 4).unwrap();
    TestNode::start_with(move |c| {
        c.auth.users = vec![berth_node::config::User { name: "admin".into(), bcrypt: hash }];
        c.auth.realm = "test-realm".into();
        c.auth.anonymous_pull = anon;
    })
}

#[test]
fn basic_auth_required() {
    let n = with_auth(false);
    let r = n.get("/v2/");
    assert_eq!((r.status, r.error_code().as_str()), (401, "UNAUTHORIZED"));
    assert_eq!(r.header("WWW-Authenticate"), Some("Basic realm=\"test-realm\""));
    let good = basic("admin", "secret");
    assert_eq!(n.req("GET", "/v2/", &[("Authorization", &good)], None).status, 200);
    for bad in [basic("admin", "wrong"), basic("nobody", "secret"), "Bearer x".into(), "Basic !!!".into()] {
        assert_eq!(n.req("GET", "/v2/", &[("Authorization", &bad)], None).status, 401, "{bad}");
    }
    assert_eq!(n.get("/v2/_catalog").status, 401);
    assert_eq!(n.get("/healthz").status, 200, "health is not behind auth");
    let d = sha256(b"x");
    let r = n.req("POST", &format!("/v2/a/blobs/uploads/?digest={d}"), &[("Authorization", &good)], Some(b"x"));
    assert_eq!(r.status, 201);
}

#[test]
fn anonymous_pull() {
    let n = with_auth(true);
    let good = basic("admin", "secret");
    let d = sha256(b"pub");
    n.req("POST", &format!("/v2/a/blobs/uploads/?digest={d}"), &[("Authorization", &good)], Some(b"pub"));
    assert_eq!(n.get(&format!("/v2/a/blobs/{d}")).status, 200);
    assert_eq!(n.get("/v2/").status, 401, "base still challenges so docker login works");
    let r = n.req("POST", "/v2/a/blobs/uploads/", &[], None);
    assert_eq!(r.status, 401, "push needs credentials");
}

#[test]
fn epoll_fallback_driver_serves_the_same_api() {
    let n = TestNode::start_with(|c| c.io_driver = berth_node::config::IoDriver::Epoll);
    assert_eq!(n.node.as_ref().unwrap().driver, "epoll");
    let data = vec![7u8; 3 * 1024 * 1024];
    let d = n.push_blob("ep", &data);
    assert_eq!(n.get(&format!("/v2/ep/blobs/{d}")).body, data);
    let r = n.req("GET", &format!("/v2/ep/blobs/{d}"), &[("Range", "bytes=1048576-")], None);
    assert_eq!(r.body.len(), 2 * 1024 * 1024);
}

#[test]
fn large_blob_streams_through_sendfile() {
    let n = TestNode::start();
    if n.node.as_ref().unwrap().driver != "io_uring" {
        eprintln!("io_uring unavailable; covered by the epoll test");
    }
    let data: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i >> 8) as u8 ^ i as u8).collect();
    let d = n.push_blob("big", &data);
    let r = n.get(&format!("/v2/big/blobs/{d}"));
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data);
}

#[test]
fn blob_bodies_are_sent_zero_copy_and_access_is_recorded() {
    let n = TestNode::start();
    let data = vec![42u8; 5_000_000];
    let d = n.push_blob("zc", &data);
    let metric = |n: &TestNode| -> u64 {
        let m = n.metrics();
        m.lines()
            .find(|l| l.starts_with("berth_http_response_sendfile_bytes_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = metric(&n);
    assert_eq!(n.get(&format!("/v2/zc/blobs/{d}")).body.len(), data.len());
    n.req("GET", &format!("/v2/zc/blobs/{d}"), &[("Range", "bytes=0-999")], None);
    assert_eq!(metric(&n) - before, 5_001_000, "every blob byte went through sendfile");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let idx = &n.node.as_ref().unwrap().app.index;
    let at = idx.last_access(&d.parse().unwrap()).unwrap();
    assert!(at.is_some(), "access time recorded by the per-core flusher");
}
