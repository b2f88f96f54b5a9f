//! The process: opens what its roles share, wires the roles, serves their APIs on one port,
//! and shuts down gracefully, flushing the head.

use std::net::SocketAddr;
use std::sync::Arc;

use profusion_api::auth::Authenticator;
use profusion_api::flight_sql::FlightSqlApi;
use profusion_api::http_server::ConnectionLimits;
use profusion_api::routes::ops::{HttpMetrics, OpsApi, Readiness};
use profusion_api::{ApiRouter, RequestRules};
use profusion_flight::FlightRouter;
use profusion_ingest::ingester::Ingester;
use profusion_ingest::metrics::IngestMetrics;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::error::{ShutdownError, StartError};
use crate::roles::{self, Shared};
use crate::storage::{DataDirLock, open_catalog, open_store};

/// A started server: its bound address, and what it needs to serve and stop.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    readiness: Arc<Readiness>,
    connection_limits: ConnectionLimits,
    /// How long a graceful shutdown waits for requests in flight.
    drain: std::time::Duration,
    /// Flushed at shutdown.
    ingester: Option<Arc<Ingester>>,
    compactor: Option<Arc<profusion_compactor::Compactor>>,
    /// Ring memberships, left first at shutdown so peers stop routing here.
    members: Vec<Arc<profusion_cluster::Lifecycler>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    query_runtime: QueryRuntime,
    /// Held until the process ends.
    _data_lock: DataDirLock,
}

