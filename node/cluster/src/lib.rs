//! Scale-out: many Berth nodes behind any load balancer, on one Postgres and one S3 bucket.
//! See docs/SCALE_OUT.md for the design and the options weighed.
//!
//! - **The change log** (`log`): every metadata write (blob committed or linked, manifest and
//!   tags, deletions, GC's removals) is appended to one Postgres table before it is
//!   acknowledged, after checks run inside the same transaction (a manifest's references were
//!   not removed meanwhile; GC's victims were not touched since its plan; GC still holds its
//!   lease). Commit order is sequence order (one advisory lock), so the log has no gaps.
//! - **The tail** (`tail`): each node applies the log to its own RocksDB index in order
//!   (`apply`), woken by `LISTEN/NOTIFY` and polling as a fallback. Pulls are served from the
//!   local index and the local blob cache, never touching Postgres; a miss (a name this node
//!   does not know yet) first catches up with the log, so a pull right after a push
//!   acknowledged elsewhere finds it (read-your-writes).
//! - **Nodes** (`nodes`): a heartbeat row per node with its internal URL; upload ids carry
//!   the owning node's tag, and requests for an upload owned elsewhere are forwarded there
//!   (`forward`): the running hash stays in one place.
//! - **Leases** (`lease`): single-writer roles (GC) with fencing epochs.
//!
//! Threads: all Postgres and forwarding work runs on this crate's own tokio runtime
//! (`berth-cluster` threads); the node's monoio cores await runtime-agnostic futures.
//!
//! Layering: the node calls this crate; this crate calls Postgres, the index and the local
//! blob files (through `berth_tiering::LocalBlobs`), never the node's HTTP layer.

mod apply;
mod commit;
mod config;
mod forward;
pub mod lease;
mod log;
mod metrics;
mod nodes;
mod snapshot;
mod tail;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use berth_index::Index;
use berth_tiering::LocalBlobs;
use berth_types::Digest;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::Notify;

pub use config::{ClusterConfig, Durability};
pub use forward::{ForwardBody, Forwarded};
pub use lease::{Lease, LeaseError};
pub use log::{Check, CommitError, Entry, StateKind, Write};
pub use metrics::ClusterMetrics;
pub use nodes::NodeInfo;
pub use snapshot::{SnapshotInfo, TrimReport};

/// How long a commit with a side effect (GC's S3 delete inside the transaction) may take on
/// this side.
const EFFECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The index cursor holding the last applied log sequence.
pub const APPLIED_CURSOR: &str = "cluster_applied";
const CURSOR: &str = APPLIED_CURSOR;

/// A side effect to run inside a commit's transaction, after its checks (GC's S3 delete).
pub type Effect = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Where a node applies [`Write::State`] entries (scan verdicts, managed accounts).
pub type StateSink = Box<dyn Fn(StateKind, &str, &serde_json::Value) -> Result<(), String> + Send + Sync>;

/// This node's membership in the cluster. Shared behind an `Arc`.
pub struct Cluster {
    cfg: ClusterConfig,
    name: String,
    tag: u32,
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    index: Arc<Index>,
    local: Arc<dyn LocalBlobs>,
    applied: AtomicU64,
    apply_lock: tokio::sync::Mutex<()>,
    rounds_started: AtomicU64,
    rounds_done: AtomicU64,
    wake: Notify,
    committing: Mutex<HashMap<Digest, usize>>,
    nodes: RwLock<HashMap<u32, NodeInfo>>,
    http: reqwest::Client,
    stopping: AtomicBool,
    registered: AtomicBool,
    /// Whether the last catch-up round reached Postgres (consistent reads do not wait for a
    /// Postgres that is known to be unreachable).
    reachable: AtomicBool,
    /// Behind the trimmed part of the log: cannot catch up (see `snapshot`).
    stranded: AtomicBool,
    /// Loading a snapshot (see `snapshot`).
    loading: AtomicBool,
    internal_token: String,
    state_sink: std::sync::OnceLock<StateSink>,
    /// Where commits queue for the group committer (`commit`).
    commits: tokio::sync::mpsc::UnboundedSender<commit::Pending>,
    /// Metrics, registered into the node's registry.
    pub metrics: ClusterMetrics,
}

