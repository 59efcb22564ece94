//! S3 for the tiering tests: a real S3-compatible server (`moto_server`) on loopback, and a
//! TCP fault proxy in front of it to inject what no real server does on demand: an outage,
//! a slow link, a connection cut mid-body.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{free_port, have};

/// A moto S3 server, stopped on drop.
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    /// Start one, or `None` when moto is not installed (outside CI).
    pub fn start(log: &std::path::Path) -> Option<Moto> {
        if !have("moto_server") {
            return None;
        }
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start moto_server");
        let m = Moto { port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&m.url("/")).call().is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(m)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let r = ureq::put(&self.url(&format!("/{bucket}"))).call().expect("create bucket");
        assert_eq!(r.status(), 200);
    }

    /// An object's bytes, `None` when absent.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        // moto answers anonymous reads of private objects with 403, and checks only that an
        // Authorization header is present (it does not verify signatures).
        let auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request";
        match ureq::get(&self.url(&format!("/{bucket}/{key}"))).set("Authorization", auth).call() {
            Ok(r) => {
                let mut v = Vec::new();
                r.into_reader().read_to_end(&mut v).unwrap();
                Some(v)
            }
            Err(ureq::Error::Status(404, _)) => None,
            Err(e) => panic!("GET {key}: {e}"),
        }
    }

    /// Keys under a prefix.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = ureq::get(&self.url(&format!("/{bucket}"))).query("list-type", "2").query("prefix", prefix);
            if let Some(t) = &token {
                req = req.query("continuation-token", t);
            }
            let body = req.call().expect("list").into_string().unwrap();
            let mut rest = body.as_str();
            while let Some(i) = rest.find("<Key>") {
                let j = rest[i..].find("</Key>").unwrap() + i;
                out.push(rest[i + 5..j].to_string());
                rest = &rest[j..];
            }
            match body.find("<NextContinuationToken>") {
                Some(i) => {
                    let j = body[i..].find("</NextContinuationToken>").unwrap() + i;
                    token = Some(body[i + 23..j].to_string());
                }
                None => break,
            }
        }
        out
    }

    /// Open multipart uploads in the bucket.
    pub fn multipart_uploads(&self, bucket: &str) -> usize {
        let body =
            ureq::get(&self.url(&format!("/{bucket}?uploads"))).call().expect("list uploads").into_string().unwrap();
        body.matches("<UploadId>").count()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct ProxyState {
    target: u16,
    down: AtomicBool,
    /// Bytes per second from the server to the client; 0 = unlimited.
    rate: AtomicU64,
    /// Milliseconds every piece of data waits before it is relayed.
    delay_ms: AtomicU64,
    stop: AtomicBool,
    /// Flip the last byte of every server → client read that carries body bytes.
    corrupt: AtomicBool,
    /// HTTP requests seen client → server, and those for `/blobs/` (request lines counted).
    requests: AtomicU64,
    blob_requests: AtomicU64,
}

/// A TCP proxy to 127.0.0.1:`target` whose faults the test switches on and off.
pub struct FaultProxy {
    pub port: u16,
    state: Arc<ProxyState>,
}

impl FaultProxy {
    pub fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(ProxyState {
            target,
            down: AtomicBool::new(false),
            rate: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            corrupt: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            blob_requests: AtomicU64::new(0),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            while !st.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if st.down.load(Ordering::Relaxed) {
                            // An outage: the connection is refused as soon as it arrives.
                            let _ = client.shutdown(Shutdown::Both);
                            drop(client);
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(("127.0.0.1", st.target)) else { continue };
                        client.set_nonblocking(false).unwrap();
                        // Relay small writes at once (Nagle + delayed ACKs stall request/response
                        // protocols such as Postgres' by ~40 ms per exchange).
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        let (a, b) = (st.clone(), st.clone());
                        std::thread::spawn(move || pump(client, server, a, true, Dir::Up));
                        std::thread::spawn(move || pump(s2, c2, b, true, Dir::Down));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy { port, state }
    }

    /// Refuse new connections and cut every open one (S3 is down) or recover.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Hold every piece of data this long before relaying it (both directions): each
    /// request/response exchange takes at least twice this. 0 removes the delay.
    pub fn set_delay(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Limit server → client bandwidth (bytes/s); 0 removes the limit.
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.state.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Flip a byte in every piece of response body that passes, or stop.
    pub fn set_corrupt(&self, on: bool) {
        self.state.corrupt.store(on, Ordering::SeqCst);
    }

    /// HTTP requests that went through so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// HTTP requests for blobs (`/blobs/` in the request line) so far.
    pub fn blob_requests(&self) -> u64 {
        self.state.blob_requests.load(Ordering::SeqCst)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.down.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    /// Client to server (requests).
    Up,
    /// Server to client (responses).
    Down,
}

/// Count request lines (`… HTTP/1.1\r\n`) in client → server bytes; those naming `/blobs/` too.
fn count_requests(st: &ProxyState, chunk: &[u8]) {
    const END: &[u8] = b" HTTP/1.1\r\n";
    let mut line_start = 0;
    for i in 0..chunk.len().saturating_sub(END.len() - 1) {
        if chunk[i] == b'\n' {
            line_start = i + 1;
        }
        if &chunk[i..i + END.len()] == END {
            st.requests.fetch_add(1, Ordering::SeqCst);
            if chunk[line_start..i].windows(7).any(|w| w == b"/blobs/") {
                st.blob_requests.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, st: Arc<ProxyState>, limited: bool, dir: Dir) {
    from.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if st.down.load(Ordering::Relaxed) {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        };
        let delay = st.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        match dir {
            Dir::Up => count_requests(&st, &buf[..n]),
            // The last byte of every chunk that carries body bytes (not one ending a head).
            Dir::Down if st.corrupt.load(Ordering::Relaxed) && !buf[..n].ends_with(b"\r\n\r\n") => buf[n - 1] ^= 0x5a,
            Dir::Down => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        let rate = st.rate.load(Ordering::Relaxed);
        if limited && rate > 0 {
            std::thread::sleep(Duration::from_micros(n as u64 * 1_000_000 / rate));
        }
    }
}
