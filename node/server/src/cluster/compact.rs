//! Compacting the change log (`berth_cluster::snapshot` has the model): one node at a time,
//! under the `compact` lease, reads the registry's state from its index as log writes
//! (`state::read`), stores them as the snapshot at the sequence it had applied before reading,
//! then trims the entries every live node has applied. On demand
//! (`POST /internal/v1/cluster/compact`) or when the log holds more than
//! `compact_after_changes` entries past the latest snapshot (every node checks each minute;
//! the lease picks one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_cluster::LeaseError;
use berth_index::Index;
use serde::Serialize;

use super::renewal::LeaseRenewal;
use super::ClusterNode;
use crate::auth::Auth;

/// What a compaction did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The snapshot's sequence.
    pub at_seq: u64,
    /// Writes in it.
    pub writes: usize,
    /// The log is trimmed up to here now.
    pub trimmed_upto: u64,
    /// Entries this run deleted.
    pub deleted: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Why a compaction did not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Another node is compacting.
    #[error("{0}")]
    Busy(String),
    /// Postgres, the index, or a lost lease.
    #[error("{0}")]
    Failed(String),
}

/// The managed accounts, whole, when there are any (they travel in the snapshot).
pub(crate) fn accounts_of(auth: Option<&Auth>) -> Result<Option<serde_json::Value>, String> {
    auth.map(|a| a.managed.get())
        .filter(|s| !s.is_empty())
        .map(|s| serde_json::to_value(&*s).map_err(|e| e.to_string()))
        .transpose()
}

/// Compact now (blocking: run it on its own thread).
pub(crate) fn run(cn: &ClusterNode, index: &Index, auth: Option<&Auth>) -> Result<Report, CompactError> {
    let started = Instant::now();
    let c = &cn.cluster;
    let lease = c.acquire("compact").map_err(|e| match e {
        LeaseError::Held { .. } => CompactError::Busy(e.to_string()),
        LeaseError::Unavailable(_) => CompactError::Failed(e.to_string()),
    })?;
    let renewing = LeaseRenewal::start(c.clone(), lease.clone());
    let result = (|| {
        // Applied before reading: the snapshot holds at least everything up to here (and maybe
        // some of what follows, which loading nodes apply again, idempotently).
        let at_seq = c.applied();
        let state = super::state::read(index, accounts_of(auth).map_err(CompactError::Failed)?)
            .map_err(CompactError::Failed)?;
        let writes = state.into_writes();
        let count = writes.len();
        c.block_on(c.write_snapshot(lease.clone(), at_seq, writes)).map_err(|e| CompactError::Failed(e.to_string()))?;
        let trim = c.block_on(c.trim(lease.clone())).map_err(|e| CompactError::Failed(e.to_string()))?;
        Ok(Report {
            at_seq,
            writes: count,
            trimmed_upto: trim.trimmed_upto,
            deleted: trim.deleted,
            seconds: started.elapsed().as_secs_f64(),
        })
    })();
    renewing.stop();
    c.release(&lease);
    match &result {
        Ok(r) => tracing::info!(
            at_seq = r.at_seq,
            writes = r.writes,
            trimmed_upto = r.trimmed_upto,
            deleted = r.deleted,
            seconds = r.seconds,
            "cluster: compacted the change log"
        ),
        Err(e) => tracing::warn!(error = %e, "cluster: compacting the change log failed"),
    }
    result
}

/// Every minute: compact when the log holds more than `compact_after_changes` entries past
/// the latest snapshot (and no other node is at it).
pub(crate) fn start_schedule(cn: Arc<ClusterNode>, index: Arc<Index>, auth: Option<Arc<Auth>>) {
    let after = cn.cluster.config().compact_after_changes;
    if after == 0 {
        return;
    }
    let _ = std::thread::Builder::new().name("berth-compact".into()).spawn(move || {
        let c = cn.cluster.clone();
        let mut next = Instant::now() + Duration::from_secs(60);
        while !c.is_stopping() {
            std::thread::sleep(Duration::from_millis(500));
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + Duration::from_secs(60);
            let due = c
                .block_on(c.head())
                .ok()
                .zip(c.block_on(c.latest_snapshot()).ok())
                .is_some_and(|(head, snap)| head.saturating_sub(snap.map_or(0, |s| s.at_seq)) > after);
            if due {
                let _ = run(&cn, &index, auth.as_deref());
            }
        }
    });
}
