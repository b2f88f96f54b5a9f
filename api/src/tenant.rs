//! Tenant resolution: `X-Scope-OrgID` when multi-tenancy is on, `anonymous` otherwise.

use http::HeaderMap;

use crate::error::{ApiError, Code};

pub const TENANT_HEADER: &str = "x-scope-orgid";
pub const ANONYMOUS: &str = "anonymous";
const MAX_TENANT_LENGTH: usize = 150;

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
    validate(raw)?;
    Ok(raw.to_owned())
}

/// The tenants a read covers: `a|b` reads several at once, sorted and deduplicated, as
/// Pyroscope resolves cross-tenant queries.
pub fn read_tenants(headers: &HeaderMap, multitenancy: bool) -> Result<Vec<String>, ApiError> {
    if !multitenancy {
        return Ok(vec![ANONYMOUS.to_owned()]);
    }
    let mut tenants: Vec<String> = org_id(headers)?
        .split('|')
        .map(|t| validate(t).map(|()| t.to_owned()))
        .collect::<Result<_, _>>()?;
    tenants.sort();
    tenants.dedup();
    Ok(tenants)
}

/// Checks a tenant id as Pyroscope does: at most 150 bytes of `[A-Za-z0-9!-_.*'()]`, and not
/// `.` or `..` (ids become object-store path segments).
pub fn validate(tenant: &str) -> Result<(), ApiError> {
    let err = |why: String| {
        Err(ApiError::new(
            Code::Unauthenticated,
            format!("invalid tenant id {tenant:?}: {why}"),
        ))
    };
    if tenant.is_empty() {
        return err("it is empty".into());
    }
    if tenant.len() > MAX_TENANT_LENGTH {
        return err(format!("it is longer than {MAX_TENANT_LENGTH} bytes"));
    }
    if tenant == "." || tenant == ".." {
        return err("it is a reserved name".into());
    }
    if let Some(c) = tenant.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')'))
    }) {
        return err(format!("character {c:?} is not allowed"));
    }
    Ok(())
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
