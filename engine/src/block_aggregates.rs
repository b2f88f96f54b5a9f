//! Per-file aggregates of block files, kept between queries.
//!
//! A block file never changes once it is registered (compaction writes new blocks under new
//! ids), so what a query's filter selects from one file and aggregates is the same every time
//! that query, or any with the same filter, reads it: a dashboard refreshing a flame graph or
//! a timeline, or a user opening the same range again, need not decode the rows of every
//! block again. The [`BlockAggregates`] rule finds a partial aggregation whose answer depends
//! only on the rows (a merge's `saturating_sum(value) GROUP BY stack_hash`, a time series'
//! sums of profile totals by series and step, SQL's `GROUP BY` of the same functions; see
//! [`cacheable`]), takes the branch of its input that reads only block files, and gives each
//! file its own partial aggregation inside a [`BlockAggregateExec`], which answers from the
//! [`BlockAggregateCache`] and computes (and keeps) only what it lacks. Head data changes
//! with every push and is never cached.
//!
//! The cache key of a file is the whole per-file plan as EXPLAIN shows it (the file, its
//! projection, and every predicate: profile type, time range, series, tombstones), so two
//! queries share an entry only when they ask exactly the same of that file.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, FileSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Operator, Volatility};
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::utils::{conjunction, split_conjunction};
use datafusion::physical_expr::{
    EquivalenceProperties, Partitioning, PhysicalExpr, ScalarFunctionExpr,
};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, displayable,
};
use futures_util::{StreamExt, TryStreamExt};

use crate::functions::SATURATING_SUM;
use crate::generations::Generations;

/// The per-file aggregates a querier keeps, up to a size in bytes: a session extension.
#[derive(Debug)]
pub struct BlockAggregateCache {
    entries: Generations<String, Arc<[RecordBatch]>>,
}

impl BlockAggregateCache {
    /// A cache of about `capacity_bytes`; 0 keeps nothing.
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            entries: Generations::new(capacity_bytes),
        }
    }
}

/// The rule: a merge's partial aggregation over block files becomes one aggregation per file,
/// answered from the cache where it can be (see the module doc).
#[derive(Debug)]
pub struct BlockAggregates;

