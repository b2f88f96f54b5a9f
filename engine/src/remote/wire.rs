//! Read jobs and their answers as bytes, for a querier in another process: jobs as JSON,
//! answers as a kind byte followed by the tree bytes, the pprof protobuf, or JSON.

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use profusion_model::time::TimeRange;
use profusion_model::tree::Tree;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::budget::{Charged, QueryBudget};
use crate::error::{QueryError, Result};
use crate::querier::{
    MergeRequest, QueryAnalysis, QueryScope, SeriesLabels, SeriesQuery, SqlRows, SqlTable,
    TimeSeries,
};
use crate::selector::{MatchOp, Matcher, Selector};
use crate::service::{ReadAnswer, ReadJob};
use crate::symbolize::StackFilter;

#[derive(Debug, Serialize, Deserialize)]
struct WireSelector {
    metric: Option<String>,
    /// `(name, op, value)`, the op as written (`=`, `!=`, `=~`, `!~`).
    matchers: Vec<(String, String, String)>,
}

impl From<&Selector> for WireSelector {
    fn from(s: &Selector) -> Self {
        Self {
            metric: s.metric.clone(),
            matchers: s
                .matchers
                .iter()
                .map(|m| (m.name.clone(), m.op.to_string(), m.value.clone()))
                .collect(),
        }
    }
}

