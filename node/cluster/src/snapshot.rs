//! Snapshots and trimming. A snapshot is the registry's state at a log sequence, written as
//! the writes that rebuild it (`cluster_snapshots`, in parts); once one exists, log entries up
//! to it that every live node has applied can be deleted (`trim`). A node with an empty index
//! loads the latest snapshot, then applies the log after it.
//!
//! A snapshot is *fuzzy*, as a database checkpoint: it is read from a node's index while that
//! node's tail may apply entries after `at_seq`, so it may already contain some of them. That
//! is safe because applying is idempotent and every write assigns its key (a tag to a digest,
//! a link present or absent, a manifest's bytes): a node that loads the snapshot and then
//! applies every entry after `at_seq` ends with what applying the whole log gives.
//!
//! A node whose position is before the trimmed part (it was away while the log was trimmed,
//! longer than `forget_nodes_after_secs`) cannot catch up: it is *stranded* — it stops
//! applying, answers `/readyz` with 503 and says so in its log; wiping its data directory
//! makes it a new node that loads the snapshot.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use crate::lease::Lease;
use crate::log::{CommitError, Entry, Write};
use crate::{unavailable, Cluster, CURSOR};

/// Writes per stored part (one jsonb row).
const PART: usize = 256;

/// The latest complete snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    /// The log sequence it was taken at (the log after it completes it).
    pub at_seq: u64,
    /// How many writes it holds.
    pub writes: u64,
    /// The node that took it.
    pub made_by: String,
    /// Seconds since it was taken.
    pub age_secs: f64,
}

/// What a trim did.
#[derive(Debug, Clone, Serialize)]
pub struct TrimReport {
    /// Entries up to this sequence are gone (0: nothing could be trimmed).
    pub trimmed_upto: u64,
    /// Entries deleted by this trim.
    pub deleted: u64,
}

impl Cluster {
    /// The latest complete snapshot, if any.
    pub fn latest_snapshot(self: &Arc<Self>) -> impl Future<Output = Result<Option<SnapshotInfo>, CommitError>> {
        let c = self.clone();
        self.run(async move {
            let client = c.pool.get().await.map_err(unavailable)?;
            let rows = client
                .query(
                    "SELECT at_seq, writes, made_by, extract(epoch FROM now() - made_at)::float8 \
                     FROM cluster_snapshot_meta ORDER BY at_seq DESC LIMIT 1",
                    &[],
                )
                .await
                .map_err(unavailable)?;
            Ok(rows.first().map(|r| SnapshotInfo {
                at_seq: r.get::<_, i64>(0) as u64,
                writes: r.get::<_, i64>(1) as u64,
                made_by: r.get(2),
                age_secs: r.get(3),
            }))
        })
    }

    /// Store `writes` as the snapshot at `at_seq` (what the local index held once `at_seq` was
    /// applied, fuzzily: see the module's text), under `lease`; older snapshots are dropped.
    pub fn write_snapshot(
        self: &Arc<Self>,
        lease: Lease,
        at_seq: u64,
        writes: Vec<Write>,
    ) -> impl Future<Output = Result<(), CommitError>> {
        let c = self.clone();
        self.run(async move {
            let mut client = c.pool.get().await.map_err(unavailable)?;
            let tx = client.transaction().await.map_err(unavailable)?;
            crate::lease::check(&tx, &lease).await?;
            let at = at_seq as i64;
            tx.execute("DELETE FROM cluster_snapshot_meta WHERE at_seq >= $1", &[&at]).await.map_err(unavailable)?;
            tx.execute("DELETE FROM cluster_snapshots WHERE at_seq >= $1", &[&at]).await.map_err(unavailable)?;
            let insert = tx
                .prepare("INSERT INTO cluster_snapshots (at_seq, part, body) VALUES ($1, $2, $3)")
                .await
                .map_err(unavailable)?;
            let mut parts = 0i32;
            for chunk in writes.chunks(PART) {
                let body = serde_json::to_value(chunk).map_err(unavailable)?;
                tx.execute(&insert, &[&at, &parts, &body]).await.map_err(unavailable)?;
                parts += 1;
            }
            tx.execute(
                "INSERT INTO cluster_snapshot_meta (at_seq, parts, writes, made_by) VALUES ($1, $2, $3, $4)",
                &[&at, &parts, &(writes.len() as i64), &c.name],
            )
            .await
            .map_err(unavailable)?;
            tx.execute("DELETE FROM cluster_snapshots WHERE at_seq < $1", &[&at]).await.map_err(unavailable)?;
            tx.execute("DELETE FROM cluster_snapshot_meta WHERE at_seq < $1", &[&at]).await.map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(())
        })
    }

