//! Wiring: storage, catalog, ingester and distributor behind one HTTP port, with graceful
//! shutdown that flushes the head.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use profusion_ingest::distributor::{Distributor, IncomingProfile};
use profusion_ingest::ingester::{Ingester, IngesterClient, IngesterConfig};
use profusion_ingest::metrics::IngestMetrics;
use profusion_ingest::ring::Ring;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use profusion_engine::frontend::QueryFrontend;
use profusion_engine::service::QueryApi;

use crate::config::Config;
use crate::error::{ApiError, Code};
use crate::ingest_routes;
use crate::rpc::{self, Protocol};

/// Shared state of every request handler.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub distributor: Arc<Distributor>,
    pub ingester: Arc<Ingester>,
    /// Every read goes through the read service: its limits, then the frontend's per-tenant
    /// queues to the querier workers.
    pub read: Arc<QueryApi<QueryFrontend>>,
    /// Per-tenant settings live here (`settings.v1`).
    pub catalog: Arc<dyn profusion_catalog::Catalog>,
    registry: Registry,
    http: HttpMetrics,
    ready: AtomicBool,
}

impl AppState {
    /// The tenant of a write and its body (at most the configured limit), in that order so an
    /// unauthenticated request is refused before its body is read.
    pub(crate) async fn tenant_and_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(String, Bytes), ApiError> {
        let tenant = crate::tenant::write_tenant(headers, self.config.multitenancy_enabled)?;
        let bytes = crate::rpc::read_body(
            body,
            self.config.body_limit_bytes(),
            self.config.body_timeout(),
        )
        .await?;
        Ok((tenant, bytes))
    }

    /// Like [`Self::tenant_and_body`], with the body decompressed per its `Content-Encoding`
    /// (on the blocking pool: decompression is CPU work).
    pub(crate) async fn tenant_and_decoded_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(String, Bytes), ApiError> {
        let (tenant, bytes) = self.tenant_and_body(headers, body).await?;
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let limit = self.config.body_limit_bytes();
        let bytes = match encoding {
            None => bytes,
            Some(encoding) => {
                rpc::on_blocking_pool(move || {
                    crate::rpc::decode_content(Some(&encoding), bytes, limit)
                })
                .await?
            }
        };
        Ok((tenant, bytes))
    }

    /// Stores the profiles `decode` makes for `tenant`. Decoding, validation and
    /// normalization run on the blocking pool, so a large or hostile profile never stalls the
    /// runtime threads serving other requests and `/ready`.
    pub(crate) async fn push<F>(&self, tenant: &str, decode: F) -> Result<(), ApiError>
    where
        F: FnOnce(&profusion_ingest::limits::Limits) -> Result<Vec<IncomingProfile>, ApiError>
            + Send
            + 'static,
    {
        let distributor = Arc::clone(&self.distributor);
        let converted = rpc::on_blocking_pool(move || {
            let profiles = decode(distributor.limits())?;
            Ok(distributor.prepare(profiles, profusion_model::time::now_nanos())?)
        })
        .await?;
        self.distributor.write(tenant, converted).await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone)]
struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    /// Queries waiting in the scheduler, per tenant; refreshed on every scrape.
    query_queue: Family<TenantLabels, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            query_queue: Family::default(),
        }
    }
}

const TARGETS: &[&str] = &[
    "all",
    "distributor",
    "ingester",
    "query-frontend",
    "query-scheduler",
    "querier",
    "store-gateway",
    "compactor",
];

/// A running server: its bound address and a handle to stop it.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    /// Where queries run.
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

/// An exclusive lock on the data directory, held for the life of the process. Two servers on
/// one directory would replay, flush and delete each other's open WAL segments and lose
/// acknowledged profiles; the second is refused at startup instead. The lock is the kernel's
/// (`flock`), so it goes away with the process however it ends, SIGKILL included.
#[derive(Debug)]
struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    const FILE: &str = "profusion.lock";

    fn acquire(dir: &Path) -> Result<Self, String> {
        use std::io::{Read, Seek, Write};
        let path = dir.join(Self::FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(format!(
                    "data directory {} is in use by another profusion process{}: two servers \
                     on one data directory would lose data; stop the other one or choose \
                     another --pyroscopedb.data-path",
                    dir.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    }
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("locking {}: {e}", path.display()));
            }
        }
        // The holder's pid, for the message a second process prints.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(Self { _file: file })
    }
}

