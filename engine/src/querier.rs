//! The querier: runs each read as DataFusion plans over a tenant scope's tables, the union of
//! ingester head data and the blocks the catalog lists (see [`crate::table`]).
//!
//! Every query gets its own `SessionContext` with a memory pool of the configured budget and
//! the scope's [`TenantSchema`] as its default schema, windowed to the request (time range,
//! profile type, service) so tables no filter narrows (`series`, `stacks`, `frames`) still read
//! only the blocks the request can need.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Int64Type, UInt64Type};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::FileStatisticsCache;
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions_aggregate::expr_fn::{count, max};
use datafusion::prelude::{DataFrame, Expr, SessionConfig, SessionContext, col, lit};
use futures_util::StreamExt;
use profusion_model::block::Table;
use profusion_model::hash::PrehashedMap;
use profusion_model::labels;
use profusion_model::profile_type::ProfileType;
use profusion_model::scan::{BlockSource, GenerationSummary, HeadSource, ScanRequest};
use profusion_model::tenant::{TenantId, TenantScope};
pub use profusion_model::time::TimeRange;
use profusion_model::tree::Tree;

use crate::block_aggregates::{BlockAggregateCache, BlockAggregates};
use crate::blocks::block_runtime;
use crate::budget::{Charged, QueryBudget};
use crate::error::{QueryError, Result};
use crate::selector::Selector;
use crate::service::{QueryContext, ReadAnswer, ReadExecutor, ReadJob};
use crate::symbolize::{
    self, PprofHeader, StackFilter, SymbolCache, SymbolScope, Symbolize, SymbolizeOutput,
};
use crate::table::{ScanWindow, TenantSchema};
use profusion_proto::google::v1 as pprof;
use prost::Message;

/// Querier settings.
#[derive(Debug, Clone)]
pub struct QuerierConfig {
    /// Memory budget of one query, in bytes; a query over it fails with `resource_exhausted`.
    pub query_memory_bytes: usize,
    /// Parallelism of one query's plans.
    pub target_partitions: usize,
    /// In a cluster, where the plans' stages run (see [`crate::distributed`]); `None` runs
    /// every plan in this process.
    pub distribution: Option<crate::distributed::Distribution>,
    /// Bytes of resolved stacks and frames kept between queries ([`SymbolCache`]); 0 keeps
    /// none.
    pub symbol_cache_bytes: usize,
    /// Bytes of per-file aggregates of block files kept between queries
    /// ([`BlockAggregateCache`]); 0 keeps none.
    pub block_cache_bytes: usize,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        Self {
            query_memory_bytes: 1 << 30,
            target_partitions: 2,
            distribution: None,
            symbol_cache_bytes: 256 << 20,
            block_cache_bytes: 256 << 20,
        }
    }
}

/// What a flame-graph or pprof query selects.
#[derive(Debug, Clone)]
pub struct MergeRequest {
    /// The profile type ID (`name:sample_type:sample_unit:period_type:period_unit`).
    pub profile_type: String,
    pub selector: Selector,
    pub range: TimeRange,
    /// Only these profiles, when not empty.
    pub profile_ids: Vec<String>,
    /// Only samples of these spans, when not empty.
    pub span_ids: Vec<u64>,
    pub stacks: StackFilter,
}

/// What one part of the storage holds for a query's range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryScope {
    pub component: &'static str,
    pub components: u64,
    /// Blocks, or head generations.
    pub blocks: u64,
    pub series: u64,
    pub profiles: u64,
    pub samples: u64,
    pub bytes: u64,
}

/// The answer of [`Querier::analyze`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryAnalysis {
    pub scopes: Vec<QueryScope>,
    pub matching_series: u64,
}

/// Bytes of derived block-file statistics a querier keeps (a few KiB per file: its row count
/// and each column's bounds).
const FILE_STATISTICS_BYTES: usize = 16 << 20;

/// What [`Querier::select_series`] computes.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub profile_type: String,
    pub selector: Selector,
    pub range: TimeRange,
    pub step_millis: i64,
    pub group_by: Vec<String>,
    /// Average per profile within a step instead of the sum.
    pub average: bool,
    pub limit: Option<usize>,
}

/// The `group_by` labels of a time series, in `group_by` order.
type GroupKey = Vec<(String, String)>;

/// One time series: its group labels and `(Unix milliseconds, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(i64, f64)>,
}

impl TimeSeries {
    fn total(&self) -> f64 {
        self.points.iter().map(|p| p.1).sum()
    }
}

/// One series as the label APIs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesLabels {
    pub fingerprint: u64,
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
}

impl SeriesLabels {
    /// Approximate heap bytes, for memory budgets.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .labels
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2 * std::mem::size_of::<String>())
                .sum::<usize>()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The rows of a SQL query, in its schema (which a query with no rows still has).
#[derive(Debug, Clone)]
pub struct SqlTable {
    pub schema: datafusion::arrow::datatypes::SchemaRef,
    pub batches: Vec<datafusion::arrow::array::RecordBatch>,
}

