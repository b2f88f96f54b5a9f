use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Write-path metrics, registered once into the process registry.
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    pub profiles_received: Counter,
    pub bytes_received: Counter,
    pub rejected: Family<Vec<(String, String)>, Counter>,
    pub head_profiles: Counter,
    pub head_bytes: Gauge,
    pub flushes: Counter,
    /// 1 while a flush writes a block (for dashboards, and for the benchmark to tell pushes
    /// made during a flush from the others).
    pub flushing: Gauge,
    /// Writes that found the head full and waited for a flush.
    pub head_full_waits: Counter,
    pub block_bytes: Counter,
    pub wal_corruptions: Counter,
    /// Active series per tenant (for the series limit), refreshed once a minute.
    pub active_series: Family<Vec<(String, String)>, Gauge>,
}

impl IngestMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("profusion");
        r.register(
            "ingest_profiles",
            "Profiles accepted by the distributor",
            self.profiles_received.clone(),
        );
        r.register(
            "ingest_uncompressed_bytes",
            "Uncompressed bytes accepted by the distributor",
            self.bytes_received.clone(),
        );
        r.register(
            "ingest_rejected",
            "Profiles rejected, by reason",
            self.rejected.clone(),
        );
        r.register(
            "head_profiles_appended",
            "Series profiles appended to ingester heads",
            self.head_profiles.clone(),
        );
        r.register(
            "head_bytes",
            "Bytes held by ingester heads, as allocated",
            self.head_bytes.clone(),
        );
        r.register(
            "ingester_flush_in_progress",
            "1 while the ingester writes a block from its head",
            self.flushing.clone(),
        );
        r.register(
            "ingester_head_full_waits",
            "Writes that found the head at --ingester.max-head-bytes and waited for a flush",
            self.head_full_waits.clone(),
        );
        r.register(
            "ingester_flushes",
            "WAL segments flushed into blocks",
            self.flushes.clone(),
        );
        r.register(
            "block_bytes_written",
            "Bytes of block files uploaded",
            self.block_bytes.clone(),
        );
        r.register(
            "ingester_active_series",
            "Series written in the last ten minutes, per tenant (the series limit counts these)",
            self.active_series.clone(),
        );
        r.register(
            "wal_corruptions",
            "Damaged WAL segments found on recovery",
            self.wal_corruptions.clone(),
        );
    }

    pub(crate) fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }
}
