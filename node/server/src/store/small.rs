//! A per-core cache of small blobs' bytes (the config blob of every image pull, small layers):
//! a hit answers from memory with the response head in one write — no index record decode, no
//! `open`, no `sendfile`.
//!
//! Safe by construction: blobs are content-addressed, so the bytes cached under a digest can
//! never be wrong for it; whether a blob may be served at all is still decided per request by
//! the repository link check in the index (GC and deletes remove links, in the same batch as
//! the blob), never by the cache. Eviction to S3 does not matter either: the bytes are the same.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use berth_types::Digest;

struct Cache {
    map: HashMap<Digest, Rc<[u8]>>,
    order: VecDeque<Digest>,
    bytes: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache { map: HashMap::new(), order: VecDeque::new(), bytes: 0 });
}

/// The cached bytes of `digest` on this core.
pub fn get(digest: &Digest) -> Option<Rc<[u8]>> {
    CACHE.with(|c| c.borrow().map.get(digest).cloned())
}

/// Cache `bytes` for `digest` on this core, evicting the oldest entries beyond `budget` bytes.
pub fn put(digest: &Digest, bytes: Rc<[u8]>, budget: usize) {
    if bytes.len() > budget {
        return;
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.map.contains_key(digest) {
            return;
        }
        while c.bytes + bytes.len() > budget {
            let Some(old) = c.order.pop_front() else { break };
            if let Some(b) = c.map.remove(&old) {
                c.bytes -= b.len();
            }
        }
        c.bytes += bytes.len();
        c.order.push_back(digest.clone());
        c.map.insert(digest.clone(), bytes);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::Algorithm;

    #[test]
    fn evicts_oldest_within_budget() {
        let d = |i: u8| Digest::of(Algorithm::Sha256, &[i]);
        for i in 0..10u8 {
            put(&d(i), vec![i; 100].into(), 450);
        }
        assert!(get(&d(0)).is_none());
        assert_eq!(get(&d(9)).unwrap()[0], 9);
        let cached = (0..10u8).filter(|i| get(&d(*i)).is_some()).count();
        assert_eq!(cached, 4);
        put(&d(20), vec![0; 1000].into(), 450);
        assert!(get(&d(20)).is_none(), "larger than the budget: not cached");
    }
}