/// A SQL answer being gathered, its rows held against the query's budget as they come.
pub(crate) struct SqlRows<'a> {
    table: SqlTable,
    budget: &'a QueryBudget,
    reservation: datafusion::execution::memory_pool::MemoryReservation,
    held: usize,
}

impl<'a> SqlRows<'a> {
    pub(crate) fn new(
        schema: datafusion::arrow::datatypes::SchemaRef,
        budget: &'a QueryBudget,
        holder: &str,
    ) -> Self {
        Self {
            table: SqlTable {
                schema,
                batches: Vec::new(),
            },
            budget,
            reservation: budget.reservation(holder),
            held: 0,
        }
    }

    /// Adds `batch`, or fails with `resource_exhausted` once the rows outgrow the budget.
    pub(crate) fn push(&mut self, batch: datafusion::arrow::array::RecordBatch) -> Result<()> {
        self.held += batch.get_array_memory_size();
        self.budget
            .hold(&mut self.reservation, "the SQL answer", self.held)?;
        self.table.batches.push(batch);
        Ok(())
    }

    pub(crate) fn finish(self) -> Charged<SqlTable> {
        Charged::new(self.table, self.reservation)
    }
}

/// How every session of the read path scans blocks, in this process or on a worker: filters
/// evaluated inside the Parquet scan, so row groups whose statistics prove every row matches
/// (the usual case for profile type and time) skip the per-row check.
pub(crate) fn scan_options(options: &mut datafusion::config::ConfigOptions) {
    options.execution.parquet.pushdown_filters = true;
    options.execution.parquet.reorder_filters = true;
}

#[derive(Debug, Clone)]
pub struct Querier {
    head: Arc<dyn HeadSource>,
    blocks: Arc<dyn BlockSource>,
    config: QuerierConfig,
    /// Functions, options and planner, built once; each query copies it with its own memory
    /// pool and tables. Shared, so a querier is cheap to clone (SQL's analysis functions hold
    /// one).
    base: Arc<datafusion::execution::SessionState>,
    /// Stacks and frames resolved by earlier queries, shared by every session.
    symbols: Arc<SymbolCache>,
    /// Per-file aggregates of block files computed by earlier queries.
    block_aggregates: Arc<BlockAggregateCache>,
    /// The statistics DataFusion derives from each block file's metadata (row counts, each
    /// column's bounds), kept across queries: deriving them again cost every query a tenth of
    /// its time per file.
    file_statistics: Arc<FileStatisticsCache>,
}

/// One query's DataFusion session over a tenant scope's tables.
pub struct QuerySession {
    pub ctx: SessionContext,
    /// The scope's tables, for what the query asks of them beyond SQL (the blocks it reads).
    pub schema: Arc<TenantSchema>,
    /// The budget the session's pool belongs to, for what the query builds outside DataFusion.
    pub budget: QueryBudget,
}

impl std::fmt::Debug for QuerySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuerySession").finish_non_exhaustive()
    }
}

impl Querier {
    pub fn new(
        head: Arc<dyn HeadSource>,
        blocks: Arc<dyn BlockSource>,
        config: QuerierConfig,
    ) -> Self {
        // Parquet strings are read as views (the default): dictionary-encoded columns such as
        // `profile_type` then cost no copy per row. The head side is cast to match.
        let mut options = SessionConfig::new()
            .with_target_partitions(config.target_partitions.max(1))
            .with_default_catalog_and_schema(crate::sql::CATALOG, crate::sql::SCHEMA);
        scan_options(options.options_mut());
        let mut builder = SessionStateBuilder::new()
            .with_config(options)
            .with_default_features();
        crate::functions::register(&mut builder);
        if config.distribution.is_none() {
            // In a cluster the block scans run in the store-gateways' stages; caching there
            // is not built yet.
            builder = builder.with_physical_optimizer_rule(Arc::new(BlockAggregates));
        }
        let mut base = symbolize::with_planner(builder);
        if let Some(distribution) = &config.distribution {
            base = crate::distributed::coordinator(
                SessionStateBuilder::new_from_existing(base),
                distribution,
                crate::codec::ProfusionCodec::new(Arc::clone(&head)),
            )
            .build();
        }
        Self {
            head,
            blocks,
            symbols: Arc::new(SymbolCache::new(config.symbol_cache_bytes)),
            block_aggregates: Arc::new(BlockAggregateCache::new(config.block_cache_bytes)),
            file_statistics: Arc::new(DefaultCache::new(FILE_STATISTICS_BYTES)),
            config,
            base: Arc::new(base),
        }
    }

    /// A fresh budget of the configured size, for one query.
    pub fn budget(&self) -> QueryBudget {
        QueryBudget::new(self.config.query_memory_bytes)
    }

