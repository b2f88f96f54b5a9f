//! A tenant head as block tables: the Arrow form of what the ingester holds, used both to flush
//! a generation into a block and to answer queries over the head.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::builder::{
    ListBuilder, StringBuilder, StringDictionaryBuilder, StructBuilder, UInt64Builder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field};
use profusion_model::block::{BlockBatches, BlockSpool, BlockSummary, Table, label_fields};
use profusion_model::labels;

use super::head::HeadData;
use crate::error::{IngestError, Result};

fn label_value<'a>(labels: &'a [profusion_proto::types::v1::LabelPair], name: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

/// `(service_name, __profile_type__)` of a series: the first keys of the block order.
fn series_key(head: &HeadData, fp: u64) -> (&str, &str) {
    let labels = head.series.get(&fp).map_or(&[][..], Vec::as_slice);
    (
        label_value(labels, labels::SERVICE_NAME),
        label_value(labels, labels::PROFILE_TYPE),
    )
}

/// A head's profiles in block order, with what the block's metadata says of them.
struct SortedProfiles {
    order: Vec<usize>,
    summary: BlockSummary,
}

fn sort_profiles(head: &HeadData) -> SortedProfiles {
    let mut order: Vec<usize> = (0..head.profiles.len()).collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (&head.profiles[a], &head.profiles[b]);
        series_key(head, pa.fingerprint)
            .cmp(&series_key(head, pb.fingerprint))
            .then(pa.fingerprint.cmp(&pb.fingerprint))
            .then(pa.time_nanos.cmp(&pb.time_nanos))
            .then(pa.profile_id.cmp(&pb.profile_id))
    });
    let mut services = BTreeSet::new();
    let mut profile_types = BTreeSet::new();
    for p in &head.profiles {
        let (service, ptype) = series_key(head, p.fingerprint);
        services.insert(service);
        profile_types.insert(ptype);
    }
    let times = head.profiles.iter().map(|p| p.time_nanos);
    let summary = BlockSummary {
        min_time_nanos: times.clone().min().unwrap_or(0),
        max_time_nanos: times.max().unwrap_or(0),
        num_series: head.series.len() as u64,
        num_profiles: head.profiles.len() as u64,
        num_samples: head.num_samples as u64,
        services: services.into_iter().map(str::to_owned).collect(),
        profile_types: profile_types.into_iter().map(str::to_owned).collect(),
    };
    SortedProfiles { order, summary }
}

/// The `samples` and `profiles` rows of the profiles `order` (indexes into the head's
/// profiles, in block order).
fn profile_rows(head: &HeadData, order: &[usize]) -> Result<(RecordBatch, RecordBatch)> {
    let num_samples: usize = order.iter().map(|&i| head.profiles[i].samples.len()).sum();
    let mut s_service = StringDictionaryBuilder::<Int32Type>::new();
    let mut s_type = StringDictionaryBuilder::<Int32Type>::new();
    let mut s_fp = Vec::with_capacity(num_samples);
    let mut s_time = Vec::with_capacity(num_samples);
    let mut s_pid = StringDictionaryBuilder::<Int32Type>::new();
    let mut s_stack = Vec::with_capacity(num_samples);
    let mut s_value = Vec::with_capacity(num_samples);
    let mut s_span: Vec<Option<u64>> = Vec::with_capacity(num_samples);
    let mut p_service = StringBuilder::new();
    let mut p_type = StringBuilder::new();
    let (mut p_fp, mut p_time, mut p_dur, mut p_period, mut p_total, mut p_n) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut p_pid = StringBuilder::new();

    for &i in order {
        let p = &head.profiles[i];
        let (service, ptype) = series_key(head, p.fingerprint);
        let mut samples: Vec<_> = p.samples.iter().collect();
        samples.sort_by_key(|s| (s.stack_hash, s.span_id));
        let mut total = 0i64;
        for s in samples {
            s_service.append_value(service);
            s_type.append_value(ptype);
            s_fp.push(p.fingerprint);
            s_time.push(p.time_nanos);
            s_pid.append_value(&p.profile_id);
            s_stack.push(s.stack_hash);
            s_value.push(s.value);
            s_span.push((s.span_id != 0).then_some(s.span_id));
            total = total.saturating_add(s.value);
        }
        p_service.append_value(service);
        p_type.append_value(ptype);
        p_fp.push(p.fingerprint);
        p_time.push(p.time_nanos);
        p_pid.append_value(&p.profile_id);
        p_dur.push(p.duration_nanos);
        p_period.push(p.period);
        p_total.push(total);
        p_n.push(p.samples.len() as u64);
    }

    let samples = RecordBatch::try_new(
        Table::Samples.schema(),
        vec![
            Arc::new(s_service.finish()) as ArrayRef,
            Arc::new(s_type.finish()),
            Arc::new(UInt64Array::from(s_fp)),
            Arc::new(Int64Array::from(s_time)),
            Arc::new(s_pid.finish()),
            Arc::new(UInt64Array::from(s_stack)),
            Arc::new(Int64Array::from(s_value)),
            Arc::new(UInt64Array::from(s_span)),
        ],
    )
    .map_err(arrow_err)?;
    let profiles = RecordBatch::try_new(
        Table::Profiles.schema(),
        vec![
            Arc::new(p_service.finish()) as ArrayRef,
            Arc::new(p_type.finish()),
            Arc::new(UInt64Array::from(p_fp)),
            Arc::new(Int64Array::from(p_time)),
            Arc::new(p_pid.finish()),
            Arc::new(Int64Array::from(p_dur)),
            Arc::new(Int64Array::from(p_period)),
            Arc::new(Int64Array::from(p_total)),
            Arc::new(UInt64Array::from(p_n)),
        ],
    )
    .map_err(arrow_err)?;
    Ok((samples, profiles))
}

