//! What UIs ask a server about itself: the querier API version (`version.v1`), feature flags
//! (`capabilities.v1`) and build information (`/api/v1/status/buildinfo`).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, header};
use profusion_proto::capabilities::v1::{
    FeatureFlag, GetFeatureFlagsRequest, GetFeatureFlagsResponse,
};
use profusion_proto::status::v1::{GetBuildInfoData, GetBuildInfoResponse};
use profusion_proto::version::v1::{VersionRequest, VersionResponse};

use crate::auth::Scope;
use crate::error::{ApiError, Code};
use crate::request::RequestRules;
use crate::rpc;

/// The querier API version this build speaks; Pyroscope's current one.
const QUERIER_API_VERSION: u64 = 1;

/// The routes describing this server.
pub fn routes(rules: RequestRules) -> Router {
    Router::new()
        .route("/version.v1.Version/{method}", post(version))
        .route(
            "/capabilities.v1.FeatureFlagsService/{method}",
            post(feature_flags_route),
        )
        .route("/api/v1/status/buildinfo", get(build_info))
        .with_state(Arc::new(rules))
}

/// `POST /version.v1.Version/Version`.
async fn version(
    State(rules): State<Arc<RequestRules>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != "Version" {
        return rpc::unimplemented(&headers, &format!("version.v1.Version/{method}"));
    }
    rpc::unary(
        &rules,
        Scope::Read,
        &headers,
        body,
        |_, _: VersionRequest| async {
            Ok(VersionResponse {
                querier_api: QUERIER_API_VERSION,
            })
        },
    )
    .await
}

/// What this build supports, for UIs that adapt to the server.
fn feature_flags() -> Vec<FeatureFlag> {
    let flag = |name: &str, enabled: bool, description: &str| FeatureFlag {
        name: name.into(),
        enabled,
        description: Some(description.into()),
        documentation_url: None,
    };
    vec![
        flag(
            "utf8LabelNames",
            true,
            "label names may hold any UTF-8 when quoted in selectors",
        ),
        flag(
            "spanSelector",
            true,
            "flame graphs can be narrowed to the samples of given spans",
        ),
        flag(
            "pprofFormat",
            true,
            "SelectMergeStacktraces answers in pprof and DOT besides flame graphs and trees",
        ),
        flag("heatmap", false, "SelectHeatmap is not served yet"),
        flag("asyncQueries", false, "queries always answer synchronously"),
    ]
}

/// `POST /capabilities.v1.FeatureFlagsService/GetFeatureFlags`.
async fn feature_flags_route(
    State(rules): State<Arc<RequestRules>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != "GetFeatureFlags" {
        return rpc::unimplemented(
            &headers,
            &format!("capabilities.v1.FeatureFlagsService/{method}"),
        );
    }
    rpc::unary(
        &rules,
        Scope::Read,
        &headers,
        body,
        |_, _: GetFeatureFlagsRequest| async {
            Ok(GetFeatureFlagsResponse {
                feature_flags: feature_flags(),
            })
        },
    )
    .await
}

/// `GET /api/v1/status/buildinfo`: JSON, as Pyroscope's grpc-gateway serves it.
async fn build_info() -> Response {
    let info = GetBuildInfoResponse {
        status: "success".into(),
        data: Some(GetBuildInfoData {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: option_env!("PROFUSION_REVISION")
                .unwrap_or("unknown")
                .into(),
            branch: option_env!("PROFUSION_BRANCH").unwrap_or("unknown").into(),
            build_user: option_env!("PROFUSION_BUILD_USER").unwrap_or("").into(),
            build_date: option_env!("PROFUSION_BUILD_DATE").unwrap_or("").into(),
            // Not a Go program; the field says what it is built with instead.
            go_version: "rust".into(),
        }),
    };
    match profusion_proto::to_json(&info) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            ApiError::new(Code::Internal, format!("encoding build info: {e}")).into_response()
        }
    }
}
