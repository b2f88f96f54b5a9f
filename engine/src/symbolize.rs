//! The symbolize node: the last step of every flame-graph and pprof query.
//!
//! Its first input is the merged `(stack_hash, value)` rows (the partial and final aggregation
//! by stack hash); the second and third are the `stacks` and `frames` tables. It keeps only the
//! stacks that survived the merge, resolves their frames, applies the stack-trace selector
//! (call-site prefix or Go PGO trimming), and emits one row: the merged call tree as
//! Pyroscope tree bytes, or an encoded `google.v1.Profile`. Symbols are read after the merge so
//! only the stacks that matter are resolved, whatever the number of samples.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BinaryArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt64Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::Expr;
use futures_util::StreamExt;
use profusion_model::hash::PrehashedMap;
use profusion_proto::google::v1 as pprof;
use prost::Message;

use profusion_model::tree::{FOLDED, Tree};

/// The name of the output column.
pub const OUTPUT_COLUMN: &str = "symbolized";

/// Which stacks to keep, by their resolved function names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd)]
pub struct StackFilter {
    /// Keep only stacks whose root-first function names start with these.
    pub call_site: Vec<String>,
    /// Trim stacks for Go profile-guided optimization; when set, `call_site` is ignored.
    pub go_pgo: Option<GoPgo>,
}

/// Go PGO trimming, as `types.v1.GoPGO` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub struct GoPgo {
    /// Leaf-most frames kept per stack.
    pub keep_locations: u32,
    /// Drop the leaf frame's line number so callees aggregate per function.
    pub aggregate_callees: bool,
}

/// What the node emits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub enum SymbolizeOutput {
    /// The call tree as tree bytes: whole when `max_nodes` is 0, else truncated so that
    /// encoding it at `max_nodes` gives exactly what the whole tree would.
    Tree { max_nodes: usize },
    /// An encoded pprof profile with these header fields.
    Pprof(PprofHeader),
}

/// The header of a pprof answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct PprofHeader {
    pub sample_type: String,
    pub sample_unit: String,
    pub period_type: String,
    pub period_unit: String,
    pub period: i64,
    pub time_nanos: i64,
    pub duration_nanos: i64,
}

impl SymbolizeOutput {
    /// The `frames` columns this output reads.
    pub fn frame_columns(&self) -> &'static [&'static str] {
        match self {
            Self::Tree { .. } => &["frame_id", "function_name", "mapping_file", "address"],
            Self::Pprof(_) => &[
                "frame_id",
                "function_name",
                "system_name",
                "filename",
                "line",
                "start_line",
                "mapping_file",
                "build_id",
                "address",
            ],
        }
    }
}

fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        OUTPUT_COLUMN,
        DataType::Binary,
        false,
    )]))
}

/// The logical node; [`SymbolizePlanner`] turns it into a [`SymbolizeExec`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Symbolize {
    merged: LogicalPlan,
    stacks: LogicalPlan,
    frames: LogicalPlan,
    output: SymbolizeOutput,
    filter: StackFilter,
    schema: DFSchemaRef,
}

impl Symbolize {
    /// Wraps the three inputs into an extension plan.
    pub fn plan(
        merged: LogicalPlan,
        stacks: LogicalPlan,
        frames: LogicalPlan,
        output: SymbolizeOutput,
        filter: StackFilter,
    ) -> Result<LogicalPlan> {
        let schema = Arc::new(DFSchema::try_from(output_schema())?);
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                merged,
                stacks,
                frames,
                output,
                filter,
                schema,
            }),
        }))
    }
}

impl PartialOrd for Symbolize {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (
            &self.merged,
            &self.stacks,
            &self.frames,
            &self.output,
            &self.filter,
        )
            .partial_cmp(&(
                &other.merged,
                &other.stacks,
                &other.frames,
                &other.output,
                &other.filter,
            ))
    }
}

