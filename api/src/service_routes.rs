//! The side services UIs call next to the querier: per-tenant settings (`settings.v1`, kept in
//! the catalog), the querier API version (`version.v1`), feature flags (`capabilities.v1`) and
//! build information (`/api/v1/status/buildinfo`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};
use profusion_catalog::Setting;
use profusion_proto::capabilities::v1::{
    FeatureFlag, GetFeatureFlagsRequest, GetFeatureFlagsResponse,
};
use profusion_proto::settings::v1 as settings_v1;
use profusion_proto::status::v1::{GetBuildInfoData, GetBuildInfoResponse};
use profusion_proto::version::v1::{VersionRequest, VersionResponse};

use crate::error::{ApiError, Code};
use crate::rpc;
use crate::server::AppState;

/// The querier API version this build speaks; Pyroscope's current one.
const QUERIER_API_VERSION: u64 = 1;

fn to_wire(s: Setting) -> settings_v1::Setting {
    settings_v1::Setting {
        name: s.name,
        value: s.value,
        modified_at: s.modified_at_millis,
    }
}

/// `POST /settings.v1.SettingsService/{Get,Set,Delete}`.
pub(crate) async fn settings(
    State(state): State<Arc<AppState>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let catalog = &state.catalog;
    let config = &state.config;
    match method.as_str() {
        "Get" => {
            rpc::unary(
                &state,
                &headers,
                body,
                |tenant, _: settings_v1::GetSettingsRequest| async move {
                    let settings = catalog.settings(&tenant).await?;
                    Ok(settings_v1::GetSettingsResponse {
                        settings: settings.into_iter().map(to_wire).collect(),
                    })
                },
            )
            .await
        }
        "Set" => {
            rpc::unary(
                &state,
                &headers,
                body,
                |tenant, req: settings_v1::SetSettingsRequest| async move {
                    let Some(s) = req.setting else {
                        return Err(ApiError::invalid("setting is required"));
                    };
                    check_setting(config, &s)?;
                    let stored = catalog
                        .set_setting(
                            &tenant,
                            &Setting {
                                name: s.name,
                                value: s.value,
                                modified_at_millis: s.modified_at,
                            },
                            config.settings_max_per_tenant,
                        )
                        .await?;
                    Ok(settings_v1::SetSettingsResponse {
                        setting: Some(to_wire(stored)),
                    })
                },
            )
            .await
        }
        "Delete" => {
            rpc::unary(
                &state,
                &headers,
                body,
                |tenant, req: settings_v1::DeleteSettingsRequest| async move {
                    if req.name.is_empty() {
                        return Err(ApiError::invalid("setting name must not be empty"));
                    }
                    catalog.delete_setting(&tenant, &req.name).await?;
                    Ok(settings_v1::DeleteSettingsResponse {})
                },
            )
            .await
        }
        _ => rpc::unimplemented(&headers, &format!("settings.v1.SettingsService/{method}")),
    }
}

/// A setting's name and value within their limits.
fn check_setting(config: &crate::config::Config, s: &settings_v1::Setting) -> Result<(), ApiError> {
    if s.name.is_empty() {
        return Err(ApiError::invalid("setting name must not be empty"));
    }
    if s.name.len() > config.settings_max_name_length {
        return Err(ApiError::invalid(format!(
            "setting name {:?} is {} bytes long, more than the limit of {} (--settings.max-name-length)",
            profusion_model::labels::clip(&s.name, 64),
            s.name.len(),
            config.settings_max_name_length
        )));
    }
    if s.value.len() > config.settings_max_value_bytes {
        return Err(ApiError::invalid(format!(
            "value of setting {:?} is {} bytes long, more than the limit of {} (--settings.max-value-bytes)",
            profusion_model::labels::clip(&s.name, 64),
            s.value.len(),
            config.settings_max_value_bytes
        )));
    }
    Ok(())
}

/// `POST /version.v1.Version/Version`.
pub(crate) async fn version(
    State(state): State<Arc<AppState>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != "Version" {
        return rpc::unimplemented(&headers, &format!("version.v1.Version/{method}"));
    }
    rpc::unary(&state, &headers, body, |_, _: VersionRequest| async {
        Ok(VersionResponse {
            querier_api: QUERIER_API_VERSION,
        })
    })
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
pub(crate) async fn feature_flags_route(
    State(state): State<Arc<AppState>>,
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
        &state,
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
pub(crate) async fn build_info() -> Response {
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
