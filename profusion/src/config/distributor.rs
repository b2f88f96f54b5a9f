//! The distributor: request sizes, rate limits and what a profile must satisfy.

use std::time::Duration;

use clap::Args;
use profusion_ingest::limits::Limits;

use super::parse_duration;

/// The distributor role: bodies and per-tenant ingest rates.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Distributor")]
pub(crate) struct DistributorFlags {
    /// Largest request body accepted, in MiB (before decompression).
    #[arg(
        long = "distributor.ingestion-body-limit-mb",
        env = "PROFUSION_DISTRIBUTOR_INGESTION_BODY_LIMIT_MB",
        default_value_t = 256.0
    )]
    pub(crate) ingestion_body_limit_mb: f64,

    /// Per-tenant sustained ingest rate, MiB/s of uncompressed profiles (0 disables).
    #[arg(
        long = "distributor.ingestion-rate-limit-mb",
        env = "PROFUSION_DISTRIBUTOR_INGESTION_RATE_LIMIT_MB",
        default_value_t = 4.0
    )]
    pub(crate) ingestion_rate_limit_mb: f64,

    /// Per-tenant burst above the sustained rate, MiB.
    #[arg(
        long = "distributor.ingestion-burst-size-mb",
        env = "PROFUSION_DISTRIBUTOR_INGESTION_BURST_SIZE_MB",
        default_value_t = 2.0
    )]
    pub(crate) ingestion_burst_size_mb: f64,

    /// Longest a write to one ingester of another process may take, connecting included;
    /// a replica that does not answer in time counts as failed for the quorum.
    #[arg(long = "distributor.push.timeout", env = "PROFUSION_DISTRIBUTOR_PUSH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub(crate) push_timeout: Duration,
}

impl DistributorFlags {
    pub(crate) fn body_limit_bytes(&self) -> usize {
        (self.ingestion_body_limit_mb * MIB) as usize
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// What an incoming profile must satisfy.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Validation")]
pub(crate) struct ValidationFlags {
    /// Largest profile accepted, in bytes after decompression.
    #[arg(long = "validation.max-profile-size-bytes", env = "PROFUSION_VALIDATION_MAX_PROFILE_SIZE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub(crate) max_profile_size_bytes: usize,

    /// Most samples in one profile.
    #[arg(
        long = "validation.max-profile-stacktrace-samples",
        env = "PROFUSION_VALIDATION_MAX_PROFILE_STACKTRACE_SAMPLES",
        default_value_t = 16_000
    )]
    pub(crate) max_profile_samples: usize,

    /// Most labels on one sample.
    #[arg(
        long = "validation.max-profile-stacktrace-sample-labels",
        env = "PROFUSION_VALIDATION_MAX_PROFILE_STACKTRACE_SAMPLE_LABELS",
        default_value_t = 100
    )]
    pub(crate) max_sample_labels: usize,

    /// Deepest stack kept; deeper stacks lose frames on the root side.
    #[arg(
        long = "validation.max-profile-stacktrace-depth",
        env = "PROFUSION_VALIDATION_MAX_PROFILE_STACKTRACE_DEPTH",
        default_value_t = 1000
    )]
    pub(crate) max_stack_depth: usize,

    /// Longest symbol kept; longer ones keep their last bytes.
    #[arg(
        long = "validation.max-profile-symbol-value-length",
        env = "PROFUSION_VALIDATION_MAX_PROFILE_SYMBOL_VALUE_LENGTH",
        default_value_t = 65_535
    )]
    pub(crate) max_symbol_length: usize,

    /// Most labels per series.
    #[arg(
        long = "validation.max-label-names-per-series",
        env = "PROFUSION_VALIDATION_MAX_LABEL_NAMES_PER_SERIES",
        default_value_t = 30
    )]
    pub(crate) max_label_names_per_series: usize,

    /// Longest label name, in bytes.
    #[arg(
        long = "validation.max-length-label-name",
        env = "PROFUSION_VALIDATION_MAX_LENGTH_LABEL_NAME",
        default_value_t = 1024
    )]
    pub(crate) max_label_name_length: usize,

    /// Longest label value, in bytes.
    #[arg(
        long = "validation.max-length-label-value",
        env = "PROFUSION_VALIDATION_MAX_LENGTH_LABEL_VALUE",
        default_value_t = 2048
    )]
    pub(crate) max_label_value_length: usize,

    /// Refuse profiles older than this (0s disables).
    #[arg(long = "validation.reject-older-than", env = "PROFUSION_VALIDATION_REJECT_OLDER_THAN", default_value = "1h", value_parser = parse_duration)]
    pub(crate) reject_older_than: Duration,

    /// Refuse profiles further in the future than this (0s disables).
    #[arg(long = "validation.reject-newer-than", env = "PROFUSION_VALIDATION_REJECT_NEWER_THAN", default_value = "10m", value_parser = parse_duration)]
    pub(crate) reject_newer_than: Duration,
}

impl ValidationFlags {
    /// The limits profiles are decoded and validated under, with the tenant rates of
    /// `distributor`.
    pub(crate) fn limits(&self, distributor: &DistributorFlags) -> Limits {
        Limits {
            max_profile_size_bytes: self.max_profile_size_bytes,
            max_profile_samples: self.max_profile_samples,
            max_sample_labels: self.max_sample_labels,
            max_stack_depth: self.max_stack_depth,
            max_symbol_length: self.max_symbol_length,
            max_label_names_per_series: self.max_label_names_per_series,
            max_label_name_length: self.max_label_name_length,
            max_label_value_length: self.max_label_value_length,
            reject_older_than: self.reject_older_than,
            reject_newer_than: self.reject_newer_than,
            ingestion_rate_bytes: distributor.ingestion_rate_limit_mb * MIB,
            ingestion_burst_bytes: distributor.ingestion_burst_size_mb * MIB,
        }
    }
}
