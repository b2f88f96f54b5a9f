//! The Parquet export: Hive-partitioned files, `date=YYYY-MM-DD/service_name=<name>/part-<run>-<n>.parquet`,
//! the partition columns in the paths only (as Hive readers expect).
//!
//! Plain files have no commit, so a run keeps a journal next to them, under
//! `_profusion_export/` (which Hive readers skip, as every name starting with `_`):
//!
//! 1. a run writes `<tenant>.pending.json` (its id and range) before any data file;
//! 2. it writes its files under hidden names (`_part-<run>-<n>.inprogress`, skipped by Hive
//!    readers and by `*.parquet` globs);
//! 3. it renames them to their final names, writes `<tenant>.json` (the watermark: the end
//!    of its range), then removes the pending file.
//!
//! A run that finds a pending file deletes every file of that run, hidden or renamed, before
//! it starts from the watermark it reads: a crashed run's rows are written again, once. Only
//! a crash during step 3's renames leaves some of a run's rows readable until the next run
//! (Delta's single commit has no such window).

use std::collections::HashMap;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{Date32Type, Schema};
use futures_util::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::{
    Destination, ExportError, FailPoint, PARTITION_COLUMNS, Result, Sink, app_id, fail_point,
};

/// The journal's folder.
const STATE_DIR: &str = "_profusion_export";

#[derive(Debug, Serialize, Deserialize)]
struct State {
    app_id: String,
    /// The end of the last committed run, Unix nanoseconds.
    watermark: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    run: String,
    start: i64,
    end: i64,
}

/// A tenant id as one path segment.
pub(crate) fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn store_error(path: &Path) -> impl Fn(object_store::Error) -> ExportError + '_ {
    move |source| ExportError::Store {
        path: path.to_string(),
        source,
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    destination: &Destination,
    path: &Path,
) -> Result<Option<T>> {
    match destination.root.get(path).await {
        Ok(found) => {
            let bytes = found.bytes().await.map_err(store_error(path))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ExportError::Parquet {
                    path: path.to_string(),
                    message: e.to_string(),
                })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_error(path)(e)),
    }
}

async fn write_json<T: Serialize>(destination: &Destination, path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("journal entries serialize");
    destination
        .root
        .put(path, PutPayload::from(bytes))
        .await
        .map_err(store_error(path))?;
    Ok(())
}

fn state_path(destination: &Destination, tenant: &str) -> Path {
    destination.path(&format!("{STATE_DIR}/{}.json", segment(tenant)))
}

fn pending_path(destination: &Destination, tenant: &str) -> Path {
    destination.path(&format!("{STATE_DIR}/{}.pending.json", segment(tenant)))
}

pub(crate) async fn watermark(destination: &Destination, tenant: &str) -> Result<Option<i64>> {
    let state: Option<State> = read_json(destination, &state_path(destination, tenant)).await?;
    Ok(state.map(|s| s.watermark))
}

/// Deletes every file of `run` under the destination.
async fn delete_run(destination: &Destination, run: &str) -> Result<()> {
    let marker = format!("part-{run}-");
    let files: Vec<Path> = destination
        .root
        .list(Some(&destination.prefix))
        .map_ok(|meta| meta.location)
        .try_filter(|path| {
            let ours = path.filename().is_some_and(|name| name.contains(&marker));
            std::future::ready(ours)
        })
        .try_collect()
        .await
        .map_err(store_error(&destination.prefix))?;
    for file in files {
        destination
            .root
            .delete(&file)
            .await
            .map_err(store_error(&file))?;
    }
    Ok(())
}

/// One partition's file being written.
struct PartitionFile {
    hidden: Path,
    visible: Path,
    writer: AsyncArrowWriter<BufWriter>,
}

/// A run being written.
pub(crate) struct ParquetSink {
    destination: Destination,
    tenant: String,
    run: String,
    files: HashMap<(i32, String), PartitionFile>,
}

impl ParquetSink {
    /// Cleans up after a crashed run of the tenant, then journals this one.
    pub(crate) async fn open(
        destination: &Destination,
        tenant: &str,
        start: i64,
        end: i64,
    ) -> Result<Self> {
        let pending = pending_path(destination, tenant);
        if let Some(crashed) = read_json::<Pending>(destination, &pending).await? {
            tracing::warn!(
                run = crashed.run,
                "the last export of this tenant did not finish; deleting its files"
            );
            delete_run(destination, &crashed.run).await?;
        }
        let run = uuid::Uuid::new_v4().simple().to_string();
        write_json(
            destination,
            &pending,
            &Pending {
                run: run.clone(),
                start,
                end,
            },
        )
        .await?;
        Ok(Self {
            destination: destination.clone(),
            tenant: tenant.to_owned(),
            run,
            files: HashMap::new(),
        })
    }

