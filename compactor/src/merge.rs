//! One merge: source blocks read whole, each profile kept once, rows split by window, and each
//! output's series, stacks and frames restricted to what its samples use.
//!
//! A profile is identified by (series, time, profile id). Replicas of one write carry the same
//! profile in several blocks; the copy of the first source (by block id) is kept. A profile
//! pushed twice to the same ingester appears twice in one block, its samples interleaved; it is
//! kept once, each (stack, span) once, and its total recomputed from the samples kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Int64Array, PrimitiveArray, RecordBatch, StringArray,
    UInt64Array,
};
use arrow_select::interleave::interleave;
use futures_util::TryStreamExt;
use object_store::ObjectStore;
use profusion_model::block::{self, BlockBatches, BlockError, BlockMeta, Table};

use crate::plan::window_start;

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("block {block}: {message}")]
    Corrupt { block: String, message: String },
    #[error("building a merged block: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Rows read per batch from a source block.
const READ_BATCH_ROWS: usize = 64 * 1024;

/// One source block's five tables, whole.
#[derive(Debug)]
pub struct SourceTables {
    pub id: String,
    tables: BTreeMap<Table, RecordBatch>,
}

impl SourceTables {
    /// Reads every table of `block`, checking each has the documented column types.
    pub async fn read(store: &Arc<dyn ObjectStore>, block: &BlockMeta) -> Result<Self, MergeError> {
        let mut tables = BTreeMap::new();
        for table in Table::ALL {
            let batches: Vec<RecordBatch> = block::read_table(
                Arc::clone(store),
                &block.tenant,
                &block.id,
                table,
                READ_BATCH_ROWS,
            )
            .await?
            .try_collect()
            .await?;
            let expected = table.schema();
            for b in &batches {
                let types = |s: &arrow_schema::Schema| {
                    s.fields()
                        .iter()
                        .map(|f| f.data_type().clone())
                        .collect::<Vec<_>>()
                };
                if types(&b.schema()) != types(&expected) {
                    return Err(MergeError::Corrupt {
                        block: block.id.clone(),
                        message: format!(
                            "{table} has columns {:?}, not the block format's",
                            b.schema()
                        ),
                    });
                }
            }
            let batch = if batches.is_empty() {
                RecordBatch::new_empty(Arc::clone(&expected))
            } else {
                let columns = (0..expected.fields().len())
                    .map(|c| {
                        let parts: Vec<&dyn Array> =
                            batches.iter().map(|b| b.column(c).as_ref()).collect();
                        arrow_select::concat::concat(&parts)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                RecordBatch::try_new(Arc::clone(&expected), columns)?
            };
            tables.insert(table, batch);
        }
        Ok(Self {
            id: block.id.clone(),
            tables,
        })
    }

    fn table(&self, table: Table) -> &RecordBatch {
        &self.tables[&table]
    }
}

/// One output of a merge: the rows of one window.
#[derive(Debug)]
pub struct MergedWindow {
    pub window_start: i64,
    pub batches: BlockBatches,
}

/// What a merge produced.
#[derive(Debug)]
pub struct Merged {
    pub windows: Vec<MergedWindow>,
    /// Profiles dropped as copies of one already kept.
    pub duplicates: u64,
    /// Profiles dropped because `keep` refused them.
    pub removed: u64,
}

/// Column positions of the block tables (see `docs/block-format.md`).
mod col {
    pub(super) const SERVICE: usize = 0;
    pub(super) const PROFILE_TYPE: usize = 1;
    pub(super) const FINGERPRINT: usize = 2;
    pub(super) const TIME: usize = 3;
    pub(super) const PROFILE_ID: usize = 4;
    pub(super) const STACK_HASH: usize = 5;
    pub(super) const VALUE: usize = 6;
    pub(super) const SPAN_ID: usize = 7;
    pub(super) const TOTAL_VALUE: usize = 7;
    pub(super) const NUM_SAMPLES: usize = 8;
    pub(super) const SERIES_FINGERPRINT: usize = 0;
    pub(super) const SERIES_SERVICE: usize = 1;
    pub(super) const SERIES_PROFILE_TYPE: usize = 2;
    pub(super) const STACK_FRAMES: usize = 1;
}

/// Typed views of one source's profile and sample keys.
struct SourceKeys<'a> {
    service: &'a StringArray,
    profile_type: &'a StringArray,
    fingerprint: &'a UInt64Array,
    time: &'a Int64Array,
    profile_id: &'a StringArray,
    sample_fingerprint: &'a UInt64Array,
    sample_time: &'a Int64Array,
    sample_profile_id: &'a DictionaryArray<Int32Type>,
    sample_profile_ids: &'a StringArray,
    stack: &'a UInt64Array,
    value: &'a Int64Array,
    span: &'a UInt64Array,
}

impl<'a> SourceKeys<'a> {
    fn new(source: &'a SourceTables) -> Self {
        let p = source.table(Table::Profiles);
        let s = source.table(Table::Samples);
        let pid = s.column(col::PROFILE_ID).as_dictionary::<Int32Type>();
        Self {
            service: p.column(col::SERVICE).as_string(),
            profile_type: p.column(col::PROFILE_TYPE).as_string(),
            fingerprint: p.column(col::FINGERPRINT).as_primitive::<UInt64Type>(),
            time: p.column(col::TIME).as_primitive::<Int64Type>(),
            profile_id: p.column(col::PROFILE_ID).as_string(),
            sample_fingerprint: s.column(col::FINGERPRINT).as_primitive::<UInt64Type>(),
            sample_time: s.column(col::TIME).as_primitive::<Int64Type>(),
            sample_profile_id: pid,
            sample_profile_ids: pid.values().as_string(),
            stack: s.column(col::STACK_HASH).as_primitive::<UInt64Type>(),
            value: s.column(col::VALUE).as_primitive::<Int64Type>(),
            span: s.column(col::SPAN_ID).as_primitive::<UInt64Type>(),
        }
    }

