//! `querier.v1.QuerierService`: the read API Grafana's Pyroscope data source calls.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::HeaderMap;
use profusion_engine::budget::{Charged, QueryBudget};
use profusion_engine::querier::{MergeRequest, TimeRange};
use profusion_engine::selector::{self, Selector};
use profusion_engine::symbolize::{GoPgo, StackFilter};
use profusion_model::tree::Tree;
use profusion_proto::google::v1::Profile;
use profusion_proto::querier::v1::{
    AnalyzeQueryRequest, AnalyzeQueryResponse, DiffRequest, DiffResponse, PprofProfile,
    ProfileFormat, ProfileTypesRequest, ProfileTypesResponse, QueryImpact, QueryScope,
    SelectMergeProfileRequest, SelectMergeSpanProfileRequest, SelectMergeSpanProfileResponse,
    SelectMergeStacktracesRequest, SelectMergeStacktracesResponse, SelectSeriesRequest,
    SelectSeriesResponse, SeriesRequest, SeriesResponse,
};
use profusion_proto::types::v1::{
    GetProfileStatsRequest, GetProfileStatsResponse, LabelNamesRequest, LabelNamesResponse,
    LabelPair, LabelValuesRequest, LabelValuesResponse, Labels, Point, ProfileType, Series,
    StackTraceSelector, TimeSeriesAggregationType,
};

use crate::error::{ApiError, Code};
use crate::rpc;
use crate::server::AppState;

/// `POST /querier.v1.QuerierService/{method}`.
pub(crate) async fn querier(
    State(state): State<Arc<AppState>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match method.as_str() {
        "ProfileTypes" => {
            rpc::unary_read(&state, &headers, body, |t, r| profile_types(&state, t, r)).await
        }
        "LabelNames" => {
            rpc::unary_read(&state, &headers, body, |t, r| label_names(&state, t, r)).await
        }
        "LabelValues" => {
            rpc::unary_read(&state, &headers, body, |t, r| label_values(&state, t, r)).await
        }
        "Series" => rpc::unary_read(&state, &headers, body, |t, r| series(&state, t, r)).await,
        "SelectMergeStacktraces" => {
            rpc::unary_read(&state, &headers, body, |t, r| {
                select_merge_stacktraces(&state, t, r)
            })
            .await
        }
        "SelectSeries" => {
            rpc::unary_read(&state, &headers, body, |t, r| select_series(&state, t, r)).await
        }
        "SelectMergeSpanProfile" => {
            rpc::unary_read(&state, &headers, body, |t, r| {
                select_merge_span_profile(&state, t, r)
            })
            .await
        }
        "SelectMergeProfile" => {
            rpc::unary_read(&state, &headers, body, |t, r| {
                select_merge_profile(&state, t, r)
            })
            .await
        }
        "AnalyzeQuery" => {
            rpc::unary_read(&state, &headers, body, |t, r| analyze_query(&state, t, r)).await
        }
        "Diff" => rpc::unary_read(&state, &headers, body, |t, r| diff(&state, t, r)).await,
        "GetProfileStats" => {
            rpc::unary_read(&state, &headers, body, |t, r| profile_stats(&state, t, r)).await
        }
        _ => rpc::unimplemented(&headers, &format!("querier.v1.QuerierService/{method}")),
    }
}

/// Validates a query's `[start, end]` (Unix milliseconds) against the query limits: moves a
/// start older than the lookback up to it (a range entirely older selects nothing), then
/// refuses ranges longer than the maximum query length.
pub(crate) fn time_range(state: &AppState, start: i64, end: i64) -> Result<TimeRange, ApiError> {
    if start == 0 && end == 0 {
        return Err(ApiError::invalid(
            "missing time range: set start and end (Unix milliseconds)",
        ));
    }
    if start > end {
        return Err(ApiError::invalid(format!(
            "invalid time range: start {start} is after end {end}"
        )));
    }
    let mut start = start;
    let lookback = state.config.max_query_lookback.as_millis() as i64;
    if lookback > 0 {
        let oldest = profusion_model::time::now_millis().saturating_sub(lookback);
        if end < oldest {
            return Ok(TimeRange::EMPTY);
        }
        start = start.max(oldest);
    }
    let max_length = state.config.max_query_length.as_millis() as i64;
    // In 128 bits: [i64::MIN, i64::MAX] is longer than any i64.
    let length = i128::from(end) - i128::from(start);
    if max_length > 0 && length > i128::from(max_length) {
        return Err(ApiError::invalid(format!(
            "the query time range exceeds the limit (query length: {}, limit: {}); narrow the range or raise --querier.max-query-length",
            human_duration(i64::try_from(length).unwrap_or(i64::MAX)),
            human_duration(max_length)
        )));
    }
    Ok(TimeRange::from_millis(start, end))
}

