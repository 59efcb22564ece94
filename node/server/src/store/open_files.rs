//! A per-core cache of open blob files with their sizes: a hit serves a local blob after the
//! repository link check alone — no blob record read and decoded from the index, no `open`
//! (path walk) and no `close` per request. Issue "Performance, round 2": 64 KiB blob GETs spent
//! their time in syscalls, not in Berth.
//!
//! Why it can never serve wrong bytes: blobs are content-addressed and a file appears at its
//! path only by an atomic rename of a complete, verified file, so a descriptor opened there
//! always reads exactly the blob's bytes — even after the file is unlinked. Whether a blob may
//! be served at all is still decided on every request by the link check in the index (GC and
//! deletes remove links), never by this cache.
//!
//! Why it does not hold deleted files open: every removal of a blob file (GC, eviction to S3,
//! fsck) goes through [`crate::store::BlobStore::remove`], which bumps a global removal
//! generation *before* unlinking. A core whose cache was filled under an older generation drops
//! it whole at its next lookup or flush tick, and an entry is only inserted if no removal
//! started since the request read the generation (before its index reads). So a removed file's
//! descriptor lives at most until each core's next request or tick (≤ 200 ms).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::rc::Rc;

use berth_types::Digest;

/// One cached blob file.
#[derive(Clone)]
pub struct OpenBlob {
    /// The descriptor, shared with responses in flight.
    pub file: Rc<File>,
    /// The blob's size (from its index record when it was opened).
    pub size: u64,
}

struct Cache {
    generation: u64,
    map: HashMap<Digest, OpenBlob>,
    order: VecDeque<Digest>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache { generation: 0, map: HashMap::new(), order: VecDeque::new() });
}

fn sync_generation(c: &mut Cache, generation: u64) {
    if c.generation != generation {
        c.map.clear();
        c.order.clear();
        c.generation = generation;
    }
}

/// The open file of `digest` on this core, if cached under the current removal `generation`.
pub fn get(digest: &Digest, generation: u64) -> Option<OpenBlob> {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        sync_generation(&mut c, generation);
        c.map.get(digest).cloned()
    })
}

/// Cache `blob` for `digest` unless a removal started since `seen` (the generation read before
/// the request's index reads) — `now` is the generation after the file was opened. Keeps at most
/// `capacity` files, dropping the oldest.
pub fn put(digest: &Digest, blob: OpenBlob, seen: u64, now: u64, capacity: usize) {
    if seen != now || capacity == 0 {
        return;
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        sync_generation(&mut c, now);
        if c.map.contains_key(digest) {
            return;
        }
        while c.map.len() >= capacity {
            let Some(old) = c.order.pop_front() else { break };
            c.map.remove(&old);
        }
        c.order.push_back(digest.clone());
        c.map.insert(digest.clone(), blob);
    });
}

/// Drop this core's files if a removal happened since they were cached (the per-core tick, so
/// an idle core does not keep deleted files open).
pub fn refresh(generation: u64) {
    CACHE.with(|c| sync_generation(&mut c.borrow_mut(), generation));
}

/// Files cached on this core.
pub fn len() -> usize {
    CACHE.with(|c| c.borrow().map.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::Algorithm;

    fn blob() -> OpenBlob {
        OpenBlob { file: Rc::new(tempfile::tempfile().unwrap()), size: 1 }
    }

    #[test]
    fn bounded_and_dropped_on_removal() {
        let d = |i: u8| Digest::of(Algorithm::Sha256, &[i]);
        for i in 0..10u8 {
            put(&d(i), blob(), 7, 7, 4);
        }
        assert_eq!(len(), 4);
        assert!(get(&d(0), 7).is_none());
        assert!(get(&d(9), 7).is_some());
        // A removal started after the request read the generation: not cached.
        put(&d(20), blob(), 7, 8, 4);
        assert!(get(&d(20), 7).is_none());
        // A removal since: everything goes.
        assert!(get(&d(9), 8).is_none());
        assert_eq!(len(), 0);
        put(&d(1), blob(), 8, 8, 4);
        refresh(9);
        assert_eq!(len(), 0);
    }
}
