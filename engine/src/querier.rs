//! The querier: runs each read as DataFusion plans over one tenant's head snapshot and the
//! blocks the catalog lists for the time range.
//!
//! Every query gets its own `SessionContext` with a memory pool of the configured budget, and
//! five tables in the block schema (`samples`, `profiles`, `series`, `stacks`, `frames`), each
//! the union of the head's batches and the selected blocks' Parquet files. Blocks are selected
//! from catalog statistics (time range, profile type, service) before anything is read; blocks
//! flushed from WAL segments still in the head snapshot are skipped, so nothing is counted twice
//! across a flush.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef, UInt64Type};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider,
};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::prelude::{DataFrame, Expr, SessionConfig, SessionContext, cast, col, lit};
use futures_util::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use profusion_catalog::{BlockMeta, Catalog};
use profusion_ingest::block::{self, BlockBatches};
use profusion_ingest::hash::PrehashedMap;
use profusion_ingest::ingester::{GenerationSummary, HeadSnapshot};
use profusion_ingest::labels;

use crate::budget::{Charged, QueryBudget};
use crate::error::{QueryError, Result};
use crate::flamegraph::Tree;
use crate::selector::Selector;
use crate::symbolize::{self, PprofHeader, StackFilter, Symbolize, SymbolizeOutput};
use profusion_proto::google::v1 as pprof;
use prost::Message;

/// Where the head data of a tenant comes from: the in-process ingester in monolithic mode.
pub trait HeadSource: Send + Sync + std::fmt::Debug {
    /// The tenant's head data as block batches, for queries that read samples.
    fn snapshot(&self, tenant: &str) -> Result<HeadSnapshot>;
    /// Time bounds and profile types per generation, for queries that do not.
    fn summary(&self, tenant: &str) -> Vec<GenerationSummary>;
}

impl HeadSource for profusion_ingest::ingester::Ingester {
    fn snapshot(&self, tenant: &str) -> Result<HeadSnapshot> {
        Ok(profusion_ingest::ingester::Ingester::snapshot(
            self, tenant,
        )?)
    }

    fn summary(&self, tenant: &str) -> Vec<GenerationSummary> {
        profusion_ingest::ingester::Ingester::summary(self, tenant)
    }
}

/// Querier settings.
#[derive(Debug, Clone)]
pub struct QuerierConfig {
    /// Memory budget of one query, in bytes; a query over it fails with `resource_exhausted`.
    pub query_memory_bytes: usize,
    /// Parallelism of one query's plans.
    pub target_partitions: usize,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        Self {
            query_memory_bytes: 1 << 30,
            target_partitions: 2,
        }
    }
}

/// A time range in Unix nanoseconds, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
}

impl TimeRange {
    /// A range that selects nothing.
    pub const EMPTY: Self = Self {
        start: i64::MAX,
        end: i64::MIN,
    };

