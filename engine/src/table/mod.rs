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
pub mod replicas;
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
pub use head_scan::{HeadScanExec, cast_to_schema};
pub use schema::{PinnedHeads, PinnedTombstones, TenantSchema};

use replicas::ReplicaChoice;

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
                if !listed
                    .iter()
                    .any(|b| head.iter().any(|h| h.cut().conflicts(b)))
                {
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
            blocks.extend(
                listed
                    .into_iter()
                    .filter(|b| !head.iter().any(|h| h.cut().covers(b))),
            );
            heads.extend(head.iter().map(|h| (Arc::clone(h), request.clone())));
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
        let narrowing = Narrowing::from_filters(filters);
        let (heads, blocks) = self.sources(&narrowing).await?;
        // Per tenant, the tombstones that may hide rows this scan reads; tenants without any
        // are read as before, in one union.
        let mut deleting = Vec::new();
        let mut replicated = Vec::new();
        let (mut plain_heads, mut plain_blocks) = (Vec::new(), Vec::new());
        for tenant in self.scope.tenants() {
            let tenant = tenant.as_str();
            let own_heads: HeadScans = heads
                .iter()
                .filter(|(_, r)| r.tenant == tenant)
                .cloned()
                .collect();
            let request = self.request(tenant, &narrowing);
            let tombstones = self.deletions(&request).await?;
            let own: Vec<BlockMeta> = blocks
                .iter()
                .filter(|b| b.tenant == tenant)
                .cloned()
                .collect();
            if let Some(choice) = self
                .replica_choice(state, &request, &own_heads, &own)
                .await?
            {
                // Replicas of one profile in several origins: each origin read apart, keeping
                // the profiles the choice gives it, tombstones applied to all.
                let all = self
                    .read_replicas(state, own_heads, &own, &choice, filters)
                    .await?;
                let kept: Arc<dyn ExecutionPlan> = if tombstones.is_empty() {
                    all
                } else {
                    Arc::new(FilterExec::try_new(
                        self.not_deleted(state, &tombstones)?,
                        all,
                    )?)
                };
                replicated.push(self.project(kept, projection)?);
                continue;
            }
            if tombstones.is_empty() {
                plain_heads.extend(own_heads);
                plain_blocks.extend(own);
            } else {
                deleting.push((own_heads, own, tombstones));
            }
        }
        let mut branches = replicated;
        if !plain_heads.is_empty() || (deleting.is_empty() && branches.is_empty()) {
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
        for (own_heads, own, tombstones) in deleting {
            // Read every column (the deletion test needs series and time), drop deleted rows,
            // then project; no limit before the filter.
            let all = self
                .read(state, own_heads, &own, None, filters, None)
                .await?;
            let kept: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(
                self.not_deleted(state, &tombstones)?,
                all,
            )?);
            branches.push(self.project(kept, projection)?);
        }
        if branches.len() == 1 {
            return Ok(branches.remove(0));
        }
        UnionExec::try_new(branches)
    }
}

impl ProfileTable {
    /// The physical form of [`not_deleted`] over the table's full schema.
    fn not_deleted(
        &self,
        state: &dyn Session,
        tombstones: &[Tombstone],
    ) -> Result<Arc<dyn PhysicalExpr>> {
        state.create_physical_expr(
            not_deleted(tombstones),
            &DFSchema::try_from(Arc::clone(&self.schema))?,
        )
    }

    /// `plan` (in the full schema) with only the projected columns.
    fn project(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        projection: Option<&Vec<usize>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(match projection {
            None => plan,
            Some(columns) => Arc::new(ProjectionExec::try_new(
                columns.iter().map(|&i| {
                    let name = self.schema.field(i).name().clone();
                    (
                        Arc::new(PhysicalColumn::new(&name, i)) as Arc<dyn PhysicalExpr>,
                        name,
                    )
                }),
                plan,
            )?),
        })
    }

