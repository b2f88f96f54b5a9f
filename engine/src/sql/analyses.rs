//! The analysis table functions of SQL: the common questions of profile analysis, answered by
//! the querier's own reads (the merged call tree of a flame graph, the totals of the series
//! API), so SQL and the querier API always agree.
//!
//! | function | rows |
//! |---|---|
//! | `top_functions(type, selector [, start, end])` | `function_name, self, total` |
//! | `flame_graph(type, selector [, start, end [, max_nodes]])` | `node_id, parent_id, depth, function_name, self, total` |
//! | `stacks_through(type, selector, function [, start, end])` | `stack, value` |
//! | `totals_over_time(type, selector, step, label [, start, end])` | `time, <label>, total` |
//! | `compare_ranges(type, selector, start_a, end_a, start_b, end_b)` | `function_name, self_a, self_b, total_a, total_b` |
//!
//! Arguments are constants: a profile type ID, a label selector as the querier API takes it
//! (`'{}'` for every series), times as `TIMESTAMP`s, RFC 3339 strings or Unix seconds (start
//! inclusive, end exclusive; no start or end means all time), a step as an `INTERVAL` or
//! seconds. They are checked when the query is planned; the read runs when it is executed,
//! within the query's memory budget.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, ListBuilder, RecordBatch, RecordBatchOptions, StringArray,
    StringBuilder, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{ColumnarValue, Expr};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use profusion_model::time::TimeRange;
use profusion_model::tree::{Tree, Visit};

use super::views::time_type;
use crate::budget::QueryBudget;
use crate::querier::{MergeRequest, Querier, SeriesQuery};
use crate::selector::{self, Selector};
use crate::symbolize::StackFilter;

/// What the analyses of one SQL query read: the querier, the query's budget and its tenants.
#[derive(Debug)]
pub struct AnalysisScope {
    pub querier: Arc<Querier>,
    pub budget: QueryBudget,
    pub tenants: Vec<String>,
}

/// Registers every analysis function in `ctx`.
pub(crate) fn register(ctx: &SessionContext, scope: AnalysisScope) {
    let scope = Arc::new(scope);
    for kind in Kind::ALL {
        ctx.register_udtf(
            kind.name(),
            Arc::new(AnalysisFunction {
                kind,
                scope: Arc::clone(&scope),
            }),
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TopFunctions,
    FlameGraph,
    StacksThrough,
    TotalsOverTime,
    CompareRanges,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::TopFunctions,
        Kind::FlameGraph,
        Kind::StacksThrough,
        Kind::TotalsOverTime,
        Kind::CompareRanges,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::TopFunctions => "top_functions",
            Kind::FlameGraph => "flame_graph",
            Kind::StacksThrough => "stacks_through",
            Kind::TotalsOverTime => "totals_over_time",
            Kind::CompareRanges => "compare_ranges",
        }
    }

    /// The arguments, as the error for a wrong call shows them.
    fn usage(self) -> &'static str {
        match self {
            Kind::TopFunctions => "top_functions(profile_type, selector [, start, end])",
            Kind::FlameGraph => "flame_graph(profile_type, selector [, start, end [, max_nodes]])",
            Kind::StacksThrough => {
                "stacks_through(profile_type, selector, function_name [, start, end])"
            }
            Kind::TotalsOverTime => {
                "totals_over_time(profile_type, selector, step, label [, start, end])"
            }
            Kind::CompareRanges => {
                "compare_ranges(profile_type, selector, start_a, end_a, start_b, end_b)"
            }
        }
    }

    /// How many arguments it takes, at least and at most.
    fn arity(self) -> (usize, usize) {
        match self {
            Kind::TopFunctions => (2, 4),
            Kind::FlameGraph => (2, 5),
            Kind::StacksThrough => (3, 5),
            Kind::TotalsOverTime => (4, 6),
            Kind::CompareRanges => (6, 6),
        }
    }
}

/// One analysis function, bound to a query's scope.
#[derive(Debug)]
struct AnalysisFunction {
    kind: Kind,
    scope: Arc<AnalysisScope>,
}

impl TableFunctionImpl for AnalysisFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        let args = Arguments::new(self.kind, args.exprs(), args.session())?;
        let request = Analysis::parse(self.kind, &args)?;
        Ok(Arc::new(AnalysisTable {
            schema: request.schema(),
            request,
            scope: Arc::clone(&self.scope),
        }))
    }
}

/// A function's arguments, evaluated to constants.
struct Arguments {
    kind: Kind,
    values: Vec<ScalarValue>,
}