impl Server {
    /// Opens storage, recovers the ingester and binds the port.
    pub async fn start(config: Config) -> Result<Self, String> {
        for t in &config.target {
            if !TARGETS.contains(&t.as_str()) {
                return Err(format!(
                    "unknown target {t:?}; known targets: {}",
                    TARGETS.join(", ")
                ));
            }
            if t != "all" {
                return Err(format!(
                    "target {t:?} needs microservices mode, which this version does not have yet; run --target=all"
                ));
            }
        }
        std::fs::create_dir_all(&config.data_path)
            .map_err(|e| format!("creating data path {}: {e}", config.data_path.display()))?;
        let data_lock = DataDirLock::acquire(&config.data_path)?;
        let (store, local_root) = open_store(&config)?;
        let catalog_url = if config.catalog_url.is_empty() {
            format!("sqlite:{}", config.data_path.join("catalog.db").display())
        } else {
            config.catalog_url.clone()
        };
        let catalog = profusion_catalog::open(&catalog_url)
            .await
            .map_err(|e| format!("opening catalog: {e}"))?;
        let mut registry = Registry::default();
        let ingest_metrics = IngestMetrics::default();
        ingest_metrics.register(&mut registry);
        let http = HttpMetrics::default();
        registry.register(
            "profusion_http_requests",
            "HTTP requests by route and status",
            http.requests.clone(),
        );
        registry.register(
            "profusion_http_request_duration_seconds",
            "HTTP request latency by route",
            http.duration.clone(),
        );
        registry.register(
            "profusion_query_scheduler_queue_length",
            "Queries waiting for a querier worker, by tenant",
            http.query_queue.clone(),
        );

        let query_catalog = Arc::clone(&catalog);
        let settings_catalog = Arc::clone(&catalog);
        let query_store = Arc::clone(&store);
        let ingester = Ingester::open(
            IngesterConfig {
                id: config.ingester_id.clone(),
                wal_dir: config.data_path.join("wal"),
                max_block_duration: config.max_block_duration,
                max_head_bytes: config.max_head_bytes,
                flush_check_interval: config.flush_check_interval,
                local_store_root: local_root,
                // One in-process ingester holds every series.
                max_series_per_tenant: profusion_ingest::ingester::limiter::local_series_limit(
                    config.max_local_series_per_tenant,
                    config.max_global_series_per_tenant,
                    config.replication_factor,
                    1,
                ),
            },
            store,
            catalog,
            ingest_metrics.clone(),
        )
        .await
        .map_err(|e| format!("starting the ingester: {e}"))?;
        let querier = Arc::new(profusion_engine::querier::Querier::new(
            Arc::clone(&ingester) as Arc<dyn profusion_model::scan::HeadSource>,
            Arc::new(profusion_engine::blocks::CatalogBlocks::new(
                query_catalog,
                query_store,
            )),
            profusion_engine::querier::QuerierConfig {
                query_memory_bytes: config.query_memory_bytes,
                ..Default::default()
            },
        ));
        // Queries run on a runtime of their own: a CPU-bound plan must not hold the threads
        // that answer `/ready`, take pushes and carry out a shutdown.
        let query_runtime = QueryRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(
                    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
                )
                .thread_name("profusion-query")
                .enable_all()
                .build()
                .map_err(|e| format!("starting the query runtime: {e}"))?,
        ));
        let frontend = QueryFrontend::start(
            querier,
            profusion_engine::frontend::FrontendConfig {
                workers: config.querier_max_concurrent,
                max_outstanding_per_tenant: config.max_outstanding_per_tenant,
                split_interval_millis: config.split_queries_by_interval.as_millis() as i64,
            },
            query_runtime.0.as_ref().expect("just built").handle(),
        );
        let read = Arc::new(QueryApi::new(frontend, config.query_limits()));
        let ring = Ring::new(
            vec![Arc::clone(&ingester) as Arc<dyn IngesterClient>],
            config.replication_factor,
        );
        let distributor = Arc::new(Distributor::new(ring, config.limits(), ingest_metrics));

        let addr: SocketAddr =
            format!("{}:{}", config.http_listen_address, config.http_listen_port)
                .parse()
                .map_err(|e| {
                    format!(
                        "invalid listen address {}:{}: {e}",
                        config.http_listen_address, config.http_listen_port
                    )
                })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(AppState {
            config,
            distributor,
            ingester,
            read,
            catalog: settings_catalog,
            registry,
            http,
            ready: AtomicBool::new(true),
        });
        Ok(Self {
            addr,
            state,
            listener,
            query_runtime,
            _data_lock: data_lock,
        })
    }

    /// Serves until `shutdown` resolves, then drains requests and flushes the head.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let state = Arc::clone(&self.state);
        let app = router(Arc::clone(&state));
        let timeout = state.config.graceful_shutdown_timeout;
        let ready_state = Arc::clone(&state);
        let shutdown = async move {
            shutdown.await;
            ready_state.ready.store(false, Ordering::SeqCst);
            tracing::info!("shutting down: draining requests");
        };
        let limits = state.config.connection_limits();
        tracing::info!(
            max_connections = limits.max_connections,
            header_timeout = ?limits.header_timeout,
            idle_timeout = ?limits.idle_timeout,
            "serving HTTP"
        );
        crate::http_server::serve(self.listener, app, limits, shutdown, timeout).await;
        tracing::info!("flushing the head");
        let flushed = state.ingester.shutdown().await;
        drop(self.query_runtime);
        flushed.map_err(|e| format!("final flush failed: {e}"))?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

