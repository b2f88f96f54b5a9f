//! What every handler applies to a request before a service sees it: who the request is for and
//! how much of its body is read, and how long the client may take to send it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use profusion_model::tenant::{TenantId, TenantScope};

use crate::auth::{Authenticator, Requested, Scope};
use crate::error::ApiError;
use crate::tenant::TENANT_HEADER;

/// The rules of tenancy and bodies, the same for every API family on a port.
#[derive(Debug, Clone)]
pub struct RequestRules {
    /// Require `X-Scope-OrgID` and keep tenants apart; when off, every request belongs to
    /// tenant `anonymous`.
    pub multitenancy_enabled: bool,
    /// Largest request body read, before decompression (and the largest after it).
    pub body_limit_bytes: usize,
    /// Deadline for receiving a body once its handler starts reading it (`None`: none).
    pub body_timeout: Option<Duration>,
    /// Access control (`--auth.enabled`): every tenant resolution also checks the request's
    /// token against the tenant and the scope its API needs. `None`: anyone may call.
    pub auth: Option<Arc<Authenticator>>,
}

impl RequestRules {
    /// The one tenant a write or a per-tenant call belongs to, allowed to do what `need`
    /// names.
    pub fn tenant(&self, headers: &HeaderMap, need: Scope) -> Result<String, ApiError> {
        let resolved = crate::tenant::write_tenant(headers, self.multitenancy_enabled);
        let Some(auth) = &self.auth else {
            return resolved;
        };
        match resolved {
            Ok(tenant) => auth
                .authorize(headers, Requested::Tenants(&[&tenant]), need)
                .map(|_| tenant),
            Err(e) => self.unresolved_tenant(auth, headers, need, e),
        }
    }

    /// The tenants a read covers.
    pub fn read_scope(&self, headers: &HeaderMap) -> Result<TenantScope, ApiError> {
        let resolved = crate::tenant::read_scope(headers, self.multitenancy_enabled);
        let Some(auth) = &self.auth else {
            return resolved;
        };
        match resolved {
            Ok(scope) => {
                let tenants: Vec<&str> = scope.tenants().iter().map(TenantId::as_str).collect();
                auth.authorize(headers, Requested::Tenants(&tenants), Scope::Read)
                    .map(|_| scope)
            }
            Err(e) => {
                let tenant = self.unresolved_tenant(auth, headers, Scope::Read, e)?;
                Ok(TenantScope::single(TenantId::new(tenant).map_err(|e| {
                    ApiError::new(crate::error::Code::Internal, e.to_string())
                })?))
            }
        }
    }

    /// Checks the credentials alone, for what belongs to no tenant (the web UI's page): any
    /// tenant's token with `need`; anyone when access control is off.
    pub fn authenticate(&self, headers: &HeaderMap, need: Scope) -> Result<(), ApiError> {
        match &self.auth {
            Some(auth) => auth
                .authorize(headers, Requested::TokenTenant, need)
                .map(|_| ()),
            None => Ok(()),
        }
    }

    /// A request whose tenant could not be resolved: with a token and no `X-Scope-OrgID`, the
    /// token's tenant (agents and Grafana send credentials alone); else the credentials are
    /// checked first, so a request without them is refused (and counted) as such, then the
    /// tenant's error stands.
    fn unresolved_tenant(
        &self,
        auth: &Authenticator,
        headers: &HeaderMap,
        need: Scope,
        error: ApiError,
    ) -> Result<String, ApiError> {
        let tenant = auth.authorize(headers, Requested::TokenTenant, need)?;
        if self.multitenancy_enabled && !headers.contains_key(TENANT_HEADER) {
            Ok(tenant)
        } else {
            Err(error)
        }
    }

    /// The body, within the limit and the deadline.
    pub async fn read_body(&self, body: Body) -> Result<Bytes, ApiError> {
        crate::rpc::read_body(body, self.body_limit_bytes, self.body_timeout).await
    }
}
