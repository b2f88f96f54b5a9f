//! [`Symbolize`], the logical node: the merged stacks, the `stacks` and the `frames` inputs.

use std::fmt;
use std::sync::Arc;

use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::prelude::Expr;

use super::{StackFilter, SymbolizeOutput, describe, output_schema};

/// The logical node; [`SymbolizePlanner`] turns it into a [`SymbolizeExec`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Symbolize {
    merged: LogicalPlan,
    stacks: LogicalPlan,
    frames: LogicalPlan,
    pub(super) output: SymbolizeOutput,
    pub(super) filter: StackFilter,
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