    /// Delete log entries that no one needs any more: covered by the latest snapshot, applied
    /// by every node heard from within `forget_nodes_after_secs`, and older than
    /// `trim_keep_secs` (the window in which a commit's checks may look back).
    pub fn trim(self: &Arc<Self>, lease: Lease) -> impl Future<Output = Result<TrimReport, CommitError>> {
        let c = self.clone();
        self.run(async move {
            let mut client = c.pool.get().await.map_err(unavailable)?;
            let tx = client.transaction().await.map_err(unavailable)?;
            crate::lease::check(&tx, &lease).await?;
            let forget = c.cfg.forget_nodes_after_secs as f64;
            let keep = c.cfg.trim_keep_secs as f64;
            let row = tx
                .query_one(
                    "SELECT coalesce((SELECT max(at_seq) FROM cluster_snapshot_meta), 0), \
                            coalesce((SELECT min(applied_seq) FROM cluster_nodes \
                                      WHERE heartbeat_at > now() - make_interval(secs => $1)), 0), \
                            coalesce((SELECT max(seq) FROM cluster_changes \
                                      WHERE at < now() - make_interval(secs => $2)), 0)",
                    &[&forget, &keep],
                )
                .await
                .map_err(unavailable)?;
            let upto = row.get::<_, i64>(0).min(row.get::<_, i64>(1)).min(row.get::<_, i64>(2));
            let deleted = if upto > 0 {
                let n =
                    tx.execute("DELETE FROM cluster_changes WHERE seq <= $1", &[&upto]).await.map_err(unavailable)?;
                tx.execute(
                    "UPDATE cluster_log_state SET trimmed_upto = greatest(trimmed_upto, $1) WHERE id = 1",
                    &[&upto],
                )
                .await
                .map_err(unavailable)?;
                n
            } else {
                0
            };
            tx.commit().await.map_err(unavailable)?;
            let trimmed_upto = c.trimmed_upto(&client).await?;
            Ok(TrimReport { trimmed_upto, deleted })
        })
    }

    async fn trimmed_upto(&self, client: &deadpool_postgres::Object) -> Result<u64, CommitError> {
        let row = client
            .query_one("SELECT trimmed_upto FROM cluster_log_state WHERE id = 1", &[])
            .await
            .map_err(unavailable)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// A node that has applied nothing yet starts from the latest snapshot, if there is one:
    /// applies its writes (part by part: bounded memory) and sets its position to it. Read
    /// in one repeatable-read transaction, so a newer snapshot replacing it meanwhile does not
    /// pull the parts away. Called inside a catch-up round (the apply lock held).
    pub(crate) async fn load_snapshot(self: &Arc<Self>) -> Result<Option<u64>, CommitError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(unavailable)?;
        let Some(meta) = tx
            .query_opt(
                "SELECT at_seq, parts, writes, made_by, (extract(epoch FROM made_at) * 1000)::bigint \
                 FROM cluster_snapshot_meta ORDER BY at_seq DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let (at, parts, writes, made_by, at_ms): (i64, i32, i64, String, i64) =
            (meta.get(0), meta.get(1), meta.get(2), meta.get(3), meta.get(4));
        let at_seq = at as u64;
        // A load cut short (a crash, a timeout) goes on with the same snapshot; a newer one
        // would leave what the older one held and the newer one dropped.
        let started = self.index.cursor(LOADING).map_err(unavailable)?;
        if started != 0 && started != at_seq {
            return Err(self.strand(format!(
                "loading the snapshot at {started} was cut short and it has been replaced (now at {at_seq})"
            )));
        }
        self.index.set_cursor(LOADING, at_seq).map_err(unavailable)?;
        self.loading.store(true, Ordering::SeqCst);
        let result = async {
            for part in 0..parts {
                let row = tx
                    .query_one("SELECT body FROM cluster_snapshots WHERE at_seq = $1 AND part = $2", &[&at, &part])
                    .await
                    .map_err(unavailable)?;
                let writes: Vec<Write> = serde_json::from_value(row.get(0))
                    .map_err(|e| unavailable(format!("snapshot part {part} undecodable: {e}")))?;
                let c = self.clone();
                tokio::task::spawn_blocking(move || {
                    for write in writes {
                        let e = Entry { seq: at_seq, origin: SNAPSHOT_ORIGIN.into(), at_ms: at_ms as u64, write };
                        c.apply(&e).map_err(|err| format!("applying the snapshot at {at_seq}: {err}"))?;
                    }
                    Ok::<_, String>(())
                })
                .await
                .map_err(unavailable)?
                .map_err(CommitError::Unavailable)?;
            }
            self.index.set_cursor(CURSOR, at_seq).map_err(unavailable)?;
            self.index.set_cursor(LOADING, 0).map_err(unavailable)
        }
        .await;
        self.loading.store(false, Ordering::SeqCst);
        result?;
        let _ = tx.commit().await;
        self.applied.store(at_seq, Ordering::SeqCst);
        self.metrics.applied_seq.set(at);
        tracing::info!(at_seq, writes, made_by = %made_by, "cluster: loaded the log's snapshot");
        Ok(Some(at_seq))
    }

    /// Whether this node is loading a snapshot (not ready to serve).
    pub fn loading(&self) -> bool {
        self.loading.load(Ordering::SeqCst)
    }

    /// Whether this node's position is before the trimmed part of the log (it cannot catch
    /// up; its data directory must be wiped).
    pub fn stranded(&self) -> bool {
        self.stranded.load(Ordering::SeqCst)
    }

    /// Stop applying for good: this node cannot reach the log's state from where it is.
    pub(crate) fn strand(&self, why: String) -> CommitError {
        if !self.stranded.swap(true, Ordering::SeqCst) {
            self.metrics.stranded.set(1);
            tracing::error!(
                reason = %why,
                "cluster: this node cannot catch up with the change log. Stop it, empty its data directory and start it again: it then loads the latest snapshot"
            );
        }
        CommitError::Unavailable(format!("this node cannot catch up with the change log ({why}); it must be rebuilt"))
    }
}

/// Index cursor: the snapshot being loaded (0: none).
const LOADING: &str = "cluster_snapshot_loading";

/// The origin recorded for writes loaded from a snapshot (never a node's name: `a-z0-9-`).
pub(crate) const SNAPSHOT_ORIGIN: &str = "(snapshot)";