/// What a consistent read ([`Cluster::fresh`]) got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The local index has everything committed before the read began.
    Fresh,
    /// Postgres could not be asked: the local view, possibly behind.
    Stale,
    /// `consistent_reads = false`: the local view, not checked.
    Local,
}

/// Marks a digest as being committed by this node (see [`Cluster::committing`]).
pub struct Committing<'a> {
    c: &'a Cluster,
    digest: Digest,
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        let mut m = self.c.committing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.digest);
            }
        }
    }
}

/// Why setting up at start (or after an outage) failed.
#[derive(Debug)]
enum SetupError {
    /// Postgres did not answer: retried by the tail.
    Unreachable(String),
    /// A real problem (the schema, a name whose upload tag another node has): the node stops.
    Fatal(String),
}

fn unavailable(e: impl std::fmt::Display) -> CommitError {
    CommitError::Unavailable(e.to_string())
}

impl Cluster {
    /// Connect, create the schema, register this node, catch up with the log, and start the
    /// tail and the heartbeat. When Postgres is unreachable the node serves its last view
    /// and joins later — unless `importing`: its index holds content the log does not have
    /// (a single node becoming the cluster's first), which may only join a log no other node
    /// wrote to (checked here, before anything is applied; the caller then publishes it).
    pub fn start(
        cfg: ClusterConfig,
        index: Arc<Index>,
        local: Arc<dyn LocalBlobs>,
        internal_token: String,
        state_sink: StateSink,
        importing: bool,
    ) -> Result<Arc<Cluster>, String> {
        cfg.validate()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("berth-cluster")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut pg: tokio_postgres::Config =
            cfg.postgres_url.parse().map_err(|e| format!("cluster.postgres_url: {e}"))?;
        // A node paused (or partitioned) inside a commit must not hold the append lock for
        // ever: Postgres ends such a session, rolling its transaction back.
        // Schema set-up is idempotent (`CREATE … IF NOT EXISTS`): its "already exists,
        // skipping" NOTICEs on every node's start are not worth a log line; warnings still are.
        let given = pg.get_options().map(|o| format!("{o} ")).unwrap_or_default();
        pg.options(format!(
            "{given}-c idle_in_transaction_session_timeout={} -c client_min_messages=warning",
            cfg.postgres_timeout_ms
        ));
        pg.connect_timeout(Duration::from_millis(cfg.postgres_timeout_ms));
        let mgr =
            Manager::from_config(pg, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = {
            let _g = rt.enter();
            Pool::builder(mgr)
                .max_size(cfg.pool_size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_millis(cfg.postgres_timeout_ms)))
                .create_timeout(Some(Duration::from_millis(cfg.postgres_timeout_ms)))
                .build()
                .map_err(|e| e.to_string())?
        };
        let mut http =
            reqwest::Client::builder().timeout(Duration::from_secs(3600)).connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &cfg.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("cluster.ca {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("cluster.ca: {e}"))? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| e.to_string())?;
        let applied = index.cursor(CURSOR).map_err(|e| e.to_string())?;
        let (commits, queued) = tokio::sync::mpsc::unbounded_channel();
        let c = Arc::new(Cluster {
            name: cfg.node.clone(),
            tag: nodes::tag_of(&cfg.node),
            handle: rt.handle().clone(),
            rt: Mutex::new(Some(rt)),
            pool,
            index,
            local,
            applied: AtomicU64::new(applied),
            apply_lock: tokio::sync::Mutex::new(()),
            rounds_started: AtomicU64::new(0),
            rounds_done: AtomicU64::new(0),
            wake: Notify::new(),
            committing: Mutex::new(HashMap::new()),
            nodes: RwLock::new(HashMap::new()),
            http,
            stopping: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
            stranded: AtomicBool::new(false),
            loading: AtomicBool::new(false),
            internal_token,
            state_sink: std::sync::OnceLock::new(),
            commits,
            metrics: ClusterMetrics::default(),
            cfg,
        });
        c.metrics.applied_seq.set(applied as i64);
        let _ = c.state_sink.set(state_sink);
        c.handle.spawn(commit::committer(c.clone(), queued));
        let c2 = c.clone();
        let timeout = c.timeout();
        let started = c.block_on(async move {
            let up = async {
                c2.setup().await?;
                if importing {
                    c2.check_import().await?;
                }
                let to = c2.catch_up_now().await.map_err(|e| SetupError::Unreachable(e.to_string()))?;
                tracing::info!(node = %c2.name, applied = to, "cluster: caught up with the change log");
                Ok(())
            };
            tokio::time::timeout(timeout, up).await.unwrap_or_else(|_| Err(SetupError::Unreachable("timed out".into())))
        });
        match started {
            Ok(()) => {}
            Err(SetupError::Fatal(e)) => return Err(e),
            Err(SetupError::Unreachable(e)) if importing => {
                return Err(format!(
                    "Postgres unreachable ({e}): this data directory's content must be published into the change log before the node serves as a cluster node; start it again once Postgres answers"
                ))
            }
            // Serve what the local index knows (misses and writes answer 503) rather than not
            // at all; the tail registers and catches up once Postgres answers.
            // Behind the trimmed log: `strand` said so; `/readyz` answers 503.
            Err(SetupError::Unreachable(_)) if c.stranded() => {}
            Err(SetupError::Unreachable(e)) => tracing::warn!(
                error = %e,
                "cluster: Postgres unreachable at start; serving this node's last view (writes and misses answer 503) until it is back"
            ),
        }
        c.handle.spawn(tail::run(c.clone()));
        c.handle.spawn(nodes::heartbeat(c.clone()));
        Ok(c)
    }

    /// Create the schema and register this node (again after an outage at start).
    async fn setup(&self) -> Result<(), SetupError> {
        let unreachable = |e: tokio_postgres::Error| SetupError::Unreachable(e.to_string());
        let mut client = self.pool.get().await.map_err(|e| SetupError::Unreachable(e.to_string()))?;
        let tx = client.transaction().await.map_err(unreachable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(log::APPEND_LOCK + 1)]).await.map_err(unreachable)?;
        tx.batch_execute(log::SCHEMA).await.map_err(|e| SetupError::Fatal(format!("cluster schema: {e}")))?;
        tx.commit().await.map_err(unreachable)?;
        self.register(&client).await.map_err(SetupError::Fatal)?;
        self.registered.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// A node with content of its own may join only a log that no other node wrote to: two
    /// registries' contents would otherwise be merged (tags of one silently moved by the
    /// other's), and this node would serve content the others never heard of.
    async fn check_import(&self) -> Result<(), SetupError> {
        let client = self.pool.get().await.map_err(|e| SetupError::Unreachable(e.to_string()))?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM cluster_changes WHERE origin <> $1) \
                      + (SELECT count(*) FROM cluster_snapshot_meta), \
                        (SELECT min(origin) FROM cluster_changes WHERE origin <> $1)",
                &[&self.name],
            )
            .await
            .map_err(|e| SetupError::Unreachable(e.to_string()))?;
        let (others, origin): (i64, Option<String>) = (row.get(0), row.get(1));
        if others > 0 {
            return Err(SetupError::Fatal(format!(
                "this data directory holds registry content that is not in the cluster's change log, and the log already has {others} changes or snapshots from other nodes (node {:?} among them). Only the first node of a cluster may bring content: start this node with an empty data directory to join (it then serves everything from the log and the bucket), or give it its own cluster (another Postgres database)",
                origin.unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Whether this node is in the node table (false only after a start without Postgres).
    pub fn registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.name
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// The tag upload ids made here carry (see [`Cluster::owner`]).
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// Last log sequence applied to the local index.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Whether this node is shutting its cluster membership down.
    pub fn is_stopping(&self) -> bool {
        self.stopping()
    }

    /// Run `fut` on the cluster runtime; await the result from any executor.
    fn run<F, T>(&self, fut: F) -> impl Future<Output = Result<T, CommitError>> + 'static
    where
        F: Future<Output = Result<T, CommitError>> + Send + 'static,
        T: Send + 'static,
    {
        let h = self.handle.spawn(fut);
        async move { h.await.unwrap_or_else(|_| Err(CommitError::Unavailable("shutting down".into()))) }
    }

    /// Run `fut` on the cluster runtime and wait for it on this (non-async) thread.
    pub fn block_on<F, T>(&self, fut: F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("cluster runtime alive")
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.postgres_timeout_ms)
    }

    /// Append `writes` to the log, atomically, if every check passes; then apply the log on
    /// this node up to them (so this node reads its own write at once). Returns the last
    /// sequence written. Without `effect` the commit may share a transaction with this node's
    /// other commits queued meanwhile (group commit: see `commit`).
    pub fn commit(
        self: &Arc<Self>,
        writes: Vec<Write>,
        checks: Vec<Check>,
        effect: Option<Effect>,
    ) -> impl Future<Output = Result<u64, CommitError>> + 'static {
        let c = self.clone();
        self.run(async move {
            let started = Instant::now();
            let r = match effect {
                // A side effect (GC's S3 delete) may take longer than a plain commit.
                Some(effect) => {
                    tokio::time::timeout(c.timeout().max(EFFECT_TIMEOUT), c.append_with_effect(writes, checks, effect))
                        .await
                        .unwrap_or_else(|_| Err(CommitError::Unavailable("commit timed out".into())))
                }
                None => {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    let queued = c.commits.send(commit::Pending { writes, checks, reply });
                    match queued {
                        Err(_) => Err(CommitError::Unavailable("shutting down".into())),
                        Ok(()) => match tokio::time::timeout(c.timeout(), answer).await {
                            Ok(Ok(r)) => r,
                            Ok(Err(_)) => Err(CommitError::Unavailable("shutting down".into())),
                            Err(_) => Err(CommitError::Unavailable("commit timed out".into())),
                        },
                    }
                }
            };
            c.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            match &r {
                Ok(_) => c.metrics.commit("ok"),
                Err(CommitError::Unavailable(e)) => {
                    c.metrics.postgres_errors.inc();
                    c.metrics.commit("unavailable");
                    tracing::warn!(error = %e, "cluster: commit failed");
                }
                Err(_) => c.metrics.commit("refused"),
            }
            let seq = r?;
            c.wait_applied_inner(seq).await?;
            Ok(seq)
        })
    }

    /// Bring the local index up to date with everything committed before this call (what a
    /// miss does before answering 404). Errors when Postgres is unreachable: the caller
    /// answers 503, not 404, since it cannot know.
    pub fn catch_up(self: &Arc<Self>) -> impl Future<Output = Result<u64, CommitError>> + 'static {
        self.metrics.miss_catch_ups.inc();
        let c = self.clone();
        self.run(async move {
            match tokio::time::timeout(c.timeout(), c.catch_up_now()).await {
                Ok(r) => r,
                Err(_) => Err(CommitError::Unavailable("catching up with the change log timed out".into())),
            }
        })
    }

    /// Before a read whose answer can change (a tag, a list): bring the local index up to
    /// everything committed before this call — one indexed query when nothing is new, shared
    /// with concurrent callers (the catch-up round is single-flight). With Postgres
    /// unreachable (known from the last round, or failing now) the read goes on with the local
    /// view: pulls keep working through an outage, possibly behind other nodes' pushes.
    pub fn fresh(self: &Arc<Self>) -> impl Future<Output = Freshness> + 'static {
        let c = self.clone();
        async move {
            if !c.cfg.consistent_reads {
                return Freshness::Local;
            }
            if !c.reachable.load(Ordering::SeqCst) {
                c.metrics.fresh_read("stale");
                return Freshness::Stale;
            }
            let c2 = c.clone();
            let r = c
                .run(async move {
                    match tokio::time::timeout(c2.timeout(), c2.catch_up_now()).await {
                        Ok(r) => r,
                        Err(_) => {
                            c2.reachable.store(false, Ordering::SeqCst);
                            Err(CommitError::Unavailable("catching up with the change log timed out".into()))
                        }
                    }
                })
                .await;
            match r {
                Ok(_) => {
                    c.metrics.fresh_read("fresh");
                    Freshness::Fresh
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: serving a read from this node's view (Postgres unreachable)");
                    c.metrics.fresh_read("stale");
                    Freshness::Stale
                }
            }
        }
    }

