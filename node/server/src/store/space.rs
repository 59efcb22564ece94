//! Free space on the data directory's disk: a floor below which blob uploads are refused (507)
//! so the index always has room to write, and a reserve file released at start so a node
//! killed on a full disk can open its index again (RocksDB aborts when its recovery writes fail).

use std::path::{Path, PathBuf};

use berth_types::{ErrorKind, OciError};

/// The reserve file's name in the data directory.
const RESERVE: &str = "space.reserve";

/// Below this many free bytes the index cannot be opened safely: start-up stops with a message.
const MIN_TO_START: u64 = 2 << 20;

/// Size and free bytes (for unprivileged users) of the filesystem holding `dir`.
pub fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a zeroed out-parameter of the right type.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
}

/// The floor uploads keep free.
#[derive(Debug)]
pub struct Space {
    dir: PathBuf,
    floor: u64,
}

impl Space {
    /// `min_free_bytes` for the disk holding `dir`, at most a tenth of the filesystem.
    pub fn new(dir: &Path, min_free_bytes: u64) -> Space {
        let size = disk_space(dir).map_or(u64::MAX, |(size, _)| size);
        Space { dir: dir.to_path_buf(), floor: min_free_bytes.min(size / 10) }
    }

    /// The floor in force.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Refuse (507) an upload that would take free space below the floor (`need` more bytes
    /// announced).
    pub fn check(&self, need: u64) -> Result<(), OciError> {
        let Some((_, free)) = disk_space(&self.dir) else { return Ok(()) };
        if free.saturating_sub(need) < self.floor {
            return Err(OciError::new(ErrorKind::InsufficientStorage).msg(format!(
                "the registry's disk is full ({} free, {} kept for its index: storage.min_free_bytes)",
                mib(free),
                mib(self.floor)
            )));
        }
        Ok(())
    }
}

/// Before the index opens: release the reserve if the disk is nearly full, and refuse to start
/// (one line, no RocksDB abort) if even that leaves too little room.
pub fn before_open(dir: &Path, floor: u64) -> Result<(), String> {
    let Some((_, free)) = disk_space(dir) else { return Ok(()) };
    let reserve = dir.join(RESERVE);
    let mut free = free;
    if free < floor.max(MIN_TO_START) && reserve.exists() {
        let len = std::fs::metadata(&reserve).map_or(0, |m| m.len());
        if std::fs::remove_file(&reserve).is_ok() {
            tracing::warn!(
                freed = len,
                "the data directory's disk is nearly full: released the space reserve so the index can open"
            );
            free = disk_space(dir).map_or(free, |(_, f)| f);
        }
    }
    if free < MIN_TO_START {
        return Err(format!(
            "the disk holding {} is full ({} free, at least {} needed to open the index): \
             free space there or grow the disk, then start again",
            dir.display(),
            mib(free),
            mib(MIN_TO_START)
        ));
    }
    Ok(())
}

/// After the index opened: make sure the reserve exists (`bytes`, at most a twentieth of the
/// filesystem), if there is room for it above the floor.
pub fn ensure_reserve(dir: &Path, bytes: u64, floor: u64) {
    let Some((size, free)) = disk_space(dir) else { return };
    let bytes = bytes.min(size / 20);
    let path = dir.join(RESERVE);
    if bytes == 0 || path.metadata().is_ok_and(|m| m.len() >= bytes) || free < bytes + floor {
        return;
    }
    let made = std::fs::File::create(&path).and_then(|f| {
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate on a file descriptor we own; allocates real blocks (not sparse).
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, bytes as libc::off_t) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f.sync_all()
    });
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        tracing::warn!(error = %e, "cannot create the space reserve file");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_floor_is_at_most_a_tenth_of_the_disk() {
        let d = tempfile::tempdir().unwrap();
        let s = super::Space::new(d.path(), u64::MAX);
        let (size, _) = super::disk_space(d.path()).unwrap();
        assert_eq!(s.floor(), size / 10);
        assert!(super::Space::new(d.path(), 0).check(0).is_ok());
        let e = super::Space::new(d.path(), size / 10).check(u64::MAX).unwrap_err();
        assert_eq!(e.kind, berth_types::ErrorKind::InsufficientStorage);
    }
}
