//! Fill a data directory's index with N blob records (no files) for the restart benchmark:
//! `cargo run --release -p berth-bench --example fill_index -- DATA_DIR N`, then time
//! `berth serve --data-dir DATA_DIR` until /healthz answers.
use berth_index::Index;
use berth_types::{Algorithm, Digest, RepoName};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let n: u64 = args[2].parse().unwrap();
    let idx = Index::open(&dir.join("index"), false).unwrap();
    let repo: RepoName = "bench/restart".parse().unwrap();
    let t = std::time::Instant::now();
    for i in 0..n {
        idx.commit_blob(&repo, &Digest::of(Algorithm::Sha256, &i.to_le_bytes()), i, None).unwrap();
    }
    idx.flush().unwrap();
    eprintln!("{n} blobs in {:.1} s", t.elapsed().as_secs_f64());
}