/// `1d2h3m4.5s` style, for messages.
fn human_duration(millis: i64) -> String {
    let mut out = String::new();
    let mut rest = millis;
    for (unit, ms) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)] {
        if rest >= ms {
            out.push_str(&format!("{}{unit}", rest / ms));
            rest %= ms;
        }
    }
    if rest > 0 || out.is_empty() {
        out.push_str(&format!("{}s", rest as f64 / 1000.0));
    }
    out
}

fn selectors(matchers: &[String]) -> Result<Vec<Selector>, ApiError> {
    matchers
        .iter()
        .map(|m| selector::parse(m).map_err(|e| ApiError::invalid(format!("matcher {m:?}: {e}"))))
        .collect()
}

/// `name:sample_type:sample_unit:period_type:period_unit`, with an optional `:delta` suffix.
pub(crate) fn profile_type(id: &str) -> Result<ProfileType, ApiError> {
    let parts: Vec<&str> = id.split(':').collect();
    if !(parts.len() == 5 || (parts.len() == 6 && parts[5] == "delta")) || parts[0].is_empty() {
        return Err(ApiError::invalid(format!(
            "invalid profile type {id:?}: expected name:sample_type:sample_unit:period_type:period_unit"
        )));
    }
    Ok(ProfileType {
        id: parts[..5].join(":"),
        name: parts[0].into(),
        sample_type: parts[1].into(),
        sample_unit: parts[2].into(),
        period_type: parts[3].into(),
        period_unit: parts[4].into(),
    })
}

async fn profile_types(
    state: &AppState,
    tenants: Vec<String>,
    req: ProfileTypesRequest,
) -> Result<ProfileTypesResponse, ApiError> {
    let range = if req.start == 0 && req.end == 0 {
        let now = profusion_model::time::now_millis();
        TimeRange::from_millis(now - 3_600_000, now)
    } else {
        time_range(state, req.start, req.end)?
    };
    let ids = state.frontend.profile_types(&tenants, range).await?;
    Ok(ProfileTypesResponse {
        profile_types: ids.iter().filter_map(|id| profile_type(id).ok()).collect(),
    })
}

async fn matching_series(
    state: &AppState,
    tenants: &[String],
    matchers: &[String],
    start: i64,
    end: i64,
) -> Result<Vec<profusion_engine::querier::SeriesLabels>, ApiError> {
    let range = time_range(state, start, end)?;
    let selectors = selectors(matchers)?;
    Ok(state
        .frontend
        .series(&state.frontend.budget(), tenants, range, selectors, None)
        .await?)
}

async fn label_names(
    state: &AppState,
    tenants: Vec<String>,
    req: LabelNamesRequest,
) -> Result<LabelNamesResponse, ApiError> {
    let series = matching_series(state, &tenants, &req.matchers, req.start, req.end).await?;
    let names: BTreeSet<String> = series
        .into_iter()
        .flat_map(|s| s.labels.into_iter().map(|(k, _)| k))
        .collect();
    Ok(LabelNamesResponse {
        names: names.into_iter().collect(),
    })
}

async fn label_values(
    state: &AppState,
    tenants: Vec<String>,
    req: LabelValuesRequest,
) -> Result<LabelValuesResponse, ApiError> {
    if req.name.is_empty() {
        return Err(ApiError::invalid("label name is required"));
    }
    let series = matching_series(state, &tenants, &req.matchers, req.start, req.end).await?;
    let values: BTreeSet<String> = series
        .iter()
        .filter_map(|s| s.get(&req.name).map(str::to_owned))
        .collect();
    Ok(LabelValuesResponse {
        names: values.into_iter().collect(),
    })
}

async fn series(
    state: &AppState,
    tenants: Vec<String>,
    req: SeriesRequest,
) -> Result<SeriesResponse, ApiError> {
    let series = matching_series(state, &tenants, &req.matchers, req.start, req.end).await?;
    let mut sets: BTreeMap<Vec<(String, String)>, ()> = BTreeMap::new();
    for s in series {
        let labels: Vec<(String, String)> = if req.label_names.is_empty() {
            s.labels
        } else {
            s.labels
                .into_iter()
                .filter(|(k, _)| req.label_names.contains(k))
                .collect()
        };
        sets.insert(labels, ());
    }
    Ok(SeriesResponse {
        labels_set: sets
            .into_keys()
            .map(|labels| Labels {
                labels: labels
                    .into_iter()
                    .map(|(name, value)| LabelPair { name, value })
                    .collect(),
            })
            .collect(),
    })
}