fn describe(
    f: &mut fmt::Formatter<'_>,
    output: &SymbolizeOutput,
    filter: &StackFilter,
) -> fmt::Result {
    match output {
        SymbolizeOutput::Tree { max_nodes: 0 } => write!(f, "output=tree")?,
        SymbolizeOutput::Tree { max_nodes } => write!(f, "output=tree(max_nodes={max_nodes})")?,
        SymbolizeOutput::Pprof(h) => {
            write!(f, "output=pprof({}:{})", h.sample_type, h.sample_unit)?
        }
    }
    if let Some(pgo) = filter.go_pgo {
        write!(
            f,
            ", go_pgo(keep_locations={}, aggregate_callees={})",
            pgo.keep_locations, pgo.aggregate_callees
        )?;
    } else if !filter.call_site.is_empty() {
        write!(f, ", call_site=[{}]", filter.call_site.join(", "))?;
    }
    Ok(())
}

impl UserDefinedLogicalNodeCore for Symbolize {
    fn name(&self) -> &str {
        "Symbolize"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.merged, &self.stacks, &self.frames]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbolize: ")?;
        describe(f, &self.output, &self.filter)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let [merged, stacks, frames]: [LogicalPlan; 3] = inputs.try_into().map_err(|_| {
            DataFusionError::Internal("Symbolize takes exactly three inputs".into())
        })?;
        Ok(Self {
            merged,
            stacks,
            frames,
            output: self.output.clone(),
            filter: self.filter.clone(),
            schema: Arc::clone(&self.schema),
        })
    }
}

/// Plans [`Symbolize`] nodes.
#[derive(Debug, Default)]
pub struct SymbolizePlanner;

#[async_trait::async_trait]
impl ExtensionPlanner for SymbolizePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn datafusion::logical_expr::UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<Symbolize>() else {
            return Ok(None);
        };
        let [merged, stacks, frames] = physical_inputs else {
            return Err(DataFusionError::Internal(
                "Symbolize takes exactly three inputs".into(),
            ));
        };
        Ok(Some(Arc::new(SymbolizeExec::new(
            [Arc::clone(merged), Arc::clone(stacks), Arc::clone(frames)],
            node.output.clone(),
            node.filter.clone(),
        ))))
    }
}

/// A session state whose planner knows [`Symbolize`].
pub fn with_planner(state: datafusion::execution::SessionStateBuilder) -> SessionState {
    #[derive(Debug)]
    struct Planner;
    #[async_trait::async_trait]
    impl datafusion::execution::context::QueryPlanner for Planner {
        async fn create_physical_plan(
            &self,
            plan: &LogicalPlan,
            session: &dyn datafusion::catalog::Session,
        ) -> Result<Arc<dyn ExecutionPlan>> {
            datafusion::physical_planner::DefaultPhysicalPlanner::with_extension_planners(vec![
                Arc::new(SymbolizePlanner),
            ])
            .create_physical_plan(plan, session)
            .await
        }
    }
    state.with_query_planner(Arc::new(Planner)).build()
}

/// Executes [`Symbolize`]: one output partition, one row.
#[derive(Debug)]
pub struct SymbolizeExec {
    inputs: [Arc<dyn ExecutionPlan>; 3],
    output: SymbolizeOutput,
    filter: StackFilter,
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
        let streams = [
            self.inputs[0].execute(0, Arc::clone(&context))?,
            self.inputs[1].execute(0, Arc::clone(&context))?,
            self.inputs[2].execute(0, Arc::clone(&context))?,
        ];
        let reservation = MemoryConsumer::new("SymbolizeExec").register(context.memory_pool());
        let metric = |name: &'static str| MetricBuilder::new(&self.metrics).subset_time(name, 0);
        let work = Symbolizer {
            output: self.output.clone(),
            filter: self.filter.clone(),
            reservation,
            resolve_time: metric("resolve_time"),
            build_time: metric("build_time"),
            stacks: MetricBuilder::new(&self.metrics).counter("stacks", 0),
        };
        let once = futures_util::stream::once(work.run(streams));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            output_schema(),
            once,
        )))
    }
}

