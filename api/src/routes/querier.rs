//! `querier.v1.QuerierService`: the read API Grafana's Pyroscope data source calls. Each
//! method decodes its request, calls the read service and encodes the answer; validation,
//! limits, splitting and fairness all live behind the service.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use http::HeaderMap;

use super::ReadApi;
use crate::rpc;

/// The querier API's routes.
pub fn routes(api: Arc<ReadApi>) -> Router {
    Router::new()
        .route("/querier.v1.QuerierService/{method}", post(querier))
        .with_state(api)
}

/// `POST /querier.v1.QuerierService/{method}`.
async fn querier(
    State(api): State<Arc<ReadApi>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let read = api.read.as_ref();
    // One read-service method per RPC, in the RPC's own request and answer types.
    macro_rules! call {
        ($method:ident) => {
            rpc::unary_read(&api.rules, &headers, body, |scope, req| async move {
                let ctx = read.context(scope);
                Ok(read.$method(&ctx, req).await?)
            })
            .await
        };
    }
    match method.as_str() {
        "ProfileTypes" => call!(profile_types),
        "LabelNames" => call!(label_names),
        "LabelValues" => call!(label_values),
        "Series" => call!(series),
        "SelectMergeStacktraces" => call!(select_merge_stacktraces),
        "SelectSeries" => call!(select_series),
        "SelectMergeSpanProfile" => call!(select_merge_span_profile),
        "SelectMergeProfile" => call!(select_merge_profile),
        "AnalyzeQuery" => call!(analyze_query),
        "Diff" => call!(diff),
        "GetProfileStats" => call!(get_profile_stats),
        _ => rpc::unimplemented(&headers, &format!("querier.v1.QuerierService/{method}")),
    }
}
