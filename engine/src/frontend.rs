//! The query frontend, the query scheduler and the querier workers: the three read-path
//! components, in-process in monolithic mode.
//!
//! The [`QueryFrontend`] is what the API calls. It splits long ranges into intervals (when
//! configured), turns each part into a job and merges the partial answers: trees by summing
//! nodes, series by joining their points, then the top-N limit. The [`QueryScheduler`] keeps
//! one FIFO queue per tenant (or cross-tenant scope) and serves the queues round-robin, so a
//! tenant that floods queries waits behind itself, not in front of others; a tenant with too
//! many queued jobs is refused with `resource_exhausted`. A fixed pool of querier workers
//! ([`start_querier_workers`]) pulls jobs and runs them on the [`Querier`]. The three are built
//! apart, as the three roles they are. Jobs are data ([`ReadJob`]), not code: the same
//! queue will hand them to queriers in other processes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use profusion_model::tree::Tree;
use tokio::sync::{Notify, oneshot};

use crate::budget::{Charged, QueryBudget};
use crate::error::{QueryError, Result};
use crate::querier::{MergeRequest, Querier, SeriesQuery, TimeRange, TimeSeries, top_series};
use crate::service::{QueryContext, ReadAnswer, ReadExecutor, ReadJob};
use profusion_model::status::StatusCode;

/// A queued job: what to run, for whom, and where the answer goes.
pub(crate) struct Job {
    pub(crate) ctx: QueryContext,
    pub(crate) job: ReadJob,
    pub(crate) reply: oneshot::Sender<Result<ReadAnswer>>,
    /// Whether a querier already died running it (it is retried once).
    pub(crate) retried: bool,
}

/// Where a frontend's jobs run: the scheduler of this process, or one in another process
/// ([`crate::remote::RemoteScheduler`]).
#[async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Queues `job` under the scope's fair queue and waits for a querier to run it.
    async fn run(&self, ctx: &QueryContext, job: ReadJob) -> Result<ReadAnswer>;

    /// Most jobs a tenant may have queued: a query split into more parts is refused before
    /// any is queued.
    fn max_outstanding(&self) -> usize;
}

/// The frontend's settings.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// Split ranges longer than this into parts of this length, in Unix ms (0 never splits).
    pub split_interval_millis: i64,
    /// Memory budget of one user query: every part it is split into and what joins them.
    pub query_memory_bytes: usize,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            split_interval_millis: 0,
            query_memory_bytes: 1 << 30,
        }
    }
}

#[derive(Default)]
struct Queues {
    by_tenant: HashMap<String, VecDeque<Job>>,
    /// Tenants with queued jobs, in the order they are served next.
    turn: VecDeque<String>,
}

/// Per-tenant FIFO queues served round-robin.
pub struct QueryScheduler {
    queues: Mutex<Queues>,
    ready: Notify,
    max_outstanding: usize,
}

impl std::fmt::Debug for QueryScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryScheduler")
            .field("max_outstanding", &self.max_outstanding)
            .finish_non_exhaustive()
    }
}

impl QueryScheduler {
    pub fn new(max_outstanding: usize) -> Self {
        Self {
            queues: Mutex::new(Queues::default()),
            ready: Notify::new(),
            max_outstanding: max_outstanding.max(1),
        }
    }