/// Builds the block batches of a tenant head: its profiles sorted in block order, its series,
/// stacks and frames each once.
pub(super) fn block_batches(head: &HeadData) -> Result<BlockBatches> {
    let sorted = sort_profiles(head);
    let (samples, profiles) = profile_rows(head, &sorted.order)?;
    let summary = sorted.summary;
    Ok(BlockBatches {
        samples,
        profiles,
        series: series_batch(head)?,
        stacks: stacks_batch(head)?,
        frames: frames_batch(head)?,
        min_time_nanos: summary.min_time_nanos,
        max_time_nanos: summary.max_time_nanos,
        services: summary.services,
        profile_types: summary.profile_types,
    })
}

/// Writes a tenant head's block to `spool` with the samples and profiles built
/// `chunk_samples` samples at a time (whole profiles; at least one per chunk), so a flush
/// never holds the whole block in Arrow or Parquet form.
pub(super) fn spool_block(
    head: &HeadData,
    spool: &mut BlockSpool,
    chunk_samples: usize,
) -> Result<BlockSummary> {
    let sorted = sort_profiles(head);
    let mut start = 0;
    while start < sorted.order.len() {
        let mut end = start;
        let mut samples = 0;
        while end < sorted.order.len() && (end == start || samples < chunk_samples) {
            samples += head.profiles[sorted.order[end]].samples.len();
            end += 1;
        }
        let (samples, profiles) = profile_rows(head, &sorted.order[start..end])?;
        spool.write(Table::Samples, &samples).map_err(spool_err)?;
        spool.write(Table::Profiles, &profiles).map_err(spool_err)?;
        start = end;
    }
    spool
        .write(Table::Series, &series_batch(head)?)
        .map_err(spool_err)?;
    spool
        .write(Table::Stacks, &stacks_batch(head)?)
        .map_err(spool_err)?;
    spool
        .write(Table::Frames, &frames_batch(head)?)
        .map_err(spool_err)?;
    Ok(sorted.summary)
}

fn spool_err(e: profusion_model::block::BlockError) -> IngestError {
    IngestError::internal(e.to_string()).with_source(e)
}

fn series_batch(head: &HeadData) -> Result<RecordBatch> {
    let mut fps: Vec<u64> = head.series.keys().copied().collect();
    fps.sort_by(|a, b| {
        series_key(head, *a)
            .cmp(&series_key(head, *b))
            .then(a.cmp(b))
    });
    let mut service = StringBuilder::new();
    let mut ptype = StringBuilder::new();
    let mut labels = ListBuilder::new(StructBuilder::from_fields(label_fields(), 0)).with_field(
        Arc::new(Field::new("item", DataType::Struct(label_fields()), true)),
    );
    for fp in &fps {
        let (s, t) = series_key(head, *fp);
        service.append_value(s);
        ptype.append_value(t);
        let entry = labels.values();
        for l in &head.series[fp] {
            entry
                .field_builder::<StringBuilder>(0)
                .expect("name field")
                .append_value(&l.name);
            entry
                .field_builder::<StringBuilder>(1)
                .expect("value field")
                .append_value(&l.value);
            entry.append(true);
        }
        labels.append(true);
    }
    RecordBatch::try_new(
        Table::Series.schema(),
        vec![
            Arc::new(UInt64Array::from(fps)) as ArrayRef,
            Arc::new(service.finish()),
            Arc::new(ptype.finish()),
            Arc::new(labels.finish()),
        ],
    )
    .map_err(arrow_err)
}

fn stacks_batch(head: &HeadData) -> Result<RecordBatch> {
    let mut hashes: Vec<u64> = head.stacks.keys().copied().collect();
    hashes.sort_unstable();
    let mut frames = ListBuilder::new(UInt64Builder::new());
    for h in &hashes {
        frames.values().append_slice(&head.stacks[h]);
        frames.append(true);
    }
    RecordBatch::try_new(
        Table::Stacks.schema(),
        vec![
            Arc::new(UInt64Array::from(hashes)) as ArrayRef,
            Arc::new(frames.finish()),
        ],
    )
    .map_err(arrow_err)
}

