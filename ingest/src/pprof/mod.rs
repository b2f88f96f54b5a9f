//! pprof decoding, validation and normalization, and the split of one profile into series.
//!
//! A pprof with k sample types and n distinct sample-label sets becomes up to k·n
//! [`SeriesProfile`]s. Stacks become root-first lists of frame ids; a frame is one (possibly
//! inlined) line of a location, identified by a content hash, and a stack by the hash of its
//! frame ids, so equal stacks hash equally in every process, block and tenant.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;

use profusion_proto::google::v1::Profile;
use profusion_proto::ingester::v1::{Frame, SeriesProfile, Stack, StackSample};

use bytes::Bytes;

use crate::error::{IngestError, Result};
use crate::frame_text::FrameText;

mod view;
use profusion_model::hash::PrehashedMap;
use profusion_model::symbols::{self, FrameKey};
pub use view::{DecodeError, LocationRef, PprofSource, ProfileView, SampleRef};

use crate::id_index::IdIndex;
use crate::limits::Limits;
use crate::validation;
use profusion_model::labels::{self, Labels};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Returns `data` itself, or its gunzipped form if it starts with the gzip magic. Output past
/// `limit` bytes is an error, so a small bomb cannot exhaust memory.
pub fn maybe_gunzip(data: &[u8], limit: usize) -> Result<std::borrow::Cow<'_, [u8]>> {
    if !data.starts_with(&GZIP_MAGIC) {
        if data.len() > limit {
            return Err(too_big(data.len(), limit));
        }
        return Ok(std::borrow::Cow::Borrowed(data));
    }
    // A gzip member ends with its uncompressed size (mod 2^32): exact for the one-member bodies
    // agents send, so the output is allocated once, with no slack to carry while its frames'
    // strings wait for the WAL thread. Only a hint: a lying trailer costs no more than the
    // limit (untouched pages of it no memory at all), and a wrong one a regrowth.
    let trailer = data
        .len()
        .checked_sub(4)
        .map(|at| u32::from_le_bytes(data[at..].try_into().expect("4 bytes")) as usize);
    let hint = trailer
        .filter(|&n| n > 0)
        .unwrap_or(data.len().saturating_mul(4));
    let mut out = Vec::with_capacity(hint.min(limit));
    flate2::read::MultiGzDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IngestError::invalid(format!("invalid gzip data: {e}")))?;
    if out.len() > limit {
        return Err(too_big(out.len(), limit));
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// The error of a profile over `--validation.max-profile-size-bytes` (400, as Pyroscope).
pub(crate) fn too_big(size: usize, limit: usize) -> IngestError {
    IngestError::invalid(format!(
        "profile is {}{size} bytes uncompressed, more than the limit of {limit} bytes",
        if size > limit { "over " } else { "" }
    ))
}

/// Reads an uncompressed pprof in place (see [`ProfileView`]).
pub fn view(bytes: &[u8]) -> Result<ProfileView<'_>> {
    ProfileView::decode(bytes)
        .map_err(|e| IngestError::invalid(format!("invalid pprof protobuf: {e}")))
}

/// How a pprof's symbols and times are interpreted.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Time for profiles whose `time_nanos` is 0 (or, with `fix_1970`, in 1970).
    pub fallback_time_nanos: i64,
    /// Duration for profiles whose `duration_nanos` is 0 (the legacy `/ingest`'s `until - from`).
    pub fallback_duration_nanos: i64,
    /// Old agents sent microseconds: replace a time in 1970 by the fallback.
    pub fix_1970: bool,
    /// pyspy/rbspy: function names become `<filename> <name>` unless the file is absolute.
    pub prefix_function_with_filename: bool,
    /// Display names replacing sample type names (from `sample_type_config`).
    pub sample_type_names: HashMap<String, String>,
    /// Unit overrides per (original) sample type name.
    pub sample_type_units: HashMap<String, String>,
}

/// Series profiles and the symbols they reference: the body of an ingester write.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Converted {
    pub profiles: Vec<SeriesProfile>,
    pub stacks: Vec<Stack>,
    pub frames: Vec<Frame>,
    /// Where frames without their strings left them.
    pub text: FrameText,
    /// What the profile costs, for rate limiting and metrics: its uncompressed bytes and
    /// labels, or one byte per stored frame reference when that is more.
    pub bytes: usize,
    /// Position of each frame by id, and the stack hashes held: kept by [`Self::append`].
    frame_index: PrehashedMap<u64, u32>,
    stack_index: PrehashedMap<u64, ()>,
}

impl Converted {
    /// Adds another conversion's output. Frames and stacks both hold are kept once (frames by
    /// their content id, stacks by hash), so profiles of one request that share symbols do
    /// not store them once each.
    pub fn append(&mut self, other: Converted) {
        if self.profiles.is_empty() && self.frames.is_empty() && self.stacks.is_empty() {
            // The first profile of a request (most requests hold one): nothing to merge with.
            let bytes = self.bytes;
            *self = other;
            self.bytes += bytes;
            return;
        }
        if self.frame_index.len() != self.frames.len() {
            self.frame_index = self
                .frames
                .iter()
                .enumerate()
                .map(|(i, f)| (f.id, i as u32))
                .collect();
            self.stack_index = self.stacks.iter().map(|s| (s.hash, ())).collect();
        }
        let mut remap = Vec::with_capacity(other.frames.len());
        let buffers = self.text.add_buffers_of(&other.text);
        for (i, f) in other.frames.into_iter().enumerate() {
            let next = self.frames.len() as u32;
            let at = *self.frame_index.entry(f.id).or_insert(next);
            if at == next {
                self.text.take_from(next as usize, &other.text, i, buffers);
                self.frames.push(f);
            }
            remap.push(at);
        }
        self.profiles.extend(other.profiles);
        for mut stack in other.stacks {
            if self.stack_index.insert(stack.hash, ()).is_none() {
                stack
                    .frame_refs
                    .iter_mut()
                    .for_each(|r| *r = remap[*r as usize]);
                self.stacks.push(stack);
            }
        }
        self.bytes += other.bytes;
    }
}

