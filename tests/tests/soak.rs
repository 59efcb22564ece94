//! Soak: mixed push/pull load for `SOAK_SECS` (60 by default, as in CI; the documented long run
//! uses 600) against the real binary. Resident memory, open file descriptors and error counts
//! are sampled after a warm-up and at the end; they must stay flat and errors must be zero.

mod common;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn soak_mixed_load_stays_flat() {
    let secs: u64 = std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let tmp = tempfile::tempdir().unwrap();
    let b = Berth::start(&tmp.path().join("data"), &[]);
    let base = format!("http://{}", b.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (base, stop, ops, errors) = (base.clone(), stop.clone(), ops.clone(), errors.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
                let mut i = 0u64;
                let mut pushed: Vec<String> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let ok = if i.is_multiple_of(3) || pushed.is_empty() {
                        // Push: a new blob (bounded set per worker so disk use stays bounded).
                        let data: Vec<u8> =
                            (0..(64 * 1024 + (i % 7) * 4096)).map(|j| (j ^ (w << 5) ^ (i % 50)) as u8).collect();
                        let d = sha256(&data);
                        let r = agent.post(&format!("{base}/v2/soak/w{w}/blobs/uploads/?digest={d}")).send_bytes(&data);
                        if r.is_ok() && !pushed.contains(&d) {
                            pushed.push(d);
                        }
                        r.is_ok()
                    } else {
                        let d = &pushed[(i as usize) % pushed.len()];
                        match agent.get(&format!("{base}/v2/soak/w{w}/blobs/{d}")).call() {
                            Ok(r) => {
                                let mut body = Vec::new();
                                std::io::Read::read_to_end(&mut r.into_reader(), &mut body).is_ok()
                                    && &sha256(&body) == d
                            }
                            Err(_) => false,
                        }
                    };
                    ops.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let warmup = Duration::from_secs((secs / 6).clamp(2, 60));
    std::thread::sleep(warmup);
    let (rss0, fd0, ops0) = (rss_kib(b.pid()), fds(b.pid()), ops.load(Ordering::Relaxed));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs).saturating_sub(warmup));
    let (rss1, fd1, ops1) = (rss_kib(b.pid()), fds(b.pid()), ops.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let rate = (ops1 - ops0) as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "soak {secs}s: {ops1} requests ({rate:.0}/s measured window), {} errors; RSS {rss0} -> {rss1} KiB; fds {fd0} -> {fd1}",
        errors.load(Ordering::Relaxed)
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    assert!(rss1 <= rss0 + rss0 / 2 + 16 * 1024, "RSS grew from {rss0} to {rss1} KiB");
    assert!(fd1 <= fd0 + 16, "fds grew from {fd0} to {fd1}");
}
