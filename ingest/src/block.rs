//! The block format: what one flush of one tenant's head becomes in the object store.
//!
//! `<tenant>/blocks/<ULID>/` holds five Parquet files and `meta.json` (written last, so a
//! directory without it is an incomplete upload). Schemas and sort orders are documented in
//! `docs/block-format.md`; every column is a plain Parquet type so any Parquet reader works.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::builder::{
    ListBuilder, StringBuilder, StringDictionaryBuilder, StructBuilder, UInt64Builder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use profusion_catalog::BlockMeta;
use serde::{Deserialize, Serialize};

use crate::error::{IngestError, Result};
use crate::ingester::head::TenantHead;
use crate::labels;

/// Version of the layout below; readers refuse versions they do not know.
pub const FORMAT_VERSION: u32 = 1;

pub const SAMPLES_FILE: &str = "samples.parquet";
pub const PROFILES_FILE: &str = "profiles.parquet";
pub const SERIES_FILE: &str = "series.parquet";
pub const STACKS_FILE: &str = "stacks.parquet";
pub const FRAMES_FILE: &str = "frames.parquet";
pub const META_FILE: &str = "meta.json";

/// Where a block's file lives in the object store: `<tenant>/blocks/<block id>/<file>`. The one
/// place object paths of blocks are made: the tenant id is a path segment in object_store's
/// encoding (characters it reserves, such as `*`, percent-encoded), so every reader and writer
/// must name it through here, and turn it into a URL without decoding it (see the querier).
pub fn block_file_path(tenant: &str, block_id: &str, file: &str) -> object_store::path::Path {
    object_store::path::Path::from_iter([tenant, "blocks", block_id, file])
}

const MAX_ROW_GROUP_ROWS: usize = 1 << 20;

/// `samples.parquet`: one row per (profile, stack), sorted by service, profile type, series,
/// time, profile id, stack hash. The string columns repeat on every row of a profile, so they
/// are dictionary-encoded in memory as well as in the file: a flush holds 4 bytes per row for
/// each, not the string.
pub fn samples_schema() -> SchemaRef {
    let dictionary = |f: Field| match f.data_type() {
        DataType::Utf8 => {
            let (name, nullable) = (f.name().clone(), f.is_nullable());
            Field::new(
                name,
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                nullable,
            )
        }
        _ => f,
    };
    Arc::new(Schema::new(
        [
            profile_key_fields().into_iter().map(dictionary).collect(),
            vec![
                Field::new("stack_hash", DataType::UInt64, false),
                Field::new("value", DataType::Int64, false),
                Field::new("span_id", DataType::UInt64, true),
            ],
        ]
        .concat(),
    ))
}

/// The columns that identify a profile, leading both `samples` and `profiles`.
fn profile_key_fields() -> Vec<Field> {
    vec![
        Field::new("service_name", DataType::Utf8, false),
        Field::new("profile_type", DataType::Utf8, false),
        Field::new("series_fingerprint", DataType::UInt64, false),
        Field::new("time_nanos", DataType::Int64, false),
        Field::new("profile_id", DataType::Utf8, false),
    ]
}

/// `profiles.parquet`: one row per profile of a series, in the samples' order.
pub fn profiles_schema() -> SchemaRef {
    Arc::new(Schema::new(
        [
            profile_key_fields(),
            vec![
                Field::new("duration_nanos", DataType::Int64, false),
                Field::new("period", DataType::Int64, false),
                Field::new("total_value", DataType::Int64, false),
                Field::new("num_samples", DataType::UInt64, false),
            ],
        ]
        .concat(),
    ))
}

fn label_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ])
}

/// `series.parquet`: one row per series with all its labels.
pub fn series_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("series_fingerprint", DataType::UInt64, false),
        Field::new("service_name", DataType::Utf8, false),
        Field::new("profile_type", DataType::Utf8, false),
        Field::new(
            "labels",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(label_fields()),
                true,
            ))),
            false,
        ),
    ]))
}

/// `stacks.parquet`: each stack once, frames root first.
pub fn stacks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("stack_hash", DataType::UInt64, false),
        Field::new(
            "frame_ids",
            DataType::List(Arc::new(Field::new("item", DataType::UInt64, true))),
            false,
        ),
    ]))
}

/// `frames.parquet`: each frame once.
pub fn frames_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("frame_id", DataType::UInt64, false),
        Field::new("function_name", DataType::Utf8, false),
        Field::new("system_name", DataType::Utf8, false),
        Field::new("filename", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("start_line", DataType::Int64, false),
        Field::new("mapping_file", DataType::Utf8, false),
        Field::new("build_id", DataType::Utf8, false),
        Field::new("address", DataType::UInt64, false),
    ]))
}

/// `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockFileMeta {
    pub format_version: u32,
    pub id: String,
    pub tenant: String,
    pub min_time_nanos: i64,
    pub max_time_nanos: i64,
    pub num_series: u64,
    pub num_profiles: u64,
    pub num_samples: u64,
    pub services: Vec<String>,
    pub profile_types: Vec<String>,
    pub source: String,
    pub wal_segment: u64,
    pub files: Vec<BlockFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockFile {
    pub name: String,
    pub size_bytes: u64,
    pub rows: u64,
}

