//! Blob files on local disk, content-addressed: `<root>/blobs/<alg>/<hh>/<hex>`.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_types::Digest;

/// The blob file store. Files only ever appear by an atomic rename of a fully written and
/// synced temp file, followed by a sync of the directory.
///
/// Striped per-digest locks serialise "check the index, then touch the file" steps of
/// publishing (rename + index commit) against garbage collection (index removal, then unlink):
/// without them a re-push of a digest GC is deleting could lose its fresh file.
pub struct BlobStore {
    root: PathBuf,
    locks: Vec<std::sync::Mutex<()>>,
    /// Bumped before every removal of a blob file: per-core caches of open files drop what they
    /// hold when it moves (`store::open_files`).
    removals: AtomicU64,
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl BlobStore {
    /// Open the store under `data_dir`, creating its directories.
    pub fn open(data_dir: &Path) -> io::Result<BlobStore> {
        let root = data_dir.to_path_buf();
        for d in ["blobs/sha256", "blobs/sha512", "uploads"] {
            fs::create_dir_all(root.join(d))?;
        }
        Ok(BlobStore {
            root,
            locks: (0..256).map(|_| std::sync::Mutex::new(())).collect(),
            removals: AtomicU64::new(0),
        })
    }

    /// Final path of a blob. Safe by construction: the digest's hex is validated.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("blobs").join(digest.algorithm().as_str()).join(&hex[..2]).join(hex)
    }

    /// The lock of `digest`'s stripe. Hold it only across synchronous work (never an await).
    pub fn lock(&self, digest: &Digest) -> std::sync::MutexGuard<'_, ()> {
        let b = u8::from_str_radix(&digest.hex()[..2], 16).unwrap_or(0) as usize;
        self.locks[b].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of in-progress uploads.
    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Open a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<File> {
        File::open(self.path(digest))
    }

    /// Move a fully written, synced file into place as `digest` and make the rename durable.
    pub fn publish(&self, tmp: &Path, digest: &Digest) -> io::Result<()> {
        let dest = self.path(digest);
        let shard = dest.parent().expect("blob path has a parent");
        if !shard.exists() {
            fs::create_dir_all(shard)?;
            sync_dir(shard.parent().expect("shard has a parent"))?;
        }
        fs::rename(tmp, &dest)?;
        sync_dir(shard)
    }

    /// The removal generation: changes whenever a blob file is about to be removed.
    pub fn removal_generation(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// Remove `digest`'s file (GC, eviction): the only way blob files go while serving, so
    /// cached descriptors are dropped (see `store::open_files`). A missing file is not an error.
    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        self.remove_path(&self.path(digest))
    }

    /// Remove a file under `blobs/` by path (GC's orphan files), like [`BlobStore::remove`].
    pub fn remove_path(&self, path: &Path) -> io::Result<()> {
        self.removals.fetch_add(1, Ordering::AcqRel);
        match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Whether a blob file exists (fsck; the index is the authority for visibility).
    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).exists()
    }
}

impl berth_tiering::LocalBlobs for BlobStore {
    fn path(&self, digest: &Digest) -> PathBuf {
        BlobStore::path(self, digest)
    }
    fn scratch_dir(&self) -> PathBuf {
        self.uploads_dir()
    }
    fn publish(&self, tmp: &Path, digest: &Digest) -> io::Result<()> {
        BlobStore::publish(self, tmp, digest)
    }
    fn remove(&self, digest: &Digest) -> io::Result<()> {
        BlobStore::remove(self, digest)
    }
}
