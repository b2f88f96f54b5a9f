//! The SQL surface: what an analyst's query sees and may do.
//!
//! A SQL query runs in a session over the tenant scope's tables like every other read, but sees
//! them through [`SqlSchema`]: the block tables under their names and columns, plus what makes
//! profile analysis natural without knowing our storage (a `time` timestamp, labels as a map,
//! the `sample_stacks` view), and the analysis table functions of [`analyses`], which run the
//! querier's own flame-graph and series reads. Everything here is read-only by construction
//! ([`read_only`]); this module owns the SQL names users rely on (documented in `docs/sql.md`)
//! and must not change the block tables themselves, which the engine's own plans read.

pub mod analyses;
mod views;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures_util::StreamExt;

pub use views::{SqlSchema, TABLES, time_type};

use crate::budget::{Charged, QueryBudget};
use crate::error::{QueryError, Result};
use crate::querier::{Querier, QuerySession, SqlRows, SqlTable};
use crate::table::ScanWindow;

/// The catalog and schema every query's tables are in (one of each: a tenant scope's).
pub const CATALOG: &str = "profusion";
pub const SCHEMA: &str = "public";

/// What SQL may do: read. No DDL (`CREATE EXTERNAL TABLE` would read the server's files), no
/// DML (`INSERT`, `COPY ... TO` would write them), no statements (`SET` would change the
/// session's limits).
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// A SQL query to run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlRequest {
    /// The query; parameters are `$1`, `$2`, ... or `?`, numbered in order.
    pub query: String,
    /// The parameters' values, in order.
    pub params: Vec<ScalarValue>,
    /// Only the answer's schema is wanted: the query is planned, not run (Flight SQL asks
    /// for the schema before the rows).
    pub schema_only: bool,
}

impl SqlRequest {
    pub fn query(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            ..Self::default()
        }
    }
}

/// The parameters of one execution from a batch of one row (what Flight SQL clients bind).
pub fn params_of_row(batch: &RecordBatch) -> Result<Vec<ScalarValue>> {
    if batch.num_rows() != 1 {
        return Err(QueryError::invalid(format!(
            "parameters bind one row per execution, not {}",
            batch.num_rows()
        )));
    }
    batch
        .columns()
        .iter()
        .map(|column| Ok(ScalarValue::try_from_array(column, 0)?))
        .collect()
}

/// Parameter values as an Arrow IPC stream of one row (empty when there are none), to travel
/// with a job or in a Flight SQL handle.
pub fn params_ipc(params: &[ScalarValue]) -> Result<Vec<u8>> {
    if params.is_empty() {
        return Ok(Vec::new());
    }
    let columns: Vec<ArrayRef> = params
        .iter()
        .map(ScalarValue::to_array)
        .collect::<datafusion::error::Result<_>>()?;
    let schema = Schema::new(
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("${}", i + 1), c.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_new(Arc::new(schema), columns).map_err(ipc_error)?;
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema()).map_err(ipc_error)?;
    writer.write(&batch).map_err(ipc_error)?;
    writer.finish().map_err(ipc_error)?;
    drop(writer);
    Ok(out)
}

/// The parameter values [`params_ipc`] encoded.
pub fn params_from_ipc(bytes: &[u8]) -> Result<Vec<ScalarValue>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = StreamReader::try_new(bytes, None).map_err(ipc_error)?;
    match reader.next() {
        Some(batch) => params_of_row(&batch.map_err(ipc_error)?),
        None => Err(QueryError::invalid("parameters: no row")),
    }
}

fn ipc_error(e: datafusion::arrow::error::ArrowError) -> QueryError {
    QueryError::invalid(format!("parameters: {e}"))
}

/// `query` with each bare `?` placeholder numbered in order (`$1`, `$2`, ...), as DataFusion
/// binds positional parameters; `?` inside literals, identifiers and comments is left alone.
pub fn numbered_placeholders(query: &str) -> Result<String> {
    let tokens = Tokenizer::new(&GenericDialect {}, query)
        .tokenize_with_location()
        .map_err(|e| QueryError::invalid(format!("SQL: {e}")))?;
    // Byte offset of each line start, to turn (line, column) locations into offsets.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(query.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(column).ok()?.checked_sub(1)?;
        Some(start + query[start..].char_indices().nth(column)?.0)
    };
    let mut out = String::with_capacity(query.len() + 8);
    let (mut copied, mut next) = (0, 1);
    for token in &tokens {
        if !matches!(&token.token, Token::Placeholder(p) if p == "?") {
            continue;
        }
        let at = offset(token.span.start.line, token.span.start.column).ok_or_else(|| {
            QueryError::internal(format!(
                "SQL: no offset for the placeholder at {}",
                token.span.start
            ))
        })?;
        out.push_str(&query[copied..at]);
        out.push_str(&format!("${next}"));
        next += 1;
        copied = at + 1;
    }
    out.push_str(&query[copied..]);
    Ok(out)
}

