//! A pprof decoded in place: flat tables over the request's own bytes.
//!
//! `prost` builds a `Profile` of owned parts: three vectors per sample, one per location and a
//! `String` per string-table entry, so decoding a profile of a thousand samples makes thousands
//! of allocations that the conversion reads once and drops. [`ProfileView`] reads the same wire
//! format into a few flat vectors (one for all samples' location ids, one for all values, one
//! for all lines, ...) whose rows point into each other by range, and borrows the string table
//! from the input. A profile costs a fixed handful of allocations, whatever its size.
//!
//! It accepts exactly what `prost` accepts and reads the same values (the `pprof_view`
//! differential tests and fuzz target hold it to that): packed and unpacked repeated scalars,
//! a repeated singular message merged field by field, the last of a repeated scalar, unknown
//! fields and groups skipped under the same nesting limit, strings checked as UTF-8.

use std::ops::Range;

use profusion_proto::google::v1::{Function, Label, Line, Mapping, Profile, ValueType};

/// Why bytes are not a pprof, with where in the message it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// What conversion reads of a pprof, whichever decoder built it: a [`ProfileView`] of raw
/// bytes (the push path) or a `prost` [`Profile`] (built by the JFR, speedscope and OTLP
/// decoders, or by tests).
pub trait PprofSource {
    fn sample_type(&self) -> &[ValueType];
    fn num_samples(&self) -> usize;
    fn sample(&self, i: usize) -> SampleRef<'_>;
    fn mappings(&self) -> &[Mapping];
    fn num_locations(&self) -> usize;
    fn location(&self, i: usize) -> LocationRef<'_>;
    fn functions(&self) -> &[Function];
    fn num_strings(&self) -> usize;
    fn string(&self, i: usize) -> Option<&str>;
    fn time_nanos(&self) -> i64;
    fn duration_nanos(&self) -> i64;
    fn period_type(&self) -> Option<&ValueType>;
    fn period(&self) -> i64;
}

/// One sample's fields.
#[derive(Debug, Clone, Copy)]
pub struct SampleRef<'a> {
    pub location_id: &'a [u64],
    pub value: &'a [i64],
    pub label: &'a [Label],
}

/// One location's fields.
#[derive(Debug, Clone, Copy)]
pub struct LocationRef<'a> {
    pub id: u64,
    pub mapping_id: u64,
    pub address: u64,
    pub line: &'a [Line],
}

impl PprofSource for Profile {
    fn sample_type(&self) -> &[ValueType] {
        &self.sample_type
    }
    fn num_samples(&self) -> usize {
        self.sample.len()
    }
    fn sample(&self, i: usize) -> SampleRef<'_> {
        let s = &self.sample[i];
        SampleRef {
            location_id: &s.location_id,
            value: &s.value,
            label: &s.label,
        }
    }
    fn mappings(&self) -> &[Mapping] {
        &self.mapping
    }
    fn num_locations(&self) -> usize {
        self.location.len()
    }
    fn location(&self, i: usize) -> LocationRef<'_> {
        let l = &self.location[i];
        LocationRef {
            id: l.id,
            mapping_id: l.mapping_id,
            address: l.address,
            line: &l.line,
        }
    }
    fn functions(&self) -> &[Function] {
        &self.function
    }
    fn num_strings(&self) -> usize {
        self.string_table.len()
    }
    fn string(&self, i: usize) -> Option<&str> {
        self.string_table.get(i).map(String::as_str)
    }
    fn time_nanos(&self) -> i64 {
        self.time_nanos
    }
    fn duration_nanos(&self) -> i64 {
        self.duration_nanos
    }
    fn period_type(&self) -> Option<&ValueType> {
        self.period_type.as_ref()
    }
    fn period(&self) -> i64 {
        self.period
    }
}

/// A sample as ranges into the view's flat vectors.
#[derive(Debug, Clone)]
struct SampleRow {
    location_id: Range<u32>,
    value: Range<u32>,
    label: Range<u32>,
}

#[derive(Debug, Clone)]
struct LocationRow {
    id: u64,
    mapping_id: u64,
    address: u64,
    line: Range<u32>,
    is_folded: bool,
}

