//! One wiring function per role, as Pyroscope's `modules.go` has one module per role: each
//! builds its part from the process's shared resources and the parts of the roles it depends
//! on. `--target=all` runs them together, in dependency order, in one process; microservices
//! mode will run each alone, with network clients in place of the parts it lacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use object_store::ObjectStore;
use profusion_api::routes::ops::ReadinessCheck;
use profusion_catalog::Catalog;
use profusion_cluster::{Lifecycler, MemberState, RingWatcher, Traffic};
use profusion_compactor::{Compactor, CompactorConfig, CompactorMetrics, plan};
use profusion_engine::distributed::Distribution;
use profusion_engine::frontend::{
    FrontendConfig, JobQueue, QueryFrontend, QueryScheduler, start_querier_workers,
};
use profusion_engine::querier::{Querier, QuerierConfig};
use profusion_engine::remote::{RemoteScheduler, WorkerStats, start_remote_querier_workers};
use profusion_engine::service::QueryApi;
use profusion_flight::{HeadFlightService, RemoteHeads};
use profusion_ingest::distributor::{Distributor, PushService};
use profusion_ingest::ingester::{Ingester, IngesterClient, IngesterConfig, limiter};
use profusion_ingest::metrics::IngestMetrics;
use profusion_ingest::remote::{IngesterMember, RemoteIngester, RemoteRingBuilder};
use profusion_ingest::ring::{Ring, instance_tokens};
use profusion_model::block::BlockStore;
use profusion_model::scan::{BlockSource, HeadSource};
use profusion_store_gateway::{StoreGateway, StoreGatewayMetrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use profusion_api::error::{ApiError, Code};
use profusion_api::routes::admin::TombstoneCleaner;

use crate::config::Config;
use crate::error::StartError;

/// The roles a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    Distributor,
    Ingester,
    QueryFrontend,
    QueryScheduler,
    Querier,
    StoreGateway,
    Compactor,
}

impl Role {
    pub(crate) const ALL: [Role; 7] = [
        Role::Distributor,
        Role::Ingester,
        Role::QueryFrontend,
        Role::QueryScheduler,
        Role::Querier,
        Role::StoreGateway,
        Role::Compactor,
    ];

    /// The role's `--target` name, as Pyroscope spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Distributor => "distributor",
            Role::Ingester => "ingester",
            Role::QueryFrontend => "query-frontend",
            Role::QueryScheduler => "query-scheduler",
            Role::Querier => "querier",
            Role::StoreGateway => "store-gateway",
            Role::Compactor => "compactor",
        }
    }
}

/// The roles `--target` names, without repeats, in dependency order; `all` is every role.
pub(crate) fn roles(targets: &[String]) -> Result<Vec<Role>, StartError> {
    let mut named = Vec::new();
    for target in targets {
        let target = target.trim();
        if target == "all" {
            named.extend(Role::ALL);
            continue;
        }
        let Some(role) = Role::ALL.iter().find(|r| r.name() == target) else {
            let known: Vec<&str> = std::iter::once("all")
                .chain(Role::ALL.iter().map(|r| r.name()))
                .collect();
            return Err(StartError::UnknownTarget {
                target: target.to_owned(),
                known: known.join(", "),
            });
        };
        named.push(*role);
    }
    Ok(Role::ALL
        .into_iter()
        .filter(|r| named.contains(r))
        .collect())
}

/// What every role of a process shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The directory behind `store`, when it is local.
    pub(crate) local_store_root: Option<std::path::PathBuf>,
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) registry: Registry,
    pub(crate) ingest_metrics: IngestMetrics,
    /// Where queries run: apart from the runtime serving requests, so a CPU-bound plan never
    /// holds the threads that answer `/ready`, take pushes and carry out a shutdown.
    pub(crate) query_runtime: tokio::runtime::Handle,
    /// `host:port` the other processes of a cluster reach this one at.
    pub(crate) advertise_address: String,
    /// The rings this process watches, by role (see [`watch_ring`]).
    pub(crate) rings: std::collections::HashMap<Role, RingWatcher>,
}

