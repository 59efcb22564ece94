//! Cluster metrics (`berth_cluster_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A result label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok`, or why not.
    pub result: String,
}

/// Counters, gauges and histograms of the cluster layer.
pub struct ClusterMetrics {
    /// Last log sequence applied to the local index.
    pub applied_seq: Gauge,
    /// Commits to the log by outcome.
    pub commits: Family<ResultLabel, Counter>,
    /// Time of a commit (append transaction), seconds.
    pub commit_seconds: Histogram,
    /// Commits per append transaction (group commit).
    pub commit_batch_size: Histogram,
    /// Append transactions (each holds one or more commits).
    pub commit_transactions: Counter,
    /// Replication lag: commit on another node → applied here, seconds.
    pub lag_seconds: Histogram,
    /// Catch-ups started by a miss (a name this node did not know yet).
    pub miss_catch_ups: Counter,
    /// Consistent reads (tags, lists) by outcome: `fresh` (checked with the log) or `stale`
    /// (Postgres unreachable: served from the local view).
    pub fresh_reads: Family<ResultLabel, Counter>,
    /// Catch-up rounds run (each one Postgres query when nothing is new): the tail's, misses'
    /// and consistent reads' together; concurrent callers share a round.
    pub catch_up_rounds: Counter,
    /// Upload requests forwarded to the owning node.
    pub forwarded: Family<ResultLabel, Counter>,
    /// Postgres errors (connection, timeout, statement).
    pub postgres_errors: Counter,
    /// Nodes with a recent heartbeat (this one included).
    pub live_nodes: Gauge,
    /// 1 when this node is behind the trimmed part of the log (it must be emptied).
    pub stranded: Gauge,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        let buckets =
            [0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        ClusterMetrics {
            applied_seq: Gauge::default(),
            commits: Family::default(),
            commit_seconds: Histogram::new(buckets.into_iter()),
            commit_batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0].into_iter()),
            commit_transactions: Counter::default(),
            lag_seconds: Histogram::new(buckets.into_iter()),
            miss_catch_ups: Counter::default(),
            fresh_reads: Family::default(),
            catch_up_rounds: Counter::default(),
            forwarded: Family::default(),
            postgres_errors: Counter::default(),
            live_nodes: Gauge::default(),
            stranded: Gauge::default(),
        }
    }
}

impl ClusterMetrics {
    /// Register into the node's registry.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("cluster");
        r.register("applied_seq", "Last change-log sequence applied to the local index", self.applied_seq.clone());
        r.register("commits", "Change-log commits by result", self.commits.clone());
        r.register("commit_seconds", "Change-log commit time", self.commit_seconds.clone());
        r.register(
            "commit_batch_size",
            "Commits sharing one append transaction (group commit)",
            self.commit_batch_size.clone(),
        );
        r.register(
            "commit_transactions",
            "Append transactions (each carries one or more commits)",
            self.commit_transactions.clone(),
        );
        r.register(
            "replication_lag_seconds",
            "Commit on another node to applied here (the node clocks' skew included)",
            self.lag_seconds.clone(),
        );
        r.register("miss_catch_ups", "Catch-ups with the change log started by a miss", self.miss_catch_ups.clone());
        r.register(
            "fresh_reads",
            "Reads of tags and lists checked with the change log first (fresh), or served from this node's view because Postgres was unreachable (stale)",
            self.fresh_reads.clone(),
        );
        r.register(
            "catch_up_rounds",
            "Catch-up rounds with the change log (the tail's, misses' and consistent reads'; concurrent callers share one)",
            self.catch_up_rounds.clone(),
        );
        r.register("forwarded", "Upload requests forwarded to the owning node, by result", self.forwarded.clone());
        r.register(
            "postgres_errors",
            "Postgres failures (connection, timeout, statement)",
            self.postgres_errors.clone(),
        );
        r.register("live_nodes", "Nodes with a recent heartbeat", self.live_nodes.clone());
        r.register(
            "stranded",
            "1 when this node is behind the trimmed change log and must be emptied to rejoin",
            self.stranded.clone(),
        );
    }

    pub(crate) fn fresh_read(&self, result: &str) {
        self.fresh_reads.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
    }

    pub(crate) fn commit(&self, result: &str) {
        self.commits.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
    }
}
