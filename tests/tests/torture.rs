//! kill -9 torture: 32 concurrent client streams (monolithic and chunked blob pushes, manifest
//! pushes with tags, tag deletes, pulls) against the real binary, killed with SIGKILL at random
//! moments, restarted, and checked: everything acknowledged is present and hashes to its digest,
//! every acknowledged tag points at its acknowledged manifest (or is gone if its delete was
//! acknowledged), interrupted chunked uploads resume from their reported Range, and
//! `berth fsck --verify` finds no error.
//!
//! Rounds: `TORTURE_ROUNDS` (default 5 for CI; the documented full run uses 50).

mod common;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const STREAMS: usize = 32;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[derive(Default)]
struct Model {
    blobs: Vec<(String, usize)>,
    manifests: HashMap<String, Vec<u8>>,
    /// tag -> Some(manifest) when set, None when its delete was acknowledged.
    tags: HashMap<String, Option<String>>,
    /// Tags whose last operation has no known outcome (in flight at the kill).
    uncertain_tags: Vec<String>,
    /// A chunked upload in flight at the kill: (location, full data, digest).
    open_upload: Option<(String, Vec<u8>, String)>,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build()
}

/// Status, headers and body of one raw exchange.
type RawResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// One request; Err(()) on a transport failure (the node died).
fn call(
    a: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<RawResponse, ()> {
    try_http(a, method, url, headers, body).map(|r| (r.status, r.headers, r.body)).map_err(|_| ())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn stream(base: String, id: usize, round: usize, model: Arc<Mutex<Model>>, stop: Arc<AtomicBool>) {
    let a = agent();
    let repo = format!("torture/s{id}");
    let mut rng = Rng((0x9E3779B97F4A7C15 ^ ((id as u64) << 20) ^ ((round as u64) << 8)) | 1);
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let op = rng.below(10);
        let res: Result<(), ()> = (|| {
            match op {
                0..=2 => {
                    let n = 1024 + rng.below(128 * 1024) as usize;
                    let data = rng.bytes(n);
                    let d = sha256(&data);
                    let (s, _, _) =
                        call(&a, "POST", &format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"), &[], Some(&data))?;
                    assert_eq!(s, 201);
                    model.lock().unwrap().blobs.push((d, data.len()));
                }
                3..=4 => {
                    let n = 3 * 64 * 1024 + rng.below(4096) as usize;
                    let data = rng.bytes(n);
                    let d = sha256(&data);
                    let (s, h, _) = call(&a, "POST", &format!("{base}/v2/{repo}/blobs/uploads/"), &[], None)?;
                    assert_eq!(s, 202);
                    let loc = format!("{base}{}", header(&h, "Location").unwrap());
                    model.lock().unwrap().open_upload = Some((loc.clone(), data.clone(), d.clone()));
                    let mut off = 0;
                    for c in data.chunks(64 * 1024) {
                        let cr = format!("{}-{}", off, off + c.len() - 1);
                        let (s, _, _) = call(&a, "PATCH", &loc, &[("Content-Range", &cr)], Some(c))?;
                        assert_eq!(s, 202);
                        off += c.len();
                    }
                    let (s, _, _) = call(&a, "PUT", &format!("{loc}?digest={d}"), &[], None)?;
                    assert_eq!(s, 201);
                    let mut m = model.lock().unwrap();
                    m.open_upload = None;
                    m.blobs.push((d, data.len()));
                }
                5..=6 => {
                    let (layers, config) = {
                        let m = model.lock().unwrap();
                        if m.blobs.len() < 2 {
                            return Ok(());
                        }
                        let n = m.blobs.len() as u64;
                        let l = m.blobs[rng.below(n) as usize].clone();
                        let c = m.blobs[rng.below(n) as usize].clone();
                        (vec![l], c)
                    };
                    let m = serde_json::to_vec(&serde_json::json!({
                        "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
                        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":config.0,"size":config.1},
                        "layers":layers.iter().map(|(d,s)| serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":d,"size":s})).collect::<Vec<_>>(),
                        "annotations":{"k":format!("{round}-{k}")}
                    })).unwrap();
                    let tag = format!("t{}", rng.below(8));
                    let md = sha256(&m);
                    model.lock().unwrap().uncertain_tags.push(tag.clone());
                    let (s, _, _) = call(
                        &a,
                        "PUT",
                        &format!("{base}/v2/{repo}/manifests/{tag}"),
                        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                        Some(&m),
                    )?;
                    assert_eq!(s, 201);
                    let mut mm = model.lock().unwrap();
                    mm.uncertain_tags.retain(|t| t != &tag);
                    mm.manifests.insert(md.clone(), m);
                    mm.tags.insert(tag, Some(md));
                }
                7 => {
                    let tag = format!("t{}", rng.below(8));
                    let known = model.lock().unwrap().tags.get(&tag).cloned().flatten().is_some();
                    if !known {
                        return Ok(());
                    }
                    model.lock().unwrap().uncertain_tags.push(tag.clone());
                    let (s, _, _) = call(&a, "DELETE", &format!("{base}/v2/{repo}/manifests/{tag}"), &[], None)?;
                    assert_eq!(s, 202);
                    let mut mm = model.lock().unwrap();
                    mm.uncertain_tags.retain(|t| t != &tag);
                    mm.tags.insert(tag, None);
                }
                _ => {
                    let pick = {
                        let m = model.lock().unwrap();
                        if m.blobs.is_empty() {
                            return Ok(());
                        }
                        m.blobs[rng.below(m.blobs.len() as u64) as usize].clone()
                    };
                    let (s, _, body) = call(&a, "GET", &format!("{base}/v2/{repo}/blobs/{}", pick.0), &[], None)?;
                    assert_eq!(s, 200);
                    assert_eq!(sha256(&body), pick.0, "pulled bytes hash to the digest");
                }
            }
            Ok(())
        })();
        if res.is_err() {
            return; // the node was killed
        }
    }
}

fn verify(base: &str, id: usize, model: &mut Model) {
    let a = agent();
    let repo = format!("torture/s{id}");
    for (d, size) in &model.blobs {
        let (s, _, body) = call(&a, "GET", &format!("{base}/v2/{repo}/blobs/{d}"), &[], None).unwrap();
        assert_eq!(s, 200, "acknowledged blob {d} of {repo} lost");
        assert_eq!(body.len(), *size);
        assert_eq!(&sha256(&body), d, "blob {d} corrupt");
    }
    for (d, bytes) in &model.manifests {
        let (s, _, body) = call(&a, "GET", &format!("{base}/v2/{repo}/manifests/{d}"), &[], None).unwrap();
        assert_eq!(s, 200, "acknowledged manifest {d} lost");
        assert_eq!(&body, bytes);
    }
    for (tag, want) in &model.tags {
        if model.uncertain_tags.contains(tag) {
            continue;
        }
        let (s, h, _) = call(&a, "GET", &format!("{base}/v2/{repo}/manifests/{tag}"), &[], None).unwrap();
        match want {
            Some(d) => {
                assert_eq!(s, 200, "tag {tag} lost");
                assert_eq!(header(&h, "Docker-Content-Digest"), Some(d.as_str()), "tag {tag} points elsewhere");
            }
            None => assert_eq!(s, 404, "deleted tag {tag} came back"),
        }
    }
    // Tags with an unknown outcome now have a known one: whatever the node says.
    for tag in std::mem::take(&mut model.uncertain_tags) {
        let (s, h, body) = call(&a, "GET", &format!("{base}/v2/{repo}/manifests/{tag}"), &[], None).unwrap();
        if s == 200 {
            let d = header(&h, "Docker-Content-Digest").unwrap().to_owned();
            assert_eq!(sha256(&body), d);
            model.manifests.insert(d.clone(), body);
            model.tags.insert(tag, Some(d));
        } else {
            assert_eq!(s, 404);
            model.tags.insert(tag, None);
        }
    }
    // An interrupted chunked upload resumes from the Range the node reports.
    if let Some((loc, data, d)) = model.open_upload.take() {
        let (s, h, _) = call(&a, "GET", &loc, &[], None).unwrap();
        if s == 204 {
            let range = header(&h, "Range").unwrap();
            let end: usize = range.split('-').nth(1).unwrap().parse().unwrap();
            let from = if range == "0-0" { 0 } else { end + 1 };
            assert!(from <= data.len());
            if from < data.len() {
                let cr = format!("{}-{}", from, data.len() - 1);
                let (s, _, b) = call(&a, "PATCH", &loc, &[("Content-Range", &cr)], Some(&data[from..])).unwrap();
                assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
            }
            let (s, _, b) = call(&a, "PUT", &format!("{loc}?digest={d}"), &[], None).unwrap();
            assert_eq!(s, 201, "resumed upload completes: {}", String::from_utf8_lossy(&b));
            model.blobs.push((d, data.len()));
        } else {
            // Either never created or completed just before the kill.
            assert_eq!(s, 404);
            let (s, _, _) = call(&a, "HEAD", &format!("{}/v2/torture/s{id}/blobs/{d}", base), &[], None).unwrap();
            if s == 200 {
                model.blobs.push((d, data.len()));
            }
        }
    }
}

#[test]
fn kill9_torture() {
    let rounds: usize = std::env::var("TORTURE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut b = Berth::start(&data, &[]);
    let models: Vec<Arc<Mutex<Model>>> = (0..STREAMS).map(|_| Arc::new(Mutex::new(Model::default()))).collect();
    let mut rng = Rng(0xDEADBEEF);
    let mut acked_total = 0;
    for round in 0..rounds {
        let base = format!("http://{}", b.addr);
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..STREAMS)
            .map(|i| {
                let (base, m, stop) = (base.clone(), models[i].clone(), stop.clone());
                std::thread::spawn(move || stream(base, i, round, m, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + rng.below(900)));
        b.kill9();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("a client stream saw a wrong answer");
        }
        b.restart();
        let base = format!("http://{}", b.addr);
        for (i, m) in models.iter().enumerate() {
            verify(&base, i, &mut m.lock().unwrap());
        }
        let total: usize = models.iter().map(|m| m.lock().unwrap().blobs.len()).sum();
        eprintln!("round {round}: {total} acknowledged blobs verified after kill -9");
        acked_total = total;
    }
    assert!(acked_total > 0, "the streams made progress");
    b.kill9();
    let out =
        std::process::Command::new(berth_bin()).args(["fsck", "--verify", "--data-dir"]).arg(&data).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "fsck found errors after {rounds} kill -9 rounds:\n{text}");
    assert!(text.contains(" 0 errors"), "{text}");
}
