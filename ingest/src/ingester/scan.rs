//! The ingester as a [`HeadSource`]: pinned snapshots of a tenant's head, scanned table by table
//! with the request's narrowing applied to the rows, in batches of at most
//! [`HEAD_BATCH_ROWS`] rows.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt64Type};
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::DataType;
use async_trait::async_trait;
use futures_util::StreamExt;
use profusion_model::block::BlockBatches;
use profusion_model::scan::{
    GenerationSummary, HeadCut, HeadSnapshot, HeadSnapshots, HeadSource, RecordBatchStream,
    ScanError, ScanRequest,
};

use super::Ingester;

/// Rows per batch a head scan yields (DataFusion's default batch size).
const HEAD_BATCH_ROWS: usize = 8192;

/// One tenant's head generations at one moment.
#[derive(Debug)]
pub(super) struct PinnedHead {
    pub(super) cut: HeadCut,
    /// `(WAL segment, its generation's batches)`, oldest first.
    pub(super) generations: Vec<(u64, Arc<BlockBatches>)>,
}

#[async_trait]
impl HeadSource for Ingester {
    async fn snapshot(&self, tenant: &str) -> Result<HeadSnapshots, ScanError> {
        let pinned = self
            .pin(tenant)
            .map_err(|e| ScanError::Internal(format!("reading the head: {e}")))?;
        Ok(vec![Arc::new(pinned)])
    }

    async fn summary(&self, tenant: &str) -> Result<Vec<GenerationSummary>, ScanError> {
        Ok(Ingester::summary(self, tenant))
    }
}

#[async_trait]
impl HeadSnapshot for PinnedHead {
    fn cut(&self) -> &HeadCut {
        &self.cut
    }

    async fn scan(&self, request: &ScanRequest) -> Result<RecordBatchStream, ScanError> {
        if let Some(wanted) = &request.segments
            && let Some(missing) = wanted.iter().find(|s| !self.cut.segments.contains(s))
        {
            return Err(ScanError::Unavailable(format!(
                "WAL segment {missing} is no longer in the head of {}; retry the query",
                self.cut.source
            )));
        }
        let mut out = Vec::new();
        let mut n = 0usize;
        for (segment, batches) in &self.generations {
            if request
                .segments
                .as_ref()
                .is_some_and(|s| !s.contains(segment))
            {
                continue;
            }
            let batch = select(batches.table(request.table), request)?;
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = HEAD_BATCH_ROWS.min(batch.num_rows() - offset);
                if request.part.is_none_or(|p| p.owns(n)) {
                    out.push(Ok(batch.slice(offset, len)));
                }
                n += 1;
                offset += len;
            }
        }
        Ok(futures_util::stream::iter(out).boxed())
    }
}

/// The rows of `batch` (one table of one generation) a request selects, projected.
fn select(batch: &RecordBatch, request: &ScanRequest) -> Result<RecordBatch, ScanError> {
    let mut keep = RowMask(None);
    let column = |name: &str| batch.column_by_name(name).map(|c| c.as_ref());
    if request.table.is_per_profile()
        && let Some(times) = column("time_nanos")
    {
        let range = request.range;
        keep.and(
            times
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .map(|t| range.start <= *t && *t <= range.end)
                .collect(),
        );
    }
    if request.table.has_series_columns() {
        if let (Some(pt), Some(types)) = (&request.profile_type, column("profile_type")) {
            keep.and(strings_matching(types, |v| v == pt)?);
        }
        if let (Some(services), Some(names)) = (&request.services, column("service_name")) {
            let services: HashSet<&str> = services.iter().map(String::as_str).collect();
            keep.and(strings_matching(names, |v| services.contains(v))?);
        }
        if let (Some(series), Some(fingerprints)) = (&request.series, column("series_fingerprint"))
        {
            let series: HashSet<u64> = series.iter().copied().collect();
            keep.and(
                fingerprints
                    .as_primitive::<UInt64Type>()
                    .values()
                    .iter()
                    .map(|f| series.contains(f))
                    .collect(),
            );
        }
    }
    let selected = match keep.0 {
        Some(keep) if keep.iter().any(|k| !k) => {
            arrow_select::filter::filter_record_batch(batch, &BooleanArray::from(keep))?
        }
        _ => batch.clone(),
    };
    match &request.projection {
        None => Ok(selected),
        Some(columns) => {
            let schema = selected.schema();
            let indices = columns
                .iter()
                .map(|c| {
                    schema.index_of(c).map_err(|_| {
                        ScanError::Internal(format!("table {} has no column {c:?}", request.table))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(selected.project(&indices)?)
        }
    }
}

/// The rows a scan keeps so far (`None`: all of them).
struct RowMask(Option<Vec<bool>>);

impl RowMask {
    /// Keeps only the rows both this mask and `matched` keep.
    fn and(&mut self, matched: Vec<bool>) {
        self.0 = Some(match self.0.take() {
            None => matched,
            Some(kept) => kept.iter().zip(matched).map(|(a, b)| *a && b).collect(),
        });
    }
}

/// Per row, whether a string column (plain or dictionary-encoded) matches. A dictionary's
/// values are tested once each, not once per row.
fn strings_matching(
    array: &dyn Array,
    matches: impl Fn(&str) -> bool,
) -> Result<Vec<bool>, ScanError> {
    match array.data_type() {
        DataType::Utf8 => Ok(array
            .as_string::<i32>()
            .iter()
            .map(|v| v.is_some_and(&matches))
            .collect()),
        DataType::Dictionary(key, value)
            if **key == DataType::Int32 && **value == DataType::Utf8 =>
        {
            let dictionary = array.as_dictionary::<Int32Type>();
            let values = dictionary.values().as_string::<i32>();
            let by_key: Vec<bool> = values.iter().map(|v| v.is_some_and(&matches)).collect();
            Ok(dictionary
                .keys()
                .iter()
                .map(|k| k.is_some_and(|k| by_key.get(k as usize).copied().unwrap_or(false)))
                .collect())
        }
        other => Err(ScanError::Internal(format!(
            "a string column of the head has type {other}"
        ))),
    }
}
