//! The router of one port, built from the services a process runs: each role adds the API
//! families it serves, so a process with no read service routes no read endpoint.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use profusion_catalog::Catalog;
use profusion_engine::service::ReadService;
use profusion_ingest::distributor::PushService;

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
}

impl ApiRouter {
    /// The families every process serves: what it is (version, feature flags, build info).
    pub fn new(rules: RequestRules) -> Self {
        Self {
            router: routes::info::routes(rules.clone()),
            rules,
        }
    }

    /// The write APIs (Push, `/ingest`, OTLP), storing through `push`.
    pub fn with_push(mut self, push: Arc<dyn PushService>) -> Self {
        let api = routes::ingest::IngestApi {
            rules: self.rules.clone(),
            push,
        };
        self.router = self.router.merge(routes::ingest::routes(api));
        self
    }

    /// The read APIs (the querier API and the legacy `/pyroscope/*` reads), answered by `read`.
    pub fn with_read(mut self, read: Arc<dyn ReadService>) -> Self {
        let api = Arc::new(ReadApi {
            rules: self.rules.clone(),
            read,
        });
        self.router = self
            .router
            .merge(routes::querier::routes(Arc::clone(&api)))
            .merge(routes::render::routes(api));
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
        self
    }

    /// The router: the families added, `/ready` and `/metrics`, every matched route counted
    /// in `metrics`, and an answer for every other path in the caller's protocol.
    pub fn build(self, ops: OpsApi, metrics: HttpMetrics) -> Router {
        let router = self.router.merge(routes::ops::routes(ops));
        metrics
            .instrument(router)
            .fallback(fallback)
            // Bodies are limited where they are read, by `RequestRules`.
            .layer(DefaultBodyLimit::disable())
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
