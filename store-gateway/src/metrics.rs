use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Store-gateway metrics, registered once into the process registry.
#[derive(Debug, Clone, Default)]
pub struct StoreGatewayMetrics {
    /// Byte-range chunk lookups by tier (`memory`, `disk`) and result (`hit`, `miss`).
    pub(crate) chunk_lookups: Family<Labels, Counter>,
    /// Bytes held, by tier.
    pub(crate) cache_bytes: Family<Labels, Gauge>,
    /// Chunks evicted, by tier.
    pub(crate) evictions: Family<Labels, Counter>,
    /// Parquet metadata lookups by result.
    pub(crate) metadata_lookups: Family<Labels, Counter>,
    pub(crate) metadata_bytes: Gauge,
    /// Requests sent to the object store, by operation (`get`, `head`, `list`, `other`).
    pub(crate) store_requests: Family<Labels, Counter>,
    pub(crate) store_bytes: Counter,
}

impl StoreGatewayMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("profusion_store_gateway");
        r.register(
            "cache_requests",
            "Lookups of object-store byte ranges in the cache, by tier and result",
            self.chunk_lookups.clone(),
        );
        r.register(
            "cache_bytes",
            "Bytes of object-store data held in the cache, by tier",
            self.cache_bytes.clone(),
        );
        r.register(
            "cache_evictions",
            "Cached byte ranges evicted to make room, by tier",
            self.evictions.clone(),
        );
        r.register(
            "metadata_cache_requests",
            "Lookups of decoded Parquet footers and page indexes, by result",
            self.metadata_lookups.clone(),
        );
        r.register(
            "metadata_cache_bytes",
            "Bytes of decoded Parquet metadata held",
            self.metadata_bytes.clone(),
        );
        r.register(
            "object_store_requests",
            "Requests the store-gateway sent to the object store, by operation",
            self.store_requests.clone(),
        );
        r.register(
            "object_store_read_bytes",
            "Bytes the store-gateway read from the object store",
            self.store_bytes.clone(),
        );
    }

    pub(crate) fn lookup(&self, tier: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.chunk_lookups
            .get_or_create(&vec![("tier", tier), ("result", result)])
            .inc();
    }

    pub(crate) fn held(&self, tier: &'static str, bytes: usize) {
        self.cache_bytes
            .get_or_create(&vec![("tier", tier)])
            .set(bytes as i64);
    }

    pub(crate) fn evicted(&self, tier: &'static str, n: usize) {
        if n > 0 {
            self.evictions
                .get_or_create(&vec![("tier", tier)])
                .inc_by(n as u64);
        }
    }

    pub(crate) fn metadata_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.metadata_lookups
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    pub(crate) fn request(&self, operation: &'static str) {
        self.store_requests
            .get_or_create(&vec![("operation", operation)])
            .inc();
    }

    /// Requests sent so far, every operation together (for tests and benchmarks in process).
    pub fn object_store_requests(&self) -> u64 {
        ["get", "head", "list", "other"]
            .iter()
            .map(|op| self.object_store_requests_of(op))
            .sum()
    }

    /// Requests of one operation sent so far.
    pub fn object_store_requests_of(&self, operation: &'static str) -> u64 {
        self.store_requests
            .get(&vec![("operation", operation)])
            .map_or(0, |c| c.get())
    }

    /// Bytes held by tier.
    pub fn cache_bytes(&self) -> &Family<Labels, Gauge> {
        &self.cache_bytes
    }
}