/// A pprof read in place from `'a` bytes (see the module doc).
#[derive(Debug, Default, Clone)]
pub struct ProfileView<'a> {
    pub sample_type: Vec<ValueType>,
    samples: Vec<SampleRow>,
    location_ids: Vec<u64>,
    values: Vec<i64>,
    labels: Vec<Label>,
    pub mapping: Vec<Mapping>,
    locations: Vec<LocationRow>,
    lines: Vec<Line>,
    pub function: Vec<Function>,
    pub string_table: Vec<&'a str>,
    pub drop_frames: i64,
    pub keep_frames: i64,
    pub time_nanos: i64,
    pub duration_nanos: i64,
    pub period_type: Option<ValueType>,
    pub period: i64,
    pub comment: Vec<i64>,
    pub default_sample_type: i64,
}

impl PprofSource for ProfileView<'_> {
    fn sample_type(&self) -> &[ValueType] {
        &self.sample_type
    }
    fn num_samples(&self) -> usize {
        self.samples.len()
    }
    fn sample(&self, i: usize) -> SampleRef<'_> {
        let s = &self.samples[i];
        SampleRef {
            location_id: &self.location_ids[range(&s.location_id)],
            value: &self.values[range(&s.value)],
            label: &self.labels[range(&s.label)],
        }
    }
    fn mappings(&self) -> &[Mapping] {
        &self.mapping
    }
    fn num_locations(&self) -> usize {
        self.locations.len()
    }
    fn location(&self, i: usize) -> LocationRef<'_> {
        let l = &self.locations[i];
        LocationRef {
            id: l.id,
            mapping_id: l.mapping_id,
            address: l.address,
            line: &self.lines[range(&l.line)],
        }
    }
    fn functions(&self) -> &[Function] {
        &self.function
    }
    fn num_strings(&self) -> usize {
        self.string_table.len()
    }
    fn string(&self, i: usize) -> Option<&str> {
        self.string_table.get(i).copied()
    }
    fn time_nanos(&self) -> i64 {
        self.time_nanos
    }
    fn duration_nanos(&self) -> i64 {
        self.duration_nanos
    }
    fn period_type(&self) -> Option<&ValueType> {
        self.period_type.as_ref()
    }
    fn period(&self) -> i64 {
        self.period
    }
}

fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// `prost`'s limit on nested messages and groups, so both refuse the same inputs.
const RECURSION_LIMIT: u32 = 100;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

type Decoded<T> = std::result::Result<T, DecodeError>;

fn error(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    fn varint(&mut self) -> Decoded<u64> {
        // Keys, lengths, string indexes and the ids of a profile with fewer than 16,384
        // locations take one or two bytes: read inline, the rest out of line.
        match self.buf.get(self.pos..) {
            Some([b0, ..]) if *b0 < 0x80 => {
                self.pos += 1;
                Ok(u64::from(*b0))
            }
            Some([b0, b1, ..]) if *b1 < 0x80 => {
                self.pos += 2;
                Ok(u64::from(b0 & 0x7f) | u64::from(*b1) << 7)
            }
            _ => self.long_varint(),
        }
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Decoded<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(error(format!("truncated varint at byte {}", self.pos)));
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte holds only the 64th bit.
                if i == 9 && b > 1 {
                    break;
                }
                return Ok(value);
            }
        }
        Err(error(format!("invalid varint ending at byte {}", self.pos)))
    }

    /// A field's number and wire type.
    fn key(&mut self) -> Decoded<(u32, u8)> {
        let at = self.pos;
        let key = self.varint()?;
        let key = u32::try_from(key)
            .map_err(|_| error(format!("invalid field key {key} at byte {at}")))?;
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return Err(error(format!("invalid wire type {wire} at byte {at}")));
        }
        if key >> 3 == 0 {
            return Err(error(format!("invalid field number 0 at byte {at}")));
        }
        Ok((key >> 3, wire))
    }

    fn len_delimited(&mut self) -> Decoded<&'a [u8]> {
        let len = self.varint()?;
        let rest = self.buf.len() - self.pos;
        if len > rest as u64 {
            return Err(error(format!(
                "a field of {len} bytes at byte {} overruns its message of {rest} more bytes",
                self.pos
            )));
        }
        let bytes = &self.buf[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(bytes)
    }

    /// Skips an unknown field, as `prost` does: groups to their matching end, nested no deeper
    /// than `budget`.
    fn skip(&mut self, field: u32, wire: u8, budget: u32) -> Decoded<()> {
        if budget == 0 {
            return Err(error("fields nested too deeply"));
        }
        let len = match wire {
            VARINT => {
                self.varint()?;
                0
            }
            FIXED64 => 8,
            FIXED32 => 4,
            LEN => {
                self.len_delimited()?;
                0
            }
            START_GROUP => loop {
                let (inner, inner_wire) = self.key()?;
                if inner_wire == END_GROUP {
                    if inner != field {
                        return Err(error(format!(
                            "group {field} ended by the end of group {inner}"
                        )));
                    }
                    break 0;
                }
                self.skip(inner, inner_wire, budget - 1)?;
            },
            _ => return Err(error(format!("end of group {field} outside any group"))),
        };
        if len > self.buf.len() - self.pos {
            return Err(error(format!(
                "a {len}-byte field at byte {} overruns its message",
                self.pos
            )));
        }
        self.pos += len;
        Ok(())
    }
}

