//! A scripted HTTP server for faults no real server produces on purpose: a hostile upstream or
//! token realm (credential-stealing realms, inward redirects), or one that pauses mid-body.

use std::sync::Arc;
use std::time::Duration;

/// Marks a pause in a scripted answer.
pub const PAUSE: &str = "\u{0}pause\u{0}";

/// A scripted HTTP server playing a hostile upstream (or a realm it names): it answers every
/// request with `answer(head)` and records each request head. A fake is the point here: no
/// real registry sends credentials-stealing realms or inward redirects on purpose.
pub struct Scripted {
    pub port: u16,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Scripted {
    pub fn start(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> Scripted {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (h, answer) = (heads.clone(), Arc::new(answer));
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                let (h, answer) = (h.clone(), answer.clone());
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    loop {
                        let mut head = Vec::new();
                        let mut b = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            match s.read(&mut b) {
                                Ok(1) => head.push(b[0]),
                                _ => return,
                            }
                        }
                        let head = String::from_utf8_lossy(&head).into_owned();
                        h.lock().unwrap().push(head.clone());
                        // `PAUSE` in an answer: what precedes it is sent, then a 2 s pause.
                        for (i, part) in answer(&head).split(PAUSE).enumerate() {
                            if i > 0 {
                                std::thread::sleep(Duration::from_secs(2));
                            }
                            if s.write_all(part.as_bytes()).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Scripted { port, heads }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

pub fn reply(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut r = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}