    pub(crate) fn enqueue(&self, tenant: &str, job: Job) -> Result<()> {
        {
            let mut q = self.queues.lock().expect("scheduler lock");
            let queue = q.by_tenant.entry(tenant.to_owned()).or_default();
            if queue.len() >= self.max_outstanding {
                return Err(QueryError {
                    source: None,
                    status: StatusCode::ResourceExhausted,
                    message: format!(
                        "too many outstanding requests for tenant {tenant:?}: {} are queued (limit {}); retry later",
                        queue.len(),
                        self.max_outstanding
                    ),
                });
            }
            queue.push_back(job);
            if queue.len() == 1 {
                q.turn.push_back(tenant.to_owned());
            }
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Puts back a job whose querier died before answering, first in its tenant's queue (it
    /// waited its turn already).
    pub(crate) fn requeue(&self, job: Job) {
        let tenant = job.ctx.scope.key();
        {
            let mut q = self.queues.lock().expect("scheduler lock");
            let queue = q.by_tenant.entry(tenant.clone()).or_default();
            queue.push_front(job);
            if queue.len() == 1 {
                q.turn.push_front(tenant);
            }
        }
        self.ready.notify_one();
    }

    fn try_next(&self) -> Option<Job> {
        let mut q = self.queues.lock().expect("scheduler lock");
        let tenant = q.turn.pop_front()?;
        let queue = q.by_tenant.get_mut(&tenant)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            q.by_tenant.remove(&tenant);
        } else {
            q.turn.push_back(tenant);
        }
        job
    }

    /// The next job, waiting for one.
    pub(crate) async fn next(&self) -> Job {
        loop {
            // Registered (enabled) before the check, so a job queued in between still wakes us.
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(job) = self.try_next() {
                return job;
            }
            ready.await;
        }
    }

    /// Queued jobs per tenant, for metrics.
    pub fn queue_lengths(&self) -> Vec<(String, usize)> {
        let q = self.queues.lock().expect("scheduler lock");
        q.by_tenant
            .iter()
            .map(|(t, jobs)| (t.clone(), jobs.len()))
            .collect()
    }
}

/// Splits an inclusive nanosecond range at multiples of `interval_millis`, into at most
/// `max_parts` parts (a range that needs more is refused before anything is queued).
fn split(range: TimeRange, interval_millis: i64, max_parts: usize) -> Result<Vec<TimeRange>> {
    let interval = interval_millis.saturating_mul(1_000_000);
    let length = i128::from(range.end) - i128::from(range.start);
    if interval <= 0 || length < i128::from(interval) {
        return Ok(vec![range]);
    }
    let parts = i128::from(range.end).div_euclid(i128::from(interval))
        - i128::from(range.start).div_euclid(i128::from(interval))
        + 1;
    if parts > max_parts as i128 {
        return Err(QueryError {
            source: None,
            status: StatusCode::ResourceExhausted,
            message: format!(
                "the time range splits into {parts} parts of --querier.split-queries-by-interval, \
                 more than the {max_parts} a tenant may have queued; narrow the range"
            ),
        });
    }
    // In 128 bits: boundaries past the ends of the 64-bit range must not saturate.
    let (interval, last) = (i128::from(interval), i128::from(range.end));
    let mut parts = Vec::new();
    let mut start = i128::from(range.start);
    while start <= last {
        let boundary = (start.div_euclid(interval) + 1) * interval;
        let end = (boundary - 1).min(last);
        parts.push(TimeRange {
            start: start as i64,
            end: end as i64,
        });
        start = boundary;
    }
    Ok(parts)
}

#[async_trait]
impl JobQueue for QueryScheduler {
    async fn run(&self, ctx: &QueryContext, job: ReadJob) -> Result<ReadAnswer> {
        match self.run_passing(ctx, job).await? {
            ReadAnswer::Encoded(bytes) => crate::remote::wire::decode_answer(&bytes, &ctx.budget),
            answer => Ok(answer),
        }
    }

    fn max_outstanding(&self) -> usize {
        self.max_outstanding
    }
}

impl QueryScheduler {
    /// Queues `job` and waits for its answer, which stays encoded when a querier of another
    /// process ran it. A caller that goes away costs no more work: before its turn the job is
    /// skipped, during it the plan is dropped, which cancels it.
    pub(crate) async fn run_passing(&self, ctx: &QueryContext, job: ReadJob) -> Result<ReadAnswer> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(
            &ctx.scope.key(),
            Job {
                ctx: ctx.clone(),
                job,
                reply,
                retried: false,
            },
        )?;
        answer
            .await
            .map_err(|_| QueryError::internal("a querier worker dropped the query"))?
    }
}

/// What the API calls for every read.
#[derive(Debug)]
pub struct QueryFrontend {
    queue: Arc<dyn JobQueue>,
    config: FrontendConfig,
}

impl QueryFrontend {
    /// A frontend queueing its jobs on `queue`.
    pub fn new(queue: Arc<dyn JobQueue>, config: FrontendConfig) -> Self {
        Self { queue, config }
    }

    async fn run(&self, ctx: &QueryContext, job: ReadJob) -> Result<ReadAnswer> {
        self.queue.run(ctx, job).await
    }

    /// The merged tree of a request, the range split into intervals run in parallel. With
    /// `max_nodes` (not 0) and a single part, the querier truncates it for an encoding at
    /// `max_nodes`; split parts stay whole, as truncated parts could not be summed exactly.
    async fn merge_tree(
        &self,
        ctx: &QueryContext,
        request: MergeRequest,
        max_nodes: usize,
    ) -> Result<Charged<Tree>> {
        let parts = split(
            request.range,
            self.config.split_interval_millis,
            self.queue.max_outstanding(),
        )?;
        let max_nodes = if parts.len() == 1 { max_nodes } else { 0 };
        let jobs = parts.into_iter().map(|range| {
            let job = ReadJob::MergeTree {
                request: MergeRequest {
                    range,
                    ..request.clone()
                },
                max_nodes,
            };
            async move { self.run(ctx, job).await?.into_tree() }
        });
        let mut parts = futures_util::future::try_join_all(jobs).await?;
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        let budget = &ctx.budget;
        let mut reservation = budget.reservation("merged flame-graph tree");
        let mut tree = Tree::new();
        for part in parts {
            tree.merge_charged(&part.value, budget.tree_charge(&mut reservation))?;
        }
        Ok(Charged::new(tree, reservation))
    }

