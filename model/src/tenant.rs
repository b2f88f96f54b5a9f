//! Tenant ids and the scope of a read. A tenant id becomes an object-store path segment and a
//! catalog key, so it is checked once, where it enters, and carried as a [`TenantId`] after.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The tenant of every request when multi-tenancy is off.
pub const ANONYMOUS: &str = "anonymous";
/// Longest tenant id, as Pyroscope allows.
pub const MAX_TENANT_LENGTH: usize = 150;

/// A valid tenant id: at most 150 bytes of `[A-Za-z0-9!-_.*'()]`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

/// Why a tenant id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant id {id:?}: {reason}")]
pub struct TenantIdError {
    pub id: String,
    pub reason: String,
}

impl TenantId {
    /// Checks `id` as Pyroscope does.
    pub fn new(id: impl Into<String>) -> Result<Self, TenantIdError> {
        let id = id.into();
        let reason = if id.is_empty() {
            Some("it is empty".to_owned())
        } else if id.len() > MAX_TENANT_LENGTH {
            Some(format!("it is longer than {MAX_TENANT_LENGTH} bytes"))
        } else if id == "." || id == ".." {
            Some("it is a reserved name".to_owned())
        } else {
            id.chars()
                .find(|c| {
                    !(c.is_ascii_alphanumeric()
                        || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')'))
                })
                .map(|c| format!("character {c:?} is not allowed"))
        };
        match reason {
            Some(reason) => Err(TenantIdError { id, reason }),
            None => Ok(Self(id)),
        }
    }

    /// The tenant of single-tenant mode.
    pub fn anonymous() -> Self {
        Self(ANONYMOUS.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantIdError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> Self {
        t.0
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tenants one read covers: one, or several for a cross-tenant query (`a|b` in
/// `X-Scope-OrgID`). Sorted and without repeats, so equal scopes compare and queue equally.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TenantScope(Vec<TenantId>);

impl TenantScope {
    /// A scope of `tenants`, sorted and deduplicated; `None` when there are none.
    pub fn new(mut tenants: Vec<TenantId>) -> Option<Self> {
        tenants.sort();
        tenants.dedup();
        (!tenants.is_empty()).then_some(Self(tenants))
    }

    /// One tenant.
    pub fn single(tenant: TenantId) -> Self {
        Self(vec![tenant])
    }

    /// Parses `a|b|c`, each part a valid tenant id.
    pub fn parse(header: &str) -> Result<Self, TenantIdError> {
        let tenants = header
            .split('|')
            .map(TenantId::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(tenants).expect("split yields at least one part"))
    }

    pub fn tenants(&self) -> &[TenantId] {
        &self.0
    }

    /// The scope's key, `a|b`: its queue in the scheduler and its name in messages.
    pub fn key(&self) -> String {
        self.0
            .iter()
            .map(TenantId::as_str)
            .collect::<Vec<_>>()
            .join("|")
    }
}

impl fmt::Display for TenantScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_pyroscope_rules() {
        assert!(TenantId::new("team-a_1.(x)*").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a|b", &"x".repeat(151)] {
            assert!(TenantId::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TenantId::new("a b").unwrap_err().to_string(),
            "invalid tenant id \"a b\": character ' ' is not allowed"
        );
    }

    #[test]
    fn scopes_are_sorted_and_unique() {
        let scope = TenantScope::parse("b|a|b").unwrap();
        assert_eq!(scope.key(), "a|b");
        assert!(TenantScope::parse("a||b").is_err());
    }
}