    /// (service, profile type, fingerprint, time, profile id) of profile row `r`.
    fn key(&self, r: usize) -> (&str, &str, u64, i64, &str) {
        (
            self.service.value(r),
            self.profile_type.value(r),
            self.fingerprint.value(r),
            self.time.value(r),
            self.profile_id.value(r),
        )
    }

    fn same_profile(&self, a: usize, b: usize) -> bool {
        self.fingerprint.value(a) == self.fingerprint.value(b)
            && self.time.value(a) == self.time.value(b)
            && self.profile_id.value(a) == self.profile_id.value(b)
    }

    fn sample_is_of(&self, row: usize, profile: usize) -> bool {
        let key = self.sample_profile_id.keys().value(row);
        self.sample_fingerprint.value(row) == self.fingerprint.value(profile)
            && self.sample_time.value(row) == self.time.value(profile)
            && usize::try_from(key)
                .is_ok_and(|k| self.sample_profile_ids.value(k) == self.profile_id.value(profile))
    }
}

/// Each profile row's samples in one source: the rows of its key for the first row of a key,
/// nothing for the repeats, which are flagged so their samples are deduplicated.
struct SampleRanges {
    ranges: Vec<Range<usize>>,
    repeated: Vec<bool>,
}

fn sample_ranges(source: &SourceTables, keys: &SourceKeys<'_>) -> Result<SampleRanges, MergeError> {
    let profiles = source.table(Table::Profiles).num_rows();
    let samples = source.table(Table::Samples).num_rows();
    let mut ranges = Vec::with_capacity(profiles);
    let mut repeated = vec![false; profiles];
    let mut first = 0;
    let mut cursor = 0;
    for r in 0..profiles {
        if r > 0 && keys.same_profile(first, r) {
            repeated[first] = true;
            ranges.push(cursor..cursor);
            continue;
        }
        first = r;
        let start = cursor;
        while cursor < samples && keys.sample_is_of(cursor, r) {
            cursor += 1;
        }
        ranges.push(start..cursor);
    }
    if cursor != samples {
        return Err(MergeError::Corrupt {
            block: source.id.clone(),
            message: format!(
                "samples rows {cursor}..{samples} belong to no profile row in the profiles table's order"
            ),
        });
    }
    Ok(SampleRanges { ranges, repeated })
}

/// Rows picked for one output window, as (source, row) pairs.
#[derive(Default)]
struct WindowRows {
    profiles: Vec<(usize, usize)>,
    totals: Vec<i64>,
    counts: Vec<u64>,
    samples: Vec<(usize, usize)>,
    fingerprints: HashSet<u64>,
    stacks: HashSet<u64>,
    min_time: Option<i64>,
    max_time: Option<i64>,
    services: BTreeSet<String>,
    profile_types: BTreeSet<String>,
}

/// Merges `sources` (sorted by block id) into one block per window of `window_nanos` their
/// kept profiles fall in, in window order. `keep(fingerprint, time)` drops profiles that must
/// not survive (deleted series).
pub fn merge(
    sources: &[SourceTables],
    window_nanos: i64,
    keep: &dyn Fn(u64, i64) -> bool,
) -> Result<Merged, MergeError> {
    let keys: Vec<SourceKeys<'_>> = sources.iter().map(SourceKeys::new).collect();
    let ranges = sources
        .iter()
        .zip(&keys)
        .map(|(s, k)| sample_ranges(s, k))
        .collect::<Result<Vec<_>, _>>()?;

    // Repeats of a profile within one source were folded into its first row above.
    let mut order: Vec<(usize, usize)> = Vec::new();
    for (s, r) in ranges.iter().enumerate() {
        order.extend(
            (0..r.ranges.len())
                .filter(|&row| row == 0 || !keys[s].same_profile(row - 1, row))
                .map(|row| (s, row)),
        );
    }
    let mut duplicates =
        ranges.iter().map(|r| r.ranges.len()).sum::<usize>() as u64 - order.len() as u64;
    order.sort_by(|&(sa, ra), &(sb, rb)| keys[sa].key(ra).cmp(&keys[sb].key(rb)).then(sa.cmp(&sb)));

    let mut windows: BTreeMap<i64, WindowRows> = BTreeMap::new();
    let mut removed = 0;
    let mut previous: Option<(usize, usize)> = None;
    for &(s, r) in &order {
        let key = keys[s].key(r);
        if previous.is_some_and(|(ps, pr)| keys[ps].key(pr) == key) {
            duplicates += 1;
            continue;
        }
        previous = Some((s, r));
        let (service, profile_type, fingerprint, time, _) = key;
        if !keep(fingerprint, time) {
            removed += 1;
            continue;
        }
        let w = windows.entry(window_start(time, window_nanos)).or_default();
        let k = &keys[s];
        let mut seen = HashSet::new();
        let (mut total, mut count) = (0i64, 0u64);
        for row in ranges[s].ranges[r].clone() {
            if ranges[s].repeated[r]
                && !seen.insert((
                    k.stack.value(row),
                    k.span.is_valid(row).then(|| k.span.value(row)),
                ))
            {
                continue;
            }
            w.samples.push((s, row));
            w.stacks.insert(k.stack.value(row));
            total = total.saturating_add(k.value.value(row));
            count += 1;
        }
        w.profiles.push((s, r));
        w.totals.push(total);
        w.counts.push(count);
        w.fingerprints.insert(fingerprint);
        w.min_time = Some(w.min_time.map_or(time, |t| t.min(time)));
        w.max_time = Some(w.max_time.map_or(time, |t| t.max(time)));
        if !w.services.contains(service) {
            w.services.insert(service.to_owned());
        }
        if !w.profile_types.contains(profile_type) {
            w.profile_types.insert(profile_type.to_owned());
        }
    }

    let symbols = Symbols::index(sources);
    let windows = windows
        .into_iter()
        .map(|(start, rows)| {
            Ok(MergedWindow {
                window_start: start,
                batches: build(sources, &symbols, rows)?,
            })
        })
        .collect::<Result<Vec<_>, MergeError>>()?;
    Ok(Merged {
        windows,
        duplicates,
        removed,
    })
}

/// Where each series, stack and frame is first found among the sources.
struct Symbols {
    series: HashMap<u64, (usize, usize)>,
    stacks: HashMap<u64, (usize, usize)>,
    frames: HashMap<u64, (usize, usize)>,
}

impl Symbols {
    fn index(sources: &[SourceTables]) -> Self {
        let first = |table: Table, column: usize| {
            let mut at = HashMap::new();
            for (s, source) in sources.iter().enumerate() {
                let ids = source
                    .table(table)
                    .column(column)
                    .as_primitive::<UInt64Type>();
                for (row, id) in ids.values().iter().enumerate() {
                    at.entry(*id).or_insert((s, row));
                }
            }
            at
        };
        Self {
            series: first(Table::Series, col::SERIES_FINGERPRINT),
            stacks: first(Table::Stacks, 0),
            frames: first(Table::Frames, 0),
        }
    }
}

fn missing(sources: &[SourceTables], what: &str, id: u64) -> MergeError {
    MergeError::Corrupt {
        block: sources
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(","),
        message: format!("{what} {id:#x} is used by a sample but listed by no source block"),
    }
}

/// Each column of `table` picked from the sources at `rows`.
fn pick(
    sources: &[SourceTables],
    table: Table,
    rows: &[(usize, usize)],
) -> Result<Vec<ArrayRef>, MergeError> {
    let schema = table.schema();
    (0..schema.fields().len())
        .map(|c| {
            let columns: Vec<&dyn Array> = sources
                .iter()
                .map(|s| s.table(table).column(c).as_ref())
                .collect();
            Ok(interleave(&columns, rows)?)
        })
        .collect()
}

fn build(
    sources: &[SourceTables],
    symbols: &Symbols,
    rows: WindowRows,
) -> Result<BlockBatches, MergeError> {
    let mut profiles = pick(sources, Table::Profiles, &rows.profiles)?;
    profiles[col::TOTAL_VALUE] = Arc::new(Int64Array::from(rows.totals));
    profiles[col::NUM_SAMPLES] = Arc::new(UInt64Array::from(rows.counts));
    let samples = pick(sources, Table::Samples, &rows.samples)?;

    let series_str = |(s, row): (usize, usize), c: usize| {
        sources[s]
            .table(Table::Series)
            .column(c)
            .as_string::<i32>()
            .value(row)
    };
    let mut series = rows
        .fingerprints
        .iter()
        .map(|fp| {
            symbols
                .series
                .get(fp)
                .map(|&at| (at, *fp))
                .ok_or_else(|| missing(sources, "series", *fp))
        })
        .collect::<Result<Vec<_>, _>>()?;
    series.sort_by(|(a, fa), (b, fb)| {
        (
            series_str(*a, col::SERIES_SERVICE),
            series_str(*a, col::SERIES_PROFILE_TYPE),
            fa,
        )
            .cmp(&(
                series_str(*b, col::SERIES_SERVICE),
                series_str(*b, col::SERIES_PROFILE_TYPE),
                fb,
            ))
    });
    let series: Vec<(usize, usize)> = series.into_iter().map(|(at, _)| at).collect();

    let mut stack_hashes: Vec<u64> = rows.stacks.into_iter().collect();
    stack_hashes.sort_unstable();
    let stacks = stack_hashes
        .iter()
        .map(|h| {
            symbols
                .stacks
                .get(h)
                .copied()
                .ok_or_else(|| missing(sources, "stack", *h))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut frame_ids = BTreeSet::new();
    for &(s, row) in &stacks {
        let lists = sources[s]
            .table(Table::Stacks)
            .column(col::STACK_FRAMES)
            .as_list::<i32>();
        let frames = lists.value(row);
        let frames: &PrimitiveArray<UInt64Type> = frames.as_primitive();
        frame_ids.extend(frames.values().iter().copied());
    }
    let frames = frame_ids
        .iter()
        .map(|id| {
            symbols
                .frames
                .get(id)
                .copied()
                .ok_or_else(|| missing(sources, "frame", *id))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let batch =
        |table: Table, columns: Vec<ArrayRef>| RecordBatch::try_new(table.schema(), columns);
    Ok(BlockBatches {
        samples: batch(Table::Samples, samples)?,
        profiles: batch(Table::Profiles, profiles)?,
        series: batch(Table::Series, pick(sources, Table::Series, &series)?)?,
        stacks: batch(Table::Stacks, pick(sources, Table::Stacks, &stacks)?)?,
        frames: batch(Table::Frames, pick(sources, Table::Frames, &frames)?)?,
        min_time_nanos: rows.min_time.unwrap_or(0),
        max_time_nanos: rows.max_time.unwrap_or(0),
        services: rows.services.into_iter().collect(),
        profile_types: rows.profile_types.into_iter().collect(),
    })
}