/// A pprof's string table, read with errors that say which reference was out of range.
struct Strings<'a, S: ?Sized>(&'a S);

impl<S: PprofSource + ?Sized> Strings<'_, S> {
    fn get(&self, idx: i64, what: &str) -> Result<&str> {
        self.get_lazy(idx, || what.to_owned())
    }

    /// Like `get`, building the error's location only on failure (hot loops).
    fn get_lazy(&self, idx: i64, what: impl FnOnce() -> String) -> Result<&str> {
        usize::try_from(idx)
            .ok()
            .and_then(|i| self.0.string(i))
            .ok_or_else(|| {
                IngestError::invalid(format!(
                    "{} refers to string {idx}, but the string table has {} entries",
                    what(),
                    self.0.num_strings()
                ))
            })
    }
}

/// Validates, normalizes and splits a pprof into series. `base` holds the series labels the
/// request carried (must include `__name__` and `service_name`); `now_nanos` anchors the
/// ingestion time window.
pub fn convert(
    profile: &(impl PprofSource + ?Sized),
    base: &Labels,
    profile_id: &str,
    options: &ConvertOptions,
    limits: &Limits,
    now_nanos: i64,
    decoded_size: usize,
) -> Result<Converted> {
    let index = SymbolIndex::build(profile)?;
    convert_over(
        profile,
        Symbols::own(profile, &index, None),
        base,
        profile_id,
        options,
        limits,
        now_nanos,
        decoded_size,
    )
}

/// [`convert`] of an uncompressed pprof read in place: its frames leave their strings in
/// `bytes`, for the ingester to copy out only those its head lacks (see [`FrameText`]).
pub fn convert_in_place(
    bytes: Bytes,
    base: &Labels,
    profile_id: &str,
    options: &ConvertOptions,
    limits: &Limits,
    now_nanos: i64,
) -> Result<Converted> {
    let profile = view(&bytes)?;
    let index = SymbolIndex::build(&profile)?;
    convert_over(
        &profile,
        Symbols::own(&profile, &index, Some(&bytes)),
        base,
        profile_id,
        options,
        limits,
        now_nanos,
        bytes.len(),
    )
}

/// A pprof holding only symbol tables (strings, mappings, locations, functions), shared by the
/// profiles of one request (OTLP's dictionary): indexed and measured once, not per profile.
#[derive(Debug)]
pub struct SharedSymbols {
    pub profile: Profile,
    pub encoded_len: usize,
    index: SymbolIndex,
}

impl SharedSymbols {
    pub fn new(profile: Profile) -> Result<Self> {
        Ok(Self {
            encoded_len: prost::Message::encoded_len(&profile),
            index: SymbolIndex::build(&profile)?,
            profile,
        })
    }
}

/// [`convert`] of a profile whose symbol tables are `symbols`'s, shared with the other
/// profiles of one request: `profile` gives the samples, sample types, period and times, its
/// string indexes pointing into `symbols.profile.string_table`. Only the locations the samples
/// reference are resolved, so a profile costs its samples, not the whole shared dictionary.
#[allow(clippy::too_many_arguments)]
pub fn convert_shared(
    profile: &(impl PprofSource + ?Sized),
    symbols: &SharedSymbols,
    base: &Labels,
    profile_id: &str,
    options: &ConvertOptions,
    limits: &Limits,
    now_nanos: i64,
    decoded_size: usize,
) -> Result<Converted> {
    let symbols = Symbols {
        profile: &symbols.profile,
        index: &symbols.index,
        shared: true,
        buffer: None,
    };
    convert_over(
        profile,
        symbols,
        base,
        profile_id,
        options,
        limits,
        now_nanos,
        decoded_size,
    )
}

/// A profile's symbol tables and their index.
struct Symbols<'a, S: ?Sized> {
    profile: &'a S,
    index: &'a SymbolIndex,
    /// Shared by many profiles: resolve into a sparse map, not a table of every location.
    shared: bool,
    /// The decoded pprof the strings are slices of, when they are: frames then leave their
    /// strings there ([`FrameText`]).
    buffer: Option<&'a Bytes>,
}

impl<'a, S: ?Sized> Symbols<'a, S> {
    /// The symbol tables of `profile` itself, whose strings are slices of `buffer` if given.
    fn own(profile: &'a S, index: &'a SymbolIndex, buffer: Option<&'a Bytes>) -> Self {
        Self {
            profile,
            index,
            shared: false,
            buffer,
        }
    }
}

/// Position of each location, function and mapping id in a pprof's tables.
#[derive(Debug)]
struct SymbolIndex {
    location: IdIndex,
    function: IdIndex,
    mapping: IdIndex,
}

