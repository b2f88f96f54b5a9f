//! What every handler applies to a request before a service sees it: who the request is for and
//! how much of its body is read, and how long the client may take to send it.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use profusion_model::tenant::TenantScope;

use crate::error::ApiError;

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
}

impl RequestRules {
    /// The one tenant a write or a per-tenant call belongs to.
    pub fn write_tenant(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        crate::tenant::write_tenant(headers, self.multitenancy_enabled)
    }

    /// The tenants a read covers.
    pub fn read_scope(&self, headers: &HeaderMap) -> Result<TenantScope, ApiError> {
        crate::tenant::read_scope(headers, self.multitenancy_enabled)
    }

    /// The body, within the limit and the deadline.
    pub async fn read_body(&self, body: Body) -> Result<Bytes, ApiError> {
        crate::rpc::read_body(body, self.body_limit_bytes, self.body_timeout).await
    }
}
