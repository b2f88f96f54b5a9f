//! `profusion export`: a tenant's profiles from the blocks the catalog lists to a data lake.
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
struct QuerierRows {
    querier: Querier,
    budget: QueryBudget,
    tenant: String,
}

#[async_trait]
impl Rows for QuerierRows {
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
    let blocks = profusion_store_gateway::StoreGateway::uncached(catalog, store);
    let querier = Querier::new(
        Arc::new(BlocksOnly),
        Arc::new(blocks),
        QuerierConfig {
            query_memory_bytes: config.querier.query_memory_bytes,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            distribution: None,
        },
    );
    let rows = QuerierRows {
        budget: querier.budget(),
        querier,
        tenant: args.tenant.clone(),
    };
    let request = ExportRequest {
        tenant: args.tenant.clone(),
        format: args.format,
        start: args.start,
        end,
        fail_at: args.fail_at,
    };
    let mut last_shown = Instant::now();
    let report = profusion_export::export(&destination, &request, &rows, |p: Progress| {
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