    /// Wait until the local index has applied `seq`.
    async fn wait_applied_inner(self: &Arc<Self>, seq: u64) -> Result<(), CommitError> {
        while self.applied() < seq {
            self.catch_up_now().await?;
        }
        Ok(())
    }

    /// One catch-up round, single-flight: a caller that arrives while a round runs waits for
    /// it and runs another only if the running one began before it arrived.
    async fn catch_up_now(self: &Arc<Self>) -> Result<u64, CommitError> {
        let r = self.catch_up_round().await;
        self.reachable.store(r.is_ok(), Ordering::SeqCst);
        r
    }

    async fn catch_up_round(self: &Arc<Self>) -> Result<u64, CommitError> {
        let ticket = self.rounds_started.load(Ordering::SeqCst);
        let _g = self.apply_lock.lock().await;
        if self.rounds_done.load(Ordering::SeqCst) > ticket {
            return Ok(self.applied());
        }
        let round = self.rounds_started.fetch_add(1, Ordering::SeqCst) + 1;
        self.metrics.catch_up_rounds.inc();
        if self.stranded() {
            return Err(CommitError::Unavailable(
                "this node cannot catch up with the change log; it must be rebuilt".into(),
            ));
        }
        // A node that has applied nothing starts from the latest snapshot, if any.
        if self.applied() == 0 {
            self.load_snapshot().await?;
        }
        loop {
            let from = self.applied();
            let (entries, trimmed) = self.fetch(from, 500).await?;
            if from < trimmed {
                return Err(self.strand(format!(
                    "it was away while the log was trimmed past its position: applied {from}, trimmed up to {trimmed}"
                )));
            }
            let Some(last) = entries.last().map(|e| e.seq) else { break };
            let c = self.clone();
            let now = now_ms();
            let applied = tokio::task::spawn_blocking(move || {
                for e in &entries {
                    c.apply(e).map_err(|err| format!("applying change {}: {err}", e.seq))?;
                    if e.origin != c.name {
                        c.metrics.lag_seconds.observe(now.saturating_sub(e.at_ms) as f64 / 1000.0);
                    }
                }
                c.index.set_cursor(CURSOR, last).map_err(|err| err.to_string())
            })
            .await
            .map_err(unavailable)?;
            if let Err(e) = applied {
                tracing::error!(error = %e, "cluster: cannot apply the change log");
                return Err(CommitError::Unavailable(e));
            }
            self.applied.store(last, Ordering::SeqCst);
            self.metrics.applied_seq.set(last as i64);
        }
        self.rounds_done.store(round, Ordering::SeqCst);
        Ok(self.applied())
    }

