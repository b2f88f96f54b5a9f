//! What operators and orchestrators call: `/ready`, `/metrics` (Prometheus text), and the HTTP
//! metrics every route reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::{ApiError, Code};

/// Whether the process serves: `/ready` answers 200 once every role's check passes (an
/// ingester that replayed its WAL, a distributor that sees a quorum of ingesters) and until
/// shutdown begins, then 503, so load balancers stop sending requests while those in flight
/// drain.
#[derive(Default)]
pub struct Readiness {
    shutting_down: AtomicBool,
    checks: std::sync::Mutex<Vec<ReadinessCheck>>,
}

/// One condition of readiness: `Err` says what the process still waits for.
pub type ReadinessCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("shutting_down", &self.shutting_down)
            .finish_non_exhaustive()
    }
}

impl Readiness {
    pub fn ready() -> Self {
        Self::default()
    }

    /// Adds a condition `/ready` waits for.
    pub fn add_check(&self, check: ReadinessCheck) {
        self.checks.lock().expect("readiness lock").push(check);
    }

    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// `Ok` when the process serves, else why not.
    pub fn status(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err("shutting down".to_owned());
        }
        self.checks
            .lock()
            .expect("readiness lock")
            .iter()
            .try_for_each(|check| check())
    }

    pub fn is_ready(&self) -> bool {
        self.status().is_ok()
    }
}

/// What the operational endpoints read.
#[derive(Debug)]
pub struct OpsApi {
    /// Every metric of the process; collectors registered in it refresh on each scrape.
    pub registry: Registry,
    pub readiness: Arc<Readiness>,
}

/// `/ready` and `/metrics`.
pub fn routes(api: OpsApi) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(api))
}

async fn ready(State(api): State<Arc<OpsApi>>) -> Response {
    match api.readiness.status() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why + "\n").into_response(),
    }
}

async fn metrics(State(api): State<Arc<OpsApi>>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &api.registry) {
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

/// Requests by route and status, and their latency.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl HttpMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
        };
        registry.register(
            "profusion_http_requests",
            "HTTP requests by route and status",
            metrics.requests.clone(),
        );
        registry.register(
            "profusion_http_request_duration_seconds",
            "HTTP request latency by route",
            metrics.duration.clone(),
        );
        metrics
    }

    /// `router` with every matched route counted and timed.
    pub fn instrument(self, router: Router) -> Router {
        router.route_layer(middleware::from_fn_with_state(self, observe))
    }
}

async fn observe(
    State(metrics): State<HttpMetrics>,
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
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    metrics
        .duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, status, elapsed_ms = elapsed.as_millis() as u64, "request");
    response
}