fn open_store(
    config: &Config,
) -> Result<(Arc<dyn ObjectStore>, Option<std::path::PathBuf>), String> {
    let local = |dir: &Path| -> Result<(Arc<dyn ObjectStore>, Option<std::path::PathBuf>), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| format!("object store at {}: {e}", dir.display()))?;
        Ok((Arc::new(store), Some(dir)))
    };
    if config.storage_url.is_empty() {
        return local(&config.data_path.join("objects"));
    }
    let url =
        url::Url::parse(&config.storage_url).map_err(|e| format!("invalid --storage.url: {e}"))?;
    if url.scheme() == "file" {
        return local(Path::new(url.path()));
    }
    let (store, prefix) = object_store::parse_url_opts(
        &url,
        std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v)),
    )
    .map_err(|e| format!("object store {}: {e}", config.storage_url))?;
    let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
        Arc::from(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    Ok((store, None))
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/push.v1.PusherService/Push", post(ingest_routes::push))
        .route("/ingest", post(ingest_routes::ingest))
        .route("/pyroscope/ingest", post(ingest_routes::ingest))
        .route("/v1development/profiles", post(ingest_routes::otlp_http))
        .route(
            "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
            post(ingest_routes::otlp_export),
        )
        .route(
            "/querier.v1.QuerierService/{method}",
            post(crate::query_routes::querier),
        )
        .route(
            "/settings.v1.SettingsService/{method}",
            post(crate::service_routes::settings),
        )
        .route(
            "/version.v1.Version/{method}",
            post(crate::service_routes::version),
        )
        .route(
            "/capabilities.v1.FeatureFlagsService/{method}",
            post(crate::service_routes::feature_flags_route),
        )
        .route(
            "/api/v1/status/buildinfo",
            get(crate::service_routes::build_info),
        )
        .route("/pyroscope/render", get(crate::render_routes::render))
        .route(
            "/pyroscope/render-diff",
            get(crate::render_routes::render_diff),
        )
        .route(
            "/pyroscope/label-values",
            get(crate::render_routes::label_values),
        )
        .route("/pyroscope/labels", get(crate::render_routes::labels))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), observe))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.http.query_queue.clear();
    for (tenant, queued) in state.read.executor().scheduler().queue_lengths() {
        state
            .http
            .query_queue
            .get_or_create(&TenantLabels { tenant })
            .set(queued as i64);
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return ApiError::new(Code::Internal, format!("encoding metrics: {e}")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Unknown paths: RPC clients get `unimplemented` in their protocol, others a 404.
async fn fallback(headers: HeaderMap, request: Request<Body>) -> Response {
    let path = request.uri().path().to_owned();
    let message = format!("no such endpoint: {} {path}", request.method());
    match Protocol::detect(&headers) {
        Some(protocol) if path.matches('/').count() == 2 && path.contains('.') => {
            rpc::respond::<profusion_proto::push::v1::PushResponse>(
                protocol,
                Err(ApiError::new(Code::Unimplemented, message)),
            )
        }
        _ => (StatusCode::NOT_FOUND, message + "\n").into_response(),
    }
}

async fn observe(
    State(state): State<Arc<AppState>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state
        .http
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    state
        .http
        .duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, status, elapsed_ms = elapsed.as_millis() as u64, "request");
    response
}
