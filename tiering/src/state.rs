//! Registry state kept beside the content in the bucket, so a rebuild from the bucket fails
//! closed: `state/accounts.json` (managed users, robots, groups and rules: bcrypt hashes and
//! SHA-256 of robot secrets, never a secret in clear) and `state/scans/<digest>.json` (the scan
//! record the pull policy enforces).
//!
//! Writes are in the background, ordered per key (the newest wins: an older write still
//! pending is dropped) and retried with backoff until S3 takes them or the node stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{TierError, Tiering};

/// The newest write's number, and the lock that orders the writes of the key.
type KeyState = (u64, Arc<tokio::sync::Mutex<()>>);

/// Per key: its [`KeyState`].
#[derive(Default)]
pub(crate) struct StateWrites {
    keys: Mutex<HashMap<String, KeyState>>,
}

impl StateWrites {
    fn begin(&self, key: &str) -> (u64, Arc<tokio::sync::Mutex<()>>) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let e = keys.entry(key.to_owned()).or_default();
        e.0 += 1;
        (e.0, e.1.clone())
    }

    fn latest(&self, key: &str) -> u64 {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(key).map_or(0, |e| e.0)
    }

    fn finish(&self, key: &str, n: u64) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.get(key).is_some_and(|e| e.0 == n) {
            keys.remove(key);
        }
    }
}

impl Tiering {
    /// Write `bytes` to `<prefix>state/<rel>` in the background.
    pub fn put_state(self: &Arc<Self>, rel: &str, bytes: Vec<u8>) {
        let key = self.layout.state(rel);
        let (n, lock) = self.state_writes.begin(&key);
        let t = self.clone();
        self.handle.spawn(async move {
            let _order = lock.lock().await;
            let mut failures = 0u32;
            while !t.stopping() && t.state_writes.latest(&key) == n {
                match t.remote.put_bytes(&key, bytes.clone(), "application/json").await {
                    Ok(()) => break,
                    Err(e) => {
                        failures += 1;
                        t.metrics.s3_error("state");
                        tracing::warn!(target: "berth::tier", key, error = %e, "writing registry state to S3 failed; will retry");
                        t.pause(t.backoff(failures)).await;
                    }
                }
            }
            t.state_writes.finish(&key, n);
        });
    }

    /// Every state object (relative name, bytes), for a rebuild.
    pub fn read_state(self: &Arc<Self>) -> Result<Vec<(String, Vec<u8>)>, TierError> {
        let t = self.clone();
        self.block_on(async move {
            let prefix = t.layout.state("");
            let mut out = Vec::new();
            for o in t.remote.list(&prefix).await? {
                let rel = o.key[prefix.len()..].to_owned();
                let (bytes, _) = t.remote.get_bytes(&o.key).await?;
                out.push((rel, bytes));
            }
            Ok(out)
        })
    }
}
