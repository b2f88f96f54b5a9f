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
//! The cache key of a file is what its rows and the plan above them make of it: the
//! aggregation, filters and projections as EXPLAIN shows them, the columns read, the file (and
//! byte range), and every predicate its scan applies (profile type, time range, series,
//! tombstones), so two queries share an entry only when they ask exactly the same of that
//! file. A file's own plan is made only when the cache lacks its answer: a warm query over
//! many blocks plans one scan, not one per file.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::compute::BatchCoalescer;
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
        plan.transform_down(|node| {
            if node.downcast_ref::<BlockAggregateExec>().is_some() {
                // Already split (the rule ran on this plan before).
                return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
            }
            per_file(node, partitions)
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "profusion_block_aggregates"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` rewritten when it is a [`cacheable`] partial aggregation over block files: each
/// branch of its input that reads only block files gets its own partial aggregation inside a
/// [`BlockAggregateExec`], which splits it per file when it runs.
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
    let parts: Vec<_> = crate::distributed::split(partial.input())?
        .into_iter()
        .map(|part| {
            let files = files_of(&part).filter(|f| !f.is_empty());
            (part, files)
        })
        .collect();
    if parts.iter().all(|(_, files)| files.is_none()) {
        return Ok(Transformed::no(node));
    }
    // One part is the input itself: the aggregation stays as planned.
    let whole = parts.len() == 1;
    let mut branches = Vec::new();
    for (part, files) in parts {
        let branch = if whole {
            Arc::clone(&node)
        } else {
            aggregate(part)?
        };
        branches.push(match files {
            Some(files) => Arc::new(BlockAggregateExec::with_files(branch, files, partitions))
                as Arc<dyn ExecutionPlan>,
            None => branch,
        });
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
    file: &PartitionedFile,
) -> Result<Arc<dyn ExecutionPlan>> {
    Arc::clone(part)
        .transform_down(|node| {
            let Some(config) = scan_config(&node) else {
                return Ok(Transformed::no(node));
            };
            let mut builder = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(vec![FileGroup::new(vec![file.clone()])]);
            if let Some(source) = config.file_source().downcast_ref::<ParquetSource>()
                && let Some(kept) = without_proven_time_bounds(config, file)
            {
                builder = builder.with_source(Arc::new(source.with_predicate(kept)));
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

/// The predicate `config`'s Parquet source applies to `file`: its own, less the time bounds
/// `file`'s statistics prove every row meets.
fn file_predicate(
    config: &FileScanConfig,
    file: &PartitionedFile,
) -> Option<Arc<dyn PhysicalExpr>> {
    without_proven_time_bounds(config, file).or_else(|| {
        config
            .file_source()
            .downcast_ref::<ParquetSource>()?
            .filter()
    })
}

/// `config`'s predicate without the time bounds that `file`'s statistics prove every row
/// meets, when there are such bounds (`None` when nothing would be dropped). A file inside a
/// query's range then has the same plan, and so the same cache key, for every range that
/// covers it, as a dashboard's sliding window does; and it gives the same rows, since the
/// bounds dropped were true of all of them.
fn without_proven_time_bounds(
    config: &FileScanConfig,
    file: &PartitionedFile,
) -> Option<Arc<dyn PhysicalExpr>> {
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
    Some(conjunction(kept))
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

/// A partial aggregation over block files, run per file: each file's answer comes from the
/// [`BlockAggregateCache`] when it holds the same plan's, else the file's own plan runs and
/// its answer is kept.
///
/// Files' plans are made only for the files the cache lacks, when the node runs: planning a
/// scan and an aggregation per file for every query would cost a warm query over many blocks
/// more than answering it.
#[derive(Debug)]
pub struct BlockAggregateExec {
    /// The partial aggregation over every file; a file's own plan is this with its scan
    /// reading only that file (see [`with_file`]).
    input: Arc<dyn ExecutionPlan>,
    /// The files (or byte ranges of files) `input` reads.
    files: Vec<PartitionedFile>,
    /// Each file's cache key: made when the plan first runs, since optimizer rules may still
    /// rebuild the node.
    keys: std::sync::OnceLock<Vec<String>>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl BlockAggregateExec {
    /// Runs `input`, a partial aggregation reading block files only (through filters and
    /// projections), per file in at most `partitions` partitions.
    pub fn new(input: Arc<dyn ExecutionPlan>, partitions: usize) -> Result<Self> {
        let files = input
            .downcast_ref::<AggregateExec>()
            .and_then(|aggregate| files_of(aggregate.input()))
            .ok_or_else(|| {
                DataFusionError::Internal(
                    "BlockAggregateExec takes a partial aggregation of block files".into(),
                )
            })?;
        Ok(Self::with_files(input, files, partitions))
    }

    fn with_files(
        input: Arc<dyn ExecutionPlan>,
        files: Vec<PartitionedFile>,
        partitions: usize,
    ) -> Self {
        let partitions = partitions.clamp(1, files.len().max(1));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            files,
            keys: std::sync::OnceLock::new(),
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The cache key of each file: the aggregation, filters and projections above the scan as
    /// EXPLAIN shows them, the columns the scan reads, the file and byte range, and the
    /// predicate the file's scan applies ([`file_predicate`]). (The scan node's own EXPLAIN
    /// text would derive its pruning predicate again, per file and query.)
    fn keys(&self) -> Vec<String> {
        use std::fmt::Write as _;
        let mut shape = String::new();
        let mut scan = None;
        let _ = self.input.apply(|node| {
            if let Some(config) = scan_config(node) {
                let schema = node.schema();
                let columns: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
                let _ = writeln!(shape, "scan of {columns:?}, limit {:?}", config.limit);
                scan = Some(config);
            } else {
                let _ = writeln!(shape, "{}", displayable(node.as_ref()).one_line());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        self.files
            .iter()
            .map(|file| {
                let predicate = scan
                    .and_then(|config| file_predicate(config, file))
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                format!(
                    "{shape}file {} {:?}\npredicate {predicate}",
                    file.object_meta.location, file.range
                )
            })
            .collect()
    }

    /// `input` reading only `file`.
    fn file_plan(&self, file: &PartitionedFile) -> Result<Arc<dyn ExecutionPlan>> {
        let children = self.input.children();
        let [part] = children.as_slice() else {
            return Err(DataFusionError::Internal(
                "BlockAggregateExec's aggregation has one input".into(),
            ));
        };
        let part = with_file(part, file)?;
        Arc::clone(&self.input).replace_children(vec![part], crate::distributed::recompute())
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
        vec![&self.input]
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
        let [input] = <[_; 1]>::try_from(children).map_err(|c| {
            DataFusionError::Internal(format!(
                "BlockAggregateExec has one input, given {}",
                c.len()
            ))
        })?;
        Ok(Arc::new(Self::new(
            input,
            self.properties.partitioning.partition_count(),
        )?))
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
        let batch_size = context.session_config().batch_size();
        let cache = context
            .session_config()
            .get_extension::<BlockAggregateCache>();
        let counter = |name: &'static str| -> Count {
            MetricBuilder::new(&self.metrics).counter(name, partition)
        };
        let (cached, computed) = (counter("files_cached"), counter("files_computed"));
        let keys = self.keys.get_or_init(|| self.keys());
        let files: Vec<usize> = (partition..self.files.len()).step_by(partitions).collect();
        // This partition's kept answers, looked up under one lock.
        let known: Vec<Option<Arc<[RecordBatch]>>> = match &cache {
            Some(cache) => {
                let mut entries = cache.entries.lock();
                files
                    .iter()
                    .map(|&i| entries.get(keys[i].clone()))
                    .collect()
            }
            None => vec![None; files.len()],
        };
        let mut mine = Vec::with_capacity(files.len());
        for (i, known) in files.into_iter().zip(known) {
            mine.push(match known {
                Some(batches) => {
                    cached.add(1);
                    Ok(batches)
                }
                None => Err((self.file_plan(&self.files[i])?, keys[i].clone())),
            });
        }
        let batches = futures_util::stream::iter(mine)
            .then(move |answer| {
                let (cache, context, computed) =
                    (cache.clone(), Arc::clone(&context), computed.clone());
                async move {
                    let (plan, key) = match answer {
                        Ok(batches) => return Ok::<_, DataFusionError>(batches),
                        Err(missing) => missing,
                    };
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
            coalesced(Box::pin(batches), self.schema(), batch_size),
        )))
    }
}

/// `batches` joined into batches of about `target_rows`: a file's kept answer is often a few
/// rows (a block's series, its points in a step), and every batch costs the aggregation and
/// repartition above a fixed amount (row encoders, hash buffers), which over hundreds of
/// files' small batches outweighed the rows.
fn coalesced(
    batches: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<RecordBatch>> + Send>>,
    schema: SchemaRef,
    target_rows: usize,
) -> impl futures_util::Stream<Item = Result<RecordBatch>> + Send {
    // Batches of half the target or more pass as they are: copying them would gain nothing.
    let coalescer = BatchCoalescer::new(schema, target_rows.max(1))
        .with_biggest_coalesce_batch_size(Some(target_rows / 2));
    futures_util::stream::unfold(Some((batches, coalescer)), |state| async move {
        let (mut batches, mut coalescer) = state?;
        loop {
            if let Some(batch) = coalescer.next_completed_batch() {
                return Some((Ok(batch), Some((batches, coalescer))));
            }
            match batches.next().await {
                Some(Ok(batch)) => {
                    if let Err(e) = coalescer.push_batch(batch) {
                        return Some((Err(e.into()), None));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => {
                    if let Err(e) = coalescer.finish_buffered_batch() {
                        return Some((Err(e.into()), None));
                    }
                    return coalescer
                        .next_completed_batch()
                        .map(|batch| (Ok(batch), None));
                }
            }
        }
    })
}