impl PhysicalOptimizerRule for BlockAggregates {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let partitions = config.execution.target_partitions.max(1);
        plan.transform_up(|node| per_file(node, partitions))
            .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "profusion_block_aggregates"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` rewritten when it is the partial stack-hash sum of a merge reading block files.
fn per_file(
    node: Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some(partial) = node.downcast_ref::<AggregateExec>() else {
        return Ok(Transformed::no(node));
    };
    if !cacheable(partial) {
        return Ok(Transformed::no(node));
    }
    let aggregate = |input: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(AggregateExec::try_new(
            AggregateMode::Partial,
            partial.group_expr().clone(),
            partial.aggr_expr().to_vec(),
            partial.filter_expr().to_vec(),
            input,
            partial.input_schema(),
        )?))
    };
    let mut rewritten = false;
    let mut branches = Vec::new();
    for part in crate::distributed::split(partial.input())? {
        match files_of(&part) {
            Some(files) if !files.is_empty() => {
                let per_file = files
                    .into_iter()
                    .map(|file| aggregate(with_file(&part, file)?))
                    .collect::<Result<Vec<_>>>()?;
                branches.push(Arc::new(BlockAggregateExec::new(
                    per_file,
                    partial.schema(),
                    partitions,
                )) as Arc<dyn ExecutionPlan>);
                rewritten = true;
            }
            _ => branches.push(aggregate(part)?),
        }
    }
    if !rewritten {
        return Ok(Transformed::no(node));
    }
    let plan = if branches.len() == 1 {
        branches.remove(0)
    } else {
        UnionExec::try_new(branches)?
    };
    Ok(Transformed::new(plan, true, TreeNodeRecursion::Jump))
}

/// Aggregate functions whose partial state over a file depends on nothing but the file's rows.
const PER_FILE_AGGREGATES: &[&str] = &[SATURATING_SUM, "sum", "count", "min", "max"];

/// Whether `partial`'s answer over one block file can be kept for the next query with the same
/// plan: a partial aggregation with plain groups (no grouping sets, no per-aggregate filters),
/// of functions whose state depends only on the rows, over expressions that give the same
/// answer every time. A flame graph's sum by stack hash and a time series' sums by series
/// and step are such; so is SQL's `GROUP BY` of these functions, and not `random()`.
fn cacheable(partial: &AggregateExec) -> bool {
    *partial.mode() == AggregateMode::Partial
        && partial.group_expr().is_single()
        && !partial.group_expr().expr().is_empty()
        && partial.filter_expr().iter().all(Option::is_none)
        && partial
            .group_expr()
            .expr()
            .iter()
            .all(|(e, _)| immutable(e))
        && partial.aggr_expr().iter().all(|a| {
            PER_FILE_AGGREGATES.contains(&a.fun().name())
                && a.order_bys().is_empty()
                && a.expressions().iter().all(immutable)
        })
}

/// Whether `expr` gives the same answer for the same rows in every query: no volatile node,
/// no function that is not immutable (a stable one such as `now()` changes between queries),
/// and no dynamic filter (one a `TopK` or a join tightens while the query runs: what it let
/// through answered that run only).
fn immutable(expr: &Arc<dyn PhysicalExpr>) -> bool {
    let mut fixed = true;
    let _ = expr.apply(|e| {
        let function_varies = e
            .downcast_ref::<ScalarFunctionExpr>()
            .is_some_and(|f| f.fun().signature().volatility != Volatility::Immutable);
        if function_varies || e.is_volatile_node() || e.snapshot_generation() != 0 {
            fixed = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    fixed
}

/// The files `part` reads, when it reads block files and nothing else, through filters and
/// projections of [`immutable`] expressions only.
fn files_of(part: &Arc<dyn ExecutionPlan>) -> Option<Vec<PartitionedFile>> {
    let mut files = Vec::new();
    let mut plain = true;
    let _ = part.apply(|node| {
        let fixed = if let Some(config) = scan_config(node) {
            files.extend(
                config
                    .file_groups
                    .iter()
                    .flat_map(|g| g.files().iter().cloned()),
            );
            config
                .file_source()
                .downcast_ref::<ParquetSource>()
                .is_some_and(|p| p.filter().as_ref().is_none_or(immutable))
        } else if let Some(filter) = node.downcast_ref::<FilterExec>() {
            immutable(filter.predicate())
        } else if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
            projection.expr().iter().all(|e| immutable(&e.expr))
        } else {
            false
        };
        if !fixed {
            plain = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    plain.then_some(files)
}

/// The file scan of a Parquet scan node.
pub(crate) fn scan_config(node: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    node.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// `part` reading only `file`, with the time bounds its statistics prove dropped.
fn with_file(
    part: &Arc<dyn ExecutionPlan>,
    file: PartitionedFile,
) -> Result<Arc<dyn ExecutionPlan>> {
    Arc::clone(part)
        .transform_down(|node| {
            let Some(config) = scan_config(&node) else {
                return Ok(Transformed::no(node));
            };
            let mut builder = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(vec![FileGroup::new(vec![file.clone()])]);
            if let Some(source) = without_proven_time_bounds(config, &file) {
                builder = builder.with_source(source);
            }
            let config = builder.build();
            Ok(Transformed::new(
                DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>,
                true,
                TreeNodeRecursion::Jump,
            ))
        })
        .map(|t| t.data)
}

/// `config`'s Parquet source without the time bounds of its predicate that `file`'s statistics
/// prove every row meets. A file inside a query's range then has the same plan, and so the
/// same cache key, for every range that covers it, as a dashboard's sliding window does; and
/// it gives the same rows, since the bounds dropped were true of all of them.
fn without_proven_time_bounds(
    config: &FileScanConfig,
    file: &PartitionedFile,
) -> Option<Arc<dyn FileSource>> {
    let source = config.file_source().downcast_ref::<ParquetSource>()?;
    let predicate = source.filter()?;
    let column = config.file_schema().index_of("time_nanos").ok()?;
    let stats = file.statistics.as_ref()?.column_statistics.get(column)?;
    let (Some(&ScalarValue::Int64(Some(min))), Some(&ScalarValue::Int64(Some(max)))) =
        (stats.min_value.get_value(), stats.max_value.get_value())
    else {
        return None;
    };
    let conjuncts = split_conjunction(&predicate);
    let kept: Vec<Arc<dyn PhysicalExpr>> = conjuncts
        .iter()
        .filter(|c| !time_bound_holds(c, min, max))
        .map(|c| Arc::clone(c))
        .collect();
    if kept.len() == conjuncts.len() {
        return None;
    }
    Some(Arc::new(source.with_predicate(conjunction(kept))))
}

/// Whether `expr` is a bound on `time_nanos` that every time in `[min, max]` meets.
fn time_bound_holds(expr: &Arc<dyn PhysicalExpr>, min: i64, max: i64) -> bool {
    let Some(binary) = expr.downcast_ref::<BinaryExpr>() else {
        return false;
    };
    let (Some(column), Some(literal)) = (
        binary.left().downcast_ref::<Column>(),
        binary.right().downcast_ref::<Literal>(),
    ) else {
        return false;
    };
    let ScalarValue::Int64(Some(bound)) = literal.value() else {
        return false;
    };
    if column.name() != "time_nanos" {
        return false;
    }
    match binary.op() {
        Operator::GtEq => min >= *bound,
        Operator::Gt => min > *bound,
        Operator::LtEq => max <= *bound,
        Operator::Lt => max < *bound,
        _ => false,
    }
}

/// The partial aggregations of single block files, each answered from the
/// [`BlockAggregateCache`] when it holds the same plan's answer, else run and kept.
#[derive(Debug)]
pub struct BlockAggregateExec {
    /// One partial aggregation per file.
    files: Vec<Arc<dyn ExecutionPlan>>,
    /// Each file's cache key: its plan as EXPLAIN shows it. Made when the plan first runs:
    /// optimizer rules rebuild the node, and a key made before them would be made again.
    keys: std::sync::OnceLock<Vec<String>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl BlockAggregateExec {
    pub fn new(files: Vec<Arc<dyn ExecutionPlan>>, schema: SchemaRef, partitions: usize) -> Self {
        let partitions = partitions.clamp(1, files.len().max(1));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            files,
            keys: std::sync::OnceLock::new(),
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for BlockAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockAggregateExec: files={}", self.files.len())
    }
}

impl ExecutionPlan for BlockAggregateExec {
    fn name(&self) -> &str {
        "BlockAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.files.iter().collect()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != self.files.len() {
            return Err(DataFusionError::Internal(format!(
                "BlockAggregateExec has {} inputs, given {}",
                self.files.len(),
                children.len()
            )));
        }
        Ok(Arc::new(Self::new(
            children,
            self.schema(),
            self.properties.partitioning.partition_count(),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partitions = self.properties.partitioning.partition_count();
        let cache = context
            .session_config()
            .get_extension::<BlockAggregateCache>();
        let counter = |name: &'static str| -> Count {
            MetricBuilder::new(&self.metrics).counter(name, partition)
        };
        let (cached, computed) = (counter("files_cached"), counter("files_computed"));
        let keys = self.keys.get_or_init(|| {
            self.files
                .iter()
                .map(|f| displayable(f.as_ref()).indent(true).to_string())
                .collect()
        });
        let mine: Vec<(Arc<dyn ExecutionPlan>, String)> = (partition..self.files.len())
            .step_by(partitions)
            .map(|i| (Arc::clone(&self.files[i]), keys[i].clone()))
            .collect();
        let batches = futures_util::stream::iter(mine)
            .then(move |(plan, key)| {
                let (cache, context) = (cache.clone(), Arc::clone(&context));
                let (cached, computed) = (cached.clone(), computed.clone());
                async move {
                    let known = cache
                        .as_ref()
                        .and_then(|c| c.entries.lock().get(key.clone()));
                    if let Some(batches) = known {
                        cached.add(1);
                        return Ok::<_, DataFusionError>(batches);
                    }
                    computed.add(1);
                    let mut batches = Vec::new();
                    for p in 0..plan.properties().partitioning.partition_count() {
                        let stream = plan.execute(p, Arc::clone(&context))?;
                        batches.extend(stream.try_collect::<Vec<_>>().await?);
                    }
                    let batches: Arc<[RecordBatch]> = batches.into();
                    if let Some(cache) = &cache {
                        let bytes = key.len()
                            + batches
                                .iter()
                                .map(RecordBatch::get_array_memory_size)
                                .sum::<usize>();
                        cache
                            .entries
                            .lock()
                            .insert(key, Arc::clone(&batches), bytes);
                    }
                    Ok(batches)
                }
            })
            .map_ok(|batches| {
                futures_util::stream::iter((0..batches.len()).map(move |i| Ok(batches[i].clone())))
            })
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches,
        )))
    }
}
