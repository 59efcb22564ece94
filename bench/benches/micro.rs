//! Micro-benchmarks: digest hashing by chunk size, request parsing (head + routing), index
//! lookups on a large index, and blob commit.
//!
//! `BENCH_BLOBS` sets the index size (default 1,000,000; CI uses a small value with `--quick`
//! style settings through `cargo bench -- --warm-up-time 0.1 --measurement-time 0.2`).

use std::hint::black_box;

use berth_index::{Index, ManifestRecord};
use berth_types::{Algorithm, Digest, RepoName, Tag};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("digest");
    for size in [4 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024] {
        let data = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            g.bench_function(format!("{}/{}KiB", alg.as_str(), size / 1024), |b| {
                b.iter(|| {
                    let mut h = alg.hasher();
                    h.update(black_box(&data));
                    h.finish()
                })
            });
        }
    }
    g.finish();
}

fn parsing(c: &mut Criterion) {
    let head = b"GET /v2/library/some/app/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 HTTP/1.1\r\nHost: registry.local:5000\r\nUser-Agent: docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0 os/linux arch/amd64\r\nAccept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json\r\nAuthorization: Basic YWRtaW46c2VjcmV0\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n";
    let mut g = c.benchmark_group("parse");
    g.bench_function("http_head", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(black_box(head)).unwrap()
        })
    });
    g.bench_function("route_blob", |b| {
        b.iter(|| {
            berth_node::routes::route(black_box(
                "/v2/library/some/app/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ))
            .unwrap()
        })
    });
    g.bench_function("route_manifest_tag", |b| {
        b.iter(|| berth_node::routes::route(black_box("/v2/library/some/app/manifests/v1.2.3")).unwrap())
    });
    g.bench_function("manifest_validate", |b| {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":1}},"layers":[{}]}}"#,
            (0..5).map(|_| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":1}}"#)).collect::<Vec<_>>().join(",")
        );
        b.iter(|| berth_node::manifest::parse(black_box(m.as_bytes()), Some("application/vnd.oci.image.manifest.v1+json")).unwrap())
    });
    g.finish();
}

fn digest_n(i: u64) -> Digest {
    Digest::of(Algorithm::Sha256, &i.to_le_bytes())
}

fn index(c: &mut Criterion) {
    let n: u64 = std::env::var("BENCH_BLOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(dir.path(), false).unwrap();
    let repo: RepoName = "bench/repo".parse().unwrap();
    let started = std::time::Instant::now();
    for i in 0..n {
        idx.commit_blob(&repo, &digest_n(i), 1000 + i, None).unwrap();
    }
    let tags: Vec<Tag> = (0..100).map(|i| format!("v{i}").parse().unwrap()).collect();
    let rec = ManifestRecord {
        absent: Vec::new(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        subject: None,
        blobs: vec![digest_n(0), digest_n(1)],
        manifests: vec![],
        annotations: None,
        pushed_at_ms: 0,
    };
    let mbytes = vec![b'{'; 1500];
    let md = Digest::of(Algorithm::Sha256, &mbytes);
    idx.put_manifest(&repo, &md, &rec, &mbytes, &tags).unwrap();
    eprintln!("index: loaded {n} blobs in {:.1} s", started.elapsed().as_secs_f64());
    let mut g = c.benchmark_group(format!("index_{n}_blobs"));
    let mut i = 0u64;
    g.bench_function("blob_stat", |b| {
        b.iter(|| {
            i = (i * 6364136223846793005 + 1442695040888963407) % n;
            idx.blob(&digest_n(i)).unwrap().unwrap()
        })
    });
    g.bench_function("repo_has_blob", |b| b.iter(|| idx.repo_has_blob(&repo, &digest_n(black_box(n / 2))).unwrap()));
    let tag: Tag = "v42".parse().unwrap();
    g.bench_function("tag_resolve", |b| b.iter(|| idx.tag(&repo, black_box(&tag)).unwrap().unwrap()));
    g.bench_function("manifest_get", |b| b.iter(|| idx.manifest(&repo, black_box(&md)).unwrap().unwrap()));
    let mut k = n;
    g.bench_function("blob_commit", |b| {
        b.iter_batched(
            || {
                k += 1;
                digest_n(k)
            },
            |d| idx.commit_blob(&repo, &d, 1, None).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// What a local blob GET does before it can send: before the open-file cache (link check,
/// blob record read and decode, `open` and `close` of the file) and after (link check, a
/// per-core cache hit). Issue "Performance, round 2".
fn blob_lookup(c: &mut Criterion) {
    use berth_node::store::open_files::{self, OpenBlob};
    use berth_node::store::BlobStore;
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir.path().join("index"), false).unwrap();
    let blobs = BlobStore::open(dir.path()).unwrap();
    let repo: RepoName = "bench/repo".parse().unwrap();
    let data = vec![7u8; 64 * 1024];
    let d = Digest::of(Algorithm::Sha256, &data);
    let tmp = dir.path().join("uploads/x");
    std::fs::write(&tmp, &data).unwrap();
    blobs.publish(&tmp, &d).unwrap();
    idx.commit_blob(&repo, &d, data.len() as u64, None).unwrap();
    let mut g = c.benchmark_group("blob_get_lookup_64KiB");
    g.bench_function("link_record_open", |b| {
        b.iter(|| {
            assert!(idx.repo_has_blob(&repo, black_box(&d)).unwrap());
            let meta = idx.blob(&d).unwrap().unwrap();
            let f = blobs.open_blob(&d).unwrap();
            (meta.size, f)
        })
    });
    let generation = blobs.removal_generation();
    let f = std::rc::Rc::new(blobs.open_blob(&d).unwrap());
    open_files::put(&d, OpenBlob { file: f, size: data.len() as u64 }, generation, generation, 1024);
    g.bench_function("link_cached_file", |b| {
        b.iter(|| {
            assert!(idx.repo_has_blob(&repo, black_box(&d)).unwrap());
            open_files::get(&d, blobs.removal_generation()).unwrap()
        })
    });
    g.finish();
}

/// A read-through fill (S3 tier, pull-through upstream) taking a 4 MiB body in the 16 KiB
/// pieces an HTTP client hands out: write to the scratch file, hash, tell readers. ~890 MiB/s
/// here, the same whether readers are told per piece or per 256 KiB (920 MiB/s): with nobody
/// waiting an announcement is free. The interval matters to the readers (a cross-thread wake-up
/// and a `sendfile` per announcement), which `bench/pull_through.py` shows: 0.29x → 0.55x.
fn fill_write(c: &mut Criterion) {
    use berth_tiering::Fills;
    let dir = tempfile::tempdir().unwrap();
    let body = vec![5u8; 4 << 20];
    let digest = Digest::of(Algorithm::Sha256, &body);
    let fills = std::sync::Arc::new(Fills::default());
    let mut g = c.benchmark_group("fill");
    g.throughput(criterion::Throughput::Bytes(body.len() as u64));
    g.bench_function("write_4MiB_in_16KiB_pieces", |b| {
        b.iter(|| {
            let (_fill, w) = fills.join_or_start(dir.path(), "bench", &digest, body.len() as u64).unwrap();
            let mut w = w.unwrap();
            w.started();
            for piece in body.chunks(16 * 1024) {
                w.write(piece).unwrap();
            }
            // Dropped unfinished: the fill fails and its file goes (verification is not measured).
            drop(w);
        })
    });
    g.finish();
}

/// A bearer token check as each request makes it: verified once, then found in the core's
/// cache (security round 2 keys the cache by the token's SHA-256 within a byte budget).
fn tokens(c: &mut Criterion) {
    use berth_node::auth::token::{ResourceActions, TokenConfig, Tokens};
    let dir = tempfile::tempdir().unwrap();
    let t = Tokens::new(&TokenConfig::default(), dir.path()).unwrap();
    let access = ["library/app", "library/base", "team/tools"]
        .iter()
        .map(|r| ResourceActions { kind: "repository".into(), name: (*r).into(), actions: vec!["pull".into()] })
        .collect();
    let (token, _) = t.issue("alice", access).unwrap();
    t.verify(&token).unwrap();
    let mut g = c.benchmark_group("token");
    g.bench_function("verify_cached", |b| b.iter(|| t.verify(black_box(&token)).unwrap()));
    g.finish();
}

criterion_group!(benches, hashing, parsing, index, blob_lookup, fill_write, tokens);
criterion_main!(benches);