impl Querier {
    /// A session for SQL over `tenants`: the scope's tables as [`SqlSchema`] shows them, and
    /// the analysis functions, all reading within `budget`.
    pub fn sql_session(&self, budget: &QueryBudget, tenants: &[String]) -> Result<SessionContext> {
        let session = self.session(budget, tenants, ScanWindow::default())?;
        // The views are planned against the block tables; the user's query against the views.
        let tables = session.ctx.state();
        let schema = SqlSchema::new(Arc::clone(&session.schema), tables.clone());
        let state = SessionStateBuilder::new_from_existing(tables)
            .with_catalog_list(self.catalogs(Arc::new(schema))?)
            .build();
        let ctx = SessionContext::new_with_state(state);
        analyses::register(
            &ctx,
            analyses::AnalysisScope {
                querier: Arc::new(self.clone()),
                budget: budget.clone(),
                tenants: tenants.to_vec(),
            },
        );
        Ok(ctx)
    }

    /// The rows an export of `tenant` writes for the profiles with times in `[start, end)`
    /// (Unix nanoseconds; see `docs/export.md`), as a stream: the session reads only the
    /// blocks of that range, within `budget`.
    pub async fn export_rows(
        &self,
        budget: &QueryBudget,
        tenant: &str,
        start: i64,
        end: i64,
    ) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
        if end <= start {
            return Err(QueryError::invalid(format!(
                "export: the end ({end}) must be after the start ({start})"
            )));
        }
        let session = self.export_session(budget, tenant, start, end)?;
        let rows = views::export_rows(session.ctx.state(), start, end).await?;
        Ok(rows.execute_stream().await?)
    }

    /// A session over `tenant`'s blocks and head, pruned to `[start, end)` (Unix nanoseconds).
    fn export_session(
        &self,
        budget: &QueryBudget,
        tenant: &str,
        start: i64,
        end: i64,
    ) -> Result<QuerySession> {
        let window = ScanWindow {
            range: Some(profusion_model::time::TimeRange {
                start,
                end: end - 1,
            }),
            ..ScanWindow::default()
        };
        self.session(budget, &[tenant.to_owned()], window)
    }

    /// The first and the last profile time of `tenant` in `[start, end)` (Unix nanoseconds), if
    /// it has profiles there: where an export's reads need to go.
    pub async fn profile_times(
        &self,
        budget: &QueryBudget,
        tenant: &str,
        start: i64,
        end: i64,
    ) -> Result<Option<(i64, i64)>> {
        use datafusion::arrow::array::{Array, AsArray};
        use datafusion::arrow::datatypes::Int64Type;
        if end <= start {
            return Ok(None);
        }
        let session = self.export_session(budget, tenant, start, end)?;
        let batches = session
            .ctx
            .sql(
                "SELECT min(time_nanos), max(time_nanos) FROM profiles
                 WHERE time_nanos >= $1 AND time_nanos < $2",
            )
            .await?
            .with_param_values(vec![
                datafusion::common::ScalarValue::Int64(Some(start)),
                datafusion::common::ScalarValue::Int64(Some(end)),
            ])?
            .collect()
            .await?;
        let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let (first, last) = (
            b.column(0).as_primitive::<Int64Type>(),
            b.column(1).as_primitive::<Int64Type>(),
        );
        Ok((first.is_valid(0) && last.is_valid(0)).then(|| (first.value(0), last.value(0))))
    }

    /// A read-only SQL query over the tables of `tenants`, its rows held against `budget`
    /// (or only its schema, when that is all the request wants).
    /// The tables prune blocks and head data by the query's own filters, as every read does.
    pub async fn sql(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        request: &SqlRequest,
    ) -> Result<Charged<SqlTable>> {
        let ctx = self.sql_session(budget, tenants)?;
        // A query that does not parse or plan, or whose parameters do not fit, is the
        // caller's mistake, said as DataFusion says it.
        let invalid = |e: datafusion::error::DataFusionError| {
            QueryError::invalid(format!("SQL: {}", e.strip_backtrace()))
        };
        let mut df = ctx
            .sql_with_options(&numbered_placeholders(&request.query)?, read_only())
            .await
            .map_err(invalid)?;
        if !request.params.is_empty() {
            df = df
                .with_param_values(ParamValues::from(request.params.clone()))
                .map_err(invalid)?;
        }
        let schema = Arc::new(df.schema().as_arrow().clone());
        if request.schema_only {
            let answer = SqlRows::new(schema, budget, "SQL schema");
            return Ok(answer.finish());
        }
        let task_ctx = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await?;
        crate::distributed::check_stages_encode(&plan, &task_ctx)?;
        let mut rows = datafusion::physical_plan::execute_stream(plan, task_ctx)?;
        let mut answer = SqlRows::new(schema, budget, "SQL answer");
        while let Some(batch) = rows.next().await.transpose()? {
            answer.push(batch)?;
        }
        Ok(answer.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_question_marks_are_numbered_in_order_and_nothing_else_changes() {
        let query = "SELECT '?', \"a?\" FROM t -- why?\nWHERE x = ? AND y IN (?, $7)\n  AND ž = ?";
        assert_eq!(
            numbered_placeholders(query).unwrap(),
            "SELECT '?', \"a?\" FROM t -- why?\nWHERE x = $1 AND y IN ($2, $7)\n  AND ž = $3"
        );
        assert_eq!(numbered_placeholders("SELECT 1").unwrap(), "SELECT 1");
    }

    #[test]
    fn parameters_travel_as_one_row() {
        let params = vec![
            ScalarValue::Int64(Some(7)),
            ScalarValue::Utf8(Some("checkout".into())),
            ScalarValue::Null,
        ];
        assert_eq!(
            params_from_ipc(&params_ipc(&params).unwrap()).unwrap(),
            params
        );
        assert!(params_ipc(&[]).unwrap().is_empty());
    }
}
