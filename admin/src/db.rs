//! Postgres: versioned migrations, applying change-feed batches exactly once, full resync from
//! a node export, and the node ↔ Postgres comparison.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use berth_internal_api::feed::{Change, ChangeRecord};
use futures_util::future::try_join_all;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement, Transaction};

/// Migrations, in order; each runs once, in its own transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_scans.sql")),
    (3, include_str!("../migrations/0003_audit.sql")),
    (4, include_str!("../migrations/0004_audit_count.sql")),
];

/// Connect (the connection task runs on the current tokio runtime).
pub async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// Apply the migrations not applied yet. Returns the schema version.
pub async fn migrate(client: &mut Client) -> Result<i32, tokio_postgres::Error> {
    // Create the bookkeeping table only when missing: `CREATE TABLE IF NOT EXISTS` on an
    // existing table makes Postgres send a NOTICE that would be logged at every start.
    let exists: bool = client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        client
            .batch_execute(
                "SET LOCAL client_min_messages = warning; \
                 CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await?;
    }
    // One migrator at a time (two sidecars starting together).
    let tx = client.transaction().await?;
    tx.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE", &[]).await?;
    let done: HashSet<i32> =
        tx.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
    let mut version = done.iter().copied().max().unwrap_or(0);
    for (v, sql) in MIGRATIONS {
        if done.contains(v) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[v]).await?;
        tracing::info!(version = v, "applied migration");
        version = *v;
    }
    tx.commit().await?;
    Ok(version)
}

/// The last applied feed sequence.
pub async fn last_seq(client: &Client) -> Result<u64, tokio_postgres::Error> {
    let row = client.query_one("SELECT last_seq FROM sync_state WHERE id = 1", &[]).await?;
    Ok(row.get::<_, i64>(0) as u64)
}

