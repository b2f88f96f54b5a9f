//! The rewrite of a plan's samples aggregation into stages next to the data.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_expr::Distribution;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::Partitioning;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::union::{InterleaveExec, UnionExec};
use datafusion_distributed::{DistributedLeafExec, NetworkCoalesceExec, NetworkShuffleExec};

use crate::table::HeadScanExec;
use crate::table::replicas::ProfileKeyFilterExec;

/// Tasks of the final aggregation stage. Two, even with one querier: a boundary between one
/// producer task and one consumer task would be elided, pulling the head stage back into the
/// querier.
const FINAL_TASKS: usize = 2;

/// The rewrite of the samples aggregation into one stage per origin (see the module doc).
#[derive(Debug)]
pub struct OriginStages;

impl PhysicalOptimizerRule for OriginStages {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let staged = stage(plan, false)?;
        // A plan with stages runs as one partition on its coordinator (datafusion-distributed
        // executes only partition 0 of it): merge the root's partitions there, as its
        // planner does for the plans it splits itself.
        let root = staged.data;
        if staged.transformed && root.properties().partitioning.partition_count() > 1 {
            return Ok(Arc::new(CoalescePartitionsExec::new(root)));
        }
        Ok(root)
    }

    fn name(&self) -> &str {
        "profusion_origin_stages"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with every samples aggregation in it as origin stages. `keep_partitioning`: what
/// reads `plan` requires its hash partitioning (a partitioned hash join, whose two sides must
/// be hashed alike), so stages replacing it are hashed again the same way on the querier.
fn stage(
    plan: Arc<dyn ExecutionPlan>,
    keep_partitioning: bool,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if let Some(stages) = origin_stages(&plan)? {
        let partitioning = plan.properties().partitioning.clone();
        if keep_partitioning && stages.properties().partitioning != partitioning {
            return Ok(Transformed::yes(Arc::new(RepartitionExec::try_new(
                stages,
                partitioning,
            )?)));
        }
        return Ok(Transformed::yes(stages));
    }
    let mut transformed = false;
    let required = plan.input_distribution_requirements().into_per_child();
    let partitions = plan.properties().partitioning.partition_count();
    let passes_partitions = |child: &Arc<dyn ExecutionPlan>| {
        plan.children().len() == 1
            && child.properties().partitioning.partition_count() == partitions
    };
    let children = plan
        .children()
        .into_iter()
        .zip(required)
        .map(|(child, required)| {
            // Required here, or above and passed through (a projection over the aggregation).
            #[expect(deprecated, reason = "plans may still require the old name")]
            let keep = matches!(
                required,
                Distribution::KeyPartitioned(_) | Distribution::HashPartitioned(_)
            ) || (keep_partitioning && passes_partitions(child));
            let child = stage(Arc::clone(child), keep)?;
            transformed |= child.transformed;
            Ok(child.data)
        })
        .collect::<Result<Vec<_>>>()?;
    if !transformed {
        return Ok(Transformed::no(plan));
    }
    Ok(Transformed::yes(
        plan.replace_children(children, recompute())?,
    ))
}

/// `node` as origin stages, when it is a final aggregation over a hash repartition of a
/// partial aggregation whose input unions origins, one of them an ingester's head.
fn origin_stages(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(last) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    if *last.mode() != AggregateMode::FinalPartitioned {
        return Ok(None);
    }
    let Some(repartition) = last.input().downcast_ref::<RepartitionExec>() else {
        return Ok(None);
    };
    let Partitioning::Hash(exprs, partitions) = repartition.partitioning().clone() else {
        return Ok(None);
    };
    let Some(partial) = repartition.input().downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    if *partial.mode() != AggregateMode::Partial {
        return Ok(None);
    }
    let parts = split(partial.input())?;
    if !parts.iter().any(|p| origin_of(p).is_some()) {
        return Ok(None);
    }
    let mut shuffles = Vec::with_capacity(parts.len());
    for part in parts {
        let aggregated = AggregateExec::try_new(
            AggregateMode::Partial,
            partial.group_expr().clone(),
            partial.aggr_expr().to_vec(),
            partial.filter_expr().to_vec(),
            part,
            partial.input_schema(),
        )?;
        let hashed = RepartitionExec::try_new(
            Arc::new(aggregated),
            Partitioning::Hash(exprs.clone(), partitions),
        )?;
        shuffles
            .push(Arc::new(NetworkShuffleExec::try_new(Arc::new(hashed), 1)?)
                as Arc<dyn ExecutionPlan>);
    }
    let interleaved: Arc<dyn ExecutionPlan> = Arc::new(InterleaveExec::try_new(shuffles)?);
    let last = Arc::clone(node).replace_children(vec![interleaved], recompute())?;
    Ok(Some(Arc::new(NetworkCoalesceExec::try_new(
        last,
        FINAL_TASKS,
        1,
    )?)))
}

/// The branches of a union, with the filters and projections above it applied to each:
/// `Filter(Union[a, b])` is `[Filter(a), Filter(b)]`. A plan with no union is itself.
pub(crate) fn split(plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
    if plan.downcast_ref::<UnionExec>().is_some() {
        let mut parts = Vec::new();
        for child in plan.children() {
            parts.extend(split(child)?);
        }
        return Ok(parts);
    }
    let distributes = plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<ProfileKeyFilterExec>().is_some();
    if distributes && let [child] = plan.children().as_slice() {
        let parts = split(child)?;
        if parts.len() > 1 {
            return parts
                .into_iter()
                .map(|p| Arc::clone(plan).replace_children(vec![p], recompute()))
                .collect();
        }
    }
    Ok(vec![Arc::clone(plan)])
}

/// Children replaced by ones with other properties (other partitioning, other inputs).
pub(crate) fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute)
}

/// What a stage next to the data reads: one ingester's head, or block files only.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// The block source name of the ingester (`ingester-<id>`).
    Head(String),
    /// The files, sorted.
    Blocks(Vec<String>),
}

/// The origin of a stage's reads, when they are all one ingester's head or all block files;
/// the stage's plan ends at its network boundaries.
pub(super) fn origin_of(stage: &Arc<dyn ExecutionPlan>) -> Option<Origin> {
    let mut heads = Vec::new();
    let mut files = Vec::new();
    let mut other_leaf = false;
    let _ = stage.apply(|node| {
        if !Arc::ptr_eq(node, stage)
            && (node.downcast_ref::<NetworkShuffleExec>().is_some()
                || node.downcast_ref::<NetworkCoalesceExec>().is_some())
        {
            return Ok(TreeNodeRecursion::Jump);
        }
        // A leaf the planner split over the stage's tasks: what it reads is the original's.
        let node = match node.downcast_ref::<DistributedLeafExec>() {
            Some(leaf) => leaf.original(),
            None => node,
        };
        if let Some(scan) = node.downcast_ref::<HeadScanExec>() {
            heads.extend(scan.scans().iter().map(|(h, _)| h.cut().source.clone()));
        } else if let Some(config) = crate::block_aggregates::scan_config(node) {
            files.extend(
                config
                    .file_groups
                    .iter()
                    .flat_map(|g| g.files())
                    .map(|f| f.object_meta.location.to_string()),
            );
        } else if node.children().is_empty() {
            other_leaf = true;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    heads.dedup();
    files.sort();
    match (heads.as_slice(), files.is_empty(), other_leaf) {
        ([one], true, false) => Some(Origin::Head(one.clone())),
        ([], false, false) => Some(Origin::Blocks(files)),
        _ => None,
    }
}
