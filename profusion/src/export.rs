//! `profusion export` and the scheduled export: a tenant's profiles from the blocks the
//! catalog lists to a data lake.
//!
//! It reads what the server reads, through the same flags and configuration file, but only
//! the blocks: the ingesters' heads belong to the running server. So the range is capped to
//! what the ingesters have surely flushed, and a later run exports the rest.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::physical_plan::SendableRecordBatchStream;
use profusion_engine::budget::QueryBudget;
use profusion_engine::querier::{Querier, QuerierConfig};
use profusion_export::{Destination, ExportError, ExportReport, ExportRequest, Progress, Rows};
use profusion_model::scan::{GenerationSummary, HeadSnapshots, HeadSource, ScanError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::config::{Config, ExportArgs};
use crate::storage::{open_catalog, open_store};

/// How long after its time a profile may still reach an ingester (agents upload every 10 to
/// 60 seconds, and retry).
const UPLOAD_DELAY: Duration = Duration::from_secs(300);

/// No head: the export reads blocks only.
#[derive(Debug)]
struct BlocksOnly;

#[async_trait]
impl HeadSource for BlocksOnly {
    async fn snapshot(&self, _tenant: &str) -> Result<HeadSnapshots, ScanError> {
        Ok(Vec::new())
    }

    async fn summary(&self, _tenant: &str) -> Result<Vec<GenerationSummary>, ScanError> {
        Ok(Vec::new())
    }
}

/// The export query of one tenant, within one query budget.
struct QuerierRows<'a> {
    querier: &'a Querier,
    budget: QueryBudget,
    tenant: String,
}

#[async_trait]
impl Rows for QuerierRows<'_> {
    async fn rows(
        &self,
        start: i64,
        end: i64,
    ) -> profusion_export::Result<SendableRecordBatchStream> {
        self.querier
            .export_rows(&self.budget, &self.tenant, start, end)
            .await
            .map_err(|e| ExportError::Rows(e.message))
    }

    async fn extent(&self, start: i64, end: i64) -> profusion_export::Result<Option<(i64, i64)>> {
        self.querier
            .profile_times(&self.budget, &self.tenant, start, end)
            .await
            .map_err(|e| ExportError::Rows(e.message))
    }
}

/// The newest time whose profiles are surely in blocks: older than a head's longest life
/// before its flush, and the upload delay.
fn settled_nanos(config: &Config) -> i64 {
    let lag =
        config.ingester.max_block_duration + config.ingester.flush_check_interval + UPLOAD_DELAY;
    profusion_model::time::now_nanos() - lag.as_nanos() as i64
}

fn show(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos).to_rfc3339()
}

/// Exports of the blocks a catalog lists, from an object store, within the configured query
/// memory.
pub(crate) struct BlockExporter {
    querier: Querier,
}

impl BlockExporter {
    pub(crate) fn new(
        config: &Config,
        catalog: Arc<dyn profusion_catalog::Catalog>,
        store: Arc<dyn object_store::ObjectStore>,
    ) -> Self {
        let blocks = profusion_store_gateway::StoreGateway::uncached(catalog, store);
        Self {
            querier: Querier::new(
                Arc::new(BlocksOnly),
                Arc::new(blocks),
                QuerierConfig {
                    query_memory_bytes: config.querier.query_memory_bytes,
                    target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
                    distribution: None,
                    symbol_cache_bytes: config.querier.symbol_cache_bytes,
                    block_cache_bytes: config.querier.block_cache_bytes,
                },
            ),
        }
    }