    /// Time series, split at step-aligned interval boundaries so every step falls in one part;
    /// the top-N limit applies after the parts are joined.
    async fn select_series(
        &self,
        ctx: &QueryContext,
        query: SeriesQuery,
    ) -> Result<Vec<TimeSeries>> {
        let step = query.step_millis.max(1);
        let interval = match self.config.split_interval_millis {
            0 => 0,
            i => i.div_euclid(step).max(1) * step,
        };
        let parts = split(query.range, interval, self.queue.max_outstanding())?;
        let jobs = parts.into_iter().map(|range| {
            let part = SeriesQuery {
                range,
                limit: None,
                ..query.clone()
            };
            async move {
                self.run(ctx, ReadJob::SelectSeries(part))
                    .await?
                    .into_series()
            }
        });
        let mut joined: BTreeMap<Vec<(String, String)>, BTreeMap<i64, f64>> = BTreeMap::new();
        for part in futures_util::future::try_join_all(jobs).await? {
            for s in part {
                let points = joined.entry(s.labels).or_default();
                for (t, v) in s.points {
                    *points.entry(t).or_default() += v;
                }
            }
        }
        let series = joined
            .into_iter()
            .map(|(labels, points)| TimeSeries {
                labels,
                points: points.into_iter().collect(),
            })
            .collect();
        Ok(top_series(series, query.limit))
    }
}

#[async_trait]
impl ReadExecutor for QueryFrontend {
    /// The memory budget of one user query, for every part and every call it makes (a render's
    /// tree and timelines, a diff's two sides).
    fn budget(&self) -> QueryBudget {
        QueryBudget::new(self.config.query_memory_bytes)
    }

    async fn execute(&self, ctx: &QueryContext, job: ReadJob) -> Result<ReadAnswer> {
        match job {
            ReadJob::MergeTree { request, max_nodes } => self
                .merge_tree(ctx, request, max_nodes)
                .await
                .map(ReadAnswer::Tree),
            ReadJob::SelectSeries(query) => {
                self.select_series(ctx, query).await.map(ReadAnswer::Series)
            }
            // Profiles are merged whole; the rest need no split.
            other => self.run(ctx, other).await,
        }
    }
}

/// Starts `workers` querier workers on `runtime`, each pulling jobs from `scheduler` and
/// running them on `querier`, one at a time. `runtime` is the query runtime, apart from the
/// one serving requests, so CPU-bound plans never hold the threads that answer `/ready`, take
/// pushes and handle shutdown.
pub fn start_querier_workers(
    querier: Arc<Querier>,
    scheduler: Arc<QueryScheduler>,
    workers: usize,
    runtime: &tokio::runtime::Handle,
) {
    for _ in 0..workers.max(1) {
        let (scheduler, querier) = (Arc::clone(&scheduler), Arc::clone(&querier));
        let jobs = runtime.clone();
        runtime.spawn(async move {
            loop {
                let job = scheduler.next().await;
                // Its own task, so a panicking query fails alone and the worker lives on.
                if let Err(e) = jobs.spawn(run_job(Arc::clone(&querier), job)).await {
                    tracing::error!(error = %e, "a query job panicked");
                }
            }
        });
    }
}

/// Runs one job on a querier worker, unless its caller has gone away.
async fn run_job(querier: Arc<Querier>, job: Job) {
    let Job {
        ctx,
        job,
        mut reply,
        ..
    } = job;
    if reply.is_closed() {
        return;
    }
    tokio::select! {
        result = querier.execute(&ctx, job) => {
            let _ = reply.send(result);
        }
        () = reply.closed() => {
            tracing::debug!("query cancelled: the caller went away");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_the_range_once_at_interval_boundaries() {
        let ms = 1_000_000;
        let r = TimeRange {
            start: 5 * ms,
            end: 25 * ms + 7,
        };
        let parts = split(r, 10, 100).unwrap();
        assert_eq!(
            parts,
            [
                TimeRange {
                    start: 5 * ms,
                    end: 10 * ms - 1
                },
                TimeRange {
                    start: 10 * ms,
                    end: 20 * ms - 1
                },
                TimeRange {
                    start: 20 * ms,
                    end: 25 * ms + 7
                },
            ]
        );
        assert_eq!(split(r, 0, 100).unwrap(), [r]);
        assert_eq!(
            split(TimeRange::EMPTY, 10, 100).unwrap(),
            [TimeRange::EMPTY]
        );
        let everything = TimeRange {
            start: i64::MIN,
            end: i64::MAX,
        };
        assert!(split(everything, 3_600_000, 100).is_err());
        // Boundaries at -MAX, 0 and MAX: four parts, none lost at either end.
        let parts = split(everything, i64::MAX / 1_000_000, 100).unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!((parts[0].start, parts[3].end), (i64::MIN, i64::MAX));
        assert!(parts.windows(2).all(|w| w[0].end + 1 == w[1].start));
    }
}