impl Arguments {
    fn new(kind: Kind, exprs: &[Expr], session: &dyn Session) -> Result<Self> {
        let (min, max) = kind.arity();
        if exprs.len() < min || exprs.len() > max {
            return Err(DataFusionError::Plan(format!(
                "{} takes {}, not {} argument(s)",
                kind.name(),
                kind.usage(),
                exprs.len()
            )));
        }
        let values = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| constant(e, session).map_err(|e| argument(kind, i, e)))
            .collect::<Result<_>>()?;
        Ok(Self { kind, values })
    }

    fn error(&self, i: usize, message: impl fmt::Display) -> DataFusionError {
        argument(self.kind, i, message)
    }

    fn get(&self, i: usize) -> Option<&ScalarValue> {
        self.values.get(i).filter(|v| !v.is_null())
    }

    fn string(&self, i: usize) -> Result<String> {
        match self.get(i) {
            Some(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::Utf8View(Some(s))
                | ScalarValue::LargeUtf8(Some(s)),
            ) => Ok(s.clone()),
            other => Err(self.error(i, format!("must be a string, not {other:?}"))),
        }
    }

    fn profile_type(&self, i: usize) -> Result<String> {
        crate::service::profile_type(&self.string(i)?)
            .map(|t| t.id())
            .map_err(|e| self.error(i, e.message))
    }

    fn selector(&self, i: usize) -> Result<Selector> {
        selector::parse(&self.string(i)?).map_err(|e| self.error(i, e))
    }

    /// A moment in Unix nanoseconds, `None` when the argument is absent or NULL.
    fn time(&self, i: usize) -> Result<Option<i64>> {
        let Some(value) = self.get(i) else {
            return Ok(None);
        };
        let nanos = match value {
            ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
            ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
            ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
            ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
            ScalarValue::Int64(Some(v)) => v.checked_mul(1_000_000_000),
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => {
                datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s).ok()
            }
            _ => None,
        };
        nanos.map(Some).ok_or_else(|| {
            self.error(
                i,
                format!("must be a TIMESTAMP, an RFC 3339 string or Unix seconds, not {value}"),
            )
        })
    }

    /// `[start, end)` of arguments `i` and `i + 1`, all time when absent.
    fn range(&self, i: usize) -> Result<TimeRange> {
        let start = self.time(i)?.unwrap_or(i64::MIN);
        let Some(end) = self.time(i + 1)? else {
            return Ok(TimeRange {
                start,
                end: i64::MAX,
            });
        };
        if end <= start {
            return Err(self.error(i + 1, "the end must be after the start"));
        }
        Ok(TimeRange {
            start,
            end: end - 1,
        })
    }

    /// A positive duration in milliseconds.
    fn step_millis(&self, i: usize) -> Result<i64> {
        let millis = match self.get(i) {
            Some(ScalarValue::IntervalMonthDayNano(Some(v))) if v.months == 0 => {
                i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000
            }
            Some(ScalarValue::IntervalDayTime(Some(v))) => {
                i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds)
            }
            Some(ScalarValue::Int64(Some(seconds))) => seconds.saturating_mul(1000),
            other => {
                return Err(self.error(
                    i,
                    format!("must be an INTERVAL of days or less, or seconds, not {other:?}"),
                ));
            }
        };
        if millis <= 0 {
            return Err(self.error(i, "the step must be at least a millisecond"));
        }
        Ok(millis)
    }

    fn count(&self, i: usize) -> Result<usize> {
        match self.get(i) {
            None => Ok(0),
            Some(ScalarValue::Int64(Some(n))) if *n >= 0 => Ok(*n as usize),
            Some(other) => Err(self.error(i, format!("must be a count, not {other}"))),
        }
    }
}

/// The error for argument `i` of a `kind` call.
fn argument(kind: Kind, i: usize, message: impl fmt::Display) -> DataFusionError {
    DataFusionError::Plan(format!(
        "{}: argument {} {message} (usage: {})",
        kind.name(),
        i + 1,
        kind.usage()
    ))
}

/// `expr` evaluated, if it is a constant (`now() - INTERVAL '1 hour'` is one).
fn constant(expr: &Expr, session: &dyn Session) -> Result<ScalarValue> {
    let props = session.execution_props();
    let simplifier = ExprSimplifier::new(
        SimplifyContext::builder()
            .with_query_execution_start_time(props.query_execution_start_time)
            .build(),
    );
    let expr = simplifier.simplify(expr.clone())?;
    if let Expr::Literal(value, _) = &expr {
        return Ok(value.clone());
    }
    let physical = session.create_physical_expr(expr, &DFSchema::empty())?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match physical.evaluate(&one_row) {
        Ok(ColumnarValue::Scalar(value)) => Ok(value),
        Ok(ColumnarValue::Array(array)) => ScalarValue::try_from_array(&array, 0),
        Err(_) => Err(DataFusionError::Plan("must be a constant".into())),
    }
}