    /// Exports `request` to `destination`.
    pub(crate) async fn export(
        &self,
        destination: &Destination,
        request: &ExportRequest,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<ExportReport, ExportError> {
        let rows = QuerierRows {
            budget: self.querier.budget(),
            querier: &self.querier,
            tenant: request.tenant.clone(),
        };
        profusion_export::export(destination, request, &rows, progress).await
    }
}

/// Runs `profusion export`, printing progress to stderr and the result to stdout.
pub(crate) async fn run(config: &Config, args: &ExportArgs) -> Result<ExportReport, String> {
    if args.end <= args.start {
        return Err(format!(
            "--end ({}) must be after --start ({})",
            show(args.end),
            show(args.start)
        ));
    }
    let settled = settled_nanos(config);
    let end = args.end.min(settled);
    if end < args.end {
        eprintln!(
            "exporting up to {}: newer profiles may still be in the ingesters' heads; a later run exports them",
            show(end)
        );
    }
    let destination = Destination::open(&args.destination).map_err(|e| e.to_string())?;
    let (store, _) = open_store(&config.storage).map_err(|e| e.to_string())?;
    let catalog = open_catalog(&config.storage)
        .await
        .map_err(|e| e.to_string())?;
    let exporter = BlockExporter::new(config, catalog, store);
    let request = ExportRequest {
        tenant: args.tenant.clone(),
        format: args.format,
        start: args.start,
        end,
        fail_at: args.fail_at,
    };
    let mut last_shown = Instant::now();
    let report = exporter
        .export(&destination, &request, |p: Progress| {
            if last_shown.elapsed() >= Duration::from_secs(1) {
                last_shown = Instant::now();
                let rate = p.rows as f64 / p.elapsed.as_secs_f64().max(1e-3);
                eprint!("\r{} rows exported ({rate:.0} rows/s)", p.rows);
                let _ = std::io::stderr().flush();
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    match report.range {
        Some((start, end)) => eprintln!(
            "\rexported {} rows of {} from {} to {}: {} files, {} bytes",
            report.rows,
            args.tenant,
            show(start),
            show(end),
            report.files,
            report.bytes
        ),
        None => eprintln!(
            "nothing new to export: {} is exported up to {}",
            args.tenant,
            show(end)
        ),
    }
    Ok(report)
}

/// The scheduled export's counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExportMetrics {
    rows: Counter,
    runs: Family<Vec<(String, String)>, Counter>,
}

impl ExportMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("profusion_export");
        r.register("rows", "Rows the scheduled export wrote", self.rows.clone());
        r.register(
            "runs",
            "Scheduled export runs of a tenant, by outcome (exported, nothing_new, failed)",
            self.runs.clone(),
        );
    }

    fn run(&self, outcome: &str) {
        self.runs
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }
}

/// Starts the scheduled export (`--export.destination`): every `--export.interval`, each
/// tenant's new profiles, up to what is surely flushed, into `<destination>/<tenant>`. A run
/// cut short (a failure, a shutdown) commits nothing, and the next one starts where the last
/// committed one ended.
pub(crate) fn start_scheduled(
    config: &Config,
    catalog: Arc<dyn profusion_catalog::Catalog>,
    store: Arc<dyn object_store::ObjectStore>,
    metrics: ExportMetrics,
) {
    let flags = config.export.clone();
    let config = config.clone();
    tokio::spawn(async move {
        let exporter = BlockExporter::new(&config, Arc::clone(&catalog), store);
        loop {
            tokio::time::sleep(flags.interval).await;
            let tenants = if flags.tenants.iter().any(|t| !t.is_empty()) {
                flags.tenants.clone()
            } else {
                match catalog.tenants().await {
                    Ok(tenants) => tenants,
                    Err(e) => {
                        tracing::error!(error = %e, "scheduled export: listing tenants failed");
                        continue;
                    }
                }
            };
            for tenant in tenants {
                let location = format!(
                    "{}/{}",
                    flags.destination.trim_end_matches('/'),
                    profusion_export::path_segment(&tenant)
                );
                let request = ExportRequest {
                    tenant: tenant.clone(),
                    format: flags.format,
                    start: 0,
                    end: settled_nanos(&config),
                    fail_at: None,
                };
                let result = match Destination::open(&location) {
                    Ok(destination) => exporter.export(&destination, &request, |_| {}).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(report) if report.range.is_some() => {
                        metrics.run("exported");
                        metrics.rows.inc_by(report.rows);
                        tracing::info!(
                            tenant,
                            destination = location,
                            rows = report.rows,
                            files = report.files,
                            bytes = report.bytes,
                            "scheduled export"
                        );
                    }
                    Ok(_) => metrics.run("nothing_new"),
                    Err(e) => {
                        metrics.run("failed");
                        tracing::error!(tenant, destination = location, error = %e, "scheduled export failed; retried next interval");
                    }
                }
            }
        }
    });
}