/// A validated flame-graph request.
pub(crate) struct MergeQuery {
    pub(crate) req: MergeRequest,
    pub(crate) profile_type: ProfileType,
    pub(crate) max_nodes: usize,
}

pub(crate) fn merge_query(
    state: &AppState,
    profile_type_id: &str,
    label_selector: &str,
    start: i64,
    end: i64,
    max_nodes: Option<i64>,
) -> Result<MergeQuery, ApiError> {
    let range = time_range(state, start, end)?;
    let profile_type = profile_type(profile_type_id)?;
    let selector = selector::parse(label_selector)
        .map_err(|e| ApiError::invalid(format!("label_selector {label_selector:?}: {e}")))?;
    let (default_nodes, max_allowed) = (
        state.config.max_flamegraph_nodes_default,
        state.config.max_flamegraph_nodes_max,
    );
    let max_nodes = match max_nodes.unwrap_or(0) {
        0 => default_nodes,
        n if n < 0 => {
            return Err(ApiError::invalid(format!(
                "max_nodes must not be negative, got {n}"
            )));
        }
        n if max_allowed > 0 && n > max_allowed => {
            return Err(ApiError::invalid(format!(
                "max_nodes {n} is more than the limit of {max_allowed}"
            )));
        }
        n => n,
    } as usize;
    Ok(MergeQuery {
        req: MergeRequest {
            profile_type: profile_type.id.clone(),
            selector,
            range,
            profile_ids: Vec::new(),
            span_ids: Vec::new(),
            stacks: StackFilter::default(),
        },
        profile_type,
        max_nodes,
    })
}

