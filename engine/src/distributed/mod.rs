//! A querier's plans across the processes of a cluster, on datafusion-distributed: the
//! aggregation of samples by stack hash starts where the data is.
//!
//! [`OriginStages`] rewrites the samples aggregation of a plan: each origin of the union it
//! reads (an ingester's head, the blocks of an origin) becomes a stage of its own that
//! filters, keeps its replica choice and aggregates partially, then shuffles by stack hash into
//! the final aggregation, which runs on the queriers, and the merged answer comes back to the
//! querier that runs the job (`stages`). A stage reading one ingester's head is routed to that
//! ingester, a stage reading blocks to a store-gateway, so only partial aggregates leave them;
//! other stages go to the queriers (`routing`). Everything else (symbols, the answer's
//! encoding) stays in the job's process.
//!
//! Every process that runs stages serves a [`worker`] on its port: ingesters decode head scans
//! against the snapshots queriers pinned there, store-gateways read blocks through their
//! caches, queriers do both over the network (a stage whose host does not serve still reads
//! the right rows there). Workers are reached through channels whose transport failures are
//! retryable (`channels`).

mod channels;
mod routing;
mod stages;

pub use stages::OriginStages;
pub(crate) use stages::{recompute, split};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    DistributedCodec, DistributedExec, DistributedExt, DistributedLeafExec, RouteTasksEvent,
    SessionStateBuilderExt, Worker, WorkerQueryContext,
};
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use profusion_cluster::{RingWatcher, Traffic};
use profusion_model::scan::{BlockSource, GenerationSummary, HeadSnapshots, HeadSource, ScanError};

use self::channels::WorkerChannels;
use self::routing::{QuerierUrls, Routes, Suspects};
use crate::blocks::block_runtime;
use crate::codec::ProfusionCodec;

/// Where a cluster's stages run: ingesters (head stages), store-gateways (block stages) and
/// queriers (the rest), and how they are reached.
#[derive(Debug, Clone)]
pub struct Distribution {
    pub ingesters: RingWatcher,
    pub queriers: RingWatcher,
    pub store_gateways: RingWatcher,
    /// Bounds connecting to a worker, and how long one may stay silent before it is given up.
    pub timeout: Duration,
    /// What this process received from the stages of other processes.
    pub traffic: Arc<Traffic>,
}

