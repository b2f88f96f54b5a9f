//! The read service: the querier API's operations with typed requests and answers, the one
//! entry point of every read surface (Connect, gRPC, the legacy HTTP endpoints, later SQL and
//! the web UI), so all of them get the same validation, limits and fairness.
//!
//! [`ReadService`] is the API. [`QueryApi`] implements it once over any [`ReadExecutor`]: it
//! validates requests against the [`QueryLimits`], turns them into [`ReadJob`]s and encodes the
//! answers. Two executors exist: the [`Querier`] runs a job itself; the
//! [`crate::frontend::QueryFrontend`] splits it, queues the parts per tenant and has querier
//! workers run them. Jobs are plain data, so a worker need not share memory with the frontend.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use profusion_model::profile_type::ProfileType;
use profusion_model::symbols::parse_span_id;
use profusion_model::tenant::TenantScope;
use profusion_model::time::{TimeRange, now_millis};
use profusion_model::tree::Tree;
use profusion_proto::google::v1::Profile;
use profusion_proto::querier::v1::{
    AnalyzeQueryRequest, AnalyzeQueryResponse, DiffRequest, DiffResponse, FlameGraphDiff,
    PprofProfile, ProfileFormat, ProfileTypesRequest, ProfileTypesResponse, QueryImpact,
    QueryScope as ProtoQueryScope, SelectMergeProfileRequest, SelectMergeSpanProfileRequest,
    SelectMergeSpanProfileResponse, SelectMergeStacktracesRequest, SelectMergeStacktracesResponse,
    SelectSeriesRequest, SelectSeriesResponse, SeriesRequest, SeriesResponse,
};
use profusion_proto::types::v1::{
    GetProfileStatsRequest, GetProfileStatsResponse, LabelNamesRequest, LabelNamesResponse,
    LabelPair, LabelValuesRequest, LabelValuesResponse, Labels, Point, ProfileType as ProtoType,
    Series, StackTraceSelector, TimeSeriesAggregationType,
};

use crate::budget::{Charged, QueryBudget};
use crate::error::{QueryError, Result};
use crate::querier::{
    MergeRequest, QueryAnalysis, SeriesLabels, SeriesQuery, SqlTable, TimeSeries,
};
use crate::selector::{self, MatchOp, Matcher, Selector};
use crate::symbolize::{GoPgo, StackFilter};
use profusion_model::status::StatusCode;

/// Who is asking and with what memory: shared by every call one user request makes (a
/// render's tree and timelines, a diff's two sides), so together they stay within one budget.
#[derive(Debug, Clone)]
pub struct QueryContext {
    pub scope: TenantScope,
    pub budget: QueryBudget,
}

impl QueryContext {
    /// The scope's tenant ids.
    pub fn tenants(&self) -> Vec<String> {
        self.scope
            .tenants()
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect()
    }
}

/// One unit of read work, as data: what a querier executes.
#[derive(Debug, Clone)]
pub enum ReadJob {
    /// The merged call tree of a request; whole when `max_nodes` is 0, else truncated so its
    /// encoding at `max_nodes` is exactly the whole tree's.
    MergeTree {
        request: MergeRequest,
        max_nodes: usize,
    },
    /// The merged samples of a request as one pprof profile.
    MergePprof { request: MergeRequest },
    /// Time series of profile totals.
    SelectSeries(SeriesQuery),
    /// Series matching any of `selectors` (all when none), optionally of one profile type.
    Series {
        range: TimeRange,
        selectors: Vec<Selector>,
        profile_type: Option<String>,
    },
    /// Profile types with data in the range.
    ProfileTypes { range: TimeRange },
    /// The oldest and newest profile times.
    ProfileStats,
    /// What a query over the range would read.
    Analyze {
        selector: Selector,
        range: TimeRange,
    },
    /// A read-only SQL query over the tenants' tables.
    Sql(crate::sql::SqlRequest),
}

/// The answer of a [`ReadJob`], of the job's kind.
#[derive(Debug)]
pub enum ReadAnswer {
    Tree(Charged<Tree>),
    Pprof(Profile),
    Series(Vec<TimeSeries>),
    Labels(Vec<SeriesLabels>),
    ProfileTypes(Vec<String>),
    ProfileStats(Option<(i64, i64)>),
    Analysis(QueryAnalysis),
    /// The rows of a SQL query.
    Table(Charged<SqlTable>),
    /// An answer as a querier of another process encoded it ([`crate::remote`]): a scheduler
    /// passes it on to the frontend that asked without decoding it.
    Encoded(Vec<u8>),
}

