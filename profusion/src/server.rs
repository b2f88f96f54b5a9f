//! The process: opens what its roles share, wires the roles, serves their APIs on one port,
//! and shuts down gracefully, flushing the head.

use std::net::SocketAddr;
use std::sync::Arc;

use profusion_api::http_server::ConnectionLimits;
use profusion_api::routes::ops::{HttpMetrics, OpsApi, Readiness};
use profusion_api::{ApiRouter, RequestRules};
use profusion_ingest::ingester::Ingester;
use profusion_ingest::metrics::IngestMetrics;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::error::{ShutdownError, StartError};
use crate::roles::{self, Shared};
use crate::storage::{DataDirLock, open_store};

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
    ingester: Arc<Ingester>,
    compactor: Arc<profusion_compactor::Compactor>,
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
        let catalog_url = if config.storage.catalog_url.is_empty() {
            format!(
                "sqlite:{}",
                config.storage.data_path.join("catalog.db").display()
            )
        } else {
            config.storage.catalog_url.clone()
        };
        let catalog = profusion_catalog::open(&catalog_url)
            .await
            .map_err(StartError::Catalog)?;
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
        };
        let parts = roles::monolith(&mut shared).await?;
        tracing::info!(
            roles = ?roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
            "roles started"
        );

        let Shared {
            config,
            catalog,
            registry,
            ..
        } = shared;
        let rules = RequestRules {
            multitenancy_enabled: config.auth.multitenancy_enabled,
            body_limit_bytes: config.distributor.body_limit_bytes(),
            body_timeout: config.server.body_timeout(),
        };
        let readiness = Arc::new(Readiness::ready());
        let cleaner = Arc::new(roles::LocalCleaner {
            ingester: Arc::clone(&parts.ingester),
            compactor: Arc::clone(&parts.compactor),
        });
        let router = ApiRouter::new(rules)
            .with_push(parts.distributor)
            .with_read(Arc::clone(&parts.read) as _)
            .with_admin(parts.read, Arc::clone(&catalog), cleaner)
            .with_settings(catalog, config.settings.limits())
            .build(
                OpsApi {
                    registry,
                    readiness: Arc::clone(&readiness),
                },
                http_metrics,
            );

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
        Ok(Self {
            addr,
            listener,
            router,
            readiness,
            connection_limits: config.server.connection_limits(),
            drain: config.server.graceful_shutdown_timeout,
            ingester: parts.ingester,
            compactor: parts.compactor,
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
        let shutdown = async move {
            shutdown.await;
            readiness.shutting_down();
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
        if let Err(e) = self.compactor.shutdown().await {
            tracing::warn!(error = %e, "releasing the compactor's claims; they expire on their own");
        }
        tracing::info!("flushing the head");
        let flushed = self.ingester.shutdown().await;
        drop(self.query_runtime);
        flushed.map_err(ShutdownError::FinalFlush)?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}
