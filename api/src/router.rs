//! The router of one port, built from the services a process runs: each role adds the API
//! families it serves, so a process with no read service routes no read endpoint.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use profusion_catalog::Catalog;
use profusion_engine::service::ReadService;
use profusion_ingest::distributor::PushService;
use profusion_ingest::ingester::IngesterClient;

use crate::error::{ApiError, Code};
use crate::request::RequestRules;
use crate::routes::admin::TombstoneCleaner;
use crate::routes::ops::{HttpMetrics, OpsApi};
use crate::routes::settings::{SettingsApi, SettingsLimits};
use crate::routes::{self, ReadApi};
use crate::rpc::{self, Protocol};

/// Collects the API families of a process, then builds its router.
#[derive(Debug)]
pub struct ApiRouter {
    rules: RequestRules,
    router: Router,
    /// The families added, so the others can answer which role serves them.
    served: Vec<Family>,
    /// The roles of this process, named in the answer to a request another role serves.
    roles: Vec<String>,
}

/// The API families that belong to one role each, with the paths they route: a process
/// without the role answers those paths with the role to call instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Write,
    Read,
    Settings,
    Admin,
    Tokens,
}

impl Family {
    const ALL: [Family; 5] = [
        Family::Write,
        Family::Read,
        Family::Settings,
        Family::Admin,
        Family::Tokens,
    ];

    fn describe(self) -> &'static str {
        match self {
            Family::Write => "the write APIs (Push, /ingest, OTLP)",
            Family::Read => "the read APIs (querier, render, labels, SQL)",
            Family::Settings => "the tenant settings API",
            Family::Admin => "the admin API",
            Family::Tokens => "the access-token API",
        }
    }

    /// The role that serves the family in microservices mode.
    fn role(self) -> &'static str {
        match self {
            Family::Write => "distributor",
            Family::Read | Family::Settings | Family::Admin | Family::Tokens => "query-frontend",
        }
    }

    fn paths(self) -> &'static [&'static str] {
        match self {
            Family::Write => &[
                "/push.v1.PusherService/Push",
                "/ingest",
                "/pyroscope/ingest",
                "/v1development/profiles",
                "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
            ],
            Family::Read => &[
                "/querier.v1.QuerierService/{method}",
                "/pyroscope/render",
                "/pyroscope/render-diff",
                "/pyroscope/label-values",
                "/pyroscope/labels",
                "/api/v1/sql",
                "/",
                "/ui/{asset}",
            ],
            Family::Settings => &["/settings.v1.SettingsService/{method}"],
            Family::Admin => &[
                "/api/v1/admin/tsdb/delete_series",
                "/api/v1/admin/tsdb/clean_tombstones",
            ],
            Family::Tokens => &["/api/v1/admin/tokens", "/api/v1/admin/tokens/{id}"],
        }
    }
}

impl ApiRouter {
    /// The families every process serves: what it is (version, feature flags, build info).
    pub fn new(rules: RequestRules) -> Self {
        Self {
            router: routes::info::routes(rules.clone()),
            rules,
            served: Vec::new(),
            roles: vec!["all".to_owned()],
        }
    }

    /// The roles this process runs (`--target`), named when a request reaches a process that
    /// lacks the role serving it.
    pub fn for_roles(mut self, roles: Vec<String>) -> Self {
        self.roles = roles;
        self
    }

    /// The ingester's own RPC (the distributor's writes from other processes).
    pub fn with_ingester(mut self, ingester: Arc<dyn IngesterClient>) -> Self {
        let api = routes::ingester::IngesterApi {
            rules: self.rules.clone(),
            ingester,
        };
        self.router = self.router.merge(routes::ingester::routes(api));
        self
    }

    /// A gRPC service of another library (the ingester's Arrow Flight head service), routed
    /// by its fully qualified name.
    pub fn with_grpc_service<S>(mut self, name: &str, service: S) -> Self
    where
        S: tower_service::Service<Request<Body>, Error = std::convert::Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: IntoResponse,
        S::Future: Send + 'static,
    {
        self.router = self
            .router
            .route_service(&format!("/{name}/{{*method}}"), service);
        self
    }

    /// The ring pages (`/ring`, `/<role>/ring`), read from the catalog's membership.
    pub fn with_ring(mut self, catalog: Arc<dyn Catalog>, heartbeat_timeout: Duration) -> Self {
        let api = routes::ring::RingApi {
            catalog,
            heartbeat_timeout,
        };
        self.router = self.router.merge(routes::ring::routes(api));
        self
    }