/// One resolved frame.
#[derive(Debug, Clone, Default)]
struct FrameInfo {
    id: u64,
    name: String,
    system_name: String,
    filename: String,
    line: i64,
    start_line: i64,
    mapping_file: String,
    build_id: String,
    address: u64,
}

struct Symbolizer {
    output: SymbolizeOutput,
    filter: StackFilter,
    reservation: MemoryReservation,
    /// Reading the stacks and frames of the merged stack hashes.
    resolve_time: Time,
    /// Building the tree or profile.
    build_time: Time,
    /// Merged stacks symbolized.
    stacks: Count,
}

/// Rough heap cost of one hash-map entry, for the memory budget.
const ENTRY_BYTES: usize = 48;

impl Symbolizer {
    async fn run(mut self, streams: [SendableRecordBatchStream; 3]) -> Result<RecordBatch> {
        let [mut merged, mut stacks, mut frames] = streams;
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
        let mut frames_of: PrehashedMap<u64, Vec<u64>> = PrehashedMap::default();
        if !values.is_empty() {
            while let Some(batch) = stacks.next().await.transpose()? {
                let hashes = column(&batch, "stack_hash")?.as_primitive::<UInt64Type>();
                let lists = column(&batch, "frame_ids")?.as_list::<i32>();
                for i in 0..batch.num_rows() {
                    let h = hashes.value(i);
                    if values.contains_key(&h) && !frames_of.contains_key(&h) {
                        let ids = lists.value(i);
                        let ids = ids.as_primitive::<UInt64Type>().values().to_vec();
                        self.reservation.try_grow(ENTRY_BYTES + ids.len() * 8)?;
                        frames_of.insert(h, ids);
                    }
                }
            }
        }
        let wanted: PrehashedMap<u64, ()> =
            frames_of.values().flatten().map(|f| (*f, ())).collect();
        let mut resolved: PrehashedMap<u64, FrameInfo> = PrehashedMap::default();
        if !wanted.is_empty() {
            while let Some(batch) = frames.next().await.transpose()? {
                self.read_frames(&batch, &wanted, &mut resolved)?;
            }
        }
        resolving.done();
        let build_time = self.build_time.clone();
        let building = build_time.timer();
        self.stacks.add(values.len());
        // In stack-hash order, so the same data always gives the same pprof bytes.
        let mut merged: Vec<(u64, i64)> = values.into_iter().collect();
        merged.sort_unstable();
        let mut tree = NameTree::default();
        let mut pprof_stacks: Vec<(Vec<&FrameInfo>, i64)> = Vec::new();
        let mut stack: Vec<&FrameInfo> = Vec::new();
        for (hash, value) in &merged {
            let ids = frames_of.get(hash).ok_or_else(|| {
                DataFusionError::Execution(format!("stack {hash:016x} has no symbols in any block"))
            })?;
            stack.clear();
            for id in ids {
                stack.push(resolved.get(id).ok_or_else(|| {
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
        self.reservation.free();
        Ok(RecordBatch::try_new(
            output_schema(),
            vec![Arc::new(BinaryArray::from_iter_values([bytes]))],
        )?)
    }

    fn read_frames(
        &mut self,
        batch: &RecordBatch,
        wanted: &PrehashedMap<u64, ()>,
        resolved: &mut PrehashedMap<u64, FrameInfo>,
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
            if !wanted.contains_key(&id) || resolved.contains_key(&id) {
                continue;
            }
            let mut info = FrameInfo {
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
            // Unsymbolized frames are named after their binary and address, as Pyroscope does.
            if info.name.is_empty() && matches!(self.output, SymbolizeOutput::Tree { .. }) {
                info.name = format!("{} 0x{:x}", info.mapping_file, info.address)
                    .trim_start()
                    .to_owned();
            }
            self.reservation.try_grow(
                ENTRY_BYTES + info.name.len() + info.filename.len() + info.mapping_file.len(),
            )?;
            resolved.insert(id, info);
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

/// A call tree over interned names: cheap to build from many stacks, and encoded straight
/// into Pyroscope tree bytes (children in name order, as [`Tree`] would emit them). A node is
/// 32 bytes plus its edge-map entry; children are a linked list, sorted only when encoded.
#[derive(Default)]
struct NameTree<'a> {
    names: Vec<&'a str>,
    ids: HashMap<&'a str, u32>,
    /// Frame id → name id: frames are interned by name once, then looked up by id.
    frame_names: PrehashedMap<u64, u32>,
    /// `nodes[0]` is the virtual root.
    nodes: Vec<NameNode>,
    /// Mixed (parent, name) → child.
    edges: PrehashedMap<u64, u32>,
}

/// splitmix64's finalizer: a bijection of 64-bit values that spreads every input bit over
/// every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// No node: the end of a child list.
const NONE: u32 = u32::MAX;

struct NameNode {
    name: u32,
    self_value: i64,
    total: i64,
    first_child: u32,
    next_sibling: u32,
}

impl NameNode {
    fn new(name: u32) -> Self {
        Self {
            name,
            self_value: 0,
            total: 0,
            first_child: NONE,
            next_sibling: NONE,
        }
    }
}

impl<'a> NameTree<'a> {
    /// Memory one node costs: the node and its edge-map entry with the map's slack.
    const NODE_BYTES: usize = std::mem::size_of::<NameNode>() + 32;

    fn name_id(&mut self, frame: &'a FrameInfo) -> u32 {
        if let Some(&id) = self.frame_names.get(&frame.id) {
            return id;
        }
        let next = self.names.len() as u32;
        let id = *self.ids.entry(frame.name.as_str()).or_insert(next);
        if id == next {
            self.names.push(&frame.name);
        }
        self.frame_names.insert(frame.id, id);
        id
    }

    /// Adds `value` to a root-first stack; returns how many nodes were added. Sums saturate,
    /// as [`Tree`]'s do.
    fn insert(&mut self, stack: &[&'a FrameInfo], value: i64) -> Result<usize> {
        if value < 0 {
            return Err(DataFusionError::Internal(format!(
                "negative value {value} in a flame graph"
            )));
        }
        if self.nodes.is_empty() {
            self.nodes.push(NameNode::new(NONE));
        }
        let added = self.nodes.len();
        let mut node = 0u32;
        self.nodes[0].total = self.nodes[0].total.saturating_add(value);
        for frame in stack {
            let name = self.name_id(frame);
            // The map uses the key as its hash, so the key must be uniform in every bit: a
            // bijective mix of (node, name), not a multiply, which leaves the low bits equal
            // along a chain of one recursive function and makes every probe collide.
            let key = mix((u64::from(node) << 32) | u64::from(name));
            let next_node = self.nodes.len() as u32;
            let child = *self.edges.entry(key).or_insert(next_node);
            if child == next_node {
                let parent = &mut self.nodes[node as usize];
                let mut new = NameNode::new(name);
                new.next_sibling = parent.first_child;
                parent.first_child = child;
                self.nodes.push(new);
            }
            node = child;
            let n = &mut self.nodes[node as usize];
            n.total = n.total.saturating_add(value);
        }
        let n = &mut self.nodes[node as usize];
        n.self_value = n.self_value.saturating_add(value);
        Ok(self.nodes.len() - added)
    }

    /// Tree bytes of the whole tree, or with `max_nodes` (not 0) the children below the
    /// `max_nodes`-th largest node total folded into one [`FOLDED`] child per parent.
    fn tree_bytes(self, max_nodes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        if self.nodes.is_empty() {
            return Tree::new().tree_bytes(0);
        }
        let min = if max_nodes == 0 || self.nodes.len() - 1 <= max_nodes {
            0
        } else {
            let mut totals: Vec<i64> = self.nodes[1..].iter().map(|n| n.total).collect();
            let k = max_nodes - 1;
            totals.select_nth_unstable_by(k, |a, b| b.cmp(a));
            totals[k]
        };
        let mut write = |name: &str, self_value: i64, children: usize| {
            profusion_model::tree::uvarint(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            profusion_model::tree::uvarint(&mut out, self_value as u64);
            profusion_model::tree::uvarint(&mut out, children as u64);
        };
        // A node to write, or the folded remainder of a parent's small children.
        enum Item {
            Node(u32),
            Folded(i64),
        }
        let mut stack = vec![Item::Node(0)];
        let mut children: Vec<u32> = Vec::new();
        while let Some(item) = stack.pop() {
            let i = match item {
                Item::Folded(total) => {
                    write(FOLDED, total, 0);
                    continue;
                }
                Item::Node(i) => i,
            };
            children.clear();
            let mut folded = 0i64;
            let mut c = self.nodes[i as usize].first_child;
            while c != NONE {
                let child = &self.nodes[c as usize];
                if child.total >= min {
                    children.push(c);
                } else {
                    folded = folded.saturating_add(child.total);
                }
                c = child.next_sibling;
            }
            children.sort_unstable_by(|a, b| {
                let name = |n: &u32| self.names[self.nodes[*n as usize].name as usize];
                name(a).cmp(name(b))
            });
            let node = &self.nodes[i as usize];
            let name = if i == 0 {
                ""
            } else {
                self.names[node.name as usize]
            };
            write(
                name,
                node.self_value,
                children.len() + usize::from(folded > 0),
            );
            if folded > 0 {
                stack.push(Item::Folded(folded));
            }
            stack.extend(children.iter().map(|&c| Item::Node(c)));
        }
        out
    }
}

/// Interns strings, functions, mappings and locations into a pprof profile.
#[derive(Default)]
struct PprofBuilder {
    profile: pprof::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64, i64), u64>,
    mappings: HashMap<(i64, i64), u64>,
    /// (frame id, line) → location id.
    locations: HashMap<(u64, i64), u64>,
}

impl PprofBuilder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn location(&mut self, f: &FrameInfo, line: i64) -> u64 {
        if let Some(&id) = self.locations.get(&(f.id, line)) {
            return id;
        }
        let mapping_id = if f.mapping_file.is_empty() && f.build_id.is_empty() {
            0
        } else {
            let key = (self.string(&f.mapping_file), self.string(&f.build_id));
            let next = self.profile.mapping.len() as u64 + 1;
            let id = *self.mappings.entry(key).or_insert(next);
            if id == next {
                self.profile.mapping.push(pprof::Mapping {
                    id,
                    filename: key.0,
                    build_id: key.1,
                    has_functions: true,
                    ..Default::default()
                });
            }
            id
        };
        let lines = if f.name.is_empty() {
            Vec::new()
        } else {
            let key = (
                self.string(&f.name),
                self.string(&f.system_name),
                self.string(&f.filename),
                f.start_line,
            );
            let next = self.profile.function.len() as u64 + 1;
            let function_id = *self.functions.entry(key).or_insert(next);
            if function_id == next {
                self.profile.function.push(pprof::Function {
                    id: function_id,
                    name: key.0,
                    system_name: key.1,
                    filename: key.2,
                    start_line: key.3,
                });
            }
            vec![pprof::Line { function_id, line }]
        };
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(pprof::Location {
            id,
            mapping_id,
            address: f.address,
            line: lines,
            is_folded: false,
        });
        self.locations.insert((f.id, line), id);
        id
    }
}

/// A pprof profile of root-first stacks; stacks that end up with the same locations (after
/// Go PGO trimming) are one sample.
fn build_pprof(
    header: &PprofHeader,
    stacks: &[(Vec<&FrameInfo>, i64)],
    aggregate_leaf: bool,
) -> pprof::Profile {
    let mut b = PprofBuilder::default();
    b.string("");
    let sample_type = pprof::ValueType {
        r#type: b.string(&header.sample_type),
        unit: b.string(&header.sample_unit),
    };
    let period_type = pprof::ValueType {
        r#type: b.string(&header.period_type),
        unit: b.string(&header.period_unit),
    };
    let mut samples: HashMap<Vec<u64>, i64> = HashMap::new();
    let mut order: Vec<Vec<u64>> = Vec::new();
    for (stack, value) in stacks {
        let leaf = stack.len().saturating_sub(1);
        let ids: Vec<u64> = stack
            .iter()
            .enumerate()
            .rev()
            .map(|(i, f)| {
                let line = if aggregate_leaf && i == leaf {
                    0
                } else {
                    f.line
                };
                b.location(f, line)
            })
            .collect();
        match samples.get_mut(&ids) {
            Some(v) => *v = v.saturating_add(*value),
            None => {
                samples.insert(ids.clone(), *value);
                order.push(ids);
            }
        }
    }
    // Stable output: samples in location order, so equal inputs give equal bytes.
    order.sort();
    let mut profile = b.profile;
    profile.sample = order
        .into_iter()
        .map(|ids| {
            let v = samples[&ids];
            pprof::Sample {
                location_id: ids,
                value: vec![v],
                label: Vec::new(),
            }
        })
        .collect();
    profile.sample_type = vec![sample_type];
    profile.period_type = Some(period_type);
    profile.period = header.period;
    profile.time_nanos = header.time_nanos;
    profile.duration_nanos = header.duration_nanos;
    profile
}

/// The profile of a query that selected nothing.
pub fn empty_pprof(header: &PprofHeader) -> pprof::Profile {
    build_pprof(header, &[], false)
}

/// Reads the single row a [`SymbolizeExec`] produced.
pub fn output_bytes(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.column(0).as_binary::<i32>().value(0).to_vec())
        .ok_or_else(|| DataFusionError::Internal("SymbolizeExec produced no row".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One recursive function 200,000 frames deep: every node has the same name, the case
    /// where a weak mix of (parent, name) made each insert probe every earlier node.
    #[test]
    fn deep_recursion_builds_in_linear_time() {
        let frames: Vec<FrameInfo> = (0..200_000)
            .map(|i| FrameInfo {
                id: i + 1,
                name: "recursive".into(),
                ..FrameInfo::default()
            })
            .collect();
        let stack: Vec<&FrameInfo> = frames.iter().collect();
        let mut tree = NameTree::default();
        assert_eq!(tree.insert(&stack, 5).unwrap(), 200_000);
        assert_eq!(tree.insert(&stack, 5).unwrap(), 0);
        let decoded = Tree::from_tree_bytes(&tree.tree_bytes(8192)).unwrap();
        assert_eq!(
            (
                decoded.total(),
                decoded.len(),
                decoded.flame_graph(8192).levels.len()
            ),
            (10, 200_000, 200_001)
        );
    }

    /// Truncating in the symbolize node must not change any encoding at `max_nodes`: the
    /// flame graph and the tree bytes of the truncated tree equal those of the whole tree.
    #[test]
    fn truncated_trees_encode_exactly_like_whole_ones() {
        let names = ["main", "a", "b", "c", "d", "e", "other", "gc"];
        let frames: Vec<FrameInfo> = names
            .iter()
            .enumerate()
            .map(|(i, n)| FrameInfo {
                id: 1000 + i as u64,
                name: (*n).to_owned(),
                ..FrameInfo::default()
            })
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let mut named = NameTree::default();
            let mut whole = Tree::new();
            for _ in 0..1 + next(30) {
                let stack: Vec<&FrameInfo> = (0..1 + next(6))
                    .map(|_| &frames[next(frames.len() as u64) as usize])
                    .collect();
                // Small values make ties at the threshold common.
                let value = 1 + next(5) as i64;
                named.insert(&stack, value).unwrap();
                let path: Vec<&str> = stack.iter().map(|f| f.name.as_str()).collect();
                whole.insert(&path, value).unwrap();
            }
            let max_nodes = 1 + next(12) as usize;
            let truncated = Tree::from_tree_bytes(&named.tree_bytes(max_nodes)).unwrap();
            assert_eq!(
                truncated.flame_graph(max_nodes),
                whole.flame_graph(max_nodes),
                "round {round}, max_nodes {max_nodes}"
            );
            assert_eq!(
                truncated.tree_bytes(max_nodes),
                whole.tree_bytes(max_nodes),
                "round {round}, max_nodes {max_nodes}"
            );
            assert_eq!(truncated.total(), whole.total());
        }
    }
}
