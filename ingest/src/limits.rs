use std::time::Duration;

/// Per-tenant validation limits, with Pyroscope's defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest decompressed profile, in bytes.
    pub max_profile_size_bytes: usize,
    /// Most samples in one profile.
    pub max_profile_samples: usize,
    /// Most labels on one sample.
    pub max_sample_labels: usize,
    /// Deepest stack; deeper stacks lose frames on the root side.
    pub max_stack_depth: usize,
    /// Longest symbol; longer ones keep their tail.
    pub max_symbol_length: usize,
    /// Most labels per series.
    pub max_label_names_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    /// Profiles older than this are refused (zero disables the check).
    pub reject_older_than: Duration,
    /// Profiles further in the future than this are refused (zero disables the check).
    pub reject_newer_than: Duration,
    /// Sustained per-tenant ingest rate, uncompressed bytes per second (zero disables).
    pub ingestion_rate_bytes: f64,
    /// Burst allowance of the per-tenant token bucket, in bytes.
    pub ingestion_burst_bytes: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_profile_size_bytes: 4 * 1024 * 1024,
            max_profile_samples: 16_000,
            max_sample_labels: 100,
            max_stack_depth: 1000,
            max_symbol_length: 65_535,
            max_label_names_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            reject_older_than: Duration::from_secs(3600),
            reject_newer_than: Duration::from_secs(600),
            ingestion_rate_bytes: 4.0 * 1024.0 * 1024.0,
            ingestion_burst_bytes: 2.0 * 1024.0 * 1024.0,
        }
    }
}