impl WireSelector {
    fn decode(self) -> Result<Selector> {
        let matchers = self
            .matchers
            .into_iter()
            .map(|(name, op, value)| {
                let op = match op.as_str() {
                    "=" => MatchOp::Equal,
                    "!=" => MatchOp::NotEqual,
                    "=~" => MatchOp::Regex,
                    "!~" => MatchOp::NotRegex,
                    other => return Err(QueryError::internal(format!("matcher op {other:?}"))),
                };
                Matcher::new(name, op, value).map_err(|e| QueryError::internal(e.message))
            })
            .collect::<Result<_>>()?;
        Ok(Selector {
            metric: self.metric,
            matchers,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WireMerge {
    profile_type: String,
    selector: WireSelector,
    range: TimeRange,
    profile_ids: Vec<String>,
    span_ids: Vec<u64>,
    stacks: StackFilter,
}

impl From<&MergeRequest> for WireMerge {
    fn from(r: &MergeRequest) -> Self {
        Self {
            profile_type: r.profile_type.clone(),
            selector: (&r.selector).into(),
            range: r.range,
            profile_ids: r.profile_ids.clone(),
            span_ids: r.span_ids.clone(),
            stacks: r.stacks.clone(),
        }
    }
}

impl WireMerge {
    fn decode(self) -> Result<MergeRequest> {
        Ok(MergeRequest {
            profile_type: self.profile_type,
            selector: self.selector.decode()?,
            range: self.range,
            profile_ids: self.profile_ids,
            span_ids: self.span_ids,
            stacks: self.stacks,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WireSeriesQuery {
    profile_type: String,
    selector: WireSelector,
    range: TimeRange,
    step_millis: i64,
    group_by: Vec<String>,
    average: bool,
    limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
enum WireJob {
    MergeTree {
        request: WireMerge,
        max_nodes: usize,
    },
    MergePprof {
        request: WireMerge,
    },
    SelectSeries(WireSeriesQuery),
    Series {
        range: TimeRange,
        selectors: Vec<WireSelector>,
        profile_type: Option<String>,
    },
    ProfileTypes {
        range: TimeRange,
    },
    ProfileStats,
    Analyze {
        selector: WireSelector,
        range: TimeRange,
    },
    Sql {
        query: String,
        /// The parameters as an Arrow IPC stream of one row; empty when none.
        #[serde(default)]
        params: Vec<u8>,
        #[serde(default)]
        schema_only: bool,
    },
}

/// A job's bytes.
pub(crate) fn encode_job(job: &ReadJob) -> Result<Vec<u8>> {
    let wire = match job {
        ReadJob::MergeTree { request, max_nodes } => WireJob::MergeTree {
            request: request.into(),
            max_nodes: *max_nodes,
        },
        ReadJob::MergePprof { request } => WireJob::MergePprof {
            request: request.into(),
        },
        ReadJob::SelectSeries(q) => WireJob::SelectSeries(WireSeriesQuery {
            profile_type: q.profile_type.clone(),
            selector: (&q.selector).into(),
            range: q.range,
            step_millis: q.step_millis,
            group_by: q.group_by.clone(),
            average: q.average,
            limit: q.limit,
        }),
        ReadJob::Series {
            range,
            selectors,
            profile_type,
        } => WireJob::Series {
            range: *range,
            selectors: selectors.iter().map(Into::into).collect(),
            profile_type: profile_type.clone(),
        },
        ReadJob::ProfileTypes { range } => WireJob::ProfileTypes { range: *range },
        ReadJob::ProfileStats => WireJob::ProfileStats,
        ReadJob::Analyze { selector, range } => WireJob::Analyze {
            selector: selector.into(),
            range: *range,
        },
        ReadJob::Sql(request) => WireJob::Sql {
            query: request.query.clone(),
            params: crate::sql::params_ipc(&request.params)?,
            schema_only: request.schema_only,
        },
    };
    Ok(serde_json::to_vec(&wire).expect("jobs serialize"))
}

/// The job `bytes` encode.
pub(crate) fn decode_job(bytes: &[u8]) -> Result<ReadJob> {
    let wire: WireJob = serde_json::from_slice(bytes)
        .map_err(|e| QueryError::internal(format!("decoding a read job: {e}")))?;
    Ok(match wire {
        WireJob::MergeTree { request, max_nodes } => ReadJob::MergeTree {
            request: request.decode()?,
            max_nodes,
        },
        WireJob::MergePprof { request } => ReadJob::MergePprof {
            request: request.decode()?,
        },
        WireJob::SelectSeries(q) => ReadJob::SelectSeries(SeriesQuery {
            profile_type: q.profile_type,
            selector: q.selector.decode()?,
            range: q.range,
            step_millis: q.step_millis,
            group_by: q.group_by,
            average: q.average,
            limit: q.limit,
        }),
        WireJob::Series {
            range,
            selectors,
            profile_type,
        } => ReadJob::Series {
            range,
            selectors: selectors
                .into_iter()
                .map(WireSelector::decode)
                .collect::<Result<_>>()?,
            profile_type,
        },
        WireJob::ProfileTypes { range } => ReadJob::ProfileTypes { range },
        WireJob::ProfileStats => ReadJob::ProfileStats,
        WireJob::Analyze { selector, range } => ReadJob::Analyze {
            selector: selector.decode()?,
            range,
        },
        WireJob::Sql {
            query,
            params,
            schema_only,
        } => ReadJob::Sql(crate::sql::SqlRequest {
            query,
            params: crate::sql::params_from_ipc(&params)?,
            schema_only,
        }),
    })
}

/// Label pairs, in order.
type LabelPairs = Vec<(String, String)>;

/// The answers that travel as JSON.
#[derive(Debug, Serialize, Deserialize)]
enum JsonAnswer {
    Series(Vec<(LabelPairs, Vec<(i64, f64)>)>),
    Labels(Vec<(u64, LabelPairs)>),
    ProfileTypes(Vec<String>),
    ProfileStats(Option<(i64, i64)>),
    Analysis {
        /// `(component, components, blocks, series, profiles, samples, bytes)`.
        scopes: Vec<(String, u64, u64, u64, u64, u64, u64)>,
        matching_series: u64,
    },
}

const TREE: u8 = 1;
const PPROF: u8 = 2;
const JSON: u8 = 3;
const ARROW: u8 = 4;

/// A table as an Arrow IPC stream (its schema, then its batches).
pub(crate) fn table_ipc(table: &SqlTable) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &table.schema)
        .map_err(|e| QueryError::internal(format!("encoding an Arrow answer: {e}")))?;
    for batch in &table.batches {
        writer
            .write(batch)
            .map_err(|e| QueryError::internal(format!("encoding an Arrow answer: {e}")))?;
    }
    writer
        .finish()
        .map_err(|e| QueryError::internal(format!("encoding an Arrow answer: {e}")))?;
    drop(writer);
    Ok(out)
}

/// An answer's bytes.
pub(crate) fn encode_answer(answer: &ReadAnswer) -> Result<Vec<u8>> {
    let json = |a: JsonAnswer| {
        let mut out = vec![JSON];
        serde_json::to_writer(&mut out, &a).expect("answers serialize");
        out
    };
    Ok(match answer {
        ReadAnswer::Encoded(bytes) => bytes.clone(),
        ReadAnswer::Table(table) => {
            let mut out = vec![ARROW];
            out.extend(table_ipc(&table.value)?);
            out
        }
        ReadAnswer::Tree(tree) => {
            let mut out = vec![TREE];
            out.extend(tree.value.tree_bytes(0));
            out
        }
        ReadAnswer::Pprof(profile) => {
            let mut out = vec![PPROF];
            profile.encode(&mut out).expect("a Vec grows");
            out
        }
        ReadAnswer::Series(series) => json(JsonAnswer::Series(
            series
                .iter()
                .map(|s| (s.labels.clone(), s.points.clone()))
                .collect(),
        )),
        ReadAnswer::Labels(labels) => json(JsonAnswer::Labels(
            labels
                .iter()
                .map(|l| (l.fingerprint, l.labels.clone()))
                .collect(),
        )),
        ReadAnswer::ProfileTypes(types) => json(JsonAnswer::ProfileTypes(types.clone())),
        ReadAnswer::ProfileStats(stats) => json(JsonAnswer::ProfileStats(*stats)),
        ReadAnswer::Analysis(a) => json(JsonAnswer::Analysis {
            scopes: a
                .scopes
                .iter()
                .map(|s| {
                    (
                        s.component.to_owned(),
                        s.components,
                        s.blocks,
                        s.series,
                        s.profiles,
                        s.samples,
                        s.bytes,
                    )
                })
                .collect(),
            matching_series: a.matching_series,
        }),
    })
}

/// The answer `bytes` encode; a tree is charged to `budget` as it is rebuilt.
pub(crate) fn decode_answer(bytes: &[u8], budget: &QueryBudget) -> Result<ReadAnswer> {
    let Some((&kind, body)) = bytes.split_first() else {
        return Err(QueryError::internal("an empty answer from a querier"));
    };
    match kind {
        TREE => {
            let mut reservation = budget.reservation("flame-graph tree from a querier");
            let tree = Tree::from_tree_bytes_charged(body, budget.tree_charge(&mut reservation))?;
            Ok(ReadAnswer::Tree(Charged::new(tree, reservation)))
        }
        ARROW => {
            let rows = StreamReader::try_new(body, None)
                .map_err(|e| QueryError::internal(format!("an Arrow answer: {e}")))?;
            let mut answer = SqlRows::new(rows.schema(), budget, "SQL answer from a querier");
            for batch in rows {
                answer.push(
                    batch.map_err(|e| QueryError::internal(format!("an Arrow answer: {e}")))?,
                )?;
            }
            Ok(ReadAnswer::Table(answer.finish()))
        }
        PPROF => Ok(ReadAnswer::Pprof(
            profusion_proto::google::v1::Profile::decode(body)
                .map_err(|e| QueryError::internal(format!("a pprof answer: {e}")))?,
        )),
        JSON => {
            let answer: JsonAnswer = serde_json::from_slice(body)
                .map_err(|e| QueryError::internal(format!("decoding an answer: {e}")))?;
            Ok(match answer {
                JsonAnswer::Series(series) => ReadAnswer::Series(
                    series
                        .into_iter()
                        .map(|(labels, points)| TimeSeries { labels, points })
                        .collect(),
                ),
                JsonAnswer::Labels(labels) => ReadAnswer::Labels(
                    labels
                        .into_iter()
                        .map(|(fingerprint, labels)| SeriesLabels {
                            fingerprint,
                            labels,
                        })
                        .collect(),
                ),
                JsonAnswer::ProfileTypes(types) => ReadAnswer::ProfileTypes(types),
                JsonAnswer::ProfileStats(stats) => ReadAnswer::ProfileStats(stats),
                JsonAnswer::Analysis {
                    scopes,
                    matching_series,
                } => ReadAnswer::Analysis(QueryAnalysis {
                    scopes: scopes
                        .into_iter()
                        .map(
                            |(component, components, blocks, series, profiles, samples, bytes)| {
                                QueryScope {
                                    component: component_name(&component),
                                    components,
                                    blocks,
                                    series,
                                    profiles,
                                    samples,
                                    bytes,
                                }
                            },
                        )
                        .collect(),
                    matching_series,
                }),
            })
        }
        other => Err(QueryError::internal(format!(
            "an answer of unknown kind {other}"
        ))),
    }
}

/// The static name of an analysis component.
fn component_name(name: &str) -> &'static str {
    match name {
        "Head" => "Head",
        "Object storage" => "Object storage",
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_and_answers_round_trip() {
        let selector = crate::selector::parse(r#"{service_name="a", env=~"p.*"}"#).unwrap();
        let job = ReadJob::MergeTree {
            request: MergeRequest {
                profile_type: "process_cpu:cpu:nanoseconds:cpu:nanoseconds".into(),
                selector,
                range: TimeRange { start: 1, end: 2 },
                profile_ids: vec!["x".into()],
                span_ids: vec![7],
                stacks: StackFilter::default(),
            },
            max_nodes: 16,
        };
        let bytes = encode_job(&job).unwrap();
        assert_eq!(encode_job(&decode_job(&bytes).unwrap()).unwrap(), bytes);
        let sql = ReadJob::Sql(crate::sql::SqlRequest {
            query: "SELECT $1".into(),
            params: vec![datafusion::common::ScalarValue::Int64(Some(3))],
            schema_only: true,
        });
        let bytes = encode_job(&sql).unwrap();
        assert_eq!(encode_job(&decode_job(&bytes).unwrap()).unwrap(), bytes);

        let budget = QueryBudget::new(1 << 20);
        let mut tree = Tree::new();
        tree.insert(&["main", "work"], 30).unwrap();
        tree.insert(&["main", "idle"], 10).unwrap();
        let answer = ReadAnswer::Tree(Charged::new(tree.clone(), budget.reservation("t")));
        let back = decode_answer(&encode_answer(&answer).unwrap(), &budget)
            .unwrap()
            .into_tree()
            .unwrap();
        assert_eq!(back.value, tree);
        let series = ReadAnswer::Series(vec![TimeSeries {
            labels: vec![("service_name".into(), "a".into())],
            points: vec![(1000, 2.5)],
        }]);
        let back = decode_answer(&encode_answer(&series).unwrap(), &budget)
            .unwrap()
            .into_series()
            .unwrap();
        assert_eq!(back[0].points, [(1000, 2.5)]);
    }
}
