//! Tenant resolution: `X-Scope-OrgID` when multi-tenancy is on, `anonymous` otherwise.

use http::HeaderMap;

use profusion_model::tenant::{ANONYMOUS, TenantId, TenantIdError, TenantScope};

use crate::error::{ApiError, Code};

pub const TENANT_HEADER: &str = "x-scope-orgid";

/// The raw `X-Scope-OrgID` value; `unauthenticated` when it is missing.
fn org_id(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(TENANT_HEADER)
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthenticated,
                "no org id: the X-Scope-OrgID header is required",
            )
        })?
        .to_str()
        .map_err(|_| {
            ApiError::new(
                Code::Unauthenticated,
                "the X-Scope-OrgID header is not valid text",
            )
        })
}

/// The single tenant a write belongs to.
pub fn write_tenant(headers: &HeaderMap, multitenancy: bool) -> Result<String, ApiError> {
    if !multitenancy {
        return Ok(ANONYMOUS.to_owned());
    }
    let raw = org_id(headers)?;
    if raw.contains('|') {
        return Err(ApiError::invalid(format!(
            "tenant {raw:?}: a write must name exactly one tenant"
        )));
    }
    Ok(TenantId::new(raw).map_err(refused)?.into())
}

/// The tenants a read covers: `a|b` reads several at once, sorted and deduplicated, as
/// Pyroscope resolves cross-tenant queries.
pub fn read_scope(headers: &HeaderMap, multitenancy: bool) -> Result<TenantScope, ApiError> {
    if !multitenancy {
        return Ok(TenantScope::single(TenantId::anonymous()));
    }
    TenantScope::parse(org_id(headers)?).map_err(refused)
}

/// An invalid tenant id is an authentication failure, as in Pyroscope.
fn refused(e: TenantIdError) -> ApiError {
    ApiError::new(Code::Unauthenticated, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TENANT_HEADER, v.parse().unwrap());
        h
    }

    #[test]
    fn tenant_rules() {
        assert_eq!(write_tenant(&HeaderMap::new(), false).unwrap(), "anonymous");
        assert_eq!(
            write_tenant(&headers("team-a"), false).unwrap(),
            "anonymous"
        );
        assert_eq!(
            write_tenant(&headers("team-a_1.(x)"), true).unwrap(),
            "team-a_1.(x)"
        );
        assert_eq!(
            write_tenant(&HeaderMap::new(), true).unwrap_err().code,
            Code::Unauthenticated
        );
        for bad in ["..", ".", "a/b", "a b", &"x".repeat(151)] {
            assert!(write_tenant(&headers(bad), true).is_err(), "{bad}");
        }
        assert_eq!(
            write_tenant(&headers("a|b"), true).unwrap_err().code,
            Code::InvalidArgument
        );
    }
}