    /// Entries after `after` (at most `limit`), and how far the log has been trimmed.
    async fn fetch(&self, after: u64, limit: i64) -> Result<(Vec<Entry>, u64), CommitError> {
        let client = self.pool.get().await.map_err(|e| {
            self.metrics.postgres_errors.inc();
            unavailable(e)
        })?;
        // Prepared once per connection: a catch-up that finds nothing new (what every
        // consistent read does) is then one round trip.
        let pg_error = |e| {
            self.metrics.postgres_errors.inc();
            unavailable(e)
        };
        // One row even when nothing is new (the trim position, entry columns NULL).
        let stmt = client
            .prepare_cached(
                "SELECT s.trimmed_upto, c.seq, c.origin, (extract(epoch FROM c.at) * 1000)::bigint, c.body \
                 FROM cluster_log_state s LEFT JOIN LATERAL ( \
                     SELECT seq, origin, at, body FROM cluster_changes WHERE seq > $1 ORDER BY seq LIMIT $2 \
                 ) c ON true WHERE s.id = 1",
            )
            .await
            .map_err(pg_error)?;
        let rows = client.query(&stmt, &[&(after as i64), &limit]).await.map_err(pg_error)?;
        let trimmed = rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64);
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(seq) = row.get::<_, Option<i64>>(1) else { continue };
            let body: serde_json::Value = row.get(4);
            let write: Write = serde_json::from_value(body)
                .map_err(|e| CommitError::Unavailable(format!("change {seq} undecodable: {e}")))?;
            out.push(Entry { seq: seq as u64, origin: row.get(2), at_ms: row.get::<_, i64>(3) as u64, write });
        }
        Ok((out, trimmed))
    }

    /// The log's head (highest committed sequence).
    pub fn head(self: &Arc<Self>) -> impl Future<Output = Result<u64, CommitError>> + 'static {
        let c = self.clone();
        self.run(async move {
            let client = c.pool.get().await.map_err(unavailable)?;
            let row = client
                .query_one(
                    "SELECT greatest(coalesce(max(seq), 0), (SELECT trimmed_upto FROM cluster_log_state WHERE id = 1)) \
                     FROM cluster_changes",
                    &[],
                )
                .await
                .map_err(unavailable)?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    /// Every lease row: role, holder, epoch, seconds until it expires (negative: expired).
    pub fn leases(
        self: &Arc<Self>,
    ) -> impl Future<Output = Result<Vec<(String, String, i64, f64)>, CommitError>> + 'static {
        let c = self.clone();
        self.run(async move {
            let client = c.pool.get().await.map_err(unavailable)?;
            let rows = client
                .query(
                    "SELECT role, holder, epoch, extract(epoch FROM expires_at - now())::float8 FROM cluster_leases ORDER BY role",
                    &[],
                )
                .await
                .map_err(unavailable)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
        })
    }

    /// Mark `digest` as being committed by this node from before its file is published until
    /// its commit is applied: a concurrent GC removal applied meanwhile keeps the file.
    pub fn committing(&self, digest: &Digest) -> Committing<'_> {
        *self.committing.lock().unwrap_or_else(|p| p.into_inner()).entry(digest.clone()).or_insert(0) += 1;
        Committing { c: self, digest: digest.clone() }
    }

    /// Whether this node is between publishing a blob's file and applying its commit.
    pub fn is_committing(&self, digest: &Digest) -> bool {
        self.committing.lock().unwrap_or_else(|p| p.into_inner()).contains_key(digest)
    }

    /// Take a single-writer lease (`gc`), or learn who holds it.
    pub fn acquire(self: &Arc<Self>, role: &str) -> Result<Lease, LeaseError> {
        let (c, role) = (self.clone(), role.to_owned());
        self.block_on(async move {
            let client = c.pool.get().await.map_err(|e| LeaseError::Unavailable(e.to_string()))?;
            let ttl = c.cfg.lease_ttl_secs as f64;
            let rows = client
                .query(lease::ACQUIRE, &[&role, &c.name, &ttl])
                .await
                .map_err(|e| LeaseError::Unavailable(e.to_string()))?;
            if let Some(row) = rows.first() {
                return Ok(Lease { role, holder: c.name.clone(), epoch: row.get(0) });
            }
            let row =
                client.query_one(lease::HOLDER, &[&role]).await.map_err(|e| LeaseError::Unavailable(e.to_string()))?;
            Err(LeaseError::Held { role, holder: row.get(0), secs: row.get(1) })
        })
    }

    /// Renew a lease; false when it was lost (expired and taken, or fenced off).
    pub fn renew(self: &Arc<Self>, l: &Lease) -> bool {
        let (c, l) = (self.clone(), l.clone());
        self.block_on(async move {
            let Ok(client) = c.pool.get().await else { return false };
            let ttl = c.cfg.lease_ttl_secs as f64;
            client.execute(lease::RENEW, &[&l.role, &l.holder, &l.epoch, &ttl]).await.is_ok_and(|n| n == 1)
        })
    }

    /// Give a lease up (it expires now).
    pub fn release(self: &Arc<Self>, l: &Lease) {
        let (c, l) = (self.clone(), l.clone());
        self.block_on(async move {
            if let Ok(client) = c.pool.get().await {
                let _ = client.execute(lease::RELEASE, &[&l.role, &l.holder, &l.epoch]).await;
            }
        })
    }

    /// Stop the tail and the heartbeat; Postgres connections close.
    pub fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
        let rt = self.rt.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rt) = rt {
            rt.shutdown_timeout(grace);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
