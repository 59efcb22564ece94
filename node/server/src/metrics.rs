//! Prometheus metrics, shared by all cores (atomic counters; no lock on the request path).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Endpoint name (see `Endpoint::name`).
    pub endpoint: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// Status code.
    pub status: u16,
}

/// Labels of a latency metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// Endpoint name.
    pub endpoint: &'static str,
}

/// All node metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by endpoint, method, status.
    pub requests: Family<RequestLabels, Counter>,
    /// Latency by endpoint, seconds.
    pub latency: Family<EndpointLabels, Histogram>,
    /// Request body bytes received.
    pub bytes_in: Counter,
    /// Response body bytes sent.
    pub bytes_out: Counter,
    /// Response body bytes sent with sendfile(2), i.e. without a user-space copy.
    pub sendfile_bytes: Counter,
    /// Open upload sessions (sampled at scrape).
    pub upload_sessions: Gauge,
    /// Committed blobs (sampled at scrape).
    pub blobs: Gauge,
    /// Bytes of committed blobs (sampled at scrape).
    pub blob_bytes: Gauge,
    /// Open connections.
    pub connections: Gauge,
    /// Blob GETs by where the bytes came from (`local` hit, `s3` miss, `s3_range`, `redirect`).
    pub blob_reads: Family<SourceLabels, Counter>,
    /// Blob response bytes by source.
    pub blob_read_bytes: Family<SourceLabels, Counter>,
    /// Bytes with a local file (sampled at scrape).
    pub local_bytes: Gauge,
    /// Blobs waiting to be tiered to S3 (sampled at scrape).
    pub tier_pending: Gauge,
    /// Their bytes (sampled at scrape).
    pub tier_pending_bytes: Gauge,
    /// Manifest pulls refused by the vulnerability policy.
    pub policy_denials: Counter,
    /// Blob GETs answered from the small-blob cache.
    pub small_blob_hits: Counter,
    /// Size of the data directory's filesystem (sampled at scrape).
    pub disk_size: Gauge,
    /// Free bytes there (sampled at scrape).
    pub disk_free: Gauge,
    /// Connections refused or limited to health checks, by reason (`total`, `address`).
    pub connections_refused: Family<ReasonLabels, Counter>,
    /// Bytes held by the verified-token caches (sampled at scrape).
    pub token_cache_bytes: Gauge,
    /// Audit occurrences lost, by class (`denials`, `security`; sampled at scrape).
    pub audit_dropped: Family<ClassLabels, Gauge>,
}

/// Labels of the audit loss gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// `denials` or `security`.
    pub class: &'static str,
}

/// Labels of a refusal metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: &'static str,
}

/// Labels of a blob read metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Where the bytes came from.
    pub source: &'static str,
}

impl Metrics {
    /// Register everything.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let m = Metrics {
            requests,
            latency,
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            sendfile_bytes: Counter::default(),
            upload_sessions: Gauge::default(),
            blobs: Gauge::default(),
            blob_bytes: Gauge::default(),
            connections: Gauge::default(),
            blob_reads: Family::default(),
            blob_read_bytes: Family::default(),
            local_bytes: Gauge::default(),
            tier_pending: Gauge::default(),
            tier_pending_bytes: Gauge::default(),
            policy_denials: Counter::default(),
            small_blob_hits: Counter::default(),
            disk_size: Gauge::default(),
            disk_free: Gauge::default(),
            connections_refused: Family::default(),
            token_cache_bytes: Gauge::default(),
            audit_dropped: Family::default(),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests by endpoint, method and status", m.requests.clone());
        registry.register("http_request_duration_seconds", "Request latency by endpoint", m.latency.clone());
        registry.register("http_request_body_bytes", "Request body bytes received", m.bytes_in.clone());
        registry.register("http_response_body_bytes", "Response body bytes sent", m.bytes_out.clone());
        registry.register("upload_sessions", "Open upload sessions", m.upload_sessions.clone());
        registry.register(
            "http_response_sendfile_bytes",
            "Response body bytes sent with sendfile (zero-copy)",
            m.sendfile_bytes.clone(),
        );
        registry.register("store_blobs", "Committed blobs", m.blobs.clone());
        registry.register("store_blob_bytes", "Bytes of committed blobs on local disk", m.blob_bytes.clone());
        registry.register("http_connections", "Open client connections", m.connections.clone());
        registry.register(
            "http_connections_refused",
            "Connections over a limit (total or per client address): answered only for health checks, or closed",
            m.connections_refused.clone(),
        );
        registry.register(
            "blob_reads",
            "Blob GETs by source: local (cache hit), s3 (miss, read through), s3_range, redirect",
            m.blob_reads.clone(),
        );
        registry.register("blob_read_bytes", "Blob bytes served by source", m.blob_read_bytes.clone());
        registry.register("store_local_bytes", "Blob bytes with a local file", m.local_bytes.clone());
        registry.register(
            "small_blob_cache_hits",
            "Blob GETs answered from the in-memory small-blob cache",
            m.small_blob_hits.clone(),
        );
        registry.register("data_dir_size_bytes", "Size of the data directory's filesystem", m.disk_size.clone());
        registry.register("data_dir_free_bytes", "Free bytes on the data directory's filesystem", m.disk_free.clone());
        registry.register(
            "scan_policy_denials",
            "Manifest pulls refused by the vulnerability policy",
            m.policy_denials.clone(),
        );
        registry.register(
            "auth_token_cache_bytes",
            "Bytes held by the verified-token caches of the serving cores (bounded by auth.token.verified_cache_bytes per core)",
            m.token_cache_bytes.clone(),
        );
        registry.register(
            "audit_events_dropped",
            "Audit occurrences lost from the node's ring before the sidecar copied them, by class (denials, security)",
            m.audit_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Register the tier backlog gauges: only when S3 tiering is on (with it off every blob
    /// would count as pending, and a backlog alert would always fire).
    pub fn register_tier_gauges(&mut self, cache: &berth_tiering::CacheConfig) {
        let (pending, bytes) = (self.tier_pending.clone(), self.tier_pending_bytes.clone());
        self.registry.register("tier_pending_blobs", "Blobs committed locally and not yet in S3", pending);
        self.registry.register("tier_pending_bytes", "Bytes of blobs not yet in S3", bytes);
        let gauge = |v: f64| {
            let g: Gauge = Gauge::default();
            g.set(v as i64);
            g
        };
        self.registry.register(
            "cache_max_bytes",
            "Local cache budget (cache.max_bytes)",
            gauge(cache.max_bytes as f64),
        );
        self.registry.register(
            "cache_high_watermark_bytes",
            "Eviction starts above this many local bytes",
            gauge(cache.max_bytes as f64 * cache.high_watermark),
        );
    }

    /// The registry, for other components' metrics (before the node starts).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Count a blob read.
    pub fn blob_read(&self, source: &'static str, bytes: u64) {
        self.blob_reads.get_or_create(&SourceLabels { source }).inc();
        self.blob_read_bytes.get_or_create(&SourceLabels { source }).inc_by(bytes);
    }

    /// Text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
