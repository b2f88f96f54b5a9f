//! The tables SQL sees: views over the block tables.
//!
//! `samples` and `profiles` gain `time`, a UTC timestamp of `time_nanos`; `series.labels` is a
//! `MAP<name, value>`; `stacks` and `frames` are as stored; `sample_stacks` gives each sample
//! its stack as function names with its series' labels. Views are inlined into the query's
//! plan, so a filter on `time` reaches the block tables as one on `time_nanos` and prunes
//! blocks and row groups as every other read does.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::catalog::{SchemaProvider, TableProvider, view::ViewTable};
use datafusion::common::Column;
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{DataFrame, SessionContext, col};

use crate::table::TenantSchema;

/// The type of every `time` column: nanoseconds, UTC.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `time`, from a `time_nanos` column.
fn time_column() -> Expr {
    cast(col("time_nanos"), time_type()).alias("time")
}

/// The names of stacks and the labels of series, as common table expressions of the block
/// tables: `stack_names(stack_hash, stack)`, function names root first, and
/// `series_labels(series_fingerprint, labels)`. Stacks, frames and series repeat across blocks
/// and the head, hence the grouping; an unsymbolized frame is named after its binary and
/// address, as in flame graphs. A stack's or a series' hash names its content, so the copies of
/// one are equal and `DISTINCT` keeps one: `first_value` of a list column would keep a slice of
/// a whole input batch per group, and DataFusion counts each slice as the whole batch against
/// the query's memory budget (a week of stacks asked for 11 GB).
macro_rules! names_and_labels {
    () => {
        "
WITH frame_names AS (
    SELECT frame_id,
           first_value(CASE WHEN function_name <> '' THEN function_name
                            ELSE ltrim(concat(mapping_file, ' 0x', to_hex(address))) END) AS name
    FROM frames GROUP BY frame_id
), unique_stacks AS (
    SELECT DISTINCT stack_hash, frame_ids FROM stacks
), positions AS (
    SELECT stack_hash,
           unnest(frame_ids) AS frame_id,
           unnest(range(CAST(cardinality(frame_ids) AS BIGINT))) AS position
    FROM unique_stacks
), stack_names AS (
    SELECT p.stack_hash,
           names_in_order(array_agg(named_struct('position', p.position, 'name', n.name))) AS stack
    FROM positions p JOIN frame_names n ON p.frame_id = n.frame_id
    GROUP BY p.stack_hash
), series_labels AS (
    SELECT series_fingerprint, labels_map(labels) AS labels
    FROM (SELECT DISTINCT series_fingerprint, labels FROM series)
)"
    };
}

/// The view giving each sample its series' labels and its stack as function names.
///
/// The left input of a hash join is the one held in memory, so the small relations (series'
/// labels, stacks' names) come first and the samples stream past them; the other way round,
/// the second join held every sample with its whole stack and a week of history outgrew the
/// query's memory budget. `EXPORT_ROWS` joins in the same order.
const SAMPLE_STACKS: &str = concat!(
    names_and_labels!(),
    "
SELECT s.time_nanos, s.service_name, s.profile_type, l.labels, n.stack, s.value,
       s.profile_id, s.span_id
FROM series_labels l
JOIN (stack_names n JOIN samples s ON s.stack_hash = n.stack_hash)
  ON s.series_fingerprint = l.series_fingerprint"
);

/// What an export writes: one row per profile and stack (its spans summed) with the
/// profile's time in `[$1, $2)` (Unix nanoseconds), in the flat layout of `docs/export.md`.
const EXPORT_ROWS: &str = concat!(
    names_and_labels!(),
    ", per_stack AS (
    SELECT time_nanos, service_name, profile_type, profile_id, series_fingerprint, stack_hash,
           saturating_sum(value) AS value
    FROM samples WHERE time_nanos >= $1 AND time_nanos < $2
    GROUP BY time_nanos, service_name, profile_type, profile_id, series_fingerprint, stack_hash
)
SELECT p.time_nanos, p.service_name, p.profile_type, p.profile_id, l.labels, n.stack, p.value
FROM series_labels l
JOIN (stack_names n JOIN per_stack p ON p.stack_hash = n.stack_hash)
  ON p.series_fingerprint = l.series_fingerprint"
);

