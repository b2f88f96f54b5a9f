//! The symbolize node: the last step of every flame-graph and pprof query.
//!
//! Its first input is the merged `(stack_hash, value)` rows (the partial and final aggregation
//! by stack hash); the second and third are the `stacks` and `frames` tables. It keeps only the
//! stacks that survived the merge, resolves their frames, applies the stack-trace selector
//! (call-site prefix or Go PGO trimming), and emits one row: the merged call tree as
//! Pyroscope tree bytes, or an encoded `google.v1.Profile`. Symbols are read after the merge so
//! only the stacks that matter are resolved, whatever the number of samples.

mod cache;
mod exec;
mod logical;
mod name_tree;
mod planner;
mod pprof;

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use profusion_proto::google::v1 as pprof_proto;
use serde::{Deserialize, Serialize};

pub use cache::{SymbolCache, SymbolScope};
pub use exec::SymbolizeExec;
pub use logical::Symbolize;
pub use planner::{ProfusionQueryPlanner, SymbolizePlanner, with_planner};

/// The name of the output column.
pub const OUTPUT_COLUMN: &str = "symbolized";

/// Which stacks to keep, by their resolved function names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct StackFilter {
    /// Keep only stacks whose root-first function names start with these.
    pub call_site: Vec<String>,
    /// Trim stacks for Go profile-guided optimization; when set, `call_site` is ignored.
    pub go_pgo: Option<GoPgo>,
}

/// Go PGO trimming, as `types.v1.GoPGO` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct GoPgo {
    /// Leaf-most frames kept per stack.
    pub keep_locations: u32,
    /// Drop the leaf frame's line number so callees aggregate per function.
    pub aggregate_callees: bool,
}

/// What the node emits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub enum SymbolizeOutput {
    /// The call tree as tree bytes: whole when `max_nodes` is 0, else truncated so that
    /// encoding it at `max_nodes` gives exactly what the whole tree would.
    Tree { max_nodes: usize },
    /// An encoded pprof profile with these header fields.
    Pprof(PprofHeader),
}

/// The header of a pprof answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
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

pub(crate) fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        OUTPUT_COLUMN,
        DataType::Binary,
        false,
    )]))
}

pub(crate) fn describe(
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

/// The profile of a query that selected nothing.
pub fn empty_pprof(header: &PprofHeader) -> pprof_proto::Profile {
    pprof::build_pprof(header, &[], false)
}

/// Reads the single row a [`SymbolizeExec`] produced.
pub fn output_bytes(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.column(0).as_binary::<i32>().value(0).to_vec())
        .ok_or_else(|| DataFusionError::Internal("SymbolizeExec produced no row".into()))
}