macro_rules! answer_as {
    ($name:ident, $variant:ident, $ty:ty) => {
        pub fn $name(self) -> Result<$ty> {
            match self {
                Self::$variant(v) => Ok(v),
                other => Err(QueryError::internal(format!(
                    "a querier answered {other:?} where {} was expected",
                    stringify!($variant)
                ))),
            }
        }
    };
}

impl ReadAnswer {
    answer_as!(into_tree, Tree, Charged<Tree>);
    answer_as!(into_pprof, Pprof, Profile);
    answer_as!(into_series, Series, Vec<TimeSeries>);
    answer_as!(into_labels, Labels, Vec<SeriesLabels>);
    answer_as!(into_profile_types, ProfileTypes, Vec<String>);
    answer_as!(into_profile_stats, ProfileStats, Option<(i64, i64)>);
    answer_as!(into_analysis, Analysis, QueryAnalysis);
    answer_as!(into_table, Table, Charged<SqlTable>);
}

/// Runs read jobs.
#[async_trait]
pub trait ReadExecutor: Send + Sync + std::fmt::Debug {
    /// A fresh budget of the configured size, for one user request.
    fn budget(&self) -> QueryBudget;

    async fn execute(&self, ctx: &QueryContext, job: ReadJob) -> Result<ReadAnswer>;
}

/// Limits every read is checked against before any work is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Oldest data a query may read, back from now, in milliseconds (0: no limit).
    pub max_query_lookback_millis: i64,
    /// Longest time range of one query, in milliseconds (0: no limit).
    pub max_query_length_millis: i64,
    /// `max_nodes` of a flame graph that asks for none.
    pub max_nodes_default: i64,
    /// Largest `max_nodes` a request may ask for (0: no limit).
    pub max_nodes_max: i64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_query_lookback_millis: 0,
            max_query_length_millis: 0,
            max_nodes_default: 8192,
            max_nodes_max: 1 << 20,
        }
    }
}

/// The querier API: `querier.v1.QuerierService` with typed requests and answers.
#[async_trait]
pub trait ReadService: Send + Sync + std::fmt::Debug {
    /// The context of one user request over `scope`.
    fn context(&self, scope: TenantScope) -> QueryContext;

    /// The range a request over `[start, end]` (Unix milliseconds) reads once the limits
    /// apply (a start older than the lookback moves up to it), or why it is refused.
    fn time_range(&self, start: i64, end: i64) -> Result<TimeRange>;

    async fn profile_types(
        &self,
        ctx: &QueryContext,
        req: ProfileTypesRequest,
    ) -> Result<ProfileTypesResponse>;

    /// Every series matching any of `selectors` with data in `range`, with its fingerprint:
    /// what a deletion names. Not bound by the query-length limit (deletions span months).
    async fn series_to_delete(
        &self,
        ctx: &QueryContext,
        selectors: &[String],
        range: TimeRange,
    ) -> Result<Vec<SeriesLabels>>;
    async fn label_names(
        &self,
        ctx: &QueryContext,
        req: LabelNamesRequest,
    ) -> Result<LabelNamesResponse>;
    async fn label_values(
        &self,
        ctx: &QueryContext,
        req: LabelValuesRequest,
    ) -> Result<LabelValuesResponse>;
    async fn series(&self, ctx: &QueryContext, req: SeriesRequest) -> Result<SeriesResponse>;
    async fn select_merge_stacktraces(
        &self,
        ctx: &QueryContext,
        req: SelectMergeStacktracesRequest,
    ) -> Result<SelectMergeStacktracesResponse>;
    async fn select_merge_span_profile(
        &self,
        ctx: &QueryContext,
        req: SelectMergeSpanProfileRequest,
    ) -> Result<SelectMergeSpanProfileResponse>;
    async fn select_merge_profile(
        &self,
        ctx: &QueryContext,
        req: SelectMergeProfileRequest,
    ) -> Result<Profile>;
    async fn select_series(
        &self,
        ctx: &QueryContext,
        req: SelectSeriesRequest,
    ) -> Result<SelectSeriesResponse>;
    async fn diff(&self, ctx: &QueryContext, req: DiffRequest) -> Result<DiffResponse>;
    async fn analyze_query(
        &self,
        ctx: &QueryContext,
        req: AnalyzeQueryRequest,
    ) -> Result<AnalyzeQueryResponse>;
    async fn get_profile_stats(
        &self,
        ctx: &QueryContext,
        req: GetProfileStatsRequest,
    ) -> Result<GetProfileStatsResponse>;
    /// A read-only SQL query over the scope's tables, queued and budgeted as every read.
    async fn sql(
        &self,
        ctx: &QueryContext,
        request: crate::sql::SqlRequest,
    ) -> Result<Charged<SqlTable>>;
}