/// A querier's session state with its plans distributed over `distribution`: stages decoded
/// elsewhere with `codec` (Profusion's nodes), routed next to their data (`routing`).
pub fn coordinator(
    builder: SessionStateBuilder,
    distribution: &Distribution,
    codec: ProfusionCodec,
) -> SessionStateBuilder {
    let suspects = Suspects::default();
    let routes = Routes {
        ingesters: distribution.ingesters.clone(),
        store_gateways: distribution.store_gateways.clone(),
        suspects: suspects.clone(),
    };
    builder
        .with_physical_optimizer_rule(Arc::new(OriginStages))
        .with_distributed_worker_resolver(QuerierUrls {
            queriers: distribution.queriers.clone(),
            suspects: suspects.clone(),
        })
        .with_distributed_planner()
        .with_distributed_user_codec(codec)
        .with_distributed_channel_resolver(WorkerChannels::new(
            distribution.timeout,
            suspects,
            Arc::clone(&distribution.traffic),
        ))
        .with_distributed_route_tasks_handler(move |ev: RouteTasksEvent<'_>| routes.route(ev))
}

/// The worker this process serves stages with: Profusion's nodes decoded against `head` (the
/// local ingester's pinned snapshots, or every ingester over Flight; none on a store-gateway),
/// block files read through `blocks` (its store and metadata caches; none on an ingester),
/// with the options and functions a querier's own sessions have.
pub fn worker(
    head: Option<Arc<dyn HeadSource>>,
    blocks: Option<Arc<dyn BlockSource>>,
    timeout: Duration,
    traffic: Arc<Traffic>,
) -> Result<Worker> {
    let runtime = match &blocks {
        Some(blocks) => block_runtime(RuntimeEnvBuilder::new(), blocks.as_ref(), None)?,
        None => RuntimeEnvBuilder::new().build_arc()?,
    };
    let head = head.unwrap_or_else(|| Arc::new(NoHead));
    let channels = WorkerChannels::new(timeout, Suspects::default(), traffic);
    Ok(
        Worker::from_session_builder(move |ctx: WorkerQueryContext| {
            let head = Arc::clone(&head);
            let channels = channels.clone();
            async move {
                let mut builder = ctx.builder;
                if let Some(config) = builder.config().as_mut() {
                    crate::querier::scan_options(config.options_mut());
                }
                crate::functions::register(&mut builder);
                Ok(builder
                    .with_distributed_user_codec(ProfusionCodec::new(head))
                    .with_distributed_channel_resolver(channels)
                    .build())
            }
        })
        .with_runtime_env(runtime),
    )
}

/// Fails with the codec's error when a stage of `plan` (split into stages by the distributed
/// planner) cannot be encoded. datafusion-distributed encodes each stage as it sends it, inside
/// a task whose error does not reach the query: the stage's worker would wait for a plan that
/// never comes until its timeout. A plan not split into stages passes as it is.
pub(crate) fn check_stages_encode(plan: &Arc<dyn ExecutionPlan>, ctx: &TaskContext) -> Result<()> {
    let Some(distributed) = plan.downcast_ref::<DistributedExec>() else {
        return Ok(());
    };
    let codec = DistributedCodec::new_combined_with_user(ctx.session_config());
    for child in distributed.children() {
        // A leaf split over tasks travels as each task's part: check the whole.
        let unsplit = Arc::clone(child)
            .transform_up(|node| {
                Ok(match node.downcast_ref::<DistributedLeafExec>() {
                    Some(leaf) => Transformed::yes(Arc::clone(leaf.original())),
                    None => Transformed::no(node),
                })
            })?
            .data;
        PhysicalPlanNode::try_from_physical_plan(unsplit, &codec)?;
    }
    Ok(())
}

/// The head of a process that holds none and reaches none (a store-gateway): no stage that
/// reads a head is ever routed to it.
#[derive(Debug)]
struct NoHead;

#[async_trait]
impl HeadSource for NoHead {
    async fn snapshot(&self, _tenant: &str) -> std::result::Result<HeadSnapshots, ScanError> {
        Err(ScanError::Internal(
            "this process reads no ingester's head (a stage reading one was sent to it)".into(),
        ))
    }

    async fn summary(
        &self,
        tenant: &str,
    ) -> std::result::Result<Vec<GenerationSummary>, ScanError> {
        self.snapshot(tenant).await.map(|_| Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::filter::FilterExec;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::table::replicas::{ProfileKeyFilter, ReplicaChoice};

    #[test]
    fn a_replica_filter_travels_with_the_plan() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("series_fingerprint", DataType::UInt64, false),
            Field::new("time_nanos", DataType::Int64, false),
            Field::new("profile_id", DataType::Utf8, false),
        ]));
        let choice = ReplicaChoice::choose(BTreeMap::from([
            ("ingester-a".to_owned(), HashSet::from([1, 2])),
            ("ingester-b".to_owned(), HashSet::from([2, 3])),
        ]));
        let filter = ProfileKeyFilter::new(choice.keep("ingester-b"), &schema)
            .unwrap()
            .expect("b keeps only 3");
        let plan: Arc<dyn ExecutionPlan> = Arc::new(
            FilterExec::try_new(Arc::new(filter), Arc::new(EmptyExec::new(schema))).unwrap(),
        );
        let codec = ProfusionCodec::new(Arc::new(NoHead));
        let node = PhysicalPlanNode::try_from_physical_plan(Arc::clone(&plan), &codec).unwrap();
        let ctx = SessionContext::new();
        let back = node
            .try_into_physical_plan(&ctx.task_ctx(), &codec)
            .unwrap();
        assert_eq!(
            datafusion::physical_plan::displayable(back.as_ref())
                .indent(false)
                .to_string(),
            datafusion::physical_plan::displayable(plan.as_ref())
                .indent(false)
                .to_string()
        );
    }
}