/// The rows an export of `tables` writes for profiles with times in `[start, end)` (Unix
/// nanoseconds), planned in `state` (a session over `tables`): `time` (microseconds, UTC, as
/// data lakes store times), `date` (its UTC day), `service_name`, `profile_type`, `profile_id`,
/// `labels`, `stack`, `value`.
pub(super) async fn export_rows(state: SessionState, start: i64, end: i64) -> Result<DataFrame> {
    let ctx = SessionContext::new_with_state(state);
    let df = ctx.sql(EXPORT_ROWS).await?.with_param_values(vec![
        datafusion::common::ScalarValue::Int64(Some(start)),
        datafusion::common::ScalarValue::Int64(Some(end)),
    ])?;
    // A timestamp made by a function, not a cast: the optimizer folds a cast of a cast into
    // one, and a cast of Int64 to a date or a timestamp in microseconds reads the integer in
    // that unit.
    let nanos = || datafusion::functions::expr_fn::to_timestamp_nanos(vec![col("time_nanos")]);
    df.select(vec![
        cast(
            nanos(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )
        .alias("time"),
        cast(nanos(), DataType::Date32).alias("date"),
        col("service_name"),
        col("profile_type"),
        col("profile_id"),
        col("labels"),
        col("stack"),
        col("value"),
    ])
}

/// The names SQL knows, in the order `SHOW TABLES`-like listings give them.
pub const TABLES: [&str; 6] = [
    "samples",
    "profiles",
    "series",
    "stacks",
    "frames",
    "sample_stacks",
];

/// A tenant scope's tables as SQL sees them.
#[derive(Debug)]
pub struct SqlSchema {
    tables: Arc<TenantSchema>,
    /// A session whose default schema is `tables`, to plan the views in.
    state: SessionState,
}

impl SqlSchema {
    pub fn new(tables: Arc<TenantSchema>, state: SessionState) -> Self {
        Self { tables, state }
    }

    /// The view named `name`, planned over the block tables.
    async fn view(&self, name: &str) -> Result<Option<DataFrame>> {
        let ctx = SessionContext::new_with_state(self.state.clone());
        let columns = |df: &DataFrame, replace: &dyn Fn(&str) -> Option<Expr>| -> Vec<Expr> {
            df.schema()
                .fields()
                .iter()
                .map(|f| {
                    replace(f.name())
                        .unwrap_or_else(|| Expr::Column(Column::new_unqualified(f.name())))
                })
                .collect()
        };
        let view = match name {
            "samples" | "profiles" => {
                let df = ctx.table(name).await?;
                let mut exprs = columns(&df, &|_| None);
                exprs.push(time_column());
                df.select(exprs)?
            }
            "series" => {
                let df = ctx.table(name).await?;
                let exprs = columns(&df, &|c| {
                    (c == "labels").then(|| {
                        crate::functions::labels_map()
                            .call(vec![col("labels")])
                            .alias("labels")
                    })
                });
                df.select(exprs)?
            }
            "sample_stacks" => {
                let df = ctx.sql(SAMPLE_STACKS).await?;
                let exprs = columns(&df, &|c| (c == "time_nanos").then(time_column));
                df.select(exprs)?
            }
            _ => return Ok(None),
        };
        Ok(Some(view))
    }
}

#[async_trait]
impl SchemaProvider for SqlSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| (*t).to_owned()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        // Tables shown as stored are the block tables themselves.
        if matches!(name, "stacks" | "frames") {
            return SchemaProvider::table(self.tables.as_ref(), name).await;
        }
        Ok(self.view(name).await?.map(|df| {
            Arc::new(ViewTable::new(df.into_unoptimized_plan(), None)) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
