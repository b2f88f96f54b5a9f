//! The Delta Lake export: one table per destination, partitioned by date and service, written
//! with deltalake-core's Parquet writer over the destination's object store.
//!
//! A run is one Delta commit: its files are written first (invisible until referenced), then
//! one log entry adds them all together with the tenant's application transaction, whose
//! version is the run's end: the watermark. A crash before the commit leaves the table as it
//! was (the files unreferenced, removed by a vacuum); two runs for one tenant at once cannot
//! both commit (Delta refuses a concurrent transaction of the same app id).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, RecordBatch, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Schema as ArrowSchema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use deltalake_core::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, StructType, Transaction};
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::writer::{DeltaWriter, RecordBatchWriter};
use deltalake_core::{DeltaTable, DeltaTableError};
use object_store::prefix::PrefixStore;

use crate::{
    Destination, ExportError, FailPoint, PARTITION_COLUMNS, Result, Sink, app_id, fail_point,
};

fn delta_error(destination: &Destination) -> impl Fn(DeltaTableError) -> ExportError + '_ {
    move |source| ExportError::Delta {
        table: destination.url.to_string(),
        source,
    }
}

/// The log store of the destination's table, over its own object store (no registry of
/// URL schemes: the store is the one the destination opened).
fn log_store(destination: &Destination) -> LogStoreRef {
    let prefixed = Arc::new(PrefixStore::new(
        Arc::clone(&destination.root),
        destination.prefix.clone(),
    ));
    default_logstore(
        prefixed,
        Arc::clone(&destination.root),
        &destination.url,
        &StorageConfig::default(),
    )
}

/// The table, or `None` when the destination holds none yet.
pub(crate) async fn load(destination: &Destination) -> Result<Option<DeltaTable>> {
    let mut table = DeltaTable::new(log_store(destination));
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(delta_error(destination)(e)),
    }
}

/// The end of the tenant's last committed run in `table` (loaded by [`load`]).
pub(crate) async fn watermark(
    destination: &Destination,
    table: Option<&DeltaTable>,
    tenant: &str,
) -> Result<Option<i64>> {
    let Some(table) = table else {
        return Ok(None);
    };
    let snapshot = table.snapshot().map_err(delta_error(destination))?;
    snapshot
        .transaction_version(table.log_store().as_ref(), app_id(tenant))
        .await
        .map_err(delta_error(destination))
}

/// A run being written.
pub(crate) struct DeltaSink {
    destination: Destination,
    table: DeltaTable,
    writer: RecordBatchWriter,
    tenant: String,
    /// The table's schema in Arrow, as the writer takes batches.
    schema: SchemaRef,
}

/// `array` as `target`: Delta's Arrow types have their own names for a list's item and a
/// map's entries, and no dictionaries or views; the data is the same.
fn conform(array: &ArrayRef, target: &DataType) -> Result<ArrayRef, ArrowError> {
    match (array.data_type(), target) {
        (from, to) if from == to => Ok(Arc::clone(array)),
        (DataType::List(_), DataType::List(item)) => {
            let list = array.as_list::<i32>();
            let values = conform(list.values(), item.data_type())?;
            Ok(Arc::new(ListArray::try_new(
                Arc::clone(item),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?))
        }
        (DataType::Map(_, _), DataType::Map(entries, sorted)) => {
            let map = array.as_map();
            let DataType::Struct(fields) = entries.data_type() else {
                return Err(ArrowError::CastError(format!("map entries of {target}")));
            };
            let columns = map
                .entries()
                .columns()
                .iter()
                .zip(fields.iter())
                .map(|(column, field)| conform(column, field.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            let entries_array = StructArray::try_new(fields.clone(), columns, None)?;
            Ok(Arc::new(MapArray::try_new(
                Arc::clone(entries),
                map.offsets().clone(),
                entries_array,
                map.nulls().cloned(),
                *sorted,
            )?))
        }
        _ => datafusion::arrow::compute::cast(array, target),
    }
}

impl DeltaSink {
    /// A run over `table` (as [`load`] found it), creating the table in the rows' schema
    /// when the destination has none.
    pub(crate) async fn open(
        destination: &Destination,
        table: Option<DeltaTable>,
        tenant: &str,
        schema: &SchemaRef,
    ) -> Result<Self> {
        let error = delta_error(destination);
        let table = match table {
            Some(table) => table,
            None => {
                let columns: StructType = schema.as_ref().try_into_kernel().map_err(|e| {
                    error(DeltaTableError::Generic(format!(
                        "the export's schema: {e}"
                    )))
                })?;
                // Another run may create it at the same time: then this one loads it.
                CreateBuilder::new()
                    .with_log_store(log_store(destination))
                    .with_table_name("profiles")
                    .with_comment("Profiles exported by Profusion (docs/export.md)")
                    .with_columns(columns.fields().cloned())
                    .with_partition_columns(PARTITION_COLUMNS)
                    .with_save_mode(SaveMode::Ignore)
                    .await
                    .map_err(&error)?
            }
        };
        let writer = RecordBatchWriter::for_table(&table).map_err(&error)?;
        let metadata = table.snapshot().map_err(&error)?.metadata();
        let schema_error = |e: &dyn std::fmt::Display| {
            error(DeltaTableError::Generic(format!("the table's schema: {e}")))
        };
        let kernel = metadata.parse_schema().map_err(|e| schema_error(&e))?;
        let schema: ArrowSchema = (&kernel).try_into_arrow().map_err(|e| schema_error(&e))?;
        Ok(Self {
            destination: destination.clone(),
            table,
            writer,
            tenant: tenant.to_owned(),
            schema: Arc::new(schema),
        })
    }
}

#[async_trait]
impl Sink for DeltaSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let error = delta_error(&self.destination);
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|field| {
                let column = batch.column_by_name(field.name()).ok_or_else(|| {
                    ArrowError::SchemaError(format!("the rows lack column {}", field.name()))
                })?;
                conform(column, field.data_type())
            })
            .collect::<Result<Vec<_>, _>>()
            .and_then(|columns| RecordBatch::try_new(Arc::clone(&self.schema), columns))
            .map_err(|e| error(DeltaTableError::Arrow { source: e }))?;
        self.writer.write(columns).await.map_err(error)
    }

    async fn commit(self: Box<Self>, end: i64, fail_at: Option<FailPoint>) -> Result<(u64, u64)> {
        let Self {
            destination,
            table,
            mut writer,
            tenant,
            ..
        } = *self;
        let error = delta_error(&destination);
        let adds = writer.flush().await.map_err(&error)?;
        fail_point(fail_at, FailPoint::Written);
        let (files, bytes) = (
            adds.len() as u64,
            adds.iter().map(|a| a.size.max(0) as u64).sum(),
        );
        let snapshot = table.snapshot().map_err(&error)?;
        let now = chrono::Utc::now().timestamp_millis();
        let properties = CommitProperties::default().with_application_transaction(
            Transaction::new_with_last_update(app_id(&tenant), end, Some(now)),
        );
        // The files and the watermark in one log entry: one version, all or nothing.
        CommitBuilder::from(properties)
            .with_actions(adds.into_iter().map(Action::Add).collect())
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: Some(PARTITION_COLUMNS.map(String::from).to_vec()),
                    predicate: None,
                },
            )
            .await
            .map_err(&error)?;
        Ok((files, bytes))
    }
}
