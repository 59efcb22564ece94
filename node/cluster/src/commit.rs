//! Appending to the log. Commits are serialised cluster-wide (the append lock makes commit
//! order sequence order), so each one costs a whole Postgres transaction and its fsync; on this
//! machine that capped a cluster at ~600 commits/s. **Group commit**: a node's commits go
//! through one committer task, which takes every request queued while its previous
//! transaction ran (up to `commit_batch_max`) into the next one — each request's checks, then
//! its inserts, in arrival order, one fsync for all. A request whose check fails gets its own
//! error and inserts nothing (its checks run before its inserts, so nothing needs undoing); a
//! Postgres failure fails the whole batch (each caller answers 503, as before). A lone commit
//! waits for nothing: the committer is idle and takes it at once.
//!
//! Commits with a side effect (GC's S3 delete inside the transaction) keep a transaction of
//! their own: a slow S3 request must not hold other requests' commits.

use tokio::sync::{mpsc, oneshot};

use crate::log::{self, Check, CommitError, Write};
use crate::{unavailable, Cluster, Effect};

/// A commit waiting for the committer.
pub(crate) struct Pending {
    pub writes: Vec<Write>,
    pub checks: Vec<Check>,
    pub reply: oneshot::Sender<Result<u64, CommitError>>,
}

/// The committer: one per node, on the cluster runtime.
pub(crate) async fn committer(c: std::sync::Arc<Cluster>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let max = c.cfg.commit_batch_max.max(1);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // Callers that gave up (timed out) need no transaction.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        c.metrics.commit_batch_size.observe(batch.len() as f64);
        let requests: Vec<(Vec<Write>, Vec<Check>)> =
            batch.iter_mut().map(|p| (std::mem::take(&mut p.writes), std::mem::take(&mut p.checks))).collect();
        match c.append_batch(requests).await {
            Ok(outcomes) => {
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = p.reply.send(outcome);
                }
            }
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(CommitError::Unavailable(e.to_string())));
                }
            }
        }
    }
}

impl Cluster {
    /// One transaction for several commits: under the append lock, each request's checks and
    /// then its inserts, in order (a later request's checks see an earlier one's entries).
    async fn append_batch(
        &self,
        requests: Vec<(Vec<Write>, Vec<Check>)>,
    ) -> Result<Vec<Result<u64, CommitError>>, CommitError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let (tx, insert) = locked(&mut client).await?;
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut head = 0i64;
        'requests: for (writes, checks) in requests {
            for check in &checks {
                match log::run_check(&tx, check).await {
                    Ok(()) => {}
                    // The transaction itself failed: nothing of this batch is committed.
                    Err(e @ CommitError::Unavailable(_)) => return Err(e),
                    Err(refused) => {
                        outcomes.push(Err(refused));
                        continue 'requests;
                    }
                }
            }
            let last = self.insert_all(&tx, &insert, &writes).await?;
            head = head.max(last);
            outcomes.push(Ok(last as u64));
        }
        self.finish(tx, head).await?;
        Ok(outcomes)
    }

    /// One commit in a transaction of its own, with `effect` run inside it after the checks.
    pub(crate) async fn append_with_effect(
        &self,
        writes: Vec<Write>,
        checks: Vec<Check>,
        effect: Effect,
    ) -> Result<u64, CommitError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let (tx, insert) = locked(&mut client).await?;
        for check in &checks {
            log::run_check(&tx, check).await?;
        }
        // Postgres still ends this session if it stays idle longer than `postgres_timeout_ms`
        // (what bounds how long a paused node blocks everyone's commits and a lease takeover);
        // the GC then records its removal again.
        effect.await.map_err(CommitError::Effect)?;
        let last = self.insert_all(&tx, &insert, &writes).await?;
        self.finish(tx, last).await?;
        Ok(last as u64)
    }

    /// Insert `writes` in order; the last sequence (0 for none).
    async fn insert_all(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        insert: &tokio_postgres::Statement,
        writes: &[Write],
    ) -> Result<i64, CommitError> {
        let mut last = 0i64;
        for w in writes {
            let (repo, digest, refs) = w.columns();
            let body = serde_json::to_value(w).map_err(unavailable)?;
            let row = tx
                .query_one(insert, &[&self.name, &w.kind(), &repo, &digest, &refs, &body])
                .await
                .map_err(unavailable)?;
            last = row.get(0);
        }
        Ok(last)
    }

    /// Wake the tails (when anything was written) and commit.
    async fn finish(&self, tx: deadpool_postgres::Transaction<'_>, head: i64) -> Result<(), CommitError> {
        if head > 0 {
            tx.execute("SELECT pg_notify($1, $2)", &[&log::CHANNEL, &head.to_string()]).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        self.metrics.commit_transactions.inc();
        Ok(())
    }
}

/// A transaction holding the append lock, and the prepared insert.
async fn locked(
    client: &mut deadpool_postgres::Object,
) -> Result<(deadpool_postgres::Transaction<'_>, tokio_postgres::Statement), CommitError> {
    let tx = client.transaction().await.map_err(unavailable)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&log::APPEND_LOCK]).await.map_err(unavailable)?;
    let insert = tx.prepare_cached(INSERT).await.map_err(unavailable)?;
    Ok((tx, insert))
}

const INSERT: &str = "INSERT INTO cluster_changes (origin, kind, repo, digest, refs, body) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq";
