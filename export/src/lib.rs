//! Exports of a tenant's profiles to data lakes: a Delta Lake table ([`delta`]) or
//! Hive-partitioned Parquet ([`parquet`]), in the flat layout of `docs/export.md`.
//!
//! Owns: the lake formats, the destination's object store, and the protocol that makes exports
//! incremental and exactly-once (a watermark kept with the data, committed with it). Must not
//! query: the rows come from a [`Rows`] source (the engine's export query), and the caller
//! decides the range.
//!
//! A run exports the profiles with times in `[start, end)`, less what earlier runs exported:
//! the destination keeps the end of the last committed run, and a run starts there. The
//! watermark commits with the data (Delta: an application transaction in the same commit;
//! Parquet: a state file written after the data is in place), so a run that crashes leaves
//! the previous watermark and the next run writes its range again, once.

pub mod delta;
pub mod parquet;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures_util::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use url::Url;

/// The partition columns of every export, in directory order.
pub const PARTITION_COLUMNS: [&str; 2] = ["date", "service_name"];

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("destination {destination:?}: {message}")]
    Destination {
        destination: String,
        message: String,
    },
    #[error("reading the profiles: {0}")]
    Rows(String),
    #[error("writing Delta table {table}: {source}")]
    Delta {
        table: String,
        source: deltalake_core::DeltaTableError,
    },
    #[error("writing Parquet at {path}: {message}")]
    Parquet { path: String, message: String },
    #[error("object store at {path}: {source}")]
    Store {
        path: String,
        source: object_store::Error,
    },
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// The table format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Delta,
    Parquet,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "delta" => Ok(Self::Delta),
            "parquet" => Ok(Self::Parquet),
            other => Err(format!("unknown format {other:?}: delta or parquet")),
        }
    }
}

/// Where an export writes: an object store with `/` at its root (a bucket's, a directory's),
/// the table's prefix in it, and the table's URL.
#[derive(Debug, Clone)]
pub struct Destination {
    pub root: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub url: Url,
}

impl Destination {
    /// The destination `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`,
    /// `file:///dir` or a local directory (created if missing). Cloud credentials come from
    /// the usual environment variables, as for `--storage.url`.
    pub fn open(destination: &str) -> Result<Self> {
        let failed = |message: String| ExportError::Destination {
            destination: destination.to_owned(),
            message,
        };
        let url = match Url::parse(destination) {
            Ok(url) if url.scheme().len() > 1 => url,
            // A local path (or a Windows drive letter, which is one too).
            _ => {
                std::fs::create_dir_all(destination)
                    .map_err(|e| failed(format!("creating the directory: {e}")))?;
                let dir = std::path::Path::new(destination)
                    .canonicalize()
                    .map_err(|e| failed(format!("resolving the directory: {e}")))?;
                Url::from_directory_path(&dir)
                    .map_err(|()| failed("not an absolute directory".into()))?
            }
        };
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|()| failed("not a local path".into()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| failed(format!("creating the directory: {e}")))?;
            let root = object_store::local::LocalFileSystem::new();
            let prefix = Path::from_filesystem_path(&dir).map_err(|e| failed(e.to_string()))?;
            return Ok(Self {
                root: Arc::new(root),
                prefix,
                url,
            });
        }
        let (root, prefix) = object_store::parse_url_opts(
            &url,
            std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v)),
        )
        .map_err(|e| failed(e.to_string()))?;
        Ok(Self {
            root: Arc::from(root),
            prefix,
            url,
        })
    }

    /// `name` under the table's prefix.
    pub fn path(&self, name: &str) -> Path {
        name.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }
}

/// The rows of a tenant's profiles with times in `[start, end)` (Unix nanoseconds).
#[async_trait]
pub trait Rows: Send + Sync {
    async fn rows(&self, start: i64, end: i64) -> Result<SendableRecordBatchStream>;
    /// The first and the last profile time in `[start, end)`, if there are profiles there.
    async fn extent(&self, start: i64, end: i64) -> Result<Option<(i64, i64)>>;
}

/// What a run asks.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub tenant: String,
    pub format: Format,
    /// Unix nanoseconds, `end` exclusive.
    pub start: i64,
    pub end: i64,
    /// For crash tests: abort the process at this point of the commit.
    pub fail_at: Option<FailPoint>,
}

/// Where a crash test aborts a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// Every data file written, nothing committed.
    Written,
    /// Parquet: the first file renamed into view (Delta has no such step).
    Renamed,
}

