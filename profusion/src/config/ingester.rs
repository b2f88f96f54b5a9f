//! The ingester: its identity on the ring, its series limits and when its head is flushed.

use std::time::Duration;

use clap::Args;

use super::parse_duration;

/// The ingester role.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Ingester")]
pub(crate) struct IngesterFlags {
    /// Identity of this ingester on the ring and in block metadata; keep it stable across
    /// restarts so its WAL is recovered correctly.
    #[arg(
        long = "ingester.id",
        env = "PROFUSION_INGESTER_ID",
        default_value = "local"
    )]
    pub(crate) ingester_id: String,

    /// Replicas each series is written to (a majority must succeed).
    #[arg(
        long = "ingester.ring.replication-factor",
        env = "PROFUSION_INGESTER_RING_REPLICATION_FACTOR",
        default_value_t = 1
    )]
    pub(crate) replication_factor: usize,

    /// Most active series (written in the last 10 minutes) a tenant may have on this ingester;
    /// a push that would exceed it is refused whole with 429 (0: no limit).
    #[arg(
        long = "ingester.max-local-series-per-tenant",
        env = "PROFUSION_INGESTER_MAX_LOCAL_SERIES_PER_TENANT",
        default_value_t = 0
    )]
    pub(crate) max_local_series_per_tenant: usize,

    /// Most active series a tenant may have across the cluster; each ingester enforces its
    /// share (this × replication factor / ingesters). The smaller of the two limits applies
    /// (0: no limit).
    #[arg(
        long = "ingester.max-global-series-per-tenant",
        env = "PROFUSION_INGESTER_MAX_GLOBAL_SERIES_PER_TENANT",
        default_value_t = 5000
    )]
    pub(crate) max_global_series_per_tenant: usize,

    /// Flush the head into a block once it has collected data for this long.
    #[arg(long = "pyroscopedb.max-block-duration", env = "PROFUSION_PYROSCOPEDB_MAX_BLOCK_DURATION", default_value = "1h", value_parser = parse_duration)]
    pub(crate) max_block_duration: Duration,

    /// Most memory the ingester's head may hold, blocks being flushed included: the head is
    /// flushed into a block when it reaches half of this, so the next half fills while the
    /// block is written, and writes wait for a flush once the whole is reached.
    #[arg(long = "ingester.max-head-bytes", env = "PROFUSION_INGESTER_MAX_HEAD_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub(crate) max_head_bytes: usize,

    /// How long a write waits for a flush to free room in a full head before it is refused
    /// as unavailable (503), for the client to retry.
    #[arg(long = "ingester.head-full-wait", env = "PROFUSION_INGESTER_HEAD_FULL_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub(crate) head_full_wait: Duration,

    /// How often the ingester checks whether the head is due for a flush.
    #[arg(long = "ingester.flush-check-interval", env = "PROFUSION_INGESTER_FLUSH_CHECK_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub(crate) flush_check_interval: Duration,
}