/// The parts a process serves requests with, as its roles built them; a part is `None` when
/// no role of the process builds it.
#[derive(Default)]
pub(crate) struct Parts {
    /// Takes writes from distributors; flushed at shutdown.
    pub(crate) ingester: Option<Arc<Ingester>>,
    /// The ingester's head over Arrow Flight, for queriers of other processes.
    pub(crate) head_service: Option<HeadFlightService>,
    /// Runs the plan stages queriers of the cluster send this process (datafusion-distributed).
    pub(crate) worker: Option<datafusion_distributed::Worker>,
    pub(crate) push: Option<Arc<dyn PushService>>,
    pub(crate) read: Option<Arc<QueryApi<QueryFrontend>>>,
    /// The query scheduler, served to frontends and querier workers of other processes.
    pub(crate) scheduler: Option<Arc<QueryScheduler>>,
    /// Applies deletions to blocks, for the admin API beside the read APIs.
    pub(crate) cleaner: Option<Arc<dyn TombstoneCleaner>>,
    /// Releases its claims at shutdown.
    pub(crate) compactor: Option<Arc<Compactor>>,
    /// The process's ring memberships, left at shutdown.
    pub(crate) members: Vec<Arc<Lifecycler>>,
    /// What `/ready` waits for besides startup.
    pub(crate) readiness: Vec<ReadinessCheck>,
    /// Background work of the roles (ring watchers), stopped at shutdown.
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("ingester", &self.ingester.is_some())
            .field("push", &self.push.is_some())
            .field("read", &self.read.is_some())
            .field("compactor", &self.compactor.is_some())
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

/// Every role in this process (`--target=all`), in dependency order.
pub(crate) async fn monolith(shared: &mut Shared) -> Result<Parts, StartError> {
    let ingester = ingester(shared, 1).await?;
    let blocks = store_gateway(shared)?;
    let scheduler = query_scheduler(shared);
    let querier = querier(
        shared,
        Arc::clone(&ingester) as Arc<dyn HeadSource>,
        blocks,
        None,
    );
    start_querier_workers(
        querier,
        Arc::clone(&scheduler),
        shared.config.querier.querier_max_concurrent,
        &shared.query_runtime,
    );
    let read = query_frontend(shared, Arc::clone(&scheduler) as _);
    let distributor = distributor(
        shared,
        Ring::new(
            vec![Arc::clone(&ingester) as Arc<dyn IngesterClient>],
            shared.config.ingester.replication_factor,
        ),
    );
    let compactor = compactor(shared, true)?;
    // Every role is in its ring, so the ring pages show this process as Pyroscope's
    // monolith shows itself.
    let mut members = Vec::new();
    for role in Role::ALL {
        let member = join_ring(shared, role).await?;
        member.set_active();
        members.push(member);
    }
    let cleaner = Arc::new(Cleaner {
        heads: HeadsToFlush::Local(Arc::clone(&ingester)),
        compactor: Arc::clone(&compactor),
    });
    let head_service = head_service(shared, &ingester);
    Ok(Parts {
        ingester: Some(ingester),
        head_service: Some(head_service),
        push: Some(distributor),
        read: Some(read),
        scheduler: Some(scheduler),
        cleaner: Some(cleaner),
        compactor: Some(compactor),
        members,
        ..Default::default()
    })
}

/// The roles `roles` names, each alone in this process (microservices mode): the parts they
/// lack are reached over the network, found through the rings in the catalog.
pub(crate) async fn microservices(
    shared: &mut Shared,
    roles: &[Role],
) -> Result<Parts, StartError> {
    let runs = |role: Role| roles.contains(&role);
    let mut parts = Parts::default();
    // What the plan stages other processes send here read (see `stage_worker`).
    let mut stage_heads: Option<Arc<dyn HeadSource>> = None;
    let mut stage_blocks: Option<Arc<dyn BlockSource>> = None;
    // What this process's plans and stages receive from stages of other processes.
    let stage_traffic = Arc::new(Traffic::default());
    let scheduler = runs(Role::QueryScheduler).then(|| query_scheduler(shared));
    let schedulers = if scheduler.is_none() && (runs(Role::Querier) || runs(Role::QueryFrontend)) {
        Some(watch_ring(shared, Role::QueryScheduler).await?)
    } else {
        None
    };
    if runs(Role::Querier) {
        let heads = Arc::new(RemoteHeads::new(
            watch_ring(shared, Role::Ingester).await?,
            shared.config.ingester.replication_factor,
            shared.config.querier.remote_timeout,
        ));
        shared
            .registry
            .register_collector(Box::new(TrafficCounters {
                stats: heads.stats(),
                prefix: "profusion_querier_head_received",
                what: "of ingesters' head data this querier received over Arrow Flight",
            }));
        let blocks = store_gateway(shared)?;
        let distribution = Distribution {
            ingesters: watch_ring(shared, Role::Ingester).await?,
            queriers: watch_ring(shared, Role::Querier).await?,
            store_gateways: watch_ring(shared, Role::StoreGateway).await?,
            timeout: shared.config.querier.remote_timeout,
            traffic: Arc::clone(&stage_traffic),
        };
        shared
            .registry
            .register_collector(Box::new(TrafficCounters {
                stats: Arc::clone(&stage_traffic),
                prefix: "profusion_querier_stage_received",
                what: "of partial results this querier received from plan stages in other \
                   processes (their size decoded; on the wire they are compressed Arrow IPC)",
            }));
        // Stages sent here read heads and blocks the way this querier does: the final
        // aggregations, and those of an ingester or store-gateway that does not serve.
        stage_heads = Some(Arc::clone(&heads) as _);
        stage_blocks = Some(Arc::clone(&blocks));
        let querier = querier(shared, heads, blocks, Some(distribution));
        let workers = shared.config.querier.querier_max_concurrent;
        match (&scheduler, &schedulers) {
            (Some(scheduler), _) => start_querier_workers(
                querier,
                Arc::clone(scheduler),
                workers,
                &shared.query_runtime,
            ),
            (None, Some(schedulers)) => {
                let (manager, stats) = start_remote_querier_workers(
                    querier,
                    schedulers.clone(),
                    shared.advertise_address.clone(),
                    workers,
                    shared.config.querier.remote_timeout,
                    shared.query_runtime.clone(),
                );
                parts.tasks.push(manager);
                shared
                    .registry
                    .register_collector(Box::new(WorkerMetrics(Arc::clone(&stats))));
                parts.readiness.push(Box::new(move || {
                    if stats.connected.load(Ordering::SeqCst) > 0 {
                        Ok(())
                    } else {
                        Err("waiting for a query-scheduler to take jobs from".to_owned())
                    }
                }));
            }
            (None, None) => unreachable!("schedulers are watched when none runs here"),
        }
    }
    if runs(Role::QueryFrontend) {
        let queue: Arc<dyn JobQueue> = match (&scheduler, &schedulers) {
            (Some(scheduler), _) => Arc::clone(scheduler) as _,
            (None, Some(schedulers)) => {
                let waiting = schedulers.clone();
                parts.readiness.push(Box::new(move || {
                    if waiting.serving().is_empty() {
                        Err("waiting for a query-scheduler to queue jobs on".to_owned())
                    } else {
                        Ok(())
                    }
                }));
                Arc::new(RemoteScheduler::new(
                    schedulers.clone(),
                    shared.config.querier.remote_timeout,
                    shared.config.scheduler.max_outstanding_per_tenant,
                ))
            }
            (None, None) => unreachable!("schedulers are watched when none runs here"),
        };
        parts.read = Some(query_frontend(shared, queue));
        // Deletions are the frontend's: it resolves their selectors, and cleans through
        // every ingester and an idle compactor of its own.
        parts.cleaner = Some(Arc::new(Cleaner {
            heads: HeadsToFlush::Ring(watch_ring(shared, Role::Ingester).await?),
            compactor: compactor(shared, false)?,
        }));
    }
    parts.scheduler = scheduler;
    for &role in roles {
        let member = join_ring(shared, role).await?;
        match role {
            Role::Ingester => {
                // The series limit is shared by the ingesters in the ring now, this one
                // included.
                let others = shared
                    .catalog
                    .ring_members(Role::Ingester.name())
                    .await
                    .map_err(StartError::Catalog)?
                    .iter()
                    .filter(|m| {
                        m.instance != shared.config.ingester.ingester_id
                            && shared.config.ring.config().is_healthy(m)
                    })
                    .count();
                let ingester = ingester(shared, others + 1).await?;
                let head_service = head_service(shared, &ingester);
                // Head stages read the snapshots their queriers pinned here.
                stage_heads.get_or_insert_with(|| head_service.local_heads());
                parts.head_service = Some(head_service);
                parts.ingester = Some(ingester);
            }
            Role::Distributor => {
                let (distributor, watch, ready) = remote_distributor(shared).await?;
                parts.push = Some(distributor);
                parts.tasks.push(watch);
                parts.readiness.push(ready);
            }
            Role::Compactor => parts.compactor = Some(compactor(shared, true)?),
            // Block stages of queriers, read through this store-gateway's caches.
            Role::StoreGateway => {
                if stage_blocks.is_none() {
                    stage_blocks = Some(store_gateway(shared)?);
                }
            }
            // Built above, together, as they depend on each other.
            Role::QueryFrontend | Role::QueryScheduler | Role::Querier => {}
        }
        member.set_active();
        parts.members.push(member);
    }
    if stage_heads.is_some() || stage_blocks.is_some() {
        parts.worker = Some(stage_worker(
            shared,
            stage_heads,
            stage_blocks,
            stage_traffic,
        )?);
    }
    Ok(parts)
}

/// The members of `role`'s ring, kept up to date.
async fn watch_ring(shared: &mut Shared, role: Role) -> Result<RingWatcher, StartError> {
    if let Some(watcher) = shared.rings.get(&role) {
        // One watcher per ring for the whole process: every role reading it shares one poll.
        return Ok(watcher.clone());
    }
    let watcher = RingWatcher::start(
        Arc::clone(&shared.catalog),
        role.name(),
        shared.config.ring.config(),
    )
    .await
    .map_err(StartError::Catalog)?;
    shared.rings.insert(role, watcher.clone());
    Ok(watcher)
}

/// Registers this process in `role`'s ring (JOINING until the role is built). Ingesters are
/// known by `--ingester.id` and own the tokens it derives; other roles by their address.
async fn join_ring(shared: &Shared, role: Role) -> Result<Arc<Lifecycler>, StartError> {
    let (instance, tokens) = if role == Role::Ingester {
        let id = &shared.config.ingester.ingester_id;
        (id.clone(), instance_tokens(id))
    } else {
        (shared.advertise_address.clone(), Vec::new())
    };
    Lifecycler::register(
        Arc::clone(&shared.catalog),
        role.name(),
        &instance,
        &shared.advertise_address,
        tokens,
        shared.config.ring.config(),
    )
    .await
    .map_err(StartError::Catalog)
}

/// The ingester: recovers its WAL, then takes writes into its head and flushes blocks.
async fn ingester(shared: &Shared, ingesters: usize) -> Result<Arc<Ingester>, StartError> {
    let flags = &shared.config.ingester;
    Ingester::open(
        IngesterConfig {
            id: flags.ingester_id.clone(),
            wal_dir: shared.config.storage.data_path.join("wal"),
            max_block_duration: flags.max_block_duration,
            max_head_bytes: flags.max_head_bytes,
            head_full_wait: flags.head_full_wait,
            flush_check_interval: flags.flush_check_interval,
            local_store_root: shared.local_store_root.clone(),
            max_series_per_tenant: limiter::local_series_limit(
                flags.max_local_series_per_tenant,
                flags.max_global_series_per_tenant,
                flags.replication_factor,
                ingesters,
            ),
        },
        Arc::clone(&shared.store),
        Arc::clone(&shared.catalog),
        shared.ingest_metrics.clone(),
    )
    .await
    .map_err(StartError::Ingester)
}

/// The ingester's Flight service, its traffic in the metrics.
fn head_service(shared: &mut Shared, ingester: &Arc<Ingester>) -> HeadFlightService {
    let service = HeadFlightService::new(Arc::clone(ingester) as _);
    shared
        .registry
        .register_collector(Box::new(TrafficCounters {
            stats: service.stats(),
            prefix: "profusion_ingester_head_sent",
            what: "of head data this ingester sent to queriers over Arrow Flight",
        }));
    service
}

/// The store-gateway: the blocks the catalog lists, their files read through its caches.
fn store_gateway(shared: &mut Shared) -> Result<Arc<dyn BlockSource>, StartError> {
    let metrics = StoreGatewayMetrics::default();
    metrics.register(&mut shared.registry);
    let config = shared.config.store_gateway.config();
    let gateway = StoreGateway::new(
        Arc::clone(&shared.catalog),
        Arc::clone(&shared.store),
        &config,
        metrics,
    )
    .map_err(|source| StartError::LocalState {
        doing: "opening the store-gateway's disk cache",
        path: config.ranges.disk.map(|(dir, _)| dir).unwrap_or_default(),
        source,
    })?;
    Ok(Arc::new(gateway))
}

/// The query scheduler: per-tenant queues of read jobs, its queue lengths in the metrics.
fn query_scheduler(shared: &mut Shared) -> Arc<QueryScheduler> {
    let scheduler = Arc::new(QueryScheduler::new(
        shared.config.scheduler.max_outstanding_per_tenant,
    ));
    shared
        .registry
        .register_collector(Box::new(QueueLengths(Arc::clone(&scheduler))));
    scheduler
}

/// The querier: plans jobs over head data and blocks, its plans' stages spread over
/// `distribution` in a cluster (its workers, which pull the jobs from a scheduler, are started
/// by the caller).
fn querier(
    shared: &Shared,
    head: Arc<dyn HeadSource>,
    blocks: Arc<dyn BlockSource>,
    distribution: Option<Distribution>,
) -> Arc<Querier> {
    Arc::new(Querier::new(
        head,
        blocks,
        QuerierConfig {
            query_memory_bytes: shared.config.querier.query_memory_bytes,
            symbol_cache_bytes: shared.config.querier.symbol_cache_bytes,
            block_cache_bytes: shared.config.querier.block_cache_bytes,
            distribution,
            ..Default::default()
        },
    ))
}

/// The worker running the plan stages other processes send here, reading heads from `head`
/// and blocks through `blocks`.
fn stage_worker(
    shared: &Shared,
    head: Option<Arc<dyn HeadSource>>,
    blocks: Option<Arc<dyn BlockSource>>,
    traffic: Arc<Traffic>,
) -> Result<datafusion_distributed::Worker, StartError> {
    profusion_engine::distributed::worker(
        head,
        blocks,
        shared.config.querier.remote_timeout,
        traffic,
    )
    .map_err(StartError::StageWorker)
}

/// The query frontend: the read service every read API calls, with its limits, splitting the
/// long ranges and queueing the parts on the scheduler.
fn query_frontend(shared: &Shared, queue: Arc<dyn JobQueue>) -> Arc<QueryApi<QueryFrontend>> {
    let flags = &shared.config.querier;
    let frontend = QueryFrontend::new(
        queue,
        FrontendConfig {
            split_interval_millis: flags.split_queries_by_interval.as_millis() as i64,
            query_memory_bytes: flags.query_memory_bytes,
        },
    );
    Arc::new(QueryApi::new(frontend, flags.query_limits()))
}

/// The distributor: validates writes and sends each series to its ingesters on `ring`.
fn distributor(shared: &Shared, ring: Ring) -> Arc<Distributor> {
    let config = &shared.config;
    Arc::new(Distributor::new(
        ring,
        config.validation.limits(&config.distributor),
        shared.ingest_metrics.clone(),
    ))
}

/// A distributor of a cluster: its ring is the ingester ring's members, reached over gRPC,
/// rebuilt whenever the membership changes. Ready once a quorum of ingesters serves.
async fn remote_distributor(
    shared: &mut Shared,
) -> Result<
    (
        Arc<Distributor>,
        tokio::task::JoinHandle<()>,
        ReadinessCheck,
    ),
    StartError,
> {
    let ring_config = shared.config.ring.config();
    let mut watcher = watch_ring(shared, Role::Ingester).await?;
    let replication_factor = shared.config.ingester.replication_factor;
    let builder =
        RemoteRingBuilder::new(replication_factor, shared.config.distributor.push_timeout);
    let members = move |watcher: &RingWatcher| -> Vec<IngesterMember> {
        watcher
            .members()
            .iter()
            .map(|m| IngesterMember {
                instance: m.instance.clone(),
                address: m.address.clone(),
                tokens: m.tokens.clone(),
                healthy: m.state == MemberState::Active && ring_config.is_healthy(m),
            })
            .collect()
    };
    // Readiness counts the healthy members of the ring writes go through, updated after it:
    // never ready (or unready) ahead of the ring a write would meet.
    let healthy = |members: &[IngesterMember]| members.iter().filter(|m| m.healthy).count();
    let initial = members(&watcher);
    let serving = Arc::new(AtomicUsize::new(healthy(&initial)));
    let distributor = distributor(shared, builder.build(&initial));
    let ring = Arc::clone(distributor.ring());
    let ring_serving = Arc::clone(&serving);
    let watch = tokio::spawn(async move {
        while watcher.changed().await {
            let members = members(&watcher);
            ring.replace(builder.build(&members));
            ring_serving.store(healthy(&members), Ordering::Release);
        }
    });
    let quorum = replication_factor / 2 + 1;
    let ready: ReadinessCheck = Box::new(move || {
        let serving = serving.load(Ordering::Acquire);
        if serving >= quorum {
            Ok(())
        } else {
            Err(format!(
                "waiting for ingesters: {serving} serve, a write needs {quorum} \
                 (--ingester.ring.replication-factor={replication_factor})"
            ))
        }
    });
    Ok((distributor, watch, ready))
}

/// The compactor: merges, expires and deletes blocks every compaction interval when `run`;
/// else idle, for the calls of another role (a query-frontend cleaning tombstones).
fn compactor(shared: &mut Shared, run: bool) -> Result<Arc<Compactor>, StartError> {
    let flags = &shared.config.compactor;
    plan::check_ranges(&flags.block_ranges).map_err(StartError::Compactor)?;
    let metrics = CompactorMetrics::default();
    metrics.register(&mut shared.registry);
    let compactor = Arc::new(Compactor::new(
        CompactorConfig {
            block_ranges: flags.block_ranges.clone(),
            compaction_interval: flags.compaction_interval,
            deletion_delay: flags.deletion_delay,
            retention_period: flags.blocks_retention_period,
            retention_overrides: flags.retention_overrides(),
            first_level_wait: flags.first_level_wait,
            claim_lease: flags.claim_lease,
            // Unique per process, so a restarted compactor never mistakes a dead one's
            // claims for its own.
            owner: format!(
                "compactor-{}-{}-{}",
                shared.config.ingester.ingester_id,
                std::process::id(),
                profusion_model::time::now_millis()
            ),
            fail_after: flags.fail_after_step,
        },
        Arc::clone(&shared.catalog),
        BlockStore {
            store: Arc::clone(&shared.store),
            local_root: shared.local_store_root.clone(),
        },
        metrics,
    ));
    if run {
        compactor.start();
        if !shared.config.export.destination.is_empty() {
            let metrics = crate::export::ExportMetrics::default();
            metrics.register(&mut shared.registry);
            crate::export::start_scheduled(
                &shared.config,
                Arc::clone(&shared.catalog),
                Arc::clone(&shared.store),
                metrics,
            );
        }
    }
    Ok(compactor)
}

/// The ingesters whose heads a cleaning flushes.
enum HeadsToFlush {
    /// The ingester of this process.
    Local(Arc<Ingester>),
    /// Every ingester of the ring.
    Ring(RingWatcher),
}

/// How long a cleaning waits for one ingester of another process to flush its head.
const REMOTE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// `clean_tombstones`: every ingester flushes its head, so every deleted profile is in a
/// block, then the compactor rewrites the tenant's blocks without them. In a cluster every
/// ingester of the ring must serve: one that does not could still hold deleted profiles.
pub(crate) struct Cleaner {
    heads: HeadsToFlush,
    compactor: Arc<Compactor>,
}

impl std::fmt::Debug for Cleaner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cleaner").finish_non_exhaustive()
    }
}

