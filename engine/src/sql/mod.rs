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

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use futures_util::StreamExt;

pub use views::{SqlSchema, TABLES, time_type};

use crate::budget::{Charged, QueryBudget};
use crate::error::{QueryError, Result};
use crate::querier::{Querier, SqlRows, SqlTable};
use crate::table::ScanWindow;

/// What SQL may do: read. No DDL (`CREATE EXTERNAL TABLE` would read the server's files), no
/// DML (`INSERT`, `COPY ... TO` would write them), no statements (`SET` would change the
/// session's limits).
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
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

    /// A read-only SQL query over the tables of `tenants`, its rows held against `budget`.
    /// The tables prune blocks and head data by the query's own filters, as every read does.
    pub async fn sql(
        &self,
        budget: &QueryBudget,
        tenants: &[String],
        query: &str,
    ) -> Result<Charged<SqlTable>> {
        let ctx = self.sql_session(budget, tenants)?;
        // A query that does not parse or plan is the caller's mistake, said as DataFusion
        // says it.
        let df = ctx
            .sql_with_options(query, read_only())
            .await
            .map_err(|e| QueryError::invalid(format!("SQL: {}", e.strip_backtrace())))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
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
