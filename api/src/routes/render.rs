//! Pyroscope's plain-HTTP query endpoints: `/pyroscope/render` (flamebearer JSON with its
//! timeline and groups, or Graphviz DOT), `/pyroscope/render-diff`, `/pyroscope/label-values`
//! and `/pyroscope/labels`. They parse the legacy `query` string (`<profile type>{matchers}`)
//! and attime grammar, then call the read service exactly as Grafana's data source calls the
//! Connect API, and reshape its answers into what Pyroscope's UI expects.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header;
use http::request::Parts;
use profusion_engine::service::{QueryContext, profile_type};
use profusion_model::profile_type::ProfileType;
use profusion_proto::querier::v1::{
    DiffRequest, FlameGraph, ProfileFormat, SelectMergeStacktracesRequest, SelectSeriesRequest,
};
use profusion_proto::types::v1::{
    LabelNamesRequest, LabelValuesRequest, Series, TimeSeriesAggregationType,
};
use serde_json::{Value, json};

use super::ReadApi;
use crate::error::ApiError;

/// The legacy read endpoints' routes.
pub fn routes(api: Arc<ReadApi>) -> Router {
    Router::new()
        .route("/pyroscope/render", get(render))
        .route("/pyroscope/render-diff", get(render_diff))
        .route("/pyroscope/label-values", get(label_values))
        .route("/pyroscope/labels", get(labels))
        .with_state(api)
}

/// Default window of a render without `from`.
const DEFAULT_FROM: &str = "now-1h";
/// Default `maxNodes` of a DOT answer, as Pyroscope's.
const DOT_MAX_NODES: i64 = 100;

/// Query-string parameters; repeated keys keep every value.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A Unix-milliseconds time in the attime grammar (`now-1h`, seconds, ms, ...).
    fn time(&self, key: &str, default: &str, now_nanos: i64) -> Result<i64, ApiError> {
        let raw = self.get(key).unwrap_or(default);
        let nanos = profusion_ingest::legacy::parse_time(raw, now_nanos)
            .map_err(|e| ApiError::invalid(format!("{key}: {}", e.message)))?;
        Ok(nanos.div_euclid(1_000_000))
    }

    fn max_nodes(&self) -> Result<Option<i64>, ApiError> {
        self.get("maxNodes")
            .or_else(|| self.get("max-nodes"))
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid(format!("maxNodes {v:?} is not an integer")))
            })
            .transpose()
    }
}

/// Splits `<profile type>{matchers}` into its two parts.
fn split_query(query: &str) -> Result<(&str, &str), ApiError> {
    match query.find('{') {
        Some(i) if i > 0 => Ok((&query[..i], &query[i..])),
        _ => Err(ApiError::invalid(format!(
            "query {query:?} must be <profile type>{{<matchers>}}, e.g. process_cpu:cpu:nanoseconds:cpu:nanoseconds{{service_name=\"app\"}}"
        ))),
    }
}

/// A legacy `query` with `from`/`until`: the profile type, the selector and the bounds in
/// Unix milliseconds, as a flame-graph request of the querier API.
struct LegacyQuery {
    profile_type: String,
    selector: String,
    from: i64,
    until: i64,
}

impl LegacyQuery {
    fn parse(
        params: &Params,
        query_key: &str,
        from_key: &str,
        until_key: &str,
    ) -> Result<Self, ApiError> {
        let query = params
            .get(query_key)
            .ok_or_else(|| ApiError::invalid(format!("{query_key} is required")))?;
        let (profile_type, selector) = split_query(query)?;
        let now = profusion_model::time::now_nanos();
        Ok(Self {
            profile_type: profile_type.to_owned(),
            selector: selector.to_owned(),
            from: params.time(from_key, DEFAULT_FROM, now)?,
            until: params.time(until_key, "now", now)?,
        })
    }

    fn merge(
        &self,
        max_nodes: Option<i64>,
        format: ProfileFormat,
    ) -> SelectMergeStacktracesRequest {
        SelectMergeStacktracesRequest {
            profile_type_id: self.profile_type.clone(),
            label_selector: self.selector.clone(),
            start: self.from,
            end: self.until,
            max_nodes,
            format: format as i32,
            ..Default::default()
        }
    }
}

