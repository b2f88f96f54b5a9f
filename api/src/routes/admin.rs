//! Admin calls operators know from Prometheus: `POST /api/v1/admin/tsdb/delete_series` hides
//! the matching series' profiles in a range from every answer as soon as it returns (a
//! tombstone in the catalog, applied at planning and scan) and the compactor removes them from
//! the blocks it writes; `POST /api/v1/admin/tsdb/clean_tombstones` does that now.
//!
//! Parameters come from the query string or a form body, as in Prometheus: `match[]` (one or
//! more series selectors), `start` and `end` (RFC 3339 or Unix seconds; the beginning and end
//! of time when absent). Both answer 204; a bad parameter is a 400 naming it.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode, header};
use profusion_catalog::Catalog;
use profusion_engine::service::ReadService;
use profusion_model::labels;
use profusion_model::tenant::{TenantId, TenantScope};
use profusion_model::time::{TimeRange, now_millis};
use profusion_model::tombstone::Tombstone;

use crate::auth::Scope;
use crate::error::ApiError;
use crate::request::RequestRules;

/// Applies a tenant's tombstones to its stored data now: flushes what ingesters hold, then
/// rewrites every block that may hold deleted profiles.
#[async_trait]
pub trait TombstoneCleaner: Send + Sync + Debug {
    async fn clean(&self, tenant: &str) -> Result<(), ApiError>;
}

/// What the admin handlers share.
#[derive(Debug)]
pub struct AdminApi {
    pub rules: RequestRules,
    /// Resolves selectors to the series a deletion names.
    pub read: Arc<dyn ReadService>,
    pub catalog: Arc<dyn Catalog>,
    pub cleaner: Arc<dyn TombstoneCleaner>,
}

/// The admin routes.
pub fn routes(api: AdminApi) -> Router {
    Router::new()
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(delete_series).put(delete_series),
        )
        .route(
            "/api/v1/admin/tsdb/clean_tombstones",
            post(clean_tombstones).put(clean_tombstones),
        )
        .with_state(Arc::new(api))
}

/// The parameters of a deletion.
#[derive(Debug, PartialEq)]
struct DeleteParams {
    selectors: Vec<String>,
    range: TimeRange,
}

impl DeleteParams {
    /// From the query string and a form body together.
    fn parse(query: &str, form: &[u8]) -> Result<Self, ApiError> {
        let (mut selectors, mut start, mut end) = (Vec::new(), None, None);
        let pairs =
            url::form_urlencoded::parse(query.as_bytes()).chain(url::form_urlencoded::parse(form));
        for (name, value) in pairs {
            match name.as_ref() {
                "match[]" => selectors.push(value.into_owned()),
                "start" => start = Some(parse_time("start", &value)?),
                "end" => end = Some(parse_time("end", &value)?),
                _ => {}
            }
        }
        if selectors.is_empty() {
            return Err(ApiError::invalid(
                "no match[] parameter: name the series to delete, e.g. match[]={service_name=\"api\"}",
            ));
        }
        let range = TimeRange {
            start: start.unwrap_or(i64::MIN),
            end: end.unwrap_or(i64::MAX),
        };
        if range.is_empty() {
            return Err(ApiError::invalid(format!(
                "end ({}) is before start ({})",
                end.unwrap_or_default(),
                start.unwrap_or_default()
            )));
        }
        Ok(Self { selectors, range })
    }
}

/// `value` of parameter `name` in Unix nanoseconds: RFC 3339, or Unix seconds with an optional
/// fraction.
fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    let invalid = |why: &str| {
        ApiError::invalid(format!(
            "{name}={value:?} is not a time: {why} (RFC 3339 such as 2026-12-01T10:00:00Z, or \
             Unix seconds)"
        ))
    };
    if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() || seconds.abs() > 9.2e9 {
            return Err(invalid("out of range"));
        }
        return Ok((seconds * 1e9).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map_err(|e| invalid(&e.to_string()))?
        .timestamp_nanos_opt()
        .ok_or_else(|| invalid("out of range"))
}

/// `POST /api/v1/admin/tsdb/delete_series`.
async fn delete_series(
    State(api): State<Arc<AdminApi>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match delete(&api, query.as_deref().unwrap_or(""), &headers, body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn delete(
    api: &AdminApi,
    query: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ApiError> {
    let tenant = api.rules.tenant(headers, Scope::Admin)?;
    let form = api.rules.read_body(body).await?;
    let params = DeleteParams::parse(query, &form)?;
    let scope = TenantScope::single(
        TenantId::new(tenant.clone()).map_err(|e| ApiError::invalid(e.to_string()))?,
    );
    let ctx = api.read.context(scope);
    let series = api
        .read
        .series_to_delete(&ctx, &params.selectors, params.range)
        .await?;
    let mut fingerprints: Vec<u64> = series.iter().map(|s| s.fingerprint).collect();
    fingerprints.sort_unstable();
    fingerprints.dedup();
    let mut services: Vec<String> = series
        .iter()
        .filter_map(|s| s.get(labels::SERVICE_NAME).map(str::to_owned))
        .collect();
    services.sort();
    services.dedup();
    if fingerprints.is_empty() {
        tracing::info!(tenant, selectors = ?params.selectors, "delete_series matched no series");
        return Ok(());
    }
    let tombstone = api
        .catalog
        .add_tombstone(&Tombstone {
            tenant: tenant.clone(),
            seq: 0,
            range: params.range,
            selectors: params.selectors,
            fingerprints,
            services,
            created_at_millis: now_millis(),
        })
        .await?;
    tracing::info!(tenant, seq = tombstone.seq, selectors = ?tombstone.selectors,
        start = tombstone.range.start, end = tombstone.range.end,
        series = tombstone.fingerprints.len(), "deleted series");
    Ok(())
}

/// `POST /api/v1/admin/tsdb/clean_tombstones`.
async fn clean_tombstones(State(api): State<Arc<AdminApi>>, headers: HeaderMap) -> Response {
    let cleaned = async {
        let tenant = api.rules.tenant(&headers, Scope::Admin)?;
        api.cleaner.clean(&tenant).await?;
        tracing::info!(tenant, "cleaned tombstones");
        Ok::<_, ApiError>(())
    };
    match cleaned.await {
        Ok(()) => (StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_from_query_and_form() {
        let p = DeleteParams::parse(
            "match[]=%7Bservice_name%3D%22a%22%7D&start=1700000000",
            b"match%5B%5D=%7Benv%3D%22dev%22%7D&end=2023-11-14T22%3A14%3A00.5Z",
        )
        .unwrap();
        assert_eq!(p.selectors, [r#"{service_name="a"}"#, r#"{env="dev"}"#]);
        assert_eq!(
            p.range,
            TimeRange {
                start: 1_700_000_000_000_000_000,
                end: 1_700_000_040_500_000_000
            }
        );
        let all = DeleteParams::parse("match[]={a=\"b\"}", b"").unwrap();
        assert_eq!(all.range, TimeRange::ALL);
        for (query, says) in [
            ("start=1", "no match[]"),
            (
                "match[]={a=\"b\"}&start=yesterday",
                "start=\"yesterday\" is not a time",
            ),
            (
                "match[]={a=\"b\"}&start=20&end=10",
                "end (10000000000) is before start",
            ),
            ("match[]={a=\"b\"}&end=1e300", "out of range"),
        ] {
            let err = DeleteParams::parse(query, b"").unwrap_err();
            assert!(err.message.contains(says), "{query}: {}", err.message);
        }
    }
}
