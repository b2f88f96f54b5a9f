//! Access control (`--auth.enabled`): who is asking, for which tenant, with which rights.
//!
//! A token belongs to one tenant and carries scopes (`read`, `write`, `admin`, each needed on
//! its own: an admin token does not push unless it also has `write`). It arrives as
//! `Authorization: Bearer <token>`, or as HTTP Basic with the tenant as user and the token as
//! password (what Grafana's data source and the agents send), or as the same `authorization`
//! metadata on gRPC (Flight SQL).
//!
//! The catalog keeps each token's SHA-256 hash, never the token. Every process that serves
//! requests holds the catalog's tokens in memory ([`Authenticator`]) and reloads them every
//! `--auth.refresh-interval`, so a token created or revoked anywhere in a cluster takes effect
//! everywhere within that interval, and checking a request costs one hash and one lookup, with
//! no catalog round trip. Tokens are 256 random bits: a plain hash is as strong as a slow one
//! here, because nobody can guess the input.
//!
//! Every decision is made in [`Authenticator::authorize`], called by the tenant resolution of
//! [`crate::RequestRules`], which every handler goes through; refusals are counted in
//! `profusion_auth_failures_total{reason}` and logged with the token's id, never its secret.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use http::HeaderMap;
use profusion_catalog::{Catalog, CatalogError, TokenRecord};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Code};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Queries: the querier API, render, labels, SQL, Flight SQL, reading settings.
    Read,
    /// Ingest: Push, `/ingest`, OTLP.
    Write,
    /// Deleting series, changing settings, managing the tenant's tokens.
    Admin,
}