impl Cleaner {
    async fn flush_heads(&self) -> Result<(), ApiError> {
        match &self.heads {
            HeadsToFlush::Local(ingester) => Ok(ingester.flush().await?),
            HeadsToFlush::Ring(ring) => {
                let config = ring.config();
                let mut flushes = Vec::new();
                for m in ring.members().iter() {
                    if m.state != MemberState::Active || !config.is_healthy(m) {
                        return Err(ApiError::new(
                            Code::Unavailable,
                            format!(
                                "ingester {} does not serve, so its head cannot be flushed; \
                                 retry once it does (or forget it on /ring if it is gone)",
                                m.instance
                            ),
                        ));
                    }
                    let client =
                        RemoteIngester::new(&m.instance, &m.address, REMOTE_FLUSH_TIMEOUT)?;
                    flushes.push(async move { client.flush().await });
                }
                for result in futures_util::future::join_all(flushes).await {
                    result?;
                }
                Ok(())
            }
        }
    }
}

#[async_trait::async_trait]
impl TombstoneCleaner for Cleaner {
    async fn clean(&self, tenant: &str) -> Result<(), ApiError> {
        self.flush_heads().await?;
        let report =
            self.compactor.clean_tombstones(tenant).await.map_err(|e| {
                ApiError::new(Code::Unavailable, format!("cleaning tombstones: {e}"))
            })?;
        if report.failed_jobs > 0 {
            return Err(ApiError::new(
                Code::Unavailable,
                format!(
                    "{} of {} rewrites failed (see the log); retry",
                    report.failed_jobs, report.jobs
                ),
            ));
        }
        Ok(())
    }
}