    /// A session over `tenants` (one, or several for a cross-tenant read) whose tables read
    /// at most the blocks of `window`.
    pub fn session(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        window: ScanWindow,
    ) -> Result<QuerySession> {
        let scope = scope_of(tenants)?;
        // The budget is a hard limit for now: no spilling to disk, so a query over it fails with
        // `resource_exhausted` instead of filling the disk.
        let runtime = block_runtime(
            RuntimeEnvBuilder::new()
                .with_memory_pool(budget.pool())
                .with_disk_manager_builder(
                    DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
                ),
            self.blocks.as_ref(),
            Some(Arc::clone(&self.file_statistics)),
        )?;
        let schema = Arc::new(TenantSchema::new(
            scope,
            window,
            Arc::clone(&self.head),
            Arc::clone(&self.blocks),
            self.config.target_partitions,
        ));
        let mut state = SessionStateBuilder::new_from_existing(self.base.as_ref().clone())
            .with_catalog_list(self.catalogs(Arc::clone(&schema) as _)?)
            .with_runtime_env(runtime)
            .build();
        let config = state.config_mut();
        config.set_extension(Arc::new(SymbolScope {
            cache: Arc::clone(&self.symbols),
            scope: tenants.join("|"),
        }));
        config.set_extension(Arc::clone(&self.block_aggregates));
        let ctx = SessionContext::new_with_state(state);
        Ok(QuerySession {
            ctx,
            schema,
            budget: budget.clone(),
        })
    }

    /// A query's catalogs: one, holding `schema` as the default schema. A fresh one per query:
    /// the base state's would be shared by every copy.
    pub(crate) fn catalogs(
        &self,
        schema: Arc<dyn datafusion::catalog::SchemaProvider>,
    ) -> Result<Arc<dyn CatalogProviderList>> {
        let defaults = &self.base.config().options().catalog;
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(&defaults.default_schema, schema)?;
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(defaults.default_catalog.clone(), Arc::new(catalog));
        Ok(Arc::new(catalogs))
    }

