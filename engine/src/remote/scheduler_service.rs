//! The query scheduler's gRPC service: frontends' jobs in, querier workers' streams out.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use profusion_model::status::StatusCode;
use profusion_model::tenant::TenantScope;
use profusion_proto::scheduler::v1::{
    CancelJob, JobDone, JobToRun, QuerierMessage, RunRequest, RunResponse, SchedulerMessage,
    querier_message, scheduler_message,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::{LOOP_PATH, RUN_PATH, from_status, to_status, wire};
use crate::budget::QueryBudget;
use crate::error::QueryError;
use crate::frontend::{Job, QueryScheduler};
use crate::service::QueryContext;

/// Serves a [`QueryScheduler`] to frontends and querier workers in other processes.
#[derive(Debug, Clone)]
pub struct SchedulerService {
    scheduler: Arc<QueryScheduler>,
}

impl SchedulerService {
    pub fn new(scheduler: Arc<QueryScheduler>) -> Self {
        Self { scheduler }
    }
}

impl<B> tower_service::Service<http::Request<B>> for SchedulerService
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let scheduler = Arc::clone(&self.scheduler);
        Box::pin(async move {
            Ok(match request.uri().path() {
                RUN_PATH => {
                    tonic::server::Grpc::new(ProstCodec::<RunResponse, RunRequest>::default())
                        .max_decoding_message_size(16 << 20)
                        .max_encoding_message_size(usize::MAX)
                        .unary(RunMethod(scheduler), request)
                        .await
                }
                LOOP_PATH => {
                    tonic::server::Grpc::new(
                        ProstCodec::<SchedulerMessage, QuerierMessage>::default(),
                    )
                    .max_decoding_message_size(usize::MAX)
                    .streaming(LoopMethod(scheduler), request)
                    .await
                }
                other => Status::unimplemented(format!("no method {other}")).into_http(),
            })
        })
    }
}

/// `Run`: the job waits in its scope's queue, a worker runs it, its answer goes back.
struct RunMethod(Arc<QueryScheduler>);

impl tonic::server::UnaryService<RunRequest> for RunMethod {
    type Response = RunResponse;
    type Future = BoxFuture<'static, Result<Response<RunResponse>, Status>>;

    fn call(&mut self, request: Request<RunRequest>) -> Self::Future {
        let scheduler = Arc::clone(&self.0);
        Box::pin(async move {
            let request = request.into_inner();
            let scope: TenantScope = serde_json::from_str(&request.scope)
                .map_err(|e| Status::invalid_argument(format!("tenant scope: {e}")))?;
            let job = wire::decode_job(&request.job).map_err(|e| to_status(&e))?;
            let ctx = QueryContext {
                scope,
                budget: QueryBudget::new(request.memory_bytes as usize),
            };
            let answer = scheduler
                .run_passing(&ctx, job)
                .await
                .map_err(|e| to_status(&e))?;
            let answer = wire::encode_answer(&answer).map_err(|e| to_status(&e))?;
            Ok(Response::new(RunResponse {
                answer: answer.into(),
            }))
        })
    }
}

/// `QuerierLoop`: one querier worker per stream.
struct LoopMethod(Arc<QueryScheduler>);

impl tonic::server::StreamingService<QuerierMessage> for LoopMethod {
    type Response = SchedulerMessage;
    type ResponseStream = BoxStream<'static, Result<SchedulerMessage, Status>>;
    type Future = BoxFuture<'static, Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<QuerierMessage>>) -> Self::Future {
        let scheduler = Arc::clone(&self.0);
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(serve_worker(scheduler, request.into_inner(), tx));
            let out = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (Ok(m), rx))
            });
            Ok(Response::new(Box::pin(out) as Self::ResponseStream))
        })
    }
}

static NEXT_JOB_ID: AtomicU64 = AtomicU64::new(1);

/// Feeds one querier worker: a job at a time, its answer back to the job's caller. The stream
/// ending while a job runs means the worker died (or stalled past keepalive): the job is
/// queued again once, at the front, then failed.
async fn serve_worker(
    scheduler: Arc<QueryScheduler>,
    mut inbound: Streaming<QuerierMessage>,
    outbound: mpsc::Sender<SchedulerMessage>,
) {
    let querier = match inbound.message().await {
        Ok(Some(QuerierMessage {
            kind: Some(querier_message::Kind::Ready(ready)),
        })) => ready.querier,
        _ => return,
    };
    tracing::debug!(querier, "querier worker connected");
    loop {
        let mut job = tokio::select! {
            job = scheduler.next() => job,
            () = outbound.closed() => return,
        };
        if job.reply.is_closed() {
            continue;
        }
        let encoded = match wire::encode_job(&job.job) {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = job.reply.send(Err(e));
                continue;
            }
        };
        let id = NEXT_JOB_ID.fetch_add(1, Ordering::Relaxed);
        let sent = outbound
            .send(SchedulerMessage {
                kind: Some(scheduler_message::Kind::Job(JobToRun {
                    job_id: id,
                    scope: serde_json::to_string(&job.ctx.scope).expect("scopes serialize"),
                    job: encoded.into(),
                    memory_bytes: job.ctx.budget.bytes() as u64,
                })),
            })
            .await;
        if sent.is_err() {
            lost(&scheduler, job, &querier);
            return;
        }
        let mut cancelled = false;
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(QuerierMessage { kind: Some(querier_message::Kind::Done(done)) }))
                        if done.job_id == id =>
                    {
                        if !cancelled {
                            match answer(&done, &querier) {
                                // A peer of the querier (an ingester, a worker running a
                                // stage) could not be reached: run the job again once, when
                                // the rings may have routed around it.
                                Err(e) if e.status == StatusCode::Unavailable && !job.retried => {
                                    tracing::warn!(
                                        querier,
                                        error = %e,
                                        "a query failed as unavailable; running it again"
                                    );
                                    job.retried = true;
                                    scheduler.requeue(job);
                                }
                                result => {
                                    let _ = job.reply.send(result);
                                }
                            }
                        }
                        break;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        if !cancelled {
                            lost(&scheduler, job, &querier);
                        }
                        return;
                    }
                },
                () = job.reply.closed(), if !cancelled => {
                    // The caller went away: the worker drops the plan, then reports done.
                    cancelled = true;
                    let cancel = SchedulerMessage {
                        kind: Some(scheduler_message::Kind::Cancel(CancelJob { job_id: id })),
                    };
                    if outbound.send(cancel).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The answer a worker reported, still encoded: a frontend of another process decodes it, one
/// of this process when it takes it ([`crate::frontend::JobQueue::run`]).
fn answer(done: &JobDone, querier: &str) -> crate::error::Result<crate::service::ReadAnswer> {
    if done.error_code != 0 {
        return Err(from_status(
            &format!("querier {querier}"),
            &Status::new(
                tonic::Code::from_i32(done.error_code),
                done.error_message.clone(),
            ),
        ));
    }
    Ok(crate::service::ReadAnswer::Encoded(done.answer.to_vec()))
}

/// A job whose worker went away before answering: run again once, then failed as retryable.
fn lost(scheduler: &QueryScheduler, mut job: Job, querier: &str) {
    if job.retried {
        let _ = job.reply.send(Err(QueryError {
            source: None,
            status: StatusCode::Unavailable,
            message: format!(
                "the querier {querier} went away while running the query, after another one \
                 had; retry"
            ),
        }));
        return;
    }
    tracing::warn!(
        querier,
        "a querier went away while running a query; running it again"
    );
    job.retried = true;
    scheduler.requeue(job);
}