impl std::str::FromStr for FailPoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "written" => Ok(Self::Written),
            "renamed" => Ok(Self::Renamed),
            other => Err(format!("unknown fail point {other:?}: written or renamed")),
        }
    }
}

/// Crash tests: dies here, as a process killed at `point`.
fn fail_point(wanted: Option<FailPoint>, point: FailPoint) {
    if wanted == Some(point) {
        tracing::error!(point = ?point, "failing on purpose at this export step");
        std::process::abort();
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// The range it exported (`None`: earlier runs had exported it all).
    pub range: Option<(i64, i64)>,
    pub rows: u64,
    /// Bytes of the files it wrote.
    pub bytes: u64,
    pub files: u64,
}

/// How far a run has got, reported as it goes.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub rows: u64,
    pub batches: u64,
    pub elapsed: std::time::Duration,
}

/// A table being written by one run: its batches, then one commit (with the watermark).
#[async_trait]
trait Sink: Send {
    async fn write(&mut self, batch: RecordBatch) -> Result<()>;
    /// Makes every batch visible at once, with `end` as the new watermark; the files and
    /// bytes written.
    async fn commit(self: Box<Self>, end: i64, fail_at: Option<FailPoint>) -> Result<(u64, u64)>;
}

/// How much of its range an export reads at a time.
const WINDOW_NANOS: i64 = 3_600_000_000_000;

/// Exports the request's range less what was exported, calling `progress` as batches are
/// written.
pub async fn export(
    destination: &Destination,
    request: &ExportRequest,
    rows: &dyn Rows,
    mut progress: impl FnMut(Progress) + Send,
) -> Result<ExportReport> {
    // The Delta table is loaded once: its watermark, then the run's writer.
    let table = match request.format {
        Format::Delta => delta::load(destination).await?,
        Format::Parquet => None,
    };
    let exported = match request.format {
        Format::Delta => delta::watermark(destination, table.as_ref(), &request.tenant).await?,
        Format::Parquet => parquet::watermark(destination, &request.tenant).await?,
    };
    let start = exported.map_or(request.start, |w| w.max(request.start));
    if start >= request.end {
        return Ok(ExportReport {
            range: None,
            rows: 0,
            bytes: 0,
            files: 0,
        });
    }
    // The range is read an hour at a time: a profile's rows all lie in the hour of its time, so
    // each hour's query sums a profile's spans on its own, and a run holds one hour's worth of
    // rows in memory, not a day's (a day of a small fleet already outgrew the query budget).
    // Only where there are profiles; a range without any is read once (an empty answer, which
    // still gives the table its columns and the run its watermark).
    let (first, last) = rows
        .extent(start, request.end)
        .await?
        .unwrap_or((start, request.end - 1));
    let mut windows = (first..=last)
        .step_by(WINDOW_NANOS as usize)
        .map(|from| (from, from.saturating_add(WINDOW_NANOS).min(last + 1)));
    let (from, to) = windows.next().expect("a non-empty range has a first hour");
    let mut stream = rows.rows(from, to).await?;
    let schema = stream.schema();
    let mut sink: Box<dyn Sink> = match request.format {
        Format::Delta => {
            Box::new(delta::DeltaSink::open(destination, table, &request.tenant, &schema).await?)
        }
        Format::Parquet => Box::new(
            parquet::ParquetSink::open(destination, &request.tenant, start, request.end).await?,
        ),
    };
    let began = Instant::now();
    let mut done = Progress {
        rows: 0,
        batches: 0,
        elapsed: began.elapsed(),
    };
    loop {
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| ExportError::Rows(e.strip_backtrace()))?;
            done.rows += batch.num_rows() as u64;
            done.batches += 1;
            sink.write(batch).await?;
            done.elapsed = began.elapsed();
            progress(done);
        }
        match windows.next() {
            Some((from, to)) => stream = rows.rows(from, to).await?,
            None => break,
        }
    }
    let (files, bytes) = sink.commit(request.end, request.fail_at).await?;
    Ok(ExportReport {
        range: Some((start, request.end)),
        rows: done.rows,
        bytes,
        files,
    })
}

/// `value` as one path segment: bytes other than ASCII letters, digits, `-`, `_` and `.`
/// percent-encoded (for a tenant's folder, a partition's value).
pub fn path_segment(value: &str) -> String {
    parquet::segment(value)
}

/// The app id of a tenant's exports, in Delta's transactions and Parquet's state file.
fn app_id(tenant: &str) -> String {
    format!("profusion-export:{tenant}")
}
