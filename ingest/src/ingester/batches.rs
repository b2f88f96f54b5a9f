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
use profusion_model::block::{BlockBatches, Table, label_fields};
use profusion_model::labels;

use super::head::TenantHead;
use crate::error::{IngestError, Result};

fn label_value<'a>(labels: &'a [profusion_proto::types::v1::LabelPair], name: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

/// Builds the block batches of a tenant head: its profiles sorted in block order, its series,
/// stacks and frames each once.
pub(super) fn block_batches(head: &TenantHead) -> Result<BlockBatches> {
    let series_key = |fp: u64| -> (&str, &str) {
        let labels = head.series.get(&fp).map_or(&[][..], Vec::as_slice);
        (
            label_value(labels, labels::SERVICE_NAME),
            label_value(labels, labels::PROFILE_TYPE),
        )
    };
    let mut order: Vec<usize> = (0..head.profiles.len()).collect();
    order.sort_by(|&a, &b| {
        let (pa, pb) = (&head.profiles[a], &head.profiles[b]);
        series_key(pa.fingerprint)
            .cmp(&series_key(pb.fingerprint))
            .then(pa.fingerprint.cmp(&pb.fingerprint))
            .then(pa.time_nanos.cmp(&pb.time_nanos))
            .then(pa.profile_id.cmp(&pb.profile_id))
    });

    let mut s_service = StringDictionaryBuilder::<Int32Type>::new();
    let mut s_type = StringDictionaryBuilder::<Int32Type>::new();
    let mut s_fp = Vec::with_capacity(head.num_samples);
    let mut s_time = Vec::with_capacity(head.num_samples);
    let mut s_pid = StringDictionaryBuilder::<Int32Type>::new();
    let mut s_stack = Vec::with_capacity(head.num_samples);
    let mut s_value = Vec::with_capacity(head.num_samples);
    let mut s_span: Vec<Option<u64>> = Vec::with_capacity(head.num_samples);
    let mut p_service = StringBuilder::new();
    let mut p_type = StringBuilder::new();
    let (mut p_fp, mut p_time, mut p_dur, mut p_period, mut p_total, mut p_n) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut p_pid = StringBuilder::new();
    let (mut min_time, mut max_time) = (i64::MAX, i64::MIN);
    let mut services = BTreeSet::new();
    let mut profile_types = BTreeSet::new();

    for &i in &order {
        let p = &head.profiles[i];
        let (service, ptype) = series_key(p.fingerprint);
        services.insert(service);
        profile_types.insert(ptype);
        min_time = min_time.min(p.time_nanos);
        max_time = max_time.max(p.time_nanos);
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
    if order.is_empty() {
        (min_time, max_time) = (0, 0);
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

    let series = series_batch(head, series_key)?;
    let stacks = stacks_batch(head)?;
    let frames = frames_batch(head)?;

    Ok(BlockBatches {
        samples,
        profiles,
        series,
        stacks,
        frames,
        min_time_nanos: min_time,
        max_time_nanos: max_time,
        services: services.into_iter().map(str::to_owned).collect(),
        profile_types: profile_types.into_iter().map(str::to_owned).collect(),
    })
}

fn series_batch<'a>(
    head: &'a TenantHead,
    series_key: impl Fn(u64) -> (&'a str, &'a str),
) -> Result<RecordBatch> {
    let mut fps: Vec<u64> = head.series.keys().copied().collect();
    fps.sort_by(|a, b| series_key(*a).cmp(&series_key(*b)).then(a.cmp(b)));
    let mut service = StringBuilder::new();
    let mut ptype = StringBuilder::new();
    let mut labels = ListBuilder::new(StructBuilder::from_fields(label_fields(), 0)).with_field(
        Arc::new(Field::new("item", DataType::Struct(label_fields()), true)),
    );
    for fp in &fps {
        let (s, t) = series_key(*fp);
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

fn stacks_batch(head: &TenantHead) -> Result<RecordBatch> {
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

fn frames_batch(head: &TenantHead) -> Result<RecordBatch> {
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
