//! Per-upstream metrics: cache outcomes, upstream latency, errors, bytes fetched.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `upstream` and one more label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    /// Upstream name.
    pub upstream: String,
    /// What: an outcome, a request kind, an error reason.
    pub what: String,
}

/// The proxy's metrics (cheap to clone: every field is shared).
#[derive(Clone)]
pub struct ProxyMetrics {
    /// `hit` (served from cache), `miss` (fetched), `revalidated` (tag unchanged upstream),
    /// `changed` (tag moved upstream), `stale` (upstream failed, cache served).
    pub cache: Family<Labels, Counter>,
    /// Upstream request latency by kind.
    pub latency: Family<Labels, Histogram>,
    /// Upstream failures by reason.
    pub errors: Family<Labels, Counter>,
    /// Bytes fetched from each upstream.
    pub bytes: Family<Labels, Counter>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics {
            cache: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0].into_iter())
            }),
            errors: Family::default(),
            bytes: Family::default(),
        }
    }
}

fn labels(upstream: &str, what: &str) -> Labels {
    Labels { upstream: upstream.to_owned(), what: what.to_owned() }
}

impl ProxyMetrics {
    /// Register under `berth_proxy_*`.
    pub fn register(&self, r: &mut Registry) {
        r.register("proxy_cache", "Pull-through cache outcomes by upstream (label what)", self.cache.clone());
        r.register("proxy_upstream_seconds", "Upstream request latency by kind (label what)", self.latency.clone());
        r.register("proxy_upstream_errors", "Upstream failures by reason (label what)", self.errors.clone());
        r.register("proxy_fetched_bytes", "Bytes fetched from each upstream", self.bytes.clone());
    }

    /// Count a cache outcome.
    pub fn outcome(&self, upstream: &str, what: &str) {
        self.cache.get_or_create(&labels(upstream, what)).inc();
    }

    /// Record an upstream request's latency.
    pub fn observe(&self, upstream: &str, kind: &str, d: Duration) {
        self.latency.get_or_create(&labels(upstream, kind)).observe(d.as_secs_f64());
    }

    /// Count an upstream failure.
    pub fn error(&self, upstream: &str, reason: &str) {
        self.errors.get_or_create(&labels(upstream, reason)).inc();
    }

    /// Count bytes fetched.
    pub fn fetched(&self, upstream: &str, n: u64) {
        self.bytes.get_or_create(&labels(upstream, "all")).inc_by(n);
    }
}