    /// The replica choice of one tenant's scan, when its heads and blocks hold data of more
    /// than one ingester (see [`replicas`]): each origin's profile keys in the request's
    /// window, read from the `profiles` table of its heads and blocks.
    async fn replica_choice(
        &self,
        state: &dyn Session,
        request: &ScanRequest,
        heads: &HeadScans,
        blocks: &[BlockMeta],
    ) -> Result<Option<Arc<ReplicaChoice>>> {
        if !self.table.is_per_profile() {
            return Ok(None);
        }
        let origins = heads
            .iter()
            .map(|(h, _)| h.cut().source.as_str())
            .chain(blocks.iter().map(|b| b.source.as_str()));
        let lineage = blocks
            .iter()
            .flat_map(|b| b.lineage.keys().map(String::as_str));
        if !replicas::needs_choice(origins, lineage) {
            return Ok(None);
        }
        let mut key_request = request.clone();
        key_request.table = Table::Profiles;
        key_request.projection = Some(
            replicas::PROFILE_KEY_COLUMNS
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
        );
        key_request.part = None;
        // The choice holds for this window over exactly these blocks: a listing after a
        // compaction makes its own.
        let mut listed: Vec<&str> = blocks.iter().map(|b| b.id.as_str()).collect();
        listed.sort_unstable();
        let key = format!(
            "{} {}",
            serde_json::to_string(&key_request)
                .map_err(|e| DataFusionError::Internal(format!("replica choice key: {e}")))?,
            listed.join(",")
        );
        let choice = self
            .heads
            .choice(key, async {
                let mut keys: std::collections::BTreeMap<String, std::collections::HashSet<u64>> =
                    Default::default();
                for (head, _) in heads {
                    let mut stream = head
                        .scan(&key_request)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    let held = keys.entry(head.cut().source.clone()).or_default();
                    while let Some(batch) = futures_util::StreamExt::next(&mut stream).await {
                        let batch = batch.map_err(|e| DataFusionError::External(Box::new(e)))?;
                        held.extend(replicas::key_hashes(&batch, [0, 1, 2])?);
                    }
                }
                let mut by_source: std::collections::BTreeMap<String, Vec<BlockMeta>> =
                    Default::default();
                for b in blocks {
                    by_source
                        .entry(replicas::block_origin(b))
                        .or_default()
                        .push(b.clone());
                }
                let profiles = scan_schema(Table::Profiles);
                let columns: Vec<usize> = replicas::PROFILE_KEY_COLUMNS
                    .iter()
                    .map(|c| profiles.index_of(c))
                    .collect::<std::result::Result<_, _>>()?;
                let in_range =
                    col("time_nanos").between(lit(request.range.start), lit(request.range.end));
                for (source, own) in by_source {
                    let plan = parquet_scan(
                        state,
                        &own,
                        Table::Profiles,
                        &profiles,
                        Some(&columns),
                        std::slice::from_ref(&in_range),
                        None,
                    )
                    .await?;
                    let held = keys.entry(source).or_default();
                    for batch in datafusion::physical_plan::collect(plan, state.task_ctx()).await? {
                        held.extend(replicas::key_hashes(&batch, [0, 1, 2])?);
                    }
                }
                Ok(ReplicaChoice::choose(keys))
            })
            .await?;
        Ok(Some(choice))
    }

    /// Every origin of one tenant's scan read apart (in the full schema), each keeping only
    /// the profiles `choice` gives it, then unioned.
    async fn read_replicas(
        &self,
        state: &dyn Session,
        heads: HeadScans,
        blocks: &[BlockMeta],
        choice: &ReplicaChoice,
        filters: &[Expr],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut origins: std::collections::BTreeMap<String, (HeadScans, Vec<BlockMeta>)> =
            Default::default();
        for (head, request) in heads {
            let origin = origins.entry(head.cut().source.clone()).or_default();
            origin.0.push((head, request));
        }
        for b in blocks {
            origins
                .entry(replicas::block_origin(b))
                .or_default()
                .1
                .push(b.clone());
        }
        let mut branches = Vec::new();
        for (origin, (heads, blocks)) in origins {
            let mut parts = Vec::new();
            if !heads.is_empty() {
                parts.push(Arc::new(HeadScanExec::try_new(
                    self.table,
                    Arc::clone(&self.schema),
                    None,
                    heads,
                    self.partitions,
                )?) as Arc<dyn ExecutionPlan>);
            }
            if !blocks.is_empty() {
                parts.push(
                    parquet_scan(
                        state,
                        &blocks,
                        self.table,
                        &self.schema,
                        None,
                        filters,
                        None,
                    )
                    .await?,
                );
            }
            let all = if parts.len() == 1 {
                parts.remove(0)
            } else {
                UnionExec::try_new(parts)?
            };
            branches.push(
                match replicas::ProfileKeyFilter::new(choice.keep(&origin), &self.schema)? {
                    None => all,
                    Some(filter) => Arc::new(replicas::ProfileKeyFilterExec::new(filter, all)),
                },
            );
        }
        if branches.len() == 1 {
            return Ok(branches.remove(0));
        }
        UnionExec::try_new(branches)
    }

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
        let files = parquet_scan(
            state,
            blocks,
            self.table,
            &self.schema,
            projection,
            filters,
            limit,
        )
        .await?;
        UnionExec::try_new(vec![head_scan, files])
    }
}

/// DataFusion's Parquet scan of `table`'s files in `blocks`, in `schema`.
async fn parquet_scan(
    state: &dyn Session,
    blocks: &[BlockMeta],
    table: Table,
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let urls = blocks
        .iter()
        .map(|b| block_url(&block_file_path(&b.tenant, &b.id, table.file_name())))
        .collect::<Result<Vec<_>>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(Arc::clone(schema));
    // The runtime's statistics cache outlives the query (`crate::blocks::block_runtime`).
    ListingTable::try_new(config)?
        .with_cache(state.runtime_env().cache_manager.get_file_statistic_cache())
        .scan(state, projection, filters, limit)
        .await
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