/// An encoded block, ready to upload.
#[derive(Debug)]
pub struct EncodedBlock {
    /// Parquet files then `meta.json`, in upload order.
    pub files: Vec<(&'static str, Bytes)>,
    pub catalog: BlockMeta,
}

fn label_value<'a>(labels: &'a [profusion_proto::types::v1::LabelPair], name: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

/// One tenant head as Arrow batches in block order and schema: what a block holds before it
/// becomes Parquet, and what queries read from the head.
#[derive(Debug, Clone)]
pub struct BlockBatches {
    pub samples: RecordBatch,
    pub profiles: RecordBatch,
    pub series: RecordBatch,
    pub stacks: RecordBatch,
    pub frames: RecordBatch,
    pub min_time_nanos: i64,
    pub max_time_nanos: i64,
    /// Distinct `service_name` values, sorted.
    pub services: Vec<String>,
    /// Distinct `__profile_type__` values, sorted.
    pub profile_types: Vec<String>,
}

/// Builds the block batches of a tenant head.
pub fn batches(head: &TenantHead) -> Result<BlockBatches> {
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
        samples_schema(),
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
        profiles_schema(),
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

/// Encodes one tenant's head as a block.
pub fn encode(
    tenant: &str,
    id: &str,
    head: &TenantHead,
    source: &str,
    wal_segment: u64,
) -> Result<EncodedBlock> {
    let BlockBatches {
        samples,
        profiles,
        series,
        stacks,
        frames,
        min_time_nanos: min_time,
        max_time_nanos: max_time,
        services,
        profile_types,
    } = batches(head)?;
    let sorted_by = |cols: &[u32]| {
        cols.iter()
            .map(|&c| SortingColumn {
                column_idx: c as i32,
                descending: false,
                nulls_first: false,
            })
            .collect::<Vec<_>>()
    };
    let mut files = Vec::new();
    let mut listed = Vec::new();
    for (name, batch, sort) in [
        (SAMPLES_FILE, samples, sorted_by(&[0, 1, 2, 3, 4, 5])),
        (PROFILES_FILE, profiles, sorted_by(&[0, 1, 2, 3, 4])),
        (SERIES_FILE, series, sorted_by(&[1, 2, 0])),
        (STACKS_FILE, stacks, sorted_by(&[0])),
        (FRAMES_FILE, frames, sorted_by(&[0])),
    ] {
        let rows = batch.num_rows() as u64;
        let bytes = write_parquet(&batch, sort)?;
        listed.push(BlockFile {
            name: name.to_owned(),
            size_bytes: bytes.len() as u64,
            rows,
        });
        files.push((name, bytes));
    }

    let meta = BlockFileMeta {
        format_version: FORMAT_VERSION,
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        min_time_nanos: min_time,
        max_time_nanos: max_time,
        num_series: head.series.len() as u64,
        num_profiles: head.profiles.len() as u64,
        num_samples: head.num_samples as u64,
        services: services.clone(),
        profile_types: profile_types.clone(),
        source: source.to_owned(),
        wal_segment,
        files: listed,
    };
    let meta_bytes = Bytes::from(
        serde_json::to_vec_pretty(&meta).map_err(|e| IngestError::internal(e.to_string()))?,
    );
    let size_bytes =
        files.iter().map(|(_, b)| b.len() as u64).sum::<u64>() + meta_bytes.len() as u64;
    files.push((META_FILE, meta_bytes));
    Ok(EncodedBlock {
        files,
        catalog: BlockMeta {
            tenant: tenant.to_owned(),
            id: id.to_owned(),
            min_time_nanos: min_time,
            max_time_nanos: max_time,
            num_series: meta.num_series,
            num_profiles: meta.num_profiles,
            num_samples: meta.num_samples,
            size_bytes,
            services,
            profile_types,
            source: source.to_owned(),
            wal_segment,
            compaction_level: 0,
            created_at_millis: crate::now_millis(),
        },
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
        series_schema(),
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
        stacks_schema(),
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
        frames_schema(),
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

fn write_parquet(batch: &RecordBatch, sorting: Vec<SortingColumn>) -> Result<Bytes> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("profusion {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).map_err(parquet_err)?;
    writer.write(batch).map_err(parquet_err)?;
    writer.close().map_err(parquet_err)?;
    Ok(Bytes::from(out))
}

fn arrow_err(e: arrow_schema::ArrowError) -> IngestError {
    IngestError::internal(format!("building a block: {e}"))
}

fn parquet_err(e: parquet::errors::ParquetError) -> IngestError {
    IngestError::internal(format!("writing a block: {e}"))
}

/// A ULID string for a 48-bit millisecond time and 80 bits of entropy.
pub fn ulid(millis: i64, entropy: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let value = ((millis as u128 & 0xFFFF_FFFF_FFFF) << 80) | (entropy & ((1u128 << 80) - 1));
    (0..26)
        .map(|i| ALPHABET[((value >> (125 - i * 5)) & 0x1f) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulid_is_26_crockford_chars_and_time_ordered() {
        let a = ulid(1_700_000_000_000, 42);
        let b = ulid(1_700_000_000_001, 0);
        assert_eq!(a.len(), 26);
        assert!(a < b);
        assert_eq!(ulid(0, 0), "00000000000000000000000000");
    }
}
