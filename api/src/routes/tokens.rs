//! The tenant's access tokens, for an admin token of that tenant (or anyone, with
//! `--auth.enabled` off, to prepare tokens before turning it on):
//!
//! - `GET /api/v1/admin/tokens`: the tenant's tokens, revoked ones included, without secrets;
//! - `POST /api/v1/admin/tokens` with `{"scopes": "read,write", "description": "..."}`: a new
//!   token, answered 201 with its secret (`token`), shown this once;
//! - `DELETE /api/v1/admin/tokens/{id}`: revokes it (200 with the token; 404 when the tenant
//!   has no such token).
//!
//! `profusion tokens create|list|revoke` does the same through the catalog directly, for any
//! tenant (the first admin token is made that way).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use http::{HeaderMap, StatusCode, header};
use profusion_catalog::{Catalog, TokenRecord};
use profusion_model::time::now_millis;
use serde::{Deserialize, Serialize};

use crate::auth::{Scope, Scopes, issue_token};
use crate::error::{ApiError, Code};
use crate::request::RequestRules;

/// What the token handlers share.
#[derive(Debug)]
pub struct TokensApi {
    pub rules: RequestRules,
    pub catalog: Arc<dyn Catalog>,
}

pub fn routes(api: TokensApi) -> Router {
    Router::new()
        .route("/api/v1/admin/tokens", get(list).post(create))
        .route("/api/v1/admin/tokens/{id}", delete(revoke))
        .with_state(Arc::new(api))
}

/// A token as listed: everything but the hash.
#[derive(Debug, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub tenant: String,
    pub scopes: String,
    pub description: String,
    pub created_at_millis: i64,
    pub revoked_at_millis: Option<i64>,
}

impl From<TokenRecord> for TokenInfo {
    fn from(r: TokenRecord) -> Self {
        Self {
            id: r.id,
            tenant: r.tenant,
            scopes: r.scopes,
            description: r.description,
            created_at_millis: r.created_at_millis,
            revoked_at_millis: r.revoked_at_millis,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    scopes: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Serialize)]
struct Created {
    /// The secret: shown once.
    token: String,
    #[serde(flatten)]
    info: TokenInfo,
}

/// Longest description kept with a token.
const MAX_DESCRIPTION_BYTES: usize = 256;

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::new(Code::Internal, e.to_string()).into_response(),
    }
}

impl TokensApi {
    /// Makes this process see a change at once (the others within their refresh interval).
    async fn refreshed(&self) {
        if let Some(auth) = &self.rules.auth
            && let Err(e) = auth.refresh().await
        {
            tracing::warn!(error = %e, "refreshing the access tokens after a change failed");
        }
    }
}

async fn list(State(api): State<Arc<TokensApi>>, headers: HeaderMap) -> Response {
    let listed = async {
        let tenant = api.rules.tenant(&headers, Scope::Admin)?;
        let tokens = api.catalog.tokens(Some(&tenant)).await?;
        Ok::<_, ApiError>(tokens.into_iter().map(TokenInfo::from).collect::<Vec<_>>())
    };
    match listed.await {
        Ok(tokens) => json(StatusCode::OK, &tokens),
        Err(e) => e.into_response(),
    }
}

async fn create(State(api): State<Arc<TokensApi>>, headers: HeaderMap, body: Body) -> Response {
    let created = async {
        let tenant = api.rules.tenant(&headers, Scope::Admin)?;
        let body = api.rules.read_body(body).await?;
        let request: CreateRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid(format!(
                "the body must be JSON {{\"scopes\": \"read,write\", \"description\": \"...\"}}: {e}"
            ))
        })?;
        let scopes = Scopes::parse(&request.scopes).map_err(ApiError::invalid)?;
        if request.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(ApiError::invalid(format!(
                "description: {} bytes, at most {MAX_DESCRIPTION_BYTES}",
                request.description.len()
            )));
        }
        let issued = issue_token(&tenant, scopes, &request.description, now_millis())
            .map_err(|e| ApiError::new(Code::Internal, e))?;
        api.catalog.create_token(&issued.record).await?;
        tracing::info!(tenant, token = %issued.record.id, scopes = %scopes, "created an access token");
        api.refreshed().await;
        Ok::<_, ApiError>(Created {
            token: issued.token,
            info: issued.record.into(),
        })
    };
    match created.await {
        Ok(created) => json(StatusCode::CREATED, &created),
        Err(e) => e.into_response(),
    }
}

async fn revoke(
    State(api): State<Arc<TokensApi>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let revoked = async {
        let tenant = api.rules.tenant(&headers, Scope::Admin)?;
        let token = api
            .catalog
            .revoke_token(&id, Some(&tenant), now_millis())
            .await?;
        let Some(token) = token else {
            return Ok(None);
        };
        tracing::info!(tenant, token = %id, "revoked an access token");
        api.refreshed().await;
        Ok::<_, ApiError>(Some(TokenInfo::from(token)))
    };
    match revoked.await {
        Ok(Some(token)) => json(StatusCode::OK, &token),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("no token {id:?} of this tenant\n"),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
