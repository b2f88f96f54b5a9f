//! The five block tables as DataFusion table providers, for one tenant scope.
//!
//! A [`ProfileTable`] reads its table from two places and unions them: the ingesters' head
//! (through a [`HeadSource`], as a [`HeadScanExec`]) and the blocks a [`BlockSource`] lists
//! (as DataFusion's own Parquet scan, so row-group statistics, page indexes and filter pushdown
//! all apply). Pruning happens inside [`TableProvider::scan`]: the pushed-down filters on time,
//! profile type, service and series narrow both the head scan and the block listing, so a
//! SQL `SELECT … FROM samples WHERE …` gets the same pruning as a flame-graph request.
//!
//! The tables of one query share one pinned head snapshot per tenant ([`PinnedHeads`]): every
//! table sees the same head, and blocks that snapshot covers are skipped, so a profile is
//! counted once however a flush interleaves with the query.

mod filters;
mod head_scan;
mod schema;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::DFSchema;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{Expr, col, lit};
use object_store::path::Path as ObjectPath;
use profusion_model::block::{BlockMeta, Table, block_file_path};
use profusion_model::scan::{BlockSource, HeadSnapshot, ScanError, ScanRequest};
use profusion_model::tenant::TenantScope;
use profusion_model::time::TimeRange;
use profusion_model::tombstone::Tombstone;

pub use filters::Narrowing;
pub use head_scan::HeadScanExec;
pub use schema::{PinnedHeads, PinnedTombstones, TenantSchema};

/// The URL the blocks' object store is registered under in every query session.
pub const STORE_URL: &str = "profusion://store/";

/// What every table of a session may read at most: the query's window. An API query sets it
/// from its request (so the `stacks` and `frames` of blocks outside its range, profile type or
/// service are never opened); a SQL session reads everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanWindow {
    /// Blocks overlapping this range (all when `None`).
    pub range: Option<TimeRange>,
    /// Blocks holding this profile type (all when `None`).
    pub profile_type: Option<String>,
    /// Blocks holding one of these services (all when `None`).
    pub services: Option<Vec<String>>,
}

/// One block table of a tenant scope: head and blocks together.
#[derive(Debug)]
pub struct ProfileTable {
    table: Table,
    scope: TenantScope,
    window: ScanWindow,
    heads: Arc<PinnedHeads>,
    tombstones: Arc<PinnedTombstones>,
    blocks: Arc<dyn BlockSource>,
    schema: SchemaRef,
    partitions: usize,
}

impl ProfileTable {
    pub fn new(
        table: Table,
        scope: TenantScope,
        window: ScanWindow,
        heads: Arc<PinnedHeads>,
        tombstones: Arc<PinnedTombstones>,
        blocks: Arc<dyn BlockSource>,
        partitions: usize,
    ) -> Self {
        Self {
            table,
            scope,
            window,
            heads,
            tombstones,
            blocks,
            schema: scan_schema(table),
            partitions: partitions.max(1),
        }
    }

    /// The scan request of one tenant, from the window and the pushed-down filters.
    fn request(&self, tenant: &str, narrowing: &Narrowing) -> ScanRequest {
        let mut request = ScanRequest::all(tenant, self.table);
        request.range = narrowing.range.unwrap_or(TimeRange::ALL);
        if let Some(window) = self.window.range {
            request.range = TimeRange {
                start: request.range.start.max(window.start),
                end: request.range.end.min(window.end),
            };
        }
        request.profile_type = narrowing
            .profile_type
            .clone()
            .or_else(|| self.window.profile_type.clone());
        request.services = match (&narrowing.services, &self.window.services) {
            (Some(a), Some(b)) => Some(a.iter().filter(|s| b.contains(s)).cloned().collect()),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        request.series = narrowing.series.clone();
        request
    }

    /// Blocks of every tenant of the scope a scan with these filters needs, minus those the
    /// pinned head covers.
    pub async fn blocks(&self, filters: &[Expr]) -> Result<Vec<BlockMeta>> {
        let (_, blocks) = self.sources(&Narrowing::from_filters(filters)).await?;
        Ok(blocks)
    }

    /// What a scan narrowed by `narrowing` reads: each tenant's pinned head with its request,
    /// and the blocks the catalog lists for those requests that the heads do not cover.
    async fn sources(&self, narrowing: &Narrowing) -> Result<(HeadScans, Vec<BlockMeta>)> {
        let mut heads = Vec::new();
        let mut blocks = Vec::new();
        for tenant in self.scope.tenants() {
            let tenant = tenant.as_str();
            let request = self.request(tenant, narrowing);
            self.tombstones.get(tenant).await?;
            let mut head = self.heads.get(tenant).await?;
            let mut renewed = 0;
            let listed = loop {
                let listed = self
                    .blocks
                    .blocks(&request)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                if !listed.iter().any(|b| head.cut().conflicts(b)) {
                    break listed;
                }
                // A compaction swallowed a block of this snapshot between the snapshot and
                // the listing; a newer snapshot no longer holds that segment.
                renewed += 1;
                if renewed > MAX_SNAPSHOT_RENEWALS {
                    return Err(DataFusionError::External(Box::new(ScanError::Unavailable(
                        format!(
                            "tenant {tenant:?}: the head kept changing under compaction; retry"
                        ),
                    ))));
                }
                head = self.heads.renew(tenant, &head).await?;
            };
            blocks.extend(listed.into_iter().filter(|b| !head.cut().covers(b)));
            heads.push((head, request));
        }
        Ok((heads, blocks))
    }
}

/// How often one listing takes a newer head snapshot before giving up: each renewal means a
/// flush and a compaction both completed in between, so more than a few is a head that never
/// settles.
const MAX_SNAPSHOT_RENEWALS: usize = 5;

/// Pinned heads and the requests to scan them with.
type HeadScans = Vec<(Arc<dyn HeadSnapshot>, ScanRequest)>;

#[async_trait]
impl TableProvider for ProfileTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Every filter is used to prune (catalog, row groups, head rows) but not promised exact:
    /// DataFusion applies each again above the scan.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (heads, blocks) = self.sources(&Narrowing::from_filters(filters)).await?;
        // Per tenant, the tombstones that may hide rows this scan reads; tenants without any
        // are read as before, in one union.
        let mut deleting = Vec::new();
        let (mut plain_heads, mut plain_blocks) = (Vec::new(), Vec::new());
        for (head, request) in heads {
            let tombstones = self.deletions(&request).await?;
            let own: Vec<BlockMeta> = blocks
                .iter()
                .filter(|b| b.tenant == request.tenant)
                .cloned()
                .collect();
            if tombstones.is_empty() {
                plain_heads.push((head, request));
                plain_blocks.extend(own);
            } else {
                deleting.push(((head, request), own, tombstones));
            }
        }
        let mut branches = Vec::new();
        if !plain_heads.is_empty() || deleting.is_empty() {
            branches.push(
                self.read(
                    state,
                    plain_heads,
                    &plain_blocks,
                    projection,
                    filters,
                    limit,
                )
                .await?,
            );
        }
        for (head, own, tombstones) in deleting {
            // Read every column (the deletion test needs series and time), drop deleted rows,
            // then project; no limit before the filter.
            let all = self
                .read(state, vec![head], &own, None, filters, None)
                .await?;
            let keep = state.create_physical_expr(
                not_deleted(&tombstones),
                &DFSchema::try_from(Arc::clone(&self.schema))?,
            )?;
            let kept: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(keep, all)?);
            branches.push(match projection {
                None => kept,
                Some(columns) => Arc::new(ProjectionExec::try_new(
                    columns.iter().map(|&i| {
                        let name = self.schema.field(i).name().clone();
                        (
                            Arc::new(PhysicalColumn::new(&name, i)) as Arc<dyn PhysicalExpr>,
                            name,
                        )
                    }),
                    kept,
                )?),
            });
        }
        if branches.len() == 1 {
            return Ok(branches.remove(0));
        }
        UnionExec::try_new(branches)
    }
}

