//! [`SymbolizeExec`]: reads the merged stacks, resolves the stacks that survived and their
//! frames, and builds the answer (tree bytes or pprof) in one output row.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BinaryArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type, UInt64Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
};
use futures_util::StreamExt;
use profusion_model::hash::PrehashedMap;
use prost::Message;

use super::cache::SymbolScope;
use super::name_tree::NameTree;
use super::pprof::build_pprof;
use super::{StackFilter, SymbolizeOutput, describe, output_schema};

/// Executes [`Symbolize`]: one output partition, one row.
#[derive(Debug)]
pub struct SymbolizeExec {
    inputs: [Arc<dyn ExecutionPlan>; 3],
    pub(crate) output: SymbolizeOutput,
    pub(crate) filter: StackFilter,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SymbolizeExec {
    pub fn new(
        inputs: [Arc<dyn ExecutionPlan>; 3],
        output: SymbolizeOutput,
        filter: StackFilter,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(output_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            inputs,
            output,
            filter,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for SymbolizeExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "SymbolizeExec: ")?;
                describe(f, &self.output, &self.filter)
            }
            DisplayFormatType::TreeRender => describe(f, &self.output, &self.filter),
        }
    }
}

impl ExecutionPlan for SymbolizeExec {
    fn name(&self) -> &str {
        "SymbolizeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition; 3]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inputs.iter().collect()
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
        let inputs: [Arc<dyn ExecutionPlan>; 3] = children.try_into().map_err(|_| {
            DataFusionError::Internal("SymbolizeExec takes exactly three inputs".into())
        })?;
        Ok(Arc::new(Self::new(
            inputs,
            self.output.clone(),
            self.filter.clone(),
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
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "SymbolizeExec has one partition, asked for {partition}"
            )));
        }
        let merged = self.inputs[0].execute(0, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new("SymbolizeExec").register(context.memory_pool());
        let metric = |name: &'static str| MetricBuilder::new(&self.metrics).subset_time(name, 0);
        let counter = |name: &'static str| MetricBuilder::new(&self.metrics).counter(name, 0);
        let work = Symbolizer {
            output: self.output.clone(),
            filter: self.filter.clone(),
            symbols: [Arc::clone(&self.inputs[1]), Arc::clone(&self.inputs[2])],
            cache: context.session_config().get_extension::<SymbolScope>(),
            context,
            reservation,
            resolve_time: metric("resolve_time"),
            build_time: metric("build_time"),
            stacks: counter("stacks"),
            stacks_read: counter("stacks_read"),
            frames_read: counter("frames_read"),
            new_stacks: Vec::new(),
            new_frames: Vec::new(),
        };
        let once = futures_util::stream::once(work.run(merged));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            output_schema(),
            once,
        )))
    }
}

/// One resolved frame.
#[derive(Debug, Clone, Default)]
pub(super) struct FrameInfo {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) system_name: String,
    pub(super) filename: String,
    pub(super) line: i64,
    pub(super) start_line: i64,
    pub(super) mapping_file: String,
    pub(super) build_id: String,
    pub(super) address: u64,
}

struct Symbolizer {
    output: SymbolizeOutput,
    filter: StackFilter,
    /// The `stacks` and `frames` inputs, executed only for what the cache lacks.
    symbols: [Arc<dyn ExecutionPlan>; 2],
    context: Arc<TaskContext>,
    /// The process's symbol cache and the query's tenant scope, when the session has them.
    cache: Option<Arc<SymbolScope>>,
    reservation: MemoryReservation,
    /// Reading the stacks and frames of the merged stack hashes.
    resolve_time: Time,
    /// Building the tree or profile.
    build_time: Time,
    /// Merged stacks symbolized.
    stacks: Count,
    /// Stacks and frames read from blocks and heads, not found in the cache.
    stacks_read: Count,
    frames_read: Count,
    /// What this query read, for the cache once it succeeds.
    new_stacks: Vec<u64>,
    new_frames: Vec<Arc<FrameInfo>>,
}

/// Rough heap cost of one hash-map entry, for the memory budget.
const ENTRY_BYTES: usize = 48;