    /// The write APIs (Push, `/ingest`, OTLP), storing through `push`.
    pub fn with_push(mut self, push: Arc<dyn PushService>) -> Self {
        let api = routes::ingest::IngestApi {
            rules: self.rules.clone(),
            push,
        };
        self.router = self.router.merge(routes::ingest::routes(api));
        self.served.push(Family::Write);
        self
    }

    /// The read APIs (the querier API, SQL and the legacy `/pyroscope/*` reads), answered by
    /// `read`, and the web UI, their client.
    pub fn with_read(mut self, read: Arc<dyn ReadService>) -> Self {
        let api = Arc::new(ReadApi {
            rules: self.rules.clone(),
            read,
        });
        self.router = self
            .router
            .merge(routes::querier::routes(Arc::clone(&api)))
            .merge(routes::sql::routes(Arc::clone(&api)))
            .merge(routes::render::routes(api))
            .merge(routes::ui::routes(self.rules.clone()));
        self.served.push(Family::Read);
        self
    }

    /// Per-tenant settings, kept in `store`.
    pub fn with_settings(mut self, store: Arc<dyn Catalog>, limits: SettingsLimits) -> Self {
        let api = SettingsApi {
            rules: self.rules.clone(),
            store,
            limits,
        };
        self.router = self.router.merge(routes::settings::routes(api));
        self.served.push(Family::Settings);
        self
    }

    /// The access-token API, keeping tokens in `catalog`.
    pub fn with_tokens(mut self, catalog: Arc<dyn Catalog>) -> Self {
        let api = routes::tokens::TokensApi {
            rules: self.rules.clone(),
            catalog,
        };
        self.router = self.router.merge(routes::tokens::routes(api));
        self.served.push(Family::Tokens);
        self
    }

    /// The admin calls (deleting series), resolving selectors through `read`, recording
    /// tombstones in `catalog`, and cleaning them with `cleaner`.
    pub fn with_admin(
        mut self,
        read: Arc<dyn ReadService>,
        catalog: Arc<dyn Catalog>,
        cleaner: Arc<dyn TombstoneCleaner>,
    ) -> Self {
        let api = routes::admin::AdminApi {
            rules: self.rules.clone(),
            read,
            catalog,
            cleaner,
        };
        self.router = self.router.merge(routes::admin::routes(api));
        self.served.push(Family::Admin);
        self
    }

    /// The router: the families added, `/ready` and `/metrics`, every matched route counted
    /// in `metrics`, and an answer for every other path in the caller's protocol.
    pub fn build(self, ops: OpsApi, metrics: HttpMetrics) -> Router {
        let mut router = self.router.merge(routes::ops::routes(ops));
        let roles = self.roles.join(",");
        for family in Family::ALL {
            if self.served.contains(&family) {
                continue;
            }
            let message = format!(
                "this process runs --target={roles}; {} are served by the {role} role: send \
                 this request to a process started with --target={role} (or --target=all)",
                family.describe(),
                role = family.role(),
            );
            for path in family.paths() {
                let message = message.clone();
                router = router.route(
                    path,
                    axum::routing::any(move |headers: HeaderMap| async move {
                        elsewhere(&headers, message)
                    }),
                );
            }
        }
        if self.rules.auth.is_some() {
            router = router.layer(axum::middleware::map_response(challenge));
        }
        metrics
            .instrument(router)
            .fallback(fallback)
            // Bodies are limited where they are read, by `RequestRules`.
            .layer(DefaultBodyLimit::disable())
    }
}

/// With access control on, a 401 says how to authenticate, so a browser asks for the tenant
/// and token (the web UI behind auth) and clients learn the scheme.
async fn challenge(mut response: Response) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(
                "Basic realm=\"profusion: the tenant as user, a token as password\", charset=\"UTF-8\"",
            ),
        );
    }
    response
}

/// A request for a family another role serves: `unimplemented` in the caller's protocol.
fn elsewhere(headers: &HeaderMap, message: String) -> Response {
    let error = ApiError::new(Code::Unimplemented, message);
    match Protocol::detect(headers) {
        Some(protocol) => {
            rpc::respond::<profusion_proto::push::v1::PushResponse>(protocol, Err(error))
        }
        None => error.into_response(),
    }
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