fn frames_batch(head: &HeadData) -> Result<RecordBatch> {
    let mut frames: Vec<_> = head.frames.values().collect();
    frames.sort_unstable_by_key(|f| f.id);
    let strings = |get: fn(&profusion_proto::ingester::v1::Frame) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(frames.iter().map(|f| get(f))))
    };
    RecordBatch::try_new(
        Table::Frames.schema(),
        vec![
            Arc::new(UInt64Array::from_iter_values(frames.iter().map(|f| f.id))) as ArrayRef,
            strings(|f| &f.function_name),
            strings(|f| &f.system_name),
            strings(|f| &f.filename),
            Arc::new(Int64Array::from_iter_values(frames.iter().map(|f| f.line))),
            Arc::new(Int64Array::from_iter_values(
                frames.iter().map(|f| f.start_line),
            )),
            strings(|f| &f.mapping_file),
            strings(|f| &f.build_id),
            Arc::new(UInt64Array::from_iter_values(
                frames.iter().map(|f| f.address),
            )),
        ],
    )
    .map_err(arrow_err)
}

fn arrow_err(e: arrow_schema::ArrowError) -> IngestError {
    IngestError::internal(format!("building a block: {e}"))
}

#[cfg(test)]
mod tests {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use profusion_model::block::{BlockOrigin, encode};
    use profusion_proto::ingester::v1::{Frame, SeriesProfile, StackSample};
    use profusion_proto::types::v1::LabelPair;

    use super::*;

    /// A head of 60 profiles over 6 series, arriving out of block order, with 0 to 12 samples
    /// each over 9 stacks.
    fn head() -> HeadData {
        let mut head = HeadData::default();
        for fp in 0..6u64 {
            head.series.insert(
                1000 - fp,
                vec![
                    LabelPair {
                        name: "__profile_type__".into(),
                        value: format!("type-{}", fp % 2),
                    },
                    LabelPair {
                        name: "service_name".into(),
                        value: format!("svc-{}", fp % 3),
                    },
                ],
            );
        }
        for stack in 0..9u64 {
            head.stacks.insert(stack * 7919, vec![stack, stack + 1]);
        }
        for frame in 0..10u64 {
            head.frames.insert(
                frame,
                Frame {
                    id: frame,
                    function_name: format!("fn{frame}"),
                    ..Default::default()
                },
            );
        }
        for i in 0..60u64 {
            let samples: Vec<StackSample> = (0..(i * 7 % 13))
                .map(|s| StackSample {
                    stack_hash: (s * 5 % 9) * 7919,
                    value: (i * 31 + s) as i64,
                    span_id: s % 2,
                })
                .collect();
            head.num_samples += samples.len();
            head.profiles.push(SeriesProfile {
                fingerprint: 1000 - (i * 5 % 6),
                time_nanos: ((i * 37) % 17) as i64 * 1_000_000_000,
                profile_id: format!("p{:03}", i % 40),
                samples,
                period: 10,
                ..Default::default()
            });
        }
        head
    }

    fn rows(file: std::fs::File) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_block_written_in_small_chunks_equals_the_block_written_whole() {
        let head = head();
        let origin = BlockOrigin::ingester("ingester-t", 3);
        let whole = encode("t", "B1", &block_batches(&head).unwrap(), &origin, 5).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for chunk_samples in [1, 7, 1 << 20] {
            let mut spool = BlockSpool::create(dir.path(), "B1").unwrap();
            let summary = spool_block(&head, &mut spool, chunk_samples).unwrap();
            let spooled = spool.finish("t", "B1", &summary, &origin, 5).unwrap();
            assert_eq!(spooled.catalog.num_samples, head.num_samples as u64);
            assert_eq!(spooled.catalog.num_profiles, 60);
            for table in Table::ALL {
                let (_, bytes) = whole
                    .files
                    .iter()
                    .find(|(name, _)| *name == table.file_name())
                    .unwrap();
                let expected = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                    .unwrap()
                    .build()
                    .unwrap()
                    .map(Result::unwrap)
                    .collect::<Vec<_>>();
                let path = dir.path().join("B1").join(table.file_name());
                let got = rows(std::fs::File::open(path).unwrap());
                let concat = |b: &[RecordBatch]| {
                    arrow_select::concat::concat_batches(&table.schema(), b).unwrap()
                };
                assert_eq!(
                    concat(&got),
                    concat(&expected),
                    "{table} in chunks of {chunk_samples} samples"
                );
            }
            let mut catalog = spooled.catalog.clone();
            // Only the file sizes may differ (row groups split differently in Parquet).
            catalog.size_bytes = whole.catalog.size_bytes;
            assert_eq!(catalog, whole.catalog);
            spooled.discard();
        }
    }
}