/// What one call asks.
#[derive(Debug, Clone)]
enum Analysis {
    TopFunctions(MergeRequest),
    FlameGraph(MergeRequest, usize),
    StacksThrough(MergeRequest, String),
    TotalsOverTime(SeriesQuery),
    CompareRanges(MergeRequest, MergeRequest),
}

impl Analysis {
    fn parse(kind: Kind, args: &Arguments) -> Result<Self> {
        let merge = |range: TimeRange| -> Result<MergeRequest> {
            Ok(MergeRequest {
                profile_type: args.profile_type(0)?,
                selector: args.selector(1)?,
                range,
                profile_ids: Vec::new(),
                span_ids: Vec::new(),
                stacks: StackFilter::default(),
            })
        };
        Ok(match kind {
            Kind::TopFunctions => Analysis::TopFunctions(merge(args.range(2)?)?),
            Kind::FlameGraph => Analysis::FlameGraph(merge(args.range(2)?)?, args.count(4)?),
            Kind::StacksThrough => Analysis::StacksThrough(merge(args.range(3)?)?, args.string(2)?),
            Kind::TotalsOverTime => {
                let label = args.string(3)?;
                if matches!(label.as_str(), "time" | "total") {
                    return Err(args.error(3, "names a column of the answer; pick a label"));
                }
                Analysis::TotalsOverTime(SeriesQuery {
                    profile_type: args.profile_type(0)?,
                    selector: args.selector(1)?,
                    range: args.range(4)?,
                    step_millis: args.step_millis(2)?,
                    group_by: if label.is_empty() {
                        vec![]
                    } else {
                        vec![label]
                    },
                    average: false,
                    limit: None,
                })
            }
            Kind::CompareRanges => {
                Analysis::CompareRanges(merge(args.range(2)?)?, merge(args.range(4)?)?)
            }
        })
    }

    fn schema(&self) -> SchemaRef {
        let int = |name: &str| Field::new(name, DataType::Int64, false);
        let name = || Field::new("function_name", DataType::Utf8, false);
        Arc::new(Schema::new(match self {
            Analysis::TopFunctions(_) => vec![name(), int("self"), int("total")],
            Analysis::FlameGraph(..) => vec![
                int("node_id"),
                Field::new("parent_id", DataType::Int64, true),
                Field::new("depth", DataType::Int32, false),
                name(),
                int("self"),
                int("total"),
            ],
            Analysis::StacksThrough(..) => vec![
                Field::new(
                    "stack",
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    false,
                ),
                int("value"),
            ],
            Analysis::TotalsOverTime(q) => {
                let mut fields = vec![Field::new("time", time_type(), false)];
                fields.extend(
                    q.group_by
                        .iter()
                        .map(|label| Field::new(label, DataType::Utf8, true)),
                );
                fields.push(int("total"));
                fields
            }
            Analysis::CompareRanges(..) => vec![
                name(),
                int("self_a"),
                int("self_b"),
                int("total_a"),
                int("total_b"),
            ],
        }))
    }