fn ts(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// One statement of a batch, with owned parameters.
struct Stmt {
    sql: &'static str,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

macro_rules! stmt {
    ($sql:expr $(, $p:expr)* $(,)?) => {
        Stmt { sql: $sql, params: vec![$(Box::new($p) as Box<dyn ToSql + Sync + Send>),*] }
    };
}

const UPSERT_REPO: &str = "INSERT INTO repositories (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";

/// The statements that apply one change, in order.
/// Queue a scan of `digest` (pulled from `repo`) unless one is open already.
const ENQUEUE_SCAN: &str = "INSERT INTO scan_jobs (digest, repo, reason, force) VALUES ($1, $2, $3, $4)
     ON CONFLICT (digest) WHERE state IN ('queued', 'running')
     DO UPDATE SET force = scan_jobs.force OR EXCLUDED.force";

fn statements(rec: &ChangeRecord, out: &mut Vec<Stmt>, touched: &mut BTreeSet<String>, scan: bool) {
    let at = ts(rec.at_ms);
    match &rec.change {
        Change::BlobCommitted { digest, size } => out.push(stmt!(
            "INSERT INTO blobs (digest, size, tier, created_at) VALUES ($1, $2, 'local', to_timestamp($3))
             ON CONFLICT (digest) DO UPDATE SET size = EXCLUDED.size",
            digest.to_string(),
            *size as i64,
            at
        )),
        Change::BlobTier { digest, tier } => out.push(stmt!(
            "UPDATE blobs SET tier = $2 WHERE digest = $1",
            digest.to_string(),
            tier.as_str().to_string()
        )),
        Change::BlobRemoved { digest } => {
            out.push(stmt!("DELETE FROM repository_blobs WHERE digest = $1", digest.to_string()));
            out.push(stmt!("DELETE FROM blobs WHERE digest = $1", digest.to_string()));
        }
        Change::BlobLinked { repo, digest } => {
            out.push(stmt!(UPSERT_REPO, repo.to_string()));
            out.push(stmt!(
                "INSERT INTO repository_blobs (repo, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                repo.to_string(),
                digest.to_string()
            ));
        }
        Change::BlobUnlinked { repo, digest } => {
            out.push(stmt!(
                "DELETE FROM repository_blobs WHERE repo = $1 AND digest = $2",
                repo.to_string(),
                digest.to_string()
            ));
            touched.insert(repo.to_string());
        }
        Change::ManifestPut { repo, digest, media_type, size, artifact_type, subject, blobs, manifests } => {
            let (r, d) = (repo.to_string(), digest.to_string());
            out.push(stmt!(UPSERT_REPO, r.clone()));
            out.push(stmt!(
                "UPDATE repositories SET last_push_at = GREATEST(last_push_at, to_timestamp($2)) WHERE name = $1",
                r.clone(),
                at
            ));
            out.push(stmt!(
                "INSERT INTO manifests (repo, digest, media_type, size, artifact_type, subject, pushed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7))
                 ON CONFLICT (repo, digest) DO UPDATE SET media_type = EXCLUDED.media_type, size = EXCLUDED.size,
                   artifact_type = EXCLUDED.artifact_type, subject = EXCLUDED.subject, pushed_at = EXCLUDED.pushed_at",
                r.clone(),
                d.clone(),
                media_type.clone(),
                *size as i64,
                artifact_type.clone(),
                subject.as_ref().map(|s| s.to_string()),
                at
            ));
            refs_statements(
                out,
                &r,
                &d,
                blobs.iter().map(|b| b.to_string()).collect(),
                manifests.iter().map(|m| m.to_string()).collect(),
            );
        }
        Change::ManifestDeleted { repo, digest } => {
            let (r, d) = (repo.to_string(), digest.to_string());
            refs_statements(out, &r, &d, Vec::new(), Vec::new());
            out.push(stmt!("DELETE FROM manifests WHERE repo = $1 AND digest = $2", r.clone(), d));
            touched.insert(r);
        }
        Change::TagSet { repo, tag, digest } => {
            out.push(stmt!(UPSERT_REPO, repo.to_string()));
            out.push(stmt!(
                "INSERT INTO tags (repo, tag, digest, updated_at) VALUES ($1, $2, $3, to_timestamp($4))
                 ON CONFLICT (repo, tag) DO UPDATE SET digest = EXCLUDED.digest, updated_at = EXCLUDED.updated_at",
                repo.to_string(),
                tag.to_string(),
                digest.to_string(),
                at
            ));
        }
        Change::TagDeleted { repo, tag } => {
            out.push(stmt!("DELETE FROM tags WHERE repo = $1 AND tag = $2", repo.to_string(), tag.to_string()));
            touched.insert(repo.to_string());
        }
        Change::ScanRequested { repo, digest } => {
            if scan {
                out.push(stmt!(ENQUEUE_SCAN, digest.to_string(), repo.to_string(), "manual".to_string(), true));
            }
        }
    }
    // Scan on push: queued in the same transaction as the manifest row it scans.
    if let (true, Change::ManifestPut { repo, digest, .. }) = (scan, &rec.change) {
        out.push(stmt!(ENQUEUE_SCAN, digest.to_string(), repo.to_string(), "push".to_string(), false));
    }
}

fn refs_statements(out: &mut Vec<Stmt>, repo: &str, manifest: &str, blobs: Vec<String>, children: Vec<String>) {
    out.push(stmt!(
        "DELETE FROM manifest_blobs WHERE repo = $1 AND manifest = $2",
        repo.to_string(),
        manifest.to_string()
    ));
    out.push(stmt!(
        "DELETE FROM manifest_manifests WHERE repo = $1 AND parent = $2",
        repo.to_string(),
        manifest.to_string()
    ));
    if !blobs.is_empty() {
        let pos: Vec<i32> = (0..blobs.len() as i32).collect();
        out.push(stmt!(
            "INSERT INTO manifest_blobs (repo, manifest, position, blob) SELECT $1, $2, p, b FROM UNNEST($3::int[], $4::text[]) AS t(p, b)",
            repo.to_string(),
            manifest.to_string(),
            pos,
            blobs
        ));
    }
    if !children.is_empty() {
        let pos: Vec<i32> = (0..children.len() as i32).collect();
        out.push(stmt!(
            "INSERT INTO manifest_manifests (repo, parent, position, child) SELECT $1, $2, p, c FROM UNNEST($3::int[], $4::text[]) AS t(p, c)",
            repo.to_string(),
            manifest.to_string(),
            pos,
            children
        ));
    }
}

/// Run statements in order, pipelined: each distinct SQL is prepared once, then every
/// execution is sent without waiting for the previous answer. tokio-postgres sends a request
/// when its future is first polled; we poll each future once, in order, before awaiting any,
/// so the server executes them in exactly the order of the changes.
async fn run_pipelined(tx: &Transaction<'_>, stmts: &[Stmt]) -> Result<(), tokio_postgres::Error> {
    let mut sqls: Vec<&'static str> = stmts.iter().map(|s| s.sql).collect();
    sqls.sort_unstable();
    sqls.dedup();
    let prepared = try_join_all(sqls.iter().map(|q| tx.prepare(q))).await?;
    let by_sql: HashMap<&str, &Statement> = sqls.iter().copied().zip(prepared.iter()).collect();
    let params: Vec<Vec<&(dyn ToSql + Sync)>> =
        stmts.iter().map(|s| s.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()).collect();
    let mut futs: Vec<_> = stmts.iter().zip(&params).map(|(s, p)| Box::pin(tx.execute(by_sql[s.sql], p))).collect();
    let mut early = Vec::with_capacity(futs.len());
    for f in futs.iter_mut() {
        early.push(match futures_util::poll!(f.as_mut()) {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        });
    }
    for (f, done) in futs.into_iter().zip(early) {
        match done {
            Some(r) => r?,
            None => f.await?,
        };
    }
    Ok(())
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied through this sequence.
    Through(u64),
    /// Nothing new (all at or below the stored position).
    Nothing,
    /// Someone else moved the position meanwhile (another sidecar): nothing applied.
    Conflict,
}

/// Apply changes in one transaction, skipping those already applied, and record the new
/// position in the same transaction: a crash or a replay can neither lose nor double a change.
/// With `scan`, every manifest push and scan request also queues a scan job.
pub async fn apply_batch(
    client: &mut Client,
    batch: &[ChangeRecord],
    scan: bool,
) -> Result<Applied, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let row = tx.query_one("SELECT last_seq FROM sync_state WHERE id = 1 FOR UPDATE", &[]).await?;
    let from = row.get::<_, i64>(0) as u64;
    let fresh: Vec<&ChangeRecord> = batch.iter().filter(|c| c.seq > from).collect();
    let Some(last) = fresh.last() else {
        return Ok(Applied::Nothing);
    };
    if fresh[0].seq != from + 1 {
        // A gap means the batch does not start where we are: refuse rather than skip changes.
        tx.rollback().await?;
        return Ok(Applied::Conflict);
    }
    let mut touched = BTreeSet::new();
    let mut stmts = Vec::new();
    for rec in &fresh {
        statements(rec, &mut stmts, &mut touched, scan);
    }
    run_pipelined(&tx, &stmts).await?;
    // Repositories left with nothing disappear, as from the node's catalog.
    for repo in touched {
        tx.execute(
            "DELETE FROM repositories r WHERE r.name = $1
               AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name)
               AND NOT EXISTS (SELECT 1 FROM repository_blobs b WHERE b.repo = r.name)
               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo = r.name)",
            &[&repo],
        )
        .await?;
    }
    let n = tx
        .execute(
            "UPDATE sync_state SET last_seq = $1, last_change_at = to_timestamp($2), updated_at = now() WHERE id = 1 AND last_seq = $3",
            &[&(last.seq as i64), &ts(last.at_ms), &(from as i64)],
        )
        .await?;
    if n != 1 {
        tx.rollback().await?;
        return Ok(Applied::Conflict);
    }
    tx.commit().await?;
    Ok(Applied::Through(last.seq))
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v[key].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Replace everything with a node export (`GET /internal/v1/export`), in one transaction.
pub async fn resync(client: &mut Client, ex: &Value) -> Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(
        "TRUNCATE repositories, blobs, repository_blobs, manifests, manifest_blobs, manifest_manifests, tags",
    )
    .await?;
    let empty = Vec::new();
    let blobs = ex["blobs"].as_array().unwrap_or(&empty);
    let (d, sz, tier, at): (Vec<String>, Vec<i64>, Vec<String>, Vec<f64>) =
        blobs.iter().fold((Vec::new(), Vec::new(), Vec::new(), Vec::new()), |mut acc, b| {
            acc.0.push(s(&b["digest"]));
            acc.1.push(b["size"].as_i64().unwrap_or(0));
            acc.2.push(s(&b["tier"]));
            acc.3.push(ts(b["created_at_ms"].as_u64().unwrap_or(0)));
            acc
        });
    tx.execute(
        "INSERT INTO blobs (digest, size, tier, created_at) SELECT d, s, t, to_timestamp(a) FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::float8[]) AS x(d, s, t, a)",
        &[&d, &sz, &tier, &at],
    )
    .await?;
    let mut repos: BTreeMap<String, f64> = BTreeMap::new();
    let links = ex["links"].as_array().unwrap_or(&empty);
    let (lr, ld): (Vec<String>, Vec<String>) = links.iter().map(|l| (s(&l["repo"]), s(&l["digest"]))).unzip();
    for r in &lr {
        repos.entry(r.clone()).or_insert(0.0);
    }
    tx.execute("INSERT INTO repository_blobs (repo, digest) SELECT * FROM UNNEST($1::text[], $2::text[])", &[&lr, &ld])
        .await?;
    // Everything else as one pipelined stream of statements.
    let mut stmts = Vec::new();
    for m in ex["manifests"].as_array().unwrap_or(&empty) {
        let (r, dg, at) = (s(&m["repo"]), s(&m["digest"]), ts(m["pushed_at_ms"].as_u64().unwrap_or(0)));
        let e = repos.entry(r.clone()).or_insert(0.0);
        *e = e.max(at);
        stmts.push(stmt!(
            "INSERT INTO manifests (repo, digest, media_type, size, artifact_type, subject, pushed_at) VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7))",
            r.clone(),
            dg.clone(),
            s(&m["media_type"]),
            m["size"].as_i64().unwrap_or(0),
            m["artifact_type"].as_str().map(str::to_owned),
            m["subject"].as_str().map(str::to_owned),
            at
        ));
        refs_statements(&mut stmts, &r, &dg, strs(m, "blobs"), strs(m, "manifests"));
    }
    for t in ex["tags"].as_array().unwrap_or(&empty) {
        let r = s(&t["repo"]);
        repos.entry(r.clone()).or_insert(0.0);
        stmts.push(stmt!(
            "INSERT INTO tags (repo, tag, digest, updated_at) VALUES ($1, $2, $3, now())",
            r,
            s(&t["tag"]),
            s(&t["digest"])
        ));
    }
    for (r, at) in repos {
        stmts.push(stmt!(
            "INSERT INTO repositories (name, last_push_at) VALUES ($1, CASE WHEN $2::float8 > 0 THEN to_timestamp($2::float8) END)",
            r,
            at
        ));
    }
    run_pipelined(&tx, &stmts).await?;
    let seq = ex["seq"].as_u64().unwrap_or(0);
    tx.execute("UPDATE sync_state SET last_seq = $1, updated_at = now() WHERE id = 1", &[&(seq as i64)]).await?;
    tx.commit().await?;
    Ok(seq)
}