    fn writer_properties() -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build()
    }
}

/// The batch without its partition columns, and the columns' indices.
fn split_schema(schema: &Schema) -> Result<(usize, usize, Vec<usize>)> {
    let index = |name: &str| {
        schema.index_of(name).map_err(|e| ExportError::Parquet {
            path: String::new(),
            message: format!("the rows lack a partition column: {e}"),
        })
    };
    let (date, service) = (index(PARTITION_COLUMNS[0])?, index(PARTITION_COLUMNS[1])?);
    let data = (0..schema.fields().len())
        .filter(|i| *i != date && *i != service)
        .collect();
    Ok((date, service, data))
}

#[async_trait]
impl Sink for ParquetSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let (date_index, service_index, data_columns) = split_schema(&batch.schema())?;
        let dates = batch.column(date_index).as_primitive::<Date32Type>();
        let services = datafusion::arrow::compute::cast(
            batch.column(service_index),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .map_err(|e| ExportError::Parquet {
            path: String::new(),
            message: e.to_string(),
        })?;
        let services = services.as_string::<i32>();
        let mut rows: HashMap<(i32, String), Vec<u32>> = HashMap::new();
        for i in 0..batch.num_rows() {
            let key = (dates.value(i), services.value(i).to_owned());
            rows.entry(key).or_default().push(i as u32);
        }
        let data = batch
            .project(&data_columns)
            .map_err(|e| ExportError::Parquet {
                path: String::new(),
                message: e.to_string(),
            })?;
        for (key, indices) in rows {
            let part = take_record_batch(&data, &UInt32Array::from(indices)).map_err(|e| {
                ExportError::Parquet {
                    path: String::new(),
                    message: e.to_string(),
                }
            })?;
            if !self.files.contains_key(&key) {
                let day = chrono::DateTime::from_timestamp(i64::from(key.0) * 86_400, 0)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_else(|| key.0.to_string());
                let dir = format!(
                    "{}={day}/{}={}",
                    PARTITION_COLUMNS[0],
                    PARTITION_COLUMNS[1],
                    segment(&key.1)
                );
                let n = self.files.len();
                let hidden = self
                    .destination
                    .path(&format!("{dir}/_part-{}-{n}.inprogress", self.run));
                let visible = self
                    .destination
                    .path(&format!("{dir}/part-{}-{n}.parquet", self.run));
                let object = BufWriter::new(
                    std::sync::Arc::clone(&self.destination.root),
                    hidden.clone(),
                );
                let writer = AsyncArrowWriter::try_new(
                    object,
                    part.schema(),
                    Some(Self::writer_properties()),
                )
                .map_err(|e| ExportError::Parquet {
                    path: hidden.to_string(),
                    message: e.to_string(),
                })?;
                self.files.insert(
                    key.clone(),
                    PartitionFile {
                        hidden,
                        visible,
                        writer,
                    },
                );
            }
            let file = self.files.get_mut(&key).expect("opened above");
            file.writer
                .write(&part)
                .await
                .map_err(|e| ExportError::Parquet {
                    path: file.hidden.to_string(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    async fn commit(self: Box<Self>, end: i64, fail_at: Option<FailPoint>) -> Result<(u64, u64)> {
        let Self {
            destination,
            tenant,
            files,
            ..
        } = *self;
        let mut written = Vec::with_capacity(files.len());
        for file in files.into_values() {
            file.writer
                .close()
                .await
                .map_err(|e| ExportError::Parquet {
                    path: file.hidden.to_string(),
                    message: e.to_string(),
                })?;
            written.push((file.hidden, file.visible));
        }
        fail_point(fail_at, FailPoint::Written);
        let mut bytes = 0;
        for (hidden, visible) in &written {
            destination
                .root
                .rename(hidden, visible)
                .await
                .map_err(store_error(hidden))?;
            bytes += destination
                .root
                .head(visible)
                .await
                .map_err(store_error(visible))?
                .size;
            fail_point(fail_at, FailPoint::Renamed);
        }
        write_json(
            &destination,
            &state_path(&destination, &tenant),
            &State {
                app_id: app_id(&tenant),
                watermark: end,
            },
        )
        .await?;
        let pending = pending_path(&destination, &tenant);
        destination
            .root
            .delete(&pending)
            .await
            .map_err(store_error(&pending))?;
        Ok((written.len() as u64, bytes))
    }
}
