//! `querier.v1.QuerierService`: the read API Grafana's Pyroscope data source calls. Each
//! method decodes its request, calls the read service and encodes the answer; validation,
//! limits, splitting and fairness all live behind the service.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::HeaderMap;
use profusion_engine::service::ReadService;

use crate::rpc;
use crate::server::AppState;

/// `POST /querier.v1.QuerierService/{method}`.
pub(crate) async fn querier(
    State(state): State<Arc<AppState>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let read = state.read.as_ref();
    // One read-service method per RPC, in the RPC's own request and answer types.
    macro_rules! call {
        ($method:ident) => {
            rpc::unary_read(&state, &headers, body, |scope, req| async move {
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