fn expect_wire(field: u32, wire: u8, expected: u8) -> Decoded<()> {
    if wire != expected {
        return Err(error(format!(
            "field {field} has wire type {wire}, expected {expected}"
        )));
    }
    Ok(())
}

fn int64(r: &mut Reader<'_>, field: u32, wire: u8) -> Decoded<i64> {
    expect_wire(field, wire, VARINT)?;
    Ok(r.varint()? as i64)
}

fn uint64(r: &mut Reader<'_>, field: u32, wire: u8) -> Decoded<u64> {
    expect_wire(field, wire, VARINT)?;
    r.varint()
}

fn boolean(r: &mut Reader<'_>, field: u32, wire: u8) -> Decoded<bool> {
    expect_wire(field, wire, VARINT)?;
    Ok(r.varint()? != 0)
}

/// A repeated varint field, packed or one value per occurrence, appended to `out`.
fn repeated_varint<T>(
    r: &mut Reader<'_>,
    field: u32,
    wire: u8,
    out: &mut Vec<T>,
    from: impl Fn(u64) -> T,
) -> Decoded<()> {
    if wire == LEN {
        let mut packed = Reader::new(r.len_delimited()?);
        while !packed.done() {
            out.push(from(packed.varint()?));
        }
        return Ok(());
    }
    expect_wire(field, wire, VARINT)?;
    out.push(from(r.varint()?));
    Ok(())
}

/// Reads the embedded message of a length-delimited `field`, calling `each` per inner field
/// with the embedded message's nesting budget.
fn message<'a>(
    r: &mut Reader<'a>,
    field: u32,
    wire: u8,
    budget: u32,
    mut each: impl FnMut(&mut Reader<'a>, u32, u8, u32) -> Decoded<()>,
) -> Decoded<()> {
    expect_wire(field, wire, LEN)?;
    // `budget` is the enclosing message's; this one's is one less, and none is left at 0.
    let budget = budget.saturating_sub(1);
    if budget == 0 {
        return Err(error("messages nested too deeply"));
    }
    let mut inner = Reader::new(r.len_delimited()?);
    while !inner.done() {
        let (f, w) = inner.key()?;
        each(&mut inner, f, w, budget)?;
    }
    Ok(())
}

fn merge_value_type(
    r: &mut Reader<'_>,
    field: u32,
    wire: u8,
    budget: u32,
    into: &mut ValueType,
) -> Decoded<()> {
    message(r, field, wire, budget, |r, f, w, budget| {
        match f {
            1 => into.r#type = int64(r, f, w)?,
            2 => into.unit = int64(r, f, w)?,
            _ => r.skip(f, w, budget)?,
        }
        Ok(())
    })
}