impl Symbolizer {
    async fn run(mut self, mut merged: SendableRecordBatchStream) -> Result<RecordBatch> {
        let mut values: PrehashedMap<u64, i64> = PrehashedMap::default();
        while let Some(batch) = merged.next().await.transpose()? {
            self.reservation.try_grow(batch.num_rows() * ENTRY_BYTES)?;
            let hashes = column(&batch, "stack_hash")?.as_primitive::<UInt64Type>();
            let sums = column(&batch, "value")?.as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                let v = values.entry(hashes.value(i)).or_default();
                *v = v.saturating_add(sums.value(i));
            }
        }
        let resolve_time = self.resolve_time.clone();
        let resolving = resolve_time.timer();
        let frames_of = self.resolve_stacks(&values).await?;
        let resolved = self.resolve_frames(&frames_of).await?;
        resolving.done();
        let build_time = self.build_time.clone();
        let building = build_time.timer();
        self.stacks.add(values.len());
        // In stack-hash order, so the same data always gives the same pprof bytes; a tree
        // (whose encoding orders children itself) in frame order, so each stack shares most
        // of its path with the one before.
        let mut merged: Vec<(u64, i64)> = values.into_iter().collect();
        if self.needs_complete_frames() {
            merged.sort_unstable();
        } else {
            let empty: &[u64] = &[];
            let frames = |h: &u64| frames_of.get(h).map_or(empty, |f| &f[..]);
            merged.sort_unstable_by(|a, b| frames(&a.0).cmp(frames(&b.0)).then(a.0.cmp(&b.0)));
        }
        let mut tree = NameTree::default();
        let mut pprof_stacks: Vec<(Vec<&FrameInfo>, i64)> = Vec::new();
        let mut stack: Vec<&FrameInfo> = Vec::new();
        for (hash, value) in &merged {
            let ids = frames_of.get(hash).ok_or_else(|| {
                DataFusionError::Execution(format!("stack {hash:016x} has no symbols in any block"))
            })?;
            stack.clear();
            for id in ids.iter() {
                stack.push(resolved.get(id).map(Arc::as_ref).ok_or_else(|| {
                    DataFusionError::Execution(format!(
                        "frame {id:016x} of stack {hash:016x} has no symbols in any block"
                    ))
                })?);
            }
            if let Some(pgo) = self.filter.go_pgo {
                let keep = (pgo.keep_locations as usize).max(1);
                if stack.len() > keep {
                    stack.drain(..stack.len() - keep);
                }
            } else if !self.filter.call_site.is_empty()
                && (stack.len() < self.filter.call_site.len()
                    || !stack
                        .iter()
                        .zip(&self.filter.call_site)
                        .all(|(f, want)| f.name == *want))
            {
                continue;
            }
            match &self.output {
                SymbolizeOutput::Tree { .. } => {
                    let grown = tree.insert(&stack, *value)?;
                    self.reservation.try_grow(grown * NameTree::NODE_BYTES)?;
                }
                SymbolizeOutput::Pprof(_) => {
                    self.reservation
                        .try_grow(ENTRY_BYTES + stack.len() * std::mem::size_of::<&FrameInfo>())?;
                    pprof_stacks.push((stack.clone(), *value));
                }
            }
        }
        let bytes = match &self.output {
            SymbolizeOutput::Tree { max_nodes } => tree.tree_bytes(*max_nodes),
            SymbolizeOutput::Pprof(header) => {
                let aggregate_leaf = self.filter.go_pgo.is_some_and(|p| p.aggregate_callees);
                build_pprof(header, &pprof_stacks, aggregate_leaf).encode_to_vec()
            }
        };
        self.reservation.try_grow(bytes.len())?;
        building.done();
        // Only a query that got this far teaches the cache: one over its budget leaves it
        // as it was.
        if let Some(c) = &self.cache {
            c.cache.insert_stacks(
                &c.scope,
                self.new_stacks
                    .iter()
                    .filter_map(|h| frames_of.get(h).map(|f| (*h, f))),
            );
            c.cache.insert_frames(
                &c.scope,
                self.new_frames.iter(),
                self.needs_complete_frames(),
            );
        }
        self.reservation.free();
        Ok(RecordBatch::try_new(
            output_schema(),
            vec![Arc::new(BinaryArray::from_iter_values([bytes]))],
        )?)
    }

    /// Whether the answer needs every column of a frame (a pprof), not only its name, mapping
    /// and address (a tree).
    fn needs_complete_frames(&self) -> bool {
        matches!(self.output, SymbolizeOutput::Pprof(_))
    }

    /// The frames of every merged stack: from the cache, else from the `stacks` input (read
    /// only when the cache lacks some).
    async fn resolve_stacks(
        &mut self,
        values: &PrehashedMap<u64, i64>,
    ) -> Result<PrehashedMap<u64, Arc<[u64]>>> {
        let mut frames_of: PrehashedMap<u64, Arc<[u64]>> = PrehashedMap::default();
        if let Some(c) = &self.cache {
            c.cache
                .stacks(&c.scope, values.keys().copied(), &mut frames_of);
        }
        if frames_of.len() == values.len() {
            return Ok(frames_of);
        }
        let mut read = Vec::new();
        let mut stacks = self.symbols[0].execute(0, Arc::clone(&self.context))?;
        while let Some(batch) = stacks.next().await.transpose()? {
            let hashes = column(&batch, "stack_hash")?.as_primitive::<UInt64Type>();
            let lists = column(&batch, "frame_ids")?.as_list::<i32>();
            for i in 0..batch.num_rows() {
                let h = hashes.value(i);
                if values.contains_key(&h) && !frames_of.contains_key(&h) {
                    let ids = lists.value(i);
                    let ids: Arc<[u64]> = Arc::from(&ids.as_primitive::<UInt64Type>().values()[..]);
                    // The entry, the shared list (two counters and the ids), and its hash
                    // kept for the cache.
                    self.reservation
                        .try_grow(ENTRY_BYTES + 16 + ids.len() * 8 + 8)?;
                    frames_of.insert(h, ids);
                    read.push(h);
                }
            }
        }
        self.stacks_read.add(read.len());
        self.new_stacks = read;
        Ok(frames_of)
    }

    /// Every frame of `frames_of`'s stacks: from the cache, else from the `frames` input (read
    /// only when the cache lacks some). For a tree, unsymbolized frames are named after their
    /// binary and address, as Pyroscope names them.
    async fn resolve_frames(
        &mut self,
        frames_of: &PrehashedMap<u64, Arc<[u64]>>,
    ) -> Result<PrehashedMap<u64, Arc<FrameInfo>>> {
        let wanted: PrehashedMap<u64, ()> = frames_of
            .values()
            .flat_map(|f| f.iter())
            .map(|f| (*f, ()))
            .collect();
        let complete = self.needs_complete_frames();
        let mut resolved: PrehashedMap<u64, Arc<FrameInfo>> = PrehashedMap::default();
        if let Some(c) = &self.cache {
            c.cache
                .frames(&c.scope, wanted.keys().copied(), complete, &mut resolved);
        }
        if resolved.len() < wanted.len() {
            let mut read: PrehashedMap<u64, Arc<FrameInfo>> = PrehashedMap::default();
            let mut frames = self.symbols[1].execute(0, Arc::clone(&self.context))?;
            while let Some(batch) = frames.next().await.transpose()? {
                self.read_frames(&batch, &wanted, &resolved, &mut read)?;
            }
            self.frames_read.add(read.len());
            self.new_frames = read.values().cloned().collect();
            resolved.extend(read);
        }
        if !complete {
            for info in resolved.values_mut() {
                if info.name.is_empty() {
                    let mut named = FrameInfo::clone(info);
                    named.name = format!("{} 0x{:x}", named.mapping_file, named.address)
                        .trim_start()
                        .to_owned();
                    *info = Arc::new(named);
                }
            }
        }
        Ok(resolved)
    }

    /// The wanted frames of `batch` that neither `known` nor `read` holds yet, into `read`, as
    /// they are stored.
    fn read_frames(
        &mut self,
        batch: &RecordBatch,
        wanted: &PrehashedMap<u64, ()>,
        known: &PrehashedMap<u64, Arc<FrameInfo>>,
        read: &mut PrehashedMap<u64, Arc<FrameInfo>>,
    ) -> Result<()> {
        let ids = column(batch, "frame_id")?.as_primitive::<UInt64Type>();
        let text = |name: &str| batch.column_by_name(name).map(|c| Text::of(c.as_ref()));
        let int = |name: &str| {
            batch
                .column_by_name(name)
                .map(|c| c.as_primitive::<Int64Type>())
        };
        let (function, system, file, mapping, build) = (
            text("function_name"),
            text("system_name"),
            text("filename"),
            text("mapping_file"),
            text("build_id"),
        );
        let (line, start_line) = (int("line"), int("start_line"));
        let address = column(batch, "address")?.as_primitive::<UInt64Type>();
        let get =
            |c: Option<Text<'_>>, i: usize| c.map_or(String::new(), |c| c.value(i).to_owned());
        for i in 0..batch.num_rows() {
            let id = ids.value(i);
            if !wanted.contains_key(&id) || known.contains_key(&id) || read.contains_key(&id) {
                continue;
            }
            let info = FrameInfo {
                id,
                name: get(function, i),
                system_name: get(system, i),
                filename: get(file, i),
                line: line.map_or(0, |c| c.value(i)),
                start_line: start_line.map_or(0, |c| c.value(i)),
                mapping_file: get(mapping, i),
                build_id: get(build, i),
                address: address.value(i),
            };
            self.reservation.try_grow(
                ENTRY_BYTES + info.name.len() + info.filename.len() + info.mapping_file.len(),
            )?;
            read.insert(id, Arc::new(info));
        }
        Ok(())
    }
}

/// A string column as the head (plain) or Parquet (views) delivers it.
#[derive(Clone, Copy)]
enum Text<'a> {
    Plain(&'a datafusion::arrow::array::StringArray),
    View(&'a datafusion::arrow::array::StringViewArray),
    Missing,
}

impl<'a> Text<'a> {
    fn of(array: &'a dyn Array) -> Self {
        match array.data_type() {
            DataType::Utf8 => Self::Plain(array.as_string::<i32>()),
            DataType::Utf8View => Self::View(array.as_string_view()),
            _ => Self::Missing,
        }
    }

    fn value(self, i: usize) -> &'a str {
        match self {
            Self::Plain(a) => a.value(i),
            Self::View(a) => a.value(i),
            Self::Missing => "",
        }
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>> {
    batch.column_by_name(name).ok_or_else(|| {
        DataFusionError::Internal(format!("SymbolizeExec input lacks column {name}"))
    })
}
