//! Channels to the workers of the cluster, whose transport failures are retryable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{
    ChannelResolver, CoordinatorToWorkerMsg, ExecuteTaskRequest, GetWorkerInfoRequest,
    GetWorkerInfoResponse, SetPlanRequest, WorkerChannel, WorkerToCoordinatorMsg,
};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use http::HeaderMap;
use profusion_cluster::{CallDeadline, PeerChannels, Traffic};
use url::Url;

use super::routing::Suspects;
use crate::error::mark_unavailable;

/// Channels to the workers of the cluster, set up as every peer channel is (see
/// [`PeerChannels`]), whose transport failures are marked retryable.
#[derive(Debug, Clone)]
pub(super) struct WorkerChannels {
    channels: Arc<PeerChannels>,
    suspects: Suspects,
    traffic: Arc<Traffic>,
}

impl WorkerChannels {
    pub(super) fn new(timeout: Duration, suspects: Suspects, traffic: Arc<Traffic>) -> Self {
        Self {
            channels: Arc::new(PeerChannels::new(timeout, CallDeadline::Unbounded)),
            suspects,
            traffic,
        }
    }
}

#[async_trait]
impl ChannelResolver for WorkerChannels {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>> {
        let address = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => {
                return Err(DataFusionError::Internal(format!(
                    "worker URL {url} has no host and port"
                )));
            }
        };
        let channel = self
            .channels
            .get(&address)
            .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        Ok(Box::new(Retryable {
            inner: create_worker_client(BoxCloneSyncChannel::new(channel)),
            url: url.clone(),
            suspects: self.suspects.clone(),
            traffic: Arc::clone(&self.traffic),
        }))
    }
}

/// A worker's client whose transport failures (the worker died, stalled or cannot be reached)
/// are marked retryable, and the worker suspect; failures the worker itself reported pass as
/// they are.
struct Retryable {
    inner: Box<dyn WorkerChannel>,
    url: Url,
    suspects: Suspects,
    traffic: Arc<Traffic>,
}

impl Retryable {
    fn mark(&self) -> impl Fn(DataFusionError) -> DataFusionError + Send + Sync + 'static {
        let (url, suspects) = (self.url.clone(), self.suspects.clone());
        move |e| match &e {
            // A status that is no DataFusion error the worker sent: the transport failed.
            DataFusionError::External(inner) if inner.is::<tonic::Status>() => {
                suspects.add(&url);
                mark_unavailable(e.context(format!("the worker at {url}")))
            }
            _ => e,
        }
    }
}

#[async_trait]
impl WorkerChannel for Retryable {
    async fn coordinator_channel(
        &mut self,
        headers: HeaderMap,
        set_plan_request: SetPlanRequest,
        c2w_stream: BoxStream<'static, CoordinatorToWorkerMsg>,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<BoxStream<'static, Result<WorkerToCoordinatorMsg>>> {
        let mark = self.mark();
        let messages = self
            .inner
            .coordinator_channel(headers, set_plan_request, c2w_stream, metrics, task_ctx)
            .await
            .map_err(&mark)?;
        Ok(messages.map_err(mark).boxed())
    }

    async fn execute_task(
        &mut self,
        headers: HeaderMap,
        request: ExecuteTaskRequest,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<Vec<BoxStream<'static, Result<RecordBatch>>>> {
        let mark = self.mark();
        let streams = self
            .inner
            .execute_task(headers, request, metrics, task_ctx)
            .await
            .map_err(&mark)?;
        Ok(streams
            .into_iter()
            .map(|s| {
                let traffic = Arc::clone(&self.traffic);
                s.inspect_ok(move |b| {
                    traffic.add(b.num_rows() as u64, b.get_array_memory_size() as u64)
                })
                .map_err(self.mark())
                .boxed()
            })
            .collect())
    }

    async fn get_worker_info(
        &mut self,
        request: GetWorkerInfoRequest,
    ) -> Result<GetWorkerInfoResponse> {
        let mark = self.mark();
        self.inner.get_worker_info(request).await.map_err(mark)
    }
}