/// The querier API over an executor: validation, limits, jobs and answer encodings.
#[derive(Debug)]
pub struct QueryApi<E> {
    executor: E,
    limits: QueryLimits,
}

impl<E: ReadExecutor> QueryApi<E> {
    pub fn new(executor: E, limits: QueryLimits) -> Self {
        Self { executor, limits }
    }

    pub fn executor(&self) -> &E {
        &self.executor
    }

    /// Validates a query's `[start, end]` (Unix milliseconds): moves a start older than the
    /// lookback up to it (a range entirely older selects nothing), then refuses ranges longer
    /// than the maximum query length.
    pub fn time_range(&self, start: i64, end: i64) -> Result<TimeRange> {
        if start == 0 && end == 0 {
            return Err(QueryError::invalid(
                "missing time range: set start and end (Unix milliseconds)",
            ));
        }
        if start > end {
            return Err(QueryError::invalid(format!(
                "invalid time range: start {start} is after end {end}"
            )));
        }
        let mut start = start;
        let lookback = self.limits.max_query_lookback_millis;
        if lookback > 0 {
            let oldest = now_millis().saturating_sub(lookback);
            if end < oldest {
                return Ok(TimeRange::EMPTY);
            }
            start = start.max(oldest);
        }
        let max_length = self.limits.max_query_length_millis;
        // In 128 bits: [i64::MIN, i64::MAX] is longer than any i64.
        let length = i128::from(end) - i128::from(start);
        if max_length > 0 && length > i128::from(max_length) {
            return Err(QueryError::invalid(format!(
                "the query time range exceeds the limit (query length: {}, limit: {}); narrow the range or raise --querier.max-query-length",
                human_duration(i64::try_from(length).unwrap_or(i64::MAX)),
                human_duration(max_length)
            )));
        }
        Ok(TimeRange::from_millis(start, end))
    }

