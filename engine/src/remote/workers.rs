//! The clients of a query scheduler in another process: a frontend's [`RemoteScheduler`] and
//! a querier's workers ([`start_remote_querier_workers`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use profusion_cluster::{CallDeadline, PeerChannels, RingWatcher, peer_channel};
use profusion_proto::scheduler::v1::{
    JobDone, JobToRun, QuerierMessage, QuerierReady, RunRequest, RunResponse, SchedulerMessage,
    querier_message, scheduler_message,
};
use tokio::sync::mpsc;
use tonic_prost::ProstCodec;

use super::{LOOP_PATH, RUN_PATH, from_status, to_status, wire};
use crate::budget::QueryBudget;
use crate::error::{QueryError, Result};
use crate::frontend::JobQueue;
use crate::querier::Querier;
use crate::service::{QueryContext, ReadExecutor, ReadJob};
use profusion_model::status::StatusCode;
use profusion_model::tenant::TenantScope;

/// The query schedulers of the ring, for a frontend in another process: each job goes to one
/// of them, in turn.
#[derive(Debug)]
pub struct RemoteScheduler {
    schedulers: RingWatcher,
    max_outstanding: usize,
    next: AtomicUsize,
    channels: PeerChannels,
}

impl RemoteScheduler {
    /// `max_outstanding` is the schedulers' per-tenant queue limit, which the frontend checks
    /// split queries against before queueing any part.
    pub fn new(schedulers: RingWatcher, timeout: Duration, max_outstanding: usize) -> Self {
        Self {
            schedulers,
            max_outstanding,
            next: AtomicUsize::new(0),
            channels: PeerChannels::new(timeout, CallDeadline::Unbounded),
        }
    }

    fn channel(&self, address: &str) -> Result<tonic::transport::Channel> {
        self.channels
            .get(address)
            .map_err(|e| QueryError::internal(e.to_string()))
    }
}

#[async_trait]
impl JobQueue for RemoteScheduler {
    async fn run(&self, ctx: &QueryContext, job: ReadJob) -> Result<crate::service::ReadAnswer> {
        let serving = self.schedulers.serving();
        if serving.is_empty() {
            return Err(QueryError {
                source: None,
                status: StatusCode::Unavailable,
                message: "no query-scheduler serves in the ring; retry once one has joined"
                    .to_owned(),
            });
        }
        let scheduler = &serving[self.next.fetch_add(1, Ordering::Relaxed) % serving.len()];
        let peer = format!("query-scheduler {}", scheduler.address);
        let mut grpc = tonic::client::Grpc::new(self.channel(&scheduler.address)?)
            .max_decoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| unavailable(&peer, &e.to_string()))?;
        let request = RunRequest {
            scope: serde_json::to_string(&ctx.scope).expect("scopes serialize"),
            job: wire::encode_job(&job)?.into(),
            memory_bytes: ctx.budget.bytes() as u64,
        };
        let response: tonic::Response<RunResponse> = grpc
            .unary(
                tonic::Request::new(request),
                http::uri::PathAndQuery::from_static(RUN_PATH),
                ProstCodec::<RunRequest, RunResponse>::default(),
            )
            .await
            .map_err(|s| from_status(&peer, &s))?;
        wire::decode_answer(&response.into_inner().answer, &ctx.budget)
    }

    fn max_outstanding(&self) -> usize {
        self.max_outstanding
    }
}

fn unavailable(peer: &str, message: &str) -> QueryError {
    QueryError {
        source: None,
        status: StatusCode::Unavailable,
        message: format!("{peer} cannot be reached: {message}"),
    }
}

/// What a querier's remote workers report, for readiness and metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Streams to schedulers open now.
    pub connected: AtomicUsize,
    /// Jobs run to an answer or an error.
    pub jobs: std::sync::atomic::AtomicU64,
}