/// Pyroscope's point interval of a render: the range over 1,500 points, rounded to a "nice"
/// step, at least 15 s. Returns seconds.
fn point_interval_seconds(from_ms: i64, until_ms: i64) -> i64 {
    let raw_ms = (until_ms - from_ms) / 1500;
    if raw_ms < 15_000 {
        return 15;
    }
    // (upper bound of the raw interval in ms, step in s), as Grafana rounds intervals.
    const STEPS: &[(i64, i64)] = &[
        (17_500, 15),
        (25_000, 20),
        (45_000, 30),
        (90_000, 60),
        (210_000, 120),
        (450_000, 300),
        (750_000, 600),
        (1_050_000, 900),
        (1_500_000, 1_200),
        (2_700_000, 1_800),
        (5_400_000, 3_600),
        (9_000_000, 7_200),
        (16_200_000, 10_800),
        (32_400_000, 21_600),
        (86_400_000, 43_200),
        (604_800_000, 86_400),
        (1_814_400_000, 604_800),
        (3_628_800_000, 2_592_000),
    ];
    STEPS
        .iter()
        .find(|(bound, _)| raw_ms <= *bound)
        .map_or(31_536_000, |(_, step)| *step)
}

/// A flamebearer timeline: `startTime` snapped to the step, one zero-backfilled sample per
/// step from there up to `until`.
fn timeline(series: Option<&Series>, from_ms: i64, until_ms: i64, step_s: i64) -> Value {
    let step_ms = step_s * 1000;
    let start = from_ms.div_euclid(step_ms) * step_ms;
    let end = until_ms.div_euclid(step_ms) * step_ms;
    let slots = usize::try_from((end - start) / step_ms).unwrap_or(0);
    let mut samples = vec![0u64; slots];
    for point in series.map_or(&[][..], |s| s.points.as_slice()) {
        let (ts, v) = (point.timestamp, point.value);
        if ts >= start && ts < end {
            let slot = &mut samples[((ts - start) / step_ms) as usize];
            *slot = slot.saturating_add(v as u64);
        }
    }
    json!({
        "startTime": start.div_euclid(1000),
        "samples": samples,
        "durationDelta": step_s,
        "watermarks": null,
    })
}

/// `units`, `sampleRate` and `name` of a profile type in flamebearer metadata.
fn metadata(profile_type: &ProfileType, format: &str) -> Value {
    let (units, rate) = match profile_type.sample_type.as_str() {
        "inuse_objects" | "alloc_objects" | "goroutine" | "samples" => ("objects", 100),
        "cpu" => ("samples", 1_000_000_000),
        _ => (profile_type.sample_unit.as_str(), 100),
    };
    json!({
        "format": format,
        "spyName": "",
        "sampleRate": rate,
        "units": units,
        "name": profile_type.sample_type,
    })
}

fn flamebearer(names: &[String], levels: Vec<Vec<i64>>, total: i64, max_self: i64) -> Value {
    json!({
        "names": names,
        "levels": levels,
        "numTicks": total,
        "maxSelf": max_self,
    })
}

fn single(fg: &FlameGraph) -> Value {
    flamebearer(
        &fg.names,
        fg.levels.iter().map(|l| l.values.clone()).collect(),
        fg.total,
        fg.max_self,
    )
}

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// What every legacy GET endpoint starts from: the read service, the context of the tenants
/// the request may read, and the query-string parameters (a rejection answers the tenant
/// error).
struct LegacyRequest {
    api: Arc<ReadApi>,
    ctx: QueryContext,
    params: Params,
}

impl FromRequestParts<Arc<ReadApi>> for LegacyRequest {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &Arc<ReadApi>,
    ) -> Result<Self, Self::Rejection> {
        let scope = api.rules.read_scope(&parts.headers)?;
        Ok(Self {
            ctx: api.read.context(scope),
            params: Params::parse(parts.uri.query()),
            api: Arc::clone(api),
        })
    }
}