    /// A validated flame-graph request.
    pub fn merge_query(
        &self,
        profile_type_id: &str,
        label_selector: &str,
        start: i64,
        end: i64,
        max_nodes: Option<i64>,
    ) -> Result<MergeQuery> {
        let range = self.time_range(start, end)?;
        let profile_type = profile_type(profile_type_id)?;
        let selector = selector::parse(label_selector)
            .map_err(|e| QueryError::invalid(format!("label_selector {label_selector:?}: {e}")))?;
        let (default_nodes, max_allowed) =
            (self.limits.max_nodes_default, self.limits.max_nodes_max);
        let max_nodes = match max_nodes.unwrap_or(0) {
            0 => default_nodes,
            n if n < 0 => {
                return Err(QueryError::invalid(format!(
                    "max_nodes must not be negative, got {n}"
                )));
            }
            n if max_allowed > 0 && n > max_allowed => {
                return Err(QueryError::invalid(format!(
                    "max_nodes {n} is more than the limit of {max_allowed}"
                )));
            }
            n => n,
        } as usize;
        Ok(MergeQuery {
            req: MergeRequest {
                profile_type: profile_type.id(),
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

    async fn matching_series(
        &self,
        ctx: &QueryContext,
        matchers: &[String],
        start: i64,
        end: i64,
    ) -> Result<Vec<SeriesLabels>> {
        let range = self.time_range(start, end)?;
        let selectors = matchers
            .iter()
            .map(|m| series_selector(m))
            .collect::<Result<Vec<_>>>()?;
        self.executor
            .execute(
                ctx,
                ReadJob::Series {
                    range,
                    selectors,
                    profile_type: None,
                },
            )
            .await?
            .into_labels()
    }

    async fn merged_tree(
        &self,
        ctx: &QueryContext,
        q: &MergeQuery,
        max_nodes: usize,
    ) -> Result<Charged<Tree>> {
        self.executor
            .execute(
                ctx,
                ReadJob::MergeTree {
                    request: q.req.clone(),
                    max_nodes,
                },
            )
            .await?
            .into_tree()
    }

    async fn merged_pprof(&self, ctx: &QueryContext, q: &MergeQuery) -> Result<Profile> {
        self.executor
            .execute(
                ctx,
                ReadJob::MergePprof {
                    request: q.req.clone(),
                },
            )
            .await?
            .into_pprof()
    }
}

/// A validated flame-graph request.
#[derive(Debug, Clone)]
pub struct MergeQuery {
    pub req: MergeRequest,
    pub profile_type: ProfileType,
    pub max_nodes: usize,
}

impl MergeQuery {
    /// Adds the optional selectors of a request.
    fn narrowed(
        mut self,
        stack_trace_selector: Option<&StackTraceSelector>,
        profile_ids: &[String],
        span_ids: &[String],
        trace_ids: &[String],
    ) -> Result<Self> {
        if !trace_ids.is_empty() {
            return Err(QueryError {
                source: None,
                status: StatusCode::Unimplemented,
                message: "trace_id_selector is not supported; select spans with span_selector"
                    .into(),
            });
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
                parse_span_id(s).ok_or_else(|| {
                    QueryError::invalid(format!(
                        "span_selector {s:?} is not a span id of 16 hex digits"
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(self)
    }
}

/// A profile-type id as the API answers it.
pub fn proto_profile_type(pt: &ProfileType) -> ProtoType {
    ProtoType {
        id: pt.id(),
        name: pt.name.clone(),
        sample_type: pt.sample_type.clone(),
        sample_unit: pt.sample_unit.clone(),
        period_type: pt.period_type.clone(),
        period_unit: pt.period_unit.clone(),
    }
}

/// Parses a profile-type id from a request.
pub fn profile_type(id: &str) -> Result<ProfileType> {
    ProfileType::parse(id).map_err(|e| QueryError::invalid(e.to_string()))
}

/// Narrows `selector` to one profile type, as a `__profile_type__` matcher.
fn select_profile_type(selector: &mut Selector, pt: &ProfileType) -> Result<()> {
    selector.matchers.push(
        Matcher::new(
            profusion_model::labels::PROFILE_TYPE,
            MatchOp::Equal,
            pt.id(),
        )
        .map_err(|e| QueryError::invalid(e.to_string()))?,
    );
    Ok(())
}

/// A series matcher of the label APIs: a selector, optionally behind a profile type
/// (`<profile type>{...}`, as the legacy endpoints' `query` is), which then selects that type.
fn series_selector(matcher: &str) -> Result<Selector> {
    let mut selector = selector::parse(matcher)
        .map_err(|e| QueryError::invalid(format!("matcher {matcher:?}: {e}")))?;
    if let Some(metric) = selector.metric.take() {
        select_profile_type(&mut selector, &self::profile_type(&metric)?)?;
    }
    Ok(selector)
}

/// A legacy query string, `<profile type>{matchers}` or a bare selector, as one selector (the
/// profile type becomes a `__profile_type__` matcher).
pub fn typed_selector(query: &str) -> Result<Selector> {
    let (profile_type, matchers) = match query.find('{') {
        Some(0) => (None, query),
        Some(i) => (Some(self::profile_type(&query[..i])?), &query[i..]),
        None => {
            return Err(QueryError::invalid(format!(
                "query {query:?} must be a selector {{...}} or <profile type>{{...}}"
            )));
        }
    };
    let mut selector = selector::parse(matchers)
        .map_err(|e| QueryError::invalid(format!("query {query:?}: {e}")))?;
    if let Some(pt) = profile_type {
        select_profile_type(&mut selector, &pt)?;
    }
    Ok(selector)
}

/// A diff of two trees, with the union it builds charged to the query's budget (at most the
/// two sides' size).
pub fn charged_diff(
    budget: &QueryBudget,
    left: &Tree,
    right: &Tree,
    max_nodes: usize,
) -> Result<FlameGraphDiff> {
    let mut union = budget.reservation("diff union tree");
    budget.hold(
        &mut union,
        "the diff's union tree",
        left.heap_bytes() + right.heap_bytes(),
    )?;
    Ok(profusion_model::tree::diff(left, right, max_nodes))
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

#[async_trait]
impl<E: ReadExecutor> ReadService for QueryApi<E> {
    fn context(&self, scope: TenantScope) -> QueryContext {
        QueryContext {
            scope,
            budget: self.executor.budget(),
        }
    }

    fn time_range(&self, start: i64, end: i64) -> Result<TimeRange> {
        QueryApi::time_range(self, start, end)
    }

    async fn profile_types(
        &self,
        ctx: &QueryContext,
        req: ProfileTypesRequest,
    ) -> Result<ProfileTypesResponse> {
        let range = if req.start == 0 && req.end == 0 {
            let now = now_millis();
            TimeRange::from_millis(now - 3_600_000, now)
        } else {
            self.time_range(req.start, req.end)?
        };
        let ids = self
            .executor
            .execute(ctx, ReadJob::ProfileTypes { range })
            .await?
            .into_profile_types()?;
        Ok(ProfileTypesResponse {
            profile_types: ids
                .iter()
                .filter_map(|id| ProfileType::parse(id).ok())
                .map(|pt| proto_profile_type(&pt))
                .collect(),
        })
    }

    async fn series_to_delete(
        &self,
        ctx: &QueryContext,
        selectors: &[String],
        range: TimeRange,
    ) -> Result<Vec<SeriesLabels>> {
        if selectors.is_empty() {
            return Err(QueryError::invalid(
                "no match[] selector: a deletion names the series it deletes",
            ));
        }
        let selectors = selectors
            .iter()
            .map(|m| {
                let selector = series_selector(m)?;
                if selector.matchers.is_empty() {
                    // As Prometheus: `{}` deleting everything is too easy a mistake.
                    return Err(QueryError::invalid(format!(
                        "match[] {m:?} has no matcher; name at least one label"
                    )));
                }
                Ok(selector)
            })
            .collect::<Result<Vec<_>>>()?;
        self.executor
            .execute(
                ctx,
                ReadJob::Series {
                    range,
                    selectors,
                    profile_type: None,
                },
            )
            .await?
            .into_labels()
    }

    async fn label_names(
        &self,
        ctx: &QueryContext,
        req: LabelNamesRequest,
    ) -> Result<LabelNamesResponse> {
        let series = self
            .matching_series(ctx, &req.matchers, req.start, req.end)
            .await?;
        let names: BTreeSet<String> = series
            .into_iter()
            .flat_map(|s| s.labels.into_iter().map(|(k, _)| k))
            .collect();
        Ok(LabelNamesResponse {
            names: names.into_iter().collect(),
        })
    }

    async fn label_values(
        &self,
        ctx: &QueryContext,
        req: LabelValuesRequest,
    ) -> Result<LabelValuesResponse> {
        if req.name.is_empty() {
            return Err(QueryError::invalid("label name is required"));
        }
        let series = self
            .matching_series(ctx, &req.matchers, req.start, req.end)
            .await?;
        let values: BTreeSet<String> = series
            .iter()
            .filter_map(|s| s.get(&req.name).map(str::to_owned))
            .collect();
        Ok(LabelValuesResponse {
            names: values.into_iter().collect(),
        })
    }

    async fn series(&self, ctx: &QueryContext, req: SeriesRequest) -> Result<SeriesResponse> {
        let series = self
            .matching_series(ctx, &req.matchers, req.start, req.end)
            .await?;
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

    async fn select_merge_stacktraces(
        &self,
        ctx: &QueryContext,
        req: SelectMergeStacktracesRequest,
    ) -> Result<SelectMergeStacktracesResponse> {
        let q = self
            .merge_query(
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
        if format == ProfileFormat::Pprof {
            return Ok(SelectMergeStacktracesResponse {
                pprof: Some(PprofProfile {
                    profile: Some(self.merged_pprof(ctx, &q).await?),
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
        let charged = self.merged_tree(ctx, &q, truncate_at).await?;
        let tree = &charged.value;
        Ok(match format {
            ProfileFormat::Tree => SelectMergeStacktracesResponse {
                tree: tree.tree_bytes(q.max_nodes).into(),
                ..Default::default()
            },
            ProfileFormat::Dot => SelectMergeStacktracesResponse {
                dot: crate::dot::to_dot(
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
        &self,
        ctx: &QueryContext,
        req: SelectMergeSpanProfileRequest,
    ) -> Result<SelectMergeSpanProfileResponse> {
        if req.span_selector.is_empty() {
            return Err(QueryError::invalid(
                "span_selector must name at least one span",
            ));
        }
        let q = self
            .merge_query(
                &req.profile_type_id,
                &req.label_selector,
                req.start,
                req.end,
                req.max_nodes,
            )?
            .narrowed(None, &[], &req.span_selector, &[])?;
        let charged = self.merged_tree(ctx, &q, q.max_nodes).await?;
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
        &self,
        ctx: &QueryContext,
        req: SelectMergeProfileRequest,
    ) -> Result<Profile> {
        let q = self
            .merge_query(
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
        self.merged_pprof(ctx, &q).await
    }

    async fn select_series(
        &self,
        ctx: &QueryContext,
        req: SelectSeriesRequest,
    ) -> Result<SelectSeriesResponse> {
        let q = self.merge_query(
            &req.profile_type_id,
            &req.label_selector,
            req.start,
            req.end,
            None,
        )?;
        if !(req.step > 0.0 && req.step.is_finite()) {
            return Err(QueryError::invalid(format!(
                "step must be a positive number of seconds, got {}",
                req.step
            )));
        }
        if req.stack_trace_selector.is_some() {
            return Err(QueryError {
                source: None,
                status: StatusCode::Unimplemented,
                message: "stack_trace_selector on SelectSeries is not supported yet".into(),
            });
        }
        let limit = match req.limit {
            Some(n) if n < 0 => {
                return Err(QueryError::invalid(format!(
                    "limit must not be negative, got {n}"
                )));
            }
            Some(0) | None => None,
            Some(n) => Some(n as usize),
        };
        let average = req.aggregation == Some(TimeSeriesAggregationType::Average as i32);
        let series = self
            .executor
            .execute(
                ctx,
                ReadJob::SelectSeries(SeriesQuery {
                    profile_type: q.profile_type.id(),
                    selector: q.req.selector.clone(),
                    range: q.req.range,
                    step_millis: (req.step * 1000.0).round() as i64,
                    group_by: req.group_by.clone(),
                    average,
                    limit,
                }),
            )
            .await?
            .into_series()?;
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

    async fn diff(&self, ctx: &QueryContext, req: DiffRequest) -> Result<DiffResponse> {
        let (Some(left), Some(right)) = (req.left, req.right) else {
            return Err(QueryError::invalid("diff needs both left and right"));
        };
        let side = |name: &str, r: &SelectMergeStacktracesRequest| {
            self.merge_query(
                &r.profile_type_id,
                &r.label_selector,
                r.start,
                r.end,
                r.max_nodes,
            )
            .map_err(|e| QueryError::invalid(format!("{name}: {}", e.message)))
        };
        let (l, r) = (side("left", &left)?, side("right", &right)?);
        let (lt, rt) = futures_util::try_join!(
            // A diff unions both trees before truncating: they must stay whole.
            self.merged_tree(ctx, &l, 0),
            self.merged_tree(ctx, &r, 0)
        )?;
        Ok(DiffResponse {
            flamegraph: Some(charged_diff(
                &ctx.budget,
                &lt.value,
                &rt.value,
                l.max_nodes,
            )?),
        })
    }

    async fn sql(
        &self,
        ctx: &QueryContext,
        request: crate::sql::SqlRequest,
    ) -> Result<Charged<SqlTable>> {
        if request.query.trim().is_empty() {
            return Err(QueryError::invalid("SQL: the query is empty"));
        }
        self.executor
            .execute(ctx, ReadJob::Sql(request))
            .await?
            .into_table()
    }

    async fn analyze_query(
        &self,
        ctx: &QueryContext,
        req: AnalyzeQueryRequest,
    ) -> Result<AnalyzeQueryResponse> {
        let range = self.time_range(req.start, req.end)?;
        let selector = typed_selector(&req.query)?;
        let analysis = self
            .executor
            .execute(ctx, ReadJob::Analyze { selector, range })
            .await?
            .into_analysis()?;
        let total_bytes = analysis.scopes.iter().map(|s| s.bytes).sum();
        Ok(AnalyzeQueryResponse {
            query_scopes: analysis
                .scopes
                .into_iter()
                .map(|s| ProtoQueryScope {
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

    async fn get_profile_stats(
        &self,
        ctx: &QueryContext,
        _req: GetProfileStatsRequest,
    ) -> Result<GetProfileStatsResponse> {
        Ok(
            match self
                .executor
                .execute(ctx, ReadJob::ProfileStats)
                .await?
                .into_profile_stats()?
            {
                Some((oldest, newest)) => GetProfileStatsResponse {
                    data_ingested: true,
                    oldest_profile_time: oldest,
                    newest_profile_time: newest,
                },
                None => GetProfileStatsResponse::default(),
            },
        )
    }
}