/// Querier workers of this process connected to the schedulers of the ring: `per_scheduler`
/// streams to each serving scheduler, each running one job at a time on `runtime` (the query
/// runtime). Streams that break are opened again every heartbeat period; schedulers that
/// leave the ring are dropped.
pub fn start_remote_querier_workers(
    querier: Arc<Querier>,
    schedulers: RingWatcher,
    me: String,
    per_scheduler: usize,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
) -> (tokio::task::JoinHandle<()>, Arc<WorkerStats>) {
    let stats = Arc::new(WorkerStats::default());
    let counter = Arc::clone(&stats);
    let manager = tokio::spawn(async move {
        let mut workers: HashMap<String, Vec<tokio::task::JoinHandle<()>>> = HashMap::new();
        loop {
            let serving: Vec<String> = schedulers
                .serving()
                .into_iter()
                .map(|m| m.address)
                .collect();
            workers.retain(|address, handles| {
                let keep = serving.contains(address);
                if !keep {
                    handles.iter().for_each(tokio::task::JoinHandle::abort);
                }
                keep
            });
            for address in serving {
                let handles = workers.entry(address.clone()).or_default();
                handles.retain(|h| !h.is_finished());
                while handles.len() < per_scheduler.max(1) {
                    handles.push(tokio::spawn(worker(
                        Arc::clone(&querier),
                        address.clone(),
                        me.clone(),
                        timeout,
                        runtime.clone(),
                        Arc::clone(&counter),
                    )));
                }
            }
            tokio::time::sleep(schedulers.config().heartbeat_period).await;
        }
    });
    (manager, stats)
}

/// Counts a stream as connected while it lives.
struct Connected(Arc<WorkerStats>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One worker stream to the scheduler at `address`, until it breaks.
async fn worker(
    querier: Arc<Querier>,
    address: String,
    me: String,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
    stats: Arc<WorkerStats>,
) {
    if let Err(e) = run_worker(querier, &address, me, timeout, runtime, stats).await {
        tracing::debug!(scheduler = address, error = %e, "querier worker stream ended");
    }
}

async fn run_worker(
    querier: Arc<Querier>,
    address: &str,
    me: String,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
    stats: Arc<WorkerStats>,
) -> std::result::Result<(), tonic::Status> {
    let channel = peer_channel(address, timeout, CallDeadline::Unbounded)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = mpsc::channel::<QuerierMessage>(2);
    tx.send(QuerierMessage {
        kind: Some(querier_message::Kind::Ready(QuerierReady { querier: me })),
    })
    .await
    .map_err(|_| tonic::Status::internal("worker channel closed"))?;
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut inbound = grpc
        .streaming(
            tonic::Request::new(outbound),
            http::uri::PathAndQuery::from_static(LOOP_PATH),
            ProstCodec::<QuerierMessage, SchedulerMessage>::default(),
        )
        .await?
        .into_inner();
    stats.connected.fetch_add(1, Ordering::SeqCst);
    let _connected = Connected(Arc::clone(&stats));
    loop {
        let Some(message) = inbound.message().await? else {
            return Ok(());
        };
        let Some(scheduler_message::Kind::Job(job)) = message.kind else {
            continue;
        };
        let job_id = job.job_id;
        let mut task = runtime.spawn(run_job(Arc::clone(&querier), job));
        let done = loop {
            tokio::select! {
                result = &mut task => break result.unwrap_or_else(|e| JobDone {
                    job_id,
                    error_code: tonic::Code::Internal as i32,
                    error_message: format!("the query panicked: {e}"),
                    ..Default::default()
                }),
                message = inbound.message() => match message? {
                    Some(SchedulerMessage { kind: Some(scheduler_message::Kind::Cancel(c)) })
                        if c.job_id == job_id =>
                    {
                        task.abort();
                        break JobDone {
                            job_id,
                            error_code: tonic::Code::Cancelled as i32,
                            error_message: "cancelled: the caller went away".to_owned(),
                            ..Default::default()
                        };
                    }
                    Some(_) => {}
                    None => {
                        task.abort();
                        return Ok(());
                    }
                },
            }
        };
        stats.jobs.fetch_add(1, Ordering::Relaxed);
        tx.send(QuerierMessage {
            kind: Some(querier_message::Kind::Done(done)),
        })
        .await
        .map_err(|_| tonic::Status::internal("worker channel closed"))?;
    }
}

/// Runs one job from the scheduler; its encoded answer or error.
async fn run_job(querier: Arc<Querier>, job: JobToRun) -> JobDone {
    let result = async {
        let scope: TenantScope = serde_json::from_str(&job.scope)
            .map_err(|e| QueryError::internal(format!("tenant scope: {e}")))?;
        let ctx = QueryContext {
            scope,
            budget: QueryBudget::new(job.memory_bytes as usize),
        };
        let read = wire::decode_job(&job.job)?;
        let answer = querier.execute(&ctx, read).await?;
        wire::encode_answer(&answer)
    }
    .await;
    match result {
        Ok(answer) => JobDone {
            job_id: job.job_id,
            answer: answer.into(),
            ..Default::default()
        },
        Err(e) => {
            let status = to_status(&e);
            JobDone {
                job_id: job.job_id,
                error_code: status.code() as i32,
                error_message: status.message().to_owned(),
                ..Default::default()
            }
        }
    }
}
