//! The ingester's API in a cluster: `ingester.v1.IngesterService/Write`, the hop a distributor
//! in another process stores a series' profiles with, and `Flush`, which a deletion's cleaning
//! calls before it rewrites blocks. The tenant travels in the message, which
//! a distributor built from a request it already authenticated.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use http::HeaderMap;
use profusion_ingest::ingester::IngesterClient;
use profusion_proto::ingester::v1::{FlushRequest, FlushResponse, WriteRequest, WriteResponse};

use crate::request::RequestRules;
use crate::rpc;

/// Largest write a distributor sends. Its profiles were already decoded within the public body
/// limits; their series form can be several times the compressed pprof they came from.
const MAX_WRITE_BYTES: usize = 512 << 20;

/// What the ingester's handlers share.
#[derive(Debug)]
pub struct IngesterApi {
    pub rules: RequestRules,
    pub ingester: Arc<dyn IngesterClient>,
}

/// The ingester's routes.
pub fn routes(api: IngesterApi) -> Router {
    Router::new()
        .route("/ingester.v1.IngesterService/Write", post(write))
        .route("/ingester.v1.IngesterService/Flush", post(flush))
        .with_state(Arc::new(api))
}

async fn write(State(api): State<Arc<IngesterApi>>, headers: HeaderMap, body: Body) -> Response {
    let rules = RequestRules {
        body_limit_bytes: MAX_WRITE_BYTES,
        ..api.rules.clone()
    };
    rpc::unary_as(
        &rules,
        &headers,
        body,
        |_| Ok(()),
        |(), request: WriteRequest| async move {
            if request.tenant.is_empty() {
                return Err(crate::error::ApiError::invalid(
                    "ingester.v1.WriteRequest has no tenant",
                ));
            }
            api.ingester.write(request).await?;
            Ok(WriteResponse {})
        },
    )
    .await
}

async fn flush(State(api): State<Arc<IngesterApi>>, headers: HeaderMap, body: Body) -> Response {
    let ingester = Arc::clone(&api.ingester);
    rpc::unary_as(
        &api.rules,
        &headers,
        body,
        |_| Ok(()),
        |(), _: FlushRequest| async move {
            ingester.flush().await?;
            Ok(FlushResponse {})
        },
    )
    .await
}