    /// From Pyroscope's millisecond bounds, both inclusive.
    pub fn from_millis(start: i64, end: i64) -> Self {
        Self {
            start: start.saturating_mul(1_000_000),
            end: end.saturating_mul(1_000_000).saturating_add(999_999),
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

const STORE_URL: &str = "profusion://store/";
/// Rows per head batch handed to a scan (DataFusion's default batch size).
const HEAD_SLICE_ROWS: usize = 8192;
const TABLES: [&str; 5] = ["samples", "profiles", "series", "stacks", "frames"];

#[derive(Debug)]
pub struct Querier {
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn ObjectStore>,
    head: Arc<dyn HeadSource>,
    config: QuerierConfig,
    /// Functions, options and planner, built once; each query copies it with its own memory
    /// pool and tables.
    base: datafusion::execution::SessionState,
}

/// One query's DataFusion session with the tenant's tables registered.
pub struct QueryTables {
    pub ctx: SessionContext,
    /// The blocks the tables read, after catalog pruning.
    pub blocks: Vec<BlockMeta>,
    /// The budget the session's pool belongs to, for what the query builds outside DataFusion.
    pub budget: QueryBudget,
}

impl std::fmt::Debug for QueryTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryTables")
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

impl Querier {
    pub fn new(
        catalog: Arc<dyn Catalog>,
        store: Arc<dyn ObjectStore>,
        head: Arc<dyn HeadSource>,
        config: QuerierConfig,
    ) -> Self {
        // Parquet strings are read as views (the default): dictionary-encoded columns such as
        // `profile_type` then cost no copy per row. The head side is cast to match.
        let mut options =
            SessionConfig::new().with_target_partitions(config.target_partitions.max(1));
        // Evaluate filters inside the Parquet scan: row groups whose statistics prove every
        // row matches (the usual case for profile type and time) skip the per-row check.
        options.options_mut().execution.parquet.pushdown_filters = true;
        options.options_mut().execution.parquet.reorder_filters = true;
        let base = symbolize::with_planner(
            SessionStateBuilder::new()
                .with_config(options)
                .with_default_features(),
        );
        Self {
            catalog,
            store,
            head,
            config,
            base,
        }
    }

    /// A fresh budget of the configured size, for one query.
    pub fn budget(&self) -> QueryBudget {
        QueryBudget::new(self.config.query_memory_bytes)
    }

    fn session(&self, budget: &QueryBudget) -> Result<SessionContext> {
        // The budget is a hard limit for now: no spilling to disk, so a query over it fails with
        // `resource_exhausted` instead of filling the disk.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(budget.pool())
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        // A fresh catalog per query: the base state's would be shared by every copy.
        let defaults = &self.base.config().options().catalog;
        let schema = MemoryCatalogProvider::new();
        schema.register_schema(
            &defaults.default_schema,
            Arc::new(MemorySchemaProvider::new()),
        )?;
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(defaults.default_catalog.clone(), Arc::new(schema));
        let state = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_catalog_list(Arc::new(catalogs))
            .with_runtime_env(runtime)
            .build();
        let ctx = SessionContext::new_with_state(state);
        let url = url::Url::parse(STORE_URL).map_err(|e| QueryError::internal(e.to_string()))?;
        ctx.register_object_store(&url, Arc::clone(&self.store));
        Ok(ctx)
    }

    /// Registers the tables of `tenants` (one, or several for a cross-tenant read) for a query
    /// over `range`, reading only blocks that may hold `profile_type` (when given) and one of
    /// `services` (when given).
    pub async fn tables(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        range: TimeRange,
        profile_type: Option<&str>,
        services: Option<&HashSet<String>>,
    ) -> Result<QueryTables> {
        let ctx = self.session(budget)?;
        let mut heads: Vec<Arc<BlockBatches>> = Vec::new();
        let mut blocks: Vec<BlockMeta> = Vec::new();
        for tenant in tenants {
            let snapshot = self.head.snapshot(tenant)?;
            let in_head: HashSet<u64> = snapshot.segments.iter().copied().collect();
            blocks.extend(
                self.catalog
                    .blocks(tenant, range.start, range.end)
                    .await?
                    .into_iter()
                    .filter(|b| !(b.source == snapshot.source && in_head.contains(&b.wal_segment)))
                    .filter(|b| {
                        profile_type.is_none_or(|pt| b.profile_types.iter().any(|t| t == pt))
                    })
                    .filter(|b| services.is_none_or(|s| b.services.iter().any(|x| s.contains(x)))),
            );
            heads.extend(snapshot.batches);
        }
        for (table, schema) in TABLES.iter().zip(schemas()) {
            // The head's batches, sliced into scan-sized pieces spread over the partitions, so
            // the plan needs no repartitioning of the head; a repartition would charge every
            // slice of a large batch to the memory pool at the size of the whole batch.
            let partitions = self.config.target_partitions.max(1);
            let mut head_batches: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
            let mut next = 0;
            for b in &heads {
                let batch = table_batch(b, table);
                let mut offset = 0;
                while offset < batch.num_rows() {
                    let len = HEAD_SLICE_ROWS.min(batch.num_rows() - offset);
                    head_batches[next % partitions].push(batch.slice(offset, len));
                    next += 1;
                    offset += len;
                }
            }
            let head = MemTable::try_new(Arc::clone(&schema), head_batches)?;
            let mut df = ctx.read_table(Arc::new(head))?.select(
                schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let c = col(f.name());
                        if f.data_type() == &DataType::Utf8 {
                            cast(c, DataType::Utf8View).alias(f.name())
                        } else {
                            c
                        }
                    })
                    .collect::<Vec<Expr>>(),
            )?;
            if !blocks.is_empty() {
                let file = file_name(table);
                let urls = blocks
                    .iter()
                    .map(|b| block_url(&block::block_file_path(&b.tenant, &b.id, file)))
                    .collect::<Result<Vec<_>>>()?;
                let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                    .with_file_extension(".parquet");
                let config = ListingTableConfig::new_with_multi_paths(urls)
                    .with_listing_options(options)
                    .with_schema(view_schema(&schema));
                df = df.union(ctx.read_table(Arc::new(ListingTable::try_new(config)?))?)?;
            }
            ctx.register_table(*table, df.into_view())?;
        }
        Ok(QueryTables {
            ctx,
            blocks,
            budget: budget.clone(),
        })
    }

    /// Series of the tenant matching any of `selectors` (all series when there are none),
    /// optionally of one profile type.
    pub async fn series(
        &self,
        tables: &QueryTables,
        selectors: &[Selector],
        profile_type: Option<&str>,
    ) -> Result<Vec<SeriesLabels>> {
        let mut df = tables.ctx.table("series").await?;
        if let Some(pt) = profile_type {
            df = df.filter(col("profile_type").eq(lit(pt)))?;
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        // Label sets are the query's to hold: a tenant may have churned through many series.
        let mut reservation = tables.budget.reservation("series labels");
        let mut held = 0usize;
        let mut batches = df
            .select(vec![col("series_fingerprint"), col("labels")])?
            .execute_stream()
            .await?;
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
                    tables
                        .budget
                        .hold(&mut reservation, "the matching series' labels", held)?;
                    seen.insert(fp);
                    out.push(series);
                }
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// The sample filter of a profile type, time range and (when the selector narrows them)
    /// series.
    fn sample_filter(
        profile_type: &str,
        range: TimeRange,
        series: Option<&[SeriesLabels]>,
    ) -> Expr {
        let mut filter = col("profile_type")
            .eq(lit(profile_type))
            .and(col("time_nanos").gt_eq(lit(range.start)))
            .and(col("time_nanos").lt_eq(lit(range.end)));
        if let Some(series) = series {
            let services: HashSet<&str> = series
                .iter()
                .filter_map(|s| s.get(labels::SERVICE_NAME))
                .collect();
            filter = filter
                .and(col("service_name").in_list(services.into_iter().map(lit).collect(), false))
                .and(
                    col("series_fingerprint")
                        .in_list(series.iter().map(|s| lit(s.fingerprint)).collect(), false),
                );
        }
        filter
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
        let tables = self.merge_tables(budget, tenants, req).await?;
        self.merge_plan_on(&tables, req, output).await
    }

    /// The tables a merge request reads, pruned by its profile type and exact service.
    async fn merge_tables(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        req: &MergeRequest,
    ) -> Result<QueryTables> {
        let services = selector_services(&req.selector);
        self.tables(
            budget,
            tenants,
            req.range,
            Some(&req.profile_type),
            services.as_ref(),
        )
        .await
    }

    /// [`Self::merge_plan`] over tables already registered.
    async fn merge_plan_on(
        &self,
        tables: &QueryTables,
        req: &MergeRequest,
        output: SymbolizeOutput,
    ) -> Result<Option<DataFrame>> {
        let series = if req.selector.matchers.is_empty() {
            None
        } else {
            let s = self
                .series(
                    tables,
                    std::slice::from_ref(&req.selector),
                    Some(&req.profile_type),
                )
                .await?;
            if s.is_empty() {
                return Ok(None);
            }
            Some(s)
        };
        let mut filter = Self::sample_filter(&req.profile_type, req.range, series.as_deref());
        if !req.profile_ids.is_empty() {
            filter = filter
                .and(col("profile_id").in_list(req.profile_ids.iter().map(lit).collect(), false));
        }
        if !req.span_ids.is_empty() {
            filter = filter
                .and(col("span_id").in_list(req.span_ids.iter().map(|s| lit(*s)).collect(), false));
        }
        let ctx = &tables.ctx;
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
        let bytes = symbolize::output_bytes(&plan.collect().await?)?;
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
        let parts: Vec<&str> = req.profile_type.split(':').collect();
        let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_owned();
        let tables = self.merge_tables(budget, tenants, req).await?;
        let period = Self::max_period(&tables, req).await?;
        let header = PprofHeader {
            sample_type: part(1),
            sample_unit: part(2),
            period_type: part(3),
            period_unit: part(4),
            period,
            time_nanos: req.range.start,
            duration_nanos: req
                .range
                .end
                .saturating_sub(req.range.start)
                .saturating_add(1),
        };
        match self
            .merge_plan_on(&tables, req, SymbolizeOutput::Pprof(header.clone()))
            .await?
        {
            Some(plan) => {
                let bytes = symbolize::output_bytes(&plan.collect().await?)?;
                pprof::Profile::decode(bytes.as_slice())
                    .map_err(|e| QueryError::internal(format!("symbolized pprof: {e}")))
            }
            None => Ok(symbolize::empty_pprof(&header)),
        }
    }

    /// The largest period of the profiles a request selects (0 when none).
    async fn max_period(tables: &QueryTables, req: &MergeRequest) -> Result<i64> {
        let rows = tables
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
        let services = selector_services(&query.selector);
        let tables = self
            .tables(
                budget,
                tenants,
                query.range,
                Some(query.profile_type.as_str()),
                services.as_ref(),
            )
            .await?;
        let series = self
            .series(
                &tables,
                std::slice::from_ref(&query.selector),
                Some(query.profile_type.as_str()),
            )
            .await?;
        if series.is_empty() {
            return Ok(Vec::new());
        }
        // Each distinct group once; rows carry its index.
        let mut groups: Vec<GroupKey> = Vec::new();
        let mut group_index: HashMap<GroupKey, usize> = HashMap::new();
        let group_of: PrehashedMap<u64, usize> = series
            .iter()
            .map(|s| {
                let key: GroupKey = query
                    .group_by
                    .iter()
                    .filter_map(|name| s.get(name).map(|v| (name.clone(), v.to_owned())))
                    .collect();
                let next = groups.len();
                let i = *group_index.entry(key.clone()).or_insert(next);
                if i == next {
                    groups.push(key);
                }
                (s.fingerprint, i)
            })
            .collect();
        let narrowed = (!query.selector.matchers.is_empty()).then_some(series.as_slice());
        let mut rows = tables
            .ctx
            .table("profiles")
            .await?
            .filter(Self::sample_filter(
                &query.profile_type,
                query.range,
                narrowed,
            ))?
            .select(vec![
                col("series_fingerprint"),
                col("time_nanos"),
                col("total_value"),
            ])?
            .execute_stream()
            .await?;
        let step = query.step_millis.max(1);
        // (group, step start) -> (sum, profiles); a point per group and step with data, held
        // against the budget (a tiny step over a long range makes many).
        let mut buckets: HashMap<(usize, i64), (f64, u64)> = HashMap::new();
        let mut reservation = budget.reservation("time series points");
        const BUCKET_BYTES: usize = 64;
        while let Some(b) = rows.next().await.transpose()? {
            let (fps, times, totals) = (
                b.column(0).as_primitive::<UInt64Type>(),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2).as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                let Some(&group) = group_of.get(&fps.value(i)) else {
                    continue;
                };
                let t = times.value(i).div_euclid(1_000_000);
                let e = buckets.entry((group, t - t.rem_euclid(step))).or_default();
                e.0 += totals.value(i) as f64;
                e.1 += 1;
            }
            budget.hold(
                &mut reservation,
                "the time series' points",
                buckets.capacity() * BUCKET_BYTES,
            )?;
        }
        let mut by_group: HashMap<usize, Vec<(i64, f64)>> = HashMap::new();
        for ((group, ts), (sum, n)) in buckets {
            let value = if query.average { sum / n as f64 } else { sum };
            by_group.entry(group).or_default().push((ts, value));
        }
        let out: Vec<TimeSeries> = by_group
            .into_iter()
            .map(|(group, mut points)| {
                points.sort_by_key(|p| p.0);
                TimeSeries {
                    labels: groups[group].clone(),
                    points,
                }
            })
            .collect();
        Ok(top_series(out, query.limit))
    }

    fn summaries(&self, tenants: &[String]) -> Vec<GenerationSummary> {
        tenants.iter().flat_map(|t| self.head.summary(t)).collect()
    }

    async fn catalog_blocks(
        &self,
        tenants: &[String],
        min: i64,
        max: i64,
    ) -> Result<Vec<BlockMeta>> {
        let mut out = Vec::new();
        for t in tenants {
            out.extend(self.catalog.blocks(t, min, max).await?);
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
        for g in self.summaries(tenants) {
            widen(g.min_time_nanos, g.max_time_nanos);
        }
        for b in self.catalog_blocks(tenants, i64::MIN, i64::MAX).await? {
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
        let overlaps = |min: i64, max: i64| max >= range.start && min <= range.end;
        let mut head = QueryScope {
            component: "Head",
            components: 1,
            ..QueryScope::default()
        };
        for g in self.summaries(tenants) {
            if overlaps(g.min_time_nanos, g.max_time_nanos) {
                head.blocks += 1;
                head.series += g.num_series;
                head.profiles += g.num_profiles;
                head.samples += g.num_samples;
                head.bytes += g.bytes;
            }
        }
        let services = selector_services(selector);
        let tables = self
            .tables(budget, tenants, range, None, services.as_ref())
            .await?;
        let mut store = QueryScope {
            component: "Object storage",
            components: u64::from(!tables.blocks.is_empty()),
            ..QueryScope::default()
        };
        for b in &tables.blocks {
            store.blocks += 1;
            store.series += b.num_series;
            store.profiles += b.num_profiles;
            store.samples += b.num_samples;
            store.bytes += b.size_bytes;
        }
        let series = self
            .series(&tables, std::slice::from_ref(selector), None)
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
            .into_iter()
            .filter(|g| g.max_time_nanos >= range.start && g.min_time_nanos <= range.end)
            .flat_map(|g| g.profile_types)
            .collect();
        for b in self.catalog_blocks(tenants, range.start, range.end).await? {
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

/// The services an exact `service_name` matcher pins, for catalog pruning.
fn selector_services(selector: &Selector) -> Option<HashSet<String>> {
    selector
        .matchers
        .iter()
        .find(|m| m.name == labels::SERVICE_NAME && m.op == crate::selector::MatchOp::Equal)
        .map(|m| HashSet::from([m.value.clone()]))
}

/// The table URL of an object. The path's segments are already in object_store's encoding
/// (a tenant `a*` is the segment `a%2A`): pushed as URL segments, their `%` is escaped again,
/// so the listing table decodes the URL back to exactly that path. Formatting the path into a
/// URL string would decode `%2A` to `*`, a file that does not exist.
fn block_url(path: &ObjectPath) -> Result<ListingTableUrl> {
    let mut url = url::Url::parse(STORE_URL).map_err(|e| QueryError::internal(e.to_string()))?;
    url.path_segments_mut()
        .map_err(|()| QueryError::internal(format!("{STORE_URL} cannot take a path")))?
        .pop_if_empty()
        .extend(path.parts().map(|p| p.as_ref().to_owned()));
    Ok(ListingTableUrl::try_new(url, None)?)
}

/// `schema` with top-level strings as views, as the Parquet reader produces them.
fn view_schema(schema: &SchemaRef) -> SchemaRef {
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

fn schemas() -> [SchemaRef; 5] {
    [
        block::samples_schema(),
        block::profiles_schema(),
        block::series_schema(),
        block::stacks_schema(),
        block::frames_schema(),
    ]
}

fn table_batch<'a>(b: &'a BlockBatches, table: &str) -> &'a RecordBatch {
    match table {
        "samples" => &b.samples,
        "profiles" => &b.profiles,
        "series" => &b.series,
        "stacks" => &b.stacks,
        _ => &b.frames,
    }
}

fn file_name(table: &str) -> &'static str {
    match table {
        "samples" => block::SAMPLES_FILE,
        "profiles" => block::PROFILES_FILE,
        "series" => block::SERIES_FILE,
        "stacks" => block::STACKS_FILE,
        _ => block::FRAMES_FILE,
    }
}