    /// Series of the tenant matching any of `selectors` (all series when there are none),
    /// optionally of one profile type.
    pub async fn series(
        &self,
        session: &QuerySession,
        selectors: &[Selector],
        profile_type: Option<&str>,
    ) -> Result<Vec<SeriesLabels>> {
        let mut df = session.ctx.table("series").await?;
        if let Some(pt) = profile_type {
            df = df.filter(col("profile_type").eq(lit(pt)))?;
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        // Label sets are the query's to hold: a tenant may have churned through many series.
        let mut reservation = session.budget.reservation("series labels");
        let mut held = 0usize;
        let columns = vec![col("series_fingerprint"), col("labels")];
        let mut batches = if self.config.distribution.is_none() {
            // Grouped rather than selected: a block file's distinct series are then a partial
            // aggregation that [`BlockAggregates`] keeps per file, and every query after the
            // first reads only the head's series (selected, a week's series lookup over 25
            // blocks took 2.2 times as long). Only the partial groupings run: the loop below
            // drops a series seen in another part by its fingerprint, which a final grouping
            // of every label set would do at far more cost. (In a cluster the rule is not
            // applied, and a grouping would only add a shuffle between stages.)
            let df = df.aggregate(columns, vec![])?;
            let task = Arc::new(df.task_ctx());
            let plan = partial_groupings(df.create_physical_plan().await?);
            datafusion::physical_plan::execute_stream(plan, task)?
        } else {
            df.select(columns)?.execute_stream().await?
        };
        while let Some(batch) = batches.next().await.transpose()? {
            let fps = batch.column(0).as_primitive::<UInt64Type>();
            let lists = batch.column(1).as_list::<i32>();
            for row in 0..batch.num_rows() {
                let fp = fps.value(row);
                if seen.contains(&fp) {
                    continue;
                }
                let entries = lists.value(row);
                let entries = entries.as_struct();
                let (names, values) = (
                    entries.column(0).as_string::<i32>(),
                    entries.column(1).as_string::<i32>(),
                );
                let labels: Vec<(String, String)> = (0..entries.len())
                    .map(|i| (names.value(i).to_owned(), values.value(i).to_owned()))
                    .collect();
                let series = SeriesLabels {
                    fingerprint: fp,
                    labels,
                };
                if selectors.is_empty() || selectors.iter().any(|s| s.matches(|n| series.get(n))) {
                    held += series.heap_bytes();
                    session
                        .budget
                        .hold(&mut reservation, "the matching series' labels", held)?;
                    seen.insert(fp);
                    out.push(series);
                }
            }
        }
        self.drop_deleted(session, &mut out).await?;
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Removes series a deletion emptied: those a tombstone names that have no profile left
    /// in the session's window (the profiles table hides deleted rows).
    async fn drop_deleted(
        &self,
        session: &QuerySession,
        series: &mut Vec<SeriesLabels>,
    ) -> Result<()> {
        let deleted = session.schema.deleted_series().await?;
        let named: Vec<u64> = series
            .iter()
            .map(|s| s.fingerprint)
            .filter(|fp| deleted.contains(fp))
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        let mut alive = HashSet::new();
        let mut batches = session
            .ctx
            .table("profiles")
            .await?
            .filter(col("series_fingerprint").in_list(named.into_iter().map(lit).collect(), false))?
            .select(vec![col("series_fingerprint")])?
            .execute_stream()
            .await?;
        while let Some(batch) = batches.next().await.transpose()? {
            alive.extend(
                batch
                    .column(0)
                    .as_primitive::<UInt64Type>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        series.retain(|s| !deleted.contains(&s.fingerprint) || alive.contains(&s.fingerprint));
        Ok(())
    }

    /// The sample filter of a profile type, time range and (when the selector narrows them)
    /// series.
    fn sample_filter(
        profile_type: &str,
        range: TimeRange,
        series: Option<&[SeriesLabels]>,
    ) -> Expr {
        let filter = col("profile_type")
            .eq(lit(profile_type))
            .and(col("time_nanos").gt_eq(lit(range.start)))
            .and(col("time_nanos").lt_eq(lit(range.end)));
        series
            .map(series_filter)
            .unwrap_or_default()
            .into_iter()
            .fold(filter, Expr::and)
    }

    /// The plan of a flame-graph or pprof query: the selected samples' `sum(value)` by stack
    /// hash, then the [`Symbolize`] node. `None` when the selector matches no series.
    pub async fn merge_plan(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        req: &MergeRequest,
        output: SymbolizeOutput,
    ) -> Result<Option<DataFrame>> {
        let session = self.merge_session(budget, tenants, req)?;
        self.merge_plan_on(&session, req, output).await
    }

    /// The session a merge request reads, windowed to its range, profile type and exact
    /// service.
    fn merge_session(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        req: &MergeRequest,
    ) -> Result<QuerySession> {
        self.session(
            budget,
            tenants,
            ScanWindow {
                range: Some(req.range),
                profile_type: Some(req.profile_type.clone()),
                services: selector_services(&req.selector),
            },
        )
    }

    /// [`Self::merge_plan`] in a session already made.
    async fn merge_plan_on(
        &self,
        session: &QuerySession,
        req: &MergeRequest,
        output: SymbolizeOutput,
    ) -> Result<Option<DataFrame>> {
        // A selector on `service_name` alone filters the samples' own column; any other is
        // resolved to the series it matches.
        let narrowing = match service_column_filter(&req.selector) {
            Some(filters) => filters,
            None => {
                let series = self
                    .series(
                        session,
                        std::slice::from_ref(&req.selector),
                        Some(&req.profile_type),
                    )
                    .await?;
                if series.is_empty() {
                    return Ok(None);
                }
                series_filter(&series)
            }
        };
        let mut filter = narrowing.into_iter().fold(
            Self::sample_filter(&req.profile_type, req.range, None),
            Expr::and,
        );
        if !req.profile_ids.is_empty() {
            filter = filter
                .and(col("profile_id").in_list(req.profile_ids.iter().map(lit).collect(), false));
        }
        if !req.span_ids.is_empty() {
            filter = filter
                .and(col("span_id").in_list(req.span_ids.iter().map(|s| lit(*s)).collect(), false));
        }
        let ctx = &session.ctx;
        let merged = ctx.table("samples").await?.filter(filter)?.aggregate(
            vec![col("stack_hash")],
            vec![
                crate::functions::saturating_sum()
                    .call(vec![col("value")])
                    .alias("value"),
            ],
        )?;
        let stacks = ctx.table("stacks").await?;
        let frames = ctx
            .table("frames")
            .await?
            .select_columns(output.frame_columns())?;
        let plan = Symbolize::plan(
            merged.into_unoptimized_plan(),
            stacks.into_unoptimized_plan(),
            frames.into_unoptimized_plan(),
            output,
            req.stacks.clone(),
        )?;
        Ok(Some(DataFrame::new(ctx.state(), plan)))
    }

    /// The merged call tree of the samples a request selects: whole when `max_nodes` is 0,
    /// else truncated so that its flame graph or tree bytes at `max_nodes` are exactly the
    /// whole tree's (only the nodes that survive travel and get decoded).
    pub async fn merge_tree(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        req: &MergeRequest,
        max_nodes: usize,
    ) -> Result<Charged<Tree>> {
        let mut reservation = budget.reservation("flame-graph tree");
        let output = SymbolizeOutput::Tree { max_nodes };
        let Some(plan) = self.merge_plan(budget, tenants, req, output).await? else {
            return Ok(Charged::new(Tree::new(), reservation));
        };
        let bytes = symbolize::output_bytes(&collect(plan).await?)?;
        let tree = Tree::from_tree_bytes_charged(&bytes, budget.tree_charge(&mut reservation))?;
        Ok(Charged::new(tree, reservation))
    }

    /// The merged samples a request selects as one pprof profile, its time span the query
    /// range and its period the largest of the selected profiles'.
    pub async fn merge_pprof(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        req: &MergeRequest,
    ) -> Result<pprof::Profile> {
        let profile_type = ProfileType::parse(&req.profile_type)
            .map_err(|e| QueryError::invalid(e.to_string()))?;
        let session = self.merge_session(budget, tenants, req)?;
        let period = Self::max_period(&session, req).await?;
        let header = PprofHeader {
            sample_type: profile_type.sample_type,
            sample_unit: profile_type.sample_unit,
            period_type: profile_type.period_type,
            period_unit: profile_type.period_unit,
            period,
            time_nanos: req.range.start,
            duration_nanos: req
                .range
                .end
                .saturating_sub(req.range.start)
                .saturating_add(1),
        };
        match self
            .merge_plan_on(&session, req, SymbolizeOutput::Pprof(header.clone()))
            .await?
        {
            Some(plan) => {
                let bytes = symbolize::output_bytes(&collect(plan).await?)?;
                pprof::Profile::decode(bytes.as_slice())
                    .map_err(|e| QueryError::internal(format!("symbolized pprof: {e}")))
            }
            None => Ok(symbolize::empty_pprof(&header)),
        }
    }

    /// The largest period of the profiles a request selects (0 when none).
    async fn max_period(session: &QuerySession, req: &MergeRequest) -> Result<i64> {
        let rows = session
            .ctx
            .table("profiles")
            .await?
            .filter(Self::sample_filter(&req.profile_type, req.range, None))?
            .aggregate(vec![], vec![max(col("period")).alias("period")])?
            .collect()
            .await?;
        Ok(rows
            .iter()
            .find(|b| b.num_rows() > 0)
            .and_then(|b| {
                let c = b.column(0).as_primitive::<Int64Type>();
                (!c.is_null(0)).then(|| c.value(0))
            })
            .unwrap_or(0))
    }

    /// The indented physical plan of a flame-graph query, as `EXPLAIN` shows it.
    pub async fn explain_merge(&self, tenants: &[String], req: &MergeRequest) -> Result<String> {
        let output = SymbolizeOutput::Tree { max_nodes: 0 };
        let Some(plan) = self
            .merge_plan(&self.budget(), tenants, req, output)
            .await?
        else {
            return Ok("EmptyExec: no series match the selector".into());
        };
        let physical = plan.create_physical_plan().await?;
        // A plan split into stages shows them, with their network boundaries.
        if physical
            .downcast_ref::<datafusion_distributed::DistributedExec>()
            .is_some()
        {
            return Ok(datafusion_distributed::display_plan_ascii(
                physical.as_ref(),
                false,
            ));
        }
        Ok(datafusion::physical_plan::displayable(physical.as_ref())
            .indent(false)
            .to_string())
    }

    /// Time series of profile totals: one series per distinct value set of `group_by` labels,
    /// points at epoch-aligned multiples of `step_millis`, summed or averaged per step, the
    /// `limit` series with the largest totals when a limit is given.
    pub async fn select_series(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        query: &SeriesQuery,
    ) -> Result<Vec<TimeSeries>> {
        let session = self.session(
            budget,
            tenants,
            ScanWindow {
                range: Some(query.range),
                profile_type: Some(query.profile_type.clone()),
                services: selector_services(&query.selector),
            },
        )?;
        let mut points = SeriesPoints::new(budget);
        // A selector and grouping over `service_name` alone read the profiles' own column:
        // no series lookup, and a block file's answer is a row per service and step, not per
        // series and step (a dashboard's usual timeline; 1,100 series of 10 services kept 110
        // times the rows).
        match service_column_filter(&query.selector)
            .filter(|_| query.group_by.iter().all(|n| n == labels::SERVICE_NAME))
        {
            Some(filters) => Self::service_points(&session, query, filters, &mut points).await?,
            None => self.series_points(&session, query, &mut points).await?,
        }
        Ok(top_series(points.series(query.average), query.limit))
    }

    /// Adds the points of a query whose selector is `filters` on `service_name` and whose
    /// groups are by `service_name` (or none), read from the profiles' own column.
    async fn service_points(
        session: &QuerySession,
        query: &SeriesQuery,
        filters: Vec<Expr>,
        points: &mut SeriesPoints<'_>,
    ) -> Result<()> {
        let grouped = !query.group_by.is_empty();
        let filter = filters.into_iter().fold(
            Self::sample_filter(&query.profile_type, query.range, None),
            Expr::and,
        );
        let mut rows = Self::points_plan(
            session,
            query,
            filter,
            grouped.then(|| col(labels::SERVICE_NAME)),
        )
        .await?
        .execute_stream()
        .await?;
        let mut group_of: HashMap<String, usize> = HashMap::new();
        while let Some(b) = rows.next().await.transpose()? {
            // Without a group the rows start at the step.
            let services = match grouped {
                true => Some(
                    datafusion::arrow::compute::cast(
                        b.column(0),
                        &datafusion::arrow::datatypes::DataType::Utf8,
                    )
                    .map_err(datafusion::error::DataFusionError::from)?,
                ),
                false => None,
            };
            let services = services.as_ref().map(|s| s.as_string::<i32>());
            let first = usize::from(grouped);
            let (steps, sums, profiles) = (
                b.column(first).as_primitive::<Int64Type>(),
                b.column(first + 1).as_primitive::<Int64Type>(),
                b.column(first + 2).as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                let service = services.map_or("", |s| s.value(i));
                let group = match group_of.get(service) {
                    Some(&g) => g,
                    None => {
                        // An absent label reads as "" and is left out of the key, as a
                        // series lacking a `group_by` label is grouped.
                        let key: GroupKey = query
                            .group_by
                            .iter()
                            .filter(|_| !service.is_empty())
                            .map(|n| (n.clone(), service.to_owned()))
                            .collect();
                        let g = points.group(key);
                        group_of.insert(service.to_owned(), g);
                        g
                    }
                };
                points.add(group, steps.value(i), sums.value(i), profiles.value(i));
            }
            points.hold()?;
        }
        Ok(())
    }

    /// Adds the points of a query through the series lookup: per series and step, then each
    /// series to its `group_by` labels.
    async fn series_points(
        &self,
        session: &QuerySession,
        query: &SeriesQuery,
        points: &mut SeriesPoints<'_>,
    ) -> Result<()> {
        let series = self
            .series(
                session,
                std::slice::from_ref(&query.selector),
                Some(query.profile_type.as_str()),
            )
            .await?;
        if series.is_empty() {
            return Ok(());
        }
        let group_of: PrehashedMap<u64, usize> = series
            .iter()
            .map(|s| {
                let key: GroupKey = query
                    .group_by
                    .iter()
                    .filter_map(|name| s.get(name).map(|v| (name.clone(), v.to_owned())))
                    .collect();
                (s.fingerprint, points.group(key))
            })
            .collect();
        let narrowed = (!query.selector.matchers.is_empty()).then_some(series.as_slice());
        let mut rows = Self::series_points_plan(session, query, narrowed)
            .await?
            .execute_stream()
            .await?;
        while let Some(b) = rows.next().await.transpose()? {
            let (fps, steps, sums, profiles) = (
                b.column(0).as_primitive::<UInt64Type>(),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2).as_primitive::<Int64Type>(),
                b.column(3).as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                if let Some(&group) = group_of.get(&fps.value(i)) {
                    points.add(group, steps.value(i), sums.value(i), profiles.value(i));
                }
            }
            points.hold()?;
        }
        Ok(())
    }

    /// The plan of a time series' points before series are grouped: per series and step
    /// (see [`crate::functions::step_start_ms`]), the saturating sum of the selected profiles'
    /// totals and their count; `series_fingerprint`, `step_ms`, `total`, `profiles`. Profiles'
    /// totals, never samples, and a partial aggregation over block files that
    /// [`BlockAggregates`] keeps per file: a dashboard's refresh aggregates only new data.
    pub async fn series_points_plan(
        session: &QuerySession,
        query: &SeriesQuery,
        narrowed: Option<&[SeriesLabels]>,
    ) -> Result<DataFrame> {
        let filter = Self::sample_filter(&query.profile_type, query.range, narrowed);
        Self::points_plan(session, query, filter, Some(col("series_fingerprint"))).await
    }

    /// Per `key` (none: one row per step) and step, the saturating sum of the totals of the
    /// profiles that pass `filter`, and their count: `key`, `step_ms`, `total`, `profiles`.
    async fn points_plan(
        session: &QuerySession,
        query: &SeriesQuery,
        filter: Expr,
        key: Option<Expr>,
    ) -> Result<DataFrame> {
        let step_start = crate::functions::step_start_ms()
            .call(vec![col("time_nanos"), lit(query.step_millis.max(1))]);
        Ok(session
            .ctx
            .table("profiles")
            .await?
            .filter(filter)?
            .aggregate(
                key.into_iter()
                    .chain([step_start.alias("step_ms")])
                    .collect(),
                vec![
                    crate::functions::saturating_sum()
                        .call(vec![col("total_value")])
                        .alias("total"),
                    count(lit(1)).alias("profiles"),
                ],
            )?)
    }

    async fn summaries(&self, tenants: &[String]) -> Result<Vec<GenerationSummary>> {
        let mut out = Vec::new();
        for t in tenants {
            out.extend(self.head.summary(t).await.map_err(QueryError::from_scan)?);
        }
        Ok(out)
    }

    /// Blocks of `tenants` overlapping `range`, whatever they hold.
    async fn blocks_in(
        &self,
        tenants: &[String],
        range: TimeRange,
    ) -> Result<Vec<profusion_model::block::BlockMeta>> {
        let mut out = Vec::new();
        for t in tenants {
            let mut request = ScanRequest::all(t.as_str(), Table::Profiles);
            request.range = range;
            out.extend(
                self.blocks
                    .blocks(&request)
                    .await
                    .map_err(QueryError::from_scan)?,
            );
        }
        Ok(out)
    }

    /// Whether the tenants have any data, and the times of its oldest and newest profiles
    /// (Unix milliseconds).
    pub async fn profile_stats(&self, tenants: &[String]) -> Result<Option<(i64, i64)>> {
        let mut bounds: Option<(i64, i64)> = None;
        let mut widen = |min: i64, max: i64| {
            bounds = Some(bounds.map_or((min, max), |(a, b)| (a.min(min), b.max(max))));
        };
        for g in self.summaries(tenants).await? {
            widen(g.min_time_nanos, g.max_time_nanos);
        }
        for b in self.blocks_in(tenants, TimeRange::ALL).await? {
            widen(b.min_time_nanos, b.max_time_nanos);
        }
        Ok(bounds.map(|(min, max)| (min.div_euclid(1_000_000), max.div_euclid(1_000_000))))
    }

    /// What a query over `range` would read: head data and catalog-selected blocks, and how
    /// many series the selector matches.
    pub async fn analyze(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        selector: &Selector,
        range: TimeRange,
    ) -> Result<QueryAnalysis> {
        let mut head = QueryScope {
            component: "Head",
            components: 1,
            ..QueryScope::default()
        };
        for g in self.summaries(tenants).await? {
            if range.overlaps(g.min_time_nanos, g.max_time_nanos) {
                head.blocks += 1;
                head.series += g.num_series;
                head.profiles += g.num_profiles;
                head.samples += g.num_samples;
                head.bytes += g.bytes;
            }
        }
        let session = self.session(
            budget,
            tenants,
            ScanWindow {
                range: Some(range),
                profile_type: None,
                services: selector_services(selector),
            },
        )?;
        let blocks = session.schema.table(Table::Series).blocks(&[]).await?;
        let mut store = QueryScope {
            component: "Object storage",
            components: u64::from(!blocks.is_empty()),
            ..QueryScope::default()
        };
        for b in &blocks {
            store.blocks += 1;
            store.series += b.num_series;
            store.profiles += b.num_profiles;
            store.samples += b.num_samples;
            store.bytes += b.size_bytes;
        }
        let series = self
            .series(&session, std::slice::from_ref(selector), None)
            .await?
            .len() as u64;
        Ok(QueryAnalysis {
            scopes: vec![head, store],
            matching_series: series,
        })
    }

    /// Profile types with data in the range, sorted.
    pub async fn profile_types(&self, tenants: &[String], range: TimeRange) -> Result<Vec<String>> {
        let mut types: HashSet<String> = self
            .summaries(tenants)
            .await?
            .into_iter()
            .filter(|g| range.overlaps(g.min_time_nanos, g.max_time_nanos))
            .flat_map(|g| g.profile_types)
            .collect();
        for b in self.blocks_in(tenants, range).await? {
            types.extend(b.profile_types);
        }
        let mut out: Vec<String> = types.into_iter().collect();
        out.sort();
        Ok(out)
    }
}

/// The `limit` series with the largest totals (all when `None`), sorted by labels.
pub fn top_series(mut series: Vec<TimeSeries>, limit: Option<usize>) -> Vec<TimeSeries> {
    if let Some(limit) = limit {
        series.sort_by(|a, b| {
            b.total()
                .total_cmp(&a.total())
                .then_with(|| a.labels.cmp(&b.labels))
        });
        series.truncate(limit);
    }
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    series
}

/// Filters keeping the rows of `series`: their services (which blocks are sorted by, so
/// pages and row groups prune; "" for a series without the label) and their fingerprints,
/// both in a stable order, since a filter's text keys what [`BlockAggregates`] keeps.
fn series_filter(series: &[SeriesLabels]) -> Vec<Expr> {
    let services: std::collections::BTreeSet<&str> = series
        .iter()
        .map(|s| s.get(labels::SERVICE_NAME).unwrap_or(""))
        .collect();
    vec![
        col(labels::SERVICE_NAME).in_list(services.into_iter().map(lit).collect(), false),
        col("series_fingerprint")
            .in_list(series.iter().map(|s| lit(s.fingerprint)).collect(), false),
    ]
}

/// A selector as filters on the profiles' `service_name` column, when it names no other
/// label (no filters when it has no matchers). The column holds the label's value, "" when a
/// series lacks it, which is the value a matcher compares then.
fn service_column_filter(selector: &Selector) -> Option<Vec<Expr>> {
    use crate::selector::MatchOp;
    use datafusion::logical_expr::{BinaryExpr, Operator};
    selector
        .matchers
        .iter()
        .map(|m| {
            if m.name != labels::SERVICE_NAME {
                return None;
            }
            let column = col(labels::SERVICE_NAME);
            // The matcher's own anchoring: RE2 syntax through the same `regex` crate.
            let anchored = || lit(format!("^(?:{})$", m.value));
            let regex = |op| {
                Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(column.clone()),
                    op,
                    Box::new(anchored()),
                ))
            };
            Some(match m.op {
                MatchOp::Equal => column.clone().eq(lit(m.value.as_str())),
                MatchOp::NotEqual => column.clone().not_eq(lit(m.value.as_str())),
                MatchOp::Regex => regex(Operator::RegexMatch),
                MatchOp::NotRegex => regex(Operator::RegexNotMatch),
            })
        })
        .collect()
}

/// A time series' points as they are summed: each distinct group once, and per group and
/// step the sum of the profiles' totals and their count, held against the query's budget (a
/// tiny step over a long range makes many).
struct SeriesPoints<'a> {
    budget: &'a QueryBudget,
    reservation: datafusion::execution::memory_pool::MemoryReservation,
    groups: Vec<GroupKey>,
    group_index: HashMap<GroupKey, usize>,
    /// (group, step start) -> (sum, profiles)
    buckets: HashMap<(usize, i64), (i64, i64)>,
}