impl ProfileTable {
    /// The tombstones hiding rows a scan of `request` may read: none for tables without
    /// profile rows, else the tenant's whose range and series the request can meet.
    async fn deletions(&self, request: &ScanRequest) -> Result<Vec<Tombstone>> {
        if !self.table.is_per_profile() {
            return Ok(Vec::new());
        }
        let all = self.tombstones.get(&request.tenant).await?;
        Ok(all
            .iter()
            .filter(|t| {
                t.range.overlaps(request.range.start, request.range.end)
                    && request.series.as_ref().is_none_or(|series| {
                        series
                            .iter()
                            .any(|fp| t.fingerprints.binary_search(fp).is_ok())
                    })
            })
            .cloned()
            .collect())
    }

    /// The union of head scans and block files.
    async fn read(
        &self,
        state: &dyn Session,
        heads: HeadScans,
        blocks: &[BlockMeta],
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let head_scan: Arc<dyn ExecutionPlan> = Arc::new(HeadScanExec::try_new(
            self.table,
            Arc::clone(&self.schema),
            projection.cloned(),
            heads,
            self.partitions,
        )?);
        if blocks.is_empty() {
            return Ok(head_scan);
        }
        let urls = blocks
            .iter()
            .map(|b| block_url(&block_file_path(&b.tenant, &b.id, self.table.file_name())))
            .collect::<Result<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(Arc::clone(&self.schema));
        let files = ListingTable::try_new(config)?
            .scan(state, projection, filters, limit)
            .await?;
        UnionExec::try_new(vec![head_scan, files])
    }
}

/// `NOT (deleted by any tombstone)`: a row survives unless its series is one a tombstone
/// names and its time is in that tombstone's range.
fn not_deleted(tombstones: &[Tombstone]) -> Expr {
    let deleted = tombstones
        .iter()
        .map(|t| {
            col("series_fingerprint")
                .in_list(t.fingerprints.iter().map(|fp| lit(*fp)).collect(), false)
                .and(col("time_nanos").between(lit(t.range.start), lit(t.range.end)))
        })
        .reduce(Expr::or)
        .unwrap_or(lit(false));
    !deleted
}

/// The schema a table is scanned in: the block schema with top-level strings as views, as
/// DataFusion's Parquet reader produces them (dictionary-encoded columns stay dictionaries).
pub fn scan_schema(table: Table) -> SchemaRef {
    let schema = table.schema();
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// The table URL of an object. The path's segments are already in object_store's encoding
/// (a tenant `a*` is the segment `a%2A`): pushed as URL segments, their `%` is escaped again,
/// so the listing table decodes the URL back to exactly that path. Formatting the path into a
/// URL string would decode `%2A` to `*`, a file that does not exist.
fn block_url(path: &ObjectPath) -> Result<ListingTableUrl> {
    let mut url = url::Url::parse(STORE_URL)
        .map_err(|e| DataFusionError::Internal(format!("{STORE_URL}: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| DataFusionError::Internal(format!("{STORE_URL} cannot take a path")))?
        .pop_if_empty()
        .extend(path.parts().map(|p| p.as_ref().to_owned()));
    ListingTableUrl::try_new(url, None)
}