impl Scope {
    const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes, written `read,write,admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Parses a comma-separated list; at least one scope, each known.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut scopes = Scopes::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let scope = Scope::ALL
                .into_iter()
                .find(|s| s.as_str() == part)
                .ok_or_else(|| {
                    format!("unknown scope {part:?}: the scopes are read, write and admin")
                })?;
            scopes.0 |= scope.bit();
        }
        if scopes.0 == 0 {
            return Err("no scope: name at least one of read, write and admin".to_owned());
        }
        Ok(scopes)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// What every token starts with, so a leaked one is recognisable (secret scanners, logs).
const TOKEN_PREFIX: &str = "pfs_";
/// Random bytes of a token's id (public) and of its secret.
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// A token just created: the only moment its secret exists outside the client.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// `pfs_<id>_<secret>`, to hand to the client once.
    pub token: String,
    /// What the catalog keeps.
    pub record: TokenRecord,
}

/// Creates a token of `tenant` with `scopes` (not yet stored).
pub fn issue_token(
    tenant: &str,
    scopes: Scopes,
    description: &str,
    now_millis: i64,
) -> Result<IssuedToken, String> {
    profusion_model::tenant::TenantId::new(tenant).map_err(|e| e.to_string())?;
    let mut random = [0u8; ID_BYTES + SECRET_BYTES];
    getrandom::fill(&mut random).map_err(|e| format!("the OS random source failed: {e}"))?;
    let id = hex(&random[..ID_BYTES]);
    let token = format!("{TOKEN_PREFIX}{id}_{}", hex(&random[ID_BYTES..]));
    Ok(IssuedToken {
        record: TokenRecord {
            id,
            tenant: tenant.to_owned(),
            scopes: scopes.to_string(),
            secret_hash: token_hash(&token),
            description: description.to_owned(),
            created_at_millis: now_millis,
            revoked_at_millis: None,
        },
        token,
    })
}

/// The hash the catalog keeps of a token: SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The id part of a token shaped like ours, for logs; never the secret.
fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == ID_BYTES * 2 && secret.len() == SECRET_BYTES * 2).then_some(id)
}

/// The credentials of a request.
struct Credentials {
    token: String,
    /// The tenant named as HTTP Basic's user.
    user: Option<String>,
}

/// Why a request was refused: the label of the failure counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Reason {
    /// No `Authorization` header.
    missing,
    /// An `Authorization` header of another scheme or unreadable.
    malformed,
    /// A token the catalog does not know.
    unknown,
    revoked,
    /// A valid token used for another tenant.
    wrong_tenant,
    /// A valid token without the scope the API needs.
    scope,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    reason: Reason,
}

/// One token as the server checks it.
#[derive(Debug)]
struct KnownToken {
    id: String,
    tenant: String,
    scopes: Scopes,
    revoked: bool,
}

/// The tenants a request asks for, as the tenancy rules resolved them.
#[derive(Debug)]
pub enum Requested<'a> {
    /// None named (no `X-Scope-OrgID` with multi-tenancy on, or a call that belongs to no
    /// tenant, such as the web UI's page): the token's own.
    TokenTenant,
    /// These tenants: the header's, or `anonymous` when multi-tenancy is off.
    Tenants(&'a [&'a str]),
}

/// The process's view of the catalog's tokens, and the one place requests are allowed or
/// refused.
pub struct Authenticator {
    catalog: Arc<dyn Catalog>,
    /// By hash; replaced whole on each refresh.
    tokens: RwLock<HashMap<String, Arc<KnownToken>>>,
    multitenancy: bool,
    failures: Family<FailureLabels, Counter>,
    known: Gauge,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.read().map(|t| t.len()).unwrap_or(0))
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads the catalog's tokens and registers the metrics. Fails when the catalog cannot be
    /// read: a server must not start refusing every request.
    pub async fn load(
        catalog: Arc<dyn Catalog>,
        multitenancy: bool,
        registry: &mut Registry,
    ) -> Result<Arc<Self>, CatalogError> {
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "profusion_auth_failures",
            "Requests refused by access control, by reason (missing, malformed, unknown, \
             revoked, wrong_tenant, scope)",
            failures.clone(),
        );
        let known = Gauge::default();
        registry.register(
            "profusion_auth_tokens",
            "Valid (unrevoked) access tokens this process knows",
            known.clone(),
        );
        let auth = Arc::new(Self {
            catalog,
            tokens: RwLock::default(),
            multitenancy,
            failures,
            known,
        });
        auth.refresh().await?;
        Ok(auth)
    }

    /// Reloads every token from the catalog.
    pub async fn refresh(&self) -> Result<(), CatalogError> {
        let records = self.catalog.tokens(None).await?;
        let mut tokens = HashMap::with_capacity(records.len());
        for r in records {
            let scopes = match Scopes::parse(&r.scopes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(token = %r.id, error = %e, "ignoring a token with unreadable scopes");
                    continue;
                }
            };
            let known = KnownToken {
                id: r.id,
                tenant: r.tenant,
                scopes,
                revoked: r.revoked_at_millis.is_some(),
            };
            tokens.insert(r.secret_hash, Arc::new(known));
        }
        let valid = tokens.values().filter(|t| !t.revoked).count();
        self.known.set(i64::try_from(valid).unwrap_or(i64::MAX));
        *self.tokens.write().expect("token table lock") = tokens;
        Ok(())
    }

    /// Refreshes every `interval` until the process ends; a failed refresh keeps the tokens
    /// known so far (a catalog outage must not lock everyone out) and is retried.
    pub fn spawn_refresh(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let auth = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = auth.refresh().await {
                    tracing::warn!(error = %e, "refreshing the access tokens failed; keeping the ones known");
                }
            }
        })
    }

    /// Allows the request or says why not. Returns the token's tenant (the tenant of a request
    /// that named none).
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        requested: Requested<'_>,
        need: Scope,
    ) -> Result<String, ApiError> {
        let credentials = match credentials(headers) {
            Ok(c) => c,
            Err((reason, message)) => return Err(self.refuse(reason, None, message)),
        };
        let token = self
            .tokens
            .read()
            .expect("token table lock")
            .get(&token_hash(&credentials.token))
            .cloned();
        let Some(token) = token else {
            return Err(self.refuse(
                Reason::unknown,
                token_id(&credentials.token),
                "invalid token: it is not one this server issued".to_owned(),
            ));
        };
        let id = Some(token.id.as_str());
        if token.revoked {
            return Err(self.refuse(
                Reason::revoked,
                id,
                format!("token {} was revoked", token.id),
            ));
        }
        let other_tenant = |asked: &str| {
            let hint = if self.multitenancy {
                String::new()
            } else {
                " (multi-tenancy is off, so every request is tenant \"anonymous\")".to_owned()
            };
            format!(
                "token {} belongs to tenant {:?}, not {asked:?}{hint}",
                token.id, token.tenant
            )
        };
        if let Some(user) = credentials.user.filter(|u| *u != token.tenant) {
            return Err(self.refuse(Reason::wrong_tenant, id, other_tenant(&user)));
        }
        if let Requested::Tenants(tenants) = requested
            && let Some(asked) = tenants.iter().find(|t| **t != token.tenant)
        {
            return Err(self.refuse(Reason::wrong_tenant, id, other_tenant(asked)));
        }
        if !token.scopes.contains(need) {
            return Err(self.refuse(
                Reason::scope,
                id,
                format!(
                    "token {} has scopes {}; this API needs {need}",
                    token.id, token.scopes
                ),
            ));
        }
        Ok(token.tenant.clone())
    }

    fn refuse(&self, reason: Reason, token: Option<&str>, message: String) -> ApiError {
        self.failures.get_or_create(&FailureLabels { reason }).inc();
        tracing::info!(?reason, token = token.unwrap_or("-"), %message, "request refused by access control");
        let code = match reason {
            Reason::missing | Reason::malformed | Reason::unknown | Reason::revoked => {
                Code::Unauthenticated
            }
            Reason::wrong_tenant | Reason::scope => Code::PermissionDenied,
        };
        ApiError::new(code, message)
    }
}

/// The fuzz target's entry (`fuzz/fuzz_targets/authorization.rs`): `bytes` as an
/// `Authorization` header, parsed as every request's is. It must not panic, and a token it
/// finds is never empty.
#[doc(hidden)]
pub fn fuzz_authorization(bytes: &[u8]) {
    let Ok(value) = http::HeaderValue::from_bytes(bytes) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    match credentials(&headers) {
        Ok(c) => assert!(!c.token.is_empty()),
        Err((reason, message)) => assert!(reason != Reason::missing && !message.is_empty()),
    }
}

/// Base64 of HTTP Basic credentials, padded or not: Arrow Flight's Go client (ADBC) leaves
/// the padding out.
const BASIC_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The token a request presents (Bearer, or Basic's password), unchecked.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    credentials(headers).ok().map(|c| c.token)
}

/// The token of a request: Bearer, or Basic's password.
fn credentials(headers: &HeaderMap) -> Result<Credentials, (Reason, String)> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err((
            Reason::missing,
            "no credentials: send Authorization: Bearer <token>, or HTTP Basic with the \
             tenant as user and the token as password"
                .to_owned(),
        ));
    };
    let malformed = |why: &str| (Reason::malformed, format!("the Authorization header {why}"));
    let value = value
        .to_str()
        .map_err(|_| malformed("is not valid text"))?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Credentials {
            token: rest.to_owned(),
            user: None,
        });
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASIC_BASE64
            .decode(rest)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| {
                malformed("has Basic credentials that are not base64 of user:password")
            })?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| malformed("has Basic credentials without a ':'"))?;
        if password.is_empty() {
            return Err(malformed(
                "has Basic credentials without a password: send the token as the password",
            ));
        }
        return Ok(Credentials {
            token: password.to_owned(),
            user: (!user.is_empty()).then(|| user.to_owned()),
        });
    }
    Err(malformed(
        "is neither \"Bearer <token>\" nor HTTP Basic (tenant as user, token as password)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print() {
        let s = Scopes::parse("admin, read").unwrap();
        assert!(s.contains(Scope::Read) && s.contains(Scope::Admin) && !s.contains(Scope::Write));
        assert_eq!(s.to_string(), "read,admin");
        assert!(Scopes::parse("").unwrap_err().contains("no scope"));
        assert!(Scopes::parse("read,root").unwrap_err().contains("\"root\""));
    }

    #[test]
    fn tokens_are_random_and_stored_as_their_sha256() {
        // SHA-256 of "abc", as FIPS 180-2 gives it.
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let a = issue_token("team-a", Scopes::parse("read").unwrap(), "d", 7).unwrap();
        let b = issue_token("team-a", Scopes::parse("read").unwrap(), "d", 7).unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(token_id(&a.token), Some(a.record.id.as_str()));
        assert_eq!(a.record.secret_hash, token_hash(&a.token));
        assert!(!a.record.secret_hash.contains(&a.token[4 + 13..]));
        assert!(issue_token("a/b", Scopes::parse("read").unwrap(), "", 0).is_err());
    }

    #[test]
    fn credentials_from_bearer_and_basic_padded_or_not() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        let c = credentials(&with("Bearer  pfs_x ")).unwrap();
        assert_eq!((c.token.as_str(), c.user), ("pfs_x", None));
        // "team-a:tok" padded, and without its padding.
        for basic in ["Basic dGVhbS1hOnRvaw==", "basic dGVhbS1hOnRvaw"] {
            let c = credentials(&with(basic)).unwrap();
            assert_eq!(
                (c.token.as_str(), c.user.as_deref()),
                ("tok", Some("team-a"))
            );
        }
        for (bad, reason) in [
            ("Token x", Reason::malformed),
            ("Bearer", Reason::malformed),
            ("Basic !!!", Reason::malformed),
            ("Basic dGVhbS1h", Reason::malformed),
            // "team-a:", no token.
            ("Basic dGVhbS1hOg==", Reason::malformed),
        ] {
            assert_eq!(
                credentials(&with(bad)).err().map(|e| e.0),
                Some(reason),
                "{bad}"
            );
        }
        assert_eq!(
            credentials(&HeaderMap::new()).err().map(|e| e.0),
            Some(Reason::missing)
        );
    }
}