/// The runtime queries run on, shut down without waiting for them when dropped: queries still
/// running have no one to answer once the server stops, and a runtime dropped plainly inside
/// another runtime (a failed startup, say) would panic.
#[derive(Debug)]
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Server {
    /// Checks the targets, opens storage and the catalog, wires the roles and binds the port.
    pub(crate) async fn start(config: Config) -> Result<Self, StartError> {
        let roles = roles::roles(&config.target)?;
        let data_lock = DataDirLock::acquire(&config.storage.data_path)?;
        let (store, local_store_root) = open_store(&config.storage)?;
        let catalog = open_catalog(&config.storage).await?;
        let query_runtime = QueryRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(
                    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
                )
                .thread_name("profusion-query")
                .enable_all()
                .build()
                .map_err(StartError::QueryRuntime)?,
        ));
        let address = format!(
            "{}:{}",
            config.server.http_listen_address, config.server.http_listen_port
        );
        let addr: SocketAddr = address
            .parse()
            .map_err(|source| StartError::ListenAddress { address, source })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let advertise_address = advertise_address(&config, addr);
        let mut registry = Registry::default();
        let ingest_metrics = IngestMetrics::default();
        ingest_metrics.register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);
        let mut shared = Shared {
            config,
            store,
            local_store_root,
            catalog,
            registry,
            ingest_metrics,
            query_runtime: query_runtime
                .0
                .as_ref()
                .expect("just built")
                .handle()
                .clone(),
            advertise_address,
            rings: Default::default(),
        };
        let monolith = roles.len() == roles::Role::ALL.len();
        let parts = if monolith {
            roles::monolith(&mut shared).await?
        } else {
            roles::microservices(&mut shared, &roles).await?
        };
        tracing::info!(
            roles = ?roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
            "roles started"
        );

        let Shared {
            config,
            catalog,
            mut registry,
            ..
        } = shared;
        let mut tasks = parts.tasks;
        let auth = if config.auth.enabled {
            let auth = Authenticator::load(
                Arc::clone(&catalog),
                config.auth.multitenancy_enabled,
                &mut registry,
            )
            .await
            .map_err(StartError::AccessTokens)?;
            tasks.push(auth.spawn_refresh(config.auth.refresh_interval));
            Some(auth)
        } else {
            None
        };
        let rules = RequestRules {
            multitenancy_enabled: config.auth.multitenancy_enabled,
            body_limit_bytes: config.distributor.body_limit_bytes(),
            body_timeout: config.server.body_timeout(),
            auth,
        };
        let readiness = Arc::new(Readiness::ready());
        for check in parts.readiness {
            readiness.add_check(check);
        }
        // Flight SQL where reads are served; it shares gRPC's Flight service name with the
        // ingester's head service, so one router serves both.
        let flight_sql = parts
            .read
            .as_ref()
            .map(|read| FlightSqlApi::new(rules.clone(), Arc::clone(read) as _));
        let mut router = ApiRouter::new(rules)
            .for_roles(roles.iter().map(|r| r.name().to_owned()).collect())
            .with_ring(Arc::clone(&catalog), config.ring.heartbeat_timeout);
        if let Some(ingester) = &parts.ingester {
            router = router.with_ingester(Arc::clone(ingester) as _);
        }
        if let Some(worker) = parts.worker {
            router = router.with_grpc_service("worker.WorkerService", worker.into_worker_server());
        }
        if parts.head_service.is_some() || flight_sql.is_some() {
            router = router.with_grpc_service(
                "arrow.flight.protocol.FlightService",
                FlightRouter::new(parts.head_service, flight_sql).into_server(),
            );
        }
        if let Some(scheduler) = &parts.scheduler {
            router = router.with_grpc_service(
                "scheduler.v1.SchedulerService",
                profusion_engine::remote::SchedulerService::new(Arc::clone(scheduler)),
            );
        }
        if let Some(push) = parts.push {
            router = router.with_push(push);
        }
        if let Some(read) = &parts.read {
            router = router
                .with_read(Arc::clone(read) as _)
                .with_settings(Arc::clone(&catalog), config.settings.limits())
                .with_tokens(Arc::clone(&catalog));
            if let Some(cleaner) = parts.cleaner {
                router = router.with_admin(Arc::clone(read) as _, Arc::clone(&catalog), cleaner);
            }
        }
        let router = router.build(
            OpsApi {
                registry,
                readiness: Arc::clone(&readiness),
            },
            http_metrics,
        );

        Ok(Self {
            addr,
            listener,
            router,
            readiness,
            connection_limits: config.server.connection_limits(),
            drain: config.server.graceful_shutdown_timeout,
            ingester: parts.ingester,
            compactor: parts.compactor,
            members: parts.members,
            tasks,
            query_runtime,
            _data_lock: data_lock,
        })
    }

    /// Serves until `shutdown` resolves, then drains requests and flushes the head.
    pub(crate) async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ShutdownError> {
        let readiness = Arc::clone(&self.readiness);
        let members = self.members.clone();
        let shutdown = async move {
            shutdown.await;
            readiness.shutting_down();
            // Out of the rings first, so peers stop sending work while requests drain.
            for member in &members {
                member.leave().await;
            }
            tracing::info!("shutting down: draining requests");
        };
        let limits = self.connection_limits;
        tracing::info!(
            max_connections = limits.max_connections,
            header_timeout = ?limits.header_timeout,
            idle_timeout = ?limits.idle_timeout,
            "serving HTTP"
        );
        profusion_api::http_server::serve(self.listener, self.router, limits, shutdown, self.drain)
            .await;
        for task in &self.tasks {
            task.abort();
        }
        if let Some(compactor) = &self.compactor
            && let Err(e) = compactor.shutdown().await
        {
            tracing::warn!(error = %e, "releasing the compactor's claims; they expire on their own");
        }
        if let Some(ingester) = &self.ingester {
            tracing::info!("flushing the head");
            let flushed = ingester.shutdown().await;
            drop(self.query_runtime);
            flushed.map_err(ShutdownError::FinalFlush)?;
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// The address peers reach this process at: `--server.advertise-address` (its port, or the
/// bound one), else the bound address; a wildcard listen address is replaced by loopback, the
/// one address it certainly answers on, with a warning to set the flag.
fn advertise_address(config: &Config, bound: SocketAddr) -> String {
    match config.server.advertise_address.as_deref() {
        Some(address) if has_port(address) => address.to_owned(),
        Some(host) => format!("{host}:{}", bound.port()),
        None if bound.ip().is_unspecified() => {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port()).to_string()
        }
        None => bound.to_string(),
    }
}

/// Whether `address` names a port: `host:port`, `1.2.3.4:port` or `[v6]:port`.
fn has_port(address: &str) -> bool {
    address.parse::<SocketAddr>().is_ok()
        || address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.contains(':') && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::has_port;

    #[test]
    fn advertised_addresses_with_and_without_ports() {
        assert!(has_port("ingester-1:4040"));
        assert!(has_port("10.0.0.7:4040"));
        assert!(has_port("[::1]:4040"));
        assert!(!has_port("ingester-1"));
        assert!(!has_port("10.0.0.7"));
        assert!(!has_port("::1"));
    }
}
