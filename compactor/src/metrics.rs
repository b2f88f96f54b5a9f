use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Compactor metrics, registered once into the process registry.
#[derive(Debug, Clone, Default)]
pub struct CompactorMetrics {
    pub cycles: Counter,
    /// Jobs by outcome: `done`, `skipped` (claimed by another compactor), `conflict`, `failed`.
    pub jobs: Family<Vec<(String, String)>, Counter>,
    pub blocks_compacted: Counter,
    pub blocks_written: Counter,
    pub bytes_written: Counter,
    pub duplicate_profiles: Counter,
    pub deleted_profiles: Counter,
    pub blocks_expired: Counter,
    pub blocks_deleted: Counter,
    /// Unix seconds of the last cycle that finished without a failed job.
    pub last_success: Gauge,
}

impl CompactorMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("profusion_compactor");
        r.register("cycles", "Compaction cycles run", self.cycles.clone());
        r.register("jobs", "Compaction jobs, by outcome", self.jobs.clone());
        r.register(
            "blocks_compacted",
            "Source blocks merged into larger ones",
            self.blocks_compacted.clone(),
        );
        r.register(
            "blocks_written",
            "Blocks written by compaction",
            self.blocks_written.clone(),
        );
        r.register(
            "written_bytes",
            "Bytes of blocks written by compaction",
            self.bytes_written.clone(),
        );
        r.register(
            "duplicate_profiles_removed",
            "Profiles dropped as copies of one already kept (replicas, retried pushes)",
            self.duplicate_profiles.clone(),
        );
        r.register(
            "deleted_profiles_removed",
            "Profiles left out of rewritten blocks because a tombstone deletes them",
            self.deleted_profiles.clone(),
        );
        r.register(
            "blocks_expired",
            "Blocks retired by the retention period",
            self.blocks_expired.clone(),
        );
        r.register(
            "blocks_deleted",
            "Retired or abandoned blocks whose files were deleted",
            self.blocks_deleted.clone(),
        );
        r.register(
            "last_successful_cycle_timestamp_seconds",
            "When the last cycle without a failed job finished",
            self.last_success.clone(),
        );
    }

    pub(crate) fn job(&self, outcome: &str) {
        self.jobs
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }
}