fn len_u32(n: usize, what: &str) -> Decoded<u32> {
    u32::try_from(n).map_err(|_| error(format!("more than 2^32 {what}")))
}

impl<'a> ProfileView<'a> {
    /// Reads a serialized pprof `Profile` (not gzipped).
    pub fn decode(bytes: &'a [u8]) -> Decoded<Self> {
        let mut p = ProfileView::default();
        p.reserve_top_level(bytes);
        let mut r = Reader::new(bytes);
        let budget = RECURSION_LIMIT;
        while !r.done() {
            let at = r.pos;
            let (field, wire) = r.key()?;
            p.field(&mut r, field, wire, budget)
                .map_err(|e| error(format!("{} (field {field} at byte {at})", e.0)))?;
        }
        Ok(p)
    }

    /// The names of a serialized pprof's sample types (`""` for an index past the string
    /// table), reading only its sample types and string table: what the legacy `/ingest`
    /// needs to name a profile before the distributor reads it whole. Every other field is
    /// skipped by its length, so a malformed sample is found by that whole read, not here.
    pub fn sample_type_names(bytes: &'a [u8]) -> Decoded<Vec<&'a str>> {
        let mut p = ProfileView::default();
        let mut r = Reader::new(bytes);
        while !r.done() {
            let at = r.pos;
            let (field, wire) = r.key()?;
            match field {
                1 | 6 => p.field(&mut r, field, wire, RECURSION_LIMIT),
                _ => r.skip(field, wire, RECURSION_LIMIT),
            }
            .map_err(|e| error(format!("{} (field {field} at byte {at})", e.0)))?;
        }
        Ok(p.sample_type
            .iter()
            .map(|st| {
                usize::try_from(st.r#type)
                    .ok()
                    .and_then(|i| p.string_table.get(i).copied())
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Reserves the top-level repeated fields at their exact counts, found by a pass over
    /// the top-level keys alone (each message skipped by its length): growing them by
    /// doubling copied every sample, location and string again, a large part of decoding.
    /// Malformed bytes stop the pass; the decode proper then says what is wrong.
    fn reserve_top_level(&mut self, bytes: &[u8]) {
        let mut counts = [0usize; 7];
        let mut sample_bytes = 0;
        let mut r = Reader::new(bytes);
        while !r.done() {
            let Ok((field, wire)) = r.key() else { break };
            let start = r.pos;
            if r.skip(field, wire, RECURSION_LIMIT).is_err() {
                break;
            }
            if let Some(c) = counts.get_mut(field as usize) {
                *c += 1;
            }
            if field == 2 {
                sample_bytes += r.pos - start;
            }
        }
        self.sample_type.reserve(counts[1]);
        self.samples.reserve(counts[2]);
        // Location ids are most of a sample's bytes, and take two bytes each once a profile has
        // over 127 locations: a close bound that spares the grown vector's copies.
        self.location_ids.reserve(sample_bytes / 2);
        self.lines.reserve(counts[4]);
        self.mapping.reserve(counts[3]);
        self.locations.reserve(counts[4]);
        self.function.reserve(counts[5]);
        self.string_table.reserve(counts[6]);
    }

    fn field(&mut self, r: &mut Reader<'a>, field: u32, wire: u8, budget: u32) -> Decoded<()> {
        match field {
            1 => {
                let mut vt = ValueType::default();
                merge_value_type(r, field, wire, budget, &mut vt)?;
                self.sample_type.push(vt);
            }
            2 => self.sample(r, field, wire, budget)?,
            3 => {
                let mut m = Mapping::default();
                message(r, field, wire, budget, |r, f, w, budget| {
                    match f {
                        1 => m.id = uint64(r, f, w)?,
                        2 => m.memory_start = uint64(r, f, w)?,
                        3 => m.memory_limit = uint64(r, f, w)?,
                        4 => m.file_offset = uint64(r, f, w)?,
                        5 => m.filename = int64(r, f, w)?,
                        6 => m.build_id = int64(r, f, w)?,
                        7 => m.has_functions = boolean(r, f, w)?,
                        8 => m.has_filenames = boolean(r, f, w)?,
                        9 => m.has_line_numbers = boolean(r, f, w)?,
                        10 => m.has_inline_frames = boolean(r, f, w)?,
                        _ => r.skip(f, w, budget)?,
                    }
                    Ok(())
                })?;
                self.mapping.push(m);
            }
            4 => self.location(r, field, wire, budget)?,
            5 => {
                let mut func = Function::default();
                message(r, field, wire, budget, |r, f, w, budget| {
                    match f {
                        1 => func.id = uint64(r, f, w)?,
                        2 => func.name = int64(r, f, w)?,
                        3 => func.system_name = int64(r, f, w)?,
                        4 => func.filename = int64(r, f, w)?,
                        5 => func.start_line = int64(r, f, w)?,
                        _ => r.skip(f, w, budget)?,
                    }
                    Ok(())
                })?;
                self.function.push(func);
            }
            6 => {
                expect_wire(field, wire, LEN)?;
                let bytes = r.len_delimited()?;
                let s = std::str::from_utf8(bytes).map_err(|e| {
                    error(format!(
                        "string_table[{}] is not UTF-8: {e}",
                        self.string_table.len()
                    ))
                })?;
                self.string_table.push(s);
            }
            7 => self.drop_frames = int64(r, field, wire)?,
            8 => self.keep_frames = int64(r, field, wire)?,
            9 => self.time_nanos = int64(r, field, wire)?,
            10 => self.duration_nanos = int64(r, field, wire)?,
            11 => merge_value_type(
                r,
                field,
                wire,
                budget,
                self.period_type.get_or_insert_with(ValueType::default),
            )?,
            12 => self.period = int64(r, field, wire)?,
            13 => repeated_varint(r, field, wire, &mut self.comment, |v| v as i64)?,
            14 => self.default_sample_type = int64(r, field, wire)?,
            _ => r.skip(field, wire, budget)?,
        }
        Ok(())
    }

    fn sample(&mut self, r: &mut Reader<'a>, field: u32, wire: u8, budget: u32) -> Decoded<()> {
        let (locations, values, labels) = (
            len_u32(self.location_ids.len(), "location ids")?,
            len_u32(self.values.len(), "values")?,
            len_u32(self.labels.len(), "labels")?,
        );
        let index = self.samples.len();
        let (location_ids, values_out, labels_out) =
            (&mut self.location_ids, &mut self.values, &mut self.labels);
        message(r, field, wire, budget, |r, f, w, budget| {
            match f {
                1 => repeated_varint(r, f, w, location_ids, |v| v)?,
                2 => repeated_varint(r, f, w, values_out, |v| v as i64)?,
                3 => {
                    let mut l = Label::default();
                    message(r, f, w, budget, |r, f, w, budget| {
                        match f {
                            1 => l.key = int64(r, f, w)?,
                            2 => l.str = int64(r, f, w)?,
                            3 => l.num = int64(r, f, w)?,
                            4 => l.num_unit = int64(r, f, w)?,
                            _ => r.skip(f, w, budget)?,
                        }
                        Ok(())
                    })?;
                    labels_out.push(l);
                }
                _ => r.skip(f, w, budget)?,
            }
            Ok(())
        })
        .map_err(|e| error(format!("sample[{index}]: {}", e.0)))?;
        self.samples.push(SampleRow {
            location_id: locations..len_u32(self.location_ids.len(), "location ids")?,
            value: values..len_u32(self.values.len(), "values")?,
            label: labels..len_u32(self.labels.len(), "labels")?,
        });
        Ok(())
    }

    fn location(&mut self, r: &mut Reader<'a>, field: u32, wire: u8, budget: u32) -> Decoded<()> {
        let lines = len_u32(self.lines.len(), "lines")?;
        let index = self.locations.len();
        let mut row = LocationRow {
            id: 0,
            mapping_id: 0,
            address: 0,
            line: lines..lines,
            is_folded: false,
        };
        let lines_out = &mut self.lines;
        message(r, field, wire, budget, |r, f, w, budget| {
            match f {
                1 => row.id = uint64(r, f, w)?,
                2 => row.mapping_id = uint64(r, f, w)?,
                3 => row.address = uint64(r, f, w)?,
                4 => {
                    let mut line = Line::default();
                    message(r, f, w, budget, |r, f, w, budget| {
                        match f {
                            1 => line.function_id = uint64(r, f, w)?,
                            2 => line.line = int64(r, f, w)?,
                            _ => r.skip(f, w, budget)?,
                        }
                        Ok(())
                    })?;
                    lines_out.push(line);
                }
                5 => row.is_folded = boolean(r, f, w)?,
                _ => r.skip(f, w, budget)?,
            }
            Ok(())
        })
        .map_err(|e| error(format!("location[{index}]: {}", e.0)))?;
        row.line.end = len_u32(self.lines.len(), "lines")?;
        self.locations.push(row);
        Ok(())
    }

    /// The same profile as `prost` types (for tests and for paths that need an owned one).
    pub fn to_profile(&self) -> Profile {
        use profusion_proto::google::v1::{Location, Sample};
        Profile {
            sample_type: self.sample_type.clone(),
            sample: (0..self.num_samples())
                .map(|i| {
                    let s = PprofSource::sample(self, i);
                    Sample {
                        location_id: s.location_id.to_vec(),
                        value: s.value.to_vec(),
                        label: s.label.to_vec(),
                    }
                })
                .collect(),
            mapping: self.mapping.clone(),
            location: self
                .locations
                .iter()
                .map(|l| Location {
                    id: l.id,
                    mapping_id: l.mapping_id,
                    address: l.address,
                    line: self.lines[range(&l.line)].to_vec(),
                    is_folded: l.is_folded,
                })
                .collect(),
            function: self.function.clone(),
            string_table: self.string_table.iter().map(|s| (*s).to_owned()).collect(),
            drop_frames: self.drop_frames,
            keep_frames: self.keep_frames,
            time_nanos: self.time_nanos,
            duration_nanos: self.duration_nanos,
            period_type: self.period_type,
            period: self.period,
            comment: self.comment.clone(),
            default_sample_type: self.default_sample_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
        varint(u64::from(field) << 3 | u64::from(wire), out);
    }

    fn len_field(field: u32, body: &[u8], out: &mut Vec<u8>) {
        key(field, LEN, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    fn int_field(field: u32, v: u64, out: &mut Vec<u8>) {
        key(field, VARINT, out);
        varint(v, out);
    }

    /// Decodes `bytes` both ways; both must agree (the fuzz entry point asserts it), and the
    /// in-place result is returned.
    fn both(bytes: &[u8]) -> Decoded<Profile> {
        crate::fuzzing::pprof(bytes);
        ProfileView::decode(bytes).map(|v| v.to_profile())
    }

    #[test]
    fn packed_and_unpacked_samples_read_alike() {
        let mut packed_sample = Vec::new();
        let mut ids = Vec::new();
        for id in [1u64, 300, 2] {
            varint(id, &mut ids);
        }
        len_field(1, &ids, &mut packed_sample);
        len_field(2, &[7], &mut packed_sample);
        // Unpacked, interleaved with the values, and a label between them.
        let mut unpacked_sample = Vec::new();
        int_field(1, 1, &mut unpacked_sample);
        int_field(2, 7, &mut unpacked_sample);
        let mut label = Vec::new();
        int_field(1, 1, &mut label);
        len_field(3, &label, &mut unpacked_sample);
        int_field(1, 300, &mut unpacked_sample);
        int_field(1, 2, &mut unpacked_sample);
        let mut bytes = Vec::new();
        len_field(2, &packed_sample, &mut bytes);
        len_field(2, &unpacked_sample, &mut bytes);
        len_field(6, b"", &mut bytes);
        let p = both(&bytes).unwrap();
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].location_id, p.sample[1].location_id);
        assert_eq!(p.sample[1].location_id, vec![1, 300, 2]);
        assert_eq!(p.sample[1].value, vec![7]);
        assert_eq!(p.sample[1].label.len(), 1);
        assert!(p.sample[0].label.is_empty());
    }

    #[test]
    fn repeated_singular_fields_merge_as_prost_does() {
        let mut bytes = Vec::new();
        let mut first = Vec::new();
        int_field(1, 3, &mut first);
        int_field(2, 4, &mut first);
        let mut second = Vec::new();
        int_field(2, 5, &mut second);
        len_field(11, &first, &mut bytes);
        int_field(9, 10, &mut bytes);
        len_field(11, &second, &mut bytes);
        int_field(9, 20, &mut bytes);
        let p = both(&bytes).unwrap();
        assert_eq!(p.period_type, Some(ValueType { r#type: 3, unit: 5 }));
        assert_eq!(p.time_nanos, 20);
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped_within_prosts_nesting_limit() {
        let nested = |depth: u32| {
            let mut bytes = Vec::new();
            int_field(9, 42, &mut bytes);
            for _ in 0..depth {
                key(99, START_GROUP, &mut bytes);
            }
            key(98, FIXED64, &mut bytes);
            bytes.extend_from_slice(&[0; 8]);
            key(97, FIXED32, &mut bytes);
            bytes.extend_from_slice(&[0; 4]);
            len_field(96, b"anything", &mut bytes);
            for _ in 0..depth {
                key(99, END_GROUP, &mut bytes);
            }
            bytes
        };
        assert_eq!(both(&nested(3)).unwrap().time_nanos, 42);
        assert_eq!(both(&nested(99)).unwrap().time_nanos, 42);
        assert!(both(&nested(100)).is_err());
        // A group ended by another group's end, or an end with no group.
        let mut bytes = Vec::new();
        key(99, START_GROUP, &mut bytes);
        key(98, END_GROUP, &mut bytes);
        assert!(both(&bytes).is_err());
        let mut bytes = Vec::new();
        key(98, END_GROUP, &mut bytes);
        assert!(both(&bytes).is_err());
    }

    #[test]
    fn malformed_wire_data_is_refused_by_both_with_where_it_is() {
        let mut bad_string = Vec::new();
        len_field(6, b"", &mut bad_string);
        len_field(6, &[0xff, 0xfe], &mut bad_string);
        let err = both(&bad_string).unwrap_err();
        assert!(err.0.contains("string_table[1] is not UTF-8"), "{err}");

        let mut wrong_wire = Vec::new();
        len_field(9, b"x", &mut wrong_wire);
        let err = both(&wrong_wire).unwrap_err();
        assert!(err.0.contains("field 9 has wire type 2"), "{err}");

        let mut overrun = Vec::new();
        key(2, LEN, &mut overrun);
        varint(50, &mut overrun);
        overrun.extend_from_slice(&[0; 10]);
        assert!(both(&overrun).is_err());

        let mut in_sample = Vec::new();
        let mut sample = Vec::new();
        key(1, FIXED32, &mut sample);
        sample.extend_from_slice(&[0; 4]);
        len_field(2, &sample, &mut in_sample);
        let err = both(&in_sample).unwrap_err();
        assert!(err.0.contains("sample[0]"), "{err}");

        // Ten-byte varints: the last byte may only carry the 64th bit.
        let mut max = Vec::new();
        key(9, VARINT, &mut max);
        max.extend_from_slice(&[0xff; 9]);
        max.push(0x01);
        assert_eq!(both(&max).unwrap().time_nanos, -1);
        let mut over = Vec::new();
        key(9, VARINT, &mut over);
        over.extend_from_slice(&[0xff; 9]);
        over.push(0x02);
        assert!(both(&over).is_err());
        for bytes in [
            &[0x80][..],
            &[0x00],
            &[0x0e],
            &[0x0f],
            &[0x80, 0x80, 0x80, 0x80, 0x10],
        ] {
            assert!(both(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn a_real_profile_reads_as_prost_reads_it() {
        let path = profusion_testing::fixtures_dir().join("wire/pprof_cpu_small.bin");
        let raw = std::fs::read(&path).unwrap();
        let bytes = crate::pprof::maybe_gunzip(&raw, usize::MAX).unwrap();
        let p = both(&bytes).unwrap();
        assert_eq!(p, Profile::decode(&*bytes).unwrap());
        assert!(!p.sample.is_empty() && !p.location.is_empty());
    }
}