impl MergeQuery {
    /// Adds the optional selectors of a request.
    fn narrowed(
        mut self,
        stack_trace_selector: Option<&StackTraceSelector>,
        profile_ids: &[String],
        span_ids: &[String],
        trace_ids: &[String],
    ) -> Result<Self, ApiError> {
        if !trace_ids.is_empty() {
            return Err(ApiError::new(
                Code::Unimplemented,
                "trace_id_selector is not supported; select spans with span_selector",
            ));
        }
        if let Some(s) = stack_trace_selector {
            self.req.stacks = StackFilter {
                call_site: s.call_site.iter().map(|l| l.name.clone()).collect(),
                go_pgo: s.go_pgo.map(|p| GoPgo {
                    keep_locations: p.keep_locations,
                    aggregate_callees: p.aggregate_callees,
                }),
            };
        }
        self.req.profile_ids = profile_ids.to_vec();
        self.req.span_ids = span_ids
            .iter()
            .map(|s| {
                (s.len() == 16)
                    .then(|| profusion_ingest::pprof::parse_span_id(s))
                    .flatten()
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "span_selector {s:?} is not a span id of 16 hex digits"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(self)
    }
}

async fn merged_tree(
    state: &AppState,
    budget: &QueryBudget,
    tenants: &[String],
    q: &MergeQuery,
    max_nodes: usize,
) -> Result<Charged<Tree>, ApiError> {
    Ok(state
        .frontend
        .merge_tree(budget, tenants, &q.req, max_nodes)
        .await?)
}

/// A diff of two trees, with the union it builds charged to the query's budget (at most the
/// two sides' size).
pub(crate) fn charged_diff(
    budget: &QueryBudget,
    left: &Tree,
    right: &Tree,
    max_nodes: usize,
) -> Result<profusion_proto::querier::v1::FlameGraphDiff, ApiError> {
    let mut union = budget.reservation("diff union tree");
    budget.hold(
        &mut union,
        "the diff's union tree",
        left.heap_bytes() + right.heap_bytes(),
    )?;
    Ok(profusion_model::tree::diff(left, right, max_nodes))
}

async fn select_merge_stacktraces(
    state: &AppState,
    tenants: Vec<String>,
    req: SelectMergeStacktracesRequest,
) -> Result<SelectMergeStacktracesResponse, ApiError> {
    let q = merge_query(
        state,
        &req.profile_type_id,
        &req.label_selector,
        req.start,
        req.end,
        req.max_nodes,
    )?
    .narrowed(
        req.stack_trace_selector.as_ref(),
        &req.profile_id_selector,
        &req.span_selector,
        &req.trace_id_selector,
    )?;
    let format = ProfileFormat::try_from(req.format).unwrap_or(ProfileFormat::Unspecified);
    let budget = state.frontend.budget();
    if format == ProfileFormat::Pprof {
        return Ok(SelectMergeStacktracesResponse {
            pprof: Some(PprofProfile {
                profile: Some(
                    state
                        .frontend
                        .merge_pprof(&budget, &tenants, &q.req)
                        .await?,
                ),
            }),
            ..Default::default()
        });
    }
    // DOT ranks functions, not tree nodes: it needs the whole tree.
    let truncate_at = if format == ProfileFormat::Dot {
        0
    } else {
        q.max_nodes
    };
    let charged = merged_tree(state, &budget, &tenants, &q, truncate_at).await?;
    let tree = &charged.value;
    Ok(match format {
        ProfileFormat::Tree => SelectMergeStacktracesResponse {
            tree: tree.tree_bytes(q.max_nodes).into(),
            ..Default::default()
        },
        ProfileFormat::Dot => SelectMergeStacktracesResponse {
            dot: profusion_engine::dot::to_dot(
                tree,
                &q.profile_type.sample_type,
                &q.profile_type.sample_unit,
                q.max_nodes,
            ),
            ..Default::default()
        },
        _ => SelectMergeStacktracesResponse {
            flamegraph: Some(tree.flame_graph(q.max_nodes)),
            ..Default::default()
        },
    })
}

async fn select_merge_span_profile(
    state: &AppState,
    tenants: Vec<String>,
    req: SelectMergeSpanProfileRequest,
) -> Result<SelectMergeSpanProfileResponse, ApiError> {
    if req.span_selector.is_empty() {
        return Err(ApiError::invalid(
            "span_selector must name at least one span",
        ));
    }
    let q = merge_query(
        state,
        &req.profile_type_id,
        &req.label_selector,
        req.start,
        req.end,
        req.max_nodes,
    )?
    .narrowed(None, &[], &req.span_selector, &[])?;
    let charged = merged_tree(state, &state.frontend.budget(), &tenants, &q, q.max_nodes).await?;
    let tree = &charged.value;
    Ok(
        match ProfileFormat::try_from(req.format).unwrap_or(ProfileFormat::Unspecified) {
            ProfileFormat::Tree => SelectMergeSpanProfileResponse {
                tree: tree.tree_bytes(q.max_nodes).into(),
                ..Default::default()
            },
            _ => SelectMergeSpanProfileResponse {
                flamegraph: Some(tree.flame_graph(q.max_nodes)),
                ..Default::default()
            },
        },
    )
}

/// The deprecated pprof query: not truncated to `max_nodes`, as in Pyroscope by default.
async fn select_merge_profile(
    state: &AppState,
    tenants: Vec<String>,
    req: SelectMergeProfileRequest,
) -> Result<Profile, ApiError> {
    let q = merge_query(
        state,
        &req.profile_type_id,
        &req.label_selector,
        req.start,
        req.end,
        None,
    )?
    .narrowed(
        req.stack_trace_selector.as_ref(),
        &req.profile_id_selector,
        &[],
        &req.trace_id_selector,
    )?;
    Ok(state
        .frontend
        .merge_pprof(&state.frontend.budget(), &tenants, &q.req)
        .await?)
}

/// A legacy query string, `<profile type>{matchers}` or a bare selector, as one selector
/// (the profile type becomes a `__profile_type__` matcher).
pub(crate) fn typed_selector(query: &str) -> Result<Selector, ApiError> {
    let (profile_type, matchers) = match query.find('{') {
        Some(0) => (None, query),
        Some(i) => (Some(profile_type(&query[..i])?), &query[i..]),
        None => {
            return Err(ApiError::invalid(format!(
                "query {query:?} must be a selector {{...}} or <profile type>{{...}}"
            )));
        }
    };
    let mut selector = selector::parse(matchers)
        .map_err(|e| ApiError::invalid(format!("query {query:?}: {e}")))?;
    if let Some(pt) = profile_type {
        selector.matchers.push(
            selector::Matcher::new(
                profusion_model::labels::PROFILE_TYPE,
                selector::MatchOp::Equal,
                pt.id,
            )
            .map_err(|e| ApiError::invalid(e.to_string()))?,
        );
    }
    Ok(selector)
}

async fn analyze_query(
    state: &AppState,
    tenants: Vec<String>,
    req: AnalyzeQueryRequest,
) -> Result<AnalyzeQueryResponse, ApiError> {
    let range = time_range(state, req.start, req.end)?;
    let selector = typed_selector(&req.query)?;
    let analysis = state
        .frontend
        .analyze(&state.frontend.budget(), &tenants, selector, range)
        .await?;
    let total_bytes = analysis.scopes.iter().map(|s| s.bytes).sum();
    Ok(AnalyzeQueryResponse {
        query_scopes: analysis
            .scopes
            .into_iter()
            .map(|s| QueryScope {
                component_type: s.component.into(),
                component_count: s.components,
                block_count: s.blocks,
                series_count: s.series,
                profile_count: s.profiles,
                sample_count: s.samples,
                profile_bytes: s.bytes,
                ..Default::default()
            })
            .collect(),
        query_impact: Some(QueryImpact {
            total_bytes_in_time_range: total_bytes,
            total_queried_series: analysis.matching_series,
            deduplication_needed: false,
        }),
    })
}

async fn select_series(
    state: &AppState,
    tenants: Vec<String>,
    req: SelectSeriesRequest,
) -> Result<SelectSeriesResponse, ApiError> {
    let q = merge_query(
        state,
        &req.profile_type_id,
        &req.label_selector,
        req.start,
        req.end,
        None,
    )?;
    if !(req.step > 0.0 && req.step.is_finite()) {
        return Err(ApiError::invalid(format!(
            "step must be a positive number of seconds, got {}",
            req.step
        )));
    }
    if req.stack_trace_selector.is_some() {
        return Err(ApiError::new(
            Code::Unimplemented,
            "stack_trace_selector on SelectSeries is not supported yet",
        ));
    }
    let limit = match req.limit {
        Some(n) if n < 0 => {
            return Err(ApiError::invalid(format!(
                "limit must not be negative, got {n}"
            )));
        }
        Some(0) | None => None,
        Some(n) => Some(n as usize),
    };
    let average = req.aggregation == Some(TimeSeriesAggregationType::Average as i32);
    let series = state
        .frontend
        .select_series(
            &state.frontend.budget(),
            &tenants,
            &profusion_engine::querier::SeriesQuery {
                profile_type: q.profile_type.id.clone(),
                selector: q.req.selector.clone(),
                range: q.req.range,
                step_millis: (req.step * 1000.0).round() as i64,
                group_by: req.group_by.clone(),
                average,
                limit,
            },
        )
        .await?;
    Ok(SelectSeriesResponse {
        series: series
            .into_iter()
            .map(|s| Series {
                labels: s
                    .labels
                    .into_iter()
                    .map(|(name, value)| LabelPair { name, value })
                    .collect(),
                points: s
                    .points
                    .into_iter()
                    .map(|(timestamp, value)| Point {
                        value,
                        timestamp,
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect(),
    })
}

async fn diff(
    state: &AppState,
    tenants: Vec<String>,
    req: DiffRequest,
) -> Result<DiffResponse, ApiError> {
    let (Some(left), Some(right)) = (req.left, req.right) else {
        return Err(ApiError::invalid("diff needs both left and right"));
    };
    let side = |name: &str, r: &SelectMergeStacktracesRequest| {
        merge_query(
            state,
            &r.profile_type_id,
            &r.label_selector,
            r.start,
            r.end,
            r.max_nodes,
        )
        .map_err(|e| ApiError::invalid(format!("{name}: {}", e.message)))
    };
    let (l, r) = (side("left", &left)?, side("right", &right)?);
    let budget = state.frontend.budget();
    let (lt, rt) = tokio::try_join!(
        // A diff unions both trees before truncating: they must stay whole.
        merged_tree(state, &budget, &tenants, &l, 0),
        merged_tree(state, &budget, &tenants, &r, 0)
    )?;
    Ok(DiffResponse {
        flamegraph: Some(charged_diff(&budget, &lt.value, &rt.value, l.max_nodes)?),
    })
}

async fn profile_stats(
    state: &AppState,
    tenants: Vec<String>,
    _req: GetProfileStatsRequest,
) -> Result<GetProfileStatsResponse, ApiError> {
    Ok(match state.frontend.profile_stats(&tenants).await? {
        Some((oldest, newest)) => GetProfileStatsResponse {
            data_ingested: true,
            oldest_profile_time: oldest,
            newest_profile_time: newest,
        },
        None => GetProfileStatsResponse::default(),
    })
}