impl SymbolIndex {
    fn build(profile: &(impl PprofSource + ?Sized)) -> Result<Self> {
        fn index(ids: impl ExactSizeIterator<Item = u64> + Clone, what: &str) -> Result<IdIndex> {
            if let Some(i) = ids.clone().position(|id| id == 0) {
                return Err(IngestError::invalid(format!("{what}[{i}] has id 0")));
            }
            IdIndex::build(ids).map_err(|d| {
                IngestError::invalid(format!(
                    "{what}[{}] has id {}, the same as {what}[{}]: ids must be unique",
                    d.repeat, d.id, d.first
                ))
            })
        }
        Ok(Self {
            location: index(
                (0..profile.num_locations()).map(|i| profile.location(i).id),
                "location",
            )?,
            function: index(profile.functions().iter().map(|f| f.id), "function")?,
            mapping: index(profile.mappings().iter().map(|m| m.id), "mapping")?,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn convert_over<P: PprofSource + ?Sized, S: PprofSource + ?Sized>(
    profile: &P,
    symbols: Symbols<'_, S>,
    base: &Labels,
    profile_id: &str,
    options: &ConvertOptions,
    limits: &Limits,
    now_nanos: i64,
    decoded_size: usize,
) -> Result<Converted> {
    let strings = Strings(symbols.profile);
    if symbols.profile.string(0).is_some_and(|s| !s.is_empty()) {
        return Err(IngestError::invalid(
            "string_table[0] must be the empty string",
        ));
    }
    if profile.sample_type().is_empty() {
        return Err(IngestError::invalid("profile has no sample types"));
    }
    if profile.num_samples() > limits.max_profile_samples {
        return Err(IngestError::invalid(format!(
            "profile has {} samples, more than the limit of {}",
            profile.num_samples(),
            limits.max_profile_samples
        )));
    }

    let time_nanos = match profile.time_nanos() {
        0 => options.fallback_time_nanos,
        t if options.fix_1970 && t < 31_536_000_000_000_000 => options.fallback_time_nanos,
        t => t,
    };
    check_time_window(time_nanos, now_nanos, limits)?;

    let mut sample_types = Vec::with_capacity(profile.sample_type().len());
    for (i, st) in profile.sample_type().iter().enumerate() {
        let ty = strings.get(st.r#type, &format!("sample_type[{i}].type"))?;
        let unit = strings.get(st.unit, &format!("sample_type[{i}].unit"))?;
        if ty.contains('-') {
            return Err(IngestError::invalid(format!(
                "sample type {:?} must not contain '-'",
                labels::clip(ty, 128)
            )));
        }
        let unit = options
            .sample_type_units
            .get(ty)
            .map_or(unit, String::as_str);
        let ty = options.sample_type_names.get(ty).map_or(ty, String::as_str);
        sample_types.push((ty.to_owned(), unit.to_owned()));
    }
    let (period_type, period_unit) = match profile.period_type() {
        Some(pt) => (
            strings.get(pt.r#type, "period_type.type")?.to_owned(),
            strings.get(pt.unit, "period_type.unit")?.to_owned(),
        ),
        None => (String::new(), String::new()),
    };
    let metric = base.get(labels::METRIC_NAME).unwrap_or_default().to_owned();
    validation::check_profile_type_part(labels::METRIC_NAME, &metric)?;
    for (ty, unit) in &sample_types {
        validation::check_profile_type_part("sample type", ty)?;
        validation::check_profile_type_part("sample unit", unit)?;
    }
    validation::check_profile_type_part("period type", &period_type)?;
    validation::check_profile_type_part("period unit", &period_unit)?;

    let mut symbols = SymbolTable::new(symbols, &strings, options, limits);

    // Group samples by their string-label set (as string-table indexes, so the hot loop
    // allocates nothing per label); merge equal (stack, span) pairs within a group. Their
    // values are rows of one table, `types` wide, not a vector each.
    let types = sample_types.len();
    type Group = PrehashedMap<(u64, u64), usize>;
    let mut groups: HashMap<Vec<(i64, i64)>, Group> = HashMap::new();
    // Reserved for every sample being distinct, within a bound: the samples' value counts are
    // checked only as they are read.
    let mut values: Vec<i64> =
        Vec::with_capacity(profile.num_samples().saturating_mul(types).min(1 << 20));
    for si in 0..profile.num_samples() {
        let sample = profile.sample(si);
        if sample.value.len() != sample_types.len() {
            return Err(IngestError::invalid(format!(
                "sample[{si}] has {} values but the profile has {} sample types",
                sample.value.len(),
                sample_types.len()
            )));
        }
        if sample.label.len() > limits.max_sample_labels {
            return Err(IngestError::invalid(format!(
                "sample[{si}] has {} labels, more than the limit of {}",
                sample.label.len(),
                limits.max_sample_labels
            )));
        }
        if sample.value.iter().any(|v| *v < 0) || sample.value.iter().all(|v| *v == 0) {
            continue;
        }
        let mut span_id = 0u64;
        let mut sample_labels = Vec::new();
        for (li, label) in sample.label.iter().enumerate() {
            if label.str == 0 {
                continue; // numeric labels are dropped
            }
            let key = strings.get_lazy(label.key, || format!("sample[{si}].label[{li}].key"))?;
            let value = strings.get_lazy(label.str, || format!("sample[{si}].label[{li}].str"))?;
            match key {
                "span_id" | "profile_id" => span_id = symbols::parse_span_id(value).unwrap_or(0),
                "trace_id" | "" => {}
                _ => sample_labels.push((label.key, label.str)),
            }
        }
        sample_labels.sort_unstable();
        sample_labels.dedup_by_key(|l| l.0);
        let stack_hash = symbols
            .stack(sample.location_id)
            .map_err(|e| e.at(format!("sample[{si}]")))?;
        let row = *groups
            .entry(sample_labels)
            .or_default()
            .entry((stack_hash, span_id))
            .or_insert_with(|| {
                values.resize(values.len() + types, 0);
                values.len() / types - 1
            });
        for (acc, v) in values[row * types..][..types].iter_mut().zip(sample.value) {
            *acc = acc.saturating_add(*v);
        }
    }

    let mut group_list: Vec<_> = groups.into_iter().collect();
    group_list.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Converted {
        bytes: decoded_size + base.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
        ..Converted::default()
    };
    for (sample_labels, samples) in group_list {
        let mut series = base.clone();
        for (k, v) in sample_labels {
            // Both indexes were checked while grouping.
            series.set(strings.get(k, "label key")?, strings.get(v, "label value")?);
        }
        let mut ordered: Vec<_> = samples.into_iter().collect();
        ordered.sort_unstable_by_key(|(key, _)| *key);
        for (ti, (ty, unit)) in sample_types.iter().enumerate() {
            // Sized exactly: the head keeps the vector for an hour, and one grown by doubling
            // would be copied again to shed its spare capacity.
            let value = |row: usize| values[row * types + ti];
            let nonzero = ordered.iter().filter(|(_, row)| value(*row) != 0);
            let mut stack_samples = Vec::with_capacity(nonzero.clone().count());
            stack_samples.extend(nonzero.map(|((stack_hash, span_id), row)| StackSample {
                stack_hash: *stack_hash,
                value: value(*row),
                span_id: *span_id,
            }));
            if stack_samples.is_empty() {
                continue;
            }
            let mut labels = series.clone();
            labels.set(labels::TYPE, ty.as_str());
            labels.set(labels::UNIT, unit.as_str());
            if !period_type.is_empty() {
                labels.set(labels::PERIOD_TYPE, period_type.as_str());
                labels.set(labels::PERIOD_UNIT, period_unit.as_str());
            }
            labels.set(
                labels::PROFILE_TYPE,
                profusion_model::profile_type::id(&metric, ty, unit, &period_type, &period_unit),
            );
            if let Some(service) = labels.get(labels::SERVICE_NAME).map(str::to_owned) {
                labels.set(labels::SERVICE_NAME_PRIVATE, service);
            }
            validation::validate(&labels, limits)?;
            out.profiles.push(SeriesProfile {
                fingerprint: labels.fingerprint(),
                labels: labels.to_pairs(),
                time_nanos,
                duration_nanos: match profile.duration_nanos() {
                    0 => options.fallback_duration_nanos,
                    d => d,
                },
                period: profile.period(),
                profile_id: profile_id.to_owned(),
                samples: stack_samples,
            });
        }
    }
    let (stacks, frames, text) = symbols.finish();
    // A stack is stored as its list of frames, so inlined lines referenced by many samples
    // store far more than their bytes on the wire: charge at least one byte per stored frame
    // reference, so the rate limit bounds what a small push makes the head hold.
    let stored_frames: usize = stacks.iter().map(|s| s.frame_refs.len()).sum();
    out.bytes = out.bytes.max(stored_frames);
    out.stacks = stacks;
    out.frames = frames;
    out.text = text;
    Ok(out)
}

fn check_time_window(time_nanos: i64, now_nanos: i64, limits: &Limits) -> Result<()> {
    let older = limits.reject_older_than.as_nanos() as i64;
    let newer = limits.reject_newer_than.as_nanos() as i64;
    if older > 0 && time_nanos < now_nanos.saturating_sub(older) {
        return Err(IngestError::invalid(format!(
            "profile time {} is too old: older than {}s before now",
            time_nanos,
            limits.reject_older_than.as_secs()
        )));
    }
    if newer > 0 && time_nanos > now_nanos.saturating_add(newer) {
        return Err(IngestError::invalid(format!(
            "profile time {} is too far in the future: more than {}s after now",
            time_nanos,
            limits.reject_newer_than.as_secs()
        )));
    }
    Ok(())
}

/// Resolves locations to frames once each and hashes stacks, deduplicating both.
struct SymbolTable<'a, S: ?Sized> {
    profile: &'a S,
    strings: &'a Strings<'a, S>,
    options: &'a ConvertOptions,
    limits: &'a Limits,
    index: &'a SymbolIndex,
    /// Per location index: its frames (indexes into `frames`), leaf first, once resolved, as
    /// a range of `location_pool`: one vector for every location, not one each.
    location_frames: LocationFrames,
    location_pool: Vec<u32>,
    /// Distinct frames in first-seen order, and the position of each frame id.
    frames: Vec<Frame>,
    frame_index: PrehashedMap<u64, u32>,
    /// The id of each frame of `frames`: hashing a stack reads these, packed, not the frames.
    frame_ids: Vec<u64>,
    /// Where frames left their strings, and the number of `symbols.buffer` in it.
    text: FrameText,
    buffer: Option<u32>,
    /// Root-first frame indexes by stack hash.
    stacks: PrehashedMap<u64, Vec<u32>>,
    scratch: Vec<u32>,
    hash_input: Vec<u8>,
}

/// The resolved frames of each location: a table of every location for a profile's own
/// symbols, a map of the referenced ones for shared symbols (a table per profile would cost
/// the whole shared dictionary per profile).
enum LocationFrames {
    Dense(Vec<Option<Range<u32>>>),
    Sparse(PrehashedMap<u64, Range<u32>>),
}

impl LocationFrames {
    fn get(&self, idx: usize) -> Option<Range<u32>> {
        match self {
            Self::Dense(v) => v[idx].clone(),
            Self::Sparse(m) => m.get(&(idx as u64)).cloned(),
        }
    }

    fn set(&mut self, idx: usize, frames: Range<u32>) {
        match self {
            Self::Dense(v) => v[idx] = Some(frames),
            Self::Sparse(m) => {
                m.insert(idx as u64, frames);
            }
        }
    }
}

impl<'a, S: PprofSource + ?Sized> SymbolTable<'a, S> {
    fn new(
        symbols: Symbols<'a, S>,
        strings: &'a Strings<'a, S>,
        options: &'a ConvertOptions,
        limits: &'a Limits,
    ) -> Self {
        let mut text = FrameText::default();
        let buffer = symbols.buffer.map(|b| text.add_buffer(b.clone()));
        // A profile's own locations are nearly all referenced, most as one frame each: sized
        // for them, the frame tables are not copied as they grow. Shared symbols are a whole
        // request's dictionary, of which one profile uses a part.
        // Bounded, as a hostile pprof may list millions of locations no sample references.
        let frames = if symbols.shared {
            0
        } else {
            symbols.profile.num_locations().min(1 << 16)
        };
        if buffer.is_some() {
            text.reserve(frames);
        }
        Self {
            profile: symbols.profile,
            strings,
            options,
            limits,
            index: symbols.index,
            location_frames: if symbols.shared {
                LocationFrames::Sparse(PrehashedMap::default())
            } else {
                LocationFrames::Dense(vec![None; symbols.profile.num_locations()])
            },
            location_pool: Vec::with_capacity(frames),
            frames: Vec::with_capacity(frames),
            frame_ids: Vec::with_capacity(frames),
            frame_index: PrehashedMap::with_capacity_and_hasher(frames, Default::default()),
            text,
            buffer,
            stacks: PrehashedMap::default(),
            scratch: Vec::new(),
            hash_input: Vec::new(),
        }
    }

    /// Hashes the stack of a sample (location ids leaf first), keeping at most
    /// `max_stack_depth` frames on the leaf side. Frames, not locations, are counted: a
    /// location with inlined functions is one frame per line, and a limit on locations would
    /// let one location of many lines, referenced many times, build a stack of any depth.
    fn stack(&mut self, location_ids: &[u64]) -> Result<u64> {
        let max = self.limits.max_stack_depth;
        let mut frames = std::mem::take(&mut self.scratch);
        frames.clear();
        for &id in location_ids {
            if frames.len() >= max {
                break;
            }
            let idx = self.index.location.get(id).ok_or_else(|| {
                IngestError::invalid(format!("refers to location {id}, which does not exist"))
            })?;
            let resolved = match self.location_frames.get(idx) {
                Some(r) => r,
                None => {
                    let r = self.resolve_location(idx)?;
                    self.location_frames.set(idx, r.clone());
                    r
                }
            };
            let room = max - frames.len();
            frames.extend(
                self.location_pool[resolved.start as usize..resolved.end as usize]
                    .iter()
                    .take(room),
            );
        }
        frames.reverse();
        let hash = symbols::stack_hash(
            frames.iter().map(|&f| self.frame_ids[f as usize]),
            &mut self.hash_input,
        );
        self.stacks.entry(hash).or_insert_with(|| frames.clone());
        self.scratch = frames;
        Ok(hash)
    }

    /// Resolves location `idx` into frames appended to `location_pool`; returns their range.
    fn resolve_location(&mut self, idx: usize) -> Result<Range<u32>> {
        let loc = self.profile.location(idx);
        let at = |what: &str| format!("location[{idx}].{what}");
        let (mapping_file, build_id) = match loc.mapping_id {
            0 => ("", ""),
            id => {
                let m = self
                    .index
                    .mapping
                    .get(id)
                    .map(|i| &self.profile.mappings()[i])
                    .ok_or_else(|| {
                        IngestError::invalid(format!(
                            "{} refers to mapping {id}, which does not exist",
                            at("mapping_id")
                        ))
                    })?;
                (
                    self.strings
                        .get_lazy(m.filename, || at("mapping.filename"))?,
                    self.strings
                        .get_lazy(m.build_id, || at("mapping.build_id"))?,
                )
            }
        };
        let start = self.location_pool.len() as u32;
        if loc.line.is_empty() {
            // Unsymbolized: the address is the only identity the frame has.
            let frame = self.intern(FrameKey {
                mapping_file,
                build_id,
                address: loc.address,
                ..FrameKey::default()
            });
            self.location_pool.push(frame);
            return Ok(start..start + 1);
        }
        let max = self.limits.max_symbol_length;
        for (li, line) in loc.line.iter().enumerate() {
            let f = self
                .index
                .function
                .get(line.function_id)
                .map(|i| &self.profile.functions()[i])
                .ok_or_else(|| {
                    IngestError::invalid(format!(
                        "{} refers to function {}, which does not exist",
                        at(&format!("line[{li}].function_id")),
                        line.function_id
                    ))
                })?;
            let name = self.strings.get(f.name, "function.name")?;
            let system_name = self.strings.get(f.system_name, "function.system_name")?;
            let filename = self.strings.get(f.filename, "function.filename")?;
            let prefixed;
            let name = if self.options.prefix_function_with_filename
                && !filename.is_empty()
                && !filename.starts_with('/')
            {
                prefixed = format!("{filename} {name}");
                prefixed.as_str()
            } else {
                name
            };
            let frame = self.intern(FrameKey {
                function_name: validation::tail(name, max),
                system_name: validation::tail(system_name, max),
                filename: validation::tail(filename, max),
                line: line.line,
                start_line: f.start_line,
                mapping_file,
                build_id,
                address: 0,
            });
            self.location_pool.push(frame);
        }
        Ok(start..self.location_pool.len() as u32)
    }

    /// The index of the frame `key` names in `frames`, adding it if new: with its strings left
    /// in the pprof when they are all slices of it, copied otherwise.
    fn intern(&mut self, key: FrameKey<'_>) -> u32 {
        let id = key.id_with(&mut self.hash_input);
        let next = self.frames.len() as u32;
        let idx = *self.frame_index.entry(id).or_insert(next);
        if idx != next {
            return idx;
        }
        let numbers = Frame {
            id,
            line: key.line,
            start_line: key.start_line,
            address: key.address,
            ..Frame::default()
        };
        let fields = [
            key.function_name,
            key.system_name,
            key.filename,
            key.mapping_file,
            key.build_id,
        ];
        self.frame_ids.push(id);
        let left_in_place = self
            .buffer
            .is_some_and(|b| self.text.set(next as usize, b, fields));
        self.frames.push(if left_in_place {
            numbers
        } else {
            Frame {
                function_name: key.function_name.to_owned(),
                system_name: key.system_name.to_owned(),
                filename: key.filename.to_owned(),
                mapping_file: key.mapping_file.to_owned(),
                build_id: key.build_id.to_owned(),
                ..numbers
            }
        });
        idx
    }

    fn finish(self) -> (Vec<Stack>, Vec<Frame>, FrameText) {
        let mut stacks: Vec<Stack> = self
            .stacks
            .into_iter()
            .map(|(hash, frame_refs)| Stack { hash, frame_refs })
            .collect();
        stacks.sort_unstable_by_key(|s| s.hash);
        (stacks, self.frames, self.text)
    }
}

#[cfg(test)]
mod tests {
    use profusion_proto::google::v1::{Function, Label, Line, Location, Sample, ValueType};

    use super::*;

    /// A profile over functions named by the strings after index 0; stacks are leaf-first
    /// function ids, `types` are (type, unit) string indexes.
    fn profile(strings: &[&str], types: &[(i64, i64)], samples: Vec<Sample>) -> Profile {
        let functions: Vec<Function> = (1..strings.len() as u64)
            .map(|id| Function {
                id,
                name: id as i64,
                ..Function::default()
            })
            .collect();
        Profile {
            sample_type: types
                .iter()
                .map(|&(t, u)| ValueType { r#type: t, unit: u })
                .collect(),
            location: functions
                .iter()
                .map(|f| Location {
                    id: f.id,
                    line: vec![Line {
                        function_id: f.id,
                        line: 0,
                    }],
                    ..Location::default()
                })
                .collect(),
            function: functions,
            sample: samples,
            string_table: strings.iter().map(|s| (*s).to_owned()).collect(),
            time_nanos: 1_000,
            ..Profile::default()
        }
    }

    fn sample(stack: &[u64], value: &[i64], labels: &[(i64, i64)]) -> Sample {
        Sample {
            location_id: stack.to_vec(),
            value: value.to_vec(),
            label: labels
                .iter()
                .map(|&(key, str)| Label {
                    key,
                    str,
                    ..Label::default()
                })
                .collect(),
        }
    }

    fn base() -> Labels {
        Labels::from_pairs([("__name__", "process_cpu"), ("service_name", "svc")])
    }

    fn limits() -> Limits {
        Limits {
            reject_older_than: Duration::ZERO,
            reject_newer_than: Duration::ZERO,
            ..Limits::default()
        }
    }

    use std::time::Duration;

    fn run(p: &Profile, limits: &Limits) -> Result<Converted> {
        convert(
            p,
            &base(),
            "id",
            &ConvertOptions::default(),
            limits,
            1_000,
            0,
        )
    }

    /// (series labels without private ones, root-first stack names, value) of every sample.
    /// (labels, stack, value) of one sample.
    type FlatSample = (Vec<(String, String)>, String, i64);

    fn flat(c: &Converted) -> Vec<FlatSample> {
        let stacks: HashMap<u64, &Stack> = c.stacks.iter().map(|s| (s.hash, s)).collect();
        let mut out = Vec::new();
        for p in &c.profiles {
            let labels: Vec<(String, String)> = p
                .labels
                .iter()
                .filter(|l| !l.name.starts_with("__") || l.name == "__profile_type__")
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            for s in &p.samples {
                let names: Vec<&str> = stacks[&s.stack_hash]
                    .frame_refs
                    .iter()
                    .map(|&f| c.frames[f as usize].function_name.as_str())
                    .collect();
                out.push((labels.clone(), names.join(";"), s.value));
            }
        }
        out.sort();
        out
    }

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn each_sample_type_is_a_series_and_equal_stacks_merge() {
        // strings: 1 main, 2 work, 3 cpu, 4 nanoseconds, 5 samples, 6 count
        let p = profile(
            &["", "main", "work", "cpu", "nanoseconds", "samples", "count"],
            &[(5, 6), (3, 4)],
            vec![
                sample(&[2, 1], &[1, 10], &[]),
                sample(&[2, 1], &[2, 20], &[]),
                sample(&[1], &[0, 5], &[]),
                sample(&[1], &[0, 0], &[]),
                sample(&[2], &[-1, 7], &[]),
            ],
        );
        let c = run(&p, &limits()).unwrap();
        let cpu = l(&[
            ("__profile_type__", "process_cpu:cpu:nanoseconds::"),
            ("service_name", "svc"),
        ]);
        let samples = l(&[
            ("__profile_type__", "process_cpu:samples:count::"),
            ("service_name", "svc"),
        ]);
        assert_eq!(
            flat(&c),
            vec![
                (cpu.clone(), "main".into(), 5),
                (cpu, "main;work".into(), 30),
                (samples, "main;work".into(), 3),
            ]
        );
    }

    #[test]
    fn sample_labels_split_series_and_span_ids_stay_per_sample() {
        // strings: 1 main, 2 cpu, 3 ns, 4 route, 5 /a, 6 /b, 7 span_id, 8 hex span, 9 trace_id, 10 hex trace
        let p = profile(
            &[
                "",
                "main",
                "cpu",
                "nanoseconds",
                "route",
                "/a",
                "/b",
                "span_id",
                "00f067aa0ba902b7",
                "trace_id",
                "4bf92f3577b34da6a3ce929d0e0e4736",
            ],
            &[(2, 3)],
            vec![
                sample(&[1], &[1], &[(4, 5), (7, 8), (9, 10)]),
                sample(&[1], &[2], &[(4, 6)]),
                sample(&[1], &[4], &[(4, 5)]),
                Sample {
                    label: vec![Label {
                        key: 4,
                        num: 3,
                        ..Label::default()
                    }],
                    ..sample(&[1], &[8], &[])
                },
            ],
        );
        let c = run(&p, &limits()).unwrap();
        let ty = ("__profile_type__", "process_cpu:cpu:nanoseconds::");
        assert_eq!(
            flat(&c),
            vec![
                (
                    l(&[ty, ("route", "/a"), ("service_name", "svc")]),
                    "main".into(),
                    1
                ),
                (
                    l(&[ty, ("route", "/a"), ("service_name", "svc")]),
                    "main".into(),
                    4
                ),
                (
                    l(&[ty, ("route", "/b"), ("service_name", "svc")]),
                    "main".into(),
                    2
                ),
                (l(&[ty, ("service_name", "svc")]), "main".into(), 8),
            ]
        );
        let spans: Vec<u64> = c
            .profiles
            .iter()
            .flat_map(|p| p.samples.iter().map(|s| s.span_id))
            .filter(|s| *s != 0)
            .collect();
        assert_eq!(spans, vec![0x00f0_67aa_0ba9_02b7]);
    }

    #[test]
    fn deep_stacks_lose_root_frames_and_long_symbols_keep_their_tail() {
        let p = profile(
            &["", "root", "mid", "leaf", "cpu", "nanoseconds"],
            &[(4, 5)],
            vec![sample(&[3, 2, 1], &[1], &[])],
        );
        let c = run(
            &p,
            &Limits {
                max_stack_depth: 2,
                max_symbol_length: 3,
                ..limits()
            },
        )
        .unwrap();
        assert_eq!(flat(&c)[0].1, "mid;eaf");
    }

    #[test]
    fn frames_left_in_the_pprof_fill_in_as_copied_frames() {
        let mut p = profile(
            &[
                "",
                "root",
                "mid",
                "a.very.long.leaf",
                "cpu",
                "nanoseconds",
                "lib/x.py",
                "/abs/y.py",
            ],
            &[(4, 5)],
            vec![sample(&[3, 2, 1], &[1], &[]), sample(&[2, 1], &[2], &[])],
        );
        p.function[0].filename = 6;
        p.function[1].filename = 7;
        let limits = Limits {
            max_symbol_length: 8,
            ..limits()
        };
        let bytes = Bytes::from(prost::Message::encode_to_vec(&p));
        for prefix in [false, true] {
            let options = ConvertOptions {
                prefix_function_with_filename: prefix,
                ..ConvertOptions::default()
            };
            let copied = convert(&p, &base(), "id", &options, &limits, 1_000, 0).unwrap();
            let mut left =
                convert_in_place(bytes.clone(), &base(), "id", &options, &limits, 1_000).unwrap();
            // The leaf (the first frame seen) has its name cut to its tail, still a slice of
            // the pprof: left there.
            assert_eq!(left.frames[0].id, copied.frames[0].id);
            assert_eq!(left.frames[0].function_name, "");
            assert_eq!(copied.frames[0].function_name, "ong.leaf");
            let text = std::mem::take(&mut left.text);
            assert!(!text.is_empty());
            text.fill_all(&mut left.frames);
            assert_eq!(
                (left.profiles, left.stacks, left.frames),
                (copied.profiles, copied.stacks, copied.frames)
            );
        }
    }

    #[test]
    fn inlined_lines_count_against_the_depth_limit() {
        // One location of 60 inlined lines referenced 1,000 times: 60,000 frames, not 1,000.
        let mut p = profile(
            &["", "inlined", "cpu", "nanoseconds"],
            &[(2, 3)],
            vec![sample(&[1; 1000], &[1], &[])],
        );
        p.location[0].line = vec![
            Line {
                function_id: 1,
                line: 7,
            };
            60
        ];
        let c = run(&p, &limits()).unwrap();
        assert_eq!(c.stacks.len(), 1);
        assert_eq!(c.stacks[0].frame_refs.len(), limits().max_stack_depth);
        // Each stored frame reference is charged one byte at least.
        assert!(c.bytes >= limits().max_stack_depth);
    }

    #[test]
    fn repeated_ids_are_named() {
        let mut p = profile(
            &["", "a", "b", "cpu", "nanoseconds"],
            &[(3, 4)],
            vec![sample(&[2, 1], &[1], &[])],
        );
        p.location[1].id = 1;
        let err = run(&p, &limits()).unwrap_err();
        assert_eq!(
            err.message,
            "location[1] has id 1, the same as location[0]: ids must be unique"
        );
        let mut p = profile(
            &["", "a", "b", "cpu", "nanoseconds"],
            &[(3, 4)],
            vec![sample(&[2, 1], &[1], &[])],
        );
        p.function[1].id = 1;
        let err = run(&p, &limits()).unwrap_err();
        assert!(
            err.message.starts_with("function[1] has id 1"),
            "{}",
            err.message
        );
    }

    #[test]
    fn profile_type_parts_that_no_query_could_name_are_refused() {
        for (strings, what) in [
            (
                ["", "main", "cpu:x", "nanoseconds"],
                "sample type \"cpu:x\"",
            ),
            (["", "main", "cpu", "nano{s}"], "sample unit \"nano{s}\""),
        ] {
            let p = profile(&strings, &[(2, 3)], vec![sample(&[1], &[1], &[])]);
            let err = run(&p, &limits()).unwrap_err();
            assert!(err.message.starts_with(what), "{}", err.message);
            assert!(err.message.contains("must not contain"), "{}", err.message);
        }
        let p = profile(
            &["", "main", "cpu", "nanoseconds"],
            &[(2, 3)],
            vec![sample(&[1], &[1], &[])],
        );
        let base = Labels::from_pairs([("__name__", "a:b"), ("service_name", "svc")]);
        let err = convert(
            &p,
            &base,
            "id",
            &ConvertOptions::default(),
            &limits(),
            1_000,
            0,
        )
        .unwrap_err();
        assert!(
            err.message
                .starts_with("__name__ \"a:b\" must not contain ':'"),
            "{}",
            err.message
        );
    }

    #[test]
    fn invalid_profiles_are_refused_with_the_place_named() {
        let ok = || {
            profile(
                &["", "main", "cpu", "nanoseconds"],
                &[(2, 3)],
                vec![sample(&[1], &[1], &[])],
            )
        };
        let cases: Vec<(Profile, &str)> = vec![
            (
                Profile {
                    sample_type: vec![],
                    ..ok()
                },
                "no sample types",
            ),
            (
                Profile {
                    string_table: vec!["x".into()],
                    ..ok()
                },
                "string_table[0] must be the empty string",
            ),
            (
                Profile {
                    sample: vec![sample(&[9], &[1], &[])],
                    ..ok()
                },
                "sample[0]: refers to location 9",
            ),
            (
                Profile {
                    sample: vec![sample(&[1], &[1, 2], &[])],
                    ..ok()
                },
                "sample[0] has 2 values but the profile has 1 sample types",
            ),
            (
                Profile {
                    sample_type: vec![ValueType {
                        r#type: 99,
                        unit: 3,
                    }],
                    ..ok()
                },
                "sample_type[0].type refers to string 99",
            ),
            (
                Profile {
                    sample: vec![sample(&[1], &[1], &[(1, 77)])],
                    ..ok()
                },
                "sample[0].label[0].str refers to string 77",
            ),
            (
                profile(
                    &["", "main", "cpu-x", "ns"],
                    &[(2, 3)],
                    vec![sample(&[1], &[1], &[])],
                ),
                "must not contain '-'",
            ),
        ];
        for (p, expected) in cases {
            let err = run(&p, &limits()).unwrap_err();
            assert!(
                err.message.contains(expected),
                "{expected:?} not in {:?}",
                err.message
            );
        }
        let mut many = ok();
        many.sample = vec![sample(&[1], &[1], &[]); 3];
        let err = run(
            &many,
            &Limits {
                max_profile_samples: 2,
                ..limits()
            },
        )
        .unwrap_err();
        assert!(
            err.message.contains("3 samples, more than the limit of 2"),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_time_window_is_enforced_and_zero_time_means_now() {
        let mut p = profile(
            &["", "main", "cpu", "nanoseconds"],
            &[(2, 3)],
            vec![sample(&[1], &[1], &[])],
        );
        let hour = 3_600_000_000_000i64;
        let now = 10 * hour;
        let limits = Limits::default();
        let at = |p: &Profile| {
            convert(
                p,
                &base(),
                "id",
                &ConvertOptions {
                    fallback_time_nanos: now,
                    ..Default::default()
                },
                &limits,
                now,
                0,
            )
        };
        p.time_nanos = now - 2 * hour;
        assert!(at(&p).unwrap_err().message.contains("too old"));
        p.time_nanos = now + hour;
        assert!(
            at(&p)
                .unwrap_err()
                .message
                .contains("too far in the future")
        );
        p.time_nanos = 0;
        assert_eq!(at(&p).unwrap().profiles[0].time_nanos, now);
    }

    #[test]
    fn gzip_bombs_stop_at_the_limit() {
        let big = vec![0u8; 1 << 20];
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut z, &big).unwrap();
        let zipped = z.finish().unwrap();
        let err = maybe_gunzip(&zipped, 1000).unwrap_err();
        assert!(
            err.message.contains("more than the limit of 1000 bytes"),
            "{}",
            err.message
        );
        assert_eq!(maybe_gunzip(&zipped, 1 << 20).unwrap().len(), 1 << 20);
    }
}
