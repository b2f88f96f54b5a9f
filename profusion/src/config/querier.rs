//! The read path: querier, query frontend and query scheduler.

use std::time::Duration;

use clap::Args;
use profusion_engine::service::QueryLimits;

use super::parse_duration;

/// The querier role, and the limits the query frontend applies to every read.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Querier")]
pub(crate) struct QuerierFlags {
    /// Memory budget of one query, in bytes; a query over it fails with `resource_exhausted`
    /// and the server keeps serving others.
    #[arg(long = "querier.max-query-memory", env = "PROFUSION_QUERIER_MAX_QUERY_MEMORY", default_value_t = 1024 * 1024 * 1024)]
    pub(crate) query_memory_bytes: usize,

    /// Bytes of resolved stacks and frames a querier keeps between queries (they are named by
    /// hashes of their content, so they never go stale); 0 keeps none and resolves every
    /// query's symbols from the blocks.
    #[arg(long = "querier.symbol-cache-size", env = "PROFUSION_QUERIER_SYMBOL_CACHE_SIZE", default_value_t = 256 * 1024 * 1024)]
    pub(crate) symbol_cache_bytes: usize,

    /// Bytes of per-file flame-graph aggregates of block files a querier keeps between
    /// queries: a block never changes, so the same range asked again (a dashboard refreshing)
    /// reads only the head and the blocks it has not summed yet; 0 keeps none.
    #[arg(long = "querier.block-cache-size", env = "PROFUSION_QUERIER_BLOCK_CACHE_SIZE", default_value_t = 256 * 1024 * 1024)]
    pub(crate) block_cache_bytes: usize,

    /// Querier workers running queries at once.
    #[arg(
        long = "querier.max-concurrent",
        env = "PROFUSION_QUERIER_MAX_CONCURRENT",
        default_value_t = 4
    )]
    pub(crate) querier_max_concurrent: usize,

    /// Longest a querier waits for an ingester of another process to start answering (pinning
    /// a head, starting a scan); a slower or dead one counts as down for the query.
    #[arg(long = "querier.remote-timeout", env = "PROFUSION_QUERIER_REMOTE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(crate) remote_timeout: Duration,

    /// Split flame-graph and series queries into parts of this length, run in parallel
    /// (0s never splits).
    #[arg(long = "querier.split-queries-by-interval", env = "PROFUSION_QUERIER_SPLIT_QUERIES_BY_INTERVAL", default_value = "0s", value_parser = parse_duration)]
    pub(crate) split_queries_by_interval: Duration,

    /// Longest time range one query may cover (0s disables the limit).
    #[arg(long = "querier.max-query-length", env = "PROFUSION_QUERIER_MAX_QUERY_LENGTH", default_value = "24h", value_parser = parse_duration)]
    pub(crate) max_query_length: Duration,

    /// How far back queries may read: older starts are moved up to now minus this, and a range
    /// entirely older answers empty (0s disables the limit).
    #[arg(long = "querier.max-query-lookback", env = "PROFUSION_QUERIER_MAX_QUERY_LOOKBACK", default_value = "7d", value_parser = parse_duration)]
    pub(crate) max_query_lookback: Duration,

    /// Flame-graph nodes when a request leaves `max_nodes` at 0.
    #[arg(
        long = "querier.max-flamegraph-nodes-default",
        env = "PROFUSION_QUERIER_MAX_FLAMEGRAPH_NODES_DEFAULT",
        default_value_t = 8192
    )]
    pub(crate) max_flamegraph_nodes_default: i64,

    /// Largest `max_nodes` a request may ask for.
    #[arg(
        long = "querier.max-flamegraph-nodes-max",
        env = "PROFUSION_QUERIER_MAX_FLAMEGRAPH_NODES_MAX",
        default_value_t = 1_048_576
    )]
    pub(crate) max_flamegraph_nodes_max: i64,
}

impl QuerierFlags {
    /// The read service's query limits.
    pub(crate) fn query_limits(&self) -> QueryLimits {
        QueryLimits {
            max_query_lookback_millis: self.max_query_lookback.as_millis() as i64,
            max_query_length_millis: self.max_query_length.as_millis() as i64,
            max_nodes_default: self.max_flamegraph_nodes_default,
            max_nodes_max: self.max_flamegraph_nodes_max,
        }
    }
}

/// The query-scheduler role.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Query scheduler")]
pub(crate) struct SchedulerFlags {
    /// Queued queries a tenant may have; more are refused with 429 until the queue drains.
    #[arg(
        long = "query-scheduler.max-outstanding-requests-per-tenant",
        env = "PROFUSION_QUERY_SCHEDULER_MAX_OUTSTANDING_REQUESTS_PER_TENANT",
        default_value_t = 100
    )]
    pub(crate) max_outstanding_per_tenant: usize,
}