/// `GET /pyroscope/render`.
async fn render(req: LegacyRequest) -> Result<Response, ApiError> {
    let LegacyRequest { api, ctx, params } = req;
    let read = api.read.as_ref();
    let query = LegacyQuery::parse(&params, "query", "from", "until")?;
    if params.get("format") == Some("dot") {
        let max_nodes = params.max_nodes()?.unwrap_or(DOT_MAX_NODES).max(1);
        let answer = read
            .select_merge_stacktraces(&ctx, query.merge(Some(max_nodes), ProfileFormat::Dot))
            .await?;
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            answer.dot,
        )
            .into_response());
    }
    if let Some(f) = params.get("format").filter(|f| *f != "json") {
        return Err(ApiError::invalid(format!(
            "format {f:?} is not supported; use json or dot"
        )));
    }
    let max_nodes = params.max_nodes()?;
    // The range the service reads (the lookback may move its start), for the timeline.
    let range = read.time_range(query.from, query.until)?;
    let (from, until) = (
        range.start.div_euclid(1_000_000),
        range.end.div_euclid(1_000_000),
    );
    let step = point_interval_seconds(from, until);
    let group_by: Vec<String> = params.all("groupBy").into_iter().take(1).collect();
    let aggregation = match params.get("aggregation") {
        None | Some("sum") => TimeSeriesAggregationType::Sum,
        Some("avg") => TimeSeriesAggregationType::Average,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "aggregation {other:?} is not supported; use sum or avg"
            )));
        }
    };
    let series = |group_by: Vec<String>| SelectSeriesRequest {
        profile_type_id: query.profile_type.clone(),
        label_selector: query.selector.clone(),
        start: query.from,
        end: query.until,
        group_by,
        step: step as f64,
        aggregation: Some(aggregation as i32),
        ..Default::default()
    };
    // One context for the tree and both timelines: they are one query, with one budget.
    let (tree, total, groups) = tokio::try_join!(
        read.select_merge_stacktraces(&ctx, query.merge(max_nodes, ProfileFormat::Flamegraph)),
        read.select_series(&ctx, series(Vec::new())),
        async {
            if group_by.is_empty() {
                Ok(Default::default())
            } else {
                read.select_series(&ctx, series(group_by.clone())).await
            }
        },
    )?;
    let profile_type = profile_type(&query.profile_type)?;
    let groups: Value = if group_by.is_empty() {
        Value::Null
    } else {
        groups
            .series
            .iter()
            .map(|s| {
                let key = s.labels.first().map_or("*", |l| l.value.as_str());
                (key.to_owned(), timeline(Some(s), from, until, step))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    Ok(json_response(&json!({
        "version": 1,
        "flamebearer": single(&tree.flamegraph.unwrap_or_default()),
        "metadata": metadata(&profile_type, "single"),
        "timeline": timeline(total.series.first(), from, until, step),
        "groups": groups,
        "heatmap": null,
    })))
}

/// `GET /pyroscope/render-diff`.
async fn render_diff(req: LegacyRequest) -> Result<Response, ApiError> {
    let LegacyRequest { api, ctx, params } = req;
    let max_nodes = params.max_nodes()?;
    let left = LegacyQuery::parse(&params, "leftQuery", "leftFrom", "leftUntil")?;
    let right = LegacyQuery::parse(&params, "rightQuery", "rightFrom", "rightUntil")?;
    let (left_type, right_type) = (
        profile_type(&left.profile_type)?,
        profile_type(&right.profile_type)?,
    );
    if left_type != right_type {
        return Err(ApiError::invalid(format!(
            "leftQuery and rightQuery must have the same profile type, got {} and {}",
            left_type, right_type
        )));
    }
    let diff = api
        .read
        .diff(
            &ctx,
            DiffRequest {
                left: Some(left.merge(max_nodes, ProfileFormat::Flamegraph)),
                right: Some(right.merge(max_nodes, ProfileFormat::Flamegraph)),
            },
        )
        .await?
        .flamegraph
        .unwrap_or_default();
    Ok(json_response(&json!({
        "version": 1,
        "flamebearer": flamebearer(
            &diff.names,
            diff.levels.iter().map(|l| l.values.clone()).collect(),
            diff.total,
            diff.max_self,
        ),
        "metadata": metadata(&left_type, "double"),
        "leftTicks": diff.left_ticks,
        "rightTicks": diff.right_ticks,
        "timeline": null,
        "groups": null,
        "heatmap": null,
    })))
}

/// The optional `query` of a label endpoint (a selector, optionally behind a profile type) as
/// series matchers, and its `from`/`until`.
fn label_scope(params: &Params) -> Result<(Vec<String>, i64, i64), ApiError> {
    let now = profusion_model::time::now_nanos();
    let matchers = params
        .get("query")
        .filter(|q| !q.is_empty())
        .map(|q| vec![q.to_owned()])
        .unwrap_or_default();
    Ok((
        matchers,
        params.time("from", DEFAULT_FROM, now)?,
        params.time("until", "now", now)?,
    ))
}

/// `GET /pyroscope/label-values?label=<name>`: a JSON array; `__name__` lists profile types.
async fn label_values(req: LegacyRequest) -> Result<Response, ApiError> {
    let LegacyRequest { api, ctx, params } = req;
    let label = params
        .get("label")
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::invalid("label is required"))?;
    let name = if label == "__name__" {
        profusion_model::labels::PROFILE_TYPE
    } else {
        label
    };
    let (matchers, start, end) = label_scope(&params)?;
    let values = api
        .read
        .label_values(
            &ctx,
            LabelValuesRequest {
                name: name.to_owned(),
                matchers,
                start,
                end,
            },
        )
        .await?;
    Ok(json_response(&json!(values.names)))
}

/// `GET /pyroscope/labels`: the label names of the selected series as a JSON array.
async fn labels(req: LegacyRequest) -> Result<Response, ApiError> {
    let LegacyRequest { api, ctx, params } = req;
    let (matchers, start, end) = label_scope(&params)?;
    let names = api
        .read
        .label_names(
            &ctx,
            LabelNamesRequest {
                matchers,
                start,
                end,
            },
        )
        .await?;
    Ok(json_response(&json!(names.names)))
}
