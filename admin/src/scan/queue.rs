//! The scan queue in Postgres (`scan_jobs`): survives restarts; a worker claims one job with
//! `FOR UPDATE SKIP LOCKED` and holds it by a renewed lease, so a worker killed mid-scan leaves
//! a job another (or the restarted sidecar) picks up once the lease lapses.

use tokio_postgres::Client;

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Id.
    pub id: i64,
    /// Manifest digest.
    pub digest: String,
    /// Repository to read it from.
    pub repo: String,
    /// `push`, `manual`, `rescan`.
    pub reason: String,
    /// Scan again even when a current result exists.
    pub force: bool,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// Queue a scan of `digest` unless one is open (a forced request upgrades an open one).
pub async fn enqueue(
    c: &Client,
    digest: &str,
    repo: &str,
    reason: &str,
    force: bool,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "INSERT INTO scan_jobs (digest, repo, reason, force) VALUES ($1, $2, $3, $4)
         ON CONFLICT (digest) WHERE state IN ('queued', 'running')
         DO UPDATE SET force = scan_jobs.force OR EXCLUDED.force",
        &[&digest, &repo, &reason, &force],
    )
    .await?;
    Ok(())
}

/// Claim the oldest runnable job: queued and due, or running with a lapsed lease.
pub async fn claim(c: &Client, lease_secs: u64) -> Result<Option<Job>, tokio_postgres::Error> {
    let lease = lease_secs as f64;
    let row = c
        .query_opt(
            "UPDATE scan_jobs SET state = 'running', attempts = attempts + 1,
                    locked_until = now() + make_interval(secs => $1)
             WHERE id = (SELECT id FROM scan_jobs
                         WHERE (state = 'queued' AND not_before <= now())
                            OR (state = 'running' AND locked_until < now())
                         ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
             RETURNING id, digest, repo, reason, force, attempts",
            &[&lease],
        )
        .await?;
    Ok(row.map(|r| Job {
        id: r.get(0),
        digest: r.get(1),
        repo: r.get(2),
        reason: r.get(3),
        force: r.get(4),
        attempts: r.get(5),
    }))
}

/// Extend a running job's lease.
pub async fn renew(c: &Client, id: i64, lease_secs: u64) -> Result<(), tokio_postgres::Error> {
    let lease = lease_secs as f64;
    c.execute(
        "UPDATE scan_jobs SET locked_until = now() + make_interval(secs => $2) WHERE id = $1 AND state = 'running'",
        &[&id, &lease],
    )
    .await?;
    Ok(())
}

/// The job is done.
pub async fn finish(c: &Client, id: i64) -> Result<(), tokio_postgres::Error> {
    c.execute("UPDATE scan_jobs SET state = 'done', finished_at = now(), locked_until = NULL WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

/// Try again after `delay_secs`; `count` false gives the attempt back (Trivy was down).
pub async fn retry(
    c: &Client,
    id: i64,
    delay_secs: u64,
    error: &str,
    count: bool,
) -> Result<(), tokio_postgres::Error> {
    let delay = delay_secs as f64;
    let back: i32 = if count { 0 } else { 1 };
    c.execute(
        "UPDATE scan_jobs SET state = 'queued', locked_until = NULL, last_error = $3,
                attempts = attempts - $4, not_before = now() + make_interval(secs => $2)
         WHERE id = $1",
        &[&id, &delay, &error, &back],
    )
    .await?;
    Ok(())
}

/// Give up on the job.
pub async fn fail(c: &Client, id: i64, error: &str) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "UPDATE scan_jobs SET state = 'failed', finished_at = now(), locked_until = NULL, last_error = $2 WHERE id = $1",
        &[&id, &error],
    )
    .await?;
    Ok(())
}

/// Jobs by state (`queued`, `running`, …).
pub async fn counts(c: &Client) -> Result<Vec<(String, i64)>, tokio_postgres::Error> {
    Ok(c.query("SELECT state, count(*) FROM scan_jobs GROUP BY state ORDER BY state", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