    /// Runs the read and gives its rows, in `schema`.
    async fn run(
        &self,
        scope: &AnalysisScope,
        schema: SchemaRef,
    ) -> crate::error::Result<RecordBatch> {
        async fn tree(
            scope: &AnalysisScope,
            req: &MergeRequest,
            max_nodes: usize,
        ) -> crate::error::Result<crate::budget::Charged<Tree>> {
            scope
                .querier
                .merge_tree(&scope.budget, &scope.tenants, req, max_nodes)
                .await
        }
        let columns: Vec<ArrayRef> = match self {
            Analysis::TopFunctions(req) => {
                let mut rows: Vec<_> = function_values(&tree(scope, req, 0).await?.value)
                    .into_iter()
                    .collect();
                rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                vec![
                    strings(rows.iter().map(|r| r.0.as_str())),
                    ints(rows.iter().map(|r| r.1.0)),
                    ints(rows.iter().map(|r| r.1.1)),
                ]
            }
            Analysis::FlameGraph(req, max_nodes) => {
                let tree = tree(scope, req, *max_nodes).await?;
                let nodes = flame_graph_nodes(&tree.value);
                vec![
                    ints(nodes.iter().map(|n| n.id)),
                    Arc::new(Int64Array::from_iter(nodes.iter().map(|n| n.parent))),
                    Arc::new(Int32Array::from_iter_values(nodes.iter().map(|n| n.depth))),
                    strings(nodes.iter().map(|n| n.name)),
                    ints(nodes.iter().map(|n| n.self_value)),
                    ints(nodes.iter().map(|n| n.total)),
                ]
            }
            Analysis::StacksThrough(req, function) => {
                let tree = tree(scope, req, 0).await?;
                let mut rows: Vec<(Vec<&str>, i64)> = Vec::new();
                tree.value.for_each_stack(|stack, value| {
                    if stack.contains(&function.as_str()) {
                        rows.push((stack.to_vec(), value));
                    }
                });
                rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let mut stacks = ListBuilder::new(StringBuilder::new())
                    .with_field(Arc::new(Field::new("item", DataType::Utf8, true)));
                for (stack, _) in &rows {
                    stacks.append_value(stack.iter().map(Some));
                }
                vec![Arc::new(stacks.finish()), ints(rows.iter().map(|r| r.1))]
            }
            Analysis::TotalsOverTime(query) => {
                let series = scope
                    .querier
                    .select_series(&scope.budget, &scope.tenants, query)
                    .await?;
                let mut rows: Vec<(i64, Option<&str>, i64)> = series
                    .iter()
                    .flat_map(|s| {
                        let label = s.labels.first().map(|(_, v)| v.as_str());
                        // Points are the series API's sums, exact below 2^53.
                        s.points
                            .iter()
                            .map(move |&(ms, total)| (ms, label, total as i64))
                    })
                    .collect();
                rows.sort();
                let mut columns: Vec<ArrayRef> = vec![Arc::new(
                    TimestampNanosecondArray::from_iter_values(
                        rows.iter().map(|r| r.0.saturating_mul(1_000_000)),
                    )
                    .with_timezone("UTC"),
                )];
                if !query.group_by.is_empty() {
                    columns.push(Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))));
                }
                columns.push(ints(rows.iter().map(|r| r.2)));
                columns
            }
            Analysis::CompareRanges(a, b) => {
                let (a, b) = futures_util::try_join!(tree(scope, a, 0), tree(scope, b, 0))?;
                let (a, b) = (function_values(&a.value), function_values(&b.value));
                let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
                names.sort();
                names.dedup();
                let side = |values: &HashMap<String, (i64, i64)>, name: &String| {
                    values.get(name).copied().unwrap_or_default()
                };
                // The largest changes of self first: what got slower or faster.
                names.sort_by_key(|n| {
                    std::cmp::Reverse(side(&b, n).0.saturating_sub(side(&a, n).0).unsigned_abs())
                });
                vec![
                    strings(names.iter().map(|n| n.as_str())),
                    ints(names.iter().map(|n| side(&a, n).0)),
                    ints(names.iter().map(|n| side(&b, n).0)),
                    ints(names.iter().map(|n| side(&a, n).1)),
                    ints(names.iter().map(|n| side(&b, n).1)),
                ]
            }
        };
        Ok(RecordBatch::try_new(schema, columns).map_err(DataFusionError::from)?)
    }
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn ints(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}

/// Each function's `(self, total)` in a tree: what its own frames hold, and what the stacks
/// through it hold (a recursive function's inner calls are not counted again).
fn function_values(tree: &Tree) -> HashMap<String, (i64, i64)> {
    crate::dot::CallGraph::of(tree).functions
}

/// One node of a flame graph as a row.
struct FlameNode<'a> {
    id: i64,
    parent: Option<i64>,
    depth: i32,
    name: &'a str,
    self_value: i64,
    total: i64,
}

/// The tree's nodes depth first, children in name order, numbered from 1 in that order.
fn flame_graph_nodes(tree: &Tree) -> Vec<FlameNode<'_>> {
    let mut nodes = Vec::with_capacity(tree.len());
    let mut parents: Vec<i64> = Vec::new();
    tree.walk(|visit| match visit {
        Visit::Enter {
            name,
            self_value,
            total,
            ..
        } => {
            let id = nodes.len() as i64 + 1;
            nodes.push(FlameNode {
                id,
                parent: parents.last().copied(),
                depth: parents.len() as i32,
                name,
                self_value,
                total,
            });
            parents.push(id);
        }
        Visit::Exit => {
            parents.pop();
        }
    });
    nodes
}

/// The rows of one analysis call, read when the query runs.
#[derive(Debug)]
struct AnalysisTable {
    request: Analysis,
    schema: SchemaRef,
    scope: Arc<AnalysisScope>,
}

#[async_trait]
impl TableProvider for AnalysisTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self
            .request
            .run(&self.scope, Arc::clone(&self.schema))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(stacks: &[(&[&str], i64)]) -> Tree {
        let mut tree = Tree::new();
        for (stack, value) in stacks {
            tree.insert(stack, *value).unwrap();
        }
        tree
    }

    #[test]
    fn flame_graph_rows_name_their_parents() {
        let t = tree(&[(&["a", "b"], 1), (&["a", "c"], 2)]);
        let rows: Vec<_> = flame_graph_nodes(&t)
            .iter()
            .map(|n| (n.id, n.parent, n.depth, n.name.to_owned(), n.total))
            .collect();
        assert_eq!(
            rows,
            vec![
                (1, None, 0, "a".to_owned(), 3),
                (2, Some(1), 1, "b".to_owned(), 1),
                (3, Some(1), 1, "c".to_owned(), 2),
            ]
        );
    }
}
