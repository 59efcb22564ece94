//! Fill a data directory's index for the GC benchmark (records only, no blob files):
//! `cargo run --release -p berth-bench --example fill_gc -- DATA_DIR BLOBS MANIFESTS`.
//! Every manifest references 8 blobs; half of the manifests are tagged; the blobs beyond
//! 8 × MANIFESTS are referenced by nothing. See bench/gc.sh.
use berth_index::{Index, ManifestRecord};
use berth_types::{Algorithm, Digest, RepoName, Tag};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let blobs: u64 = args[2].parse().unwrap();
    let manifests: u64 = args[3].parse().unwrap();
    let idx = Index::open(&dir.join("index"), false).unwrap();
    let t = std::time::Instant::now();
    let repo_of = |i: u64| -> RepoName { format!("bench/gc{}", i % 100).parse().unwrap() };
    let blob = |i: u64| Digest::of(Algorithm::Sha256, &i.to_le_bytes());
    for i in 0..blobs {
        // Link each blob into the repository of the manifest that will reference it.
        idx.commit_blob(&repo_of(i / 8), &blob(i), 1000 + i % 5000, None).unwrap();
    }
    for m in 0..manifests {
        let repo = repo_of(m);
        let refs: Vec<Digest> = (0..8).map(|k| blob((m * 8 + k) % blobs)).collect();
        for d in &refs {
            idx.link_blob(&repo, d).unwrap();
        }
        let bytes = format!("{{\"manifest\":{m}}}").into_bytes();
        let rec = ManifestRecord {
            absent: Vec::new(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject: None,
            blobs: refs,
            manifests: vec![],
            annotations: None,
            pushed_at_ms: 1,
        };
        let tags: Vec<Tag> = if m % 2 == 0 { vec![format!("t{m}").parse().unwrap()] } else { vec![] };
        let out = idx.put_manifest(&repo, &Digest::of(Algorithm::Sha256, &bytes), &rec, &bytes, &tags).unwrap();
        assert!(out.missing.is_none());
    }
    idx.flush().unwrap();
    eprintln!("{blobs} blobs, {manifests} manifests in {:.1} s", t.elapsed().as_secs_f64());
}