/// Differences between a node export and Postgres, per table.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Differences {
    /// Table → rows the node has and Postgres lacks (up to 20 shown).
    pub missing: BTreeMap<&'static str, Vec<String>>,
    /// Table → rows Postgres has and the node does not (up to 20 shown).
    pub extra: BTreeMap<&'static str, Vec<String>>,
    /// Table → (node rows, Postgres rows).
    pub counts: BTreeMap<&'static str, (usize, usize)>,
}

impl Differences {
    /// `blobs 12, manifests 3, tags 2, …` (rows on each side, which agree when this is called).
    pub fn summary(&self) -> String {
        self.counts
            .iter()
            .map(
                |(t, (node, pg))| {
                    if node == pg {
                        format!("{t} {node}")
                    } else {
                        format!("{t} {node} (postgres {pg})")
                    }
                },
            )
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether both sides agree.
    pub fn is_empty(&self) -> bool {
        self.missing.values().all(Vec::is_empty) && self.extra.values().all(Vec::is_empty)
    }
}

/// Compare a node export with Postgres.
pub async fn compare(client: &Client, ex: &Value) -> Result<Differences, tokio_postgres::Error> {
    let empty = Vec::new();
    let arr = |k: &str| ex[k].as_array().unwrap_or(&empty).clone();
    let node: Vec<(&'static str, BTreeSet<String>)> = vec![
        (
            "blobs",
            arr("blobs").iter().map(|b| format!("{} {} {}", s(&b["digest"]), b["size"], s(&b["tier"]))).collect(),
        ),
        ("repository_blobs", arr("links").iter().map(|l| format!("{} {}", s(&l["repo"]), s(&l["digest"]))).collect()),
        (
            "manifests",
            arr("manifests")
                .iter()
                .map(|m| {
                    format!(
                        "{} {} {} {} {}",
                        s(&m["repo"]),
                        s(&m["digest"]),
                        s(&m["media_type"]),
                        m["size"],
                        s(&m["subject"])
                    )
                })
                .collect(),
        ),
        (
            "manifest_blobs",
            arr("manifests")
                .iter()
                .flat_map(|m| {
                    let (r, d) = (s(&m["repo"]), s(&m["digest"]));
                    strs(m, "blobs").into_iter().enumerate().map(move |(i, b)| format!("{r} {d} {i} {b}"))
                })
                .collect(),
        ),
        (
            "tags",
            arr("tags").iter().map(|t| format!("{} {} {}", s(&t["repo"]), s(&t["tag"]), s(&t["digest"]))).collect(),
        ),
    ];
    let queries = [
        ("blobs", "SELECT digest || ' ' || size || ' ' || tier FROM blobs"),
        ("repository_blobs", "SELECT repo || ' ' || digest FROM repository_blobs"),
        ("manifests", "SELECT repo || ' ' || digest || ' ' || media_type || ' ' || size || ' ' || COALESCE(subject, '') FROM manifests"),
        ("manifest_blobs", "SELECT repo || ' ' || manifest || ' ' || position || ' ' || blob FROM manifest_blobs"),
        ("tags", "SELECT repo || ' ' || tag || ' ' || digest FROM tags"),
    ];
    let mut out = Differences::default();
    for ((table, want), (_, q)) in node.into_iter().zip(queries) {
        let have: BTreeSet<String> = client.query(q, &[]).await?.iter().map(|r| r.get::<_, String>(0)).collect();
        out.counts.insert(table, (want.len(), have.len()));
        out.missing.insert(table, want.difference(&have).take(20).cloned().collect());
        out.extra.insert(table, have.difference(&want).take(20).cloned().collect());
    }
    Ok(out)
}