/// A querier's remote workers: `profusion_querier_worker_streams` (streams open to schedulers)
/// and `profusion_querier_jobs_total` (jobs run), read at each scrape.
#[derive(Debug)]
struct WorkerMetrics(Arc<WorkerStats>);

impl Collector for WorkerMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let streams = ConstGauge::new(self.0.connected.load(Ordering::SeqCst) as i64);
        streams.encode(encoder.encode_descriptor(
            "profusion_querier_worker_streams",
            "Querier worker streams open to query-schedulers",
            None,
            streams.metric_type(),
        )?)?;
        let jobs = ConstCounter::new(self.0.jobs.load(Ordering::Relaxed));
        jobs.encode(encoder.encode_descriptor(
            "profusion_querier_jobs",
            "Read jobs this querier's workers ran",
            None,
            jobs.metric_type(),
        )?)?;
        Ok(())
    }
}

/// `<prefix>_rows_total` and `<prefix>_bytes_total` of query data that crossed the network.
#[derive(Debug)]
struct TrafficCounters {
    stats: Arc<Traffic>,
    prefix: &'static str,
    what: &'static str,
}

impl Collector for TrafficCounters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (unit, value) in [("rows", self.stats.rows()), ("bytes", self.stats.bytes())] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                &format!("{}_{unit}", self.prefix),
                &format!("{} {}", capitalized(unit), self.what),
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `profusion_query_scheduler_queue_length`: the scheduler's queues, read at each scrape.
#[derive(Debug)]
struct QueueLengths(Arc<QueryScheduler>);

impl Collector for QueueLengths {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "profusion_query_scheduler_queue_length",
            "Queries waiting for a querier worker, by tenant",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (tenant, queued) in self.0.queue_lengths() {
            let gauge = ConstGauge::new(queued as i64);
            gauge.encode(family.encode_family(&[("tenant", tenant)])?)?;
        }
        Ok(())
    }
}
