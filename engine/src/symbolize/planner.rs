//! Planning of [`Symbolize`] into [`SymbolizeExec`].

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use super::{Symbolize, SymbolizeExec};

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

/// DataFusion's physical planner with Profusion's extension planners.
#[derive(Debug, Default)]
pub struct ProfusionQueryPlanner;

#[async_trait::async_trait]
impl QueryPlanner for ProfusionQueryPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(SymbolizePlanner)])
            .create_physical_plan(plan, session)
            .await
    }
}

/// A session state whose planner knows [`Symbolize`].
pub fn with_planner(state: SessionStateBuilder) -> SessionState {
    state
        .with_query_planner(Arc::new(ProfusionQueryPlanner))
        .build()
}