impl<'a> SeriesPoints<'a> {
    fn new(budget: &'a QueryBudget) -> Self {
        Self {
            budget,
            reservation: budget.reservation("time series points"),
            groups: Vec::new(),
            group_index: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// The index of a group, added when new.
    fn group(&mut self, key: GroupKey) -> usize {
        let next = self.groups.len();
        let i = *self.group_index.entry(key.clone()).or_insert(next);
        if i == next {
            self.groups.push(key);
        }
        i
    }

    fn add(&mut self, group: usize, step_ms: i64, total: i64, profiles: i64) {
        let e = self.buckets.entry((group, step_ms)).or_default();
        e.0 = e.0.saturating_add(total);
        e.1 += profiles;
    }

    /// Holds the points so far against the budget.
    fn hold(&mut self) -> Result<()> {
        const BUCKET_BYTES: usize = 48;
        self.budget.hold(
            &mut self.reservation,
            "the time series' points",
            self.buckets.capacity() * BUCKET_BYTES,
        )
    }

    /// One series per group with points, sums or averages per profile, in time order.
    fn series(self, average: bool) -> Vec<TimeSeries> {
        let mut by_group: HashMap<usize, Vec<(i64, f64)>> = HashMap::new();
        for ((group, ts), (sum, n)) in self.buckets {
            let value = if average {
                sum as f64 / n as f64
            } else {
                sum as f64
            };
            by_group.entry(group).or_default().push((ts, value));
        }
        by_group
            .into_iter()
            .map(|(group, mut points)| {
                points.sort_by_key(|p| p.0);
                TimeSeries {
                    labels: self.groups[group].clone(),
                    points,
                }
            })
            .collect()
    }
}

/// The services an exact `service_name` matcher pins, for catalog pruning.
fn selector_services(selector: &Selector) -> Option<Vec<String>> {
    selector
        .matchers
        .iter()
        .find(|m| m.name == labels::SERVICE_NAME && m.op == crate::selector::MatchOp::Equal)
        .map(|m| vec![m.value.clone()])
}

/// The scope of a read of `tenants` (already validated by the API).
fn scope_of(tenants: &[String]) -> Result<TenantScope> {
    let ids = tenants
        .iter()
        .map(|t| TenantId::new(t.as_str()).map_err(|e| QueryError::invalid(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    TenantScope::new(ids).ok_or_else(|| QueryError::invalid("a read must name a tenant"))
}

#[async_trait::async_trait]
impl ReadExecutor for Querier {
    fn budget(&self) -> QueryBudget {
        Querier::budget(self)
    }

    async fn execute(&self, ctx: &QueryContext, job: ReadJob) -> Result<ReadAnswer> {
        let tenants = ctx.tenants();
        let budget = &ctx.budget;
        Ok(match job {
            ReadJob::MergeTree { request, max_nodes } => ReadAnswer::Tree(
                self.merge_tree(budget, &tenants, &request, max_nodes)
                    .await?,
            ),
            ReadJob::MergePprof { request } => {
                ReadAnswer::Pprof(self.merge_pprof(budget, &tenants, &request).await?)
            }
            ReadJob::SelectSeries(query) => {
                ReadAnswer::Series(self.select_series(budget, &tenants, &query).await?)
            }
            ReadJob::Series {
                range,
                selectors,
                profile_type,
            } => {
                let session = self.session(
                    budget,
                    &tenants,
                    ScanWindow {
                        range: Some(range),
                        profile_type: profile_type.clone(),
                        services: None,
                    },
                )?;
                ReadAnswer::Labels(
                    self.series(&session, &selectors, profile_type.as_deref())
                        .await?,
                )
            }
            ReadJob::ProfileTypes { range } => {
                ReadAnswer::ProfileTypes(self.profile_types(&tenants, range).await?)
            }
            ReadJob::ProfileStats => ReadAnswer::ProfileStats(self.profile_stats(&tenants).await?),
            ReadJob::Analyze { selector, range } => {
                ReadAnswer::Analysis(self.analyze(budget, &tenants, &selector, range).await?)
            }
            ReadJob::Sql(request) => ReadAnswer::Table(self.sql(budget, &tenants, &request).await?),
        })
    }
}

/// The partial groupings under `plan` when it is a final grouping without aggregates: the same
/// columns, a group once per part that holds it (the head, each block file) instead of once.
fn partial_groupings(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) -> Arc<dyn datafusion::physical_plan::ExecutionPlan> {
    use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::repartition::RepartitionExec;
    let Some(aggregate) = plan.downcast_ref::<AggregateExec>() else {
        return plan;
    };
    let final_grouping = matches!(
        aggregate.mode(),
        AggregateMode::Final | AggregateMode::FinalPartitioned
    ) && aggregate.aggr_expr().is_empty();
    if !final_grouping {
        return plan;
    }
    let mut input = Arc::clone(aggregate.input());
    // The exchange feeding the final grouping has nothing left to do.
    while input.downcast_ref::<RepartitionExec>().is_some()
        || input.downcast_ref::<CoalescePartitionsExec>().is_some()
    {
        input = Arc::clone(input.children()[0]);
    }
    input
}

/// Runs a query's plan; one split into stages is checked to travel first (see
/// [`crate::distributed::check_stages_encode`]).
async fn collect(plan: DataFrame) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
    let task_ctx = Arc::new(plan.task_ctx());
    let physical = plan.create_physical_plan().await?;
    crate::distributed::check_stages_encode(&physical, &task_ctx)?;
    Ok(datafusion::physical_plan::collect(physical, task_ctx).await?)
}
