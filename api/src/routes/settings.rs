//! Per-tenant settings (`settings.v1`), which UIs keep next to the querier: stored in the
//! catalog, within limits on their names, values and number.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use http::HeaderMap;
use profusion_catalog::{Catalog, Setting};
use profusion_proto::settings::v1 as settings_v1;

use crate::auth::Scope;
use crate::error::ApiError;
use crate::request::RequestRules;
use crate::rpc;

/// How large settings may be and how many a tenant may keep.
#[derive(Debug, Clone)]
pub struct SettingsLimits {
    /// Longest name, in bytes (`--settings.max-name-length`).
    pub max_name_length: usize,
    /// Largest value, in bytes (`--settings.max-value-bytes`).
    pub max_value_bytes: usize,
    /// Most settings per tenant (`--settings.max-per-tenant`).
    pub max_per_tenant: usize,
}

/// What the settings handlers share.
#[derive(Debug)]
pub struct SettingsApi {
    pub rules: RequestRules,
    pub store: Arc<dyn Catalog>,
    pub limits: SettingsLimits,
}

/// The settings API's routes.
pub fn routes(api: SettingsApi) -> Router {
    Router::new()
        .route("/settings.v1.SettingsService/{method}", post(settings))
        .with_state(Arc::new(api))
}

fn to_wire(s: Setting) -> settings_v1::Setting {
    settings_v1::Setting {
        name: s.name,
        value: s.value,
        modified_at: s.modified_at_millis,
    }
}

/// `POST /settings.v1.SettingsService/{Get,Set,Delete}`.
async fn settings(
    State(api): State<Arc<SettingsApi>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let catalog = &api.store;
    let limits = &api.limits;
    match method.as_str() {
        "Get" => {
            rpc::unary(
                &api.rules,
                Scope::Read,
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
                &api.rules,
                Scope::Admin,
                &headers,
                body,
                |tenant, req: settings_v1::SetSettingsRequest| async move {
                    let Some(s) = req.setting else {
                        return Err(ApiError::invalid("setting is required"));
                    };
                    check_setting(limits, &s)?;
                    let stored = catalog
                        .set_setting(
                            &tenant,
                            &Setting {
                                name: s.name,
                                value: s.value,
                                modified_at_millis: s.modified_at,
                            },
                            limits.max_per_tenant,
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
                &api.rules,
                Scope::Admin,
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
fn check_setting(limits: &SettingsLimits, s: &settings_v1::Setting) -> Result<(), ApiError> {
    if s.name.is_empty() {
        return Err(ApiError::invalid("setting name must not be empty"));
    }
    if s.name.len() > limits.max_name_length {
        return Err(ApiError::invalid(format!(
            "setting name {:?} is {} bytes long, more than the limit of {} (--settings.max-name-length)",
            profusion_model::labels::clip(&s.name, 64),
            s.name.len(),
            limits.max_name_length
        )));
    }
    if s.value.len() > limits.max_value_bytes {
        return Err(ApiError::invalid(format!(
            "value of setting {:?} is {} bytes long, more than the limit of {} (--settings.max-value-bytes)",
            profusion_model::labels::clip(&s.name, 64),
            s.value.len(),
            limits.max_value_bytes
        )));
    }
    Ok(())
}
